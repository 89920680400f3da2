"""Repro window and regression detection against a real PostgreSQL with seeded runs."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from checks_seed import T0, add_run, new_campaign, off_loop, run

from evallab.analysis.regressions import find_regressions
from evallab.analysis.repro import find_repro_violations
from evallab.spec import ChecksSpec
from evallab.store import Store

HISTORY = [0.50, 0.51, 0.49, 0.505, 0.495, 0.50, 0.51, 0.49]  # mean 0.50, sd ~0.0085


async def _seed_history(conn: asyncpg.Connection, store: Store, model: str = "tiny-a") -> None:
    cid = await new_campaign(conn)
    for day, value in enumerate(HISTORY):
        rid = await add_run(
            conn,
            cid,
            started_at=T0 + timedelta(days=day),
            model=model,
            scores=[("demo_mc", "acc", value)],
            run_key=f"k{day}",
        )
        await off_loop(find_regressions, store, rid, ChecksSpec())
    # An invalid run with a terrible score must not drag the history down.
    bad = await add_run(
        conn,
        cid,
        started_at=T0 + timedelta(days=8, hours=1),
        model=model,
        scores=[("demo_mc", "acc", 0.05)],
        run_key="bad",
    )
    await off_loop(store.mark_invalid, bad, "GPU throttled (hw_thermal_slowdown)")


def test_score_far_below_history_is_a_regression(migrated_dsn: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        try:
            await _seed_history(conn, store)
            cid = await new_campaign(conn)
            rid = await add_run(
                conn,
                cid,
                started_at=T0 + timedelta(days=9),
                scores=[("demo_mc", "acc", 0.46), ("demo_mc", "acc_norm", 0.3)],
            )
            found = await off_loop(find_regressions, store, rid, ChecksSpec())
            assert [(r.task, r.metric, r.value) for r in found] == [("demo_mc", "acc", 0.46)]
            reg = found[0]
            assert reg.history_n == len(HISTORY)  # the invalid run is excluded
            assert abs(reg.history_mean - 0.50) < 1e-9
            assert reg.z < -2
            assert "0.46 vs mean 0.5" in reg.describe()
            view = await conn.fetch("SELECT run_id, value, history_n FROM v_regressions")
            assert [(r["run_id"], r["value"], r["history_n"]) for r in view] == [(rid, 0.46, 8)]
            listed = await off_loop(lambda: store.recent_regressions(model="tiny-a"))
            assert [r.run_id for r in listed] == [rid]
            # Invalidating the run later removes it from the view.
            await off_loop(store.mark_invalid, rid, "another process used the run's GPU")
            assert await conn.fetchval("SELECT count(*) FROM v_regressions") == 0
        finally:
            await off_loop(store.close)
            await conn.close()

    run(go())


def test_score_within_band_or_short_history_is_silent(migrated_dsn: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        try:
            await _seed_history(conn, store)
            cid = await new_campaign(conn)
            ok = await add_run(
                conn, cid, started_at=T0 + timedelta(days=9), scores=[("demo_mc", "acc", 0.487)]
            )
            assert await off_loop(find_regressions, store, ok, ChecksSpec()) == []
            # A higher score is never a regression.
            up = await add_run(
                conn, cid, started_at=T0 + timedelta(days=10), scores=[("demo_mc", "acc", 0.7)]
            )
            assert await off_loop(find_regressions, store, up, ChecksSpec()) == []
            # Another model has no history yet: nothing to compare with.
            fresh = await add_run(
                conn,
                cid,
                started_at=T0 + timedelta(days=10),
                model="tiny-b",
                scores=[("demo_mc", "acc", 0.01)],
            )
            assert await off_loop(find_regressions, store, fresh, ChecksSpec()) == []
            # With a minimum history above what exists, the drop is not flagged either.
            drop = await add_run(
                conn, cid, started_at=T0 + timedelta(days=11), scores=[("demo_mc", "acc", 0.3)]
            )
            assert (
                await off_loop(find_regressions, store, drop, ChecksSpec(regression_min_history=50))
                == []
            )
            checks = await conn.fetchrow(
                "SELECT history_n, is_regression FROM score_checks WHERE run_id = $1", drop
            )
            assert checks["history_n"] == 10 and checks["is_regression"] is False
        finally:
            await off_loop(store.close)
            await conn.close()

    run(go())


def test_rerun_outside_the_repro_window_is_flagged_with_both_values(migrated_dsn: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        try:
            cid = await new_campaign(conn)
            first = await add_run(
                conn,
                cid,
                started_at=T0,
                scores=[("demo_mc", "acc", 0.500), ("demo_gen", "exact_match", 0.2)],
            )
            second = await add_run(
                conn,
                cid,
                started_at=T0 + timedelta(hours=1),
                scores=[("demo_mc", "acc", 0.510), ("demo_gen", "exact_match", 0.2)],
            )
            found = await off_loop(find_repro_violations, store, second, 0.005)
            assert [(v.task, v.value, v.reference_value, v.reference_run_id) for v in found] == [
                ("demo_mc", 0.510, 0.500, first)
            ]
            assert abs(found[0].rel_diff - 0.01 / 0.51) < 1e-9
            tags = await conn.fetchval("SELECT tags FROM runs WHERE run_id = $1", second)
            assert "non_reproducible" in tags
            row = await conn.fetchrow("SELECT * FROM v_repro_violations")
            assert (row["value"], row["reference_value"], row["run_id"]) == (0.51, 0.5, second)
            flagged = await conn.fetch("SELECT run_id, flag FROM v_flagged_runs")
            assert [(r["run_id"], r["flag"]) for r in flagged] == [(second, "non_reproducible")]
        finally:
            await off_loop(store.close)
            await conn.close()

    run(go())


def test_rerun_inside_the_window_or_with_other_pins_is_silent(migrated_dsn: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        try:
            cid = await new_campaign(conn)
            await add_run(conn, cid, started_at=T0, scores=[("demo_mc", "acc", 0.500)])
            same = await add_run(
                conn, cid, started_at=T0 + timedelta(hours=1), scores=[("demo_mc", "acc", 0.502)]
            )  # 0.4 % apart
            assert await off_loop(find_repro_violations, store, same, 0.005) == []
            other_key = await add_run(
                conn,
                cid,
                started_at=T0 + timedelta(hours=2),
                scores=[("demo_mc", "acc", 0.6)],
                run_key="other",
            )
            assert await off_loop(find_repro_violations, store, other_key, 0.005) == []
            other_env = await add_run(
                conn,
                cid,
                started_at=T0 + timedelta(hours=3),
                scores=[("demo_mc", "acc", 0.6)],
                fingerprint="e" * 64,
            )
            assert await off_loop(find_repro_violations, store, other_env, 0.005) == []
            # A looser tolerance accepts what the default rejects.
            far = await add_run(
                conn, cid, started_at=T0 + timedelta(hours=4), scores=[("demo_mc", "acc", 0.51)]
            )
            assert await off_loop(find_repro_violations, store, far, 0.05) == []
            assert await conn.fetchval("SELECT count(*) FROM repro_violations") == 0
        finally:
            await off_loop(store.close)
            await conn.close()

    run(go())
