"""Shell completion for the ``unlearnkit`` command: ``unlearnkit completion bash|zsh|tcsh``
prints a static script, generated from the command's own argparse parser by shtab.

A static script completes at once: nothing is imported when Tab is pressed. A dynamic completer
(argcomplete) runs the command itself on every Tab, and importing the CLI takes about 2.4 s
(torch), which is too slow to type with. The cost is that the script is regenerated after an
upgrade that adds a command, a method or a dataset (``docs/cli.md`` says how).

What completes: the commands and subcommands, every option, method names (``--method``,
``--methods``, ``unlearnkit methods NAME``), dataset names (``--data``), architectures
(``--model``), presets (``--preset``), the values of options with fixed choices, and files or
folders where an option takes one (its metavar ``FILE``, ``DIR``, ``*.yaml``, ``*.sqlite``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

#: The shells shtab writes scripts for.
SHELLS = ("bash", "zsh", "tcsh")

_PREFIX = "_unlearnkit_names"


def _words(kind: str) -> list[str]:
    """The names one kind of value can take, from the registries."""
    if kind == "method":
        from unlearnkit.methods.base import METHODS

        return ["all", *METHODS.names()]
    if kind == "dataset":
        from unlearnkit.data.registry import DATASETS

        return list(DATASETS.names())
    if kind == "arch":
        from unlearnkit.models.registry import MODELS

        return list(MODELS.names())
    if kind == "preset":
        from unlearnkit.bench.config import PRESETS

        return list(PRESETS)
    raise ValueError(kind)


def _kind(action: argparse.Action) -> str | None:
    """Which names an action's value is, if any."""
    opts = set(action.option_strings)
    if opts & {"--method", "--methods"} or (not opts and action.metavar == "METHOD"):
        return "method"
    if "--data" in opts:
        return "dataset"
    if "--model" in opts:
        return "arch"
    if "--preset" in opts:
        return "preset"
    return None


def _walk(parser: argparse.ArgumentParser) -> Iterable[argparse.Action]:
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                yield from _walk(sub)


def _preambles(kinds: Sequence[str]) -> dict[str, str]:
    bash = []
    for kind in kinds:
        words = " ".join(_words(kind))
        bash.append(f'{_PREFIX}_{kind}() {{\n  compgen -W "{words}" -- "$1"\n}}')
    return {"bash": "\n".join(bash)}


def annotate(parser: argparse.ArgumentParser) -> list[str]:
    """Mark each action of ``parser`` (and its subparsers) with what its value completes to
    (shtab reads ``action.complete``); returns the kinds of names used."""
    import shtab

    kinds: list[str] = []
    for action in _walk(parser):
        kind = _kind(action)
        if kind is not None:
            words = " ".join(_words(kind))
            action.complete = {"bash": f"{_PREFIX}_{kind}", "zsh": f"({words})",
                               "tcsh": f"({words})"}
            kinds.append(kind)
        elif action.metavar in ("FILE", "FILE|URL", "CONFIG.yaml", "RESULTS.sqlite"):
            action.complete = shtab.FILE
        elif action.metavar == "DIR":
            action.complete = shtab.DIRECTORY
    return list(dict.fromkeys(kinds))


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell`` (one of :data:`SHELLS`)."""
    import shtab

    kinds = annotate(parser)
    return shtab.complete(parser, shell=shell, preamble=_preambles(kinds))
