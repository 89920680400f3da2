"""The site's rankings and histories: the leaderboard and each model's score history."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from evallab.report import svg
from evallab.report.data import RunView, slug
from evallab.store.analysis import ScoreValue

__all__ = ["leaderboard", "model_history", "primary_metric"]

#: Metrics preferred as a task's headline number, in order.
_PRIMARY = ("acc", "exact_match", "pass@1", "acc_norm", "f1", "bleu", "mc2", "mc1")


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


def leaderboard(runs: list[RunView]) -> dict[str, Any]:
    """Latest succeeded score per (model/quant/runtime, task) on each task's primary metric."""
    metrics: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r in runs:
        if r.ref.status == "succeeded":
            for s in r.scores:
                metrics[s.task].add((s.metric, s.filter))
    primary = {task: primary_metric(ms) for task, ms in metrics.items()}
    latest: dict[tuple[str, str], tuple[RunView, ScoreValue]] = {}
    for r in runs:  # ordered by start time: later runs overwrite earlier ones
        if r.ref.status != "succeeded":
            continue
        for s in r.scores:
            if primary.get(s.task) == (s.metric, s.filter):
                latest[(r.ref.combo, s.task)] = (r, s)
    tasks = sorted(primary)
    lower_better = {t for (_, t), (_, sc) in latest.items() if sc.higher_is_better is False}
    combos = sorted({combo for combo, _ in latest})
    rows: list[dict[str, Any]] = []
    for combo in combos:
        cells = {t: latest.get((combo, t)) for t in tasks}
        # Only higher-is-better metrics are averaged: a perplexity would swamp accuracies and
        # reward the worse model.
        values = [c[1].value for t, c in cells.items() if c is not None and t not in lower_better]
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
            svg.Bar(r["combo"], r["mean"], href=f"models/{slug(r['model'])}.html")
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


def model_history(runs: list[RunView], model: str) -> list[dict[str, Any]]:
    """Per (task, metric, filter): one chart + table of every run's score over time."""
    mine = [r for r in runs if r.ref.model == model]
    keys = sorted({(s.task, s.metric, s.filter) for r in mine for s in r.scores})
    out = []
    for task, metric, filt in keys:
        series: dict[str, list[svg.Point]] = defaultdict(list)
        table = []
        for r in mine:
            for s in r.scores:
                if (s.task, s.metric, s.filter) != (task, metric, filt):
                    continue
                invalid = r.ref.status != "succeeded"
                tip = f"{r.ref.combo} {r.ref.short_id} {s.value:.4f} [{r.ref.status}]"
                label = f"{r.ref.quant} / {r.ref.runtime_label}"
                series[label].append(
                    svg.Point(r.ref.started_at, s.value, invalid, tip, f"../{r.href}")
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
