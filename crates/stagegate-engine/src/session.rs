//! A session: one recorded run of a plan against an environment.
//!
//! Whoever starts a deploy, a check or a rollback (the CLI today, a server next) builds a
//! [`Session`] and calls [`Session::run`] with the engine call to make. The session does the
//! rest, in this order:
//!
//! 1. takes the environment's lock in the store (a check, which changes nothing, does not),
//!    waiting behind the holder if asked ([`LockPolicy`]);
//! 2. marks runs of the environment whose process is gone as abandoned ([`Notice::Reaped`]);
//! 3. begins the deployment record and ties the lock to it;
//! 4. runs the engine, fanning each [`Event`] out to every [`EventSink`] (terminal, JSON
//!    lines, reports) and recording it in the store;
//! 5. finishes the record with the outcome, tells the sinks the run is over, and frees the lock.
//!
//! The session never prints: what a person should hear about on the way (waiting for a lock,
//! an abandoned run, a store write that failed) reaches the sinks as a [`Notice`].

use std::time::{Duration, Instant};

use stagegate_plan::Plan;
use stagegate_store::{
    FinishRecord, LockAttempt, LockInfo, NewDeployment, StepRun, Store, StoreError,
};
use tokio_util::sync::CancellationToken;

use crate::event::{Event, Events, now_ms};
use crate::executor::RunReport;
use crate::process::{boot_id, pid_alive, process_start_ticks, same_process_alive};

/// The lease a lock gets unless the caller says otherwise. The holder renews it every third
/// of that, so a holder is taken for gone only after two minutes without a renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// A new holding of `environment`'s lock for this process, run by `actor` on `host`, with a
/// fresh token and `lease`.
pub fn new_holding(
    environment: &str,
    actor: &str,
    host: &str,
    deployment_id: Option<i64>,
    lease: Duration,
) -> LockInfo {
    LockInfo {
        environment: environment.to_string(),
        deployment_id,
        holder: format!("{actor}@{host}"),
        pid: std::process::id(),
        host: host.to_string(),
        acquired_at: stagegate_store::now_millis(),
        pid_started: process_start_ticks(std::process::id()),
        boot_id: boot_id(),
        token: Some(stagegate_store::lock_token()),
        lease_ms: Some(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
        lease_left_ms: None,
    }
}

/// Whether the holder of `lock` is gone, as far as a process on `host` can tell: on this host
/// its process is dead (or its pid now belongs to another); on another host it has stopped
/// renewing its lease ([`LockInfo::lease_expired`]). A lock from another host without a
/// lease (an older version's) cannot be told gone.
pub fn holder_gone(lock: &LockInfo, host: &str) -> bool {
    if lock.host == host {
        !holder_alive(lock)
    } else {
        lock.lease_expired()
    }
}

/// Keeps a lock's lease fresh while its holder runs: renews it every third of the lease until
/// dropped. When the holding is gone (someone broke the lock with `stagegate unlock --force`),
/// it cancels `on_loss` and stops; [`Heartbeat::lost`] then says so.
pub struct Heartbeat {
    token: String,
    task: tokio::task::JoinHandle<()>,
    lost: CancellationToken,
}

impl Heartbeat {
    pub fn start(
        store: Store,
        environment: String,
        token: String,
        lease: Duration,
        on_loss: Vec<CancellationToken>,
    ) -> Heartbeat {
        let lost = CancellationToken::new();
        let said = lost.clone();
        let every = (lease / 3).max(Duration::from_millis(100));
        let mine = token.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lock(&environment, &token).await {
                    Ok(true) => {}
                    Ok(false) => {
                        said.cancel();
                        for t in &on_loss {
                            t.cancel();
                        }
                        return;
                    }
                    // The store cannot be reached for now: the next beat tries again (the
                    // lease outlasts several missed ones).
                    Err(_) => {}
                }
            }
        });
        Heartbeat {
            token: mine,
            task,
            lost,
        }
    }

    /// The token of the holding it keeps fresh.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the holding was found gone.
    pub fn lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the process that took `lock` still runs on this host: its pid is alive and was
