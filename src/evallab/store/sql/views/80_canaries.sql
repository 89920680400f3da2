-- Canary checks per runtime session: did every prompt match its baseline?
CREATE OR REPLACE VIEW v_canary_checks AS
SELECT c.campaign_id,
       c.combo_key,
       c.canary_version,
       c.model_name,
       c.model_revision,
       c.quant,
       c.runtime_label,
       c.runtime_version,
       c.gpu_name,
       min(c.created_at) AS time,
       count(*) AS prompts,
       bool_or(c.is_baseline) AS recorded_baseline,
       count(*) FILTER (WHERE c.matches_baseline IS false) AS drifted_prompts
  FROM canaries c
 GROUP BY c.campaign_id, c.combo_key, c.canary_version, c.model_name, c.model_revision, c.quant,
          c.runtime_label, c.runtime_version, c.gpu_name;
