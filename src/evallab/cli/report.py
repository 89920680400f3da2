"""Commands that read results: ``compare``, ``diff``, ``matrix`` and ``report build``.

Registered in :mod:`evallab.cli.app`: the commands at top level, ``report`` as a group. The
statistics (scipy) are imported by the commands that use them, not when the CLI starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from evallab.cli.console import console, styled

if TYPE_CHECKING:
    from evallab.analysis.matrix import CampaignMatrix
    from evallab.analysis.paired import Comparison
    from evallab.analysis.provenance import FieldDiff
    from evallab.store.analysis import RunRef

__all__ = ["app", "report_app"]

app = typer.Typer(help="Compare runs and build the report site.", no_args_is_help=True)
report_app = typer.Typer(help="The static leaderboard site.", no_args_is_help=True)


def _pct(x: float) -> str:
    return f"{x:+.4f}"


def _p(p: float) -> str:
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _clip(text: str | None, n: int = 160) -> str:
    if text is None:
        return "—"
    one = text.replace("\n", "⏎")
    return one if len(one) <= n else one[: n - 1] + "…"


def _print_comparison(cmp: Comparison, show_flips: int) -> None:
    console.print(styled("[bold]A[/] {}  [dim]{}[/]", cmp.a.label, cmp.a.campaign))
    console.print(styled("[bold]B[/] {}  [dim]{}[/]", cmp.b.label, cmp.b.campaign))
    level = round(cmp.confidence * 100)
    table = Table(title=f"B - A, paired over the same documents ({level} % CI)")
    for col, just in (
        ("task", "left"),
        ("metric", "left"),
        ("n", "right"),
        ("A", "right"),
        ("B", "right"),
        ("Δ (B-A)", "right"),
        (f"{level} % CI", "right"),
        ("p", "right"),
        ("test", "left"),
        ("flips +/-", "right"),
        ("verdict", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in cmp.rows:
        r = row.result
        style = {"B better": "green", "A better": "red"}.get(row.verdict, "")
        metric = row.metric + (f" [{row.filter}]" if row.filter not in ("", "none") else "")
        flips = f"+{r.b_only}/-{r.a_only}" if r.test == "mcnemar-exact" else "—"
        table.add_row(
            row.task,
            metric,
            str(r.n),
            f"{r.mean_a:.4f}",
            f"{r.mean_b:.4f}",
            _pct(r.diff),
            f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
            _p(r.p_value),
            r.test,
            flips,
            styled(f"[{style}]{{}}[/]", row.verdict) if style else row.verdict,
        )
    console.print(table)
    for ref in cmp.refused:
        console.print(styled("[yellow]refused[/] {}/{}: {}", ref.task, ref.metric, ref.reason))
    if cmp.only_a or cmp.only_b:
        console.print(
            styled(
                "[dim]not shared — only in A: {}; only in B: {}[/]",
                ", ".join(cmp.only_a) or "none",
                ", ".join(cmp.only_b) or "none",
            )
        )
    for note in cmp.notes:
        console.print(styled("[yellow]note[/] {}", note))
    if show_flips <= 0:
        return
    seen: set[tuple[str, int]] = set()
    for row in cmp.rows:
        if not row.flips:
            continue
        console.print(
            styled(
                "\n[bold]{} / {}[/]: {} documents flipped (showing {})",
                row.task,
                row.metric,
                row.n_flipped,
                min(show_flips, len(row.flips)),
            )
        )
        for f in row.flips[:show_flips]:
            if (f.task, f.doc_id) in seen:
                continue
            seen.add((f.task, f.doc_id))
            mark = "[green]gained[/]" if f.direction == "gained" else "[red]lost[/]"
            console.print(styled("  doc {} " + mark + "  prompt: {}", f.doc_id, _clip(f.prompt)))
            console.print(f"    target: {_clip(f.target, 80)}")
            console.print(f"    A: {_clip(f.output_a, 80)}   B: {_clip(f.output_b, 80)}")


@app.command("compare")
def compare_cmd(
    run_a: Annotated[
        str, typer.Argument(help="Baseline: a run id prefix or model=..,benchmark=..")
    ],
    run_b: Annotated[str, typer.Argument(help="Candidate: a run id prefix or a selector.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.", min=100)] = 10_000,
    confidence: Annotated[float, typer.Option(help="CI level.", min=0.5, max=0.999)] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    flips: Annotated[
        int, typer.Option("--flips", help="Flipped documents shown per metric (JSON: returned).")
    ] = 5,
    allow_partial: Annotated[
        bool,
        typer.Option(help="Compare the tasks whose documents match; list the others as refused."),
    ] = False,
) -> None:
    """Is B better than A, and by how much? Paired over the same documents.

    Selectors: a run id prefix, or key=value pairs (model, benchmark, campaign, runtime, quant)
    naming one configuration; its latest succeeded run is used.
    """
    from evallab.analysis.paired import compare_runs
    from evallab.store import Store

    with Store.open() as store:
        cmp = compare_runs(
            store,
            run_a,
            run_b,
            resamples=resamples,
            confidence=confidence,
            seed=seed,
            max_flips=max(flips, 50) if as_json else flips,
            allow_partial=allow_partial,
        )
    if as_json:
        typer.echo(json.dumps(cmp.to_json(), indent=2, default=str))
    else:
        _print_comparison(cmp, flips)


def _print_diff(a: RunRef, b: RunRef, diffs: list[FieldDiff], same: int) -> None:
    console.print(styled("[bold]A[/] {}\n[bold]B[/] {}", a.label, b.label))
    if not diffs:
        console.print(styled("[green]identical provenance[/] ({} fields)", same))
        return
    table = Table(title=f"provenance that differs ({len(diffs)}; {same} fields identical)")
    table.add_column("field")
    table.add_column("A", overflow="fold")
    table.add_column("B", overflow="fold")
    for d in diffs:
        table.add_row(d.field, d.a, d.b)
    console.print(table)


@app.command("diff")
def diff_cmd(
    run_a: Annotated[str, typer.Argument(help="A run id prefix or a selector.")],
    run_b: Annotated[str, typer.Argument(help="A run id prefix or a selector.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What differs in two runs' provenance (model, quant, runtime, harness, data, config...)."""
    from evallab.analysis.provenance import diff_runs
    from evallab.store import Store

    with Store.open() as store:
        a, b, diffs, same = diff_runs(store, run_a, run_b)
    if as_json:
        payload = {
            "a": a.to_json(),
            "b": b.to_json(),
            "identical_fields": same,
            "differences": [{"field": d.field, "a": d.a, "b": d.b} for d in diffs],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_diff(a, b, diffs, same)


def _print_matrix(m: CampaignMatrix) -> None:
    table = Table(
        title=f"campaign {m.campaign}: score ± 95 % CI; Δ vs {m.reference.label} "
        "(* p < 0.05, paired)"
    )
    table.add_column("benchmark / task / metric")
    for col in m.columns:
        ref = " (ref)" if col == m.reference else ""
        table.add_column(col.label + ref, justify="right")
    for row in m.rows:
        metric = row.metric + (f" [{row.filter}]" if row.filter not in ("", "none") else "")
        cells: list[Text | str] = []
        for col in m.columns:
            c = row.cells.get(col.label)
            if c is None:
                cells.append(styled("[dim]—[/]"))
                continue
            text = f"{c.value:.4f}"
            if c.ci_half is not None:
                text += f" ± {c.ci_half:.4f}"
            if c.status != "succeeded":
                text = f"[strike]{text}[/] [red]{escape(c.status)}[/]"
            if c.delta is not None:
                good = (c.delta > 0) == row.higher_is_better
                colour = ("green" if good else "red") if c.significant else "dim"
                star = "*" if c.significant else ""
                text += f"\n[{colour}]Δ {c.delta:+.4f}{star}[/]"
            if c.samples_per_min is not None:
                text += f"\n[dim]{c.samples_per_min:,.0f} samples/min[/]"
            cells.append(Text.from_markup(text))
        table.add_row(f"{row.benchmark} / {row.task} / {metric}", *cells)
    console.print(table)


@app.command("matrix")
def matrix_cmd(
    campaign: Annotated[str, typer.Argument(help="Campaign name (or campaign id prefix).")],
    reference: Annotated[
        str | None, typer.Option("--reference", help="Reference column (model or full label).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Model x quant x runtime against benchmarks, with paired deltas vs a reference column."""
    from evallab.analysis.matrix import campaign_matrix
    from evallab.store import Store

    with Store.open() as store:
        m = campaign_matrix(store, campaign, reference=reference)
    if as_json:
        typer.echo(json.dumps(m.to_json(), indent=2))
    else:
        _print_matrix(m)


@report_app.command("build")
def report_build_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default <lab home>/site).")
    ] = None,
) -> None:
    """Build the static leaderboard site (offline HTML + inline SVG) from the database."""
    from evallab.paths import lab_home
    from evallab.report import build_site
    from evallab.store import Store

    dest = out or (lab_home() / "site")
    with Store.open() as store:
        summary = build_site(store, dest)
    console.print(
        f"wrote {summary.pages} pages ({summary.runs} runs, {summary.comparisons} comparisons) "
        f"to {summary.out_dir}\nopen file://{summary.out_dir / 'index.html'}"
    )
