"""The model zoo: one small model of every kind a user brings, with data it reads.

Each entry builds, on the CPU and in well under a second, a model of one common kind and the
forget / retain / test data of a class request and of a random-sample request, in the form that
kind of model consumes (image tensors, float64 features, integer token ids, ``(id, x, y)``
tuples, Hugging Face dict batches). The data is the digits set (8x8 images, pixel values
0-16), read as images or as 64 tokens of a 17-word vocabulary, so every model learns
something real in a few epochs.

The zoo is data: ``ZOO`` maps a kind to its builder, and the conformance test
(``tests/test_conformance.py``) and ``python tests/zoo.py`` (which prints the matrix of model
kind x method x scenario: ok, or refused with the reason) run every registered method on every
entry through :func:`run_cell`. A new model kind is one more entry; a new method joins by being
registered.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import unlearnkit as uk

#: training / test samples of the zoo's data (the first of digits' own split)
N_TRAIN, N_TEST = 300, 100
#: tokens: the 64 pixels of a digit, each value 0-16 a word
VOCAB, SEQ = 17, 64
FORGET_CLASS = 3
RANDOM_COUNT = 30


# ------------------------------------------------------------------------------- models
class MLPHeadFirst(nn.Module):
    """An MLP with BatchNorm1d and Dropout that registers its head *before* its body (so
    registration order is not forward order)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(32, 10)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                  nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pointwise = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(x + self.bn2(self.pointwise(out)))


class SmallResNet(nn.Module):
    """BatchNorm2d, a residual addition, a depthwise convolution, adaptive pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.block = ResidualBlock(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


class TinyViT(nn.Module):
    """Conv2d patch embedding, a bare class token and positional embedding, a transformer
    encoder layer (multi-head attention), LayerNorm."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, kernel_size=4, stride=4)  # 8x8 -> 2x2 patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32,
                                                  dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(x), -1, -1)
        h = self.encoder(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        return self.head(self.norm(h[:, 0]))


class TextCNN(nn.Module):
    """nn.Embedding and nn.Conv1d over integer token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embed(ids).transpose(1, 2)))
        return self.fc(h.amax(dim=2))


class TextGRU(nn.Module):
    """nn.Embedding and nn.GRU over integer token ids (the GRU steps over 16 groups of 4
    token embeddings, averaged: a quarter of the steps keeps the per-sample loop cheap)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 12)
        self.gru = nn.GRU(12, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed(ids)
        _, h = self.gru(e.view(len(ids), -1, 4, e.shape[-1]).mean(2))
        return self.fc(h[-1])


class FrozenBackbone(nn.Module):
    """A pretrained backbone with GroupNorm, frozen (requires_grad=False), and a trainable
    head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, 10)
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def float64_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double()


def hugging_face_bert() -> nn.Module:
    """A BERT sequence classifier from a tiny config: no weights are downloaded."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=SEQ, num_labels=10,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


# --------------------------------------------------------------------------------- data
class DictDataset(Dataset):
    """Hugging Face style samples: ``{"input_ids", "attention_mask", "labels"}``."""

    def __init__(self, ids: torch.Tensor, y: torch.Tensor) -> None:
        self.ids, self.y = ids, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.y[i]}


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = uk.load_dataset("digits")
    return (ds.train.x[:N_TRAIN], ds.train.y[:N_TRAIN], ds.test.x[:N_TEST], ds.test.y[:N_TEST])


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return (x * 16).round().long().reshape(len(x), -1)


#: How a zoo entry presents its data: ``form(x, y) -> Data``.
Form = Callable[[torch.Tensor, torch.Tensor], uk.Data]


def arrays(x: torch.Tensor, y: torch.Tensor) -> uk.Data:
    return uk.ArrayDataset(x, y)


def id_tuples(x: torch.Tensor, y: torch.Tensor) -> uk.Data:
    """``(id, x, y)`` batches from a DataLoader, read by position."""
    loader = DataLoader(TensorDataset(torch.arange(len(y)), x, y), batch_size=32)
    return uk.Batches(loader, input=1, target=2)


def hf_dicts(x: torch.Tensor, y: torch.Tensor) -> uk.Data:
    """Hugging Face dict batches from a DataLoader, read by the default rule."""
    return DataLoader(DictDataset(x, y), batch_size=32)


@dataclass(frozen=True)
class Kind:
    """One kind of model: how to build it, what it reads and how its data is presented."""

    name: str
    build: Callable[[], nn.Module]
    #: ``"image"`` (float32 8x8), ``"image64"`` (float64) or ``"tokens"`` (int64 ids)
    inputs: str
    form: Form = arrays
    notes: str = ""
    #: training epochs and learning rate of the zoo's original model
    recipe: uk.Recipe = field(default_factory=lambda: uk.Recipe(
        epochs=20, lr=0.02, optimizer="adam", weight_decay=0.0, batch_size=32))


