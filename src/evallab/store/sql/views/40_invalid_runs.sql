-- Runs that must not be trusted, one row per (run, flag): invalid (telemetry or process rules),
-- non-reproducible (outside the repro window), canary drift tolerated by a `warn` policy,
-- and unpinned model revisions.
CREATE OR REPLACE VIEW v_invalid_runs AS
SELECT r.started_at AS time, r.run_id, r.campaign_id, r.model_name, r.quant, r.runtime_label,
       r.benchmark, r.status, 'invalid'::text AS flag, r.status_reason AS detail
  FROM runs r
 WHERE r.status = 'invalid';

CREATE OR REPLACE VIEW v_flagged_runs AS
SELECT time, run_id, campaign_id, model_name, quant, runtime_label, benchmark, status, flag, detail
  FROM v_invalid_runs
UNION ALL
SELECT r.started_at, r.run_id, r.campaign_id, r.model_name, r.quant, r.runtime_label,
       r.benchmark, r.status, t.flag,
       CASE t.flag
           WHEN 'non_reproducible' THEN 'scores differ from an earlier run with the same pins'
           WHEN 'canary_drift' THEN 'canary outputs differ from the baseline'
           ELSE 'model revision is a branch or tag, not a commit'
       END
  FROM runs r
 CROSS JOIN LATERAL unnest(r.tags) AS t(flag)
 WHERE r.tags <> '{}'::text[]
   AND t.flag IN ('non_reproducible', 'canary_drift', 'unpinned')
   AND r.status <> 'invalid';

