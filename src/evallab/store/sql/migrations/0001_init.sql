-- evallab schema, version 1: campaigns, runs with full provenance, scores, per-sample outcomes,
-- canaries and GPU telemetry. Forward-only: never edit once applied; add a new file instead.

CREATE TABLE campaigns (
    campaign_id     uuid PRIMARY KEY,
    name            text NOT NULL,
    spec            jsonb NOT NULL,
    spec_sha256     text NOT NULL,
    spec_path       text NOT NULL,
    lab_version     text NOT NULL,
    lab_commit      text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted'))
);
CREATE INDEX campaigns_name_idx ON campaigns (name, started_at DESC);

CREATE TABLE runs (
    run_id              uuid PRIMARY KEY,
    campaign_id         uuid NOT NULL REFERENCES campaigns (campaign_id),
    -- identity: sha256 of the run's pins and config; equal keys mean "the same experiment"
    run_key             text NOT NULL,
    benchmark           text NOT NULL,
    -- model
    model_name          text NOT NULL,
    model_source        text NOT NULL,
    model_id            text NOT NULL,
    model_revision      text NOT NULL,
    model_sha256        text NOT NULL,
    pinned              boolean NOT NULL DEFAULT true,
    quant               text NOT NULL,
    weights_sha256      text NOT NULL DEFAULT '',
    -- runtime
    runtime             text NOT NULL,
    runtime_label       text NOT NULL,
    runtime_version     text NOT NULL,
    runtime_commit      text NOT NULL DEFAULT '',
    runtime_command     text NOT NULL DEFAULT '',
    -- harness and tasks
    harness             text NOT NULL,
    harness_version     text NOT NULL,
    harness_commit      text NOT NULL DEFAULT '',
    tasks               text[] NOT NULL,
    tasks_commit        text NOT NULL DEFAULT '',
    tasks_sha256        text NOT NULL DEFAULT '',
    dataset_revisions   jsonb NOT NULL DEFAULT '{}'::jsonb,
    task_hashes         jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- config
    seed                integer NOT NULL,
    num_fewshot         integer,
    sample_limit        integer,
    generation_config   jsonb NOT NULL,
    -- environment
    lab_version         text NOT NULL,
    lab_commit          text NOT NULL,
    env_fingerprint     text NOT NULL,
    python_version      text NOT NULL,
    torch_version       text NOT NULL DEFAULT '',
    hostname            text NOT NULL,
    gpu_name            text NOT NULL DEFAULT '',
    gpu_driver          text NOT NULL DEFAULT '',
    cuda_version        text NOT NULL DEFAULT '',
    -- outcome
    status              text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'invalid')),
    status_reason       text NOT NULL DEFAULT '',
    tags                text[] NOT NULL DEFAULT '{}',
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    duration_s          double precision,
    n_samples           integer NOT NULL DEFAULT 0,
    samples_per_min     double precision,
    raw_path            text NOT NULL DEFAULT '',
    raw_sha256          text NOT NULL DEFAULT '',
    results_path        text NOT NULL DEFAULT '',
    results_sha256      text NOT NULL DEFAULT ''
);
CREATE INDEX runs_campaign_idx ON runs (campaign_id);
CREATE INDEX runs_key_idx ON runs (run_key, status);
CREATE INDEX runs_model_idx ON runs (model_name, started_at DESC);

CREATE TABLE scores (
    run_id      uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    task        text NOT NULL,
    metric      text NOT NULL,
    filter      text NOT NULL,
    value       double precision NOT NULL,
    stderr      double precision,
    n           integer NOT NULL,
    higher_is_better boolean,
    PRIMARY KEY (run_id, task, metric, filter)
);
CREATE INDEX scores_task_metric_idx ON scores (task, metric);

-- Per-document outcomes, stored compactly: one row per (run, task, metric, filter) holding the
-- document ids and values as parallel arrays and the documents' hashes as one comma-separated
-- text (hashes are hex/ASCII and never hold a comma). A 100,000-document run is a handful of
-- rows, which makes ingest and paired comparisons an order of magnitude cheaper than one row per
-- document. The sample_outcomes view below gives the familiar one-row-per-document shape.
CREATE TABLE sample_outcome_sets (
    run_id      uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    task        text NOT NULL,
    metric      text NOT NULL,
    filter      text NOT NULL,
    doc_ids     integer[] NOT NULL,
    doc_hashes  text NOT NULL,
    "values"    double precision[] NOT NULL,
    PRIMARY KEY (run_id, task, metric, filter),
    CHECK (cardinality(doc_ids) = cardinality("values"))
);

CREATE VIEW sample_outcomes AS
SELECT s.run_id, s.task, u.doc_id, u.doc_hash, s.metric, s.filter, u.value
FROM sample_outcome_sets s,
     LATERAL unnest(s.doc_ids, string_to_array(s.doc_hashes, ','), s."values")
         AS u (doc_id, doc_hash, value);

CREATE TABLE canaries (
    run_id          uuid REFERENCES runs (run_id) ON DELETE CASCADE,
    campaign_id     uuid NOT NULL REFERENCES campaigns (campaign_id),
    combo_key       text NOT NULL,
    canary_version  text NOT NULL,
    prompt_id       text NOT NULL,
    output_hash     text NOT NULL,
    logprob_hash    text NOT NULL,
    is_baseline     boolean NOT NULL DEFAULT false,
    matches_baseline boolean,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX canaries_combo_idx ON canaries (combo_key, prompt_id, created_at DESC);

CREATE TABLE telemetry (
    run_id          uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    ts              timestamptz NOT NULL,
    gpu_index       integer NOT NULL,
    temperature_c   double precision,
    power_w         double precision,
    sm_clock_mhz    double precision,
    mem_clock_mhz   double precision,
    memory_used_mb  double precision,
    utilization_pct double precision,
    throttle_reasons text[] NOT NULL DEFAULT '{}',
    other_processes integer NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_run_idx ON telemetry (run_id, ts);
