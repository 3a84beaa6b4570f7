//! SQLite backend: every SQL statement of the store lives here.
//!
//! Schema migrations are embedded from `migrations/sqlite/` at compile time
//! (see [`MIGRATIONS`]).

use std::borrow::Cow;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Connection, Row, Sqlite};

use crate::audit::{self, AuditKind, AuditRecord, LockBreak};
use crate::{
    ApprovalRecord, DecisionRecord, Deployment, EventRecord, LockAttempt, LockInfo, NewDeployment,
    OUTCOME_ABANDONED, OUTCOME_RUNNING, Outcome, StepRun, StepState, StoreError,
};

/// Embedded schema migrations as `(version, description, sql)`, in order.
///
/// `sqlx::migrate!` would do this, but it lives behind sqlx's `macros`
/// feature, which this workspace deliberately leaves off. Each entry mirrors
/// one file `migrations/sqlite/<version>_<description>.sql`; a unit test
/// checks the list and the folder agree. Checksums are computed the same way
/// as `sqlx::migrate!` does, so switching to the macro later is transparent.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "step runs by step",
        include_str!("../migrations/sqlite/0002_step_runs_by_step.sql"),
    ),
    (
        3,
        "lock holder identity",
        include_str!("../migrations/sqlite/0003_lock_holder_identity.sql"),
    ),
    (
        4,
        "audit log",
        include_str!("../migrations/sqlite/0004_audit_log.sql"),
    ),
    (
        5,
        "decisions",
        include_str!("../migrations/sqlite/0005_decisions.sql"),
    ),
    (
        6,
        "approvals",
        include_str!("../migrations/sqlite/0006_approvals.sql"),
    ),
    (
        7,
        "server indexes",
        include_str!("../migrations/sqlite/0007_server_indexes.sql"),
    ),
    (
        8,
        "lock lease",
        include_str!("../migrations/sqlite/0008_lock_lease.sql"),
    ),
];

/// Now, in Unix milliseconds, by SQLite's clock (the one machine the file is on).
macro_rules! now_ms {
    () => {
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
    };
}
const NOW_MS: &str = now_ms!();

const LOCK_COLUMNS: &str = lock_columns!(now_ms!());

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(MIGRATIONS));

