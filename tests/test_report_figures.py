"""The report's figures: sweeps (the grouping rule), representative rows, curves, per-class
accuracy, loss histograms and saliency maps from the runs' artefacts; the HTML's data
attributes and embedded images; databases without artefacts."""

from __future__ import annotations

import base64
import io
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unlearnkit.bench import ResultStore
from unlearnkit.report import ORIGINAL, REFERENCE, load_finished, summarize, write_report
from unlearnkit.report.cache import MANIFEST
from unlearnkit.report.figures import (
    DPI,
    FIGURE_KINDS,
    per_class_figure,
    representative,
    sweeps,
)

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck"]
DIGITS = [str(i) for i in range(10)]


def artefacts(rng, classes, forgotten, *, channels=3, cam=True, curves=None):
    n = len(classes)
    drop = [c in forgotten for c in classes]
    per_class = {"classes": classes, "forgotten": forgotten,
                 "original": rng.uniform(0.8, 1.0, n).round(3).tolist()}
    for model in ("unlearned", "retrained"):
        per_class[model] = [0.0 if d else float(v)
                            for d, v in zip(drop, rng.uniform(0.7, 1.0, n).round(3), strict=True)]
    losses = {m: {"forget": rng.exponential(s, 30).tolist(),
                  "test": rng.exponential(0.3, 40).tolist()}
              for m, s in (("original", 0.1), ("unlearned", 2.0), ("retrained", 3.0))}
    saliency = {
        kind: {"index": i, "label": lab,
               "image": rng.normal(size=(channels, 8, 8)).tolist(),
               "models": {m: {"pred": int(rng.integers(n)),
                              "saliency": rng.normal(size=(8, 8)).tolist(),
                              "gradcam": rng.random((4, 4)).tolist() if cam else None}
                          for m in ("original", "unlearned", "retrained")}}
        for kind, i, lab in (("forget", 12, 3), ("retain", 40, 1))}
    out = {"per_class": per_class, "losses": losses, "saliency": saliency}
    if curves:
        out["curves"] = curves
    return out


def curve(phases, rng):
    """``phases``: [(name, epochs)]; each phase starts where the previous one ended."""
    pts, step = [], 0
    for name, epochs in phases:
        for epoch in range(epochs + 1):
            pts.append({"phase": name, "epoch": epoch, "step": step + epoch,
                        "retain_acc": float(rng.uniform(0.8, 1)),
                        "forget_acc": float(rng.uniform(0, 1)),
                        "test_acc": float(rng.uniform(0.7, 0.9))})
        step += epochs
    return pts


class DB:
    """Writes rows (and artefacts) to a results database."""

    def __init__(self, path: Path):
        self.store = ResultStore(path)
        self.path = path
        self.n = 0
        self.rng = np.random.default_rng(0)

    def add(self, scenario, method, params, seed, metrics, *, kind="classes", dataset="cifar10",
            arch="resnet18", art=None, calibration=None, trials=None):
        self.n += 1
        row = {"run_id": f"run{self.n}", "dataset": dataset, "arch": arch,
               "scenario": scenario, "scenario_kind": kind, "method": method,
               "params": params, "seed": seed, "status": "ok", "spec": {}, "metrics": metrics,
               "calibration": calibration, "trials": trials}
        if art is not None:
            row["artefacts"] = art
        self.store.write(row)

    def close(self):
        self.store.close()


TEACHER = ([{"lr": lr, "epochs": 5} for lr in (1e-5, 1e-4, 1e-3, 1e-2)]  # lr at default epochs
           + [{"lr": 1e-5, "epochs": e} for e in (1, 3, 10)])  # epochs at default lr
FINETUNE = [{"lr": lr, "epochs": e} for e in (0, 5) for lr in (1e-4, 1e-3, 1e-2)]  # crossed
# parameters missing from a row are at the method's default (alpha 10, lambd 1, fisher)
SSD = ([{"alpha": a} for a in (1, 5, 10)] + [{"lambd": x} for x in (0.5, 2, 3)]
       + [{"importance": "l1"}])


