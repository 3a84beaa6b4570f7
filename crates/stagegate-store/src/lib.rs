//! The stagegate state store: a durable record of every deployment, every
//! step it ran, every event it emitted, and who holds each environment.
//!
//! # Data flow
//!
//! A `stagegate deploy` (or `rollback`) run talks to the store like this:
//!
//! 1. [`Store::open`] opens (creating if needed) the SQLite file, or
//!    [`Store::open_postgres`] connects to a PostgreSQL database, and applies the
//!    embedded schema migrations of that backend.
//! 2. [`Store::try_lock`] takes the environment lock. Exactly one process can
//!    win it; the loser gets [`LockAttempt::Held`] with the holder's details.
//! 3. [`Store::begin_deployment`] inserts a deployment row with outcome
//!    `"running"` and returns its id; [`Store::set_lock_deployment`] ties the
//!    lock to that id.
//! 4. While the plan runs, the engine calls [`Store::upsert_step`] as each step
//!    starts and finishes (same `(deployment_id, seq)` key, so the row is
//!    updated in place) and [`Store::record_event`] for the event journal.
//! 5. [`Store::finish_deployment`] stores the outcome, exit code and summary,
//!    then [`Store::release_lock`] frees the environment.
//!
//! A protected deployment or a promotion may wait instead of running: its row is finished
//! with outcome `"awaiting_approval"`, each person's say on it is stored by
//! [`Store::record_approval`] (bound to the plan hash and artifact it saw) and read back by
//! [`Store::approvals`], and [`Store::finish_deployment`] settles the request as
//! `"approved"`, `"rejected"` or `"voided"`. A bypass of a protection rule and a promotion
//! are kept in the audit log by [`Store::record_audit_note`].
//!
//! If a process dies between 3 and 5, its deployment stays `"running"`.
//! [`Store::unfinished`] finds such rows and [`Store::mark_abandoned`] closes
//! them; [`Store::break_lock`] removes a lock left behind by a dead process.
//! Reporting reads [`Store::deployments`], [`Store::deployment`],
//! [`Store::steps`] and [`Store::events`].
//!
//! # Tables
//!
//! - `deployments`: one row per run. `outcome` is `"running"` until finished
//!   (then whatever the caller passes, e.g. `"succeeded"`, `"failed"`), or
//!   `"abandoned"` when closed by [`Store::mark_abandoned`].
//! - `step_runs`: one row per executed step, primary key
//!   `(deployment_id, seq)`; `phase` is `"run"` or `"rollback"`; `outputs` and
//!   `details` are JSON text.
//! - `events`: append-only journal, primary key `(deployment_id, seq)`; the
//!   store assigns `seq` (1, 2, 3, ... per deployment); `data` is JSON text.
//! - `decisions`: a person's decision on an inconclusive `watch` step, one per deployment
//!   and step.
//! - `approvals`: approvals and rejections of a pending request (a deployment row waiting
//!   as `"awaiting_approval"`), any number per deployment; the store assigns `id`.
//! - `audit_log`: the hash chain over the rows above (see [`audit`]).
//! - `env_locks`: at most one row per environment (`environment` is the
//!   primary key), which is what makes locking atomic across processes.
//!
//! All timestamps are stored as INTEGER (PostgreSQL: BIGINT) unix milliseconds and exposed as
//! `i64` milliseconds; callers format them ([`now_millis`] gives the current
//! time in that unit).
//!
//! # Backends
//!
//! All SQL lives in one private module per backend, each with its own migrations:
//! `sqlite` (`migrations/sqlite/`), the default, an embedded file; and `postgres`
//! (`migrations/postgres/`), for teams whose runs start on more than one machine.
//! [`Store`] holds one of them and forwards every call; the tables, their meaning, the
//! audit chain's hashes and the lock's behaviour are the same in both.
//!
//! On PostgreSQL the environment lock is the same row, keyed by environment, taken by
//! one `INSERT ... ON CONFLICT DO NOTHING`: two processes on any machines never both
//! hold it. The row names its holding with a random token and carries a lease: the holder
//! renews it ([`Store::renew_lock`]) every third of its length while it runs, by the
//! store's clock. A lease that has run out never hands the lock to anyone by itself (a
//! holder cut off from the database for a while may still be deploying); it is the proof,
//! across machines, that the holder is gone ([`LockInfo::lease_expired`]), so that
//! [`Store::break_lock`] (`stagegate unlock`) needs no `--force` for it. A lock is held until
//! its holder releases it or `break_lock` removes it; a holder on this host is checked for
//! life by its pid.
//!
//! The library never prints; every failure is a [`StoreError`] whose message
//! says what to do next.