fn migrator(migrations: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: u32 = 4;

#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

/// Commits `$tx`; when that fails (a full disk), closes `$conn` instead of handing it back
/// to the pool: a connection whose COMMIT failed can be left inside the transaction, and
/// every later BEGIN on it would fail, so a retry after space frees up would too.
macro_rules! commit {
    ($tx:ident, $conn:ident, $action:expr) => {{
        let r = $tx.commit().await;
        if r.is_err() {
            let _ = $conn.detach().close().await;
        }
        r.map_err(StoreError::query($action))
    }};
}

/// `SELECT <all deployment columns> FROM deployments` followed by `$tail`,
/// as one `&'static str`.
macro_rules! select_deployments {
    ($tail:literal) => {
        concat!(
            "SELECT id, project, environment, kind, release_version, release_sha, plan_hash, \
             actor, pid, host, started_at, finished_at, outcome, exit_code, summary \
             FROM deployments ",
            $tail
        )
    };
}

/// `SELECT <all step_runs columns> FROM step_runs s` followed by `$tail`, as one
/// `&'static str`.
macro_rules! select_steps {
    ($tail:literal) => {
        concat!(
            "SELECT s.deployment_id, s.seq, s.phase, s.stage, s.step_id, s.name, s.kind, \
             s.status, s.started_at, s.finished_at, s.duration_ms, s.exit_code, s.attempts, \
             s.output_tail, s.error, s.outputs, s.details \
             FROM step_runs s ",
            $tail
        )
    };
}

/// `SELECT <all approvals columns> FROM approvals` followed by `$tail`.
macro_rules! select_approvals {
    ($tail:literal) => {
        concat!(
            "SELECT id, deployment_id, environment, verdict, actor, role, comment, plan_hash, \
             artifact, at FROM approvals ",
            $tail
        )
    };
}

/// The newest passing run of a step in a project's environment (see `last_passed_step`).
const LAST_PASSED_STEP: &str = select_steps!(
    "JOIN deployments d ON d.id = s.deployment_id \
     WHERE d.project = ?1 AND d.environment = ?2 AND s.step_id = ?3 AND s.kind = ?4 \
     AND s.phase = 'run' AND s.status = 'passed' \
     ORDER BY s.started_at DESC, s.deployment_id DESC LIMIT 1"
);

impl SqliteStore {
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            // Private: the store, the step logs and the releases' records live here.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::CreateDir {
                    path: path.to_path_buf(),
                    dir: dir.to_path_buf(),
                    source,
                })?;
        }
        // The state file is private: created 0600 before SQLite opens it (its -wal and -shm
        // files take the same mode), and an older, wider one narrowed.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path);
        if let Ok(f) = file
            && let Ok(meta) = f.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
        }

        // Switching a fresh file to WAL needs an exclusive lock that SQLite's
        // busy timeout does not wait for, so two processes opening a new file
        // at once can get SQLITE_BUSY here. Retry for up to the busy timeout.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            match Self::connect_and_migrate(path).await {
                Err(e) if is_busy(&e) && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    async fn connect_and_migrate(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL keeps the database consistent after a crash and saves an fsync
            // per event; the last events before a power cut may be lost, never corrupted.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // A long bake appends a round a second: checkpoint the WAL every 250 pages (about
            // 1 MB) and cut it back to 1 MB after, so the WAL never holds the disk space a
            // default 1,000-page WAL would keep (4 MB beside a 2.5 MB database).
            .pragma("wal_autocheckpoint", "250")
            .pragma("journal_size_limit", "1048576")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;

        if let Err(e) = migrate(&pool, path).await {
            pool.close().await;
            return Err(e);
        }
        Ok(SqliteStore { pool })
    }

    pub(crate) async fn close(self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_deployment(
        &self,
        d: &NewDeployment,
        id_floor: i64,
    ) -> Result<i64, StoreError> {
        let mut conn = self.acquire("starting a deployment record").await?;
        let mut tx = begin_write(&mut conn, "starting a deployment record").await?;
        // Ids are never reused: AUTOINCREMENT never hands out an id twice, and the floor
        // (the highest id that left files behind, such as step logs) keeps a fresh store
        // from handing out one that files of an older store already use.
        if id_floor > 0 {
            sqlx::query(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'deployments', ?1 \
                 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'deployments')",
            )
            .bind(id_floor)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("starting a deployment record"))?;
            sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, ?1) WHERE name = 'deployments'")
                .bind(id_floor)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("starting a deployment record"))?;
        }
        let done = sqlx::query(
            "INSERT INTO deployments (project, environment, kind, release_version, release_sha, \
             plan_hash, actor, pid, host, started_at, outcome) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.project)
        .bind(&d.environment)
        .bind(&d.kind)
        .bind(&d.release_version)
        .bind(&d.release_sha)
        .bind(&d.plan_hash)
        .bind(&d.actor)
        .bind(i64::from(d.pid))
        .bind(&d.host)
        .bind(d.started_at)
        .bind(OUTCOME_RUNNING.as_str())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("starting a deployment record"))?;
        let id = done.last_insert_rowid();
        append_audit(
            &mut tx,
            AuditKind::DeploymentBegun,
            Some(id),
            &audit::begun_data(id, d),
            d.started_at,
        )
        .await?;
        commit!(tx, conn, "starting a deployment record")?;
        Ok(id)
    }

    pub(crate) async fn finish_deployment(
        &self,
        id: i64,
        outcome: Outcome,
        exit_code: i32,
        summary: &str,
        finished_at: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.acquire("finishing a deployment record").await?;
        let mut tx = begin_write(&mut conn, "finishing a deployment record").await?;
        let done = sqlx::query(
            "UPDATE deployments SET outcome = ?, exit_code = ?, summary = ?, finished_at = ? \
             WHERE id = ?",
        )
        .bind(outcome.as_str())
        .bind(exit_code)
        .bind(summary)
        .bind(finished_at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("finishing a deployment record"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::DeploymentNotFound { id });
        }
        let data = audit::finished_data(
            id,
            outcome.as_str(),
            Some(exit_code),
            Some(summary),
            Some(finished_at),
        );
        append_audit(
            &mut tx,
            AuditKind::DeploymentFinished,
            Some(id),
            &data,
            finished_at,
        )
        .await?;
        commit!(tx, conn, "finishing a deployment record")
    }

    pub(crate) async fn record_event(
        &self,
        deployment_id: i64,
        kind: &str,
        data: &serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError> {
        let data = encode_json("events.data", data)?;
        // One statement: SQLite takes the write lock before the SELECT runs,
        // so concurrent writers cannot pick the same seq.
        sqlx::query(
            "INSERT INTO events (deployment_id, seq, at, kind, data) \
             SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM events WHERE deployment_id = ?1",
        )
        .bind(deployment_id)
        .bind(at)
        .bind(kind)
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("recording an event"))?;
        Ok(())
    }

    pub(crate) async fn upsert_step(&self, step: &StepRun) -> Result<(), StoreError> {
        let outputs = encode_json("step_runs.outputs", &step.outputs)?;
        let details = encode_json("step_runs.details", &step.details)?;
        let mut conn = self.acquire("recording a step").await?;
        let mut tx = begin_write(&mut conn, "recording a step").await?;
        sqlx::query(
            "INSERT INTO step_runs (deployment_id, seq, phase, stage, step_id, name, kind, status, \
             started_at, finished_at, duration_ms, exit_code, attempts, output_tail, error, \
             outputs, details) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (deployment_id, seq) DO UPDATE SET \
             phase = excluded.phase, stage = excluded.stage, step_id = excluded.step_id, \
             name = excluded.name, kind = excluded.kind, status = excluded.status, \
             started_at = excluded.started_at, finished_at = excluded.finished_at, \
             duration_ms = excluded.duration_ms, exit_code = excluded.exit_code, \
             attempts = excluded.attempts, output_tail = excluded.output_tail, \
             error = excluded.error, outputs = excluded.outputs, details = excluded.details",
        )
        .bind(step.deployment_id)
        .bind(step.seq)
        .bind(step.phase.as_str())
        .bind(&step.stage)
        .bind(&step.step_id)
        .bind(&step.name)
        .bind(&step.kind)
        .bind(step.status.as_str())
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(step.duration_ms)
        .bind(step.exit_code)
        .bind(step.attempts)
        .bind(&step.output_tail)
        .bind(&step.error)
        .bind(outputs)
        .bind(details)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("recording a step"))?;
        // A running step is not final: its finished row is what the chain covers.
        if step.status != StepState::Running {
            let at = step.finished_at.unwrap_or(step.started_at);
            append_audit(
                &mut tx,
                AuditKind::StepFinished,
                Some(step.deployment_id),
                &audit::step_data(step),
                at,
            )
            .await?;
        }
        commit!(tx, conn, "recording a step")
    }

    pub(crate) async fn deployments(
        &self,
        environment: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        const SQL: &str = select_deployments!(
            "WHERE (?1 IS NULL OR environment = ?1) \
             ORDER BY started_at DESC, id DESC LIMIT ?2 OFFSET ?3"
        );
        let rows = sqlx::query(SQL)
            .bind(environment)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("listing deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }

    pub(crate) async fn deployment(&self, id: i64) -> Result<Option<Deployment>, StoreError> {
        const SQL: &str = select_deployments!("WHERE id = ?");
        let row = sqlx::query(SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("reading a deployment"))?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    pub(crate) async fn steps(&self, deployment_id: i64) -> Result<Vec<StepRun>, StoreError> {
        const SQL: &str = select_steps!("WHERE s.deployment_id = ? ORDER BY s.seq");
        let rows = sqlx::query(SQL)
            .bind(deployment_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("reading steps"))?;
        rows.iter().map(step_from_row).collect()
    }

    pub(crate) async fn deployment_totals(
        &self,
    ) -> Result<Vec<crate::DeploymentTotals>, StoreError> {
        let rows = sqlx::query(crate::DEPLOYMENT_TOTALS_SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("counting deployments"))?;
        rows.iter()
            .map(crate::deployment_totals_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::query("counting deployments"))
    }

    pub(crate) async fn step_durations(&self) -> Result<Vec<crate::StepDurations>, StoreError> {
        let rows = sqlx::query(crate::STEP_DURATIONS_SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("counting step durations"))?;
        rows.iter()
            .map(crate::step_durations_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::query("counting step durations"))
    }

    pub(crate) async fn last_passed_step(
        &self,
        project: &str,
        environment: &str,
        step_id: &str,
        kind: &str,
    ) -> Result<Option<StepRun>, StoreError> {
        let row = sqlx::query(LAST_PASSED_STEP)
            .bind(project)
            .bind(environment)
            .bind(step_id)
            .bind(kind)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("reading the last passing run of a step"))?;
        row.as_ref().map(step_from_row).transpose()
    }

    pub(crate) async fn events(&self, deployment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT deployment_id, seq, at, kind, data FROM events \
             WHERE deployment_id = ? ORDER BY seq",
        )
        .bind(deployment_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("reading events"))?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    deployment_id: get(row, "deployment_id")?,
                    seq: get(row, "seq")?,
                    at: get(row, "at")?,
                    kind: get(row, "kind")?,
                    data: decode_json("events.data", &get::<String>(row, "data")?)?,
                })
            })
            .collect()
    }

    pub(crate) async fn unfinished(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<Deployment>, StoreError> {
        const SQL: &str = select_deployments!(
            "WHERE outcome = ?1 AND (?2 IS NULL OR environment = ?2) \
             ORDER BY started_at, id"
        );
        let rows = sqlx::query(SQL)
            .bind(OUTCOME_RUNNING.as_str())
            .bind(environment)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("listing unfinished deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }

    pub(crate) async fn mark_abandoned(
        &self,
        id: i64,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.acquire("marking a deployment abandoned").await?;
        let mut tx = begin_write(&mut conn, "marking a deployment abandoned").await?;
        let done = sqlx::query(
            "UPDATE deployments SET outcome = ?1, summary = ?2, finished_at = ?3 \
             WHERE id = ?4 AND outcome = ?5 RETURNING exit_code",
        )
        .bind(OUTCOME_ABANDONED.as_str())
        .bind(reason)
        .bind(at)
        .bind(id)
        .bind(OUTCOME_RUNNING.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query("marking a deployment abandoned"))?;
        if let Some(row) = done {
            let exit_code: Option<i32> = get(&row, "exit_code")?;
            let data = audit::finished_data(
                id,
                OUTCOME_ABANDONED.as_str(),
                exit_code,
                Some(reason),
                Some(at),
            );
            append_audit(&mut tx, AuditKind::DeploymentFinished, Some(id), &data, at).await?;
        }
        commit!(tx, conn, "marking a deployment abandoned")
    }

    pub(crate) async fn last_deployment(
        &self,
        environment: &str,
        outcome: Option<Outcome>,
    ) -> Result<Option<Deployment>, StoreError> {
        const SQL: &str = select_deployments!(
            "WHERE environment = ?1 AND (?2 IS NULL OR outcome = ?2) \
             ORDER BY started_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(SQL)
            .bind(environment)
            .bind(outcome.map(Outcome::as_str))
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("reading the last deployment"))?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    pub(crate) async fn try_lock(
        &self,
        environment: &str,
        holder: &LockInfo,
    ) -> Result<LockAttempt, StoreError> {
        // The lock can be released between our failed INSERT and the read
        // back; then simply try again (bounded, in case of heavy churn).
        for _ in 0..5 {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO env_locks (environment, deployment_id, holder, pid, host, acquired_at, \
                 pid_started, boot_id, token, lease_ms, lease_until) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW_MS} + ?) \
                 ON CONFLICT (environment) DO NOTHING"
            )))
            .bind(environment)
            .bind(holder.deployment_id)
            .bind(&holder.holder)
            .bind(i64::from(holder.pid))
            .bind(&holder.host)
            .bind(holder.acquired_at)
            .bind(holder.pid_started.map(|t| t as i64))
            .bind(&holder.boot_id)
            .bind(&holder.token)
            .bind(holder.lease_ms)
            .bind(holder.lease_ms)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("taking the environment lock"))?;
            if done.rows_affected() == 1 {
                return Ok(LockAttempt::Acquired);
            }
            if let Some(current) = self.lock_info(environment).await? {
                return Ok(LockAttempt::Held(current));
            }
        }
        Err(StoreError::LockContended {
            environment: environment.to_owned(),
        })
    }

    pub(crate) async fn set_lock_deployment(
        &self,
        environment: &str,
        token: &str,
        deployment_id: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE env_locks SET deployment_id = ? WHERE environment = ? AND token = ?",
        )
        .bind(deployment_id)
        .bind(environment)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("attaching a deployment to the lock"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LockNotHeld {
                environment: environment.to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) async fn renew_lock(
        &self,
        environment: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE env_locks SET lease_until = {NOW_MS} + lease_ms \
             WHERE environment = ? AND token = ? AND lease_ms IS NOT NULL"
        )))
        .bind(environment)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("renewing the environment lock"))?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn release_lock(
        &self,
        environment: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM env_locks WHERE environment = ? AND token = ?")
            .bind(environment)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("releasing the environment lock"))?;
        Ok(())
    }

    pub(crate) async fn lock_info(
        &self,
        environment: &str,
    ) -> Result<Option<LockInfo>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LOCK_COLUMNS} FROM env_locks WHERE environment = ?"
        )))
        .bind(environment)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("reading the environment lock"))?;
        row.as_ref().map(lock_from_row).transpose()
    }

    pub(crate) async fn break_lock(
        &self,
        environment: &str,
        note: &LockBreak,
    ) -> Result<Option<LockInfo>, StoreError> {
        let mut conn = self.acquire("breaking the environment lock").await?;
        let mut tx = begin_write(&mut conn, "breaking the environment lock").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM env_locks WHERE environment = ? RETURNING {LOCK_COLUMNS}"
        )))
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query("breaking the environment lock"))?;
        let lock = row.as_ref().map(lock_from_row).transpose()?;
        if let Some(l) = &lock {
            let data = serde_json::json!({
                "environment": l.environment,
                "holder": l.holder,
                "pid": l.pid,
                "host": l.host,
                "acquired_at": l.acquired_at,
                "deployment_id": l.deployment_id,
                "by": note.by,
                "reason": note.reason,
                "forced": note.forced,
            });
            append_audit(
                &mut tx,
                AuditKind::LockBroken,
                l.deployment_id,
                &data,
                note.at,
            )
            .await?;
        }
        commit!(tx, conn, "breaking the environment lock")?;
        Ok(lock)
    }

    pub(crate) async fn record_decision(&self, d: &DecisionRecord) -> Result<bool, StoreError> {
        let mut conn = self.acquire("recording a decision").await?;
        let mut tx = begin_write(&mut conn, "recording a decision").await?;
        let done = sqlx::query(
            "INSERT INTO decisions (deployment_id, step_id, pass, actor, reason, decided_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (deployment_id, step_id) DO NOTHING",
        )
        .bind(d.deployment_id)
        .bind(&d.step_id)
        .bind(d.pass)
        .bind(&d.actor)
        .bind(&d.reason)
        .bind(d.decided_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("recording a decision"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let data = serde_json::json!({
            "deployment_id": d.deployment_id,
            "step_id": d.step_id,
            "pass": d.pass,
            "actor": d.actor,
            "reason": d.reason,
        });
        append_audit(
            &mut tx,
            AuditKind::Decision,
            Some(d.deployment_id),
            &data,
            d.decided_at,
        )
        .await?;
        commit!(tx, conn, "recording a decision")?;
        Ok(true)
    }

    pub(crate) async fn decision(
        &self,
        deployment_id: i64,
        step_id: Option<&str>,
    ) -> Result<Option<DecisionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT deployment_id, step_id, pass, actor, reason, decided_at FROM decisions \
             WHERE deployment_id = ? AND (? IS NULL OR step_id = ?) ORDER BY decided_at LIMIT 1",
        )
        .bind(deployment_id)
        .bind(step_id)
        .bind(step_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("reading a decision"))?;
        row.map(|r| {
            Ok(DecisionRecord {
                deployment_id: get(&r, "deployment_id")?,
                step_id: get(&r, "step_id")?,
                pass: get(&r, "pass")?,
                actor: get(&r, "actor")?,
                reason: get(&r, "reason")?,
                decided_at: get(&r, "decided_at")?,
            })
        })
        .transpose()
    }

    pub(crate) async fn record_approval(&self, a: &ApprovalRecord) -> Result<i64, StoreError> {
        const ACTION: &str = "recording an approval";
        let mut conn = self.acquire(ACTION).await?;
        let mut tx = begin_write(&mut conn, ACTION).await?;
        let exists = sqlx::query("SELECT 1 FROM deployments WHERE id = ?")
            .bind(a.deployment_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(ACTION))?
            .is_some();
        if !exists {
            return Err(StoreError::DeploymentNotFound {
                id: a.deployment_id,
            });
        }
        let row = sqlx::query(
            "INSERT INTO approvals (deployment_id, environment, verdict, actor, role, comment, \
             plan_hash, artifact, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(a.deployment_id)
        .bind(&a.environment)
        .bind(a.verdict.as_str())
        .bind(&a.actor)
        .bind(&a.role)
        .bind(&a.comment)
        .bind(&a.plan_hash)
        .bind(&a.artifact)
        .bind(a.at)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
        let id: i64 = get(&row, "id")?;
        let stored = ApprovalRecord { id, ..a.clone() };
        append_audit(
            &mut tx,
            AuditKind::Approval,
            Some(a.deployment_id),
            &audit::approval_data(&stored),
            a.at,
        )
        .await?;
        commit!(tx, conn, ACTION)?;
        Ok(id)
    }

    pub(crate) async fn approvals(
        &self,
        deployment_id: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        const SQL: &str = select_approvals!("WHERE deployment_id = ? ORDER BY id");
        let rows = sqlx::query(SQL)
            .bind(deployment_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("reading approvals"))?;
        rows.iter().map(approval_from_row).collect()
    }

    pub(crate) async fn all_approvals(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        const SQL: &str = select_approvals!("ORDER BY id");
        let rows = sqlx::query(SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("reading approvals"))?;
        rows.iter().map(approval_from_row).collect()
    }

    pub(crate) async fn record_audit_note(
        &self,
        kind: AuditKind,
        deployment_id: Option<i64>,
        data: &serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError> {
        const ACTION: &str = "appending to the audit log";
        let mut conn = self.acquire(ACTION).await?;
        let mut tx = begin_write(&mut conn, ACTION).await?;
        append_audit(&mut tx, kind, deployment_id, data, at).await?;
        commit!(tx, conn, ACTION)
    }

    /// A connection of its own for a write transaction (see [`commit!`]).
    async fn acquire(&self, action: &'static str) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.pool.acquire().await.map_err(StoreError::query(action))
    }

    pub(crate) async fn audit_log(
        &self,
        deployment: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, deployment_id, data, prev_hash, hash FROM audit_log \
             WHERE (?1 IS NULL OR deployment_id = ?1) ORDER BY seq",
        )
        .bind(deployment)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("reading the audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: get(r, "seq")?,
                    at: get(r, "at")?,
                    kind: get(r, "kind")?,
                    deployment_id: get(r, "deployment_id")?,
                    data: get(r, "data")?,
                    prev_hash: get(r, "prev_hash")?,
                    hash: get(r, "hash")?,
                })
            })
            .collect()
    }

    pub(crate) async fn all_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        const SQL: &str = select_deployments!("ORDER BY id");
        let rows = sqlx::query(SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("listing deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }

    pub(crate) async fn all_decisions(&self) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT deployment_id, step_id, pass, actor, reason, decided_at FROM decisions \
             ORDER BY deployment_id, step_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("reading decisions"))?;
        rows.iter()
            .map(|r| {
                Ok(DecisionRecord {
                    deployment_id: get(r, "deployment_id")?,
                    step_id: get(r, "step_id")?,
                    pass: get(r, "pass")?,
                    actor: get(r, "actor")?,
                    reason: get(r, "reason")?,
                    decided_at: get(r, "decided_at")?,
                })
            })
            .collect()
    }

    pub(crate) async fn all_steps(&self) -> Result<Vec<StepRun>, StoreError> {
        const SQL: &str = select_steps!("ORDER BY s.deployment_id, s.seq");
        let rows = sqlx::query(SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("reading steps"))?;
        rows.iter().map(step_from_row).collect()
    }
}

