"""Run the ``unlearnkit`` command in-process, as the CLI tests do (a helper, not a test)."""

from __future__ import annotations

import contextlib
import io
import os

from unlearnkit.cli import main


def run(*argv: str | os.PathLike) -> tuple[int, str, str]:
    """``unlearnkit ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(err: str, *fragments: str) -> None:
    """stderr holds exactly one line, the ``unlearnkit: error:`` line, with ``fragments``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("unlearnkit: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], err
