"""How the command's text output looks: rich tables and colour on a terminal, plain text in a
pipe or a file.

rich itself decides: ``Console(file=sys.stdout).is_terminal`` (a TTY, or ``FORCE_COLOR`` /
``TTY_COMPATIBLE`` set) picks the rich rendering; ``NO_COLOR`` keeps its tables and drops the
colours (rich's ``no_color``: bold and dim stay, as no-color.org asks). Anything else (a pipe,
a file, ``TTY_COMPATIBLE=0``) gets the plain text, byte for byte what the plain formatters
write. ``--json`` never comes here.

rich is imported inside the functions, never at import time, so that ``unlearnkit --version``
stays fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

__all__ = ["VERDICT_STYLES", "blocks", "cell", "console", "error_prefix", "line", "render",
           "stdout_console", "verdict"]

#: The colour of each verdict outcome (:data:`unlearnkit.metrics.verdict.OUTCOMES`).
VERDICT_STYLES = {"forgotten": "green", "partial": "yellow", "not forgotten": "red",
                  "utility lost": "magenta"}

# the longest first: "not forgotten" is not "forgotten"
_OUTCOME = re.compile("|".join(sorted(map(re.escape, VERDICT_STYLES), key=len, reverse=True)))

#: The gap between a table's columns: one space of padding each side of an invisible rule.
_PADDING = (0, 1)


def console(file: IO[str] | None = None) -> Console:
    """A rich console writing to ``file`` (default: the current ``sys.stdout``). Markup and
    highlighting are off: what is printed is styled explicitly, names are never parsed."""
    from rich.console import Console

    return Console(file=sys.stdout if file is None else file, markup=False, highlight=False,
                   emoji=False)


def stdout_console() -> Console | None:
    """A rich console on stdout when rich calls it a terminal; ``None`` (plain text) for a
    pipe or a file."""
    out = console(sys.stdout)
    return out if out.is_terminal else None


# a line's trailing run of spaces and escape codes (rich pads cells and wrapped text)
_TAIL = re.compile(r"(?: |\x1b\[[0-9;]*m)+$")
_CODE = re.compile(r"\x1b\[[0-9;]*m")


def _rstrip(line: str) -> str:
    """``line`` without its trailing spaces, its escape codes kept."""
    tail = _TAIL.search(line)
    return line if tail is None else line[:tail.start()] + "".join(_CODE.findall(tail.group()))


def render(out: Console, renderables: Iterable[RenderableType]) -> str:
    """``renderables`` as ``out`` would print them (ANSI codes included where it colours),
    as one string without the last newline and without trailing spaces: rendered before
    anything is written."""
    with out.capture() as captured:
        for r in renderables:
            out.print(r)
    return "\n".join(map(_rstrip, captured.get().removesuffix("\n").split("\n")))


def error_prefix(kind: str = "error", stream: IO[str] | None = None) -> str:
    """``unlearnkit: error:`` (or ``warning:``): red (yellow) when ``stream`` (default: the
    current stderr) is a terminal and colour is allowed; plain otherwise."""
    text = f"unlearnkit: {kind}:"
    try:
        err = console(sys.stderr if stream is None else stream)
        if not err.is_terminal or err.no_color or err.color_system is None:
            return text
        from rich.text import Text

        with err.capture() as captured:
            err.print(Text(text, style="bold red" if kind == "error" else "yellow"), end="")
        return captured.get()
    except Exception:  # colour never stands in the way of an error message
        return text


def verdict(value: str | None, style: str = "") -> Text:
    """A verdict (``partial 2/3, forgotten 1/3`` too) with each outcome in its colour."""
    from rich.text import Text

    text = Text(value or "-", style=style)
    for m in _OUTCOME.finditer(text.plain):
        text.stylize(VERDICT_STYLES[m.group()], m.start(), m.end())
    return text


def cell(value: str, *, bold: bool = False, dim: bool = False, style: str = "") -> Text:
    """A table cell: ``value`` in ``style``, bold (a best value) or dim (a figure to discount)."""
    from rich.text import Text

    styles = [s for s, on in (("bold", bold), ("dim", dim)) if on]
    return Text(value, style=" ".join([*styles, style]).strip())


def line(text: str | Text, style: str = "") -> RenderableType:
    """A line of free text, wrapped by rich at the width, its wrapped lines indented as its
    leading spaces."""
    from rich.padding import Padding
    from rich.text import Text

    if isinstance(text, str):
        text = Text(text, style=style)
    indent = len(text.plain) - len(text.plain.lstrip(" "))
    if not indent:
        return text
    return Padding(text[indent:], (0, 0, 0, indent), expand=False)


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]], columns: Sequence[int],
           justify: Sequence[str]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=_PADDING,
                  header_style="bold")
    for i in columns:
        table.add_column(header[i], justify=justify[i], no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[i] for i in columns))
    return table


def blocks(out: Console, header: Sequence[Any], rows: Sequence[Sequence[Any]], *,
           lead: int = 1, width: int | None = None, order: Sequence[int] | None = None,
           justify: Sequence[str] | None = None) -> list[Table]:
    """One table as rich tables no wider than ``width`` (default: the console's): the ``lead``
    columns (the method ...) start every block, the others are dealt out in ``order`` (the
    key ones first) to the last block while it fits, as measured by rich, then to a new one;
    each block shows its columns in the table's own order. Cells never wrap (only a block
    too wide for even one column is cut short by rich)."""
    from rich.measure import Measurement

    width = out.width if width is None else width
    justify = list(justify or ["left", *(["right"] * (len(header) - 1))])
    unbounded = out.options.update_width(10**6)  # the tables' natural width
    rest = list(order) if order is not None else list(range(lead, len(header)))
    dealt: list[list[int]] = []
    for j in rest:
        if dealt:
            candidate = sorted([*dealt[-1], j])
            table = _table(header, rows, [*range(lead), *candidate], justify)
            if Measurement.get(out, unbounded, table).maximum <= width:
                dealt[-1] = candidate
                continue
        dealt.append([j])
    return [_table(header, rows, [*range(lead), *b], justify) for b in dealt or [[]]]