ZOO: dict[str, Kind] = {k.name: k for k in [
    Kind("mlp-batchnorm", MLPHeadFirst, "image",
         notes="BatchNorm1d, Dropout, head registered before the body"),
    Kind("resnet", SmallResNet, "image",
         notes="BatchNorm2d, residual, depthwise conv, adaptive pooling"),
    Kind("vit", TinyViT, "image",
         notes="attention, LayerNorm, bare cls-token and positional parameters"),
    Kind("text-cnn", TextCNN, "tokens", form=id_tuples,
         notes="Embedding + Conv1d on token ids, (id, x, y) batches"),
    Kind("text-gru", TextGRU, "tokens", notes="Embedding + GRU on token ids"),
    Kind("frozen-backbone", FrozenBackbone, "image",
         notes="frozen GroupNorm backbone, trainable head"),
    Kind("float64", float64_mlp, "image64", notes="float64 weights and inputs"),
    Kind("hugging-face", hugging_face_bert, "tokens", form=hf_dicts,
         notes="transformers BERT, dict batches, ModelOutput",
         recipe=uk.Recipe(epochs=30, lr=0.02, optimizer="adam", weight_decay=0.0,
                          batch_size=32)),
]}


def _inputs(kind: Kind, x: torch.Tensor) -> torch.Tensor:
    if kind.inputs == "tokens":
        return _tokens(x)
    if kind.inputs == "image64":
        return x.double()
    return x


def make_splits(kind: Kind) -> dict[str, uk.Split]:
    """The class-3 request and a random request of ``RANDOM_COUNT`` samples, in the kind's
    data form."""
    x_tr, y_tr, x_te, y_te = _digits()
    x_tr, x_te = _inputs(kind, x_tr), _inputs(kind, x_te)
    gen = torch.Generator().manual_seed(0)
    masks = {"class": y_tr == FORGET_CLASS,
             "random": torch.zeros(len(y_tr), dtype=torch.bool)}
    masks["random"][torch.randperm(len(y_tr), generator=gen)[:RANDOM_COUNT]] = True
    out = {}
    for scenario, mask in masks.items():
        out[scenario] = uk.Split.from_data(
            forget=kind.form(x_tr[mask], y_tr[mask]), retain=kind.form(x_tr[~mask], y_tr[~mask]),
            test=kind.form(x_te, y_te), scenario=scenario, num_classes=10,
            forget_classes=[FORGET_CLASS] if scenario == "class" else None)
    return out


def make_model(kind: Kind, *, seed: int = 0) -> nn.Module:
    """The kind's model, trained briefly on the zoo's training data (retain + forget)."""
    torch.manual_seed(seed)
    model = kind.build()
    x_tr, y_tr, _, _ = _digits()
    uk.fit(model, kind.form(_inputs(kind, x_tr), y_tr), kind.recipe, seed=seed, device="cpu")
    model.zero_grad(set_to_none=True)
    model.eval()
    return model


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(kind: Kind, model: nn.Module) -> str:
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return (f"{kind.name}: {kind.notes}; {trainable_count(model)} trainable"
            + (f", {frozen} frozen" if frozen else "") + " parameters")


# ------------------------------------------------------------------------------ methods
#: Cheap settings of the methods known today (keys must be declared hyper-parameters).
CHEAP: dict[str, dict] = {
    "finetune": {"epochs": 1},
    "perturb": {"epochs": 1},
    "teacher": {"epochs": 1, "forget_epochs": 1},
    "retrain": {"epochs": 1},
    # alpha 10 cannot select anything when the forget set is a tenth of the data (ssd warns)
    "ssd": {"alpha": 5.0},
    "lf-ssd": {"alpha": 5.0},
    # the contract MLP has 2 layers: k=1 exercises the freezing (k=3 would train them all)
    "cf-k": {"k": 1},
    "eu-k": {"k": 1},
}


def cheap_params(name: str) -> dict:
    """Cheap settings of method ``name``: every declared ``*epochs`` hyper-parameter set to 1,
    then the ``CHEAP`` table (which may only name declared hyper-parameters)."""
    hps = {h.name: h for h in uk.METHODS.get(name).hyperparameters()}
    params = {
        h.name: 1
        for h in hps.values()
        if h.name.endswith("epochs") and h.type == "int" and isinstance(h.default, int)
        and h.default > 1
    }
    extra = CHEAP.get(name, {})
    undeclared = set(extra) - set(hps)
    if undeclared:
        raise AssertionError(f"CHEAP[{name!r}] names undeclared hyper-parameters {undeclared}")
    params.update(extra)
    return params


