-- Scores more than `sigma` standard deviations worse than the mean of their series' earlier
-- valid runs (with at least `min_history` of them). A run invalidated later drops out.
CREATE OR REPLACE VIEW v_regressions AS
SELECT r.started_at AS time,
       c.checked_at,
       r.run_id,
       r.campaign_id,
       r.model_name,
       r.quant,
       r.runtime_label,
       r.runtime_version,
       r.benchmark,
       c.task,
       c.metric,
       c.filter,
       c.value,
       c.history_n,
       c.history_mean,
       c.history_sd,
       c.z,
       c.sigma,
       c.value - c.history_mean AS delta
  FROM score_checks c
  JOIN runs r ON r.run_id = c.run_id
 WHERE c.is_regression
   AND r.status = 'succeeded';
