"""Build evallab's Grafana dashboards and alert rules as code.

Run ``python grafana/build_dashboards.py`` after changing a panel; it rewrites
``grafana/dashboards/*.json`` and ``grafana/provisioning/alerting/evallab-alerts.yaml``
(both committed). Built with the official ``grafana-foundation-sdk`` (schema 41, pinned
``1769699379!11.6.0``). The SDK has no PostgreSQL query builder, so :class:`PostgresQuery`
emits the target JSON Grafana's PostgreSQL datasource expects.

Panels and alerts query only the views in ``src/evallab/store/sql/views/`` — that is the
contract with the schema.
Every query here is executed against a seeded database by ``tests/checks/test_grafana.py``.
"""

# Panel titles use the sigma and multiplication signs on purpose: users read them there.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import alerting, dashboard, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

HERE = Path(__file__).resolve().parent
DATASOURCE_UID = "evallab-pg"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DASHBOARD_UID = "evallab-overview"
ALERT_FOLDER = "evallab"


# --------------------------------------------------------------------------- postgres queries


class _PostgresTarget(cogvariants.Dataquery):
    """A PostgreSQL datasource target in code mode."""

    def __init__(self, ref_id: str, sql: str, fmt: str) -> None:
        self.ref_id = ref_id
        self.sql = sql
        self.fmt = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "rawQuery": True,
            "editorMode": "code",
            "format": self.fmt,
            "rawSql": self.sql.strip(),
        }


class PostgresQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for a raw-SQL PostgreSQL target (``format`` is ``time_series`` or ``table``)."""

    def __init__(self, sql: str, ref_id: str = "A", fmt: str = "table") -> None:
        self._target = _PostgresTarget(ref_id, sql, fmt)

    def build(self) -> cogvariants.Dataquery:
        return self._target


def _ds() -> dashboard_models.DataSourceRef:
    return dashboard_models.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


# ------------------------------------------------------------------------------------ SQL

SCORE_HISTORY_SQL = """
SELECT time,
       model_name || ' · ' || task || ' ' || metric || ',' || filter AS series,
       value,
       band_low,
       band_high
  FROM v_score_history
 WHERE $__timeFilter(time)
   AND model_name IN ($model)
   AND task IN ($task)
   AND metric = '$metric'
 ORDER BY time
"""

LEADERBOARD_SQL = """
SELECT model_name, quant, runtime_label AS runtime, benchmark, task, metric, filter,
       value, stderr, n, time AS run_started, model_revision
  FROM v_latest_scores
 WHERE task IN ($task)
   AND metric = '$metric'
 ORDER BY task, value DESC, model_name
"""

REGRESSIONS_SQL = """
SELECT time, model_name, quant, runtime_label AS runtime, benchmark, task, metric, filter,
       value, history_mean, history_sd, history_n, z
  FROM v_regressions
 WHERE $__timeFilter(time)
 ORDER BY time DESC, z
 LIMIT 500
"""

THROUGHPUT_SQL = """
SELECT time,
       model_name || ' · ' || runtime_label || ' · ' || benchmark AS series,
       samples_per_min
  FROM v_run_throughput
 WHERE $__timeFilter(time)
   AND model_name IN ($model)
 ORDER BY time
"""

# Minute rollups below an hour's interval, hourly rollups above: the constant predicates on
# $__interval_ms let PostgreSQL prune the other branch at plan time.
GPU_TEMPERATURE_SQL = """
SELECT date_bin('$__interval'::interval, time, TIMESTAMPTZ '2000-01-01') AS time,
       'GPU ' || gpu_index AS series,
       max(temperature_c) AS temperature_c
  FROM (SELECT time, gpu_index, temperature_c
          FROM v_gpu_telemetry_1m
         WHERE $__interval_ms < 3600000 AND $__timeFilter(time)
        UNION ALL
        SELECT time, gpu_index, temperature_c
          FROM v_gpu_telemetry_1h
         WHERE $__interval_ms >= 3600000 AND $__timeFilter(time)) AS rollup
 GROUP BY 1, 2
 ORDER BY 1
