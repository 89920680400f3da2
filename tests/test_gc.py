"""gc of raw run outputs: real run folders, a real database; evidence survives, dry runs change
nothing, pruned runs keep their checksums and their rows say so."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evallab.analysis.repro import find_repro_violations
from evallab.campaign.manifest import verify_files
from evallab.campaign.raw import read_run_dir, write_manifest
from evallab.errors import StorageError
from evallab.gc import collect_garbage
from evallab.harnesses.base import ScoreRow
from evallab.store import Store
from evallab.store.ingest import ingest_run
from evallab.store.watch import CanaryRow
from tests.checks.checks_seed import new_campaign
from tests.helpers import evallab, fetch, run_record

NOW = datetime.now(UTC).replace(microsecond=0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _add(
    conn: asyncpg.Connection, runs: Path, model: str, day: int, *, key: str, score: float = 0.5
) -> uuid.UUID:
    """A run in its own campaign (as nightly campaigns are), with a complete run folder."""
    cid = await new_campaign(conn, f"n{model}{day}")
    started = NOW - timedelta(days=40 - day)
    rec = run_record(cid, model_name=model, benchmark="demo", run_key=key, started_at=started)
    folder = runs / str(rec.run_id)
    folder.mkdir(parents=True)
    samples = pa.table(
        {"doc_id": list(range(200)), "text": [f"answer {i}" * 20 for i in range(200)]}
    )
    pq.write_table(samples, folder / "samples.parquet", compression="zstd")
    pq.write_table(pa.table({"doc_id": list(range(200))}), folder / "outcomes.parquet")
    (folder / "results.json").write_text(json.dumps({"results": {"t": {"acc": score}}}))
    scores = [ScoreRow("t", "acc", "none", score, 0.01, 200, True)]
    rec = run_record(
        cid,
        run_id=rec.run_id,
        model_name=model,
        benchmark="demo",
        run_key=key,
        started_at=started,
        raw_path=str(folder / "samples.parquet"),
        raw_sha256=_sha(folder / "samples.parquet"),
        results_path=str(folder / "results.json"),
        results_sha256=_sha(folder / "results.json"),
    )
    write_manifest(folder, rec, scores)
    await ingest_run(conn, rec, scores)
    return rec.run_id


def _lab(dsn: str, runs: Path) -> dict[str, uuid.UUID]:
    """Model m: 7 nightly runs (days 0-6), 4 of them evidence; model m2: 3 plain runs."""

    async def go() -> dict[str, uuid.UUID]:
        conn = await asyncpg.connect(dsn)
        try:
            ids = {f"m{d}": await _add(conn, runs, "m", d, key=f"k{d}") for d in (0, 1, 4, 5, 6)}
            ids["m2"] = await _add(conn, runs, "m", 2, key="same")
            ids["m3"] = await _add(conn, runs, "m", 3, key="same", score=0.6)
            for d in range(3):
                ids[f"b{d}"] = await _add(conn, runs, "m2", d, key=f"b{d}")
            # A regression flagged on day 1's score.
            await conn.execute(
                "INSERT INTO score_checks (run_id, task, metric, filter, value, history_n, sigma, "
                "min_history, is_regression) VALUES ($1, 't', 'acc', 'none', 0.5, 9, 2, 5, true)",
                ids["m1"],
            )
            return ids
        finally:
            await conn.close()

    ids = asyncio.run(go())
    with Store(dsn) as store:
        # Day 3 reran day 2's pins and didn't reproduce: an open comparison of the two.
        assert len(find_repro_violations(store, ids["m3"], 0.005)) == 1
        # Day 0's session recorded the current canary baseline of its combination.
        [cid] = fetch(dsn, "SELECT campaign_id FROM runs WHERE run_id = $1", ids["m0"])
        store.add_canary_rows(
            [
                CanaryRow(
                    cid["campaign_id"],
                    "combo",
                    "v1",
                    "p0",
                    "o" * 64,
                    "l" * 64,
                    True,
                    None,
                    "m",
                    "local:abc",
                    "none",
                    "transformers",
                    "5",
                    "",
                    3,
                    16,
                )
            ]
        )
    return ids


def _files(runs: Path) -> dict[str, str]:
    return {str(p.relative_to(runs)): _sha(p) for p in sorted(runs.rglob("*")) if p.is_file()}


def test_keep_last_spares_evidence_and_dry_run_changes_nothing(
    migrated_dsn: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    ids = _lab(migrated_dsn, runs)
    before = _files(runs)

    with Store(migrated_dsn) as store:
        plan, done = collect_garbage(store, keep_last=2, dry_run=True, root=runs)
    assert done is None and _files(runs) == before
    assert (
        fetch(migrated_dsn, "SELECT count(*) AS n FROM runs WHERE pruned_at IS NOT NULL")[0]["n"]
        == 0
    )
    assert {a.run.run_id for a in plan.actions} == {ids["m4"], ids["b0"]}
    assert {a.action for a in plan.actions} == {"prune"}
    spared = {run.run_id: why for run, why in plan.spared}
    assert spared == {
        ids["m0"]: "keep-last 2, but kept: canary baseline",
        ids["m1"]: "keep-last 2, but kept: regression",
        ids["m2"]: "keep-last 2, but kept: repro comparison",
        ids["m3"]: "keep-last 2, but kept: repro comparison",
    }

    # The CLI's dry run lists the same and deletes nothing either.
    cli = evallab(
        ["gc", "--dry-run", "--keep-last", "2"],
        dsn=migrated_dsn,
        env={"EVALLAB_RUNS_DIR": str(runs)},
    )
    assert cli.returncode == 0, cli.stderr
    assert "would prune 2 run(s)" in cli.stdout and "dry run: nothing was changed" in cli.stdout
    assert "canary baseline" in cli.stdout and "repro comparison" in cli.stdout
    assert _files(runs) == before

    with Store(migrated_dsn) as store:
        plan, done = collect_garbage(store, keep_last=2, root=runs)
    assert done is not None and done.pruned == 2 and done.freed_bytes > 0
    for name in ("m4", "b0"):
        folder = runs / str(ids[name])
        assert [p.name for p in folder.iterdir()] == ["pruned.json"]
        record = json.loads((folder / "pruned.json").read_text())
        assert record["reason"] == "keep-last 2"
        assert record["manifest"]["run"]["run_id"] == str(ids[name])
        assert (
            record["files"]["samples.parquet"]["sha256"] == before[f"{ids[name]}/samples.parquet"]
        )
        assert set(record["files"]) == {"samples.parquet", "outcomes.parquet", "results.json"}
        with pytest.raises(StorageError, match="pruned by `evallab gc`"):
            read_run_dir(folder)
    rows = {
        r["run_id"]: (r["pruned_at"] is not None, r["pruned_reason"], r["n"])
        for r in fetch(
            migrated_dsn,
            "SELECT r.run_id, r.pruned_at, r.pruned_reason, count(s.*) AS n FROM runs r "
            "LEFT JOIN scores s USING (run_id) GROUP BY 1, 2, 3",
        )
    }
    assert rows[ids["m4"]] == (True, "keep-last 2", 1)  # the scores stay
    assert sum(pruned for pruned, _, _ in rows.values()) == 2
    untouched = {
        k: v for k, v in before.items() if not k.startswith((str(ids["m4"]), str(ids["b0"])))
    }
    assert {k: v for k, v in _files(runs).items() if k in untouched} == untouched
    # Nothing left to do: a second run plans nothing.
    with Store(migrated_dsn) as store:
        assert collect_garbage(store, keep_last=2, root=runs, dry_run=True)[0].actions == []


def test_quota_prunes_oldest_first_and_compression_reads_back(
    migrated_dsn: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    ids = _lab(migrated_dsn, runs)
    sizes = {
        name: sum(p.stat().st_size for p in (runs / str(i)).iterdir()) for name, i in ids.items()
    }
    evidence = {ids[n] for n in ("m0", "m1", "m2", "m3")}
    # Room for all but ~2.5 folders (all about the same size): the 3 oldest prunable runs go.
    quota = sum(sizes.values()) - int(2.5 * max(sizes.values()))
    with Store(migrated_dsn) as store:
        plan, done = collect_garbage(store, quota_gb=quota / 1e9, compress_after_days=30, root=runs)
    pruned = [a.run.run_id for a in plan.actions if a.action == "prune"]
    # Oldest first among the runs that may go: m2's days 0-2 are older than m's day 4.
    assert pruned == [ids["b0"], ids["b1"], ids["b2"]] and not plan.over_quota
    assert all(a.reason == f"quota {quota / 1e9:g} GB" for a in plan.actions if a.action == "prune")
    compressed = {a.run.run_id for a in plan.actions if a.action == "compress"}
    # Older than 30 days: days 0-9 of 40 ago, those not pruned (evidence is compressed, not lost).
    assert compressed == {ids[n] for n in ("m0", "m1", "m2", "m3", "m4", "m5", "m6")}
    assert done is not None and done.compressed == 7
    folder = runs / str(ids["m0"])
    assert sorted(p.name for p in folder.iterdir()) == ["packed.json", "raw.tar.zst", "run.json"]
    listing = subprocess.run(
        ["tar", "--zstd", "-tf", str(folder / "raw.tar.zst")], capture_output=True, text=True
    )
    assert sorted(listing.stdout.split()) == ["outcomes.parquet", "results.json", "samples.parquet"]
    with pytest.raises(StorageError, match="tar --zstd -xf"):
        read_run_dir(folder)
    subprocess.run(
        ["tar", "--zstd", "-xf", str(folder / "raw.tar.zst"), "-C", str(folder)], check=True
    )
    # Unpacked, every file matches the checksums run.json recorded when the run was written.
    body = json.loads((folder / "run.json").read_text())
    verify_files(folder, body["files"])
    assert sorted(body["files"]) == ["outcomes.parquet", "results.json", "samples.parquet"]
    flags = {
        r["run_id"]: (r["pruned_at"] is not None, r["compressed_at"] is not None)
        for r in fetch(migrated_dsn, "SELECT run_id, pruned_at, compressed_at FROM runs")
    }
    assert {i for i, (p, _) in flags.items() if p} == set(pruned)
    assert {i for i, (_, c) in flags.items() if c} == compressed
    assert evidence <= compressed and not evidence & set(pruned)

    # A quota only evidence could meet: everything else goes, the evidence stays, gc says so.
    with Store(migrated_dsn) as store:
        plan, _ = collect_garbage(store, quota_gb=0, root=runs)
    assert {a.run.run_id for a in plan.actions} == {ids["m4"], ids["m5"], ids["m6"]}
    assert plan.over_quota
    assert all((runs / str(i) / "raw.tar.zst").exists() for i in evidence - {ids["m0"]})
