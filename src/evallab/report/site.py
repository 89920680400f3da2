"""Build the static report site from the results database.

The site is a folder of plain HTML pages with inline CSS and inline SVG charts: no scripts, no
web fonts, no CDN, so it opens from ``file://`` and can be published as-is (any static host).

Pages:
    ``index.html``                 leaderboard, campaigns, models, comparisons, invalid runs
    ``campaigns/<name>.html``      the campaign matrix with paired deltas vs the reference column
    ``models/<name>.html``         score history per task, invalid runs marked
    ``compare/<a>_<b>.html``       a paired comparison with its flipped documents
    ``runs/<run_id>.html``         provenance, scores, canary and telemetry summary
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import jinja2

from evallab import __version__
from evallab.analysis.matrix import CampaignMatrix, campaign_matrix
from evallab.analysis.paired import Comparison, compare_runs
from evallab.analysis.selectors import ensure_not_empty as _ensure_not_empty
from evallab.errors import ComparisonError, StorageError
from evallab.report import svg
from evallab.store.analysis import PROVENANCE_FIELDS, RunRef
from evallab.store.analysis import run_ref as _run_ref

__all__ = ["SiteSummary", "build_site", "primary_metric"]

#: Metrics preferred as a task's headline number, in order.
_PRIMARY = ("acc", "exact_match", "pass@1", "acc_norm", "f1", "bleu", "mc2", "mc1")


@dataclass(frozen=True)
class SiteSummary:
    """What ``build_site`` wrote."""

    out_dir: Path
    pages: int
    runs: int
    comparisons: int
    files: tuple[Path, ...] = field(default=())


def primary_metric(metrics: set[tuple[str, str]]) -> tuple[str, str]:
    """The (metric, filter) a task is ranked by.

    The first metric of a preference list (acc, exact_match, pass@1, ...), else the first
    alphabetically.
    """
    for name in _PRIMARY:
        found = sorted(f for m, f in metrics if m == name)
        if found:
            return name, found[0]
    return sorted(metrics)[0]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("evallab.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["f4"] = lambda v: "—" if v is None else f"{v:.4f}"
    env.filters["sgn4"] = lambda v: "—" if v is None else f"{v:+.4f}"
    env.filters["pval"] = lambda p: "—" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")
    env.filters["ts"] = lambda t: "—" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")
    env.filters["short"] = lambda u: str(u)[:8]
    return env


@dataclass
class _Run:
    ref: RunRef
    row: asyncpg.Record
    scores: list[asyncpg.Record] = field(default_factory=list)

    @property
    def href(self) -> str:
        return f"runs/{self.ref.run_id}.html"


@dataclass(frozen=True)
class _ComparisonPage:
    href: str
    title: str
    campaign: str
    benchmark: str
    comparison: Comparison | None
    refusal: str = ""


class _Writer:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.env = _env()
        self.files: list[Path] = []

    def page(self, rel: str, template: str, **ctx: Any) -> None:
        depth = rel.count("/")
        root = "../" * depth
        html = self.env.get_template(template).render(
            root=root,
            generated=datetime.now(UTC),
            version=__version__,
            **ctx,
        )
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        self.files.append(path)


async def _load_runs(conn: asyncpg.Connection) -> list[_Run]:
    cols = ", ".join(f"r.{c}" for c in PROVENANCE_FIELDS if c not in ("benchmark", "status"))
    rows = await conn.fetch(
        f"""
        SELECT r.run_id, r.campaign_id, c.name AS campaign, r.benchmark, r.quant, r.runtime,
               r.runtime_label, r.status, r.status_reason, r.started_at, r.raw_path,
               r.finished_at, r.duration_s, r.n_samples, r.samples_per_min, {cols}
        FROM runs r JOIN campaigns c USING (campaign_id)
        ORDER BY r.started_at, r.run_id
        """
    )
    runs = {r["run_id"]: _Run(_run_ref(r), r) for r in rows}
    for s in await conn.fetch(
        "SELECT run_id, task, metric, filter, value, stderr, n, higher_is_better FROM scores "
        "ORDER BY task, metric, filter"
    ):
        runs[s["run_id"]].scores.append(s)
    return list(runs.values())


async def _canary_summary(conn: asyncpg.Connection) -> dict[UUID, dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT run_id, count(*) AS prompts,
               count(*) FILTER (WHERE matches_baseline) AS matched,
               count(*) FILTER (WHERE matches_baseline = false) AS drifted,
               count(*) FILTER (WHERE is_baseline) AS baseline,
               max(canary_version) AS version
        FROM canaries WHERE run_id IS NOT NULL GROUP BY run_id
        """
    )
    return {r["run_id"]: dict(r) for r in rows}