/// not reused by another process since (start time and boot id compared).
pub fn holder_alive(lock: &LockInfo) -> bool {
    same_process_alive(lock.pid, lock.pid_started, lock.boot_id.as_deref())
}

/// What a session runs; it names the record (`deployments.kind`) and decides whether it locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Deploy,
    /// Only the gates: changes nothing, so it takes no lock and runs beside a deploy.
    Check,
    Rollback,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Deploy => "deploy",
            SessionKind::Check => "check",
            SessionKind::Rollback => "rollback",
        }
    }

    fn locks(self) -> bool {
        self != SessionKind::Check
    }
}

/// What to do when another process holds the environment's lock.
#[derive(Debug, Clone, Copy)]
pub struct LockPolicy {
    /// Queue behind the holder instead of failing at once.
    pub wait: bool,
    /// How long to queue before giving up.
    pub wait_timeout: Duration,
    /// How long the lock stays fresh without a renewal ([`DEFAULT_LEASE`]); the session
    /// renews it every third of that while it runs.
    pub lease: Duration,
}

/// Why the lock could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockRefusal {
    /// A live process holds it and the policy says not to wait.
    Busy,
    /// The holder's process is gone: it was killed before it finished (on this host), or it
    /// stopped renewing its lease (on another).
    HolderGone,
    /// Waited the whole `wait_timeout`.
    GaveUp(Duration),
}

/// Something a person should hear about that is not an event of the run itself.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Queued behind another process's lock (said once).
    WaitingForLock {
        environment: String,
        holder: LockInfo,
    },
    /// A run of the environment whose process is gone was marked abandoned.
    Reaped {
        environment: String,
        deployment_id: i64,
        release_version: String,
        /// ` during step `x` (status)`, or empty when no step had started.
        during: String,
    },
    /// Recording an event to the store failed (said once per run; the run goes on).
    RecordFailed { error: String },
    /// The run's lock was broken by someone else while it ran (`stagegate unlock --force`):
    /// it stopped without rolling back, leaving the environment as it was at that moment.
    LockLost { environment: String },
}

/// Receives everything a session has to tell: the run's events, then `finish` once.
pub trait EventSink: Send {
    fn on_event(&mut self, event: &Event);

    fn on_notice(&mut self, _notice: &Notice) {}

    /// The run's last event has been delivered. A sink that writes a file at the end (a
    /// report) does it here; its error is returned by [`Session::run`] after the record is
    /// finished.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink could not write what it owed (a report file, typically).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("environment `{environment}` is locked by {} (pid {})", holder.holder, holder.pid)]
    Locked {
        environment: String,
        holder: LockInfo,
        refusal: LockRefusal,
    },
    /// Cancelled while queued for the lock: nothing ran and nothing was recorded.
    #[error("interrupted while waiting for the lock of `{environment}`; nothing ran")]
    Interrupted { environment: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The run ended but the store could not record how (a full disk, typically). The
    /// outcome is kept in `kept` when the reservation could be written: the next open of
    /// the store records it and frees the lock.
    #[error("deployment #{id} {outcome}, but the state store could not record it: {error}")]
    FinishNotRecorded {
        id: i64,
        /// The outcome it could not record (`succeeded`, `rolled_back`, ...).
        outcome: String,
        /// The run's own exit code.
        exit_code: i32,
        error: StoreError,
        /// Where the outcome waits to be recorded; `None` when that failed too.
        kept: Option<std::path::PathBuf>,
    },
}

/// Cancel the run (what began is rolled back) and abort that rollback: the two presses of Ctrl-C.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    pub cancel: CancellationToken,
    pub abort: CancellationToken,
}