/// Appends one record to the chain, inside the caller's write transaction.
async fn append_audit(
    conn: &mut sqlx::SqliteConnection,
    kind: AuditKind,
    deployment_id: Option<i64>,
    data: &serde_json::Value,
    at: i64,
) -> Result<(), StoreError> {
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::query("appending to the audit log"))?;
    let (seq, prev) = match head {
        Some(r) => (get::<i64>(&r, "seq")? + 1, get::<String>(&r, "hash")?),
        None => (1, audit::GENESIS.to_string()),
    };
    let data = encode_json("audit_log.data", data)?;
    let hash = audit::link_hash(&prev, seq, at, kind.as_str(), deployment_id, &data);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, deployment_id, data, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(at)
    .bind(kind.as_str())
    .bind(deployment_id)
    .bind(data)
    .bind(prev)
    .bind(hash)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query("appending to the audit log"))?;
    Ok(())
}

/// A transaction for a write and the audit record that covers it.
async fn begin_write<'c>(
    conn: &'c mut PoolConnection<Sqlite>,
    action: &'static str,
) -> Result<sqlx::Transaction<'c, Sqlite>, StoreError> {
    // IMMEDIATE: the write lock is taken at once, so the chain's head read inside cannot be
    // overtaken by another writer between the read and the append.
    conn.begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::query(action))
}

