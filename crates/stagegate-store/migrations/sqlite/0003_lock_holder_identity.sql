-- Who holds a lock, exactly: the holder's process start time (clock ticks since boot, from
-- /proc/PID/stat) and the boot id. A pid that now belongs to another process (the old one
-- died and the pid was reused) no longer looks like a live holder.
ALTER TABLE env_locks ADD COLUMN pid_started INTEGER;
ALTER TABLE env_locks ADD COLUMN boot_id TEXT;
