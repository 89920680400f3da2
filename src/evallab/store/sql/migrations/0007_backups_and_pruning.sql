-- evallab schema, version 7: database backups, and raw run outputs pruned or compressed by gc.
-- `evallab backup` records every archive it wrote and verified here, so Grafana can alert when the
-- last good backup is older than a day. `evallab gc` deletes or compresses run folders under the
-- runs folder; the run's row keeps its scores and says what happened to its raw outputs.
CREATE TABLE backups (
    backup_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at       timestamptz NOT NULL,
    path             text NOT NULL,
    sha256           text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes       bigint NOT NULL CHECK (size_bytes > 0),
    total_rows       bigint NOT NULL,
    table_rows       jsonb NOT NULL,
    server_version   text NOT NULL,
    pg_dump_version  text NOT NULL,
    duration_s       double precision NOT NULL
);
CREATE INDEX backups_created_idx ON backups (created_at DESC);

ALTER TABLE runs
    ADD COLUMN pruned_at         timestamptz,
    ADD COLUMN pruned_reason     text NOT NULL DEFAULT '',
    ADD COLUMN compressed_at     timestamptz;