/// The release a run is about, as recorded.
#[derive(Debug, Clone)]
pub struct SessionRelease {
    pub version: String,
    pub sha: String,
}

/// One recorded run. Build it, then [`Session::run`].
pub struct Session<'a> {
    pub plan: &'a Plan,
    pub store: Store,
    pub environment: String,
    pub kind: SessionKind,
    /// Who runs it (recorded, and shown in the lock).
    pub actor: String,
    pub host: String,
    pub lock: LockPolicy,
    pub control: RunControl,
    pub sinks: Vec<Box<dyn EventSink + 'a>>,
    /// Where the engine writes each deployment's step logs (`logs/<id>/`), if anywhere:
    /// a new deployment gets an id above every one found there, so it never appends to the
    /// logs of a deployment recorded by an earlier store.
    pub logs_dir: Option<std::path::PathBuf>,
}

/// The highest deployment id that has a directory in `logs_dir` (0 when none).
fn highest_logged_id(logs_dir: Option<&std::path::Path>) -> i64 {
    let Some(entries) = logs_dir.and_then(|d| std::fs::read_dir(d).ok()) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .max()
        .unwrap_or(0)
}

impl Session<'_> {
    fn notify(&mut self, n: &Notice) {
        for s in &mut self.sinks {
            s.on_notice(n);
        }
    }

    /// Runs `engine` (given the deployment id, the event sender and the run's control) under
    /// the lock, recording everything; returns the engine's report.
    pub async fn run<F, Fut>(
        mut self,
        release: SessionRelease,
        engine: F,
    ) -> Result<RunReport, SessionError>
    where
        F: FnOnce(i64, Events, RunControl) -> Fut,
        Fut: std::future::Future<Output = RunReport>,
    {
        let locking = self.kind.locks();
        let mut held = None;
        if locking {
            let token = self.acquire_lock().await?;
            held = Some(Heartbeat::start(
                self.store.clone(),
                self.environment.clone(),
                token,
                self.lock.lease,
                vec![self.control.cancel.clone(), self.control.abort.clone()],
            ));
        }
        let result = self.run_locked(&release, held.as_ref(), engine).await;
        if let Some(held) = held {
            let token = held.token().to_string();
            drop(held); // no renewal after the release
            if !matches!(result, Err(SessionError::FinishNotRecorded { .. })) {
                let env = self.environment.clone();
                let _ = retry_write(|| self.store.release_lock(&env, &token)).await;
            }
        }
        result
    }

    /// Takes the lock, waiting if the policy says so, and returns the holding's token. A lock
    /// left by a dead process (or one whose lease ran out on another host) is refused with
    /// [`LockRefusal::HolderGone`]: what it left running must be looked at first.
    async fn acquire_lock(&mut self) -> Result<String, SessionError> {
        let me = new_holding(
            &self.environment,
            &self.actor,
            &self.host,
            None,
            self.lock.lease,
        );
        let token = me.token.clone().unwrap_or_default();
        let started = Instant::now();
        let mut said_waiting = false;
        loop {
            let holder = match self.store.try_lock(&self.environment, &me).await? {
                LockAttempt::Acquired => return Ok(token),
                LockAttempt::Held(h) => h,
            };
            let refusal = if holder_gone(&holder, &self.host) {
                Some(LockRefusal::HolderGone)
            } else if !self.lock.wait {
                Some(LockRefusal::Busy)
            } else if started.elapsed() > self.lock.wait_timeout {
                Some(LockRefusal::GaveUp(self.lock.wait_timeout))
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return Err(SessionError::Locked {
                    environment: self.environment.clone(),
                    holder,
                    refusal,
                });
            }
            if !said_waiting {
                let n = Notice::WaitingForLock {
                    environment: self.environment.clone(),
                    holder,
                };
                self.notify(&n);
                said_waiting = true;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = self.control.cancel.cancelled() => {
                    return Err(SessionError::Interrupted {
                        environment: self.environment.clone(),
                    });
                }
            }
        }
    }

    async fn reap(&mut self) -> Result<(), SessionError> {
        // Outcomes an earlier run could not record are recorded first: they are not abandoned.
        self.store.recover_pending().await?;
        let sinks = &mut self.sinks;
        reap_unfinished(&self.store, &self.environment, &self.host, &mut |n| {
            for s in sinks.iter_mut() {
                s.on_notice(n);
            }
        })
        .await?;
        Ok(())
    }

    async fn run_locked<F, Fut>(
        &mut self,
        release: &SessionRelease,
        held: Option<&Heartbeat>,
        engine: F,
    ) -> Result<RunReport, SessionError>
    where
        F: FnOnce(i64, Events, RunControl) -> Fut,
        Fut: std::future::Future<Output = RunReport>,
    {
        if self.kind.locks() {
            self.reap().await?;
        }
        let floor = highest_logged_id(self.logs_dir.as_deref());
        let id = self
            .store
            .begin_deployment_above(
                &NewDeployment {
                    project: self.plan.project.clone(),
                    environment: self.environment.clone(),
                    kind: self.kind.as_str().into(),
                    release_version: release.version.clone(),
                    release_sha: release.sha.clone(),
                    plan_hash: self.plan.hash.clone(),
                    actor: self.actor.clone(),
                    pid: std::process::id(),
                    host: self.host.clone(),
                    started_at: stagegate_store::now_millis(),
                },
                floor,
            )
            .await?;
        if let Some(held) = held {
            self.store
                .set_lock_deployment(&self.environment, held.token(), id)
                .await?;
        }
        // Room for the outcome outside the database, taken while there is room: if the
        // database cannot be written at the end, the outcome goes there.
        let reservation = match self.store.reserve_finish(id) {
            Ok(r) => Some(r),
            Err(e) => {
                let n = Notice::RecordFailed {
                    error: e.to_string(),
                };
                self.notify(&n);
                None
            }
        };

        let (events, mut rx) = Events::channel();
        let store = &self.store;
        let sinks = &mut self.sinks;
        let consume = async {
            let mut said_record_failed = false;
            while let Some(e) = rx.recv().await {
                for s in sinks.iter_mut() {
                    s.on_event(&e);
                }
                if let Err(err) = record(store, id, &e).await
                    && !said_record_failed
                {
                    said_record_failed = true;
                    let n = Notice::RecordFailed {
                        error: err.to_string(),
                    };
                    for s in sinks.iter_mut() {
                        s.on_notice(&n);
                    }
                }
            }
        };
        let (mut report, ()) = tokio::join!(engine(id, events, self.control.clone()), consume);
        if held.is_some_and(Heartbeat::lost) {
            report.summary = format!(
                "{}; the lock on `{}` was broken while this run went (`stagegate unlock --force`): it stopped without rolling back, so the environment is as this run left it; check it before deploying again",
                report.summary, self.environment
            );
            let n = Notice::LockLost {
                environment: self.environment.clone(),
            };
            self.notify(&n);
        }
        // The sinks hear the end first (the terminal's last line), then the record is finished.
        let mut sink_error = None;
        for s in &mut self.sinks {
            if let Err(e) = s.finish()
                && sink_error.is_none()
            {
                sink_error = Some(e);
            }
        }
        let finished_at = stagegate_store::now_millis();
        let written = retry_write(|| {
            self.store.finish_deployment(
                id,
                report.outcome.into(),
                report.exit_code,
                &report.summary,
                finished_at,
            )
        })
        .await;
        if let Err(error) = written {
            let record = FinishRecord {
                deployment_id: id,
                environment: self.environment.clone(),
                pid: std::process::id(),
                lock_token: held.map(|h| h.token().to_string()).unwrap_or_default(),
                outcome: report.outcome.as_str().into(),
                exit_code: report.exit_code,
                summary: report.summary.clone(),
                finished_at,
            };
            let kept = reservation.and_then(|r| {
                r.write(&record).ok()?;
                Some(r.path().to_path_buf())
            });
            return Err(SessionError::FinishNotRecorded {
                id,
                outcome: report.outcome.as_str().into(),
                exit_code: report.exit_code,
                error,
                kept,
            });
        }
        if let Some(r) = reservation {
            r.discard();
        }
        match sink_error {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }
}

