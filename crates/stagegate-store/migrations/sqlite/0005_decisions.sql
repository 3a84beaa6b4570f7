-- Decisions on inconclusive watch steps (`stagegate decide`): one per deployment and step.
CREATE TABLE decisions (
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    step_id       TEXT    NOT NULL,
    pass          INTEGER NOT NULL,
    actor         TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    decided_at    INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, step_id)
);
