-- evallab schema, version 3: what the model-release watcher has seen on the Hugging Face hub.
-- The watcher (flows/watch_models.py, src/evallab/watch.py) polls watched repos and authors and
-- emits `hf.model.released` for each revision it has not seen before. The first poll of a watch
-- entry records the hub's current state as a baseline, so adding a watch does not start
-- campaigns for every old model of an author.

-- One row per watch entry ('repo:org/name' or 'author:org') that has been polled at least once.
CREATE TABLE model_watch_sources (
    source          text PRIMARY KEY,
    first_polled_at timestamptz NOT NULL DEFAULT now(),
    last_polled_at  timestamptz NOT NULL DEFAULT now()
);

-- Every (repo, commit) the watcher has seen; `released` is false for baseline rows.
CREATE TABLE model_revisions_seen (
    repo_id        text NOT NULL,
    revision       text NOT NULL CHECK (revision ~ '^[0-9a-f]{40}$'),
    last_modified  timestamptz,
    source         text NOT NULL,
    released       boolean NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, revision)
);
CREATE INDEX model_revisions_seen_released_idx ON model_revisions_seen (first_seen_at)
    WHERE released;