/// Applies pending migrations inside one `BEGIN IMMEDIATE` transaction, so
/// two processes opening a fresh file at once cannot both apply them: the
/// second waits (busy timeout), then sees them applied.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let to_err = |source: sqlx::migrate::MigrateError| StoreError::Migrate {
        path: PathBuf::from(path),
        source,
    };
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    MIGRATOR.run(&mut *tx).await.map_err(to_err)?;
    // The chain starts with a record of how many deployments came before it (a store made
    // by an older stagegate): those are not covered.
    let empty = sqlx::query("SELECT 1 FROM audit_log LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query("starting the audit log"))?
        .is_none();
    if empty {
        let before: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) AS n FROM deployments")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::query("starting the audit log"))
            .and_then(|r| get(&r, "n"))?;
        let data = serde_json::json!({ "deployments_before": before });
        append_audit(
            &mut tx,
            AuditKind::Started,
            None,
            &data,
            crate::now_millis(),
        )
        .await?;
    }
    tx.commit().await.map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether opening failed only because another connection briefly held a
/// lock (SQLITE_BUSY or SQLITE_LOCKED, including extended codes).
fn is_busy(err: &StoreError) -> bool {
    let source = match err {
        StoreError::Open { source, .. } => source,
        StoreError::Migrate {
            source:
                sqlx::migrate::MigrateError::Execute(source)
                | sqlx::migrate::MigrateError::ExecuteMigration(source, _),
            ..
        } => source,
        _ => return false,
    };
    match source {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    }
}

fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|e| StoreError::Corrupt {
        what: column,
        detail: e.to_string(),
    })
}

/// A status column, read into its type.
fn word<T: std::str::FromStr<Err = crate::UnknownWord>>(
    row: &SqliteRow,
    column: &'static str,
) -> Result<T, StoreError> {
    get::<String>(row, column)?
        .parse()
        .map_err(|e: crate::UnknownWord| StoreError::Corrupt {
            what: column,
            detail: e.to_string(),
        })
}

fn get_pid(row: &SqliteRow) -> Result<u32, StoreError> {
    let raw: i64 = get(row, "pid")?;
    u32::try_from(raw).map_err(|_| StoreError::Corrupt {
        what: "pid",
        detail: format!("{raw} is not a valid process id"),
    })
}

fn encode_json(what: &'static str, value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Encode {
        what,
        detail: e.to_string(),
    })
}

fn decode_json(what: &'static str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn deployment_from_row(row: &SqliteRow) -> Result<Deployment, StoreError> {
    Ok(Deployment {
        id: get(row, "id")?,
        project: get(row, "project")?,
        environment: get(row, "environment")?,
        kind: get(row, "kind")?,
        release_version: get(row, "release_version")?,
        release_sha: get(row, "release_sha")?,
        plan_hash: get(row, "plan_hash")?,
        actor: get(row, "actor")?,
        pid: get_pid(row)?,
        host: get(row, "host")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        outcome: word(row, "outcome")?,
        exit_code: get(row, "exit_code")?,
        summary: get(row, "summary")?,
    })
}