/// The columns of a [`LockInfo`] in both backends' SQL, the lease left computed at read
/// time against `$now`, the backend's "now in Unix milliseconds" expression (a literal).
macro_rules! lock_columns {
    ($now:expr) => {
        concat!(
            "environment, deployment_id, holder, pid, host, acquired_at, pid_started, boot_id, \
             token, lease_ms, lease_until - ",
            $now,
            " AS lease_left_ms"
        )
    };
}

pub mod audit;
mod error;
pub mod pending;
mod postgres;
mod sqlite;
pub mod status;
pub mod url;

use std::path::{Path, PathBuf};

pub use audit::{AuditKind, AuditProblem, AuditRecord, AuditReport, LockBreak};
pub use error::StoreError;
pub use pending::{FinishRecord, PendingFinish};
pub use status::{Outcome, Phase, StepState, UnknownWord};
pub use url::{is_postgres_url, redact_url};

/// Outcome stored for a deployment that has not finished yet.
pub const OUTCOME_RUNNING: Outcome = Outcome::Running;
/// Outcome stored by [`Store::mark_abandoned`].
pub const OUTCOME_ABANDONED: Outcome = Outcome::Abandoned;

/// A person's decision on an inconclusive `watch` step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecisionRecord {
    pub deployment_id: i64,
    pub step_id: String,
    pub pass: bool,
    pub actor: String,
    pub reason: String,
    pub decided_at: i64,
}

status::word_enum!(
    /// What a person said about a pending promotion or protected deployment.
    Verdict {
        Approved = "approved",
        Rejected = "rejected",
    }
);

/// One approval or rejection of a pending request; see [`Store::record_approval`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApprovalRecord {
    /// Assigned by the store (ignored on insert).
    pub id: i64,
    /// The pending request (a deployment row of kind `"promote"` or `"deploy"`).
    pub deployment_id: i64,
    pub environment: String,
    pub verdict: Verdict,
    /// Who: `"name"` (OS/git user or a token's subject).
    pub actor: String,
    /// The role the actor approved as, if any.
    pub role: Option<String>,
    pub comment: String,
    /// The plan's sha256 the approval is bound to.
    pub plan_hash: String,
    /// The artifact digest the approval is bound to.
    pub artifact: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// Current time as unix milliseconds, the unit of every timestamp in the store.
pub fn now_millis() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A deployment about to start; see [`Store::begin_deployment`].
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub project: String,
    pub environment: String,
    /// `"deploy"`, `"rollback"` or `"promote"` (a promotion request).
    pub kind: String,
    pub release_version: String,
    pub release_sha: String,
    pub plan_hash: String,
    pub actor: String,
    pub pid: u32,
    pub host: String,
    /// Unix milliseconds.
    pub started_at: i64,
}

/// A stored deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub id: i64,
    pub project: String,
    pub environment: String,
    /// `"deploy"`, `"rollback"` or `"promote"` (a promotion request).
    pub kind: String,
    pub release_version: String,
    pub release_sha: String,
    pub plan_hash: String,
    pub actor: String,
    pub pid: u32,
    pub host: String,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds; `None` while running.
    pub finished_at: Option<i64>,
    /// `"running"` while unfinished.
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub summary: Option<String>,
}

