-- Good backups (written, checksummed and recorded by `evallab backup`), newest first.
CREATE OR REPLACE VIEW v_backups AS
SELECT b.created_at AS time,
       b.path,
       b.sha256,
       b.size_bytes,
       b.total_rows,
       b.server_version,
       b.pg_dump_version,
       b.duration_s
  FROM backups b;

-- How long the lab's results have gone without a good backup: hours since the last one or, when
-- there never was one, since the first run started (the data has been unprotected that long).
-- No row on a lab without runs or backups: nothing to protect yet.
CREATE OR REPLACE VIEW v_backup_age AS
SELECT s.last_backup_at AS time,
       s.last_backup_at,
       extract(epoch FROM now() - coalesce(s.last_backup_at, s.first_run_at)) / 3600.0
           AS hours_since_good_backup
  FROM (SELECT (SELECT max(created_at) FROM backups) AS last_backup_at,
               (SELECT min(started_at) FROM runs) AS first_run_at) s
 WHERE coalesce(s.last_backup_at, s.first_run_at) IS NOT NULL;
