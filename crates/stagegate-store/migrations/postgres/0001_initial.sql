-- stagegate state store, schema (PostgreSQL): the same tables and meanings as the SQLite
-- schema after its migrations 0001-0005, in one step (this backend has no older stores).
-- All timestamps are BIGINT unix milliseconds (UTC). JSON columns hold serialized
-- serde_json values as TEXT, exactly as written, as in SQLite (the audit chain hashes text).

-- One row per run of `deploy` or `rollback` against an environment. Ids come from the
-- sequence and are never reused (a sequence never goes back).
CREATE TABLE deployments (
    id              BIGSERIAL PRIMARY KEY,
    project         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,              -- 'deploy' | 'rollback'
    release_version TEXT    NOT NULL,
    release_sha     TEXT    NOT NULL,
    plan_hash       TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    pid             BIGINT  NOT NULL,
    host            TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    outcome         TEXT    NOT NULL DEFAULT 'running',
    exit_code       INTEGER,
    summary         TEXT
);

CREATE INDEX deployments_by_environment ON deployments (environment, started_at DESC, id DESC);
CREATE INDEX deployments_by_outcome ON deployments (outcome, environment);

-- One row per executed step (forward run or rollback), ordered by seq.
CREATE TABLE step_runs (
    deployment_id BIGINT  NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           BIGINT  NOT NULL,
    phase         TEXT    NOT NULL,                -- 'run' | 'rollback'
    stage         TEXT    NOT NULL,
    step_id       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    started_at    BIGINT  NOT NULL,
    finished_at   BIGINT,
    duration_ms   BIGINT,
    exit_code     INTEGER,
    attempts      BIGINT  NOT NULL DEFAULT 0,
    output_tail   TEXT    NOT NULL DEFAULT '',
    error         TEXT,
    outputs       TEXT    NOT NULL DEFAULT 'null', -- JSON
    details       TEXT    NOT NULL DEFAULT 'null', -- JSON
    PRIMARY KEY (deployment_id, seq)
);

-- The runs of one step of one kind by status: the newest passing run of a step is the
-- baseline of `vs last_pass` load thresholds.
CREATE INDEX step_runs_by_step ON step_runs (step_id, kind, status);

-- Append-only event journal per deployment; seq is assigned by the store.
CREATE TABLE events (
    deployment_id BIGINT  NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           BIGINT  NOT NULL,
    at            BIGINT  NOT NULL,
    kind          TEXT    NOT NULL,
    data          TEXT    NOT NULL,                -- JSON
    PRIMARY KEY (deployment_id, seq)
);

-- At most one lock per environment: the PRIMARY KEY makes acquisition atomic across every
-- process on every machine that uses this database (INSERT ... ON CONFLICT DO NOTHING).
-- The holder is named exactly: pid, host, the process's start time (clock ticks since
-- boot) and the boot id, so a pid reused by another process does not look like the holder.
-- There is no lease: a lock is held until its holder releases it or `stagegate unlock`
-- breaks it (see docs/store.md).
CREATE TABLE env_locks (
    environment   TEXT    PRIMARY KEY NOT NULL,
    deployment_id BIGINT  REFERENCES deployments (id) ON DELETE SET NULL,
    holder        TEXT    NOT NULL,                -- 'user@host'
    pid           BIGINT  NOT NULL,
    host          TEXT    NOT NULL,
    acquired_at   BIGINT  NOT NULL,
    pid_started   BIGINT,
    boot_id       TEXT
);

-- The audit log: a hash chain over deployments, steps and lock breaks (see src/audit.rs).
-- Each record is written in the transaction of the row it covers, which first locks this
-- table against other writers, so two writers never read the same head. No foreign keys:
-- deleting a deployment must leave its records behind, for `stagegate audit verify`.
CREATE TABLE audit_log (
    seq           BIGINT  PRIMARY KEY,
    at            BIGINT  NOT NULL,
    kind          TEXT    NOT NULL,
    deployment_id BIGINT,
    data          TEXT    NOT NULL,                -- JSON, exactly as hashed
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);

-- Decisions on inconclusive watch steps (`stagegate decide`): one per deployment and step.
CREATE TABLE decisions (
    deployment_id BIGINT  NOT NULL REFERENCES deployments (id),
    step_id       TEXT    NOT NULL,
    pass          BOOLEAN NOT NULL,
    actor         TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    decided_at    BIGINT  NOT NULL,
    PRIMARY KEY (deployment_id, step_id)
);
