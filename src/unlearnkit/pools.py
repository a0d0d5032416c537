"""Pools of models for the NeurIPS 2023 competition score and the likelihood-ratio attack.

The competition judges a method by N unlearned models (the method applied to one original
with N seeds) against N retrained models (N training seeds), example by example. This module
builds those pools, and a pool of N originals (trained on all of D with N seeds) so that
"no unlearning at all" can be judged the same way.

A pool keeps, per model, only what the pool metrics read: the logits on D_f, and the
accuracies on D_r, D_f and the test set. Each model's outputs are written to disk as soon as
it is trained (``cache_root() / "pools"``), keyed by what made it: the dataset's samples, the
forget request, the architecture, the recipe (and, for unlearned pools, the original's weights
and the method's hyper-parameters) and the seed. A later call, a larger N, or an interrupted
run reuses every model already there. Files are plain ``.npz`` arrays (read with
``allow_pickle=False``) beside a readable ``pool.json``.

Seeds: unlearned pools use seeds ``0 .. N-1``; the retrained reference pool uses
``RETRAINED_SEED_BASE + i``, so that ``retrain`` judged as a method is a pool of *fresh*
retrained models, never the reference's own.

>>> import unlearnkit as uk
>>> from unlearnkit.pools import retrained_pool
>>> ds = uk.load_dataset("digits")
>>> original = uk.train_model(ds, arch="mlp", recipe=uk.Recipe(epochs=2), hidden=(16,))
>>> pool = retrained_pool(original, uk.split_random(ds, fraction=0.1), 3)
>>> pool.confidences().shape  # 3 models x 144 forget examples
(3, 144)
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from unlearnkit._cache import cache_root, hash_model, hash_tensors
from unlearnkit.data.containers import ArrayDataset, join
from unlearnkit.data.splits import Data, Split
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.methods.base import UnlearningMethod, get_method
from unlearnkit.metrics.accuracy import accuracy_from_logits
from unlearnkit.metrics.competition import logit_scaled_confidence
from unlearnkit.models.checkpoint import atomic_write
from unlearnkit.models.info import get_info
from unlearnkit.models.registry import fresh_copy
from unlearnkit.training import Recipe, fit, predict, resolve_device, seeded

__all__ = [
    "RETRAINED_SEED_BASE",
    "PoolOutputs",
    "cached_original",
    "cached_reference",
    "identity_pool",
    "original_cache_path",
    "original_pool",
    "pool_cache_dir",
    "reference_cache_path",
    "retrained_pool",
    "unlearned_pool",
]

#: The retrained reference pool's seeds start here (unlearned pools use 0 .. N-1).
RETRAINED_SEED_BASE = 1_000_000
_FORMAT = 1
PoolKind = Literal["original", "retrained", "unlearned"]  # and "identity", never cached


@dataclass(frozen=True)
class PoolOutputs:
    """What the pool metrics read from N models of one kind, on one forget request.

    Attributes:
        kind: ``"original"``, ``"retrained"``, ``"unlearned"`` or ``"identity"``.
        label: ``"original"``, ``"retrain"`` or the method's name.
        seeds: the N seeds, in row order.
        forget_logits: ``(N, E, C)`` float32 logits on D_f.
        forget_labels: ``(E,)`` labels of D_f.
        retain_acc, forget_acc, test_acc: ``(N,)`` accuracies (``nan`` without test data).
        seconds: ``(N,)`` wall-clock seconds that producing each model took.
        folder: where the pool is cached (``None`` when it is not).
    """

    kind: str
    label: str
    seeds: tuple[int, ...]
    forget_logits: np.ndarray
    forget_labels: np.ndarray
    retain_acc: np.ndarray
    forget_acc: np.ndarray
    test_acc: np.ndarray
    seconds: np.ndarray
    folder: Path | None = None

    def __len__(self) -> int:
        return len(self.seeds)

    def confidences(self) -> np.ndarray:
        """``(N, E)`` logit-scaled confidences, float64 (the competition's statistic)."""
        n, e, c = self.forget_logits.shape
        flat = logit_scaled_confidence(self.forget_logits.reshape(n * e, c),
                                       np.tile(self.forget_labels, n))
        return flat.reshape(n, e)


# ---------------------------------------------------------------------- cache keys
def pool_cache_dir() -> Path:
    """``cache_root() / "pools"``: one folder per pool."""
    return cache_root() / "pools"


def _data_hash(data: Data | None) -> str | None:
    if data is None:
        return "none"
    if isinstance(data, ArrayDataset):
        return hash_tensors(data.x, data.y)
    return None  # a user's Dataset or DataLoader: not hashed, so not cached


def _split_key(split: Split) -> dict[str, Any] | None:
    parts = {name: _data_hash(getattr(split, name)) for name in ("forget", "retain", "test")}
    if any(v is None for v in parts.values()):
        return None
    return {**parts, "scenario": split.scenario}


def _arch_key(model: nn.Module) -> dict[str, Any]:
    info = get_info(model)
    return {
        "arch": info.arch if info is not None else None,
        "arch_kwargs": info.arch_kwargs if info is not None else None,
        "num_classes": info.num_classes if info is not None else None,
        "module": repr(model),  # a user's own module is known by its structure
    }


def _key(spec: dict[str, Any]) -> str:
    import hashlib

    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------- one model's outputs
_ARRAYS = ("forget_logits", "forget_labels", "accs", "seconds")


def _outputs(model: nn.Module, split: Split, device: torch.device, seconds: float
             ) -> dict[str, np.ndarray]:
    f_logits, f_labels = predict(model, split.forget, device=device)
    r_logits, r_labels = predict(model, split.retain, device=device)
    test_acc = float("nan")
    if split.test is not None:
        t_logits, t_labels = predict(model, split.test, device=device)
        test_acc = accuracy_from_logits(t_logits, t_labels)
    accs = [accuracy_from_logits(r_logits, r_labels), accuracy_from_logits(f_logits, f_labels),
            test_acc]
    return {
        "forget_logits": f_logits.numpy().astype(np.float32),
        "forget_labels": f_labels.numpy().astype(np.int64),
        "accs": np.asarray(accs, dtype=np.float64),
        "seconds": np.asarray([seconds], dtype=np.float64),
    }


def _read(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: np.array(f[k]) for k in _ARRAYS}
    except Exception:  # truncated or foreign file: a cache miss, recomputed and overwritten
        return None
    if out["accs"].shape != (3,) or out["forget_logits"].ndim != 2:
        return None
    return out


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


# ---------------------------------------------------------------------- the builder
def _build(
    kind: PoolKind,
    label: str,
    spec: dict[str, Any] | None,
    seeds: Sequence[int],
    make: Any,
    split: Split,
    *,
    device: str | torch.device | None,
    progress: bool,
    cache: bool,
) -> PoolOutputs:
    dev = resolve_device(device)
    folder = None
    if cache and spec is not None:
        folder = pool_cache_dir() / f"{kind}-{_key({'format': _FORMAT, **spec})}"
        if not (folder / "pool.json").is_file():
            atomic_write(folder / "pool.json",
                         lambda tmp: Path(tmp).write_text(
                             json.dumps({"kind": kind, "label": label, **spec}, indent=2,
                                        default=str) + "\n"))
    rows: dict[int, dict[str, np.ndarray]] = {}
    todo = []
    for s in seeds:
        got = _read(folder / f"seed-{s}.npz") if folder is not None else None
        if got is not None:
            rows[s] = got
        else:
            todo.append(s)
    if todo:
        from tqdm.auto import tqdm

        bar = tqdm(todo, desc=f"{label} pool ({len(rows)} of {len(seeds)} cached)",
                   unit="model", file=sys.stderr, disable=not progress, leave=False)
        for s in bar:
            model, seconds = make(s, dev)
            rows[s] = _outputs(model, split, dev, seconds)
            del model
            if folder is not None:
                _write(folder / f"seed-{s}.npz", rows[s])
    ordered = [rows[s] for s in seeds]
    e = {r["forget_logits"].shape for r in ordered}
    if len(e) != 1:
        raise InvalidParameterError(f"The {label} pool's models disagree on D_f's shape: {e}")
    accs = np.stack([r["accs"] for r in ordered])
    return PoolOutputs(
        kind=kind,
        label=label,
        seeds=tuple(int(s) for s in seeds),
        forget_logits=np.stack([r["forget_logits"] for r in ordered]),
        forget_labels=ordered[0]["forget_labels"],
        retain_acc=accs[:, 0],
        forget_acc=accs[:, 1],
        test_acc=accs[:, 2],
        seconds=np.concatenate([r["seconds"] for r in ordered]),
        folder=folder,
    )


def _check_n(n_models: int) -> int:
    if isinstance(n_models, bool) or not isinstance(n_models, int | np.integer) or n_models < 1:
        raise InvalidParameterError(
            f"The 'n_models' parameter must be a positive int. Got {n_models!r}.")
    return int(n_models)


def _recipe_of(original: nn.Module) -> Recipe:
    info = get_info(original)
    if info is None or not info.recipe:
        warnings.warn(
            "The original model records no training recipe; the pool's models are trained with "
            "unlearnkit's default Recipe().", UserWarning, stacklevel=3)
        return Recipe()
    return Recipe.from_dict(info.recipe)


def retrained_pool(
    original: nn.Module,
    split: Split,
    n_models: int,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    cache: bool = True,
) -> PoolOutputs:
    """N models retrained from scratch on D_r with ``original``'s architecture and recipe.

    Model ``i`` is the ``retrain`` method's result with seed ``RETRAINED_SEED_BASE + i``. The
    pool is cached on disk and grows on demand (asking for 64 after 32 trains 32 more).
    """
    n = _check_n(n_models)
    method = get_method("retrain")
    spec = _pool_spec(original, split, {"method": "retrain"}, weights=False)

    def make(seed: int, dev: torch.device) -> tuple[nn.Module, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the recipe warning, said once below
            out = method.unlearn(original, forget=split.forget, retain=split.retain,
                                 test=split.test, scenario=split.scenario, seed=seed,
                                 device=dev)
        return out, float(get_info(out).seconds or 0.0)  # type: ignore[union-attr]

    _recipe_of(original)  # warns once if the original records no recipe
    seeds = [RETRAINED_SEED_BASE + i for i in range(n)]
    return _build("retrained", "retrain", spec, seeds, make, split, device=device,
                  progress=progress, cache=cache)


def identity_pool(
    original: nn.Module,
    split: Split,
    n_models: int,
    *,
    device: str | torch.device | None = None,
) -> PoolOutputs:
    """"No unlearning", judged by the competition's protocol: N unlearned models that are all
    ``original`` itself (nothing is trained; the outputs are computed once).

    Its forgetting quality is 0 by the competition's rules, whatever the data: N identical
    models have no spread, so every example's epsilon is the cap. :func:`original_pool` is
    the other view of "no unlearning", with N independently trained originals.
    """
    n = _check_n(n_models)
    dev = resolve_device(device)
    one = _outputs(original, split, dev, 0.0)
    accs = np.repeat(one["accs"][None, :], n, axis=0)
    return PoolOutputs(
        kind="identity",
        label="original",
        seeds=tuple(range(n)),
        forget_logits=np.repeat(one["forget_logits"][None], n, axis=0),
        forget_labels=one["forget_labels"],
        retain_acc=accs[:, 0],
        forget_acc=accs[:, 1],
        test_acc=accs[:, 2],
        seconds=np.zeros(n),
    )


def original_pool(
    original: nn.Module,
    split: Split,
    n_models: int,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    cache: bool = True,
) -> PoolOutputs:
    """N models trained from scratch on all of D (= D_r + D_f), seeds ``0 .. N-1``.

    "No unlearning" with the seed variance of retraining: where :func:`identity_pool` asks
    whether the one original can be told from retrained models (it always can: it does not
    vary), this asks whether *having seen D_f* can be, model for model. On digits (random
    10 %, default cnn, N = 32) its forgetting quality is 0.15 against 0.21 for fresh retrained
    models: the memorisation signal is there, but small beside the seed-to-seed spread.
    D is the concatenation of D_r and D_f, so the data order differs from the original's
    training set; the distribution of models is the same.
    """
    n = _check_n(n_models)
    recipe = _recipe_of(original)
    train = join(split.retain, split.forget)
    spec = _pool_spec(original, split, {"method": "original", "recipe": recipe.to_dict()},
                      weights=False)

    def make(seed: int, dev: torch.device) -> tuple[nn.Module, float]:
        import time

        start = time.perf_counter()
        with seeded(seed, dev):
            model = fresh_copy(original).to(dev)
        fit(model, train, recipe, seed=seed, device=dev)
        return model, time.perf_counter() - start

    return _build("original", "original", spec, list(range(n)), make, split, device=device,
                  progress=progress, cache=cache)


def unlearned_pool(
    original: nn.Module,
    split: Split,
    method: str | UnlearningMethod,
    n_models: int,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    cache: bool = True,
    **params: Any,
) -> PoolOutputs:
    """``method`` applied N times to the one ``original``, with seeds ``0 .. N-1``.

    The competition's unlearned pool. A deterministic method gives N equal models; the
    competition's metric then finds them trivially apart from retrained ones (F = 0), which
    is its verdict on determinism, not a bug.
    """
    n = _check_n(n_models)
    m = get_method(method, **params)
    # retraining never reads the original's weights (only its architecture and recipe)
    spec = _pool_spec(original, split, {"method": m.name, "params": m.json_params()},
                      weights=m.name != "retrain")

    def make(seed: int, dev: torch.device) -> tuple[nn.Module, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said once by the caller's own run, not N times
            out = m.unlearn(original, forget=split.forget, retain=split.retain, test=split.test,
                            scenario=split.scenario, seed=seed, device=dev)
        return out, float(get_info(out).seconds or 0.0)  # type: ignore[union-attr]

    return _build("unlearned", m.name, spec, list(range(n)), make, split, device=device,
                  progress=progress, cache=cache)


def _pool_spec(original: nn.Module, split: Split, extra: dict[str, Any], *, weights: bool
               ) -> dict[str, Any] | None:
    skey = _split_key(split)
    if skey is None:
        return None
    info = get_info(original)
    spec = {
        "split": skey,
        "model": _arch_key(original),
        "dataset": info.dataset if info is not None else None,
        "recipe": info.recipe if info is not None else None,
        **extra,
    }
    if weights:  # an unlearned pool starts from these very weights
        spec["original"] = hash_model(original)
    return spec


def original_cache_path(data: Any, *, arch: str, recipe: Recipe, seed: int = 0,
                        **arch_kwargs: Any) -> Path:
    """Where :func:`cached_original` keeps (or would keep) this original."""
    spec = {
        "format": _FORMAT,
        "dataset": {"name": data.name, "options": dict(data.options)},
        "train": _data_hash(data.train),
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "recipe": recipe.to_dict(),
        "seed": seed,
    }
    return pool_cache_dir() / "originals" / f"{_key(spec)}.safetensors"


def cached_original(
    data: Any,
    *,
    arch: str,
    recipe: Recipe,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    **arch_kwargs: Any,
) -> nn.Module:
    """``uk.train_model(data, ...)``, trained once and then loaded from the pool cache.

    Keyed by the dataset's samples, the architecture, the recipe and the seed; stored as a
    safetensors checkpoint under :func:`pool_cache_dir` (:func:`original_cache_path`).
    """
    from unlearnkit.api import train_model
    from unlearnkit.models.checkpoint import load_checkpoint, save_checkpoint

    path = original_cache_path(data, arch=arch, recipe=recipe, seed=seed, **arch_kwargs)
    if path.is_file():
        try:
            return load_checkpoint(path, device=resolve_device(device))
        except Exception:  # an unreadable cache entry is retrained and overwritten
            pass
    model = train_model(data, arch=arch, recipe=recipe, seed=seed, device=device,
                        progress=progress, **arch_kwargs)
    save_checkpoint(model, path)
    return model


def reference_cache_path(original: nn.Module, split: Split, *, seed: int = 0) -> Path | None:
    """Where :func:`cached_reference` keeps (or would keep) the retrained reference, or
    ``None`` when the split's data cannot be hashed (a user's own Dataset or DataLoader)."""
    skey = _split_key(split)
    if skey is None:
        return None
    spec = {
        "format": _FORMAT,
        "original": hash_model(original),
        "split": skey,
        "method": get_method("retrain").params(),
        "seed": seed,
    }
    return pool_cache_dir() / "references" / f"{_key(spec)}.safetensors"


def cached_reference(
    original: nn.Module,
    split: Split,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> nn.Module:
    """The retrained reference (``uk.unlearn(original, split, "retrain", seed=seed)``),
    trained once and then loaded from the pool cache.

    Keyed by the original's weights, the split's samples, the ``retrain`` method's
    parameters and the seed (:func:`reference_cache_path`); stored as a safetensors
    checkpoint under :func:`pool_cache_dir`.
    """
    from unlearnkit.api import unlearn
    from unlearnkit.models.checkpoint import load_checkpoint, save_checkpoint

    path = reference_cache_path(original, split, seed=seed)
    if path is not None and path.is_file():
        try:
            return load_checkpoint(path, device=resolve_device(device))
        except Exception:  # an unreadable cache entry is retrained and overwritten
            pass
    model = unlearn(original, split, "retrain", seed=seed, device=device, progress=progress,
                    verdict=False)
    if path is not None:
        save_checkpoint(model, path)
    return model
