"""Time every Grafana panel, variable and alert query against a 5-year nightly history.

Seeds a fresh embedded PostgreSQL (the real schema, migrations + views) with a synthetic history
of 20 models x 30 tasks (5 benchmarks of 6) x 3 metrics every night for 5 years (~183 k runs,
~3.3 M scores), the checks' stored results (score_checks, a few repro violations and invalid
runs) and 90 days of GPU telemetry sampled every 2 s (~1.1 M samples). Then runs each query the dashboards and alert rules run, with
Grafana's macros expanded for the dashboard's default range (last 90 days) and, for
information, for the whole 5 years. Prints p50/p95 per query.

Baseline (same run, same data): the same regression alert and leaderboard computed the naive
way — window functions over the whole history, DISTINCT ON over every run — which is what the
stored ``score_checks`` rows and the loose-index-scan view avoid.

Goal: every query's p95 <= 50 ms at the dashboard's default range.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from benchlib import scratch_postgres

from evallab.grafana_queries import expand_macros, load_queries
from evallab.store.migrate import migrate

NIGHTS = 5 * 365 + 1
MODELS = 20
BENCHMARKS = 5
TASKS_PER_BENCHMARK = 6
METRICS = ("acc", "acc_norm", "exact_match")
TELEMETRY_DAYS = 90
REPS = 30
GOAL_MS = 50.0

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(days=NIGHTS)

SEED_SQL = f"""
SELECT setseed(0.42);

INSERT INTO campaigns (campaign_id, name, spec, spec_sha256, spec_path, lab_version, lab_commit,
                       started_at, finished_at, status)
SELECT md5('c' || n)::uuid, 'nightly', '{{}}'::jsonb, md5('s'), 'deployments/nightly.yaml',
       '0.1.0', 'abc', $1::timestamptz + n * interval '1 day',
       $1::timestamptz + n * interval '1 day' + interval '8 hours', 'succeeded'
  FROM generate_series(0, {NIGHTS - 1}) AS n;

INSERT INTO runs (run_id, campaign_id, run_key, benchmark, model_name, model_source, model_id,
                  model_revision, model_sha256, quant, runtime, runtime_label, runtime_version,
                  harness, harness_version, tasks, seed, generation_config, lab_version,
                  lab_commit, env_fingerprint, python_version, hostname, gpu_name, status,
                  status_reason, tags, started_at, finished_at, duration_s, n_samples,
                  samples_per_min)
SELECT md5('r' || n || '-' || m || '-' || b)::uuid,
       md5('c' || n)::uuid,
       md5('k' || m || '-' || b || '-' || (n / 30)),
       'bench' || b,
       'model-' || lpad(m::text, 2, '0'),
       'hf', 'org/model-' || m, md5('rev' || m), md5('w' || m),
       CASE WHEN m % 4 = 0 THEN 'awq' ELSE 'none' END,
       'vllm', 'vllm==0.32.0', '0.32.0', 'lm_eval', '0.4.13',
       ARRAY(SELECT 'task' || lpad((b * {TASKS_PER_BENCHMARK} + t)::text, 2, '0')
               FROM generate_series(0, {TASKS_PER_BENCHMARK - 1}) t),
       1234, '{{"max_gen_toks": 64}}'::jsonb, '0.1.0', 'abc', md5('env' || (n / 30)), '3.11',
       'gpu-box', 'NVIDIA H100 80GB HBM3',
       CASE WHEN random() < 0.02 THEN 'invalid' ELSE 'succeeded' END,
       '', '{{}}',
       $1::timestamptz + n * interval '1 day' + (m * {BENCHMARKS} + b) * interval '4 minutes',
       $1::timestamptz + n * interval '1 day' + (m * {BENCHMARKS} + b + 1) * interval '4 minutes',
       240, 600, 140 + 20 * random()
  FROM generate_series(0, {NIGHTS - 1}) AS n,
       generate_series(0, {MODELS - 1}) AS m,
       generate_series(0, {BENCHMARKS - 1}) AS b;

UPDATE runs SET status_reason = 'GPU throttled (hw_thermal_slowdown)' WHERE status = 'invalid';

