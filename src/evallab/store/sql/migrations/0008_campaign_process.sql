-- evallab schema, version 8: the driver process's start time, and a run's content identity.
-- A campaign row records when its driver process started, next to its host and pid: on the same
-- host, a pid that is gone, or now belongs to a process started at another time, means the
-- driver was killed, and the row is closed as 'crashed'.
-- A run row records the sha256 seal of the run folder it was ingested from, so ingesting a
-- folder with other content under the same run id is refused unless asked to replace it.
ALTER TABLE campaigns ADD COLUMN driver_started_at timestamptz;
ALTER TABLE runs ADD COLUMN content_sha256 text NOT NULL DEFAULT '';