"""

FLAGGED_RUNS_SQL = """
SELECT time, model_name, quant, runtime_label AS runtime, benchmark, status, flag, detail
  FROM v_flagged_runs
 WHERE $__timeFilter(time)
 ORDER BY time DESC
 LIMIT 500
"""

REPRO_SQL = """
SELECT time, model_name, quant, runtime_label AS runtime, benchmark, task, metric, filter,
       value, reference_value, rel_diff, tolerance, reference_time
  FROM v_repro_violations
 WHERE $__timeFilter(time)
 ORDER BY time DESC
 LIMIT 500
"""

INVALID_COUNT_SQL = """
SELECT count(*) AS invalid_runs
  FROM v_invalid_runs
 WHERE time BETWEEN $__timeFrom() AND $__timeTo()
"""

REGRESSION_COUNT_SQL = """
SELECT count(*) AS regressions
  FROM v_regressions
 WHERE $__timeFilter(time)
"""

BACKUP_AGE_SQL = """
SELECT hours_since_good_backup, last_backup_at
  FROM v_backup_age
"""

BACKUPS_SQL = """
SELECT time, path, size_bytes, total_rows, server_version, pg_dump_version, duration_s, sha256
  FROM v_backups
 WHERE $__timeFilter(time)
 ORDER BY time DESC
 LIMIT 100
"""

MODEL_VAR_SQL = "SELECT DISTINCT model_name FROM v_latest_scores ORDER BY 1"
TASK_VAR_SQL = "SELECT DISTINCT task FROM v_latest_scores WHERE model_name IN ($model) ORDER BY 1"
METRIC_VAR_SQL = "SELECT DISTINCT metric FROM v_latest_scores WHERE task IN ($task) ORDER BY 1"

ALERT_REGRESSION_SQL = """
SELECT model_name, count(*) AS regressions
  FROM v_regressions
 WHERE $__timeFilter(time)
 GROUP BY model_name
"""

# One row (hours since the last good backup, or since the first run if there never was one);
# none on a lab without runs, which has nothing to protect yet.
ALERT_BACKUP_SQL = """
SELECT hours_since_good_backup
  FROM v_backup_age
"""

ALERT_INVALID_SQL = """
SELECT model_name, count(*) AS invalid_runs
  FROM v_invalid_runs
 WHERE $__timeFilter(time)
 GROUP BY model_name
