//! PostgreSQL backend: the same tables and the same meaning as [`crate::sqlite`], for teams
//! whose runs start on more than one machine.
//!
//! Schema migrations are embedded from `migrations/postgres/` (see [`MIGRATIONS`]).
//!
//! What SQLite gets from `BEGIN IMMEDIATE` (one writer at a time, so the audit chain's head
//! read inside a transaction cannot be overtaken), this backend gets from `LOCK TABLE
//! audit_log IN EXCLUSIVE MODE` at the start of every write that appends to the chain:
//! writers queue, readers do not wait. The environment lock is a row whose primary key is
//! the environment: one `INSERT ... ON CONFLICT DO NOTHING` decides the winner, whichever
//! machine the contenders run on.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, SqlStr};

use crate::audit::{self, AuditKind, AuditRecord, LockBreak};
use crate::url::redact_url;
use crate::{
    ApprovalRecord, DecisionRecord, Deployment, EventRecord, LockAttempt, LockInfo, NewDeployment,
    OUTCOME_ABANDONED, OUTCOME_RUNNING, Outcome, StepRun, StepState, StoreError,
};

/// Embedded schema migrations as `(version, description, sql)`, in order; a unit test
/// checks the list and the folder agree (as for SQLite).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "approvals",
        include_str!("../migrations/postgres/0002_approvals.sql"),
    ),
    (
        3,
        "server indexes",
        include_str!("../migrations/postgres/0003_server_indexes.sql"),
    ),
    (
        4,
        "lock lease",
        include_str!("../migrations/postgres/0004_lock_lease.sql"),
    ),
];

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    Migrator::with_migrations(
        MIGRATIONS
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
});

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: u32 = 4;

#[derive(Debug, Clone)]
pub(crate) struct PostgresStore {
    pool: PgPool,
}

/// `SELECT <all deployment columns> FROM deployments` followed by `$tail`.
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

/// `SELECT <all step_runs columns> FROM step_runs s` followed by `$tail`.
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

/// Now, in Unix milliseconds, by PostgreSQL's clock: leases are taken, renewed and read by
/// one clock, whatever the hosts' clocks say.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}
const NOW_MS: &str = now_ms!();

const LOCK_COLUMNS: &str = lock_columns!(now_ms!());

