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