CALIBRATED = {"lr": 3e-4, "epochs": 5}  # teacher's calibrated choice (its defaults: 1e-5, 5)
TRIALS = [{"number": 0, "params": {"lr": 1e-5, "forget_lr": 1e-6}, "state": "complete",
           "value": 0.1, "outcome": "not forgotten", "retained": 0.9, "shortfall": 0.4,
           "seconds": 2.0},
          {"number": 1, "params": {"lr": 3e-2, "forget_lr": 1e-3}, "state": "pruned",
           "seconds": 1.0},
          {"number": 2, "params": {"lr": 3e-4, "forget_lr": 1e-6}, "state": "complete",
           "value": 0.93, "outcome": "forgotten", "retained": 0.93, "shortfall": 0.0,
           "seconds": 2.5}]


def calibration(params):
    return {"budget": 0.2, "budget_seconds": 8.0, "budget_basis": "retrain-row",
            "max_trials": None, "trials": len(TRIALS), "best_trial": 2, "search_seconds": 6.0,
            "defaults": {"lr": 1e-5, "epochs": 5, "forget_lr": 1e-6}, "params": params,
            "space": {"lr": {"low": 1e-5, "high": 0.1, "log": True},
                      "forget_lr": {"low": 1e-6, "high": 1e-2, "log": True}}}


def make_study(path: Path, *, with_artefacts: bool = True, small: bool = False) -> Path:
    """Two scenarios; ``small``: one seed and just the references and teacher in the first."""
    db = DB(path)
    rng = db.rng
    cls3 = "class cat"
    for seed in (0,) if small else (0, 1):
        def art(curves=None, cam=True):
            if not with_artefacts:
                return None
            return artefacts(rng, CIFAR, ["cat"], cam=cam, curves=curves)

        db.add(cls3, REFERENCE, {}, seed,
               {"retain_acc": 0.95 + 0.01 * seed, "forget_acc": 0.0, "test_acc": 0.90,
                "seconds": 10.0, "avg_gap": 0.01},
               art=art())
        db.add(cls3, ORIGINAL, {}, seed,  # the highest retain_acc, never marked
               {"retain_acc": 0.999, "forget_acc": 0.97, "test_acc": 0.93, "avg_gap": 0.4},
               art=art())
        for i, p in enumerate(TEACHER):
            db.add(cls3, "teacher", p, seed,
                   {"retain_acc": 0.9 - 0.01 * i, "forget_acc": 0.1 * i / 3,
                    "test_acc": 0.85, "avg_gap": 0.05 + 0.01 * i, "seconds": 1.0 + 0.5 * i},
                   art=art(curve([("teacher: forget", 2), ("teacher: rebuild", p["epochs"])],
                                 rng)))
        if small:
            continue
        # teacher calibrated: closer than any grid point, slower (the whole search); no
        # curves (a search records none)
        db.add(cls3, "teacher", CALIBRATED, seed,
               {"retain_acc": 0.93, "forget_acc": 0.01, "test_acc": 0.88, "avg_gap": 0.02,
                "seconds": 6.0, "verdict": "forgotten"},
               art=art(), calibration=calibration(CALIBRATED), trials=TRIALS)
        for i, p in enumerate(FINETUNE):
            db.add(cls3, "finetune", p, seed,
                   {"retain_acc": 0.92, "forget_acc": 0.5 - 0.05 * i, "test_acc": 0.86,
                    "avg_gap": abs(i - 4) * 0.02 + 0.01 * seed,  # lowest: FINETUNE[4]
                    "seconds": 0.5 + 0.1 * i},
                   art=art(curve([("finetune", p["epochs"])], rng)))
        for i, p in enumerate(SSD):
            db.add(cls3, "ssd", p, seed,
                   {"retain_acc": 0.9, "forget_acc": 0.02 * i, "test_acc": 0.8 + 0.01 * i},
                   art=art())
    # digits / mlp, a random forget set, one seed, no Grad-CAM, a missing metric
    for method, params, metrics in (
            (REFERENCE, {}, {"retain_acc": 0.97, "forget_acc": 0.96, "test_acc": 0.95}),
            (ORIGINAL, {}, {"retain_acc": 0.99, "forget_acc": 0.99, "test_acc": 0.96}),
            ("finetune", {}, {"retain_acc": 0.98, "forget_acc": 0.97}),
            ("finetune", {"lr": 1e-3}, {"retain_acc": 0.95, "forget_acc": 0.9})):
        art = None
        if with_artefacts:
            art = artefacts(rng, DIGITS, [], channels=1, cam=False,
                            curves=curve([("finetune", 2)], rng)
                            if method == "finetune" else None)
        db.add("random 10%", method, params, 0, metrics, kind="random", dataset="digits",
               arch="mlp", art=art)
    db.close()
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study") / "results.sqlite")


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report(study, out), out