-- The last night: one throttled run, so the invalid-run alert has something to find.
UPDATE runs SET status = 'invalid', status_reason = 'GPU 0 temperature above 82 °C for 60 s'
 WHERE model_name = 'model-07' AND benchmark = 'bench1'
   AND started_at > $1::timestamptz + interval '{NIGHTS - 1} days';

INSERT INTO scores (run_id, task, metric, filter, value, stderr, n, higher_is_better)
SELECT r.run_id, t.task, mt.metric, 'none',
       greatest(0, least(1, 0.3 + 0.5 * ((hashtext(r.model_name || t.task || mt.metric) & 1023)
                                         / 1023.0)
                            + 0.02 * (random() - 0.5))),
       0.01, 500, true
  FROM runs r
 CROSS JOIN LATERAL unnest(r.tasks) AS t(task)
 CROSS JOIN unnest(ARRAY{list(METRICS)}::text[]) AS mt(metric);

-- The last night: model-03 drops 0.1 everywhere, so the regression views and alert fire.
UPDATE scores s SET value = s.value - 0.1
  FROM runs r
 WHERE r.run_id = s.run_id AND r.model_name = 'model-03'
   AND r.started_at > $1::timestamptz + interval '{NIGHTS - 1} days';
"""

CHECKS_SQL = """
INSERT INTO score_checks (run_id, task, metric, filter, value, history_n, history_mean,
                          history_sd, z, sigma, min_history, is_regression, checked_at)
