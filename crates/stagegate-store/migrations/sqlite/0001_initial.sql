-- stagegate state store, initial schema (SQLite).
-- All timestamps are INTEGER unix milliseconds (UTC).
-- JSON columns hold serialized serde_json values as TEXT.

-- One row per run of `deploy` or `rollback` against an environment.
CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,              -- 'deploy' | 'rollback'
    release_version TEXT    NOT NULL,
    release_sha     TEXT    NOT NULL,
    plan_hash       TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    pid             INTEGER NOT NULL,
    host            TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    outcome         TEXT    NOT NULL DEFAULT 'running',
    exit_code       INTEGER,
    summary         TEXT
);

CREATE INDEX deployments_by_environment ON deployments (environment, started_at DESC, id DESC);
CREATE INDEX deployments_by_outcome ON deployments (outcome, environment);

-- One row per executed step (forward run or rollback), ordered by seq.
CREATE TABLE step_runs (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    phase         TEXT    NOT NULL,                -- 'run' | 'rollback'
    stage         TEXT    NOT NULL,
    step_id       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    duration_ms   INTEGER,
    exit_code     INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    output_tail   TEXT    NOT NULL DEFAULT '',
    error         TEXT,
    outputs       TEXT    NOT NULL DEFAULT 'null', -- JSON
    details       TEXT    NOT NULL DEFAULT 'null', -- JSON
    PRIMARY KEY (deployment_id, seq)
);

-- Append-only event journal per deployment; seq is assigned by the store.
CREATE TABLE events (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    data          TEXT    NOT NULL,                -- JSON
    PRIMARY KEY (deployment_id, seq)
);

-- At most one lock per environment: the PRIMARY KEY makes acquisition atomic.
CREATE TABLE env_locks (
    environment   TEXT    PRIMARY KEY NOT NULL,
    deployment_id INTEGER REFERENCES deployments (id) ON DELETE SET NULL,
    holder        TEXT    NOT NULL,                -- 'user@host'
    pid           INTEGER NOT NULL,
    host          TEXT    NOT NULL,
    acquired_at   INTEGER NOT NULL
);
