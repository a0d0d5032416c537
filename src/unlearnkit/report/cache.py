"""The report's figure cache: :func:`unlearnkit.report.write_report` reuses a figure whose
inputs did not change since the last report written into the same folder.

The folder's manifest (:data:`MANIFEST`, JSON, written atomically) records, per PNG file
name, the digest of the figure's inputs (:attr:`unlearnkit.report.figures.FigureJob.digest`:
exactly the data it is drawn from, the drawing code's version, matplotlib's), the sha256 of
the file's bytes, and the figure's title and size; and the digests of the figures that the
data made none of. A figure is reused only when the manifest has an entry for its file name
with the same digest, the file is there, its bytes have the recorded sha256 and are a PNG of
the recorded size; anything else (no manifest, a corrupt one, a missing or changed file, an
entry of another format) draws it again, so the manifest can make a report slower, never
wrong. Entries that the report no longer uses are dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import struct
from pathlib import Path
from typing import Any

from unlearnkit.models.checkpoint import atomic_write
from unlearnkit.report.figures import FigureImage, FigureJob

__all__ = ["MANIFEST", "FigureCache"]

#: The manifest's file name in the report folder.
MANIFEST = ".figures.json"

#: The manifest's format; a manifest of another is ignored.
FORMAT = 1

_PNG = b"\x89PNG\r\n\x1a\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header; ``None`` if ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG) or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def _is_size(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2
            and all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                    and math.isfinite(x) and x > 0 for x in v))


def _valid(e: Any) -> bool:
    return (isinstance(e, dict) and all(isinstance(e.get(k), str)
                                        for k in ("digest", "sha256", "title"))
            and _is_size(e.get("figsize")))


class FigureCache:
    """The figures of a report folder's last report, and those of this one as they are
    resolved (:meth:`reuse`, :meth:`empty`) or drawn (:meth:`drawn`, :meth:`drawn_empty`);
    :meth:`save` writes the manifest."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / MANIFEST
        self._old_figures, self._old_empty = self._load()
        self.figures: dict[str, dict[str, Any]] = {}
        self.nothing: set[str] = set()

    def _load(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError, RecursionError):  # none, unreadable, corrupt: draw all
            return {}, set()
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return {}, set()
        figures, empty = doc.get("figures"), doc.get("empty")
        figures = ({k: v for k, v in figures.items() if _valid(v)}
                   if isinstance(figures, dict) else {})
        empty = {d for d in empty if isinstance(d, str)} if isinstance(empty, list) else set()
        return figures, empty

    def empty(self, job: FigureJob) -> bool:
        """Whether the job's inputs made no figure last time (then they make none now)."""
        if job.digest is None or job.digest not in self._old_empty:
            return False
        self.nothing.add(job.digest)
        return True

    def reuse(self, name: str, job: FigureJob) -> FigureImage | None:
        """The figure of ``job`` from the file ``name`` when the manifest has it for the
        same inputs and the file is unchanged since; ``None``: draw it."""
        e = self._old_figures.get(name)
        if job.digest is None or e is None or e["digest"] != job.digest:
            return None
        path = self.out / name
        try:
            if not path.is_file() or path.is_symlink():
                return None
            data = path.read_bytes()
        except OSError:
            return None
        fig = FigureImage(job.kind, job.tag, e["title"], (float(e["figsize"][0]),
                                                          float(e["figsize"][1])), data)
        if _sha(data) != e["sha256"] or _png_size(data) != fig.pixels:
            return None
        self.figures[name] = e
        return fig

    def drawn(self, name: str, job: FigureJob, fig: FigureImage) -> None:
        """Record a figure just drawn into the file ``name``."""
        if job.digest is not None:
            self.figures[name] = {"digest": job.digest, "sha256": _sha(fig.png),
                                  "kind": fig.kind, "tag": fig.tag, "title": fig.title,
                                  "figsize": [float(fig.figsize[0]), float(fig.figsize[1])]}

    def drawn_empty(self, job: FigureJob) -> None:
        """Record that the job's inputs make no figure."""
        if job.digest is not None:
            self.nothing.add(job.digest)

    def save(self, *, final: bool = True) -> Path:
        """Write the manifest: this report's entries only (``final``), or, while the report
        is being written, the last report's with this one's over them (an interrupted
        report's figures are reused by the next)."""
        figures = self.figures if final else {**self._old_figures, **self.figures}
        empty = self.nothing if final else self._old_empty | self.nothing
        doc = {"format": FORMAT, "figures": figures, "empty": sorted(empty)}
        data = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode("utf-8")
        return atomic_write(self.path, lambda tmp: Path(tmp).write_bytes(data))
