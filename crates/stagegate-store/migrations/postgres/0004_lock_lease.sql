-- The lock's holding, exactly, and its lease. `token` is a random value the taker chooses:
-- renewing, attaching a deployment and releasing go by it, not by the pid (which another
-- machine's process may share). `lease_until` (Unix milliseconds) is pushed `lease_ms` ahead
-- by the holder every third of the lease; a lease long run out says the holder is gone.
-- The times are PostgreSQL's own clock, so that hosts with skewed clocks agree.
-- Locks taken by older versions have neither, and never expire.
ALTER TABLE env_locks ADD COLUMN token TEXT;
ALTER TABLE env_locks ADD COLUMN lease_ms BIGINT;
ALTER TABLE env_locks ADD COLUMN lease_until BIGINT;
