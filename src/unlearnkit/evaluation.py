"""Model-level evaluation: every metric of :mod:`unlearnkit.metrics`, applied to models.

:func:`evaluate` reports every metric its inputs allow, keyed by DESIGN.md's names. Each metric
also has a wrapper here with the same name that takes models and a :class:`~unlearnkit.Split`
(the pure functions of logits live in :mod:`unlearnkit.metrics`):

=====================  ==========================================  ===========================
metric                 needs                                       wrapper
=====================  ==========================================  ===========================
accuracies, seconds    the model                                   :func:`evaluate`
``mia_loss_cv``,       the model (and the split's test set)        :func:`mia_loss_cv`,
``mia_entropy``,                                                   :func:`mia_entropy`,
``mia_confidence``                                                 :func:`mia_confidence`
``mia_*_power``        the model (and the split's test set)        :func:`mia_loss_cv_power`,
                                                                   :func:`mia_entropy_power`,
                                                                   :func:`mia_confidence_power`
``mia_*_separation``   the original and a retrained model          :func:`evaluate`
``zrf``                the model (a random one of its              :func:`zrf`
                       architecture is made)
``js_divergence``,     a retrained model                           :func:`js_divergence`,
``activation_distance``                                            :func:`activation_distance`
``avg_gap``            a retrained model                           :func:`evaluate`
``anamnesis``          the original and a retrained model          :func:`anamnesis`
``probe_forget_acc``   the model (class unlearning)                :func:`probe_forget_acc`
``cka_retrained``      a retrained model                           :func:`cka_retrained`
``cka_original``       the original model                          :func:`cka_original`
``verdict``,           the original and a validation set           :func:`verdict`
``verdict_loss_auc``   (sample unlearning, for the AUC)
``forgetting_quality``,  pools of unlearned and retrained models   :func:`pool_metrics`
``competition_score``,   (:mod:`unlearnkit.pools`)
``mia_lira``
=====================  ==========================================  ===========================

The representation metrics read each model's penultimate features (:func:`penultimate_features`,
the input of the output layer) and judge whether forgetting reached the features, not only the
output layer (Kim et al., "Are We Truly Forgetting?", 2025).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearnkit import metrics as M
from unlearnkit.data.batches import own_batch_size
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data, Split
from unlearnkit.exceptions import InvalidParameterError, InvalidSplitError, ModelError
from unlearnkit.methods.base import get_method
from unlearnkit.metrics import verdict as V
from unlearnkit.metrics.accuracy import accuracy_from_logits, speedup
from unlearnkit.metrics.divergence import DEFAULT_GAP_KEYS
from unlearnkit.metrics.lira import mia_lira
from unlearnkit.metrics.representation import PROBE_MAX_SAMPLES, subsample
from unlearnkit.models import graph
from unlearnkit.models.adapters import forward
from unlearnkit.models.info import check_finite, get_info
from unlearnkit.models.registry import fresh_copy
from unlearnkit.pools import (
    PoolOutputs,
    identity_pool,
    original_pool,
    retrained_pool,
    unlearned_pool,
)
from unlearnkit.training import (
    data_size,
    eval_mode,
    iter_batches,
    model_device,
    predict,
    resolve_device,
    seeded,
)

__all__ = [
    "MIN_MIA_SAMPLES",
    "NO_UNLEARNING",
    "EvaluationCache",
    "Outputs",
    "activation_distance",
    "anamnesis",
    "cka_original",
    "cka_retrained",
    "evaluate",
    "js_divergence",
    "mia_confidence",
    "mia_confidence_power",
    "mia_entropy",
    "mia_entropy_power",
    "mia_loss_cv",
    "mia_loss_cv_power",
    "penultimate_features",
    "pool_metrics",
    "probe_forget_acc",
    "random_model",
    "score",
    "verdict",
    "zrf",
]

#: The names :func:`score` accepts for "no unlearning at all" (see there).
NO_UNLEARNING = ("original", "original-seeds")

#: The MIAs need at least this many samples in D_f and in the test set (10 shuffle splits).
MIN_MIA_SAMPLES = 10


@dataclass(frozen=True)
class Outputs:
    """One model's logits and labels on a forget request's D_f, D_r and test set.

    Computed once by :meth:`of`; every wrapper accepts an ``Outputs`` in place of a model.
    """

    forget: tuple[torch.Tensor, torch.Tensor]
    retain: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None
    test_forget: tuple[torch.Tensor, torch.Tensor] | None = None
    validation: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def of(cls, model: nn.Module, split: Split,
           device: str | torch.device | None = None, *, retain: bool = True) -> Outputs:
        """``model``'s outputs on every part of ``split`` (``retain=False`` skips D_r, the
        largest part, for the verdict alone: its ``retain`` is then empty)."""
        def run(data: Data | None) -> tuple[torch.Tensor, torch.Tensor] | None:
            return None if data is None else predict(model, data, device=device)

        forget = run(split.forget)
        r = run(split.retain) if retain else None
        assert forget is not None
        if r is None:
            r = (forget[0][:0], forget[1][:0])
        test_forget = run(split.test_forget) if split.scenario == "class" else None
        out = cls(forget=forget, retain=r, test=run(split.test) if retain else None,
                  test_forget=test_forget if retain else None,
                  validation=run(split.validation))
        out.check_width(split.num_classes)
        return out

    def check_width(self, num_classes: int | None) -> None:
        """Raise :class:`ModelError` when the logits are not one column per class: a model with
        more outputs than the data's classes would otherwise be scored without a word, and a
        label beyond the last column would fail deep inside a metric."""
        for part, pair in (("D_f", self.forget), ("D_r", self.retain), ("test", self.test),
                           ("validation", self.validation)):
            if pair is None or not len(pair[1]):
                continue
            logits, labels = pair
            width = logits.shape[1] if logits.ndim == 2 else None
            if width is None:
                raise ModelError(
                    f"The model's output on {part} is shaped {tuple(logits.shape)}; unlearnkit "
                    "needs logits shaped (samples, classes).")
            if num_classes is not None and width != num_classes:
                raise ModelError(
                    f"The model outputs {width} logits per sample but the data has "
                    f"{num_classes} classes: the metrics would compare the wrong columns. "
                    "Give a model whose output layer has one unit per class.")
            top = int(labels.max())
            if top >= width:
                raise ModelError(
                    f"{part} holds label {top} but the model outputs only {width} logits per "
                    "sample: the model and the data do not match.")

    def non_members(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The held-out samples that D_f is told apart from by :func:`mia_loss_cv`: the test
        samples of the forgotten classes in class unlearning, else the whole test set."""
        return self.test_forget if self.test_forget is not None else self.test


