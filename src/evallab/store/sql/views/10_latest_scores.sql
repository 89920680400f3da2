-- Latest valid run of every (model, quant, runtime, benchmark) and its scores: the leaderboard.
-- The series are enumerated with a loose index scan (a recursive CTE hopping over
-- runs_latest_idx), so the cost grows with the number of series, not with years of history.
CREATE OR REPLACE VIEW v_latest_scores AS
WITH RECURSIVE series AS (
    (SELECT model_name, quant, runtime_label, benchmark
       FROM runs
      WHERE status = 'succeeded'
      ORDER BY model_name, quant, runtime_label, benchmark
      LIMIT 1)
    UNION ALL
    SELECT nxt.model_name, nxt.quant, nxt.runtime_label, nxt.benchmark
      FROM series s
     CROSS JOIN LATERAL (
        SELECT r.model_name, r.quant, r.runtime_label, r.benchmark
          FROM runs r
         WHERE r.status = 'succeeded'
           AND (r.model_name, r.quant, r.runtime_label, r.benchmark)
               > (s.model_name, s.quant, s.runtime_label, s.benchmark)
         ORDER BY r.model_name, r.quant, r.runtime_label, r.benchmark
         LIMIT 1) nxt
)
SELECT latest.started_at AS time,
       latest.run_id,
       series.model_name,
       series.quant,
       series.runtime_label,
       latest.runtime_version,
       series.benchmark,
       latest.model_revision,
       latest.pinned,
       latest.tags,
       sc.task,
       sc.metric,
       sc.filter,
       sc.value,
       sc.stderr,
       sc.n
  FROM series
 CROSS JOIN LATERAL (
    SELECT r.run_id, r.started_at, r.runtime_version, r.model_revision, r.pinned, r.tags
      FROM runs r
     WHERE r.status = 'succeeded'
       AND r.model_name = series.model_name
       AND r.quant = series.quant
       AND r.runtime_label = series.runtime_label
       AND r.benchmark = series.benchmark
     ORDER BY r.started_at DESC
     LIMIT 1) latest
  JOIN scores sc ON sc.run_id = latest.run_id;
