"""The code that runs inside the sandbox before the candidate, and reading what it reports."""

from __future__ import annotations

import ast

from evallab.sandbox.config import Status

__all__ = ["PRELUDE", "parse_report"]

# Runs inside the sandbox as ``python3 -I -S -c PRELUDE FD``. It reads a marshal payload (nonce,
# limits, program, tests) from stdin, applies the rlimits, runs the program then the tests in a
# fresh module, and reports on fd FD. It imports only builtin modules: json alone would add
# ~20 ms (it pulls in re) to every sample.
PRELUDE = r"""
import marshal, os, resource, sys
def _lab_run(fd):
    p = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    for name, value in p["limits"]:
        resource.setrlimit(getattr(resource, name), (value, value))
    nonce = p.pop("nonce").encode()
    mod = type(sys)("__candidate__")
    sys.modules["__candidate__"] = mod
    phase = "program"
    sources = {"<program>": p["program"], "<tests>": p["tests"]}
    try:
        code = compile(p["program"], "<program>", "exec")
        tests = compile(p["tests"], "<tests>", "exec")
        del p
        exec(code, mod.__dict__)
        phase = "tests"
        exec(tests, mod.__dict__)
    except BaseException as exc:
        where, line = None, None
        tb = exc.__traceback__
        while tb is not None:
            fname = tb.tb_frame.f_code.co_filename
            if fname in sources:
                lines = sources[fname].splitlines()
                n = tb.tb_lineno
                where, line = fname, (lines[n - 1].strip() if 0 < n <= len(lines) else None)
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and exc.filename in sources:
            where, line = exc.filename, (exc.text or "").strip() or None
        try:
            msg = str(exc)
        except BaseException:
            msg = ""
        name = type(exc).__qualname__
        text = name + ": " + msg if msg else name
        status = "failed" if phase == "tests" else "error"
        os.write(fd, repr((status, where, line, text[-2000:])).encode())
        os._exit(1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os.write(fd, nonce + b" passed")
        os._exit(0)
_lab_run(int(sys.argv[1]))
"""


def parse_report(raw: bytes) -> tuple[Status, str | None, str | None] | None:
    """The prelude's failure report: ``repr((status, where, line, error))``.

    The bytes come from untrusted code, so they are parsed as a literal only (never unmarshalled)
    and anything that isn't the expected 4-tuple of strings is ignored.
    """
    if not raw:
        return None
    try:
        value = ast.literal_eval(raw.decode("utf-8", "replace"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not (isinstance(value, tuple) and len(value) == 4):
        return None
    status, _where, line, error = value
    if status not in ("failed", "error"):
        return None
    return (
        "failed" if status == "failed" else "error",
        line if isinstance(line, str) and line else None,
        error if isinstance(error, str) and error else None,
    )
