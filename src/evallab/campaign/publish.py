"""Publishing after a campaign: the static leaderboard, rebuilt into a configured folder."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from evallab.paths import lab_home
from evallab.store import Store

__all__ = ["publish_report", "report_dir"]


def report_dir() -> Path:
    """Where the leaderboard is published.

    ``EVALLAB_REPORT_DIR``, else ``[report] dir`` in ``<lab home>/config.toml``, else
    ``<lab home>/site``.
    """
    env = os.environ.get("EVALLAB_REPORT_DIR")
    if env:
        return Path(env)
    config = lab_home() / "config.toml"
    if config.is_file():
        try:
            value = tomllib.loads(config.read_text()).get("report", {}).get("dir")
        except tomllib.TOMLDecodeError:
            value = None
        if value:
            return Path(value)
    return lab_home() / "site"


def publish_report(dsn: str, out_dir: Path) -> Path:
    """Rebuild the static leaderboard into ``out_dir``; return its ``index.html``."""
    from evallab.report import build_site

    with Store(dsn) as store:
        summary = build_site(store, out_dir)
    return summary.out_dir / "index.html"
