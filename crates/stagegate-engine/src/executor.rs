//! The executor: runs a plan's stages in order against one environment, rolls back what ran
//! when a step fails (or the run is interrupted), and reports everything as [`Event`]s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use stagegate_plan::{
    OnFailure, Plan, Scope, Scrubber, Service, ServiceEndpoint, Step, StepKind, Template,
};
use tokio_util::sync::CancellationToken;

use crate::details::{ServiceDetails, SkipDetails, StepDetails};
use crate::driver::{ServiceDriver, driver_for};
use crate::event::{Event, Events, Outcome, Phase, StepRef, StepResult, StepStatus, now_ms};
use crate::local::DriverCtx;
use crate::process::{CommandSpec, read_outputs, run_command};
use crate::step::{RunInputs, StepCtx, StepFilter, StepOutcome, command_cwd, command_env};

/// Everything a run needs. The caller has validated the plan, prepared the scope and
/// created the deployment record (its id names logs and releases).
pub struct RunRequest<'a> {
    pub plan: &'a Plan,
    pub scope: Scope,
    pub deployment_id: i64,
    /// `.stagegate` (or wherever state lives): releases and logs go under it.
    pub state_dir: PathBuf,
    pub supervisor_exe: PathBuf,
    /// Cancels the run (first Ctrl-C / SIGTERM): the current step is killed, rollback runs.
    pub cancel: CancellationToken,
    /// Cancels the rollback as well (a second Ctrl-C).
    pub abort: CancellationToken,
    pub events: Events,
    pub inputs: RunInputs,
    pub filter: StepFilter,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    pub exit_code: i32,
    pub summary: String,
}

/// Something that ran and can be undone.
enum Undo {
    Command {
        stage: String,
        step_id: String,
        name: String,
        script: Template,
        env: BTreeMap<String, Template>,
        cwd: Option<Template>,
        /// The step's own timeout applies to its rollback command too.
        timeout: Option<std::time::Duration>,
    },
    Service {
        service: String,
        target: Option<String>,
        from: String,
    },
    /// A migration that ran (or began): `down`, and the restore its policy calls for.
    Migration(Box<crate::migrate::MigrationUndo>),
}

struct Runner<'a> {
    plan: &'a Plan,
    scope: Scope,
    scrubber: Scrubber,
    deployment_id: i64,
    log_dir: PathBuf,
    driver: Box<dyn ServiceDriver>,
    events: Events,
    seq: u32,
    deployed: Vec<String>,
    // Read by step kinds' runners through `step_ctx` (checks, gates, load tests).
    state_dir: PathBuf,
    inputs: RunInputs,
    /// Migrations that ran and that nothing can undo, each in a sentence, since the run
    /// loop last took them.
    not_undone: Vec<String>,
}

impl<'a> Runner<'a> {
    fn step_ref(&mut self, phase: Phase, stage: &str, id: &str, name: &str, kind: &str) -> StepRef {
        self.seq += 1;
        // A name may hold templates; show it rendered, secrets masked.
        let name = match Template::parse(name) {
            Ok(t) if !t.is_literal() => self.scope.render_for_display(&t),
            _ => name.to_string(),
        };
        let name = name.as_str();
        StepRef {
            seq: self.seq,
            phase,
            stage: stage.to_string(),
            id: id.to_string(),
            name: self.scrubber.scrub(name),
            kind: kind.to_string(),
        }
    }

    fn log_path(&self, r: &StepRef) -> PathBuf {
        self.log_dir.join(format!("{:03}-{}.log", r.seq, r.id))
    }