/// Retries a store write that failed (a full disk that frees up, a busy file) with backoff,
/// for about 3 s in all; returns the last error.
async fn retry_write<F, Fut>(mut write: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            // A missing row will not appear by waiting.
            Err(e @ StoreError::DeploymentNotFound { .. }) => return Err(e),
            Err(e) if tries == 5 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}

/// Marks runs of `environment` whose process is gone as abandoned, telling `notify` of each;
/// the caller holds (or has just cleared) the environment's lock and runs on `host`. The
/// current process's own run, and a check that may still run beside it, are left alone.
pub async fn reap_unfinished(
    store: &Store,
    environment: &str,
    host: &str,
    notify: &mut dyn FnMut(&Notice),
) -> Result<(), StoreError> {
    for d in store.unfinished(Some(environment)).await? {
        let mine = d.pid == std::process::id() && d.host == host;
        // A check takes no lock, so one may be running beside this deploy: on this host its
        // pid tells; on another (a shared PostgreSQL store) nothing does, so it is left be.
        let check_may_run = d.kind == "check" && (d.host != host || pid_alive(d.pid));
        if mine || check_may_run {
            continue;
        }
        let steps = store.steps(d.id).await?;
        let last = steps.iter().rev().find(|s| s.phase == "run");
        let during = last
            .map(|s| format!(" during step `{}` ({})", s.step_id, s.status))
            .unwrap_or_default();
        let reason = format!(
            "stagegate (pid {}) stopped before the run finished{during}; it was not rolled back",
            d.pid
        );
        store
            .mark_abandoned(d.id, &reason, stagegate_store::now_millis())
            .await?;
        notify(&Notice::Reaped {
            environment: environment.to_string(),
            deployment_id: d.id,
            release_version: d.release_version.clone(),
            during,
        });
    }
    Ok(())
}

