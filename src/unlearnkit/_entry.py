"""The ``unlearnkit`` command's entry point: ``--version`` is answered without importing torch
or any command (about 50 ms instead of seconds); everything else goes to
:func:`unlearnkit.cli.main`."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from unlearnkit import PROG_VERSION

        print(PROG_VERSION)
        return 0
    from unlearnkit.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
