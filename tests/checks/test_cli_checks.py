"""`evallab pins check`, `evallab canary baseline --reset` and `evallab regressions`, end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from checks_seed import add_run, new_campaign, off_loop, run

from evallab.analysis.regressions import find_regressions
from evallab.canary.check import record_canary
from evallab.canary.outputs import CANARY_PROMPTS, CanaryCombo, CanaryOutput
from evallab.spec import ChecksSpec
from evallab.store import Store
from tests.helpers import REPO, evallab


def test_pins_check_prints_the_table_and_refuses_unpinned(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        f"name: pinned\ntasks_dir: {REPO / 'tasks_custom'}\n"
        "models:\n  - {name: tiny, source: tiny}\n"
        "benchmarks:\n  - {name: b, tasks: [demo_mc]}\n"
    )
    res = evallab(["pins", "check", str(ok)])
    assert res.returncode == 0, res.stderr
    for expected in ("Pins of campaign pinned", "tiny seed=0", "demo_mc", "fingerprint", "lm_eval"):
        assert expected in res.stdout
    assert not (tmp_path / ".evallab").exists()  # nothing was built or run

    cache = tmp_path / "hub" / "models--org--model" / "refs"
    cache.mkdir(parents=True)
    (cache / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: floating\ntasks_dir: {REPO / 'tasks_custom'}\n"
        "models:\n  - {name: m, source: hf, repo: org/model, revision: main}\n"
        "benchmarks:\n  - {name: b, tasks: [demo_mc]}\n"
    )
    res = evallab(
        ["pins", "check", str(bad)],
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")},
    )
    assert res.returncode == 2
    assert "refused" in res.stdout and "0123456789abcdef0123456789abcdef01234567" in res.stdout
    assert "1 pin(s) refused" in res.stderr and "model m" in res.stderr


def test_regressions_and_canary_reset_commands(migrated_dsn: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    async def seed() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        try:
            cid = await new_campaign(conn)
            for day, value in enumerate([0.50, 0.51, 0.49, 0.50, 0.51, 0.49]):
                rid = await add_run(
                    conn,
                    cid,
                    started_at=now - timedelta(days=10 - day),
                    scores=[("demo_mc", "acc", value)],
                    run_key=f"r{day}",
                )
                await off_loop(find_regressions, store, rid, ChecksSpec())
            drop = await add_run(
                conn, cid, started_at=now - timedelta(hours=1), scores=[("demo_mc", "acc", 0.31)]
            )
            await off_loop(find_regressions, store, drop, ChecksSpec())
            combo = CanaryCombo(
                "tiny-a",
                "evallab/tiny-a",
                "local:abc",
                "none",
                "transformers",
                "transformers",
                "5.24.0",
                "",
            )
            outs = [CanaryOutput(p, ("1", "2"), (-0.5, -0.25)) for p, _ in CANARY_PROMPTS]
            await off_loop(record_canary, store, cid, combo, outs)
        finally:
            await off_loop(store.close)
            await conn.close()

    run(seed())
    res = evallab(["regressions", "--days", "30"], dsn=migrated_dsn)
    assert res.returncode == 0, res.stderr
    assert "tiny-a" in res.stdout and "0.3100" in res.stdout and "0.5000 ± 0.0089" in res.stdout

    res = evallab(["regressions", "--model", "tiny-b"], dsn=migrated_dsn)
    assert res.returncode == 0 and "no regressions in the last 30 days" in res.stdout

    res = evallab(["canary", "baseline"], dsn=migrated_dsn)
    assert res.returncode == 0 and "tiny-a" in res.stdout and "local:abc" in res.stdout
    res = evallab(["canary", "baseline", "--reset", "--model", "tiny-a"], dsn=migrated_dsn)
    assert res.returncode == 0, res.stderr
    assert f"retired {len(CANARY_PROMPTS)} baseline row(s)" in res.stdout
    assert "no current canary baselines" in res.stdout