fn step_from_row(row: &SqliteRow) -> Result<StepRun, StoreError> {
    Ok(StepRun {
        deployment_id: get(row, "deployment_id")?,
        seq: get(row, "seq")?,
        phase: word(row, "phase")?,
        stage: get(row, "stage")?,
        step_id: get(row, "step_id")?,
        name: get(row, "name")?,
        kind: get(row, "kind")?,
        status: word(row, "status")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        duration_ms: get(row, "duration_ms")?,
        exit_code: get(row, "exit_code")?,
        attempts: get(row, "attempts")?,
        output_tail: get(row, "output_tail")?,
        error: get(row, "error")?,
        outputs: decode_json("step_runs.outputs", &get::<String>(row, "outputs")?)?,
        details: decode_json("step_runs.details", &get::<String>(row, "details")?)?,
    })
}

fn approval_from_row(row: &SqliteRow) -> Result<ApprovalRecord, StoreError> {
    Ok(ApprovalRecord {
        id: get(row, "id")?,
        deployment_id: get(row, "deployment_id")?,
        environment: get(row, "environment")?,
        verdict: word(row, "verdict")?,
        actor: get(row, "actor")?,
        role: get(row, "role")?,
        comment: get(row, "comment")?,
        plan_hash: get(row, "plan_hash")?,
        artifact: get(row, "artifact")?,
        at: get(row, "at")?,
    })
}

