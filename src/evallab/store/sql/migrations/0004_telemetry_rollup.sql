-- evallab schema, version 4: GPU telemetry rollups, and an index for the flagged-runs view.
-- GPU telemetry rolled up per minute and per hour as it is written, so time-range panels over
-- months read thousands of rows instead of millions of 2-second samples. Only max/min are kept:
-- they are idempotent, so re-ingesting a run (which rewrites its samples) can't double count.
CREATE TABLE telemetry_1m (
    bucket            timestamptz NOT NULL,
    gpu_index         integer NOT NULL,
    max_temperature_c double precision,
    max_power_w       double precision,
    min_sm_clock_mhz  double precision,
    max_memory_used_mb double precision,
    PRIMARY KEY (bucket, gpu_index)
);
CREATE TABLE telemetry_1h (LIKE telemetry_1m INCLUDING ALL);

CREATE FUNCTION telemetry_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO telemetry_1m AS t
    SELECT date_bin('1 minute', ts, TIMESTAMPTZ '2000-01-01'), gpu_index, max(temperature_c),
           max(power_w), min(sm_clock_mhz), max(memory_used_mb)
      FROM new_rows GROUP BY 1, 2
    ON CONFLICT (bucket, gpu_index) DO UPDATE SET
        max_temperature_c = greatest(t.max_temperature_c, EXCLUDED.max_temperature_c),
        max_power_w = greatest(t.max_power_w, EXCLUDED.max_power_w),
        min_sm_clock_mhz = least(t.min_sm_clock_mhz, EXCLUDED.min_sm_clock_mhz),
        max_memory_used_mb = greatest(t.max_memory_used_mb, EXCLUDED.max_memory_used_mb);
    INSERT INTO telemetry_1h AS t
    SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01'), gpu_index, max(temperature_c),
           max(power_w), min(sm_clock_mhz), max(memory_used_mb)
      FROM new_rows GROUP BY 1, 2
    ON CONFLICT (bucket, gpu_index) DO UPDATE SET
        max_temperature_c = greatest(t.max_temperature_c, EXCLUDED.max_temperature_c),
        max_power_w = greatest(t.max_power_w, EXCLUDED.max_power_w),
        min_sm_clock_mhz = least(t.min_sm_clock_mhz, EXCLUDED.min_sm_clock_mhz),
        max_memory_used_mb = greatest(t.max_memory_used_mb, EXCLUDED.max_memory_used_mb);
    RETURN NULL;
END
$$;

CREATE TRIGGER telemetry_rollup AFTER INSERT ON telemetry
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry_rollup();

-- Few runs carry tags (non_reproducible, canary_drift, unpinned): v_flagged_runs reads only those.
CREATE INDEX IF NOT EXISTS runs_tagged_idx ON runs (started_at) WHERE tags <> '{}'::text[];