/// One executed step of a deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRun {
    pub deployment_id: i64,
    /// Order within the deployment, unique per deployment.
    pub seq: i64,
    /// `"run"` or `"rollback"`.
    pub phase: Phase,
    pub stage: String,
    pub step_id: String,
    pub name: String,
    pub kind: String,
    pub status: StepState,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub attempts: i64,
    pub output_tail: String,
    pub error: Option<String>,
    pub outputs: serde_json::Value,
    /// Free-form evidence: checks, assertions, release ids.
    pub details: serde_json::Value,
}

/// Upper bounds, in seconds, of the buckets of [`Store::step_durations`] (and of the server's
/// `stagegate_step_duration_seconds` histogram); a last bucket, `+Inf`, is the count.
pub const STEP_DURATION_BUCKETS_S: [f64; 10] =
    [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The finished steps of one environment, kind, phase and status: how many, how long in
/// all, and how many took at most each bound of [`STEP_DURATION_BUCKETS_S`] (cumulative).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepDurations {
    pub environment: String,
    pub kind: String,
    /// `"run"` or `"rollback"`.
    pub phase: String,
    pub status: String,
    pub count: i64,
    pub sum_ms: i64,
    pub buckets: [i64; STEP_DURATION_BUCKETS_S.len()],
}

/// The deployments of one environment, kind and outcome: how many, and how long the
/// finished ones took in all.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeploymentTotals {
    pub environment: String,
    pub kind: String,
    pub outcome: String,
    pub count: i64,
    pub seconds_ms: i64,
}

/// The aggregate behind [`Store::deployment_totals`], the same text on both backends.
pub(crate) const DEPLOYMENT_TOTALS_SQL: &str = "SELECT environment, kind, outcome, COUNT(*), \
     CAST(SUM(CASE WHEN finished_at > started_at THEN finished_at - started_at ELSE 0 END) AS BIGINT) \
     FROM deployments GROUP BY environment, kind, outcome ORDER BY environment, kind, outcome";

/// A row of [`DEPLOYMENT_TOTALS_SQL`], on either backend.
pub(crate) fn deployment_totals_row<R: sqlx::Row>(r: &R) -> Result<DeploymentTotals, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DeploymentTotals {
        environment: r.try_get(0)?,
        kind: r.try_get(1)?,
        outcome: r.try_get(2)?,
        count: r.try_get(3)?,
        seconds_ms: r.try_get::<Option<i64>, _>(4)?.unwrap_or(0),
    })
}

/// A row of [`STEP_DURATIONS_SQL`], on either backend.
pub(crate) fn step_durations_row<R: sqlx::Row>(r: &R) -> Result<StepDurations, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let mut buckets = [0; STEP_DURATION_BUCKETS_S.len()];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = r.try_get(6 + i)?;
    }
    Ok(StepDurations {
        environment: r.try_get(0)?,
        kind: r.try_get(1)?,
        phase: r.try_get(2)?,
        status: r.try_get(3)?,
        count: r.try_get(4)?,
        sum_ms: r.try_get(5)?,
        buckets,
    })
}

/// The aggregate behind [`Store::step_durations`], the same text on both backends.
macro_rules! le {
    ($ms:literal) => {
        concat!(
            "CAST(SUM(CASE WHEN s.duration_ms <= ",
            $ms,
            " THEN 1 ELSE 0 END) AS BIGINT), "
        )
    };
}
pub(crate) const STEP_DURATIONS_SQL: &str = concat!(
    "SELECT d.environment, s.kind, s.phase, s.status, COUNT(*), ",
    "CAST(SUM(s.duration_ms) AS BIGINT), ",
    le!("100"),
    le!("500"),
    le!("1000"),
    le!("5000"),
    le!("10000"),
    le!("30000"),
    le!("60000"),
    le!("300000"),
    le!("900000"),
    "CAST(SUM(CASE WHEN s.duration_ms <= 3600000 THEN 1 ELSE 0 END) AS BIGINT) ",
    "FROM step_runs s JOIN deployments d ON d.id = s.deployment_id ",
    "WHERE s.duration_ms IS NOT NULL ",
    "GROUP BY d.environment, s.kind, s.phase, s.status ",
    "ORDER BY d.environment, s.kind, s.phase, s.status"
);

