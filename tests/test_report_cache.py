"""The report's figure cache: a figure whose inputs did not change is reused, not drawn again;
a changed scenario, a corrupt manifest, a missing or changed PNG draw again, and the report is
the one a fresh folder gets, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_report_figures import make_study
from unlearnkit.bench import ResultStore
from unlearnkit.report import figures as figures_module
from unlearnkit.report import load_finished, summarize, write_report
from unlearnkit.report.cache import MANIFEST, FigureCache
from unlearnkit.report.figures import FigureJob, figure_jobs

CIFAR_SLUG = "cifar10-resnet18-class-cat"
DIGITS_SLUG = "digits-mlp-random-10"
N_FIGURES = 17  # 10 of the class scenario, 7 of the random one (the small study)


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


class Draws:
    """Counts the figures drawn: every :meth:`FigureJob.run` (``jobs``), the PNGs rasterised
    (``pngs``), the files they were written to (``names``); and checks that each drawn figure
    has its job's kind and tag (which name its file)."""

    def __init__(self, monkeypatch):
        self.jobs: list[tuple[str, str]] = []
        self.names: list[str] = []
        self.pngs = 0
        self.mismatched: list[tuple[str, str]] = []
        run, png_bytes, record = FigureJob.run, figures_module.png_bytes, FigureCache.drawn

        def counting_run(job):
            self.jobs.append((job.kind, job.tag))
            inner = job.draw

            def draw():
                fig = inner()
                if fig is not None and (fig.kind, fig.tag) != (job.kind, job.tag):
                    self.mismatched.append((job.kind, job.tag))
                return fig

            job.draw = draw
            return run(job)

        def counting_png(*a, **k):
            self.pngs += 1
            return png_bytes(*a, **k)

        def recording(cache, name, job, fig):
            self.names.append(name)
            record(cache, name, job, fig)

        monkeypatch.setattr(FigureJob, "run", counting_run)
        monkeypatch.setattr(figures_module, "png_bytes", counting_png)
        monkeypatch.setattr(FigureCache, "drawn", recording)

    def reset(self):
        self.jobs.clear()
        self.names.clear()
        self.pngs = 0


@pytest.fixture
def draws(monkeypatch):
    return Draws(monkeypatch)


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """The small study's store and its report written into an empty folder."""
    base = tmp_path_factory.mktemp("cold")
    db = make_study(base / "results.sqlite", small=True)
    lines: list[str] = []
    result = write_report(db, base / "report", log=lines.append)
    return db, base / "report", result, lines


def _copy(cold, tmp_path) -> Path:
    out = tmp_path / "report"
    shutil.copytree(cold[1], out)
    return out


def test_cold_report_draws_every_figure_and_writes_the_manifest(cold):
    _, out, result, lines = cold
    assert result["figures_drawn"] == N_FIGURES and result["figures_reused"] == 0
    pngs = [Path(f).name for f in result["files"] if f.endswith(".png")]
    assert len(pngs) == N_FIGURES
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["figures"]) == sorted(pngs)
    assert MANIFEST not in {Path(f).name for f in result["files"]}
    assert lines[-1].startswith(f"report: {N_FIGURES + 2} files written ({N_FIGURES} figures: "
                                f"{N_FIGURES} drawn, 0 unchanged) in ")
    assert "report: scenario 1/2: 10 figures (10 drawn, 0 unchanged) in " in "\n".join(lines)


def test_second_report_draws_nothing_and_is_byte_identical(cold, draws, tmp_path):
    db, _, first, _ = cold
    out = _copy(cold, tmp_path)
    before = _files(out)
    inodes = {p.name: p.stat().st_ino for p in out.glob("*.png")}
    lines: list[str] = []
    result = write_report(db, out, log=lines.append)
    assert draws.jobs == [] and draws.pngs == 0  # not a figure drawn, not a job run
    assert result["figures_drawn"] == 0 and result["figures_reused"] == N_FIGURES
    assert _files(out) == before  # every file, the manifest too
    assert {p.name: p.stat().st_ino for p in out.glob("*.png")} == inodes  # not rewritten
    assert ({k: v for k, v in result.items() if not k.startswith("figures_")}
            == {k: v for k, v in first.items() if not k.startswith("figures_")
                } | {"out": str(out), "files": [str(out / Path(f).name)
                                                 for f in first["files"]]})
    text = "\n".join(lines)
    assert "report: scenario 1/2: 10 figures (0 drawn, 10 unchanged)" in text
    assert "report: scenario 2/2: 7 figures (0 drawn, 7 unchanged)" in text
    assert lines[-1].startswith(f"report: 2 files written ({N_FIGURES} figures: 0 drawn, "
                                f"{N_FIGURES} unchanged) in ")


