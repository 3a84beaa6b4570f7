-- Approvals and rejections of pending requests (`stagegate approve`): a promotion or a
-- protected deployment waiting as `awaiting_approval`. Any number per deployment, oldest
-- first by id; each is bound to the plan hash and artifact digest its actor saw, and is
-- covered by an `approval` record of the audit log.
CREATE TABLE approvals (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    environment   TEXT    NOT NULL,
    verdict       TEXT    NOT NULL,                -- 'approved' or 'rejected'
    actor         TEXT    NOT NULL,
    role          TEXT,
    comment       TEXT    NOT NULL,
    plan_hash     TEXT    NOT NULL,
    artifact      TEXT    NOT NULL,
    at            INTEGER NOT NULL
);
CREATE INDEX approvals_by_deployment ON approvals (deployment_id, id);