    // One call site per way a step can end; a builder would only rename these arguments.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        step: StepRef,
        status: StepStatus,
        started: (i64, Instant),
        exit_code: Option<i32>,
        attempts: u32,
        tail: &str,
        error: Option<String>,
        outputs: BTreeMap<String, String>,
        details: StepDetails,
    ) -> StepResult {
        let r = StepResult {
            step,
            status,
            started_at: started.0,
            duration_ms: started.1.elapsed().as_millis() as u64,
            exit_code,
            attempts,
            output_tail: self.scrubber.scrub(tail),
            error: error.map(|e| self.scrubber.scrub(&e)),
            outputs: outputs
                .into_iter()
                .map(|(k, v)| (k, self.scrubber.scrub(&v)))
                .collect(),
            details: details.scrubbed(|v| self.scrubber.scrub_json(v)),
        };
        self.events.emit(Event::StepFinished(r.clone()));
        r
    }

    /// The context a step kind's runner gets.
    fn step_ctx<'s>(
        &'s self,
        step: &'s Step,
        r: &'s StepRef,
        cancel: &'s CancellationToken,
    ) -> StepCtx<'s> {
        StepCtx {
            plan: self.plan,
            step,
            step_ref: r,
            scope: &self.scope,
            scrubber: &self.scrubber,
            cancel,
            events: &self.events,
            log: self.log_path(r),
            state_dir: &self.state_dir,
            deployment_id: self.deployment_id,
            inputs: &self.inputs,
        }
    }

    /// Records a step kind's outcome: secret outputs join the scrubber, outputs the scope.
    fn complete(
        &mut self,
        r: StepRef,
        started: (i64, Instant),
        step: &Step,
        o: StepOutcome,
    ) -> StepResult {
        for name in &o.secret_outputs {
            if let Some(v) = o.outputs.get(name) {
                self.scrubber.add(v);
            }
        }
        if o.status == StepStatus::Passed {
            self.scope
                .step_outputs
                .insert(step.id.clone(), o.outputs.clone());
        }
        self.finish(
            r,
            o.status,
            started,
            o.exit_code,
            o.attempts,
            &o.tail,
            o.error,
            o.outputs,
            o.details,
        )
    }

    /// Records a step as skipped without running it.
    fn skip(&mut self, stage: &str, step: &Step, reason: String) -> StepResult {
        let r = self.step_ref(Phase::Run, stage, &step.id, &step.name, step.kind.name());
        let started = (now_ms(), Instant::now());
        self.events.emit(Event::StepStarted {
            step: r.clone(),
            at: started.0,
        });
        self.finish(
            r,
            StepStatus::Skipped,
            started,
            None,
            0,
            "",
            Some(reason),
            BTreeMap::new(),
            StepDetails::default(),
        )
    }

    /// Runs one step of the plan. Returns its result and what would undo it.
    async fn run_step(
        &mut self,
        stage: &str,
        step: &Step,
        cancel: &CancellationToken,
    ) -> (StepResult, Option<Undo>) {
        let r = self.step_ref(Phase::Run, stage, &step.id, &step.name, step.kind.name());
        let started = (now_ms(), Instant::now());
        self.events.emit(Event::StepStarted {
            step: r.clone(),
            at: started.0,
        });

        match crate::step::when_holds(step, &self.scope) {
            Ok(true) => {}
            Ok(false) => {
                return (
                    self.finish(
                        r,
                        StepStatus::Skipped,
                        started,
                        None,
                        0,
                        "",
                        None,
                        BTreeMap::new(),
                        StepDetails::Skipped(SkipDetails {
                            when: "false".into(),
                        }),
                    ),
                    None,
                );
            }
            Err(e) => {
                return (
                    self.finish(
                        r,
                        StepStatus::Failed,
                        started,
                        None,
                        0,
                        "",
                        Some(format!("cannot evaluate `when`: {e}")),
                        BTreeMap::new(),
                        StepDetails::default(),
                    ),
                    None,
                );
            }
        }

        match &step.kind {
            StepKind::Run { command } => {
                let undo = self.undo_command(stage, step);
                let log = self.log_path(&r);
                let outputs_file = log.with_extension("outputs");
                let prepared = (|| {
                    let shell = self.scope.render_shell(&command.value)?;
                    let script = shell.script;
                    let mut env = command_env(
                        &self.scope,
                        self.deployment_id,
                        step.env.iter().map(|(k, t)| (k, &t.value)),
                    )?;
                    env.extend(shell.env);
                    // A step's own `env` may set it; otherwise the step writes its outputs there.
                    env.entry("STAGEGATE_OUTPUT".to_string())
                        .or_insert_with(|| outputs_file.display().to_string());
                    let cwd = command_cwd(
                        &self.plan.dir,
                        &self.scope,
                        step.cwd.as_ref().map(|c| &c.value),
                    )?;
                    Ok::<_, String>(CommandSpec {
                        script,
                        cwd,
                        env,
                        timeout: step.timeout,
                        log: Some(log.clone()),
                    })
                })();
                let spec = match prepared {
                    Ok(s) => s,
                    Err(e) => {
                        return (
                            self.finish(
                                r,
                                StepStatus::Failed,
                                started,
                                None,
                                0,
                                "",
                                Some(e),
                                BTreeMap::new(),
                                StepDetails::default(),
                            ),
                            None,
                        );
                    }
                };
                let attempts = step.retries + 1;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    // Empty and private (0600) for each attempt; the step appends to it.
                    let _ = crate::process::write_private(&outputs_file, b"");
                    let res = run_command(&spec, &self.scrubber, cancel).await;
                    let status = match res.exit {
                        crate::process::Exit::Code(0) => StepStatus::Passed,
                        crate::process::Exit::TimedOut => StepStatus::TimedOut,
                        crate::process::Exit::Cancelled => StepStatus::Cancelled,
                        _ => StepStatus::Failed,
                    };
                    // The step may have written secret values there: read it, then remove it.
                    let outputs = read_outputs(&outputs_file);
                    let _ = std::fs::remove_file(&outputs_file);
                    if status == StepStatus::Passed {
                        return match outputs {
                            Ok(outputs) => {
                                self.scope
                                    .step_outputs
                                    .insert(step.id.clone(), outputs.clone());
                                (
                                    self.finish(
                                        r,
                                        status,
                                        started,
                                        res.exit_code(),
                                        attempt,
                                        &res.tail,
                                        None,
                                        outputs,
                                        StepDetails::default(),
                                    ),
                                    undo,
                                )
                            }
                            Err(e) => (
                                self.finish(
                                    r,
                                    StepStatus::Failed,
                                    started,
                                    res.exit_code(),
                                    attempt,
                                    &res.tail,
                                    Some(e),
                                    BTreeMap::new(),
                                    StepDetails::default(),
                                ),
                                undo,
                            ),
                        };
                    }
                    let error = format!("command {}", res.describe(step.timeout));
                    if attempt < attempts && status != StepStatus::Cancelled {
                        self.events.emit(Event::StepRetrying {
                            step: r.clone(),
                            attempt,
                            attempts,
                            error: self.scrubber.scrub(&error),
                        });
                        tokio::select! {
                            () = tokio::time::sleep(step.retry_delay) => continue,
                            () = cancel.cancelled() => {}
                        }
                    }
                    return (
                        self.finish(
                            r,
                            status,
                            started,
                            res.exit_code(),
                            attempt,
                            &res.tail,
                            Some(error),
                            BTreeMap::new(),
                            StepDetails::default(),
                        ),
                        undo,
                    );
                }
            }
            StepKind::Deploy { service } => {
                let Some(svc) = self.plan.service(&service.value) else {
                    return (
                        self.finish(
                            r,
                            StepStatus::Failed,
                            started,
                            None,
                            0,
                            "",
                            Some(format!("unknown service `{}`", service.value)),
                            BTreeMap::new(),
                            StepDetails::default(),
                        ),
                        None,
                    );
                };
                let log = self.log_path(&r);
                let overrides = self
                    .plan
                    .environment(&self.scope.environment)
                    .and_then(|e| e.services.get(&svc.name));
                let ctx = DriverCtx {
                    deployment_id: self.deployment_id,
                    scope: &self.scope,
                    overrides,
                    scrubber: &self.scrubber,
                    cancel,
                    events: &self.events,
                    log: Some(log.clone()),
                    pinned: (!self.inputs.pinned.is_empty()).then(|| {
                        self.inputs
                            .pinned
                            .get(&svc.name)
                            .map_or(&[][..], Vec::as_slice)
                    }),
                };
                let result = match self.driver.deploy(svc, &ctx).await {
                    // Drivers that cannot check before they start (an image pulled, a rollout)
                    // are checked here: the new release is rolled back.
                    Ok(d) => match ctx
                        .pinned
                        .and_then(|want| crate::local::artifacts_differ(want, &d.artifacts))
                    {
                        Some(why) => Err(crate::local::DeployError {
                            message: format!("service `{}`: {why}", svc.name),
                            release: Some(d.release),
                            previous: d.previous,
                        }),
                        None => Ok(d),
                    },
                    Err(e) => Err(e),
                };
                let tail = std::fs::read_to_string(&log)
                    .map(|t| crate::process::last_lines(&t, crate::process::TAIL_LINES))
                    .unwrap_or_default();
                match result {
                    Ok(d) => {
                        self.scope.services.insert(
                            svc.name.clone(),
                            ServiceEndpoint {
                                url: d.url.clone(),
                                port: d.port,
                                release: d.release.clone(),
                            },
                        );
                        self.deployed.push(svc.name.clone());
                        let outputs = BTreeMap::from([
                            ("url".to_string(), d.url.clone()),
                            ("port".to_string(), d.port.to_string()),
                            ("release".to_string(), d.release.clone()),
                        ]);
                        let details = StepDetails::Service(Box::new(ServiceDetails {
                            service: svc.name.clone(),
                            driver: Some("local".into()),
                            release: Some(d.release.clone()),
                            previous: d.previous.clone(),
                            url: Some(d.url.clone()),
                            artifacts: d.artifacts.clone(),
                            health: d.health.clone(),
                            ..ServiceDetails::default()
                        }));
                        let undo = Undo::Service {
                            service: svc.name.clone(),
                            target: d.previous.clone(),
                            from: d.release.clone(),
                        };
                        self.scope
                            .step_outputs
                            .insert(step.id.clone(), outputs.clone());
                        (
                            self.finish(
                                r,
                                StepStatus::Passed,
                                started,
                                None,
                                1,
                                &tail,
                                None,
                                outputs,
                                details,
                            ),
                            Some(undo),
                        )
                    }
                    Err(e) => {
                        let status = if cancel.is_cancelled() {
                            StepStatus::Cancelled
                        } else {
                            StepStatus::Failed
                        };
                        // A release that was started (and failed) means the deploy had begun: roll back to the previous one.
                        let undo = e.release.clone().map(|from| Undo::Service {
                            service: svc.name.clone(),
                            target: e.previous.clone(),
                            from,
                        });
                        let details = StepDetails::Service(Box::new(ServiceDetails {
                            service: svc.name.clone(),
                            release: e.release.clone(),
                            previous: e.previous.clone(),
                            ..ServiceDetails::default()
                        }));
                        (
                            self.finish(
                                r,
                                status,
                                started,
                                None,
                                1,
                                &tail,
                                Some(e.message),
                                BTreeMap::new(),
                                details,
                            ),
                            undo,
                        )
                    }
                }
            }
            StepKind::Gate(spec) => {
                // A gate changes nothing: there is nothing to undo.
                let outcome = {
                    let ctx = self.step_ctx(step, &r, cancel);
                    crate::gate::run(spec, &ctx).await
                };
                (self.complete(r, started, step, outcome), None)
            }
            StepKind::Check(spec) => {
                let outcome = {
                    let ctx = self.step_ctx(step, &r, cancel);
                    crate::check::run(spec, &ctx).await
                };
                let undo = self.undo_command(stage, step);
                (self.complete(r, started, step, outcome), undo)
            }
            StepKind::Watch(spec) => {
                let outcome = {
                    let ctx = self.step_ctx(step, &r, cancel);
                    crate::watch::run(spec, &ctx).await
                };
                let undo = self.undo_command(stage, step);
                (self.complete(r, started, step, outcome), undo)
            }
            StepKind::Load(spec) => {
                let outcome = {
                    let ctx = self.step_ctx(step, &r, cancel);
                    crate::load::run(spec, &ctx).await
                };
                let undo = self.undo_command(stage, step);
                (self.complete(r, started, step, outcome), undo)
            }
            StepKind::Migrate(spec) => {
                let run = {
                    let ctx = self.step_ctx(step, &r, cancel);
                    crate::migrate::run(spec, &ctx, stage).await
                };
                // The database password is masked from here on, this step's record included.
                for m in &run.mask {
                    self.scrubber.add(m);
                }
                self.not_undone.extend(run.not_undone);
                let undo = run.undo.map(|u| Undo::Migration(Box::new(u)));
                (self.complete(r, started, step, run.outcome), undo)
            }
        }
    }

    /// A step's `rollback` command, to run if a later step fails.
    fn undo_command(&self, stage: &str, step: &Step) -> Option<Undo> {
        step.rollback.as_ref().map(|t| Undo::Command {
            stage: stage.to_string(),
            step_id: step.id.clone(),
            name: step.name.clone(),
            script: t.value.clone(),
            env: step
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
            cwd: step.cwd.as_ref().map(|c| c.value.clone()),
            timeout: step.timeout,
        })
    }

    /// Undoes what ran, newest first. Returns whether every action succeeded, what failed,
    /// and what undoing each migration did, in a sentence each.
    async fn rollback(
        &mut self,
        undo: Vec<Undo>,
        abort: &CancellationToken,
    ) -> (bool, Vec<String>, Vec<String>) {
        let mut ok = true;
        let mut failed = Vec::new();
        let mut migrations = Vec::new();
        for u in undo.into_iter().rev() {
            match u {
                Undo::Migration(m) => {
                    let (done, statement) = self.undo_migration(&m, abort).await;
                    if !done {
                        ok = false;
                        failed.push(statement.clone());
                    }
                    migrations.push(statement);
                }
                Undo::Command {
                    stage,
                    step_id,
                    name,
                    script,
                    env,
                    cwd,
                    timeout,
                } => {
                    let r = self.step_ref(
                        Phase::Rollback,
                        &stage,
                        &format!("{step_id}.rollback"),
                        &format!("undo: {name}"),
                        "rollback-command",
                    );
                    let started = (now_ms(), Instant::now());
                    self.events.emit(Event::StepStarted {
                        step: r.clone(),
                        at: started.0,
                    });
                    let log = self.log_path(&r);
                    let spec = (|| {
                        let shell = self.scope.render_shell(&script)?;
                        let mut env = command_env(&self.scope, self.deployment_id, &env)?;
                        env.extend(shell.env);
                        Ok::<_, String>(CommandSpec {
                            script: shell.script,
                            cwd: command_cwd(&self.plan.dir, &self.scope, cwd.as_ref())?,
                            env,
                            timeout,
                            log: Some(log),
                        })
                    })();
                    let (status, code, tail, error) = match spec {
                        Err(e) => (StepStatus::Failed, None, String::new(), Some(e)),
                        Ok(spec) => {
                            let res = run_command(&spec, &self.scrubber, abort).await;
                            if res.success() {
                                (StepStatus::Passed, res.exit_code(), res.tail, None)
                            } else {
                                (
                                    StepStatus::Failed,
                                    res.exit_code(),
                                    res.tail.clone(),
                                    Some(format!("rollback command {}", res.describe(timeout))),
                                )
                            }
                        }
                    };
                    if status != StepStatus::Passed {
                        ok = false;
                        failed.push(format!(
                            "the rollback command of step `{step_id}` failed: {}",
                            error.clone().unwrap_or_default()
                        ));
                    }
                    self.finish(
                        r,
                        status,
                        started,
                        code,
                        1,
                        &tail,
                        error,
                        BTreeMap::new(),
                        StepDetails::default(),
                    );
                }
                Undo::Service {
                    service,
                    target,
                    from,
                } => {
                    let r = self.step_ref(
                        Phase::Rollback,
                        "rollback",
                        &format!("restore-{service}"),
                        &format!(
                            "restore {service} to {}",
                            target.as_deref().unwrap_or("no release")
                        ),
                        "restore-service",
                    );
                    let started = (now_ms(), Instant::now());
                    self.events.emit(Event::StepStarted {
                        step: r.clone(),
                        at: started.0,
                    });
                    let Some(svc) = self.plan.service(&service) else {
                        continue;
                    };
                    let overrides = self
                        .plan
                        .environment(&self.scope.environment)
                        .and_then(|e| e.services.get(&service));
                    let ctx = DriverCtx {
                        deployment_id: self.deployment_id,
                        scope: &self.scope,
                        overrides,
                        scrubber: &self.scrubber,
                        cancel: abort,
                        events: &self.events,
                        log: None,
                        pinned: None,
                    };
                    match self
                        .driver
                        .restore(svc, &ctx, target.as_deref(), Some(&from))
                        .await
                    {
                        Ok(msg) => {
                            self.finish(
                                r,
                                StepStatus::Passed,
                                started,
                                None,
                                1,
                                &msg,
                                None,
                                BTreeMap::new(),
                                StepDetails::Service(Box::new(ServiceDetails {
                                    service: service.clone(),
                                    release: target.clone(),
                                    from: Some(from.clone()),
                                    ..ServiceDetails::default()
                                })),
                            );
                        }
                        Err(e) => {
                            ok = false;
                            failed.push(format!(
                                "service `{service}` could not be restored to {}: {e}",
                                target.as_deref().unwrap_or("nothing")
                            ));
                            self.finish(
                                r,
                                StepStatus::Failed,
                                started,
                                None,
                                1,
                                "",
                                Some(e),
                                BTreeMap::new(),
                                StepDetails::Service(Box::new(ServiceDetails {
                                    service: service.clone(),
                                    release: target.clone(),
                                    from: Some(from.clone()),
                                    ..ServiceDetails::default()
                                })),
                            );
                        }
                    }
                }
            }
        }
        (ok, failed, migrations)
    }

    /// Undoes a migration: `down` (unless `restore: always`), then the restore when the
    /// policy calls for it. Returns whether the database is back as it was, and a sentence
    /// that says what was and was not undone.
    /// Starts a rollback step of a migration's undo: its record and its start event.
    fn begin_undo_step(
        &mut self,
        stage: &str,
        id: &str,
        name: &str,
        kind: &str,
    ) -> (StepRef, (i64, Instant)) {
        let r = self.step_ref(Phase::Rollback, stage, id, name, kind);
        let started = (now_ms(), Instant::now());
        self.events.emit(Event::StepStarted {
            step: r.clone(),
            at: started.0,
        });
        (r, started)
    }

    /// What undoing migration step `step` needs, logging to `r`'s log.
    fn undo_ctx<'c>(
        &'c self,
        step: &'c stagegate_plan::Step,
        spec: &'c stagegate_plan::MigrateSpec,
        r: &StepRef,
        cancel: &'c CancellationToken,
    ) -> crate::migrate::UndoCtx<'c> {
        crate::migrate::UndoCtx {
            plan: self.plan,
            step,
            spec,
            scope: &self.scope,
            scrubber: &self.scrubber,
            deployment_id: self.deployment_id,
            log: self.log_path(r),
            cancel,
        }
    }

    async fn undo_migration(
        &mut self,
        u: &crate::migrate::MigrationUndo,
        abort: &CancellationToken,
    ) -> (bool, String) {
        use crate::migrate::{restored, statement, undo_details};
        use stagegate_plan::RestorePolicy;
        let plan = self.plan;
        let Some(step) = plan.steps().map(|(_, s)| s).find(|s| s.id == u.step_id) else {
            return (false, format!("step `{}` is not in the plan", u.step_id));
        };
        let StepKind::Migrate(spec) = &step.kind else {
            return (false, format!("step `{}` is not a migration", u.step_id));
        };
        let mut parts: Vec<String> = Vec::new();
        let mut ok = true;
        let restore = match (spec.restore, &spec.down) {
            (RestorePolicy::Always, _) => true,
            (policy, None) => {
                parts.push("no `down` command".into());
                policy == RestorePolicy::OnDownFailure
            }
            (policy, Some(_)) => {
                let (r, started) = self.begin_undo_step(
                    &u.stage,
                    &format!("{}.down", u.step_id),
                    &format!("undo: {} (down)", step.name),
                    "migrate-down",
                );
                let cx = self.undo_ctx(step, spec, &r, abort);
                let (status, code, tail, part) = match crate::migrate::down(&cx, u).await {
                    Ok(res) if res.success() => (
                        StepStatus::Passed,
                        res.exit_code(),
                        res.tail,
                        "`down` ran and succeeded".to_string(),
                    ),
                    Ok(res) => (
                        StepStatus::Failed,
                        res.exit_code(),
                        res.tail.clone(),
                        format!("`down` failed (it {})", res.describe(step.timeout)),
                    ),
                    Err(e) => (
                        StepStatus::Failed,
                        None,
                        String::new(),
                        format!("`down` could not run: {e}"),
                    ),
                };
                let failed = status != StepStatus::Passed;
                self.finish(
                    r,
                    status,
                    started,
                    code,
                    1,
                    &tail,
                    failed.then(|| part.clone()),
                    BTreeMap::new(),
                    undo_details("down", u, Vec::new(), Some(part.clone())),
                );
                parts.push(part);
                if failed && policy == RestorePolicy::Never {
                    ok = false;
                    parts.push("not restored (`restore: never`)".into());
                }
                failed && policy == RestorePolicy::OnDownFailure
            }
        };
        if restore {
            match &u.backup {
                None => {
                    ok = false;
                    parts.push("no backup was taken, so it cannot be restored".into());
                }
                Some(backup) => {
                    let (r, started) = self.begin_undo_step(
                        &u.stage,
                        &format!("{}.restore", u.step_id),
                        &format!("undo: {} (restore the backup)", step.name),
                        "migrate-restore",
                    );
                    let cx = self.undo_ctx(step, spec, &r, abort);
                    match crate::migrate::restore(&cx, backup).await {
                        Ok(dropped) => {
                            let part = restored(backup, &dropped);
                            self.finish(
                                r,
                                StepStatus::Passed,
                                started,
                                None,
                                1,
                                "",
                                None,
                                BTreeMap::new(),
                                undo_details("restore", u, dropped, Some(part.clone())),
                            );
                            parts.push(part);
                        }
                        Err(f) => {
                            ok = false;
                            let part = format!("the restore failed: {}", f.message);
                            self.finish(
                                r,
                                StepStatus::Failed,
                                started,
                                f.exit_code,
                                1,
                                &f.tail,
                                Some(part.clone()),
                                BTreeMap::new(),
                                undo_details("restore", u, Vec::new(), Some(part.clone())),
                            );
                            parts.push(part);
                        }
                    }
                }
            }
        }
        (ok, statement(&u.step_id, &u.up, &parts))
    }
}

