"""evallab: a local evaluation lab for language models."""

__version__ = "0.1.0"
