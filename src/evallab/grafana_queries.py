"""Every SQL query the Grafana provisioning runs, and Grafana's macro expansion.

Grafana's server isn't part of the lab, so its dashboards are checked by running their queries
directly: :func:`load_queries` collects every panel target, template-variable query and alert
rule query from ``grafana/``; :func:`expand_macros` expands the PostgreSQL datasource's macros
(``$__timeFilter``, ``$__timeFrom()``, ``$__timeTo()``, ``$__interval``, ``$__interval_ms``) and
template variables the way Grafana does, so the result runs in ``psql`` as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from evallab.errors import LabError

__all__ = ["GrafanaQuery", "expand_macros", "load_queries"]


@dataclass(frozen=True)
class GrafanaQuery:
    """One SQL query found in the Grafana files."""

    source: str
    """Where it comes from: ``panel <title>``, ``variable <name>`` or ``alert <uid>``."""
    sql: str
    fmt: str = "table"


def _panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def load_queries(grafana_dir: Path | None = None) -> list[GrafanaQuery]:
    """Every SQL query in ``grafana/dashboards/*.json`` and ``grafana/provisioning/alerting``.

    Args:
        grafana_dir: The provisioning folder; default: ``grafana/`` in the working directory (the
            dashboards belong to the checkout, not the installed package).

    Raises:
        LabError: the folder doesn't exist.
    """
    root = grafana_dir or Path.cwd() / "grafana"
    if not root.is_dir():
        raise LabError(
            "Grafana provisioning folder not found",
            value=root,
            fix="run from the lab's checkout (it holds grafana/) or pass its path",
        )
    found: list[GrafanaQuery] = []
    for board_path in sorted((root / "dashboards").glob("*.json")):
        board = json.loads(board_path.read_text())
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var.get("query")
                sql = query.get("rawSql", "") if isinstance(query, dict) else str(query)
                found.append(GrafanaQuery(f"{board_path.stem} variable {var['name']}", sql))
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                if "rawSql" in target:
                    found.append(
                        GrafanaQuery(
                            f"{board_path.stem} panel {panel.get('title')!r} {target['refId']}",
                            target["rawSql"],
                            target.get("format", "table"),
                        )
                    )
    for rules_path in sorted((root / "provisioning" / "alerting").glob("*.y*ml")):
        data = yaml.safe_load(rules_path.read_text()) or {}
        for group in data.get("groups", []):
            for rule in group.get("rules", []):
                for query in rule.get("data", []):
                    model = query.get("model", {})
                    if "rawSql" in model:
                        found.append(
                            GrafanaQuery(
                                f"alert {rule['uid']} {query['refId']}",
                                model["rawSql"],
                                model.get("format", "table"),
                            )
                        )
    return found


def _ts(value: datetime) -> str:
    return "'" + value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand_macros(
    sql: str,
    *,
    time_from: datetime,
    time_to: datetime,
    interval: str = "1h",
    interval_ms: int | None = None,
    variables: Mapping[str, str | Sequence[str]] | None = None,
) -> str:
    """Expand Grafana's PostgreSQL macros and template variables.

    Multi-value variables (given as a sequence) become a quoted, comma-separated list, as
    Grafana renders them for SQL datasources; single values are inserted as they are.
    """
    out = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1).strip()} BETWEEN {_ts(time_from)} AND {_ts(time_to)}",
        sql,
    )
    out = out.replace("$__timeFrom()", _ts(time_from)).replace("$__timeTo()", _ts(time_to))
    if interval_ms is None:
        interval_ms = _interval_ms(interval)
    out = out.replace("$__interval_ms", str(interval_ms)).replace("$__interval", interval)
    for name, value in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        text = value if isinstance(value, str) else ",".join(_quote(v) for v in value)
        pattern = r"\$\{" + re.escape(name) + r"\}|\$" + re.escape(name) + r"\b"
        out = re.sub(pattern, _literal(text), out)
    leftover = re.findall(r"\$(?:__)?\w+", out)
    leftover = [v for v in leftover if not re.fullmatch(r"\$\d+", v)]
    if leftover:
        raise ValueError(f"unexpanded Grafana macros/variables: {sorted(set(leftover))}")
    return out


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    # A function replacement keeps backslashes in values from being read as group references.
    def repl(_m: re.Match[str]) -> str:
        return text

    return repl


_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _interval_ms(interval: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", interval)
    if not m:
        raise ValueError(f"interval {interval!r} must look like 30s, 5m, 1h, 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]