def expected_refusal(kind: Kind, name: str, scenario: str) -> str | None:
    """Why method ``name`` must refuse this cell, from what the method declares; ``None`` when
    it must run."""
    cls = uk.METHODS.get(name)
    if scenario not in cls.scenarios and cls.other_scenarios == "refuse":
        return "scenario"
    if cls.needs_float_inputs is not None and kind.inputs == "tokens":
        return "inputs"
    return None


@dataclass
class Outcome:
    """One cell of the matrix."""

    status: str  # "ok", "refused" or "crash"
    reason: str = ""
    seconds: float = 0.0
    model: nn.Module | None = None
    error: BaseException | None = None


def run_cell(model: nn.Module, split: uk.Split, name: str) -> Outcome:
    """Run method ``name`` at cheap settings on ``model`` and ``split``. A refusal is an
    :class:`~unlearnkit.UnlearnkitError`; anything else raised is a crash."""
    method = uk.get_method(name, **cheap_params(name))
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = method.unlearn(model, forget=split.forget, retain=split.retain,
                                 test=split.test, scenario=split.scenario, seed=0, device="cpu")
    except uk.UnlearnkitError as exc:
        return Outcome("refused", f"{type(exc).__name__}: {exc}", time.perf_counter() - start,
                       error=exc)
    except Exception as exc:
        return Outcome("crash", f"{type(exc).__name__}: {exc}", time.perf_counter() - start,
                       error=exc)
    return Outcome("ok", "", time.perf_counter() - start, model=out)


#: how the matrix writes a cell's outcome
_MARKS = {"scenario": "S", "inputs": "I"}


def print_matrix(kinds: list[str] | None = None, methods: list[str] | None = None,
                 file=sys.stdout) -> int:
    """Print the matrix, one row per method and one column per model kind, each cell the
    outcome for the class and the random request (``ok``; ``S``: refused, a scenario the method
    does not support; ``I``: refused, it needs float inputs; ``X``: a crash or a changed input
    model), then every refusal's message once. Return the number of bad cells (crashes,
    unexpected refusals, changed inputs)."""
    kinds = kinds or list(ZOO)
    methods = methods or uk.METHODS.names()
    grid: dict[tuple[str, str], str] = {}
    notes: dict[str, str] = {}
    bad = 0
    for kname in kinds:
        kind = ZOO[kname]
        model, splits = make_model(kind), make_splits(kind)
        print(describe(kind, model), file=file)
        for name in methods:
            marks = []
            for scenario in ("class", "random"):
                before = copy.deepcopy(model.state_dict())
                o = run_cell(model, splits[scenario], name)
                after = model.state_dict()
                touched = any(not torch.equal(before[k], after[k]) for k in before)
                expected = expected_refusal(kind, name, scenario)
                if o.status == "ok" and not touched and expected is None:
                    marks.append("ok")
                elif o.status == "refused" and not touched and expected is not None:
                    marks.append(_MARKS[expected])
                    notes.setdefault(f"{name} ({_MARKS[expected]})", o.reason)
                else:
                    marks.append("X")
                    bad += 1
                    what = "changed the input model" if touched else o.reason
                    notes[f"{name} on {kname}, {scenario} (X)"] = what
            grid[name, kname] = "/".join(marks)
    width = max(len(m) for m in methods) + 2
    cols = [max(len(k), 5) + 2 for k in kinds]
    print("\ncells: class request / random request", file=file)
    head = "".join(k.ljust(c) for k, c in zip(kinds, cols, strict=True))
    print(("method".ljust(width) + head).rstrip(), file=file)
    for name in methods:
        cells = "".join(grid[name, k].ljust(c) for k, c in zip(kinds, cols, strict=True))
        print((name.ljust(width) + cells).rstrip(), file=file)
    print("\nok: ran, finite model, caller's model untouched; S: refused, a scenario the method "
          "does not support; I: refused, needs float inputs; X: crash or changed input", file=file)
    for key, reason in notes.items():
        print(f"  {key}: {reason}", file=file)
    return bad


__all__ = ["CHEAP", "ZOO", "Kind", "Outcome", "cheap_params", "expected_refusal", "make_model",
           "make_splits", "print_matrix", "run_cell"]


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(1 if print_matrix(sys.argv[1].split(",") if len(sys.argv) > 1 else None) else 0)