async def _telemetry(conn: asyncpg.Connection) -> dict[UUID, dict[str, Any]]:
    summary = await conn.fetch(
        """
        SELECT run_id, count(*) AS samples, count(DISTINCT gpu_index) AS gpus,
               max(temperature_c) AS max_temp, avg(temperature_c) AS mean_temp,
               avg(power_w) AS mean_power, max(power_w) AS max_power,
               max(memory_used_mb) AS max_mem, avg(utilization_pct) AS mean_util,
               max(other_processes) AS other_processes,
               (SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}')
                FROM telemetry t2, unnest(t2.throttle_reasons) x
                WHERE t2.run_id = t.run_id) AS throttle
        FROM telemetry t GROUP BY run_id
        """
    )
    out: dict[UUID, dict[str, Any]] = {r["run_id"]: {**dict(r), "series": []} for r in summary}
    # At most ~400 points per run for the chart: evenly spaced rows by timestamp.
    series = await conn.fetch(
        """
        SELECT run_id, ts, temperature_c, power_w FROM (
            SELECT run_id, ts, temperature_c, power_w,
                   row_number() OVER (PARTITION BY run_id ORDER BY ts) AS i,
                   count(*) OVER (PARTITION BY run_id) AS n
            FROM telemetry WHERE gpu_index = 0
        ) s WHERE (i - 1) % greatest(1, n / 400) = 0 ORDER BY run_id, ts
        """
    )
    for r in series:
        out[r["run_id"]]["series"].append(r)
    return out


def _fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True) if value else "(empty)"
    text = str(value)
    return text if text else "(empty)"


def _leaderboard(runs: list[_Run]) -> dict[str, Any]:
    """Latest succeeded score per (model/quant/runtime, task) on each task's primary metric."""
    metrics: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r in runs:
        if r.ref.status == "succeeded":
            for s in r.scores:
                metrics[s["task"]].add((s["metric"], s["filter"]))
    primary = {task: primary_metric(ms) for task, ms in metrics.items()}
    latest: dict[tuple[str, str], tuple[_Run, asyncpg.Record]] = {}
    for r in runs:  # ordered by start time: later runs overwrite earlier ones
        if r.ref.status != "succeeded":
            continue
        for s in r.scores:
            if primary.get(s["task"]) == (s["metric"], s["filter"]):
                latest[(r.ref.combo, s["task"])] = (r, s)
    tasks = sorted(primary)
    lower_better = {t for (_, t), (_, sc) in latest.items() if sc["higher_is_better"] is False}
    combos = sorted({combo for combo, _ in latest})
    rows: list[dict[str, Any]] = []
    for combo in combos:
        cells = {t: latest.get((combo, t)) for t in tasks}
        # Only higher-is-better metrics are averaged: a perplexity would swamp accuracies and
        # reward the worse model.
        values = [
            c[1]["value"] for t, c in cells.items() if c is not None and t not in lower_better
        ]
        model = next(c[0].ref.model for c in cells.values() if c is not None)
        rows.append(
            {
                "combo": combo,
                "model": model,
                "cells": cells,
                "mean": sum(values) / len(values) if values else None,
                "n_tasks": len(values),
            }
        )
    rows.sort(key=lambda r: (-r["n_tasks"], -(r["mean"] or 0.0), r["combo"]))
    chart = svg.bar_chart(
        [
            svg.Bar(r["combo"], r["mean"], href=f"models/{_slug(r['model'])}.html")
            for r in rows
            if r["mean"] is not None
        ],
        title="mean of the higher-is-better primary metrics over the tasks each model ran",
    )
    return {
        "tasks": tasks,
        "primary": primary,
        "lower_better": lower_better,
        "rows": rows,
        "chart": chart,
        "n_mean_tasks": len(set(tasks) - lower_better),
    }


def _model_history(runs: list[_Run], model: str) -> list[dict[str, Any]]:
    """Per (task, metric, filter): one chart + table of every run's score over time."""
    mine = [r for r in runs if r.ref.model == model]
    keys = sorted({(s["task"], s["metric"], s["filter"]) for r in mine for s in r.scores})
    out = []
    for task, metric, filt in keys:
        series: dict[str, list[svg.Point]] = defaultdict(list)
        table = []
        for r in mine:
            for s in r.scores:
                if (s["task"], s["metric"], s["filter"]) != (task, metric, filt):
                    continue
                invalid = r.ref.status != "succeeded"
                tip = f"{r.ref.combo} {r.ref.short_id} {s['value']:.4f} [{r.ref.status}]"
                label = f"{r.ref.quant} / {r.ref.runtime_label}"
                series[label].append(
                    svg.Point(r.ref.started_at, s["value"], invalid, tip, f"../{r.href}")
                )
                table.append({"run": r, "score": s})
        title = f"{task} / {metric}" + (f" [{filt}]" if filt not in ("", "none") else "")
        out.append(
            {
                "title": title,
                "chart": svg.history_chart(dict(series), title=title),
                "rows": table,
            }
        )
    return out