/// One entry of a deployment's event journal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    pub deployment_id: i64,
    /// Assigned by the store: 1, 2, 3, ... per deployment.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

/// Who holds an environment lock.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LockInfo {
    pub environment: String,
    pub deployment_id: Option<i64>,
    /// `"user@host"`.
    pub holder: String,
    pub pid: u32,
    pub host: String,
    /// Unix milliseconds.
    pub acquired_at: i64,
    /// When the holder's process started (clock ticks since boot), to tell it from a later
    /// process that reuses its pid. `None` in locks taken by older versions.
    pub pid_started: Option<u64>,
    /// The boot the holder ran under (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: Option<String>,
    /// Names this holding of the lock, and no other: a random value the taker chooses (see
    /// [`lock_token`]). Renewing, attaching a deployment and releasing go by it, so a process
    /// on another machine that happens to have the same pid can never touch the lock.
    /// `None` in locks taken by older versions. Never shown (`stagegate status --json`).
    #[serde(skip_serializing, default)]
    pub token: Option<String>,
    /// How long the lock stays fresh without being renewed, in milliseconds (see
    /// [`Store::renew_lock`]). `None` in locks taken by older versions: they never expire.
    pub lease_ms: Option<i64>,
    /// When read: milliseconds until the lease runs out, by the store's clock (PostgreSQL's
    /// own, so hosts with skewed clocks agree); negative once it has run out, by that much.
    /// Ignored when taking the lock.
    pub lease_left_ms: Option<i64>,
}

impl LockInfo {
    /// Whether the holder has stopped renewing the lease: it ran out at least a whole lease
    /// ago (twice its length without a renewal, which a live holder makes every third of
    /// it). A lock without a lease never expires.
    pub fn lease_expired(&self) -> bool {
        match (self.lease_ms, self.lease_left_ms) {
            (Some(lease), Some(left)) => left < -lease,
            _ => false,
        }
    }
}

/// `n` random bytes from the kernel, as hex: lock tokens here, and the server's API tokens
/// and session ids.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// A fresh random token for [`LockInfo::token`]: 128 bits from the kernel, as hex. Without
/// `/dev/urandom`, a digest of the pid and the time in nanoseconds: still unique per holding.
pub fn lock_token() -> String {
    random_hex(16).unwrap_or_else(|_| {
        use sha2::Digest;
        let seed = format!(
            "{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        );
        hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..16])
    })
}

/// Result of [`Store::try_lock`].
#[derive(Debug, Clone)]
pub enum LockAttempt {
    /// The caller now holds the lock.
    Acquired,
    /// Someone else (possibly the same pid, from an earlier run) holds it.
    Held(LockInfo),
}

/// The state store. Cheap to share by reference; all methods take `&self`.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Where outcomes that the database could not take are kept (see [`pending`]).
    pending_dir: PathBuf,
}

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

