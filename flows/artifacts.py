"""What a campaign flow run leaves in the Prefect UI: per-run and per-campaign artifacts."""

from __future__ import annotations

import os
import re
import socket

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from evallab.campaign import CampaignResult, RunOutcome

__all__ = ["FlowLogReporter", "outcome_markdown", "slug", "summary_markdown"]


def slug(*parts: str) -> str:
    """An artifact key made of ``parts`` (lowercase, dashes, at most 200 characters)."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


class FlowLogReporter:
    """Progress of a campaign as flow-run log lines and one artifact per finished run."""

    def run_started(self, label: str, index: int, total: int) -> None:
        get_run_logger().info("run %d/%d: %s", index, total, label)

    def run_finished(self, outcome: RunOutcome) -> None:
        _run_artifact(outcome)

    def message(self, text: str) -> None:
        get_run_logger().info("%s", text)


def _campaignslug() -> str:
    ctx = FlowRunContext.get()
    name = ctx.flow_run.name if ctx and ctx.flow_run else "campaign"
    return slug(name)


def _run_artifact(outcome: RunOutcome) -> None:
    create_markdown_artifact(
        markdown=outcome_markdown(outcome),
        key=slug("run", _campaignslug(), outcome.model, outcome.runtime, outcome.benchmark),
        description=f"{outcome.model} · {outcome.runtime} · {outcome.benchmark}: {outcome.status}",
    )


def outcome_markdown(outcome: RunOutcome) -> str:
    """A run's artifact: scores, raw files with their sha256, and the host they are on."""
    from evallab.models import sha256_file

    lines = [
        f"### {outcome.model} · {outcome.runtime} · {outcome.benchmark} — {outcome.status}",
        "",
        f"run `{outcome.run_id}` · run key `{outcome.run_key[:16]}` · "
        f"host `{socket.gethostname()}`",
        "",
    ]
    if outcome.skipped:
        lines += ["Skipped: already succeeded with the same pins.", ""]
    if outcome.reason and not outcome.skipped:
        lines += [f"**Reason:** {outcome.reason}", ""]
    if outcome.scores:
        lines += ["| task | metric | filter | value ± stderr | n |", "|---|---|---|---:|---:|"]
        for s in outcome.scores:
            err = f" ± {s.stderr:.4f}" if s.stderr is not None else ""
            value = f"{s.value:.4f}{err}" if s.value is not None else "—"
            lines.append(f"| {s.task} | {s.metric} | {s.filter} | {value} | {s.n} |")
        lines.append("")
    if outcome.raw_dir is not None and outcome.raw_dir.is_dir():
        lines += [f"Raw outputs on `{socket.gethostname()}`: `{outcome.raw_dir}`", ""]
        lines += ["| file | sha256 |", "|---|---|"]
        for path in sorted(p for p in outcome.raw_dir.iterdir() if p.is_file()):
            lines.append(f"| `{path}` | `{sha256_file(path)}` |")
    return "\n".join(lines)


def summary_markdown(result: CampaignResult, flow_run_name: str) -> str:
    """The campaign's artifact: every run with its status and scores."""
    worker = (
        f"{socket.gethostname()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
    )
    lines = [
        f"## Campaign {result.name} — {result.status}",
        "",
        f"Campaign id `{result.campaign_id}` · flow run `{flow_run_name}` · worker: {worker}",
        "",
        "| model | runtime | benchmark | status | scores | note |",
        "|---|---|---|---|---|---|",
    ]
    for o in result.runs:
        scores = ", ".join(
            f"{s.task}/{s.metric}={s.value:.4f}" for s in o.scores if s.value is not None
        )
        note = "skipped: already succeeded with the same pins" if o.skipped else o.reason[:200]
        note = note.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {o.model} | {o.runtime} | {o.benchmark} | {o.status} | {scores} | {note} |"
        )
    if result.notes:
        lines += ["", "Checks:", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines)
