"""Loss-Free Selective Synaptic Dampening: SSD with a label-free sensitivity for importance."""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.methods.base import Search, hp, register_method
from unlearnkit.methods.ssd import SSD

__all__ = ["LFSSD", "LF_SSD_IMPORTANCES"]

#: The importances LF-SSD offers: the paper's per-sample sensitivity, its public code's variant.
LF_SSD_IMPORTANCES = ("output-norm", "batch-output-norm")


@register_method
@dataclass(frozen=True, kw_only=True)
class LFSSD(SSD):
    """Loss-Free SSD (Foster, Schoepf, Brintrup, ICLR 2024 Tiny Paper).

    Update rule: SSD's (:class:`~unlearnkit.methods.ssd.SSD`, the same selection and dampening
    code, :func:`~unlearnkit.methods.ssd.dampening_factors` and
    :func:`~unlearnkit.methods.ssd.dampen`, and the same cached reference importances), with
    the diagonal Fisher replaced by the sensitivity of Memory Aware Synapses (Aljundi et al.
    2018), which needs no label:

    ``I_j = 1/N * sum_n | d ||f(x_n)||_2^2 / d theta_j |``

    (the mean over samples of the absolute per-sample gradient of the squared L2 norm of the
    logits; :mod:`unlearnkit.importance` mode ``"output-norm"``). With ``I_D`` on the training
    set and ``I_f`` on the forget set, every ``theta_j`` with ``I_f[j] > alpha * I_D[j]`` becomes
    ``theta_j * min(lambd * I_D[j] / I_f[j], 1)``; every other parameter is left bit-for-bit
    unchanged. The labels of D_f and D_r are never read (shuffling them changes nothing).

    Defaults: ``alpha=10``, ``lambd=1``, batch size 64: SSD's, which the LF-SSD README tells
    to keep ("replace the following in the compute_importances function(s)": only the loss and
    the squaring change). As for SSD, since the importance of D is the sample-weighted mean
    ``p * I_f + (1 - p) * I_r`` for a forget share ``p``, nothing can be selected once
    ``alpha * p >= 1``: with alpha 10, a forget set of 10 % of the data or more leaves the model
    unchanged (the method then warns). ``reference="retain"`` selects by ``I_f > alpha * I_r``.

    Where this implementation deliberately differs from the authors' public code (the README
    snippet of github.com/if-loops/selective-synaptic-dampening applied to its ``ssd.py``):

    * **Importance.** The public code takes the absolute value of the gradient of each
      mini-batch's *mean* squared output norm, averaged over batches, so it depends on the batch
      size and is not the per-sample sensitivity of Aljundi et al. Our default
      ``importance="output-norm"`` is the per-sample mean; ``importance="batch-output-norm"``
      reproduces the public code (batch size 64, ``retain + forget`` in that order, unshuffled).
    * Everything else as in :class:`~unlearnkit.methods.ssd.SSD` (importances matched by name,
      one pass over D_r instead of D, ``reference="retain"`` an option of ours, the
      per-sample gradients of ``"output-norm"`` by the ``implementation`` asked for).

    On digits (default cnn, class 1) ``alpha=1`` forgets the class (forget 0, test 0.883, the
    retrained model's figures); at the default ``alpha=10`` it selects nothing (see above).

    Paper: Foster, Schoepf, Brintrup. "Loss-Free Machine Unlearning", ICLR 2024 Tiny Paper
    (arXiv 2402.19308).
    """

    name = "lf-ssd"
    paper = ("Foster, Schoepf, Brintrup. Loss-Free Machine Unlearning, ICLR 2024 Tiny Paper "
             "(arXiv 2402.19308)")
    summary = ("SSD with a label-free importance: the gradient of the squared L2 norm of the "
               "output")
    forget_more = "lower alpha (more parameters selected) or lambd (stronger dampening)"

    # the LF-SSD paper's own rule and defaults, not the founding report's SSD (see SSD)
    alpha: float = hp(10.0, "selection weighting: dampen where I_f > alpha * I_D", low=0.0,
                      search=Search(0.1, 100.0, log=True))
    reference: str = hp("train", "data of I_D: the training set (forget + retain, the "
                        "paper's) or the retain set", choices=("train", "retain"))
    importance: str = hp("output-norm", "importance: mean per-sample |grad ||f(x)||^2|, or the "
                         "public code's |grad| of the batch mean", choices=LF_SSD_IMPORTANCES)