def _summary(db, scenario):
    return next(s for s in summarize(load_finished(db)) if s.scenario == scenario)


# ---------------------------------------------------------------------- the rules
def test_sweeps_group_by_the_other_parameters(study):
    s = _summary(study, "class cat")
    found = {(sw.method, sw.param): sw for sw in sweeps(s)}
    # union of sweeps: each parameter its own figure; crossed grid: the 2-value toggle is a
    # line per value in the lr figure, not a figure of its own; a string parameter is skipped
    assert set(found) == {("teacher", "lr"), ("teacher", "epochs"), ("finetune", "lr"),
                          ("ssd", "alpha"), ("ssd", "lambd")}
    lr = found[("teacher", "lr")]
    assert [line.xs for line in lr.lines] == [[1e-5, 1e-4, 1e-3, 1e-2]]
    assert lr.lines[0].fixed == {"epochs": 5}
    assert [line.xs for line in found[("teacher", "epochs")].lines] == [[1, 3, 5, 10]]
    ft = found[("finetune", "lr")]
    assert sorted(line.label for line in ft.lines) == ["epochs=0", "epochs=5"]
    assert all(line.xs == [1e-4, 1e-3, 1e-2] for line in ft.lines)
    # a missing parameter counts at its default: the alpha rows are at lambd=1, the lambd
    # rows at alpha=10, so the default row (alpha=10) is on both lines
    alpha = found[("ssd", "alpha")].lines
    assert [line.xs for line in alpha] == [[1, 5, 10]]
    assert alpha[0].fixed == {"importance": "fisher", "lambd": 1.0}
    assert [line.xs for line in found[("ssd", "lambd")].lines] == [[0.5, 1.0, 2, 3]]


def test_sweeps_need_three_values():
    def row(params, seed=0):
        return {"run_id": None, "dataset": "d", "arch": "a", "scenario": "s",
                "scenario_kind": "classes", "method": "finetune", "params": params,
                "seed": seed, "status": "ok", "retain_acc": 0.9}

    two = summarize([row({"lr": 0.1, "epochs": e}) for e in (1, 2)]
                    + [row({"lr": 0.2, "epochs": 1})])[0]
    assert sweeps(two) == []  # no line with 3 values
    s = summarize([row({"lr": x}) for x in (0.1, 0.2, 0.3)])[0]
    assert [(sw.param, sw.lines[0].label) for sw in sweeps(s)] == [("lr", "")]


def test_representative_rows(study):
    s = _summary(study, "class cat")
    rep = representative(s, "teacher")  # its defaults were run
    assert rep.why == "defaults" and rep.row.params == {"lr": 1e-5, "epochs": 5}
    assert "[defaults]" in rep.label and "lr=1e-05" in rep.label
    rep = representative(s, "ssd")  # {"alpha": 10}: the others at their defaults
    assert rep.why == "defaults" and rep.row.params == {"alpha": 10}
    rep = representative(s, "finetune")  # no default row: the lowest mean avg_gap
    assert rep.why == "lowest avg_gap" and rep.row.params == FINETUNE[4]
    assert representative(s, "nope") is None

    def row(method, params, **metrics):
        return {"run_id": None, "dataset": "d", "arch": "a", "scenario": "s",
                "scenario_kind": "classes", "method": method, "params": params, "seed": 0,
                "status": "ok", **metrics}

    s = summarize([row("finetune", {"lr": 0.1}, forget_acc_gap=0.3),
                   row("finetune", {"lr": 0.2}, forget_acc_gap=0.1),
                   row("mystery", {"k": 1}), row("mystery", {"k": 2})])[0]
    rep = representative(s, "finetune")
    assert rep.why == "lowest forget_acc_gap" and rep.row.params == {"lr": 0.2}
    rep = representative(s, "mystery")  # not a registered method, no gap: the first row
    assert rep.why == "first row" and rep.row.params == {"k": 1}