impl PostgresStore {
    /// Connects to `url` and applies pending migrations. A failure to connect is told by its
    /// cause (no server, authentication, no such database), the URL's password masked.
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let target = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Connect {
            target: target.clone(),
            problem: scrub(url, &e.to_string()),
            next: "check the URL's form: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
        })?;
        // One connection first, to tell why it fails: a pool would only say it timed out.
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(connect_error(&options, url, &target, &e)),
            Err(_) => {
                return Err(StoreError::Connect {
                    target,
                    problem: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    next: "check the host and port in the URL, and that a firewall lets the connection through",
                });
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect {
                target: target.clone(),
                problem: scrub(url, &e.to_string()),
                next: "retry; if it keeps failing check the server's max_connections",
            })?;
        if let Err(e) = migrate(&pool, &target).await {
            pool.close().await;
            return Err(e);
        }
        Ok(PostgresStore { pool })
    }

    pub(crate) async fn close(self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_deployment(
        &self,
        d: &NewDeployment,
        id_floor: i64,
    ) -> Result<i64, StoreError> {
        const ACTION: &str = "starting a deployment record";
        let mut tx = begin_write(&self.pool, ACTION).await?;
        // Ids are never reused: a sequence never goes back, and the floor (the highest id
        // that left files behind, such as step logs) moves it up when it is below. Every
        // nextval runs under the audit lock `begin_write` took, so reading the sequence and
        // setting it cannot race another process.
        if id_floor > 0 {
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('deployments', 'id'), $1) \
                 FROM deployments_id_seq \
                 WHERE $1 > CASE WHEN is_called THEN last_value ELSE 0 END",
            )
            .bind(id_floor)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(ACTION))?;
        }
        let row = sqlx::query(
            "INSERT INTO deployments (project, environment, kind, release_version, release_sha, \
             plan_hash, actor, pid, host, started_at, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
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
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
        let id: i64 = get(&row, "id")?;
        append_audit(
            &mut tx,
            AuditKind::DeploymentBegun,
            Some(id),
            &audit::begun_data(id, d),
            d.started_at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(ACTION))?;
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
        const ACTION: &str = "finishing a deployment record";
        let mut tx = begin_write(&self.pool, ACTION).await?;
        let done = sqlx::query(
            "UPDATE deployments SET outcome = $1, exit_code = $2, summary = $3, finished_at = $4 \
             WHERE id = $5",
        )
        .bind(outcome.as_str())
        .bind(exit_code)
        .bind(summary)
        .bind(finished_at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
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
        tx.commit().await.map_err(StoreError::query(ACTION))
    }

    pub(crate) async fn record_event(
        &self,
        deployment_id: i64,
        kind: &str,
        data: &serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError> {
        const ACTION: &str = "recording an event";
        let data = encode_json("events.data", data)?;
        // Two writers can read the same MAX(seq) under READ COMMITTED: the deployment's row
        // is locked first (FOR UPDATE), so a deployment's events are appended one at a time.
        // A missing deployment fails on the foreign key, as in SQLite.
        let mut tx = self.pool.begin().await.map_err(StoreError::query(ACTION))?;
        sqlx::query("SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE")
            .bind(deployment_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(ACTION))?;
        sqlx::query(
            "INSERT INTO events (deployment_id, seq, at, kind, data) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM events WHERE deployment_id = $1",
        )
        .bind(deployment_id)
        .bind(at)
        .bind(kind)
        .bind(data)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
        tx.commit().await.map_err(StoreError::query(ACTION))
    }

    pub(crate) async fn upsert_step(&self, step: &StepRun) -> Result<(), StoreError> {
        const ACTION: &str = "recording a step";
        let outputs = encode_json("step_runs.outputs", &step.outputs)?;
        let details = encode_json("step_runs.details", &step.details)?;
        let mut tx = begin_write(&self.pool, ACTION).await?;
        sqlx::query(
            "INSERT INTO step_runs (deployment_id, seq, phase, stage, step_id, name, kind, status, \
             started_at, finished_at, duration_ms, exit_code, attempts, output_tail, error, \
             outputs, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
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
        .map_err(StoreError::query(ACTION))?;
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
        tx.commit().await.map_err(StoreError::query(ACTION))
    }

    pub(crate) async fn deployments(
        &self,
        environment: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        const SQL: &str = select_deployments!(
            "WHERE ($1::TEXT IS NULL OR environment = $1) \
             ORDER BY started_at DESC, id DESC LIMIT $2 OFFSET $3"
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
        const SQL: &str = select_deployments!("WHERE id = $1");
        let row = sqlx::query(SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("reading a deployment"))?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    pub(crate) async fn steps(&self, deployment_id: i64) -> Result<Vec<StepRun>, StoreError> {
        const SQL: &str = select_steps!("WHERE s.deployment_id = $1 ORDER BY s.seq");
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
        const SQL: &str = select_steps!(
            "JOIN deployments d ON d.id = s.deployment_id \
             WHERE d.project = $1 AND d.environment = $2 AND s.step_id = $3 AND s.kind = $4 \
             AND s.phase = 'run' AND s.status = 'passed' \
             ORDER BY s.started_at DESC, s.deployment_id DESC LIMIT 1"
        );
        let row = sqlx::query(SQL)
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
             WHERE deployment_id = $1 ORDER BY seq",
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
            "WHERE outcome = $1 AND ($2::TEXT IS NULL OR environment = $2) \
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
        const ACTION: &str = "marking a deployment abandoned";
        let mut tx = begin_write(&self.pool, ACTION).await?;
        let done = sqlx::query(
            "UPDATE deployments SET outcome = $1, summary = $2, finished_at = $3 \
             WHERE id = $4 AND outcome = $5 RETURNING exit_code",
        )
        .bind(OUTCOME_ABANDONED.as_str())
        .bind(reason)
        .bind(at)
        .bind(id)
        .bind(OUTCOME_RUNNING.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
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
        tx.commit().await.map_err(StoreError::query(ACTION))
    }

    pub(crate) async fn last_deployment(
        &self,
        environment: &str,
        outcome: Option<Outcome>,
    ) -> Result<Option<Deployment>, StoreError> {
        const SQL: &str = select_deployments!(
            "WHERE environment = $1 AND ($2::TEXT IS NULL OR outcome = $2) \
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
        // The primary key decides: of two INSERTs racing (from any machine), PostgreSQL makes
        // the second wait for the first to commit, then skips it. The lock can be released
        // between our skipped INSERT and the read back; then simply try again (bounded).
        for _ in 0..5 {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO env_locks (environment, deployment_id, holder, pid, host, acquired_at, \
                 pid_started, boot_id, token, lease_ms, lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {NOW_MS} + $10) \
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
            "UPDATE env_locks SET deployment_id = $1 WHERE environment = $2 AND token = $3",
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
             WHERE environment = $1 AND token = $2 AND lease_ms IS NOT NULL"
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
        sqlx::query("DELETE FROM env_locks WHERE environment = $1 AND token = $2")
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
            "SELECT {LOCK_COLUMNS} FROM env_locks WHERE environment = $1"
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
        const ACTION: &str = "breaking the environment lock";
        let mut tx = begin_write(&self.pool, ACTION).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM env_locks WHERE environment = $1 RETURNING {LOCK_COLUMNS}"
        )))
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
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
        tx.commit().await.map_err(StoreError::query(ACTION))?;
        Ok(lock)
    }

    pub(crate) async fn record_decision(&self, d: &DecisionRecord) -> Result<bool, StoreError> {
        const ACTION: &str = "recording a decision";
        let mut tx = begin_write(&self.pool, ACTION).await?;
        let done = sqlx::query(
            "INSERT INTO decisions (deployment_id, step_id, pass, actor, reason, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (deployment_id, step_id) DO NOTHING",
        )
        .bind(d.deployment_id)
        .bind(&d.step_id)
        .bind(d.pass)
        .bind(&d.actor)
        .bind(&d.reason)
        .bind(d.decided_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(ACTION))?;
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
        tx.commit().await.map_err(StoreError::query(ACTION))?;
        Ok(true)
    }

    pub(crate) async fn decision(
        &self,
        deployment_id: i64,
        step_id: Option<&str>,
    ) -> Result<Option<DecisionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT deployment_id, step_id, pass, actor, reason, decided_at FROM decisions \
             WHERE deployment_id = $1 AND ($2::TEXT IS NULL OR step_id = $2) \
             ORDER BY decided_at LIMIT 1",
        )
        .bind(deployment_id)
        .bind(step_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("reading a decision"))?;
        row.as_ref().map(decision_from_row).transpose()
    }

    pub(crate) async fn record_approval(&self, a: &ApprovalRecord) -> Result<i64, StoreError> {
        const ACTION: &str = "recording an approval";
        let mut tx = begin_write(&self.pool, ACTION).await?;
        // FOR KEY SHARE: the deployment cannot be deleted before the approval is in.
        let exists = sqlx::query("SELECT 1 FROM deployments WHERE id = $1 FOR KEY SHARE")
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
             plan_hash, artifact, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
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
        tx.commit().await.map_err(StoreError::query(ACTION))?;
        Ok(id)
    }

    pub(crate) async fn approvals(
        &self,
        deployment_id: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        const SQL: &str = select_approvals!("WHERE deployment_id = $1 ORDER BY id");
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
        let mut tx = begin_write(&self.pool, ACTION).await?;
        append_audit(&mut tx, kind, deployment_id, data, at).await?;
        tx.commit().await.map_err(StoreError::query(ACTION))
    }

    pub(crate) async fn audit_log(
        &self,
        deployment: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, deployment_id, data, prev_hash, hash FROM audit_log \
             WHERE ($1 IS NULL OR deployment_id = $1) ORDER BY seq",
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
        rows.iter().map(decision_from_row).collect()
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

/// A transaction for a write and the audit record that covers it: the audit log is locked
/// against other writers first, so the chain's head read inside cannot be overtaken.
async fn begin_write(
    pool: &PgPool,
    action: &'static str,
) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::query(action))?;
    sqlx::query("LOCK TABLE audit_log IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(action))?;
    Ok(tx)
}

/// Appends one record to the chain, inside the caller's write transaction (see
/// [`begin_write`]). The hash is the one SQLite's records carry: same fields, same text.
async fn append_audit(
    conn: &mut PgConnection,
    kind: AuditKind,
    deployment_id: Option<i64>,
    data: &serde_json::Value,
    at: i64,
) -> Result<(), StoreError> {
    const ACTION: &str = "appending to the audit log";
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::query(ACTION))?;
    let (seq, prev) = match head {
        Some(r) => (get::<i64>(&r, "seq")? + 1, get::<String>(&r, "hash")?),
        None => (1, audit::GENESIS.to_string()),
    };
    let data = encode_json("audit_log.data", data)?;
    let hash = audit::link_hash(&prev, seq, at, kind.as_str(), deployment_id, &data);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, kind, deployment_id, data, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    .map_err(StoreError::query(ACTION))?;
    Ok(())
}

/// Applies pending migrations (sqlx's migrator holds an advisory lock meanwhile, so two
/// processes opening a fresh database at once apply them once), then starts the audit log.
async fn migrate(pool: &PgPool, target: &str) -> Result<(), StoreError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|source| StoreError::MigrateRemote {
            target: target.to_string(),
            source,
        })?;
    // The chain starts with a record of how many deployments came before it.
    let mut tx = begin_write(pool, "starting the audit log").await?;
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
    tx.commit()
        .await
        .map_err(StoreError::query("starting the audit log"))
}