SELECT run_id, task, metric, filter, value, n, mean, sd,
       CASE WHEN sd > 0 THEN (value - mean) / sd END, 2.0, 5,
       coalesce(n >= 5 AND sd > 0 AND (value - mean) / sd < -2, false), started_at
  FROM (
    SELECT s.run_id, s.task, s.metric, s.filter, s.value, r.started_at,
           count(*) OVER w AS n, avg(s.value) OVER w AS mean, stddev_samp(s.value) OVER w AS sd
      FROM runs r JOIN scores s ON s.run_id = r.run_id
     WHERE r.status = 'succeeded'
    WINDOW w AS (PARTITION BY r.model_name, r.quant, r.runtime_label, s.task, s.metric, s.filter
                 ORDER BY r.started_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
  ) x;

INSERT INTO repro_violations (run_id, reference_run_id, task, metric, filter, value,
                              reference_value, rel_diff, tolerance, detected_at)
SELECT s.run_id, s.run_id, s.task, s.metric, s.filter, s.value, s.value * 0.98, 0.02, 0.005,
       r.started_at
  FROM runs r JOIN scores s ON s.run_id = r.run_id
 WHERE r.status = 'succeeded' AND hashtext(r.run_id::text) % 997 = 0;

UPDATE runs SET tags = ARRAY['non_reproducible']
 WHERE run_id IN (SELECT run_id FROM repro_violations);

INSERT INTO telemetry (run_id, ts, gpu_index, temperature_c, power_w, sm_clock_mhz,
                       mem_clock_mhz, memory_used_mb, utilization_pct, throttle_reasons,
                       other_processes)
SELECT r.run_id, r.started_at + k * interval '2 seconds', 0, 60 + 20 * random(),
       300 + 300 * random(), 1980, 2619, 60000, 95, '{}', 0
  FROM runs r, generate_series(0, 119) AS k
 WHERE r.started_at > $1::timestamptz;
"""

VARIABLES = {
    "model": ["model-01", "model-02", "model-05"],
    "task": ["task03", "task17"],
    "metric": "acc",
}

# The naive equivalents the design avoids (baseline).
NAIVE_REGRESSIONS = """
SELECT model_name, count(*) FROM (
  SELECT r.model_name, r.started_at, s.value,
         avg(s.value) OVER w AS mean, stddev_samp(s.value) OVER w AS sd, count(*) OVER w AS n
    FROM runs r JOIN scores s ON s.run_id = r.run_id
   WHERE r.status = 'succeeded'
  WINDOW w AS (PARTITION BY r.model_name, r.quant, r.runtime_label, s.task, s.metric, s.filter
               ORDER BY r.started_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) x WHERE started_at > now() - interval '1 day' AND n >= 5 AND value < mean - 2 * sd
GROUP BY model_name
"""
NAIVE_LEADERBOARD = """
SELECT l.model_name, s.task, s.metric, s.value FROM (
  SELECT DISTINCT ON (model_name, quant, runtime_label, benchmark) run_id, model_name
    FROM runs WHERE status = 'succeeded'
   ORDER BY model_name, quant, runtime_label, benchmark, started_at DESC) l
JOIN scores s ON s.run_id = l.run_id
"""


async def _time(conn: asyncpg.Connection, sql: str, reps: int = REPS) -> tuple[float, float, int]:
    rows = await conn.fetch(sql)  # warm-up (plan + cache)
    await conn.fetch(sql)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await conn.fetch(sql)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, len(rows)


async def main(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        t0 = time.perf_counter()
        await conn.execute("SET synchronous_commit = off")
        for stmt in SEED_SQL.split(";\n\n"):
            if "$1" in stmt:
                await conn.execute(stmt, START)
            else:
                await conn.execute(stmt)
        for stmt in CHECKS_SQL.split(";\n\n"):
            if "$1" in stmt:
                await conn.execute(stmt, NOW - timedelta(days=TELEMETRY_DAYS))
            else:
                await conn.execute(stmt)
        await conn.execute("VACUUM ANALYZE")
        counts = {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("runs", "scores", "score_checks", "telemetry")
        }
        print(f"seeded in {time.perf_counter() - t0:.0f} s: {counts}")

        queries = load_queries()
        ranges = {
            "90d": (NOW - timedelta(days=90), NOW, "2h"),
            "5y": (START, NOW, "1d"),
        }
        worst_default = 0.0
        print(f"{'query':<78} {'range':>5} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6}")
        for q in queries:
            for label, (t_from, t_to, interval) in ranges.items():
                sql = expand_macros(
                    q.sql, time_from=t_from, time_to=t_to, interval=interval, variables=VARIABLES
                )
                if q.source.startswith("alert"):
                    # Alert rules evaluate over their relative range (24 h).
                    if label != "90d":
                        continue
                    sql = expand_macros(
                        q.sql, time_from=NOW - timedelta(days=1), time_to=NOW, variables=VARIABLES
                    )
                p50, p95, n = await _time(conn, sql)
                if label == "90d":
                    worst_default = max(worst_default, p95)
                name = q.source.replace("evallab-overview ", "")[:78]
                print(f"{name:<78} {label:>5} {p50:8.1f} {p95:8.1f} {n:6d}")

        reg_sql = next(q.sql for q in queries if q.source == "alert evallab-regression A")
        reg_fast = expand_macros(
            reg_sql, time_from=NOW - timedelta(days=1), time_to=NOW, variables=VARIABLES
        )
        lead_sql = next(q.sql for q in queries if "Latest leaderboard" in q.source)
        lead_fast = expand_macros(lead_sql, time_from=START, time_to=NOW, variables=VARIABLES)
        _, naive_reg, _ = await _time(conn, NAIVE_REGRESSIONS, reps=3)
        _, fast_reg, _ = await _time(conn, reg_fast)
        _, naive_lead, _ = await _time(conn, NAIVE_LEADERBOARD, reps=5)
        _, fast_lead, _ = await _time(conn, lead_fast)
        print(
            f"baseline (naive, same data): regression alert p95 {naive_reg:.0f} ms vs "
            f"{fast_reg:.1f} ms ({naive_reg / max(fast_reg, 1e-3):.0f}x); leaderboard p95 "
            f"{naive_lead:.0f} ms vs {fast_lead:.1f} ms ({naive_lead / max(fast_lead, 1e-3):.0f}x)"
        )
        return worst_default
    finally:
        await conn.close()


if __name__ == "__main__":
    with scratch_postgres() as (dsn, _):
        worst = asyncio.run(main(dsn))
    print(f"RESULT dashboard_query_p95_max {worst:.1f} ms goal <= {GOAL_MS:.0f}")