def test_original_row_second_and_never_marked(study):
    s = _summary(study, "class cat")
    assert [r.method for r in s.rows[:2]] == [REFERENCE, ORIGINAL]
    assert all(1 not in idx and 0 not in idx for idx in s.best.values())
    # the original has the highest retain_acc, but the best is among the methods
    assert s.rows[1].mean["retain_acc"] > max(r.mean["retain_acc"] for r in s.rows[2:])
    assert s.best["retain_acc"] and min(s.best["retain_acc"]) >= 2


# ---------------------------------------------------------------------- the figures
def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def test_figures_kinds_and_pixel_sizes(report):
    result, out = report
    names = [Path(f).name for f in result["files"] if f.endswith(".png")]
    cat = "cifar10-resnet18-class-cat"
    # per-method artefacts as small multiples (one figure per kind); a method with several
    # rows with curves also gets its own curves figure
    assert [n for n in names if cat in n] == [
        f"{kind}-{cat}{tag}.png" for kind, tag in (
            ("pareto", ""), ("tradeoff", ""), ("bars", ""),
            # the methods in one stable order, by name (issue 15)
            ("sweep", "-finetune-lr"), ("sweep", "-ssd-alpha"), ("sweep", "-ssd-lambd"),
            ("sweep", "-teacher-epochs"), ("sweep", "-teacher-lr"),
            ("curves", ""), ("curves", "-finetune"), ("curves", "-teacher"), ("per-class", ""),
            ("losses", ""), ("saliency", ""))]
    rnd = "digits-mlp-random-10"
    # no avg_gap there: no Pareto figure
    assert [n for n in names if rnd in n] == [
        f"{kind}-{rnd}{tag}.png" for kind, tag in (
            ("tradeoff", ""), ("bars", ""), ("curves", ""), ("curves", "-finetune"),
            ("per-class", ""), ("losses", ""), ("saliency", ""))]
    size = {n: _png_size((out / n).read_bytes()) for n in names}  # all decode
    assert size[f"tradeoff-{cat}.png"] == (640, 480)
    assert size[f"pareto-{cat}.png"] == (1000, 560)
    assert size[f"sweep-{cat}-teacher-lr.png"] == (1250, 440)  # 3 panels
    # the random scenario's finetune rows lack test_acc, its curves have it: 3 panels
    assert size[f"curves-{rnd}-finetune.png"] == (1250, 440)
    # small multiples: 2.5 x 1.9 in a panel, 5 a row: teacher and finetune (the reference
    # has no curves; ssd neither)
    assert size[f"curves-{cat}.png"] == (530, 270)
    # losses: the original, the retrained model, teacher, finetune and ssd
    assert size[f"losses-{cat}.png"] == (1280, 260)
    assert size[f"losses-{rnd}.png"] == (780, 260)  # original, retrained, finetune
    # saliency: 1.15 in a cell; a row of inputs, then 5 models; (forget, retain) x
    # (saliency, Grad-CAM) columns, or no Grad-CAM for the MLP
    assert size[f"saliency-{cat}.png"] == (515, 760)
    assert size[f"saliency-{rnd}.png"] == (285, 530)
    assert DPI == 100
    # a palette PNG (a third of matplotlib's RGBA), every file
    for n in names:
        with Image.open(out / n) as im:
            assert im.mode == "P", n


