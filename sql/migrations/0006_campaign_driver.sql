-- evallab schema, version 6: who runs a campaign, and campaigns whose driver died.
-- A campaign row names the driver that runs it (cli or prefect), its host and process id, and
-- (under Prefect) the flow run. A driver that was killed can't close its row; the next campaign
-- on the same host finds the dead process and marks the row 'crashed' with a reason.
ALTER TABLE campaigns ADD COLUMN driver text NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN driver_host text NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN driver_pid integer;
ALTER TABLE campaigns ADD COLUMN flow_run_id text NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN status_reason text NOT NULL DEFAULT '';
ALTER TABLE campaigns DROP CONSTRAINT campaigns_status_check;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted', 'crashed'));
CREATE INDEX campaigns_running_idx ON campaigns (driver_host) WHERE status = 'running';
-- A run key is stored at most once as a result (succeeded or invalid) per campaign: a retried
-- or re-ingested run replaces its own row (same run_id) but can't add a second one.
-- Databases written before this rule may hold such duplicates: all but the first stored are
-- marked failed with a reason naming the run they duplicate (nothing is deleted).
UPDATE runs r SET status = 'failed',
       status_reason = 'duplicate result: run ' || d.first_id || ' of the same campaign already '
                       || 'holds this run key (stored twice by an earlier re-ingest)'
  FROM (SELECT run_id,
               first_value(run_id) OVER w AS first_id,
               row_number() OVER w AS n
          FROM runs WHERE status IN ('succeeded', 'invalid')
        WINDOW w AS (PARTITION BY campaign_id, run_key ORDER BY finished_at NULLS LAST, run_id)) d
 WHERE r.run_id = d.run_id AND d.n > 1;
CREATE UNIQUE INDEX runs_one_result_per_key_idx ON runs (campaign_id, run_key)
    WHERE status IN ('succeeded', 'invalid');
