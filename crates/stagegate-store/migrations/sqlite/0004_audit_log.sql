-- The audit log: a hash chain over deployments, steps and lock breaks (see src/audit.rs).
-- Each record is written in the transaction of the row it covers; `hash` is SHA-256 over
-- `prev_hash` and the record's fields. No foreign keys: deleting a deployment must leave
-- its records behind, for `stagegate audit verify` to notice.
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    deployment_id INTEGER,
    data          TEXT    NOT NULL,                -- JSON, exactly as hashed
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);