def test_a_changed_scenario_redraws_only_its_figures(cold, draws, tmp_path):
    db = tmp_path / "results.sqlite"
    shutil.copy(cold[0], db)
    with ResultStore(db) as store:  # a run of a new method in the random scenario
        store.write({"run_id": "extra", "dataset": "digits", "arch": "mlp",
                     "scenario": "random 10%", "scenario_kind": "random", "method": "ssd",
                     "params": {}, "seed": 0, "status": "ok", "spec": {},
                     "metrics": {"retain_acc": 0.9, "forget_acc": 0.5}})
    out = _copy(cold, tmp_path)
    result = write_report(db, out)
    # the random scenario's whole-scenario figures; not the class scenario's, nor the curves
    # of finetune, whose rows did not change
    assert sorted(draws.names) == sorted(f"{k}-{DIGITS_SLUG}.png" for k in
                                   ("tradeoff", "bars", "curves", "per-class", "losses",
                                    "saliency"))
    assert result["figures_drawn"] == 6 and draws.pngs == 6
    # and the Pareto figure's job, whose inputs changed too, but that makes none (no avg_gap)
    assert sorted(draws.jobs) == sorted([("pareto", ""), ("tradeoff", ""), ("bars", ""),
                                         ("curves", ""), ("per-class", ""), ("losses", ""),
                                         ("saliency", "")])
    assert result["figures_reused"] == N_FIGURES - 6
    # the same report as a fresh folder gets, byte for byte
    fresh = tmp_path / "fresh"
    write_report(db, fresh)
    assert _files(out) == _files(fresh)
    assert "ssd" in (out / "report.md").read_text()


def _tamper(out: Path, how: str) -> set[str]:
    """Damage the report folder; the figures that must be drawn again."""
    manifest = out / MANIFEST
    doc = json.loads(manifest.read_text())
    pngs = sorted(doc["figures"])
    bars, losses = f"bars-{CIFAR_SLUG}.png", f"losses-{DIGITS_SLUG}.png"
    if how == "corrupt manifest":
        manifest.write_text('{"format": 1, "figures": {"bars')
        return set(pngs)
    if how == "manifest of another format":
        manifest.write_text(json.dumps({**doc, "format": 99}))
        return set(pngs)
    if how == "missing png":
        (out / bars).unlink()
        return {bars}
    if how == "junk png":
        (out / bars).write_bytes(b"not a png")
        (out / losses).write_bytes((out / f"losses-{CIFAR_SLUG}.png").read_bytes())
        return {bars, losses}
    if how == "stale digest":
        doc["figures"][bars]["digest"] = "0" * 64
    elif how == "wrong size":  # the file matches its sha256, not the recorded size
        doc["figures"][bars]["figsize"] = [1.0, 1.0]
    elif how == "malformed entries":
        doc["figures"][bars] = {"digest": doc["figures"][bars]["digest"]}
        doc["figures"][losses]["figsize"] = "big"
    elif how == "unknown entries":  # dropped, nothing drawn
        doc["figures"]["ghost.png"] = dict(doc["figures"][bars])
        doc["empty"].append("f" * 64)
        manifest.write_text(json.dumps(doc))
        return set()
    manifest.write_text(json.dumps(doc))
    return {bars} if how != "malformed entries" else {bars, losses}


@pytest.mark.parametrize("how", ["corrupt manifest", "manifest of another format",
                                 "missing png", "junk png", "stale digest", "wrong size",
                                 "malformed entries", "unknown entries"])
def test_damage_draws_again_and_the_report_stays_right(cold, draws, tmp_path, how):
    db, _, _, _ = cold
    out = _copy(cold, tmp_path)
    expected = _copy(cold, tmp_path / "clean")
    want = _tamper(out, how)
    result = write_report(db, out)
    assert set(draws.names) == want and result["figures_drawn"] == len(want) == draws.pngs
    assert result["figures_reused"] == N_FIGURES - len(want)
    assert draws.mismatched == []
    assert _files(out) == _files(expected)  # the manifest too: unknown entries dropped


