"""The ``evallab`` command line."""

from evallab.cli.run import app, main

__all__ = ["app", "main"]
