-- evallab schema, version 2: what the reproducibility and validity checks record.
-- Canary rows say which (model revision, quant, runtime, GPU) combination they belong to; the
-- outcome of the repro-window and regression checks is stored per run so dashboards and alerts
-- read precomputed rows instead of re-deriving statistics over years of history.

ALTER TABLE canaries
    ADD COLUMN model_name       text NOT NULL DEFAULT '',
    ADD COLUMN model_revision   text NOT NULL DEFAULT '',
    ADD COLUMN quant            text NOT NULL DEFAULT '',
    ADD COLUMN runtime_label    text NOT NULL DEFAULT '',
    ADD COLUMN runtime_version  text NOT NULL DEFAULT '',
    ADD COLUMN gpu_name         text NOT NULL DEFAULT '',
    ADD COLUMN logprob_decimals integer NOT NULL DEFAULT 3,
    ADD COLUMN n_tokens         integer NOT NULL DEFAULT 0,
    -- set by `evallab canary baseline --reset`: the row no longer serves as a baseline
    ADD COLUMN retired_at       timestamptz;
CREATE INDEX canaries_baseline_idx ON canaries (combo_key, canary_version, prompt_id)
    WHERE is_baseline AND retired_at IS NULL;

-- A run compared with the earliest valid run of the same run_key (same pins and fingerprint).
CREATE TABLE repro_violations (
    run_id           uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    reference_run_id uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    task             text NOT NULL,
    metric           text NOT NULL,
    filter           text NOT NULL,
    value            double precision NOT NULL,
    reference_value  double precision NOT NULL,
    rel_diff         double precision NOT NULL,
    tolerance        double precision NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, reference_run_id, task, metric, filter)
);
CREATE INDEX repro_violations_detected_idx ON repro_violations (detected_at);

-- Each score compared with the history of its (model, quant, runtime, task, metric, filter)
-- series over earlier valid runs.
CREATE TABLE score_checks (
    run_id        uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    task          text NOT NULL,
    metric        text NOT NULL,
    filter        text NOT NULL,
    value         double precision NOT NULL,
    history_n     integer NOT NULL,
    history_mean  double precision,
    history_sd    double precision,
    z             double precision,
    sigma         double precision NOT NULL,
    min_history   integer NOT NULL,
    is_regression boolean NOT NULL,
    checked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, task, metric, filter)
);
CREATE INDEX score_checks_regression_idx ON score_checks (checked_at) WHERE is_regression;

-- History lookups for one series, and time-range panels.
CREATE INDEX runs_series_idx ON runs (model_name, quant, runtime_label, started_at)
    WHERE status = 'succeeded';
CREATE INDEX runs_latest_idx ON runs (model_name, quant, runtime_label, benchmark, started_at DESC)
    WHERE status = 'succeeded';
CREATE INDEX runs_started_idx ON runs (started_at);
CREATE INDEX runs_invalid_idx ON runs (started_at) WHERE status = 'invalid';
CREATE INDEX telemetry_ts_idx ON telemetry (ts);