/// Calls the same method on whichever backend the store has.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens the SQLite state file at `path`, creating it and its parent
    /// directory if missing, and applies pending schema migrations.
    ///
    /// The database uses WAL journaling, a 10 s busy timeout, foreign keys,
    /// and a pool of at most 4 connections.
    ///
    /// Outcomes that earlier runs could not record (see [`pending`]) are recorded by
    /// [`Store::recover_pending`], which the caller runs once the store is open.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
            pending_dir: pending::dir_of(path),
        };
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://` or `postgresql://`, as
    /// libpq reads it; a password left out of the URL is taken from `PGPASSWORD` or
    /// `~/.pgpass`) and applies pending schema migrations. `local_dir` is this machine's
    /// state directory: the reservations of [`Store::reserve_finish`] live there, in
    /// `postgres.pending/`, since they must be written when the database cannot be.
    ///
    /// Errors name the database with its password masked and say what to do: start the
    /// server, fix the credentials, create the database.
    pub async fn open_postgres(url: &str, local_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(postgres::PostgresStore::open(url).await?),
            pending_dir: local_dir.join("postgres.pending"),
        })
    }

    /// Which backend this store uses: `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Reserves room, outside the database, for deployment `id`'s outcome; see [`pending`].
    pub fn reserve_finish(&self, id: i64) -> Result<PendingFinish, StoreError> {
        PendingFinish::create(&self.pending_dir, id).map_err(|source| StoreError::Reserve {
            path: self.pending_dir.clone(),
            source,
        })
    }

    /// Records the outcomes that earlier runs left in their reservations (the database was
    /// full or failing when they ended), frees the locks those runs held, and removes the
    /// files; returns what was recorded. Reservations of runs that ended without writing
    /// one are removed once their deployment is no longer running.
    pub async fn recover_pending(&self) -> Result<Vec<FinishRecord>, StoreError> {
        let mut done = Vec::new();
        for (file, record) in pending::left_behind(&self.pending_dir) {
            match record {
                Some(r) => {
                    let still_open = self
                        .deployment(r.deployment_id)
                        .await?
                        .is_some_and(|d| d.outcome == OUTCOME_RUNNING);
                    if still_open {
                        let summary = format!(
                            "{} (recorded late: the state store could not be written when the run ended)",
                            r.summary
                        );
                        let outcome =
                            r.outcome
                                .parse()
                                .map_err(|e: UnknownWord| StoreError::Corrupt {
                                    what: "a pending outcome",
                                    detail: e.to_string(),
                                })?;
                        self.finish_deployment(
                            r.deployment_id,
                            outcome,
                            r.exit_code,
                            &summary,
                            r.finished_at,
                        )
                        .await?;
                        if !r.lock_token.is_empty() {
                            self.release_lock(&r.environment, &r.lock_token).await?;
                        }
                        done.push(r);
                    }
                    let _ = std::fs::remove_file(&file);
                }
                None => {
                    let id = file
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse::<i64>().ok());
                    let running = match id {
                        Some(id) => self
                            .deployment(id)
                            .await?
                            .is_some_and(|d| d.outcome == OUTCOME_RUNNING),
                        None => false,
                    };
                    if !running {
                        let _ = std::fs::remove_file(&file);
                    }
                }
            }
        }
        Ok(done)
    }

    /// Inserts a deployment with outcome `"running"` and returns its id.
    pub async fn begin_deployment(&self, d: &NewDeployment) -> Result<i64, StoreError> {
        dispatch!(self.begin_deployment(d, 0))
    }

    /// [`Store::begin_deployment`] with an id above `id_floor`: the highest id that files
    /// outside the store already use (step logs of an earlier store in the same place), so
    /// that a new deployment never writes into an old one's files.
    pub async fn begin_deployment_above(
        &self,
        d: &NewDeployment,
        id_floor: i64,
    ) -> Result<i64, StoreError> {
        dispatch!(self.begin_deployment(d, id_floor))
    }

    /// Stores the final outcome of deployment `id`.
    ///
    /// Overwrites whatever outcome was there (including `"abandoned"`), since
    /// the process that ran the deployment knows best how it ended.
    /// Fails with [`StoreError::DeploymentNotFound`] if `id` does not exist.
    pub async fn finish_deployment(
        &self,
        id: i64,
        outcome: Outcome,
        exit_code: i32,
        summary: &str,
        finished_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.finish_deployment(id, outcome, exit_code, summary, finished_at))
    }

    /// Appends an event to the deployment's journal. The store assigns the
    /// next `seq` for that deployment atomically.
    pub async fn record_event(
        &self,
        deployment_id: i64,
        kind: &str,
        data: &serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.record_event(deployment_id, kind, data, at))
    }

    /// Inserts the step, or replaces every column of the existing row with
    /// the same `(deployment_id, seq)`.
    pub async fn upsert_step(&self, step: &StepRun) -> Result<(), StoreError> {
        dispatch!(self.upsert_step(step))
    }

    /// Up to `limit` deployments, newest first (by `started_at`, then id),
    /// optionally only for one environment.
    pub async fn deployments(
        &self,
        environment: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        dispatch!(self.deployments(environment, limit, 0))
    }

    /// [`Store::deployments`] after skipping the `offset` newest: one page of the history.
    pub async fn deployments_page(
        &self,
        environment: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        dispatch!(self.deployments(environment, limit, offset.max(0)))
    }

    /// The deployment with this id, if any.
    pub async fn deployment(&self, id: i64) -> Result<Option<Deployment>, StoreError> {
        dispatch!(self.deployment(id))
    }

    /// All steps of a deployment, ordered by `seq`.
    pub async fn steps(&self, deployment_id: i64) -> Result<Vec<StepRun>, StoreError> {
        dispatch!(self.steps(deployment_id))
    }

    /// Every deployment counted by environment, kind and outcome, with the time the finished
    /// ones took: one aggregate query (the server's `/metrics`).
    pub async fn deployment_totals(&self) -> Result<Vec<DeploymentTotals>, StoreError> {
        dispatch!(self.deployment_totals())
    }

    /// Every finished step's duration, counted by environment, kind, phase and status into
    /// the buckets of [`STEP_DURATION_BUCKETS_S`]: one aggregate query, not a row per step.
    pub async fn step_durations(&self) -> Result<Vec<StepDurations>, StoreError> {
        dispatch!(self.step_durations())
    }

    /// The newest passing run of step `step_id` (of `kind`) in a project's environment: the
    /// baseline of `vs last_pass` load thresholds.
    pub async fn last_passed_step(
        &self,
        project: &str,
        environment: &str,
        step_id: &str,
        kind: &str,
    ) -> Result<Option<StepRun>, StoreError> {
        dispatch!(self.last_passed_step(project, environment, step_id, kind))
    }

    /// All events of a deployment, ordered by `seq`.
    pub async fn events(&self, deployment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        dispatch!(self.events(deployment_id))
    }

    /// Deployments whose outcome is still `"running"`, oldest first,
    /// optionally only for one environment.
    pub async fn unfinished(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<Deployment>, StoreError> {
        dispatch!(self.unfinished(environment))
    }

    /// Sets outcome `"abandoned"`, `summary = reason` and `finished_at = at`,
    /// but only if the deployment is still `"running"`; otherwise does nothing.
    pub async fn mark_abandoned(&self, id: i64, reason: &str, at: i64) -> Result<(), StoreError> {
        dispatch!(self.mark_abandoned(id, reason, at))
    }

    /// The newest deployment of `environment`, optionally only among those
    /// with the given outcome.
    pub async fn last_deployment(
        &self,
        environment: &str,
        outcome: Option<Outcome>,
    ) -> Result<Option<Deployment>, StoreError> {
        dispatch!(self.last_deployment(environment, outcome))
    }

    /// Tries to take the lock on `environment` for `holder`.
    ///
    /// Atomic across processes: a single `INSERT ... ON CONFLICT DO NOTHING`
    /// on the per-environment primary key decides the winner. The
    /// `environment` argument is authoritative; `holder.environment` is
    /// ignored. A lock already held by the same pid is reported as
    /// [`LockAttempt::Held`], not re-acquired. Fails with
    /// [`StoreError::LockContended`] only if the lock keeps being taken and
    /// released between attempts.
    pub async fn try_lock(
        &self,
        environment: &str,
        holder: &LockInfo,
    ) -> Result<LockAttempt, StoreError> {
        dispatch!(self.try_lock(environment, holder))
    }

    /// Records which deployment the lock (held under `token`) belongs to.
    /// Fails with [`StoreError::LockNotHeld`] if that holding is gone.
    pub async fn set_lock_deployment(
        &self,
        environment: &str,
        token: &str,
        deployment_id: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.set_lock_deployment(environment, token, deployment_id))
    }

    /// Renews the lease of the lock held under `token`: it runs out its `lease_ms` from now
    /// (the store's clock). Returns false, changing nothing, when that holding is gone (the
    /// lock was broken, and perhaps taken by someone else).
    pub async fn renew_lock(&self, environment: &str, token: &str) -> Result<bool, StoreError> {
        dispatch!(self.renew_lock(environment, token))
    }

    /// Releases the lock if it is held under `token`; otherwise does nothing
    /// (use [`Store::lock_info`] to see who holds it).
    pub async fn release_lock(&self, environment: &str, token: &str) -> Result<(), StoreError> {
        dispatch!(self.release_lock(environment, token))
    }

    /// Who holds the lock on `environment`, if anyone.
    pub async fn lock_info(&self, environment: &str) -> Result<Option<LockInfo>, StoreError> {
        dispatch!(self.lock_info(environment))
    }

    /// Removes the lock on `environment` whoever holds it, and returns what
    /// was removed (`None` if it was not locked).
    pub async fn break_lock(
        &self,
        environment: &str,
        note: &LockBreak,
    ) -> Result<Option<LockInfo>, StoreError> {
        dispatch!(self.break_lock(environment, note))
    }

    /// Records a decision on an inconclusive watch step, in the audit log too. Returns
    /// false, changing nothing, when that step was already decided.
    pub async fn record_decision(&self, d: &DecisionRecord) -> Result<bool, StoreError> {
        dispatch!(self.record_decision(d))
    }

    /// The decision on `step_id` of deployment `deployment_id` (any step when `None`).
    pub async fn decision(
        &self,
        deployment_id: i64,
        step_id: Option<&str>,
    ) -> Result<Option<DecisionRecord>, StoreError> {
        dispatch!(self.decision(deployment_id, step_id))
    }

    /// Records an approval or rejection and its audit record (kind `"approval"`, holding
    /// every field of the row) in one transaction; returns the id the store gave it
    /// (`a.id` is ignored). Fails with [`StoreError::DeploymentNotFound`] when
    /// `a.deployment_id` does not exist.
    pub async fn record_approval(&self, a: &ApprovalRecord) -> Result<i64, StoreError> {
        dispatch!(self.record_approval(a))
    }

    /// Every approval and rejection of a deployment, oldest first (by id).
    pub async fn approvals(&self, deployment_id: i64) -> Result<Vec<ApprovalRecord>, StoreError> {
        dispatch!(self.approvals(deployment_id))
    }

    /// Appends an audit record that covers no row: a bypass of a protection rule
    /// ([`AuditKind::Bypass`]) or a promotion ([`AuditKind::Promotion`]), with `data` as
    /// its contents. Any other kind covers a row and is written only with it: asking for
    /// one here is a programming error, refused with [`StoreError::NotAnAuditNote`] and
    /// nothing written.
    pub async fn record_audit_note(
        &self,
        kind: AuditKind,
        deployment_id: Option<i64>,
        data: &serde_json::Value,
        at: i64,
    ) -> Result<(), StoreError> {
        if !kind.is_note() {
            return Err(StoreError::NotAnAuditNote {
                kind: kind.as_str(),
            });
        }
        dispatch!(self.record_audit_note(kind, deployment_id, data, at))
    }

    /// The audit log, oldest record first.
    pub async fn audit_log(&self) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(self.audit_log(None))
    }

    /// The audit records of one deployment, oldest first (a page of its audit trail; the
    /// chain itself is checked by [`Store::verify_audit`] over the whole log).
    pub async fn audit_log_of(&self, deployment_id: i64) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(self.audit_log(Some(deployment_id)))
    }

    /// Checks the audit log's chain and every covered row against it; the report names the
    /// first broken link, if any.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let records = dispatch!(self.audit_log(None))?;
        let deployments = dispatch!(self.all_deployments())?;
        let steps = dispatch!(self.all_steps())?;
        let decisions = dispatch!(self.all_decisions())?;
        let approvals = dispatch!(self.all_approvals())?;
        Ok(audit::verify(
            &records,
            &deployments,
            &steps,
            &decisions,
            &approvals,
        ))
    }

    /// Closes all connections (SQLite: checkpointing the WAL).
    pub async fn close(self) {
        match self.backend {
            Backend::Sqlite(b) => b.close().await,
            Backend::Postgres(b) => b.close().await,
        }
    }
}
