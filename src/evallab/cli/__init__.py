"""The ``evallab`` command line: one module per command group, registered in :mod:`.app`.

``main`` is the console-script entry point (``evallab = "evallab.cli:main"``).
"""

from evallab.cli.app import app, main

__all__ = ["app", "main"]
