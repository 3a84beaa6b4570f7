//! `deploy`, `check` and `rollback`: take the environment's lock (a check, which changes
//! nothing, does not), record a deployment, run the engine, and feed its events to the
//! terminal, the store and the reports.

use std::io::Write;
use std::time::{Duration, Instant};

use stagegate_engine::{Event, Events, RunReport, exit};
use stagegate_plan::Plan;
use stagegate_report::{JsonLinesReporter, RunSummary, TerminalReporter, format_time_ms};
use stagegate_store::{LockAttempt, LockInfo, NewDeployment, StepRun, Store};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, ReportKind, RunArgs};
use crate::context::{Failure, actor, hostname};
use crate::terminal_style;

/// Takes the lock of `env`, waiting if asked. A lock left by a dead process is reported.
pub async fn acquire_lock(
    store: &Store,
    env: &str,
    args: &RunArgs,
    who: &str,
) -> Result<(), Failure> {
    let me = LockInfo {
        environment: env.to_string(),
        deployment_id: None,
        holder: format!("{who}@{}", hostname()),
        pid: std::process::id(),
        host: hostname(),
        acquired_at: stagegate_store::now_millis(),
    };
    let started = Instant::now();
    let mut said_waiting = false;
    loop {
        match store.try_lock(env, &me).await? {
            LockAttempt::Acquired => return Ok(()),
            LockAttempt::Held(h) => {
                let dead = h.host == hostname() && !stagegate_engine::process::pid_alive(h.pid);
                let what = format!(
                    "environment `{env}` is locked by {} (pid {} on {}{}) since {}",
                    h.holder,
                    h.pid,
                    h.host,
                    h.deployment_id
                        .map(|d| format!(", deployment #{d}"))
                        .unwrap_or_default(),
                    format_time_ms(h.acquired_at)
                );
                if dead {
                    return Err(Failure::new(
                        exit::LOCKED,
                        format!(
                            "error: {what}, but that process is gone: it was killed before it finished.\n  \
                             = help: run `stagegate status {env}` to see what it left running, then `stagegate unlock {env}`"
                        ),
                    ));
                }
                if !args.wait {
                    return Err(Failure::new(
                        exit::LOCKED,
                        format!(
                            "error: {what}\n  = help: wait for it to finish, or pass --wait to queue behind it"
                        ),
                    ));
                }
                if started.elapsed() > args.wait_timeout {
                    return Err(Failure::new(
                        exit::LOCKED,
                        format!(
                            "error: gave up after {:?} waiting: {what}",
                            args.wait_timeout
                        ),
                    ));
                }
                if !said_waiting {
                    eprintln!("waiting: {what}");
                    said_waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Marks runs of `env` whose process is gone as abandoned, telling the user what was left.
pub async fn reap_unfinished(store: &Store, env: &str) -> Result<(), Failure> {
    for d in store.unfinished(Some(env)).await? {
        // A check takes no lock, so one may be running beside this deploy.
        if d.pid == std::process::id()
            || (d.kind == "check" && stagegate_engine::process::pid_alive(d.pid))
        {
            continue;
        }
        let steps = store.steps(d.id).await?;
        let last = steps.iter().rev().find(|s| s.phase == "run");
        let at = last
            .map(|s| format!(" during step `{}` ({})", s.step_id, s.status))
            .unwrap_or_default();
        let reason = format!(
            "stagegate (pid {}) stopped before the run finished{at}; it was not rolled back",
            d.pid
        );
        store
            .mark_abandoned(d.id, &reason, stagegate_store::now_millis())
            .await?;
        eprintln!(
            "warning: deployment #{} (release {}) was left unfinished{at} and has been marked abandoned.\n  \
             = help: check `stagegate status {env}`; `stagegate rollback {env}` returns services to their previous release",
            d.id, d.release_version
        );
    }
    Ok(())
}

/// Ctrl-C / SIGTERM: the first cancels the run (rollback follows), the second aborts the rollback.
fn watch_signals(cancel: CancellationToken, abort: CancellationToken, kind: &'static str) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            count += 1;
            if count == 1 && kind == "rollback" {
                eprintln!("\ninterrupted: stopping the rollback after the current service");
                cancel.cancel();
            } else if count == 1 {
                eprintln!(
                    "\ninterrupted: stopping the current step; what began will be rolled back (press Ctrl-C again to abort the rollback)"
                );
                cancel.cancel();
            } else {
                eprintln!("\naborting the rollback");
                abort.cancel();
            }
        }
    });
}

pub struct Session<'a> {
    pub cli: &'a Cli,
    pub plan: &'a Plan,
    pub store: Store,
    pub env: String,
    pub args: RunArgs,
    pub kind: &'static str,
}

impl Session<'_> {
    /// A check changes nothing: it runs beside a deploy instead of waiting for its lock.
    fn locks(&self) -> bool {
        self.kind != "check"
    }

    /// Runs `engine` (given the deployment id, events and cancel tokens) under the lock, recording everything.
    pub async fn run<F, Fut>(self, version: &str, sha: &str, engine: F) -> Result<i32, Failure>
    where
        F: FnOnce(i64, Events, CancellationToken, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = RunReport>,
    {
        let who = actor(self.args.actor.as_deref());
        // Output files are opened or checked before anything is recorded or locked, so a bad
        // path is an input error (exit 2), not a half-recorded run.
        self.check_report_paths()?;
        let jsonl = match &self.args.events {
            None => None,
            Some(p) if p.as_os_str() == "-" => {
                Some(JsonLinesReporter::new(Box::new(std::io::stdout())))
            }
            Some(p) => {
                let file = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::File::create(p))
                    .map_err(|e| {
                        Failure::invalid(format!(
                            "error: cannot write events to {}: {e}",
                            p.display()
                        ))
                    })?;
                Some(JsonLinesReporter::new(Box::new(file)))
            }
        };
        let locking = self.locks();
        if locking {
            acquire_lock(&self.store, &self.env, &self.args, &who).await?;
        }
        let result = self.run_locked(version, sha, &who, jsonl, engine).await;
        if locking {
            let _ = self.store.release_lock(&self.env, std::process::id()).await;
        }
        result
    }

    async fn run_locked<F, Fut>(
        &self,
        version: &str,
        sha: &str,
        who: &str,
        mut jsonl: Option<JsonLinesReporter>,
        engine: F,
    ) -> Result<i32, Failure>
    where
        F: FnOnce(i64, Events, CancellationToken, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = RunReport>,
    {
        let locking = self.locks();
        if locking {
            reap_unfinished(&self.store, &self.env).await?;
        }
        let id = self
            .store
            .begin_deployment(&NewDeployment {
                project: self.plan.project.clone(),
                environment: self.env.clone(),
                kind: self.kind.into(),
                release_version: version.into(),
                release_sha: sha.into(),
                plan_hash: self.plan.hash.clone(),
                actor: who.into(),
                pid: std::process::id(),
                host: hostname(),
                started_at: stagegate_store::now_millis(),
            })
            .await?;
        if locking {
            self.store
                .set_lock_deployment(&self.env, std::process::id(), id)
                .await?;
        }

        let (events, mut rx) = Events::channel();
        let cancel = CancellationToken::new();
        let abort = CancellationToken::new();
        watch_signals(cancel.clone(), abort.clone(), self.kind);

        let mut terminal =
            TerminalReporter::new(Box::new(std::io::stderr()), terminal_style(self.cli.color));
        let mut summary = RunSummary::new();
        let store = &self.store;
        let consume = async {
            let mut store_errors = 0;
            while let Some(e) = rx.recv().await {
                terminal.on_event(&e);
                summary.apply(&e);
                if let Some(j) = jsonl.as_mut() {
                    let _ = j.on_event(&e);
                }
                if let Err(err) = record(store, id, &e).await {
                    store_errors += 1;
                    if store_errors == 1 {
                        eprintln!("warning: cannot record to the state store: {err}");
                    }
                }
            }
            terminal.finish();
        };
        let (report, ()) = tokio::join!(engine(id, events, cancel, abort), consume);
        store
            .finish_deployment(
                id,
                report.outcome.as_str(),
                report.exit_code,
                &report.summary,
                stagegate_store::now_millis(),
            )
            .await?;
        self.write_reports(&summary)?;
        Ok(report.exit_code)
    }

    fn check_report_paths(&self) -> Result<(), Failure> {
        for (_, path) in &self.args.reports {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let ok = dir.map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(|_| ())
            });
            if let Err(e) = ok {
                return Err(Failure::invalid(format!(
                    "error: cannot write the report {}: {e}; nothing ran",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn write_reports(&self, summary: &RunSummary) -> Result<(), Failure> {
        for (kind, path) in &self.args.reports {
            let mut buf = Vec::new();
            let r = match kind {
                ReportKind::Json => stagegate_report::write_json(summary, &mut buf),
                ReportKind::Junit => stagegate_report::write_junit(summary, &mut buf),
                ReportKind::Markdown => stagegate_report::write_markdown(summary, &mut buf),
            };
            r.and_then(|()| {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(path)?.write_all(&buf)
            })
            .map_err(|e| {
                Failure::internal(format!("cannot write the report {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

async fn record(store: &Store, id: i64, e: &Event) -> Result<(), stagegate_store::StoreError> {
    let data = serde_json::to_value(e).unwrap_or_default();
    store
        .record_event(id, e.kind(), &data, stagegate_engine::now_ms())
        .await?;
    match e {
        Event::StepStarted { step, at } => {
            store
                .upsert_step(&StepRun {
                    deployment_id: id,
                    seq: step.seq as i64,
                    phase: step.phase.as_str().into(),
                    stage: step.stage.clone(),
                    step_id: step.id.clone(),
                    name: step.name.clone(),
                    kind: step.kind.clone(),
                    status: "running".into(),
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
                    phase: r.step.phase.as_str().into(),
                    stage: r.step.stage.clone(),
                    step_id: r.step.id.clone(),
                    name: r.step.name.clone(),
                    kind: r.step.kind.clone(),
                    status: r.status.as_str().into(),
                    started_at: r.started_at,
                    finished_at: Some(r.started_at + r.duration_ms as i64),
                    duration_ms: Some(r.duration_ms as i64),
                    exit_code: r.exit_code,
                    attempts: r.attempts as i64,
                    output_tail: r.output_tail.clone(),
                    error: r.error.clone(),
                    outputs: serde_json::to_value(&r.outputs).unwrap_or_default(),
                    details: r.details.clone(),
                })
                .await
        }
        _ => Ok(()),
    }
}
