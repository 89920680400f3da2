"""Seeding helpers: a realistic history of campaigns, runs, raw Parquet and telemetry.

Rows go in through the lab's own ingest (one transaction per run), so these tests read exactly
what a campaign writes.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evallab.analysis.stats import mean_stderr
from evallab.harnesses.base import SampleOutcome, ScoreRow
from evallab.store.ingest import ingest_run, insert_campaign
from evallab.store.records import CampaignRecord
from tests.helpers import run_record

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def doc_hash(task: str, doc_id: int, revision: str = "r1") -> str:
    return hashlib.sha256(f"{task}:{doc_id}:{revision}".encode()).hexdigest()


@dataclass
class TaskData:
    """Per-document outcomes of one task in one run (metric -> 0/1 or float values)."""

    task: str
    metrics: dict[str, np.ndarray]
    revision: str = "r1"
    responses: list[str] | None = None
    higher_is_better: bool = True


@dataclass
class Seeded:
    dsn: str
    runs: dict[str, uuid.UUID] = field(default_factory=dict)
    values: dict[tuple[str, str, str], float] = field(default_factory=dict)


async def _campaign(conn: asyncpg.Connection, name: str, started: datetime) -> uuid.UUID:
    cid = uuid.uuid4()
    await insert_campaign(
        conn,
        CampaignRecord(
            campaign_id=cid,
            name=name,
            spec={"name": name},
            spec_sha256="0" * 64,
            spec_path=f"/lab/{name}.yaml",
            lab_version="0.1.0",
            lab_commit="abc123",
            started_at=started,
            finished_at=started + timedelta(minutes=30),
            status="succeeded",
        ),
    )
    return cid


def _prompt(task: str, doc: int) -> str:
    if task == "demo_gen":
        return f"Say word{doc} 2 times:"
    return f"Question: {doc} plus {doc} equals?\nAnswer:"


def _target(task: str, doc: int) -> str:
    return f"word{doc} word{doc}" if task == "demo_gen" else str(2 * doc)


async def _run(
    conn: asyncpg.Connection,
    raw_dir: Path,
    *,
    campaign_id: uuid.UUID,
    model: str,
    benchmark: str,
    tasks: list[TaskData],
    started: datetime,
    quant: str = "none",
    runtime: str = "transformers",
    runtime_version: str = "5.24.0",
    status: str = "succeeded",
    status_reason: str = "",
    temperature: float = 0.0,
    telemetry_temp: float | None = None,
    canary_drift: bool = False,
) -> uuid.UUID:
    run_id = uuid.uuid4()
    scores: list[ScoreRow] = []
    outcomes: list[SampleOutcome] = []
    raw: dict[str, list[Any]] = {
        k: [] for k in ("task", "doc_id", "doc_hash", "filter", "prompt", "target", "response")
    }
    for td in tasks:
        for metric, values in td.metrics.items():
            scores.append(
                ScoreRow(
                    td.task,
                    metric,
                    "none",
                    float(values.mean()),
                    mean_stderr(values),
                    len(values),
                    td.higher_is_better,
                )
            )
            outcomes.extend(
                SampleOutcome(
                    td.task, i, doc_hash(td.task, i, td.revision), metric, "none", float(v)
                )
                for i, v in enumerate(values)
            )
        first = next(iter(td.metrics.values()))
        for i, v in enumerate(first):
            raw["task"].append(td.task)
            raw["doc_id"].append(i)
            raw["doc_hash"].append(doc_hash(td.task, i, td.revision))
            raw["filter"].append("none")
            raw["prompt"].append(_prompt(td.task, i))
            raw["target"].append(_target(td.task, i))
            resp = (
                td.responses[i]
                if td.responses
                else (_target(td.task, i) if v == 1.0 else f"{model} wrong answer {i}")
            )
            raw["response"].append(resp)
    raw_path = ""
    if status != "failed":
        folder = raw_dir / str(run_id)
        folder.mkdir(parents=True)
        raw_path = str(folder / "samples.parquet")
        pq.write_table(pa.table(raw), raw_path)
    rec = run_record(
        campaign_id,
        run_id=run_id,
        run_key=hashlib.sha256(f"{model}{quant}{runtime}{benchmark}".encode()).hexdigest(),
        benchmark=benchmark,
        model_name=model,
        model_id=f"evallab/{model}",
        model_revision="local:abcdef",
        model_sha256="a" * 64,
        quant=quant,
        runtime=runtime.split("-")[0],
        runtime_label=runtime,
        runtime_version=runtime_version,
        tasks=[t.task for t in tasks],
        seed=1234,
        generation_config={"temperature": temperature, "max_gen_toks": 64},
        lab_commit="abc123",
        env_fingerprint="f" * 64,
        python_version="3.11.2",
        hostname="lab-1",
        status=status,
        status_reason=status_reason,
        started_at=started,
        finished_at=started + timedelta(minutes=2),
        duration_s=120.0,
        n_samples=sum(len(next(iter(t.metrics.values()))) for t in tasks),
        dataset_revisions={t.task: t.revision for t in tasks},
        gpu_name="NVIDIA H100" if telemetry_temp is not None else "",
        gpu_driver="560.35" if telemetry_temp is not None else "",
        raw_path=raw_path,
    )
    telemetry = []
    if telemetry_temp is not None:
        for k in range(30):
            telemetry.append(
                (
                    started + timedelta(seconds=2 * k),
                    0,
                    telemetry_temp - 10 + k / 3,
                    300.0 + k,
                    1980.0,
                    2619.0,
                    40000.0,
                    97.0,
                    ["sw_thermal_slowdown"] if telemetry_temp > 82 and k > 20 else [],
                    0,
                )
            )
    if status == "failed":
        await ingest_run(conn, rec, [], [], [])
    else:
        await ingest_run(conn, rec, scores, outcomes, telemetry)
    if telemetry_temp is not None:
        for p in range(4):
            await conn.execute(
                "INSERT INTO canaries (run_id, campaign_id, combo_key, canary_version, prompt_id,"
                " output_hash, logprob_hash, is_baseline, matches_baseline)"
                " VALUES ($1, $2, $3, 'v1', $4, 'h', 'l', false, $5)",
                run_id,
                campaign_id,
                f"{model}|{runtime}",
                f"p{p}",
                not (canary_drift and p == 0),
            )
    return run_id


def _binary(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return (rng.random(n) < p).astype(np.float64)


async def seed_lab(dsn: str, raw_dir: Path) -> Seeded:
    """The seeded history every report test reads."""
    rng = np.random.default_rng(7)
    out = Seeded(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        # 1. The fine-tune story: base vs a copy trained on demo_gen.
        demo = await _campaign(conn, "demo", T0)
        mc_base = _binary(rng, 120, 0.25)
        gen_base = _binary(rng, 100, 0.05)
        gen_ft = np.maximum(gen_base, _binary(rng, 100, 0.9))
        gen_ft[:2] = 0.0  # two documents the fine-tune lost: flips go both ways
        gen_base[:2] = 1.0
        out.runs["base"] = await _run(
            conn,
            raw_dir,
            campaign_id=demo,
            model="tiny-base",
            benchmark="demo",
            tasks=[
                TaskData("demo_mc", {"acc": mc_base, "acc_norm": mc_base}),
                TaskData("demo_gen", {"exact_match": gen_base}),
            ],
            started=T0 + timedelta(minutes=1),
        )
        mc_ft = mc_base.copy()
        zeros, ones = np.flatnonzero(mc_base == 0), np.flatnonzero(mc_base == 1)
        mc_ft[zeros[:3]] = 1.0  # three gained, one lost: not a significant change
        mc_ft[ones[:1]] = 0.0
        out.runs["ft"] = await _run(
            conn,
            raw_dir,
            campaign_id=demo,
            model="tiny-ft",
            benchmark="demo",
            tasks=[
                TaskData("demo_mc", {"acc": mc_ft, "acc_norm": mc_ft}),
                TaskData("demo_gen", {"exact_match": gen_ft}),
            ],
            started=T0 + timedelta(minutes=3),
        )
        # 2. Quant x runtime matrix with a nightly history: llama (none, awq) x (hf, vllm).
        quality = rng.random(400)
        for night in range(4):
            cid = await _campaign(conn, "nightly", T0 + timedelta(days=night + 1))
            for quant, runtime, drop in (
                ("none", "transformers", 0.0),
                ("awq", "transformers", 0.15),
                ("none", "vllm-0.32", 0.0),
            ):
                acc = (quality > 0.3 + drop).astype(np.float64)
                flip = rng.choice(400, 4, replace=False)
                acc[flip] = 1.0 - acc[flip]
                ppl = 5.0 + quality * 2 + drop * 3 + rng.normal(0, 0.05, 400)
                invalid = night == 2 and runtime == "vllm-0.32"
                key = f"nightly{night}-{quant}-{runtime}"
                out.runs[key] = await _run(
                    conn,
                    raw_dir,
                    campaign_id=cid,
                    model="llama-8b",
                    benchmark="reasoning",
                    tasks=[
                        TaskData("arc_easy", {"acc": acc}),
                        TaskData("wikitext", {"word_perplexity": ppl}, higher_is_better=False),
                    ],
                    started=T0 + timedelta(days=night + 1, minutes=5 * len(out.runs)),
                    quant=quant,
                    runtime=runtime,
                    runtime_version="0.32.0" if runtime.startswith("vllm") else "5.24.0",
                    status="invalid" if invalid else "succeeded",
                    status_reason="GPU temperature above 82 °C for 75 s" if invalid else "",
                    telemetry_temp=90.0 if invalid else 70.0,
                    canary_drift=invalid,
                )
                out.values[(key, "arc_easy", "acc")] = float(acc.mean())
        # A failed run has no scores; it is listed, never plotted.
        out.runs["failed"] = await _run(
            conn,
            raw_dir,
            campaign_id=cid,
            model="llama-8b",
            benchmark="reasoning",
            tasks=[],
            started=T0 + timedelta(days=4, minutes=50),
            quant="gptq",
            status="failed",
            status_reason="server exited with code 1 during startup",
        )
        # 3. A rerun on a new dataset revision: same doc ids, different documents.
        drift = await _campaign(conn, "drift", T0 + timedelta(days=6))
        out.runs["drift"] = await _run(
            conn,
            raw_dir,
            campaign_id=drift,
            model="llama-8b",
            benchmark="reasoning",
            tasks=[
                TaskData("arc_easy", {"acc": (quality > 0.3).astype(np.float64)}, revision="r2")
            ],
            started=T0 + timedelta(days=6, minutes=1),
            temperature=0.7,
        )
        # 4. Something that shares no task with the demo runs.
        other = await _campaign(conn, "other", T0 + timedelta(days=7))
        out.runs["other"] = await _run(
            conn,
            raw_dir,
            campaign_id=other,
            model="coder",
            benchmark="code",
            tasks=[TaskData("humaneval", {"pass@1": _binary(rng, 164, 0.3)})],
            started=T0 + timedelta(days=7, minutes=1),
        )
    finally:
        await conn.close()
    return out