/// `text` without the URL's password (a driver's message may quote parts of the URL).
fn scrub(url: &str, text: &str) -> String {
    match crate::url::password_of(url) {
        Some(p) if !p.is_empty() => text.replace(&p, "***"),
        _ => text.to_string(),
    }
}

/// A failed connection, told by its cause with what to do about it.
fn connect_error(
    options: &PgConnectOptions,
    url: &str,
    target: &str,
    e: &sqlx::Error,
) -> StoreError {
    let server = match options.get_socket() {
        Some(dir) => format!("the socket in {}", dir.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    let (problem, next) = match e {
        sqlx::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            (
                format!("no PostgreSQL server answers at {server}"),
                "start the server, or fix the host and port in the URL",
            )
        }
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("28P01" | "28000")) => (
            format!(
                "the server refused role `{user}`: {}",
                scrub(url, db.message())
            ),
            "check the user and password (in the URL, or PGPASSWORD / ~/.pgpass) and the server's pg_hba.conf",
        ),
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => (
            format!("database `{database}` does not exist on {server}"),
            "create it (`createdb -O USER DATABASE`) or fix the database name in the URL",
        ),
        other => (
            scrub(url, &other.to_string()),
            "check the URL, and that the server at that address is PostgreSQL and reachable",
        ),
    };
    StoreError::Connect {
        target: target.to_string(),
        problem,
        next,
    }
}

fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(|e| StoreError::Corrupt {
        what: column,
        detail: e.to_string(),
    })
}

/// A status column, read into its type.
fn word<T: std::str::FromStr<Err = crate::UnknownWord>>(
    row: &PgRow,
    column: &'static str,
) -> Result<T, StoreError> {
    get::<String>(row, column)?
        .parse()
        .map_err(|e: crate::UnknownWord| StoreError::Corrupt {
            what: column,
            detail: e.to_string(),
        })
}

fn get_pid(row: &PgRow) -> Result<u32, StoreError> {
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

fn deployment_from_row(row: &PgRow) -> Result<Deployment, StoreError> {
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

fn step_from_row(row: &PgRow) -> Result<StepRun, StoreError> {
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

fn decision_from_row(r: &PgRow) -> Result<DecisionRecord, StoreError> {
    Ok(DecisionRecord {
        deployment_id: get(r, "deployment_id")?,
        step_id: get(r, "step_id")?,
        pass: get(r, "pass")?,
        actor: get(r, "actor")?,
        reason: get(r, "reason")?,
        decided_at: get(r, "decided_at")?,
    })
}

fn approval_from_row(row: &PgRow) -> Result<ApprovalRecord, StoreError> {
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

fn lock_from_row(row: &PgRow) -> Result<LockInfo, StoreError> {
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

    use super::MIGRATIONS;

    /// Every file in `migrations/postgres/` must be listed in `MIGRATIONS` (and vice versa)
    /// with matching version, description and contents.
    #[test]
    fn embedded_migrations_match_the_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
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
