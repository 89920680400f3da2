-- Eval throughput of every finished run (samples per minute), valid or not.
CREATE OR REPLACE VIEW v_run_throughput AS
SELECT r.started_at AS time,
       r.run_id,
       r.campaign_id,
       r.model_name,
       r.quant,
       r.runtime_label,
       r.benchmark,
       r.gpu_name,
       r.status,
       r.status = 'succeeded' AS valid,
       r.n_samples,
       r.duration_s,
       r.samples_per_min
  FROM runs r
 WHERE r.status IN ('succeeded', 'invalid');
