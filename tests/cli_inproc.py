"""Running the CLI in this process, through the app's own error handling (``run_cli``)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from evallab.cli.app import run_cli


def cli(args: Sequence[str]) -> tuple[int, str]:
    """``evallab ARGS`` as the console script runs it: (exit code, stdout + stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_cli(list(args))
    return rc, out.getvalue() + err.getvalue()


def one_paragraph_error(text: str) -> str:
    """The ``error:`` paragraph of a command's output (asserting there is exactly one)."""
    assert "Traceback" not in text, text
    paragraphs = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(paragraphs) == 1, text
    return paragraphs[0]
