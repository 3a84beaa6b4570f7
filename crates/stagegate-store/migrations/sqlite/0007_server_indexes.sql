-- Indexes for the server's views.
-- One deployment's audit trail without reading the whole log: its records, in chain order.
CREATE INDEX audit_log_by_deployment ON audit_log (deployment_id, seq);
-- The history of every environment, newest first, a page at a time (one environment's has
-- deployments_by_environment).
CREATE INDEX deployments_by_start ON deployments (started_at DESC, id DESC);
