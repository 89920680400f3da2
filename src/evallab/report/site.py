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
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from evallab import __version__
from evallab.analysis.matrix import CampaignMatrix
from evallab.analysis.paired import Comparison
from evallab.errors import StorageError
from evallab.locks import file_lock
from evallab.report import svg
from evallab.report.data import (
    ComparisonPage,
    RunView,
    comparison_pages,
    ensure_runs,
    load_matrices,
    load_runs,
    slug,
)
from evallab.report.leaderboard import leaderboard, model_history
from evallab.store import Store
from evallab.store.analysis import PROVENANCE_FIELDS
from evallab.store.reports import TelemetrySummary

__all__ = ["SiteSummary", "build_site"]


@dataclass(frozen=True)
class SiteSummary:
    """What ``build_site`` wrote."""

    out_dir: Path
    pages: int
    runs: int
    comparisons: int
    files: tuple[Path, ...] = field(default=())


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


def _fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True) if value else "(empty)"
    text = str(value)
    return text if text else "(empty)"


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


def _telemetry_charts(tel: TelemetrySummary | None) -> list[str]:
    charts: list[str] = []
    if tel and tel.series:
        xs = [p.ts for p in tel.series]
        for key, unit, title in (
            ("temperature_c", "°C", f"GPU {tel.series_gpu} temperature"),
            ("power_w", "W", f"GPU {tel.series_gpu} power"),
        ):
            pts = [
                (x, getattr(p, key))
                for x, p in zip(xs, tel.series, strict=True)
                if getattr(p, key) is not None
            ]
            if pts:
                charts.append(
                    svg.line_chart([p[0] for p in pts], [p[1] for p in pts], title=title, unit=unit)
                )
    return charts


def build_site(store: Store, out_dir: Path, *, resamples: int = 10_000) -> SiteSummary:
    """Render the whole site from the database into ``out_dir`` (replaced).

    Args:
        store: The results database.
        out_dir: Destination folder; its previous content is removed.
        resamples: Bootstrap resamples for the comparison pages.

    Raises:
        ComparisonError: the database holds no runs.
        StorageError: the folder can't be written.
    """
    ensure_runs(store)
    runs = load_runs(store)
    canaries = store.canary_summaries()
    telemetry = store.telemetry_summaries()
    campaigns = store.campaign_names_by_recency()
    matrices = load_matrices(store, campaigns)
    comparisons = comparison_pages(store, matrices, resamples)

    out = out_dir.resolve()
    staging: Path | None = None
    try:
        # Rendered beside the destination, then swapped in: a reader (or another campaign
        # publishing at the same moment) never sees a half-written or half-deleted site.
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        w = _Writer(staging)
        _write_pages(w, runs, campaigns, matrices, comparisons)
        for r in runs:
            tel = telemetry.get(r.ref.run_id)
            w.page(
                r.href,
                "run.html",
                title=f"Run {r.ref.short_id}",
                run=r,
                provenance=[(f, _fmt_value(r.row[f])) for f in PROVENANCE_FIELDS],
                canary=canaries.get(r.ref.run_id),
                telemetry=tel,
                telemetry_charts=_telemetry_charts(tel),
                slug=slug,
            )
        _swap_in(staging, out)
        staging = None
    except OSError as exc:
        raise StorageError(
            f"cannot write the report site: {exc}",
            value=out,
            fix="pass a writable folder with --out",
        ) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    files = tuple(out / f.relative_to(w.out) for f in w.files)
    return SiteSummary(out, len(files), len(runs), len(comparisons), files)


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` (two renames, under a lock shared by every publisher)."""
    with file_lock(out.parent / f".{out.name}.lock"):
        old = out.parent / f"{staging.name}.old"
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)


def _write_pages(
    w: _Writer,
    runs: list[RunView],
    campaigns: list[str],
    matrices: list[CampaignMatrix],
    comparisons: list[ComparisonPage],
) -> None:
    """The index, campaign, model and comparison pages."""
    models = sorted({r.ref.model for r in runs})
    cmp_by_campaign: dict[str, list[ComparisonPage]] = defaultdict(list)
    for c in comparisons:
        cmp_by_campaign[c.campaign].append(c)
    w.page(
        "index.html",
        "index.html",
        title="Leaderboard",
        board=leaderboard(runs),
        campaigns=campaigns,
        matrices={m.campaign: m for m in matrices},
        models=models,
        comparisons=comparisons,
        problem_runs=[r for r in runs if r.ref.status in ("invalid", "failed")],
        n_runs=len(runs),
        slug=slug,
    )
    for m in matrices:
        w.page(
            f"campaigns/{slug(m.campaign)}.html",
            "campaign.html",
            title=f"Campaign {m.campaign}",
            m=m,
            comparisons=cmp_by_campaign.get(m.campaign, []),
            slug=slug,
        )
    for model in models:
        w.page(
            f"models/{slug(model)}.html",
            "model.html",
            title=f"Model {model}",
            model=model,
            history=model_history(runs, model),
            runs=[r for r in runs if r.ref.model == model],
            slug=slug,
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