def test_saliency_small_multiples_in_blocks(tmp_path):
    """Many models are laid out in side-by-side blocks, each headed by the inputs."""
    db = DB(tmp_path / "r.sqlite")
    methods = [REFERENCE, ORIGINAL] + [f"m{i}" for i in range(14)]
    for method in methods:
        db.add("class cat", method, {}, 0, {"retain_acc": 0.9, "forget_acc": 0.1},
               art={"saliency": artefacts(db.rng, CIFAR, ["cat"])["saliency"]})
    db.close()
    from unlearnkit.bench.store import read_artefacts
    from unlearnkit.report.figures import saliency_grid

    s = summarize(load_finished(db.path))[0]
    fig = saliency_grid(s, read_artefacts(db.path), CIFAR)
    # 16 models (original, retrained, 14 methods) in 2 blocks of 8 rows and 4 columns
    assert fig is not None and _png_size(fig.png) == fig.pixels == (1010, 1105)
    one = saliency_grid(summarize(load_finished(db.path))[0],
                        {k: v for k, v in read_artefacts(db.path).items()
                         if k in ("run1", "run3")}, CIFAR)  # the reference and m0
    assert one is not None and one.pixels == (515, 530)  # one block: inputs + 3 models


def test_per_class_heatmap_when_crowded(tmp_path):
    db = DB(tmp_path / "r.sqlite")
    classes = [f"c{i}" for i in range(20)]
    for method, params in ((REFERENCE, {}), (ORIGINAL, {}), ("finetune", {}), ("ssd", {}),
                           ("teacher", {}), ("scrub", {})):
        db.add("two classes", method, params, 0, {"retain_acc": 0.9, "forget_acc": 0.1},
               art={"per_class": artefacts(db.rng, classes, ["c3", "c7"])["per_class"]})
    db.close()
    from unlearnkit.bench.store import read_artefacts

    s = summarize(load_finished(db.path))[0]
    fig = per_class_figure(s, read_artefacts(db.path))
    assert fig is not None and _png_size(fig.png) == fig.pixels
    assert fig.pixels == (1250, 450)  # the heatmap: 6 models x 20 classes


def test_malformed_artefacts_are_skipped_or_noted(tmp_path):
    db = DB(tmp_path / "r.sqlite")
    bad = artefacts(db.rng, CIFAR, ["cat"])
    bad["saliency"]["forget"]["models"]["unlearned"]["saliency"] = "junk"  # shown as n/a
    bad["losses"] = {"original": {"forget": [], "test": []}}  # nothing to draw
    bad["curves"] = [{"phase": "x", "epoch": 0, "step": "oops", "retain_acc": None}]
    bad["per_class"]["forgotten"] = 5  # not a list: that figure fails, the report goes on
    for method in (REFERENCE, "finetune"):
        db.add("class cat", method, {}, 0, {"retain_acc": 0.9, "forget_acc": 0.1}, art=bad)
    db.add("class cat", "ssd", {}, 0, {"retain_acc": 0.9},
           art={"saliency": {"forget": {"image": [[[0.0]]], "label": 0,
                                        "models": {"original": {"pred": "x"}}}}})
    db.close()
    out = tmp_path / "rep"
    result = write_report(db.path, out)
    names = [Path(f).name for f in result["files"] if f.endswith(".png")]
    assert [n.split("-")[0] for n in names] == ["tradeoff", "bars", "saliency"]
    assert all(_png_size((out / n).read_bytes()) for n in names)
    note = "The per-class accuracy figure could not be drawn: TypeError"
    assert note in (out / "report.html").read_text()
    assert note in (out / "report.md").read_text()
    assert "could not be drawn" not in (out / "report.md").read_text().replace(note, "")


def test_saliency_single_channel_and_rgb_images():
    from unlearnkit.report.figures import _to_rgb

    gray, cmap = _to_rgb(np.array([[[-1.0, 1.0], [0.0, 3.0]]]))
    assert cmap == "gray" and gray.shape == (2, 2)
    assert gray.min() == 0.0 and gray.max() == 1.0
    rgb, cmap = _to_rgb(np.full((3, 4, 5), 0.5))
    assert cmap is None and rgb.shape == (4, 5, 3) and np.allclose(rgb, 0.5)