fn lock_from_row(row: &SqliteRow) -> Result<LockInfo, StoreError> {
    Ok(LockInfo {
        environment: get(row, "environment")?,
        deployment_id: get(row, "deployment_id")?,
        holder: get(row, "holder")?,
        pid: get_pid(row)?,
        host: get(row, "host")?,
        acquired_at: get(row, "acquired_at")?,
        pid_started: get::<Option<i64>>(row, "pid_started")?.map(|t| t as u64),
        boot_id: get(row, "boot_id")?,
        token: get(row, "token")?,
        lease_ms: get(row, "lease_ms")?,
        lease_left_ms: get(row, "lease_left_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::Row;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::{LAST_PASSED_STEP, MIGRATIONS, SqliteStore, migrator};

    /// A store written by a stagegate that knew only the first migration is brought up to
    /// date when it is opened again, its rows kept, and the last-passing-step query uses
    /// the index the second migration adds.
    #[tokio::test]
    async fn an_old_store_is_migrated_when_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .expect("create an old store");
            migrator(&MIGRATIONS[..1])
                .run(&pool)
                .await
                .expect("first migration");
            sqlx::query(
                "INSERT INTO deployments (project, environment, kind, release_version, \
                 release_sha, plan_hash, actor, pid, host, started_at) \
                 VALUES ('shop', 'staging', 'deploy', '1.0', 'abc', 'h', 'alice', 1, 'box', 1)",
            )
            .execute(&pool)
            .await
            .expect("an old row");
            pool.close().await;
        }

        let store = SqliteStore::open(&path).await.expect("reopen");
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .expect("applied migrations");
        assert_eq!(versions, MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
        let index: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'step_runs_by_step'",
        )
        .fetch_optional(&store.pool)
        .await
        .expect("index lookup");
        assert_eq!(index.as_deref(), Some("step_runs_by_step"));
        assert_eq!(
            store.deployments(None, 10, 0).await.expect("old rows")[0].release_version,
            "1.0"
        );

        let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {LAST_PASSED_STEP}"
        )))
        .bind("shop")
        .bind("staging")
        .bind("load")
        .bind("load")
        .fetch_all(&store.pool)
        .await
        .expect("query plan");
        let details: Vec<String> = plan
            .iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect();
        assert!(
            details.iter().any(|d| d.contains("step_runs_by_step")),
            "{details:?}"
        );
        store.close().await;
    }

    /// Every file in `migrations/sqlite/` must be listed in `MIGRATIONS`
    /// (and vice versa) with matching version, description and contents.
    #[test]
    fn embedded_migrations_match_the_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut on_disk: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .expect("read migrations dir")
            .map(|entry| {
                let path = entry.expect("dir entry").path();
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                let stem = name.strip_suffix(".sql").expect("only .sql files");
                let (version, description) = stem.split_once('_').expect("<version>_<desc>");
                (
                    version.parse().expect("numeric version"),
                    description.replace('_', " "),
                    std::fs::read_to_string(&path).expect("read migration"),
                )
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(i64, String, String)> = MIGRATIONS
            .iter()
            .map(|&(v, d, s)| (v, d.to_owned(), s.to_owned()))
            .collect();
        assert_eq!(embedded, on_disk);
    }
}
