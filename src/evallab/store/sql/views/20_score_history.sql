-- Every valid score with the statistics of its series' earlier history (from score_checks):
-- mean, standard deviation and the +-sigma band the regression rule uses.
CREATE OR REPLACE VIEW v_score_history AS
SELECT r.started_at AS time,
       r.run_id,
       r.model_name,
       r.quant,
       r.runtime_label,
       r.runtime_version,
       r.benchmark,
       s.task,
       s.metric,
       s.filter,
       s.value,
       s.stderr,
       c.history_n,
       c.history_mean,
       c.history_sd,
       c.sigma,
       c.history_mean - c.sigma * c.history_sd AS band_low,
       c.history_mean + c.sigma * c.history_sd AS band_high,
       c.z,
       coalesce(c.is_regression, false) AS is_regression
  FROM runs r
  JOIN scores s ON s.run_id = r.run_id
  LEFT JOIN score_checks c
    ON c.run_id = s.run_id AND c.task = s.task AND c.metric = s.metric AND c.filter = s.filter
 WHERE r.status = 'succeeded';
