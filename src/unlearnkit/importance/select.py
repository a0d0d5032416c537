"""Which parameters to keep: the global top-fraction rule that Fisher masking and SalUn share."""

from __future__ import annotations

import torch

from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.importance._common import Importances


def top_fraction(scores: Importances, fraction: float) -> Importances:
    """The global top-``fraction`` rule: which entries of all the tensors score highest.

    Every entry of every tensor is ranked by its score, globally over all tensors (not per
    tensor); the ``round(fraction * total)`` highest are selected. Ties are broken
    deterministically in favour of the entry that comes first in the dict's order (then in
    row-major order within a tensor). Fisher masking (scores ``F_f - F_r``) and SalUn's mask
    (scores ``|grad L_f|``) both use it.

    Args:
        scores: ``{name: tensor}``.
        fraction: in [0, 1], the fraction of all entries to select.

    Returns:
        ``{name: bool tensor}`` shaped like the scores, True where selected; exactly
        ``round(fraction * total)`` entries are True.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 <= fraction <= 1.0):
        raise InvalidParameterError(
            f"The 'fraction' parameter must be a float in the range [0, 1]. Got {fraction!r} "
            "instead.")
    names = list(scores)
    flat_scores = torch.cat([scores[n].double().reshape(-1).cpu() for n in names]) if names else (
        torch.zeros(0, dtype=torch.float64))
    total = flat_scores.numel()
    k = round(fraction * total)
    flat = torch.zeros(total, dtype=torch.bool)
    if k:
        order = torch.sort(flat_scores, descending=True, stable=True).indices
        flat[order[:k]] = True
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = flat[start : start + size].view(scores[n].shape).to(scores[n].device)
        start += size
    return out