/// Runs every stage of the plan. Never panics on a failed step; the report says what happened.
pub async fn run_deploy(req: RunRequest<'_>) -> RunReport {
    let started = Instant::now();
    let plan = req.plan;
    let scrubber = req.scope.scrubber();
    let log_dir = req
        .state_dir
        .join("logs")
        .join(req.deployment_id.to_string());
    let made = {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&log_dir)
    };
    if let Err(e) = made {
        req.events.emit(Event::Warning {
            message: format!(
                "cannot create the log directory {}: {e}; step logs are not kept",
                log_dir.display()
            ),
        });
    }
    let driver = driver_for(
        plan,
        &req.state_dir,
        &req.scope.environment,
        req.supervisor_exe.clone(),
    );
    req.events.emit(Event::RunStarted {
        deployment_id: req.deployment_id,
        project: plan.project.clone(),
        environment: req.scope.environment.clone(),
        kind: if req.filter == StepFilter::GatesOnly {
            "check".into()
        } else {
            "deploy".into()
        },
        release: req.scope.release.clone(),
        plan_hash: plan.hash.clone(),
        steps_total: plan
            .steps()
            .filter(|(_, s)| req.filter == StepFilter::All || s.kind.is_gate())
            .count(),
        at: now_ms(),
    });
    let on_failure = plan
        .environment(&req.scope.environment)
        .and_then(|e| e.on_failure)
        .unwrap_or(plan.on_failure);
    let mut inputs = req.inputs.clone();
    if req.filter == StepFilter::All {
        // `baseline: before`: the previous release's values, before anything changes.
        crate::watch::capture_before(plan, &req.scope, &mut inputs, &req.events).await;
    }
    let mut runner = Runner {
        plan,
        scope: req.scope,
        scrubber,
        deployment_id: req.deployment_id,
        log_dir,
        driver,
        events: req.events.clone(),
        seq: 0,
        deployed: Vec::new(),
        state_dir: req.state_dir.clone(),
        inputs,
        not_undone: Vec::new(),
    };

    let mut undo: Vec<Undo> = Vec::new();
    let mut no_undo: Vec<String> = Vec::new();
    // Migrations that ran and that nothing can undo: said in the summary if the run fails.
    let mut migrations_not_undone: Vec<String> = Vec::new();
    let mut failure: Option<String> = None;
    // A failed gate stops the run before the next step that would change something; the
    // gates right after it still run, so one run reports every gate that fails.
    let mut gate_failure: Option<String> = None;
    let mut more_failed_gates: Vec<String> = Vec::new();
    let mut awaiting: Option<(String, String)> = None;
    'stages: for stage in &plan.stages {
        let applies = |s: &&stagegate_plan::Step| req.filter == StepFilter::All || s.kind.is_gate();
        let Some(first) = stage.steps.iter().find(applies) else {
            if req.filter == StepFilter::GatesOnly || gate_failure.is_some() {
                continue;
            }
            req.events.emit(Event::StageStarted {
                stage: stage.name.clone(),
            });
            continue;
        };
        if gate_failure.is_some() && !first.kind.is_gate() {
            break 'stages;
        }
        req.events.emit(Event::StageStarted {
            stage: stage.name.clone(),
        });
        for step in stage.steps.iter().filter(applies) {
            if gate_failure.is_some() && !step.kind.is_gate() {
                break 'stages;
            }
            if req.cancel.is_cancelled() {
                failure = Some("the run was interrupted".into());
                break 'stages;
            }
            // `check` deploys nothing, so a gate that needs what the deploy produces waits
            // for the deploy.
            if req.filter == StepFilter::GatesOnly
                && let Some(needs) = crate::gate::needs_deploy_values(plan, step)
            {
                runner.skip(
                    &stage.name,
                    step,
                    format!("skipped by `check`: it needs {needs}, which only a deploy produces"),
                );
                continue;
            }
            let (result, u) = runner.run_step(&stage.name, step, &req.cancel).await;
            // Whether the step's command started at all (a step that failed to render did not).
            let ran = result.attempts > 0 && !matches!(result.status, StepStatus::Skipped);
            match u {
                Some(u) => undo.push(u),
                None if ran && matches!(step.kind, StepKind::Run { .. }) => no_undo.push(format!(
                    "step `{}` has no `rollback` command: its effects remain",
                    step.id
                )),
                None => {}
            }
            for n in runner.not_undone.drain(..) {
                no_undo.push(n.clone());
                migrations_not_undone.push(n);
            }
            // An inconclusive watch nobody decided yet: the run ends here, the release runs.
            if result.status.is_failure()
                && !req.cancel.is_cancelled()
                && result
                    .details
                    .watch()
                    .is_some_and(|w| w.verdict == "inconclusive" && w.decision.is_none())
            {
                awaiting = Some((step.id.clone(), result.error.clone().unwrap_or_default()));
                break 'stages;
            }
            if result.status.is_failure() {
                if req.cancel.is_cancelled() {
                    failure = Some(format!("the run was interrupted during step `{}`", step.id));
                    break 'stages;
                }
                if step.continue_on_error {
                    req.events.emit(Event::Warning {
                        message: format!(
                            "step `{}` failed; continuing because it has `continue_on_error: true`",
                            step.id
                        ),
                    });
                    continue;
                }
                let error = result
                    .error
                    .clone()
                    .unwrap_or_else(|| result.status.as_str().into());
                // A gate's error carries its help below the first line; the record keeps it.
                let error = if step.kind.is_gate() {
                    error.lines().next().unwrap_or_default().to_string()
                } else {
                    error
                };
                let reason = format!("step `{}` failed: {error}", step.id);
                if step.kind.is_gate() {
                    if gate_failure.is_none() {
                        gate_failure = Some(reason);
                    } else {
                        more_failed_gates.push(format!("`{}`", step.id));
                    }
                    continue;
                }
                failure = Some(reason);
                break 'stages;
            }
        }
    }
    if failure.is_none()
        && let Some(mut reason) = gate_failure
    {
        if !more_failed_gates.is_empty() {
            reason.push_str(&format!(
                "\nthe gate(s) {} failed as well",
                more_failed_gates.join(", ")
            ));
        }
        failure = Some(reason);
    }

    let interrupted = req.cancel.is_cancelled();
    let (outcome, summary) = if let Some((step_id, why)) = awaiting {
        let after: Vec<String> = plan
            .steps()
            .skip_while(|(_, s)| s.id != step_id)
            .skip(1)
            .map(|(_, s)| format!("`{}`", s.id))
            .collect();
        let live: Vec<String> = runner
            .deployed
            .iter()
            .filter_map(|n| runner.scope.services.get(n).map(|s| where_it_runs(n, s)))
            .collect();
        let mut s = format!(
            "step `{step_id}` is inconclusive: {}\nrelease {} keeps running in {}{}; nothing was rolled back.\ndecide: stagegate decide {} --pass --reason \"...\" (finishes the deployment) or --fail --reason \"...\" (rolls it back)",
            runner.scrubber.scrub(&why),
            runner.scope.release.version,
            runner.scope.environment,
            if live.is_empty() {
                String::new()
            } else {
                format!(" ({})", live.join(", "))
            },
            req.deployment_id
        );
        if !after.is_empty() {
            s.push_str(&format!(
                "\nthe steps after it did not run and will not: {}; to run them after a decision, deploy with --wait-decision",
                after.join(", ")
            ));
        }
        (Outcome::AwaitingDecision, s)
    } else {
        match failure {
            None => {
                let mut retired = Vec::new();
                for name in runner.deployed.clone() {
                    if let Some(svc) = plan.service(&name) {
                        retired.extend(runner.driver.retire(svc, &runner.events).await);
                    }
                }
                let live: Vec<String> = runner
                    .deployed
                    .iter()
                    .filter_map(|n| runner.scope.services.get(n).map(|s| where_it_runs(n, s)))
                    .collect();
                let mut s = if req.filter == StepFilter::GatesOnly {
                    format!(
                        "every gate passed for release {} in {}; nothing was changed",
                        runner.scope.release.version, runner.scope.environment
                    )
                } else {
                    format!(
                        "release {} is live in {}",
                        runner.scope.release.version, runner.scope.environment
                    )
                };
                if !live.is_empty() {
                    s.push_str(&format!(": {}", live.join(", ")));
                }
                (Outcome::Succeeded, s)
            }
            Some(reason) => {
                let reason = runner.scrubber.scrub(&reason);
                // Migrations that ran and that nothing undoes, a line each.
                let not_undone = |s: &mut String| {
                    for n in &migrations_not_undone {
                        s.push('\n');
                        s.push_str(n);
                    }
                };
                if on_failure == OnFailure::Stop && !interrupted {
                    let mut what = if undo.is_empty() && migrations_not_undone.is_empty() {
                        "nothing had changed".to_string()
                    } else {
                        format!(
                            "{} change(s) stay as they are (on_failure: stop); run `stagegate rollback {}` to undo the services",
                            undo.len() + migrations_not_undone.len(),
                            runner.scope.environment
                        )
                    };
                    for u in &undo {
                        if let Undo::Migration(m) = u {
                            what.push_str(&format!(
                                "\nstep `{}`: {}; not undone (on_failure: stop){}",
                                m.step_id,
                                crate::migrate::migration_state(&m.up),
                                m.backup
                                    .as_ref()
                                    .map(|b| format!("; {} is at {}", b.describe(), b.path))
                                    .unwrap_or_default()
                            ));
                        }
                    }
                    not_undone(&mut what);
                    (Outcome::Failed, format!("{reason}\n{what}"))
                } else if undo.is_empty() {
                    let o = if interrupted {
                        Outcome::Interrupted
                    } else {
                        Outcome::Failed
                    };
                    let mut s = if migrations_not_undone.is_empty() {
                        format!(
                            "{reason}\nnothing had changed yet, so there was nothing to roll back"
                        )
                    } else {
                        format!("{reason}\nnothing was rolled back:")
                    };
                    not_undone(&mut s);
                    (o, s)
                } else {
                    req.events.emit(Event::RollbackStarted {
                        reason: reason.clone(),
                        actions: undo.len(),
                    });
                    let (ok, mut not_rolled_back, migrations) =
                        runner.rollback(undo, &req.abort).await;
                    not_rolled_back.extend(no_undo.clone());
                    req.events.emit(Event::RollbackFinished {
                        ok,
                        not_rolled_back: not_rolled_back
                            .iter()
                            .map(|s| runner.scrubber.scrub(s))
                            .collect(),
                    });
                    let state: Vec<String> = runner
                        .deployed
                        .iter()
                        .map(|n| match runner.driver.current(n) {
                            Some(r) => format!("{n} on {r}"),
                            None => format!("{n} stopped"),
                        })
                        .collect();
                    let state = if state.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", state.join(", "))
                    };
                    let mut s = if ok && migrations_not_undone.is_empty() {
                        format!(
                            "{reason}\nrolled back: {} is as it was before this deployment{state}",
                            runner.scope.environment
                        )
                    } else if ok {
                        format!(
                            "{reason}\nrolled back what could be undone{state}; a migration was not"
                        )
                    } else {
                        format!(
                            "{reason}\nthe rollback failed as well; {} is in a mixed state{state}. Check `stagegate status {}` and fix by hand or run `stagegate rollback {}`",
                            runner.scope.environment,
                            runner.scope.environment,
                            runner.scope.environment
                        )
                    };
                    for m in &migrations {
                        s.push('\n');
                        s.push_str(m);
                    }
                    not_undone(&mut s);
                    let o = match (ok, interrupted) {
                        (true, true) => Outcome::Interrupted,
                        (true, false) => Outcome::RolledBack,
                        (false, _) => Outcome::RollbackFailed,
                    };
                    (o, runner.scrubber.scrub(&s))
                }
            }
        }
    };
    if outcome == Outcome::Failed && !no_undo.is_empty() && on_failure == OnFailure::Rollback {
        // Commands ran but none had a rollback: say so, the environment may have changed.
        req.events.emit(Event::Warning {
            message: format!("not rolled back: {}", no_undo.join("; ")),
        });
    }
    let exit_code = outcome.exit_code();
    req.events.emit(Event::RunFinished {
        outcome,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        summary: summary.clone(),
        at: now_ms(),
    });
    RunReport {
        outcome,
        exit_code,
        summary,
    }
}

