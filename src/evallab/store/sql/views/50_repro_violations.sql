-- Runs whose pins and fingerprint equal an earlier run's but whose scores differ by more than
-- the tolerance, with both values.
CREATE OR REPLACE VIEW v_repro_violations AS
SELECT r.started_at AS time,
       v.detected_at,
       v.run_id,
       v.reference_run_id,
       ref.started_at AS reference_time,
       r.run_key,
       r.model_name,
       r.quant,
       r.runtime_label,
       r.benchmark,
       v.task,
       v.metric,
       v.filter,
       v.value,
       v.reference_value,
       v.rel_diff,
       v.tolerance
  FROM repro_violations v
  JOIN runs r ON r.run_id = v.run_id
  JOIN runs ref ON ref.run_id = v.reference_run_id;