# ---------------------------------------------------------------------- the documents
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.ids, self.hrefs, self.links = [], [], [], [], []
        self.boards, self.details, self.top = [], [], []  # leaderboards; <details>; top level
        self._row = self._table = None
        self._open_details = []
        self._stack = []  # the open elements

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self._stack and self._stack[-1] == "body":
            self.top.append((tag, a))
        if tag not in ("meta", "link", "img", "br", "input"):
            self._stack.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a":
            self.hrefs.append(a.get("href"))
        if tag == "link":
            self.links.append(a)
        if tag == "details":
            self.details.append(a)
            self._open_details.append(a)
        if tag == "img":
            self.imgs.append({**a, "details": self._open_details[-1]["data-kind"]
                              if self._open_details else None})
        if tag == "table" and "summary" in (a.get("class") or ""):
            self._table = {"attrs": a, "rows": []}
            self.tables.append(self._table)
        if tag == "table" and "leaderboard" in (a.get("class") or ""):
            self._table = {"attrs": a, "rows": []}
            self.boards.append(self._table)
        if tag == "tr" and "data-method" in a and self._table is not None:
            self._row = {"attrs": a, "cells": {}}
            self._table["rows"].append(self._row)
        if tag == "td" and "data-metric" in a and self._row is not None:
            self._row["cells"][a["data-metric"]] = a

    def handle_endtag(self, tag):
        assert self._stack.pop() == tag  # well formed
        if tag == "tr":
            self._row = None
        if tag == "table":
            self._table = None
        if tag == "details":
            self._open_details.pop()


def test_report_files_html_images_and_data_attributes(report, study):
    result, out = report
    files = [Path(f) for f in result["files"]]
    assert sorted(f.name for f in files) == sorted(p.name for p in out.iterdir()
                                                   if p.name != MANIFEST)
    pngs = {f.name: f.read_bytes() for f in files if f.suffix == ".png"}
    assert len(pngs) == 14 + 7  # the figures of both scenarios
    assert "sweep-cifar10-resnet18-class-cat-teacher-lr.png" in pngs
    assert "saliency-digits-mlp-random-10.png" in pngs

    page_text = (out / "report.html").read_text()
    page = _Page()
    page.feed(page_text)
    # exactly the images written, with a non-empty alt and its pixel size: each once, but
    # the Pareto figure, at a glance and in its scenario's section
    embedded = {}
    for img in page.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,") and img["alt"].strip()
        data = base64.b64decode(src.split(",", 1)[1])
        embedded.setdefault(img["data-file"], []).append(data)
        assert _png_size(data) == (int(img["width"]), int(img["height"]))
    assert embedded == {name: [data] * (2 if name.startswith("pareto-") else 1)
                        for name, data in pngs.items()}
    # the Pareto figures and the leaderboards lead; every other figure is folded, closed
    assert [tag for tag, _ in page.top[:2]] == ["h1", "section"]
    assert page.top[1][1]["id"] == "at-a-glance"
    assert all((img["details"] is None) == (img["data-kind"] == "pareto") for img in page.imgs)
    assert page.details and not any("open" in d for d in page.details)
    assert {img["details"] for img in page.imgs} - {None} == set(FIGURE_KINDS) - {"pareto"}
    # navigable: every in-page link has its target; no external resource, a data: favicon
    assert all(h.startswith("#") and h[1:] in page.ids for h in page.hrefs)
    assert {"rel": "icon", "href": "data:,"} in page.links
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page_text)
    assert "<script" not in page_text
    assert len(set(page.ids)) == len(page.ids)
    # Markdown links the same files (the Pareto figures twice too)
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(set(links)) == sorted(pngs)
    assert len(links) == len(pngs) + sum(name.startswith("pareto-") for name in pngs)
    assert md.index("## At a glance") < md.index("### Leaderboard") < md.index("### Summary")
    # the leaderboard: ranked rows by avg_gap (ssd has none: after them, unranked), the
    # calibrated teacher with its chosen parameters
    assert [b["attrs"]["data-scenario"] for b in page.boards] == ["class cat"]
    rows = page.boards[0]["rows"]
    ranked = [r for r in rows if r["attrs"].get("data-rank")]
    gaps = [float(r["cells"]["avg_gap"]["data-value"]) for r in ranked]
    assert gaps == sorted(gaps) and len(ranked) == len(TEACHER) + 1 + len(FINETUNE)
    assert [r["attrs"]["data-method"] for r in rows[len(ranked):]] == ["ssd"] * len(SSD) + [
        ORIGINAL, REFERENCE]  # then the references, in the table's foot
    (cal,) = [r for r in ranked if r["attrs"]["data-calibrated"] == "true"]
    assert json.loads(cal["attrs"]["data-chosen"]) == [{"lr": 3e-4}]

    # the table's data attributes against SQLite
    conn = sqlite3.connect(study)
    assert [t["attrs"]["data-scenario"] for t in page.tables] == ["class cat", "random 10%"]
    n_rows = 0
    for t in page.tables:
        scen = t["attrs"]["data-scenario"]
        assert [r["attrs"]["data-method"] for r in t["rows"][:2]] == [REFERENCE, ORIGINAL]
        assert not any("data-best" in c for r in t["rows"][:2] for c in r["cells"].values())
        for r in t["rows"]:
            n_rows += 1
            method, params = r["attrs"]["data-method"], r["attrs"]["data-params"]
            assert params == json.dumps(json.loads(params), sort_keys=True)
            for metric, cell in r["cells"].items():
                vals = [v for (v,) in conn.execute(
                    f"SELECT {metric} FROM runs WHERE scenario=? AND method=? AND params=? "
                    "AND status='ok'", (scen, method, params)) if v is not None]
                if not vals:
                    assert "data-mean" not in cell
                    continue
                assert float(cell["data-mean"]) == pytest.approx(np.mean(vals))
                if len(vals) > 1:
                    assert float(cell["data-std"]) == pytest.approx(np.std(vals, ddof=1))
                else:
                    assert cell["data-std"] == ""
    conn.close()
    assert n_rows == 2 + len(TEACHER) + 1 + len(FINETUNE) + len(SSD) + 4  # 1: calibrated
    # quotes in params survive the single-quoted attribute
    assert "data-params='{&quot;epochs&quot;: 5, &quot;lr&quot;: 1e-05}'" in page_text