/// What a manual rollback or stop needs.
pub struct ServiceRequest<'a> {
    pub plan: &'a Plan,
    pub scope: Scope,
    pub deployment_id: i64,
    pub state_dir: PathBuf,
    pub supervisor_exe: PathBuf,
    pub cancel: CancellationToken,
    pub events: Events,
}

impl ServiceRequest<'_> {
    pub fn driver(&self) -> Box<dyn ServiceDriver> {
        driver_for(
            self.plan,
            &self.state_dir,
            &self.scope.environment,
            self.supervisor_exe.clone(),
        )
    }
}

/// `stagegate rollback ENV [--to RELEASE]`: every service (or one) back to its previous good
/// release or a named one, health verified, recorded like a deployment.
pub async fn run_manual_rollback(
    req: ServiceRequest<'_>,
    only: Option<&str>,
    to: Option<&str>,
) -> RunReport {
    let only: Vec<String> = only.map(str::to_string).into_iter().collect();
    run_manual_rollback_of(req, &only, to, None).await
}

/// [`run_manual_rollback`] of the services named in `only` (none: every service), with the
/// reason to record. With a reason (a person decided the release failed), a service with no
/// earlier release to go back to is stopped rather than left running.
pub async fn run_manual_rollback_of(
    req: ServiceRequest<'_>,
    only: &[String],
    to: Option<&str>,
    reason: Option<&str>,
) -> RunReport {
    let stop_without_previous = reason.is_some();
    let started = Instant::now();
    let driver = req.driver();
    let scrubber = req.scope.scrubber();
    req.events.emit(Event::RunStarted {
        deployment_id: req.deployment_id,
        project: req.plan.project.clone(),
        environment: req.scope.environment.clone(),
        kind: "rollback".into(),
        release: req.scope.release.clone(),
        plan_hash: req.plan.hash.clone(),
        steps_total: req.plan.services.len(),
        at: now_ms(),
    });
    req.events.emit(Event::RollbackStarted {
        reason: match reason {
            Some(r) => scrubber.scrub(r),
            None => format!(
                "manual rollback{}",
                to.map(|t| format!(" to {t}")).unwrap_or_default()
            ),
        },
        actions: req.plan.services.len(),
    });
    let mut seq = 0;
    let mut ok = true;
    let mut notes = Vec::new();
    let mut done = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let services: Vec<&Service> = req
        .plan
        .services
        .iter()
        .rev()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect();
    for svc in services {
        // A run killed mid-deploy may have left a release starting (never current) and the
        // current one stopped: undoing that run means bringing the current release back.
        let abandoned = driver.reconcile(svc).await;
        let current = driver.current(&svc.name);
        let current_down = current
            .as_deref()
            .and_then(|c| driver.release(&svc.name, c))
            .is_some_and(|r| !r.serving());
        let target = match to {
            Some(t) => driver.find_release(&svc.name, t).map(|r| r.meta.id),
            None if !abandoned.is_empty() && current_down => current.clone(),
            None => driver.previous_good(&svc.name).map(|r| r.meta.id),
        };
        // A release judged bad with nothing before it is stopped.
        let stop = target.is_none() && stop_without_previous && to.is_none() && current.is_some();
        if target.is_none() && !stop {
            notes.push(match to {
                Some(t) => format!("service `{}` has no release `{t}` on disk", svc.name),
                None => format!(
                    "service `{}` has no earlier release to go back to",
                    svc.name
                ),
            });
            if to.is_some() {
                ok = false;
            }
            continue;
        }
        if let Some(target) = &target
            && current.as_deref() == Some(target.as_str())
            && driver
                .release(&svc.name, target)
                .is_some_and(|r| r.serving())
        {
            notes.push(format!(
                "service `{}` already runs release {target}",
                svc.name
            ));
            continue;
        }
        seq += 1;
        let step = StepRef {
            seq,
            phase: Phase::Rollback,
            stage: "rollback".into(),
            id: format!("restore-{}", svc.name),
            name: match &target {
                Some(t) => format!("restore {} to {t}", svc.name),
                None => format!("stop {} (no earlier release)", svc.name),
            },
            kind: "restore-service".into(),
        };
        let at = now_ms();
        let t0 = Instant::now();
        req.events.emit(Event::StepStarted {
            step: step.clone(),
            at,
        });
        let overrides = req
            .plan
            .environment(&req.scope.environment)
            .and_then(|e| e.services.get(&svc.name));
        let ctx = DriverCtx {
            deployment_id: req.deployment_id,
            scope: &req.scope,
            overrides,
            scrubber: &scrubber,
            cancel: &req.cancel,
            events: &req.events,
            log: None,
            pinned: None,
        };
        let res = driver
            .restore(svc, &ctx, target.as_deref(), current.as_deref())
            .await;
        let (status, tail, error) = match res {
            Ok(m) => {
                done.push(match &target {
                    Some(t) => format!("{} on {t}", svc.name),
                    None => format!("{} stopped", svc.name),
                });
                (StepStatus::Passed, m, None)
            }
            Err(e) => {
                ok = false;
                let e = scrubber.scrub(&e);
                errors.push(e.clone());
                (StepStatus::Failed, String::new(), Some(e))
            }
        };
        req.events.emit(Event::StepFinished(StepResult {
            step,
            status,
            started_at: at,
            duration_ms: t0.elapsed().as_millis() as u64,
            exit_code: None,
            attempts: 1,
            output_tail: scrubber.scrub(&tail),
            error,
            outputs: BTreeMap::new(),
            details: StepDetails::Service(Box::new(ServiceDetails {
                service: svc.name.clone(),
                release: target.clone(),
                from: current.clone(),
                ..ServiceDetails::default()
            })),
        }));
    }
    notes.push("step rollback commands (database down-migrations and the like) are not run by a manual rollback; run them by hand if needed".into());
    req.events.emit(Event::RollbackFinished {
        ok,
        not_rolled_back: notes.clone(),
    });
    let (outcome, summary) = if ok {
        (
            Outcome::Succeeded,
            if done.is_empty() {
                "nothing to roll back".to_string()
            } else {
                format!("rolled back: {}", done.join(", "))
            },
        )
    } else {
        (
            Outcome::RollbackFailed,
            format!(
                "the rollback failed: {}",
                errors
                    .iter()
                    .chain(&notes)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    };
    let exit_code = outcome.exit_code();
    req.events.emit(Event::RunFinished {
        outcome,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        summary: summary.clone(),
        at: now_ms(),
    });
    RunReport {
        outcome,
        exit_code,
        summary,
    }
}

/// `web 1.0.0-d1 at http://127.0.0.1:PORT`; without an address (a kubernetes service with
/// no health URL) just the release.
fn where_it_runs(name: &str, s: &stagegate_plan::ServiceEndpoint) -> String {
    if s.url.is_empty() {
        format!("{name} {}", s.release)
    } else {
        format!("{name} {} at {}", s.release, s.url)
    }
}