"""


# ---------------------------------------------------------------------------------- panels


def _variable(name: str, label: str, sql: str, *, multi: bool) -> dashboard.QueryVariable:
    var = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(_ds())
        .query(sql)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
    )
    if multi:
        var = var.include_all(True)
    return var


def _grid(x: int, y: int, w: int, h: int) -> dashboard_models.GridPos:
    return dashboard_models.GridPos(h=h, w=w, x=x, y=y)


def build_dashboard() -> dashboard_models.Dashboard:
    """The lab overview dashboard."""
    history = (
        timeseries.Panel()
        .title("Score history (±2σ band of earlier valid runs)")
        .description(
            "Valid runs only. band_low/band_high are the mean ∓ σ·sd of the series' earlier "
            "valid runs; a point below band_low is a regression."
        )
        .datasource(_ds())
        .with_target(PostgresQuery(SCORE_HISTORY_SQL, fmt="time_series"))
        .grid_pos(_grid(0, 0, 24, 10))
        .show_points(common_visibility_always())
        .point_size(5)
        .override_by_regexp(
            ".*band_.*",
            [
                dashboard_models.DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
                dashboard_models.DynamicConfigValue(id_val="custom.showPoints", value="never"),
            ],
        )
    )
    leaderboard = (
        table.Panel()
        .title("Latest leaderboard")
        .description("Latest valid run of every model × quant × runtime × benchmark.")
        .datasource(_ds())
        .with_target(PostgresQuery(LEADERBOARD_SQL))
        .grid_pos(_grid(0, 10, 16, 10))
    )
    regressions_stat = (
        stat.Panel()
        .title("Regressions in range")
        .datasource(_ds())
        .with_target(PostgresQuery(REGRESSION_COUNT_SQL))
        .grid_pos(_grid(16, 10, 8, 5))
    )
    invalid_stat = (
        stat.Panel()
        .title("Invalid runs in range")
        .datasource(_ds())
        .with_target(PostgresQuery(INVALID_COUNT_SQL))
        .grid_pos(_grid(16, 15, 8, 5))
    )
    regressions = (
        table.Panel()
        .title("Regressions (> 2σ below history)")
        .datasource(_ds())
        .with_target(PostgresQuery(REGRESSIONS_SQL))
        .grid_pos(_grid(0, 20, 24, 8))
    )
    throughput = (
        timeseries.Panel()
        .title("Eval throughput (samples/min)")
        .datasource(_ds())
        .unit("short")
        .with_target(PostgresQuery(THROUGHPUT_SQL, fmt="time_series"))
        .grid_pos(_grid(0, 28, 12, 9))
    )
    temperature = (
        timeseries.Panel()
        .title("GPU temperature (max per interval)")
        .datasource(_ds())
        .unit("celsius")
        .with_target(PostgresQuery(GPU_TEMPERATURE_SQL, fmt="time_series"))
        .grid_pos(_grid(12, 28, 12, 9))
    )
    flagged = (
        table.Panel()
        .title("Invalid, non-reproducible and unpinned runs")
        .datasource(_ds())
        .with_target(PostgresQuery(FLAGGED_RUNS_SQL))
        .grid_pos(_grid(0, 37, 24, 8))
    )
    repro = (
        table.Panel()
        .title("Reproducibility-window violations (both values)")
        .datasource(_ds())
        .with_target(PostgresQuery(REPRO_SQL))
        .grid_pos(_grid(0, 45, 24, 8))
    )
    backup_age = (
        stat.Panel()
        .title("Hours since the last good backup")
        .description(
            "From v_backup_age: hours since `evallab backup` last wrote and recorded an archive "
            "(since the first run when there never was one). Alerts above 24 h."
        )
        .datasource(_ds())
        .unit("h")
        .decimals(1)
        .with_target(PostgresQuery(BACKUP_AGE_SQL))
        .grid_pos(_grid(0, 53, 6, 8))
    )
    backups = (
        table.Panel()
        .title("Backups")
        .description("Good backups (archive + manifest written, sha256 recorded), newest first.")
        .datasource(_ds())
        .with_target(PostgresQuery(BACKUPS_SQL))
        .grid_pos(_grid(6, 53, 18, 8))
    )
    board = (
        dashboard.Dashboard("evallab — scores, regressions, runs")
        .uid(DASHBOARD_UID)
        .tags(["evallab"])
        .editable()
        .time("now-90d", "now")
        .refresh("5m")
        .timezone("browser")
        .with_variable(_variable("model", "Model", MODEL_VAR_SQL, multi=True))
        .with_variable(_variable("task", "Task", TASK_VAR_SQL, multi=True))
        .with_variable(_variable("metric", "Metric", METRIC_VAR_SQL, multi=False))
    )
    for panel in (
        history,
        leaderboard,
        regressions_stat,
        invalid_stat,
        regressions,
        throughput,
        temperature,
        flagged,
        repro,
        backup_age,
        backups,
    ):
        board = board.with_panel(panel)
    return board.build()


def common_visibility_always() -> Any:
    from grafana_foundation_sdk.models import common

    return common.VisibilityMode.ALWAYS


# ---------------------------------------------------------------------------------- alerts


def _alert_rule(uid: str, title: str, sql: str, summary: str, above: float = 0) -> alerting.Rule:
    day = alerting_models.RelativeTimeRange(from_val=86400, to=0)
    source = (
        alerting.Query("A")
        .datasource_uid(DATASOURCE_UID)
        .relative_time_range(day)
        .model(PostgresQuery(sql, ref_id="A", fmt="table"))
    )
    reduce = (
        alerting.Query("B")
        .datasource_uid("__expr__")
        .model(
            _Expr(
                {
                    "refId": "B",
                    "type": "reduce",
                    "expression": "A",
                    "reducer": "last",
                    "settings": {"mode": "dropNN"},
                }
            )
        )
    )
    threshold = (
        alerting.Query("C")
        .datasource_uid("__expr__")
        .model(
            _Expr(
                {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": "gt", "params": [above]}}],
                }
            )
        )
    )
    return (
        alerting.Rule(title)
        .uid(uid)
        .condition("C")
        .queries([source, reduce, threshold])
        .no_data_state("OK")
        .exec_err_state("Error")
        .for_val("0s")
        .annotations({"summary": summary, "dashboardUid": DASHBOARD_UID})
        .labels({"team": "evallab", "severity": "warning"})
    )


class _ExprModel(cogvariants.Dataquery):
    def __init__(self, data: dict[str, object]) -> None:
        self.data = data

    def to_json(self) -> dict[str, object]:
        return dict(self.data)


class _Expr(cogbuilder.Builder[cogvariants.Dataquery]):
    """A server-side expression model (reduce/threshold) for an alert rule."""

    def __init__(self, data: dict[str, object]) -> None:
        self._model = _ExprModel(data)

    def build(self) -> cogvariants.Dataquery:
        return self._model


def build_alert_rules() -> dict[str, Any]:
    """Alert-rule provisioning file content (Grafana's file provisioning format)."""
    rules = [
        _alert_rule(
            "evallab-regression",
            "evallab: score regression (> 2σ below history)",
            ALERT_REGRESSION_SQL,
            "{{ $labels.model_name }} has {{ $values.B }} score(s) more than 2σ below the "
            "mean of its earlier valid runs in the last 24 h (see v_regressions).",
        ),
        _alert_rule(
            "evallab-invalid-runs",
            "evallab: invalid runs",
            ALERT_INVALID_SQL,
            "{{ $labels.model_name }} has {{ $values.B }} run(s) marked invalid in the last 24 h "
            "(thermal throttling, over-temperature or another process on the GPU).",
        ),
        _alert_rule(
            "evallab-backup-stale",
            "evallab: last good backup older than a day",
            ALERT_BACKUP_SQL,
            "The last good backup of the results database is {{ $values.B }} hours old (see "
            "v_backup_age): check the nightly backup deployment and `evallab backup`.",
            above=24,
        ),
    ]
    encoded = [json.loads(json.dumps(r.build(), cls=JSONEncoder)) for r in rules]
    # The file provisioning format takes the group's folder/name from the group entry; drop the
    # API-only keys the SDK fills in for the ruler API.
    for rule in encoded:
        for key in ("folderUID", "ruleGroup", "orgID", "id", "updated", "provenance"):
            rule.pop(key, None)
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "evallab",
                "folder": ALERT_FOLDER,
                "interval": "5m",
                "rules": encoded,
            }
        ],
    }


def write_all(out: Path = HERE) -> list[Path]:
    """Write the dashboards and the alert rules; returns the files written."""
    dash_dir = out / "dashboards"
    alert_dir = out / "provisioning" / "alerting"
    dash_dir.mkdir(parents=True, exist_ok=True)
    alert_dir.mkdir(parents=True, exist_ok=True)
    board = dash_dir / f"{DASHBOARD_UID}.json"
    board.write_text(
        json.dumps(build_dashboard(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    )
    alerts = alert_dir / "evallab-alerts.yaml"
    header = "# Generated by grafana/build_dashboards.py — edit that file, not this one.\n"
    alerts.write_text(header + yaml.safe_dump(build_alert_rules(), sort_keys=False, width=100))
    return [board, alerts]


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