/// Records one event, and the step row it starts or finishes.
async fn record(store: &Store, id: i64, e: &Event) -> Result<(), StoreError> {
    // A bake's samples are kept once, compactly, as its rounds; the per-sample events and
    // its live lines of figures are for the live stream only.
    match e {
        Event::Measurement { .. } => return Ok(()),
        Event::StepProgress {
            step,
            figures: true,
            ..
        } if step.kind == "watch" => return Ok(()),
        _ => {}
    }
    let data = serde_json::to_value(e).unwrap_or_default();
    store.record_event(id, e.kind(), &data, now_ms()).await?;
    match e {
        Event::StepStarted { step, at } => {
            store
                .upsert_step(&StepRun {
                    deployment_id: id,
                    seq: step.seq as i64,
                    phase: step.phase.into(),
                    stage: step.stage.clone(),
                    step_id: step.id.clone(),
                    name: step.name.clone(),
                    kind: step.kind.clone(),
                    status: stagegate_store::StepState::Running,
                    started_at: *at,
                    finished_at: None,
                    duration_ms: None,
                    exit_code: None,
                    attempts: 0,
                    output_tail: String::new(),
                    error: None,
                    outputs: serde_json::json!({}),
                    details: serde_json::json!({}),
                })
                .await
        }
        Event::StepFinished(r) => {
            store
                .upsert_step(&StepRun {
                    deployment_id: id,
                    seq: r.step.seq as i64,
                    phase: r.step.phase.into(),
                    stage: r.step.stage.clone(),
                    step_id: r.step.id.clone(),
                    name: r.step.name.clone(),
                    kind: r.step.kind.clone(),
                    status: r.status.into(),
                    started_at: r.started_at,
                    finished_at: Some(r.started_at + r.duration_ms as i64),
                    duration_ms: Some(r.duration_ms as i64),
                    exit_code: r.exit_code,
                    attempts: r.attempts as i64,
                    output_tail: r.output_tail.clone(),
                    error: r.error.clone(),
                    outputs: serde_json::to_value(&r.outputs).unwrap_or_default(),
                    details: r.details.to_json(),
                })
                .await
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::event::Outcome;

    /// Keeps what it hears, for the test to read after the session consumed it.
    #[derive(Clone, Default)]
    struct Tape(Arc<Mutex<Vec<String>>>);

    impl EventSink for Tape {
        fn on_event(&mut self, e: &Event) {
            self.0.lock().unwrap().push(e.kind().to_string());
        }
        fn on_notice(&mut self, n: &Notice) {
            self.0.lock().unwrap().push(format!("notice {n:?}"));
        }
        fn finish(&mut self) -> Result<(), SinkError> {
            self.0.lock().unwrap().push("finish".into());
            Ok(())
        }
    }

    fn plan() -> Plan {
        let text =
            "project: lib\nenvironments:\n  staging: {}\nstages:\n  s:\n    - run: \"true\"\n";
        stagegate_plan::load_str(std::path::Path::new("stagegate.yml"), text)
            .expect("a valid plan")
            .0
    }

    fn session<'a>(plan: &'a Plan, store: Store, tape: &Tape, wait: bool) -> Session<'a> {
        Session {
            plan,
            store,
            environment: "staging".into(),
            kind: SessionKind::Deploy,
            actor: "tester".into(),
            host: "test-host".into(),
            lock: LockPolicy {
                wait,
                wait_timeout: Duration::from_secs(5),
                lease: DEFAULT_LEASE,
            },
            control: RunControl::default(),
            sinks: vec![Box::new(tape.clone())],
            logs_dir: None,
        }
    }

    fn report() -> RunReport {
        RunReport {
            outcome: Outcome::Succeeded,
            exit_code: 0,
            summary: "done".into(),
        }
    }

    /// A caller other than the CLI (a server) runs a session with its own sink: events fan out
    /// to it, the record is finished with the engine's outcome, and the lock is freed.
    #[tokio::test]
    async fn a_session_records_fans_out_and_unlocks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let plan = plan();
        let tape = Tape::default();
        let s = session(&plan, Store::open(&db).await.unwrap(), &tape, false);
        let report = s
            .run(
                SessionRelease {
                    version: "1.2.3".into(),
                    sha: "abc".into(),
                },
                |_id, events, _ctl| async move {
                    events.emit(Event::Warning {
                        message: "hello".into(),
                    });
                    report()
                },
            )
            .await
            .unwrap();
        assert_eq!(report.exit_code, 0);
        assert_eq!(*tape.0.lock().unwrap(), vec!["warning", "finish"]);
        let store = Store::open(&db).await.unwrap();
        let d = store.last_deployment("staging", None).await.unwrap();
        let d = d.expect("a recorded deployment");
        assert_eq!(d.outcome, "succeeded");
        assert_eq!(d.release_version, "1.2.3");
        assert_eq!(store.events(d.id).await.unwrap().len(), 1);
        assert!(store.lock_info("staging").await.unwrap().is_none());
    }

    /// While a run goes, its lease is renewed: read from the store it never runs out, though
    /// the run lasts several leases. When someone breaks the lock, the heartbeat finds its
    /// holding gone: the run is stopped (cancel and abort: no rollback), its record says why,
    /// and the sinks hear `LockLost`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lease_is_renewed_while_a_run_goes_and_a_broken_lock_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let plan = plan();
        let tape = Tape::default();
        let mut s = session(&plan, Store::open(&db).await.unwrap(), &tape, false);
        s.lock.lease = Duration::from_millis(300);
        let watcher = Store::open(&db).await.unwrap();
        let run = s.run(
            SessionRelease {
                version: "1".into(),
                sha: String::new(),
            },
            |_, _, ctl| async move {
                // A step that goes on until it is stopped, as a long bake does.
                tokio::select! {
                    () = ctl.abort.cancelled() => RunReport {
                        outcome: Outcome::Failed,
                        exit_code: 130,
                        summary: "stopped".into(),
                    },
                    () = tokio::time::sleep(Duration::from_secs(20)) => report(),
                }
            },
        );
        let watch = async {
            let mut lowest = i64::MAX;
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(l) = watcher.lock_info("staging").await.unwrap() {
                    lowest = lowest.min(l.lease_left_ms.unwrap());
                    assert!(!l.lease_expired(), "{l:?}");
                }
            }
            // 1.2 s, four leases, and it never ran out.
            assert!(lowest > 0, "the lease ran out: {lowest} ms left");
            let note = stagegate_store::LockBreak {
                by: "someone".into(),
                reason: Some("test".into()),
                forced: true,
                at: 0,
            };
            watcher.break_lock("staging", &note).await.unwrap();
        };
        let (report, ()) = tokio::join!(run, watch);
        let report = report.unwrap();
        assert_eq!(report.exit_code, 130);
        assert!(report.summary.contains("was broken"), "{}", report.summary);
        let tape = tape.0.lock().unwrap().clone();
        assert!(
            tape.iter().any(|t| t.starts_with("notice LockLost")),
            "{tape:?}"
        );
        let d = watcher
            .last_deployment("staging", None)
            .await
            .unwrap()
            .unwrap();
        let summary = d.summary.unwrap_or_default();
        assert!(
            summary.contains("stopped without rolling back"),
            "{summary}"
        );
    }

    /// While one session holds the lock, a second is refused (Busy) without waiting, and a
    /// waiting one gives up when cancelled, having recorded nothing.
    #[tokio::test]
    async fn a_held_lock_refuses_and_a_cancelled_wait_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let plan = plan();
        let tape = Tape::default();
        let holder = Store::open(&db).await.unwrap();
        let me = LockInfo {
            environment: "staging".into(),
            deployment_id: None,
            holder: "other@test-host".into(),
            // This process is alive, so the lock is not stale.
            pid: std::process::id(),
            host: "another-host".into(),
            acquired_at: 0,
            pid_started: None,
            boot_id: None,
            token: Some("theirs".into()),
            lease_ms: None,
            lease_left_ms: None,
        };
        assert!(matches!(
            holder.try_lock("staging", &me).await.unwrap(),
            LockAttempt::Acquired
        ));
        let busy = session(&plan, Store::open(&db).await.unwrap(), &tape, false)
            .run(
                SessionRelease {
                    version: "1".into(),
                    sha: String::new(),
                },
                |_, _, _| async { report() },
            )
            .await;
        assert!(
            matches!(
                busy,
                Err(SessionError::Locked {
                    refusal: LockRefusal::Busy,
                    ..
                })
            ),
            "{busy:?}"
        );
        let waiting = session(&plan, Store::open(&db).await.unwrap(), &tape, true);
        let cancel = waiting.control.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let r = waiting
            .run(
                SessionRelease {
                    version: "1".into(),
                    sha: String::new(),
                },
                |_, _, _| async { report() },
            )
            .await;
        assert!(matches!(r, Err(SessionError::Interrupted { .. })), "{r:?}");
        assert!(
            tape.0.lock().unwrap()[0].starts_with("notice WaitingForLock"),
            "{:?}",
            tape.0.lock().unwrap()
        );
        assert!(
            holder
                .last_deployment("staging", None)
                .await
                .unwrap()
                .is_none()
        );
    }
}