async def _comparisons(
    conn: asyncpg.Connection, matrices: list[CampaignMatrix], resamples: int
) -> list[_ComparisonPage]:
    """Each campaign's columns vs its reference column, per benchmark."""
    pages: list[_ComparisonPage] = []
    seen: set[tuple[UUID, UUID]] = set()
    for m in matrices:
        pairs: dict[str, dict[str, UUID]] = defaultdict(dict)  # benchmark -> column -> run
        for row in m.rows:
            for label, cell in row.cells.items():
                if cell is not None and cell.status == "succeeded":
                    pairs[row.benchmark][label] = cell.run_id
        for bench, cols in sorted(pairs.items()):
            ref_id = cols.get(m.reference.label)
            if ref_id is None:
                continue
            for label, run_id in sorted(cols.items()):
                if run_id == ref_id or (ref_id, run_id) in seen:
                    continue
                seen.add((ref_id, run_id))
                href = f"compare/{ref_id}_{run_id}.html"
                title = f"{label} vs {m.reference.label} · {bench}"
                try:
                    cmp = await compare_runs(
                        conn, str(ref_id), str(run_id), resamples=resamples, allow_partial=True
                    )
                except ComparisonError as exc:
                    pages.append(_ComparisonPage(href, title, m.campaign, bench, None, exc.message))
                    continue
                pages.append(_ComparisonPage(href, title, m.campaign, bench, cmp))
    return pages


def _forest(cmp: Comparison) -> str:
    return svg.forest_chart(
        [
            svg.Interval(
                f"{r.task} / {r.metric}",
                r.result.diff,
                r.result.ci_low,
                r.result.ci_high,
                r.result.significant(1 - r.result.confidence),
            )
            for r in cmp.rows
        ],
        title=f"B - A with {round(cmp.confidence * 100)} % CI (paired)",
    )


async def build_site(
    conn: asyncpg.Connection, out_dir: Path, *, resamples: int = 10_000
) -> SiteSummary:
    """Render the whole site from the database into ``out_dir`` (replaced).

    Args:
        conn: Store connection (jsonb codecs registered or not).
        out_dir: Destination folder; its previous content is removed.
        resamples: Bootstrap resamples for the comparison pages.

    Raises:
        ComparisonError: the database holds no runs.
        StorageError: the folder can't be written.
    """
    await _ensure_not_empty(conn)
    runs = await _load_runs(conn)
    canaries = await _canary_summary(conn)
    telemetry = await _telemetry(conn)
    campaigns = [
        r["name"]
        for r in await conn.fetch(
            "SELECT name, max(started_at) AS last FROM campaigns GROUP BY name ORDER BY last DESC"
        )
    ]
    matrices: list[CampaignMatrix] = []
    for name in campaigns:
        try:
            matrices.append(await campaign_matrix(conn, name))
        except ComparisonError:
            continue  # a campaign without runs has no matrix; it is still listed on the index
    comparisons = await _comparisons(conn, matrices, resamples)

    out = out_dir.resolve()
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        w = _Writer(out)
        models = sorted({r.ref.model for r in runs})
        cmp_by_campaign: dict[str, list[_ComparisonPage]] = defaultdict(list)
        for c in comparisons:
            cmp_by_campaign[c.campaign].append(c)
        w.page(
            "index.html",
            "index.html",
            title="Leaderboard",
            board=_leaderboard(runs),
            campaigns=campaigns,
            matrices={m.campaign: m for m in matrices},
            models=models,
            comparisons=comparisons,
            problem_runs=[r for r in runs if r.ref.status in ("invalid", "failed")],
            n_runs=len(runs),
            slug=_slug,
        )
        for m in matrices:
            w.page(
                f"campaigns/{_slug(m.campaign)}.html",
                "campaign.html",
                title=f"Campaign {m.campaign}",
                m=m,
                comparisons=cmp_by_campaign.get(m.campaign, []),
                slug=_slug,
            )
        for model in models:
            w.page(
                f"models/{_slug(model)}.html",
                "model.html",
                title=f"Model {model}",
                model=model,
                history=_model_history(runs, model),
                runs=[r for r in runs if r.ref.model == model],
                slug=_slug,
            )
        for c in comparisons:
            w.page(
                c.href,
                "compare.html",
                title=c.title,
                page=c,
                cmp=c.comparison,
                forest=_forest(c.comparison) if c.comparison else "",
            )
        for r in runs:
            tel = telemetry.get(r.ref.run_id)
            charts = []
            if tel and tel["series"]:
                xs = [p["ts"] for p in tel["series"]]
                for key, unit, title in (
                    ("temperature_c", "°C", "GPU 0 temperature"),
                    ("power_w", "W", "GPU 0 power"),
                ):
                    pts = [
                        (x, p[key])
                        for x, p in zip(xs, tel["series"], strict=True)
                        if p[key] is not None
                    ]
                    if pts:
                        charts.append(
                            svg.line_chart(
                                [p[0] for p in pts], [p[1] for p in pts], title=title, unit=unit
                            )
                        )
            w.page(
                r.href,
                "run.html",
                title=f"Run {r.ref.short_id}",
                run=r,
                provenance=[(f, _fmt_value(r.row[f])) for f in PROVENANCE_FIELDS],
                canary=canaries.get(r.ref.run_id),
                telemetry=tel,
                telemetry_charts=charts,
                slug=_slug,
            )
    except OSError as exc:
        raise StorageError(
            f"cannot write the report site: {exc}",
            value=out,
            fix="pass a writable folder with --out",
        ) from exc
    return SiteSummary(out, len(w.files), len(runs), len(comparisons), tuple(w.files))