def test_an_interrupted_report_keeps_the_figures_it_drew(cold, draws, tmp_path):
    db, _, _, _ = cold
    out = tmp_path / "report"
    run = FigureJob.run

    def stop_in_the_second_scenario(job):
        if job.kind == "saliency" and job.inputs["scenario"]["dataset"] == "digits":
            raise KeyboardInterrupt
        return run(job)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FigureJob, "run", stop_in_the_second_scenario)
        with pytest.raises(KeyboardInterrupt):
            write_report(db, out)
    assert not (out / "report.html").exists() and (out / MANIFEST).is_file()
    draws.reset()
    result = write_report(db, out)
    assert result["figures_reused"] == 10  # the first scenario's, saved as it finished
    assert result["figures_drawn"] == N_FIGURES - 10 == draws.pngs
    assert all(DIGITS_SLUG in name for name in draws.names)
    assert _files(out) == _files(cold[1])


# ---------------------------------------------------------------------- the digests
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study") / "results.sqlite")


def _digests(rows, artefacts):
    out = {}
    for s in summarize(rows):
        for job in figure_jobs(s, artefacts):
            out[(s.scenario, job.kind, job.tag)] = job.digest
    return out


def test_digests_cover_exactly_the_data_each_figure_reads(study, monkeypatch):
    from unlearnkit.bench.store import read_artefacts

    rows = load_finished(study)
    arts = read_artefacts(study)
    base = _digests(rows, arts)
    assert all(d is not None and len(d) == 64 for d in base.values())
    assert len(set(base.values())) == len(base)  # every figure its own digest
    assert _digests(load_finished(study), read_artefacts(study)) == base  # deterministic
    assert ("class cat", "sweep", "teacher-lr") in base and ("class cat", "sweep",
                                                             "ssd-alpha") in base

    # an ssd row's mean: the class scenario's whole-scenario figures and ssd's sweeps, not
    # teacher's sweeps or curves, nor anything of the other scenario
    changed = [dict(r) for r in rows]
    i = next(i for i, r in enumerate(changed)
             if r["method"] == "ssd" and r["params"] == {"alpha": 5} and r["seed"] == 0)
    changed[i]["retain_acc"] = 0.5
    after = _digests(changed, arts)
    diff = {k for k in base if base[k] != after[k]}
    assert {k[0] for k in diff} == {"class cat"}
    assert ("class cat", "sweep", "ssd-alpha") in diff
    assert not {k for k in diff if k[1] == "sweep" and k[2].startswith("teacher")}
    assert ("class cat", "curves", "teacher") not in diff
    assert {("class cat", k, "") for k in ("pareto", "tradeoff", "bars", "per-class")} <= diff

    # an artefact: only the figures that read that artefact's key
    rid = next(r["run_id"] for r in rows if r["scenario"] == "random 10%"
               and r["method"] == "finetune")
    arts2 = {k: dict(v) for k, v in arts.items()}
    arts2[rid]["losses"] = {"original": {"forget": [1.0], "test": [2.0]}}
    diff = {k for k, d in _digests(rows, arts2).items() if d != base[k]}
    assert diff == {("random 10%", "losses", "")}

    # the drawing code's version: every figure
    monkeypatch.setattr(figures_module, "FIGURE_VERSION", figures_module.FIGURE_VERSION + 1)
    bumped = _digests(rows, arts)
    assert all(bumped[k] != base[k] for k in base)


def test_inputs_that_cannot_be_digested_are_always_drawn():
    assert figures_module.figure_digest("bars", "", {"x": object()}) is None
    assert figures_module.figure_digest("bars", "", {1: 2, "a": 3}) is None  # unsortable keys
    assert figures_module.figure_digest("bars", "", {"x": 1.0}) != \
        figures_module.figure_digest("bars", "", {"x": 1})


def test_cli_report_json_counts_the_figures(cold, tmp_path, capsys):
    from unlearnkit.cli import main

    db, _, _, _ = cold
    out = _copy(cold, tmp_path)
    assert main(["report", str(db), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["figures_drawn"], result["figures_reused"]) == (0, N_FIGURES)
    (out / MANIFEST).unlink()  # no manifest: nothing can be trusted, all drawn again
    assert main(["report", str(db), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["figures_drawn"], result["figures_reused"]) == (N_FIGURES, 0)
