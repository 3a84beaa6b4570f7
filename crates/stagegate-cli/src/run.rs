//! `deploy`, `check` and `rollback`: the engine's session (lock, reap, record, events, finish)
//! with the terminal, the `--events` stream and the `--report` files as its sinks, Ctrl-C
//! wired to its cancel tokens, and its errors turned into exit codes and help.

use stagegate_engine::{
    EventSink, Events, LockPolicy, LockRefusal, RunControl, RunReport, SessionError, SessionKind,
    SessionRelease, exit,
};
use stagegate_plan::Plan;
use stagegate_report::{
    JsonLinesReporter, ReportFiles, ReportFormat, TerminalReporter, describe_lock,
};
use stagegate_store::Store;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, ReportKind, RunArgs};
use crate::context::{Failure, actor, hostname};
use crate::terminal_style;

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
    /// Who hears of the run's start and end (see [`notifier`]).
    pub notify: stagegate_engine::notify::Notifier,
}

/// The notifier of a run of `scope.environment`, telling on stderr of any entry left out.
pub fn notifier(plan: &Plan, scope: &stagegate_plan::Scope) -> stagegate_engine::notify::Notifier {
    let (targets, warnings) = stagegate_engine::notify::targets(plan, scope);
    for w in warnings {
        eprintln!("{w}");
    }
    stagegate_engine::notify::Notifier::new(targets)
}

impl Session<'_> {
    /// Runs `engine` (given the deployment id, events and cancel tokens) under the lock, recording
    /// everything: the engine's [`stagegate_engine::Session`] with the terminal, the JSON Lines
    /// stream and the report files as its sinks.
    pub async fn run<F, Fut>(self, version: &str, sha: &str, engine: F) -> Result<i32, Failure>
    where
        F: FnOnce(i64, Events, CancellationToken, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = RunReport>,
    {
        // Output files are opened or checked before anything is recorded or locked, so a bad
        // path is an input error (exit 2), not a half-recorded run.
        self.check_report_paths()?;
        let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(TerminalReporter::new(
            Box::new(std::io::stderr()),
            terminal_style(self.cli.color),
        ))];
        match &self.args.events {
            None => {}
            Some(p) if p.as_os_str() == "-" => {
                sinks.push(Box::new(JsonLinesReporter::new(
                    Box::new(std::io::stdout()),
                )));
            }
            Some(p) => {
                let file = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        use std::os::unix::fs::OpenOptionsExt;
                        std::fs::OpenOptions::new()
                            .create(true)
                            .write(true)
                            .truncate(true)
                            .mode(0o600)
                            .open(p)
                    })
                    .map_err(|e| {
                        Failure::invalid(format!(
                            "error: cannot write events to {}: {e}",
                            p.display()
                        ))
                    })?;
                sinks.push(Box::new(JsonLinesReporter::new(Box::new(file))));
            }
        }
        let files = self
            .args
            .reports
            .iter()
            .map(|(kind, path)| {
                let format = match kind {
                    ReportKind::Json => ReportFormat::Json,
                    ReportKind::Junit => ReportFormat::Junit,
                    ReportKind::Markdown => ReportFormat::Markdown,
                    ReportKind::Html => ReportFormat::Html,
                };
                (format, path.clone())
            })
            .collect();
        let who = actor(self.args.actor.as_deref());
        sinks.push(Box::new(ReportFiles::new(files).with_actor(who)));
        let notify = self.notify.clone();
        if !notify.is_empty() {
            sinks.push(Box::new(notify.sink()));
        }

        let kind = match self.kind {
            "check" => SessionKind::Check,
            "rollback" => SessionKind::Rollback,
            _ => SessionKind::Deploy,
        };
        let control = RunControl::default();
        watch_signals(control.cancel.clone(), control.abort.clone(), self.kind);
        let session = stagegate_engine::Session {
            plan: self.plan,
            store: self.store,
            environment: self.env.clone(),
            kind,
            actor: actor(self.args.actor.as_deref()),
            host: hostname(),
            lock: LockPolicy {
                wait: self.args.wait,
                wait_timeout: self.args.wait_timeout,
                lease: self
                    .args
                    .lock_lease
                    .unwrap_or(stagegate_engine::session::DEFAULT_LEASE),
            },
            control,
            sinks,
            logs_dir: Some(crate::context::state_dir(self.cli, self.plan).join("logs")),
        };
        let release = SessionRelease {
            version: version.into(),
            sha: sha.into(),
        };
        let env = &self.env;
        let result = session
            .run(release, move |id, events, ctl| {
                engine(id, events, ctl.cancel, ctl.abort)
            })
            .await;
        // Sends still pending are waited for, for a bounded time; a failed one is a
        // warning and never changes the exit code.
        for w in notify.drain().await {
            eprintln!("{w}");
        }
        match result {
            Ok(report) => Ok(report.exit_code),
            Err(SessionError::Locked {
                environment,
                holder,
                refusal,
            }) => {
                let what = describe_lock(&environment, &holder);
                let text = match refusal {
                    LockRefusal::HolderGone if holder.host != hostname() => format!(
                        "error: {what}, but that run is gone: it has not renewed its lease for {}.\n  \
                         = help: check on {} what it left running (`stagegate status {env}`), then `stagegate unlock {env}`",
                        stagegate_report::lease_silence(&holder),
                        holder.host
                    ),
                    LockRefusal::HolderGone => format!(
                        "error: {what}, but that process is gone: it was killed before it finished.\n  \
                         = help: run `stagegate status {env}` to see what it left running, then `stagegate unlock {env}`"
                    ),
                    LockRefusal::Busy => format!(
                        "error: {what}\n  = help: wait for it to finish, or pass --wait to queue behind it"
                    ),
                    LockRefusal::GaveUp(after) => {
                        format!("error: gave up after {after:?} waiting: {what}")
                    }
                };
                Err(Failure::new(exit::LOCKED, text))
            }
            Err(e @ SessionError::Interrupted { .. }) => {
                Err(Failure::new(exit::INTERRUPTED, format!("error: {e}")))
            }
            Err(SessionError::Store(e)) => Err(e.into()),
            Err(SessionError::FinishNotRecorded {
                id,
                outcome,
                exit_code,
                error,
                kept,
            }) => {
                let next = match kept {
                    Some(path) => format!(
                        "the outcome is kept in {}; the next stagegate command that can write the store records it as deployment #{id}'s outcome and frees the lock of `{env}`",
                        path.display()
                    ),
                    None => format!(
                        "it could not be kept elsewhere either: deployment #{id} stays `running` and `{env}` locked; `stagegate unlock {env}` marks it abandoned"
                    ),
                };
                Err(Failure::internal(format!(
                    "deployment #{id} {outcome} (its own exit code: {exit_code}), but the state store could not record it: {error}\n  \
                     = help: {next}; free disk space first (`df -h` on the state directory)"
                )))
            }
            Err(SessionError::Sink(e)) => Err(Failure::internal(e.to_string())),
        }
    }

    fn check_report_paths(&self) -> Result<(), Failure> {
        for (_, path) in &self.args.reports {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let ok = dir.map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
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
}