def _outs(x: nn.Module | Outputs, split: Split, device: str | torch.device | None) -> Outputs:
    return x if isinstance(x, Outputs) else Outputs.of(x, split, device)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=1)


def _true_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _softmax(logits).gather(1, labels.view(-1, 1)).view(-1)


def _need_test(o: Outputs, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if o.test is None:
        raise InvalidParameterError(f"{what} needs a test set (non-members); the split has none.")
    return o.test


# ---------------------------------------------------------------------- MIA wrappers
def mia_loss_cv(model: nn.Module | Outputs, split: Split, *, seed: int = 0,
                device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.mia_loss_cv` of ``model``: per-sample loss, D_f vs test.

    In class unlearning the non-members are the test samples of the forgotten classes, so
    that like is compared with like: against the whole test set, the attack would tell a
    perfectly forgotten class apart by its high loss alone and call the retrained model
    "remembering" (about 0.97 on digits); against its own class's test samples the retrained
    model scores about 0.5, as intended.
    """
    o = _outs(model, split, device)
    if o.non_members() is None:
        raise InvalidParameterError("mia_loss_cv needs a test set (non-members); the split "
                                    "has none.")
    t_logits, t_labels = o.non_members()  # type: ignore[misc]
    return M.mia_loss_cv(M.per_sample_loss(*o.forget), M.per_sample_loss(t_logits, t_labels),
                         seed=seed)


def mia_entropy(model: nn.Module | Outputs, split: Split, *,
                device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.mia_entropy` of ``model``: entropy, D_r vs test, on D_f."""
    o = _outs(model, split, device)
    t_logits, _ = _need_test(o, "mia_entropy")
    return M.mia_entropy(_softmax(o.retain[0]), _softmax(t_logits), _softmax(o.forget[0]))


def mia_confidence(model: nn.Module | Outputs, split: Split, *, seed: int | None = 0,
                   device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.mia_confidence` of ``model``: true-class probability SVC."""
    o = _outs(model, split, device)
    t = _need_test(o, "mia_confidence")
    return M.mia_confidence(_true_prob(*o.retain), _true_prob(*t), _true_prob(*o.forget),
                            seed=seed)


# ---------------------------------------------------------------------- MIA power
def _power_sets(o: Outputs, split: Split
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The members (D_r) and non-members of an attack's power check: the test set, or in
    class unlearning its samples of the retained classes, so that like is compared with like
    (the forgotten classes' test samples would be told apart by forgetting, not membership)."""
    t = _need_test(o, "the power of an attack")
    if split.scenario == "class" and split.forget_classes:
        keep = ~torch.isin(t[1].cpu(), torch.as_tensor(list(split.forget_classes)))
        t = (t[0][keep.to(t[0].device)], t[1][keep.to(t[1].device)])
    return o.retain, t


def mia_loss_cv_power(model: nn.Module | Outputs, split: Split, *, seed: int = 0,
                      device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.mia_loss_cv_power` of ``model``: the ``mia_loss_cv`` attack's
    cross-validated AUC at telling D_r from the test set (the retained classes' test samples
    in class unlearning); 0.5 = no power."""
    r, t = _power_sets(_outs(model, split, device), split)
    return M.mia_loss_cv_power(M.per_sample_loss(*r), M.per_sample_loss(*t), seed=seed)


def mia_entropy_power(model: nn.Module | Outputs, split: Split, *, seed: int = 0,
                      device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.mia_entropy_power` of ``model``: the ``mia_entropy`` attack's
    AUC at telling D_r from the test set (as :func:`mia_loss_cv_power`)."""
    r, t = _power_sets(_outs(model, split, device), split)
    return M.mia_entropy_power(_softmax(r[0]), _softmax(t[0]), seed=seed)


def mia_confidence_power(model: nn.Module | Outputs, split: Split, *, seed: int = 0,
                         device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.mia_confidence_power` of ``model``: the ``mia_confidence``
    attack's AUC at telling D_r from the test set (as :func:`mia_loss_cv_power`)."""
    r, t = _power_sets(_outs(model, split, device), split)
    return M.mia_confidence_power(_true_prob(*r), _true_prob(*t), seed=seed)


# ---------------------------------------------------------------------- divergences
def js_divergence(model: nn.Module | Outputs, retrained: nn.Module | Outputs, split: Split, *,
                  device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.js_divergence` between ``model`` and ``retrained`` on D_f."""
    return M.js_divergence(_outs(model, split, device).forget[0],
                           _outs(retrained, split, device).forget[0])


def activation_distance(model: nn.Module | Outputs, retrained: nn.Module | Outputs,
                        split: Split, *, device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.activation_distance` of ``model`` to ``retrained`` on D_f."""
    return M.activation_distance(_outs(model, split, device).forget[0],
                                 _outs(retrained, split, device).forget[0])


def random_model(model: nn.Module, seed: int = 0) -> nn.Module:
    """A randomly initialised model of ``model``'s architecture (seeded), for ``zrf``."""
    with seeded(seed, model_device(model)):
        return fresh_copy(model)


def zrf(model: nn.Module, split: Split, *, seed: int = 0, compat: bool = False,
        device: str | torch.device | None = None) -> float:
    """:func:`unlearnkit.metrics.zrf` of ``model`` on D_f, against a randomly initialised
    model of the same architecture (seeded with ``seed``). ``compat=True`` gives
    :func:`unlearnkit.metrics.zrf_compat`, the public code's variant."""
    fn = M.zrf_compat if compat else M.zrf
    rand = random_model(model, seed)
    return fn(predict(model, split.forget, device=device)[0],
              predict(rand, split.forget, device=device)[0])


def anamnesis(unlearned: nn.Module, original: nn.Module, retrained: nn.Module, split: Split,
              **kwargs: Any) -> float:
    """The Anamnesis index; see :func:`unlearnkit.relearn.anamnesis`."""
    from unlearnkit.relearn import anamnesis as _anamnesis

    return _anamnesis(unlearned, original, retrained, split, **kwargs)


# ---------------------------------------------------------------------- representation
def _features_and_labels(model: nn.Module, data: Data, *, layer: str | None = None,
                         device: str | torch.device | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`penultimate_features` of ``model`` on ``data``, and the data's labels."""
    dev = resolve_device(device) if device is not None else model_device(model)
    if layer is None:
        _, module = graph.output_module(model, graph.sample_input(data, dev))
    else:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise InvalidParameterError(
                f"The model has no module named {layer!r}; give a name from "
                "model.named_modules(), e.g. " + repr([n for n in modules if n][:5]) + ".")
        module = modules[layer]
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        value = output if layer is not None else (inputs[0] if inputs else None)
        if layer is not None and not isinstance(value, torch.Tensor):
            value = next((v for v in (value if isinstance(value, (tuple, list)) else ())
                          if isinstance(v, torch.Tensor)), getattr(value, "last_hidden_state",
                                                                   None))
        if not isinstance(value, torch.Tensor):
            raise ModelError(
                f"The {'output' if layer is not None else 'input'} of module "
                f"{type(_m).__name__} is not a tensor; give another layer.")
        seen.append(value)

    feats, labels = [], []
    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            for x, y in iter_batches(data, own_batch_size(data) or 1024, shuffle=False,
                                     device=dev):
                seen.clear()
                forward(model, x)
                if not seen:
                    raise ModelError(f"The module {type(module).__name__} was not called in the "
                                     "model's forward pass; give another layer.")
                f = seen[-1]
                feats.append(f.reshape(f.shape[0], -1).double().cpu())
                labels.append(y.cpu())
    finally:
        handle.remove()
    if not feats:
        return np.empty((0, 0)), np.empty(0, dtype=np.int64)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def penultimate_features(model: nn.Module, data: Data, *, layer: str | None = None,
                         device: str | torch.device | None = None) -> np.ndarray:
    """The features ``model`` feeds its output layer, one row per sample of ``data``.

    By default, the input of the output layer, found by data flow
    (:func:`unlearnkit.models.graph.output_module`); with ``layer`` (a qualified name from
    ``model.named_modules()``), the output of that module instead (its first tensor, or a Hugging
    Face output's ``last_hidden_state``). Read with a forward hook, in eval mode without
    gradients, in the data's order; flattened to ``(N, D)`` float64 on the CPU.
    """
    return _features_and_labels(model, data, layer=layer, device=device)[0]


def _cka(features: np.ndarray, other: nn.Module, split: Split, layer: str | None,
         device: str | torch.device | None) -> float:
    return M.linear_cka(features, penultimate_features(other, split.forget, layer=layer,
                                                       device=device))


def cka_retrained(model: nn.Module, retrained: nn.Module, split: Split, *,
                  layer: str | None = None, device: str | torch.device | None = None) -> float:
    """``cka_retrained``: :func:`unlearnkit.metrics.linear_cka` on D_f between the penultimate
    features of ``model`` and of ``retrained`` (higher: closer to retraining in the features)."""
    return _cka(penultimate_features(model, split.forget, layer=layer, device=device),
                retrained, split, layer, device)


def cka_original(model: nn.Module, original: nn.Module, split: Split, *,
                 layer: str | None = None, device: str | torch.device | None = None) -> float:
    """``cka_original``: :func:`unlearnkit.metrics.linear_cka` on D_f between the penultimate
    features of ``model`` and of ``original`` (1: the features of D_f did not change, up to a
    rotation and scale)."""
    return _cka(penultimate_features(model, split.forget, layer=layer, device=device),
                original, split, layer, device)


def probe_forget_acc(model: nn.Module, split: Split, *, seed: int = 0,
                     layer: str | None = None, max_samples: int | None = PROBE_MAX_SAMPLES,
                     device: str | torch.device | None = None) -> float:
    """``probe_forget_acc``: :func:`unlearnkit.metrics.probe_accuracy` of a linear probe on
    ``model``'s penultimate features of the training data (D_r + D_f), on the forgotten
    classes. Class unlearning only; compare with the retrained model's value."""
    if split.scenario != "class" or not split.forget_classes:
        raise InvalidParameterError("probe_forget_acc needs a class-unlearning split (it "
                                    "measures how well the forgotten classes are recognised).")
    if (max_samples is not None and isinstance(split.retain, ArrayDataset)
            and isinstance(split.forget, ArrayDataset)):
        # the probe's subsample depends on the labels alone: draw it first, and compute the
        # features of those samples only (the same value, a fraction of the forward passes)
        n_r = len(split.retain)
        labels = torch.cat([split.retain.y, split.forget.y]).cpu().numpy().astype(np.int64)
        idx = subsample(labels, max_samples, seed)
        parts = [d.subset(i) for d, i in ((split.retain, idx[idx < n_r]),
                                          (split.forget, idx[idx >= n_r] - n_r)) if len(i)]
        got = [_features_and_labels(model, d, layer=layer, device=device) for d in parts]
        feats = np.concatenate([f for f, _ in got])
        return M.probe_accuracy(feats, np.concatenate([y for _, y in got]),
                                split.forget_classes, seed=seed, max_samples=None)
    fr, yr = _features_and_labels(model, split.retain, layer=layer, device=device)
    ff, yf = _features_and_labels(model, split.forget, layer=layer, device=device)
    feats = ff if not len(yr) else np.concatenate([fr, ff])
    return M.probe_accuracy(feats, np.concatenate([yr, yf]), split.forget_classes, seed=seed,
                            max_samples=max_samples)


# ---------------------------------------------------------------------- the verdict
def _method_hints(model: nn.Module | Outputs) -> tuple[str | None, str | None]:
    """The ``forget_more`` and ``keep_utility`` advice of the method that made ``model``
    (read from its provenance; ``None`` for an unknown or no method)."""
    info = None if isinstance(model, Outputs) else get_info(model)
    name = info.method.get("name") if info is not None and info.method else None
    from unlearnkit.methods.base import METHODS

    if name not in METHODS:
        return None, None
    cls = METHODS.get(name)
    return cls.forget_more, cls.keep_utility


def verdict(
    model: nn.Module | Outputs,
    split: Split,
    original: nn.Module | Outputs,
    *,
    threshold: float = V.FORGET_THRESHOLD,
    tolerance: float = V.UTILITY_TOLERANCE,
    hint: str | None = None,
    utility_hint: str | None = None,
    device: str | torch.device | None = None,
) -> V.Verdict:
    """The oracle-free verdict of ``model`` on ``split`` (:mod:`unlearnkit.metrics.verdict`).

    Compares the model on D_f with the split's validation set (held out from the test data, so
    never in the test figures), and its retained held-out accuracy with ``original``'s. Never
    reads the test set or a retrained model. ``hint`` and ``utility_hint`` (default: the
    method's ``forget_more`` and ``keep_utility`` advice, read from the model's provenance)
    are what a ``not forgotten`` and a ``utility lost`` verdict tell the user to try.

    Raises:
        InvalidParameterError: the split has no validation set, or none of the retained
            classes.
    """
    if split.validation is None:
        raise InvalidParameterError(
            "The verdict needs a validation set held out from the test data, and this split has "
            "none: build it with validation > 0 (the default), or give "
            "Split.from_data(validation=...).")
    o = model if isinstance(model, Outputs) else Outputs.of(model, split, device, retain=False)
    oo = (original if isinstance(original, Outputs)
          else Outputs.of(original, split, device, retain=False))
    if o.validation is None or oo.validation is None:
        raise InvalidParameterError("The verdict needs the models' outputs on the validation "
                                    "set; compute Outputs.of with the split that holds it.")
    own_hint, own_utility = _method_hints(model)
    hint = hint if hint is not None else own_hint
    utility_hint = utility_hint if utility_hint is not None else own_utility
    forget_acc = accuracy_from_logits(*o.forget)
    original_forget_acc = accuracy_from_logits(*oo.forget)
    v_logits, v_labels = o.validation
    if split.scenario == "class" and split.forget_classes:
        gone = torch.isin(v_labels.cpu(), torch.as_tensor(list(split.forget_classes)))
        if bool(gone.all()):
            raise InvalidParameterError(
                "The validation set holds only samples of the forgotten classes: the verdict "
                "cannot judge what is retained.")

        def part(pair: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
                 ) -> float | None:
            m = mask.to(pair[1].device)
            return accuracy_from_logits(pair[0][m], pair[1][m]) if bool(m.any()) else None

        heldout_retain = part(o.validation, ~gone)
        original_retain = part(oo.validation, ~gone)
        assert heldout_retain is not None and original_retain is not None
        return V.judge_class(
            forget_acc=forget_acc, heldout_forget_acc=part(o.validation, gone),
            n_heldout_forget=int(gone.sum()), heldout_retain_acc=heldout_retain,
            original_heldout_retain_acc=original_retain,
            original_forget_acc=original_forget_acc, threshold=threshold,
            tolerance=tolerance, hint=hint, utility_hint=utility_hint)
    auc = V.loss_auc(M.per_sample_loss(*o.forget), M.per_sample_loss(v_logits, v_labels))
    original_auc = V.loss_auc(M.per_sample_loss(*oo.forget),
                              M.per_sample_loss(*oo.validation))
    return V.judge_samples(
        forget_acc=forget_acc, n_forget=len(o.forget[1]),
        validation_acc=accuracy_from_logits(v_logits, v_labels), n_validation=len(v_labels),
        auc=auc, original_forget_acc=original_forget_acc,
        original_validation_acc=accuracy_from_logits(*oo.validation),
        original_auc=original_auc, tolerance=tolerance, hint=hint, utility_hint=utility_hint)


_judge = verdict  # for evaluate, whose ``verdict`` parameter hides the function


# ---------------------------------------------------------------------- pools
def pool_metrics(unlearned: PoolOutputs, retrained: PoolOutputs) -> dict[str, Any]:
    """The NeurIPS 2023 competition's figures, and ``mia_lira``, from two pools of models.

    Returns ``forgetting_quality`` (F), ``competition_score`` (F x RA ratio x TA ratio), the
    two ratios ``retain_acc_ratio`` and ``test_acc_ratio`` (pool means, unlearned over
    retrained), ``mia_lira`` (needs at least 3 models per pool) and ``n_models``.
    """
    if len(unlearned) != len(retrained):
        raise InvalidParameterError(
            f"The pools differ in size: {len(unlearned)} unlearned vs {len(retrained)} "
            "retrained models; the competition compares N with N.")
    if unlearned.forget_logits.shape[1:] != retrained.forget_logits.shape[1:]:
        raise InvalidParameterError("The pools were built on different forget sets.")
    cu, cr = unlearned.confidences(), retrained.confidences()
    f = M.forgetting_quality(cu, cr)
    ra = float(np.mean(unlearned.retain_acc) / np.mean(retrained.retain_acc))
    ta = float(np.mean(unlearned.test_acc) / np.mean(retrained.test_acc))
    # without a test set there is no test-accuracy ratio, hence no score (F still stands)
    out: dict[str, Any] = {
        "forgetting_quality": f,
        "competition_score": M.competition_score(f, unlearned.retain_acc, retrained.retain_acc,
                                                 unlearned.test_acc, retrained.test_acc)
        if math.isfinite(ta) else None,
        "retain_acc_ratio": ra,
        "test_acc_ratio": ta if math.isfinite(ta) else None,
        "mia_lira": mia_lira(cu, cr) if len(unlearned) >= 3 else None,
        "n_models": len(unlearned),
    }
    return out


# ---------------------------------------------------------------------- everything
def _acc(o: tuple[torch.Tensor, torch.Tensor] | None) -> float | None:
    return None if o is None else accuracy_from_logits(*o)


def _enough(pair: tuple[torch.Tensor, torch.Tensor] | None) -> bool:
    return pair is not None and len(pair[1]) >= MIN_MIA_SAMPLES


def _mias(o: Outputs, split: Split) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    if _enough(o.forget) and _enough(o.non_members()):
        out["mia_loss_cv"] = mia_loss_cv(o, split)
    if _enough(o.forget) and _enough(o.test):
        out["mia_entropy"] = mia_entropy(o, split)
        out["mia_confidence"] = mia_confidence(o, split)
    return out


_POWER = {"mia_loss_cv": mia_loss_cv_power, "mia_entropy": mia_entropy_power,
          "mia_confidence": mia_confidence_power}


def _mia_powers(o: Outputs, split: Split, figures: dict[str, Any], seed: int
                ) -> dict[str, float]:
    """``<attack>_power`` of each figure computed, where D_r and the non-members are large
    enough (:data:`MIN_MIA_SAMPLES` each)."""
    if not figures or o.test is None:
        return {}
    members, non_members = _power_sets(o, split)
    if not (_enough(members) and _enough(non_members)):
        return {}
    return {f"{k}_power": _POWER[k](o, split, seed=seed) for k in figures if k in _POWER}


_EMPTY_FORGET = ("The forget set is empty: there is nothing to evaluate forgetting on. Give a "
                 "split whose forget set holds at least one sample.")


class EvaluationCache:
    """What :func:`evaluate` computes on the retrained and the original model, kept between
    calls that judge several models against the same references on the same split: their
    outputs, their attack figures and their penultimate features on D_f. A benchmark judges
    every method of a scenario against one reference; without this cache each judgement pays
    the references' forward passes again (on CIFAR-10, most of a run's evaluation).

    An entry is found by the identity of the model and the split objects (the cache holds
    them, so that an identity is never reused) and must not outlive a change to either: build
    a new cache for new models or a new split.

    >>> cache = EvaluationCache()
    >>> len(cache)
    0
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int, int], tuple[Any, Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, what: str, model: nn.Module, split: Split, compute: Callable[[], Any]) -> Any:
        """The value ``what`` of ``model`` on ``split``: ``compute()`` the first time."""
        key = (what, id(model), id(split))
        found = self._entries.get(key)
        if found is not None and found[0] is model and found[1] is split:
            return found[2]
        value = compute()
        self._entries[key] = (model, split, value)
        return value


def _memo(cache: EvaluationCache | None, what: str, model: nn.Module, split: Split,
          compute: Callable[[], Any]) -> Any:
    return compute() if cache is None else cache.get(what, model, split, compute)


def evaluate(
    model: nn.Module,
    split: Split,
    *,
    retrained: nn.Module | None = None,
    original: nn.Module | None = None,
    pools: tuple[PoolOutputs, PoolOutputs] | None = None,
    mia: bool = True,
    relearn: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    verdict: bool = False,
    cache: EvaluationCache | None = None,
) -> dict[str, Any]:
    """Every metric the inputs allow, keyed by DESIGN.md's names.

    Always: ``retain_acc``, ``forget_acc``, ``test_acc`` (and ``test_retain_acc``,
    ``test_forget_acc`` for class unlearning); ``seconds`` (the unlearning step's wall-clock,
    ``None`` for a model that records none); ``zrf``; with ``mia`` and a test set of at least
    :data:`MIN_MIA_SAMPLES`, ``mia_loss_cv``, ``mia_entropy`` and ``mia_confidence``, each
    with its power check ``<attack>_power`` (the same attack's cross-validated AUC at telling
    D_r from the test set on this model, 0.5 = no power; :mod:`unlearnkit.metrics.mia_power`);
    :func:`unlearnkit.metrics.uninformative_mias` of the result lists the figures that
    :func:`unlearnkit.metrics.mia_informative` calls uninformative (power below 0.55, or a
    separation below 0.05): read them as "the attack cannot tell membership here", never as
    "forgotten"; for class unlearning, ``probe_forget_acc`` (a linear probe on the model's
    penultimate features of the training data, its accuracy on the forgotten classes).

    With ``retrained``: ``retrain_seconds``, ``speedup``, ``js_divergence``,
    ``activation_distance``, ``avg_gap`` (SalUn's, over forget/retain/test accuracy and
    ``mia_confidence``) and ``cka_retrained`` (linear CKA of the penultimate features on D_f).
    With ``original``: ``cka_original`` (the same, against the original) and, with
    ``verdict=True`` and a split with a validation set, ``verdict`` (the oracle-free outcome
    of :func:`verdict`, the one value that is a string; :func:`verdict` gives its numbers;
    for sample unlearning also ``verdict_loss_auc``, its loss attack's AUC of D_f against the
    validation set, 0.5 = treated like unseen data);
    with both:
    ``anamnesis`` (relearning; skip it with ``relearn=False``) and, with ``mia``,
    ``<attack>_separation`` per MIA figure (the attack's figure on the original minus on the
    retrained model: the same for every model judged on this request; one more forward pass
    of the original). With ``pools`` =
    ``(unlearned_pool, retrained_pool)`` from :mod:`unlearnkit.pools`: :func:`pool_metrics`
    (``forgetting_quality``, ``competition_score``, ``mia_lira`` ...).

    Args:
        model: the model to judge (an unlearned one, or the original, or a retrained one).
        split: the forget request.
        retrained: the retrained reference model.
        original: the model before unlearning (for ``cka_original`` and ``anamnesis``).
        pools: the pools for the competition's figures.
        mia: compute the membership-inference attacks.
        relearn: compute ``anamnesis`` (default: when ``original`` and ``retrained`` are given).
        seed: seeds the attacks' power checks (subsets and folds), the random model of ``zrf``
            and the probe's subsample and folds.
        device: where to compute (default: where each model is).
        verdict: add the oracle-free ``verdict`` (needs ``original``).
        cache: an :class:`EvaluationCache` that keeps the work done on ``retrained`` and
            ``original`` for the next call with the same models and split (the values are
            the same with or without it).
    """
    want_verdict = verdict  # the parameter; the function is _judge
    try:
        n_forget = data_size(split.forget)
    except TypeError:  # a dataset without a length: counted once its outputs are computed
        n_forget = None
    if n_forget == 0:
        raise InvalidSplitError(_EMPTY_FORGET)
    check_finite(model, "The model to evaluate")
    dev = resolve_device(device) if device is not None else None
    o = Outputs.of(model, split, dev)
    if len(o.forget[1]) == 0:
        raise InvalidSplitError(_EMPTY_FORGET)
    out: dict[str, Any] = {
        "retain_acc": _acc(o.retain),
        "forget_acc": _acc(o.forget),
        "test_acc": _acc(o.test),
    }
    if split.scenario == "class":
        out["test_retain_acc"] = (None if split.test_retain is None
                                  else _acc(predict(model, split.test_retain, device=dev)))
        out["test_forget_acc"] = _acc(o.test_forget)
    info = get_info(model)
    # only an unlearned model has an unlearning step to time (an original records training)
    out["seconds"] = info.seconds if info is not None and info.method is not None else None
    figures: dict[str, Any] = _mias(o, split) if mia else {}
    out.update(figures)
    out.update(_mia_powers(o, split, figures, seed))
    out["zrf"] = zrf(model, split, seed=seed, device=dev)
    if split.scenario == "class" and split.forget_classes:
        out["probe_forget_acc"] = probe_forget_acc(model, split, seed=seed, device=dev)
    if retrained is not None or original is not None:
        fu = penultimate_features(model, split.forget, device=dev)
    def features(other: nn.Module, role: str) -> np.ndarray:
        return _memo(cache, f"{role} features", other, split,
                     lambda: penultimate_features(other, split.forget, device=dev))

    def outputs(other: nn.Module, role: str) -> Outputs:
        return _memo(cache, f"{role} outputs", other, split,
                     lambda: Outputs.of(other, split, dev))

    if retrained is not None:
        _memo(cache, "finite", retrained, split,
              lambda: check_finite(retrained, "The retrained model") or True)
        out["cka_retrained"] = M.linear_cka(fu, features(retrained, "retrained"))
        rinfo = get_info(retrained)
        out["retrain_seconds"] = rinfo.seconds if rinfo is not None else None
        out["speedup"] = speedup(out["seconds"], out["retrain_seconds"])
        ro = outputs(retrained, "retrained")
        out["js_divergence"] = js_divergence(o, ro, split)
        out["activation_distance"] = activation_distance(o, ro, split)
        ref = {"forget_acc": _acc(ro.forget), "retain_acc": _acc(ro.retain),
               "test_acc": _acc(ro.test)}
        # the attacks on the reference: all of them where their separation is wanted
        ref_figures: dict[str, Any] = (_memo(cache, "retrained mias", retrained, split,
                                             lambda: _mias(ro, split))
                                       if original is not None and figures else {})
        if "mia_confidence" in out:
            ref["mia_confidence"] = (ref_figures["mia_confidence"] if ref_figures
                                     else mia_confidence(ro, split))
        keys = [k for k in DEFAULT_GAP_KEYS
                if out.get(k) is not None and ref.get(k) is not None]
        out["avg_gap"] = M.avg_gap(out, ref, keys)
        if original is not None and (relearn or relearn is None):
            out["anamnesis"] = anamnesis(model, original, retrained, split, seed=seed,
                                         device=dev)
    if original is not None:
        _memo(cache, "finite", original, split,
              lambda: check_finite(original, "The original model") or True)
        out["cka_original"] = M.linear_cka(fu, features(original, "original"))
        oo = o if original is model else None
        if want_verdict and split.validation is not None:
            oo = oo or outputs(original, "original")
            judged = _judge(o, split, oo)
            out["verdict"] = judged.outcome
            if judged.numbers.get("loss_auc") is not None:  # sample unlearning
                out["verdict_loss_auc"] = float(judged.numbers["loss_auc"])
        if retrained is not None and figures:
            orig_figures = (figures if original is model
                            else _memo(cache, "original mias", original, split,
                                       lambda: _mias(oo or outputs(original, "original"),
                                                     split)))
            for k in figures:
                out[f"{k}_separation"] = M.mia_separation(orig_figures[k], ref_figures[k])
    if pools is not None:
        out.update(pool_metrics(*pools))
    return {k: v for k, v in out.items() if v is not None or k == "seconds"}


def score(
    original: nn.Module,
    split: Split,
    method: str | Any = "finetune",
    *,
    n_models: int = 32,
    device: str | torch.device | None = None,
    progress: bool = False,
    cache: bool = True,
    **params: Any,
) -> dict[str, Any]:
    """The NeurIPS 2023 competition's score of ``method`` on one forget request.

    Builds (or reuses, from the on-disk cache of :mod:`unlearnkit.pools`) N retrained models
    and N unlearned ones (``method`` applied to ``original`` with seeds 0 .. N-1), and returns
    :func:`pool_metrics` plus the pools' mean accuracies and median seconds:
    ``retain_acc``, ``forget_acc``, ``test_acc`` (unlearned pool), ``retrained_retain_acc``,
    ``retrained_forget_acc``, ``retrained_test_acc``, ``seconds``, ``retrain_seconds``.
    Two names judge no unlearning at all: ``"original"``, the competition's reading (every
    "unlearned" model is ``original`` itself; F = 0 by its rules, since N identical models have
    no spread), and ``"original-seeds"``, N models trained on all of D with N seeds (whether
    having seen D_f shows, beside the seed-to-seed spread; see
    :func:`unlearnkit.pools.original_pool`).
    The competition used N = 512; ``forgetting_quality`` is coarse below about 32.
    """
    check_finite(original, "The original model")
    kw = {"device": device, "progress": progress, "cache": cache}
    # every check before any training: the pool to build is decided, then built
    make: Callable[[], PoolOutputs]
    if method in NO_UNLEARNING:
        if params:
            raise InvalidParameterError(
                f"{method!r} (no unlearning) takes no hyper-parameters; got {sorted(params)}.")
        name, hps = method, None
        make = (partial(identity_pool, original, split, n_models, device=device)
                if method == "original" else partial(original_pool, original, split, n_models,
                                                     **kw))
    else:
        m = get_method(method, **params)
        name, hps = m.name, m.json_params()
        make = partial(unlearned_pool, original, split, m, n_models, **kw)
    reference = retrained_pool(original, split, n_models, **kw)
    pool = make()
    out: dict[str, Any] = {"method": name, "params": hps, **pool_metrics(pool, reference)}
    for prefix, p in (("", pool), ("retrained_", reference)):
        for key in ("retain_acc", "forget_acc", "test_acc"):
            value = float(np.mean(getattr(p, key)))
            out[prefix + key] = value if math.isfinite(value) else None
    out["seconds"] = float(np.median(pool.seconds))
    out["retrain_seconds"] = float(np.median(reference.seconds))
    return out
