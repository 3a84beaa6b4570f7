-- The runs of one step of one kind by status: the newest passing run of a step is the
-- baseline of `vs last_pass` load thresholds.
CREATE INDEX step_runs_by_step ON step_runs (step_id, kind, status);