def test_report_without_artefacts(tmp_path):
    db = make_study(tmp_path / "r.sqlite", with_artefacts=False, small=True)
    sqlite3.connect(db).execute("DROP TABLE artefacts").connection.commit()  # an older DB
    out = tmp_path / "rep"
    result = write_report(db, out)
    names = sorted(Path(f).name for f in result["files"] if f.endswith(".png"))
    assert [n.rsplit("-", 1)[-1] for n in names if n.startswith("sweep")] == [
        "epochs.png", "lr.png"]  # teacher's; the metrics alone give the sweeps and the bars
    # the metrics alone give the Pareto figure, the sweeps and the bars
    assert {n.split("-")[0] for n in names} == {"pareto", "bars", "sweep", "tradeoff"}
    page = (out / "report.html").read_text()
    assert page.count("No artefacts stored") == 2
    assert len(re.findall(r"<img ", page)) == len(names) + 1  # the Pareto figure twice


def test_tradeoff_clusters_group_points_that_would_overlap():
    from unlearnkit.report.summary import tradeoff_clusters

    xs = [0.0, 0.001, 0.5, 1.0, 0.999, 0.0]
    ys = [1.0, 0.999, 0.7, 1.0, 0.998, 0.1]
    assert tradeoff_clusters(xs, ys) == [[0, 1], [2], [3, 4], [5]]


def test_tradeoff_labels_never_cover_one_another():
    """A crowded scenario (the CIFAR-10 class study's shape: many rows near x = 0 at
    different heights): every label's box is clear of every other's."""
    import random

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from unlearnkit.report.summary import _label_clusters

    rng = random.Random(0)
    xs = [rng.choice([0.0, 0.0, 0.01, 0.05, 0.1, 0.15, 0.35, 0.43]) for _ in range(40)]
    ys = [rng.uniform(0.1, 0.85) for _ in range(40)]
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(xs, ys)
    fig.draw_without_rendering()
    boxes = _label_clusters(ax, [f"method-{i} (calibrated)" for i in range(40)], xs, ys)
    assert len(boxes) == len(ax.texts) > 10
    for i, (l1, r1, t1, b1) in enumerate(boxes):
        for l2, r2, t2, b2 in boxes[i + 1:]:
            assert not (l1 < r2 and l2 < r1 and b1 < t2 and b2 < t1), (i, boxes)
