//! `stagegate decide N --pass|--fail --reason TEXT`: a person's decision on an inconclusive
//! `watch` step, recorded with who and when.
//!
//! Two cases:
//! - the deployment ended as `awaiting_decision` (the deploy exited 7): `--pass` finishes it
//!   as succeeded (the releases it replaced are retired), `--fail` rolls its services back
//!   to the release before it, recorded as a rollback run, and finishes it as rolled back;
//! - the deployment still runs (`deploy --wait-decision` waits in another process): the
//!   decision is recorded and that process picks it up and goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use stagegate_engine::watch::{Decision, DecisionSource};
use stagegate_engine::{DriverFuture, Events, exit};
use stagegate_plan::Plan;
use stagegate_store::{DecisionRecord, Deployment, LockAttempt, Outcome, StepRun, Store};

use crate::cli::{Cli, DecideArgs};
use crate::context::{CmdResult, Failure, actor, hostname, load_plan, open_store, state_dir};

/// Decisions read from the state store, where `stagegate decide` writes them.
pub struct StoreDecisions(pub Store);

impl DecisionSource for StoreDecisions {
    fn poll<'a>(
        &'a self,
        deployment_id: i64,
        step_id: &'a str,
    ) -> DriverFuture<'a, Option<Decision>> {
        Box::pin(async move {
            let d = self.0.decision(deployment_id, Some(step_id)).await.ok()??;
            Some(Decision {
                pass: d.pass,
                actor: d.actor,
                reason: d.reason,
                at: d.decided_at,
            })
        })
    }
}

/// The newest deployment of `env` when it awaits a decision: a new deploy must wait for it.
pub async fn pending_decision(store: &Store, env: &str) -> Result<Option<Deployment>, Failure> {
    // `check` runs change nothing, so they do not hide a deploy awaiting a decision.
    let recent = store.deployments(Some(env), 100).await?;
    Ok(recent
        .into_iter()
        .find(|d| d.kind != "check" && d.kind != crate::promote::REQUEST)
        .filter(|d| d.outcome == Outcome::AwaitingDecision))
}

/// Finishes deployment `d`, which awaited a decision, as rolled back by the manual rollback
/// `rollback_id` (`stagegate rollback ENV` instead of `stagegate decide`).
/// Nothing happens while a release that deployment started is still current.
pub async fn finish_undecided(
    cli: &Cli,
    plan: &Plan,
    store: &Store,
    d: &Deployment,
    rollback_id: i64,
) -> Result<(), Failure> {
    let exe = std::env::current_exe().unwrap_or_default();
    let driver = crate::context::driver_for(cli, plan, &d.environment, exe);
    let still = services_of(plan, driver.as_ref(), d.id);
    if !still.is_empty() {
        eprintln!(
            "note: deployment #{} still awaits a decision: its release of {} still runs; `stagegate decide {} --fail --reason \"...\"` stops it",
            d.id,
            still.join(", "),
            d.id
        );
        return Ok(());
    }
    let summary = format!(
        "awaited a decision on its inconclusive bake; nobody decided: `stagegate rollback` (deployment #{rollback_id}) rolled it back"
    );
    store
        .finish_deployment(
            d.id,
            Outcome::RolledBack,
            exit::ROLLED_BACK,
            &summary,
            stagegate_store::now_millis(),
        )
        .await?;
    eprintln!("note: deployment #{}: {summary}", d.id);
    Ok(())
}

/// The watch steps of `dep` that wait for a person's decision now: the undecided
/// inconclusive ones of a deployment that ended awaiting a decision, or those a
/// `deploy --wait-decision` in another process waits on (its `decision_pending` events
/// without a `decided`). None for any other outcome.
pub async fn waiting_steps(
    store: &Store,
    dep: &Deployment,
    steps: &[StepRun],
) -> Result<Vec<String>, Failure> {
    Ok(match dep.outcome {
        Outcome::AwaitingDecision => undecided(steps).iter().map(|s| s.step_id.clone()).collect(),
        Outcome::Running => {
            let events = store.events(dep.id).await?;
            let of = |kind: &str| -> Vec<String> {
                events
                    .iter()
                    .filter(|e| e.kind == kind)
                    .filter_map(|e| e.data["step"]["id"].as_str().map(str::to_string))
                    .collect()
            };
            let decided = of("decided");
            of("decision_pending")
                .into_iter()
                .filter(|s| !decided.contains(s))
                .collect()
        }
        _ => Vec::new(),
    })
}

/// Inconclusive watch steps of a deployment that nobody has decided yet.
fn undecided(steps: &[StepRun]) -> Vec<&StepRun> {
    steps
        .iter()
        .filter(|s| s.kind == "watch" && s.phase == stagegate_store::Phase::Run)
        .filter(|s| {
            let w = &s.details["watch"];
            w["verdict"] == "inconclusive" && w["decision"].is_null()
        })
        .collect()
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

pub async fn decide(cli: &Cli, args: &DecideArgs) -> CmdResult {
    let reason = args.reason.trim();
    if reason.is_empty() {
        return Err(Failure::invalid(
            "error: --reason is empty; say why, e.g. --reason \"p95 is flat against the baseline\"",
        ));
    }
    let pass = args.pass;
    let plan = load_plan(cli)?;
    let store = open_store(cli, &plan).await?;
    let id = args.deployment;
    let Some(dep) = store.deployment(id).await? else {
        return Err(Failure::invalid(format!(
            "error: there is no deployment #{id}\n  = help: `stagegate history` lists the deployments"
        )));
    };
    if dep.kind != "deploy" {
        return Err(Failure::invalid(format!(
            "error: deployment #{id} is a `{}` run; only a deploy's watch steps wait for a decision",
            dep.kind
        )));
    }
    let steps = store.steps(id).await?;
    let step_id = match dep.outcome {
        Outcome::AwaitingDecision => {
            pick_step(id, &waiting_steps(&store, &dep, &steps).await?, args)?
        }
        Outcome::Running => {
            let open = waiting_steps(&store, &dep, &steps).await?;
            if open.is_empty() {
                if let Some(d) = store.decision(id, args.step.as_deref()).await? {
                    return Err(Failure::invalid(format!(
                        "error: step `{}` of deployment #{id} is already decided: {} by {} at {}: {}; the deploy goes on",
                        d.step_id,
                        if d.pass { "passed" } else { "failed" },
                        d.actor,
                        when(d.decided_at),
                        d.reason
                    )));
                }
                return Err(Failure::invalid(format!(
                    "error: deployment #{id} is running and does not wait for a decision (no watch step of it is inconclusive)\n  = help: `stagegate show {id}` shows where it is"
                )));
            }
            pick_step(id, &open, args)?
        }
        other => {
            let mut msg = format!(
                "error: deployment #{id} does not wait for a decision: it {}",
                describe(other)
            );
            for s in steps.iter().filter(|s| s.kind == "watch") {
                if let Some(d) = store.decision(id, Some(&s.step_id)).await? {
                    msg.push_str(&format!(
                        "\n  = note: step `{}` was decided {} by {} at {}: {}",
                        s.step_id,
                        if d.pass { "passed" } else { "failed" },
                        d.actor,
                        when(d.decided_at),
                        d.reason
                    ));
                }
            }
            return Err(Failure::invalid(msg));
        }
    };
    // Acting on a finished run changes the environment: refuse before recording anything
    // while another run holds it, so a refused decision can simply be made again.
    if dep.outcome == Outcome::AwaitingDecision
        && let Some(h) = store.lock_info(&dep.environment).await?
    {
        return Err(Failure::new(
            exit::LOCKED,
            format!(
                "error: {}; nothing was decided\n  = help: wait for it to finish, then decide again",
                stagegate_report::describe_lock(&dep.environment, &h)
            ),
        ));
    }
    let scrubber = plan_scrubber(&plan, &dep.environment);
    let who = actor(args.actor.as_deref());
    let record = DecisionRecord {
        deployment_id: id,
        step_id: step_id.clone(),
        pass,
        actor: who.clone(),
        reason: scrubber(reason),
        decided_at: stagegate_store::now_millis(),
    };
    if !store.record_decision(&record).await? {
        let prev = store.decision(id, Some(&step_id)).await?;
        let by = prev
            .map(|d| {
                format!(
                    "{} by {} at {}: {}",
                    if d.pass { "passed" } else { "failed" },
                    d.actor,
                    when(d.decided_at),
                    d.reason
                )
            })
            .unwrap_or_else(|| "by someone else".into());
        return Err(Failure::invalid(format!(
            "error: step `{step_id}` of deployment #{id} is already decided: {by}"
        )));
    }
    let verb = if pass { "passed" } else { "failed" };
    if dep.outcome == Outcome::Running {
        // The waiting deploy records its own `decided` event when it picks this up.
        println!(
            "recorded: step `{step_id}` of deployment #{id} {verb}, decided by {who}; the waiting deploy (pid {}) goes on",
            dep.pid
        );
        return Ok(exit::SUCCESS);
    }
    let _ = store
        .record_event(
            id,
            "decided",
            &serde_json::json!({
                "step": { "id": step_id },
                "pass": pass,
                "actor": who,
                "reason": record.reason,
            }),
            record.decided_at,
        )
        .await;
    mark_step(&store, &steps, &step_id, &record).await?;
    if pass {
        accept(cli, &plan, &store, &dep, &steps, &step_id, &record).await
    } else {
        reject(cli, &plan, store, &dep, &step_id, &record).await
    }
}

fn describe(o: Outcome) -> String {
    match o {
        Outcome::Succeeded => "succeeded".into(),
        Outcome::RolledBack => "was rolled back".into(),
        Outcome::Failed => "failed".into(),
        Outcome::RollbackFailed => "failed and its rollback failed".into(),
        Outcome::Abandoned => "was abandoned (its process died)".into(),
        other => format!("ended as {other}"),
    }
}

/// The step to decide: `--step`, or the only open one.
fn pick_step(id: i64, open: &[String], args: &DecideArgs) -> Result<String, Failure> {
    if let Some(s) = &args.step {
        if open.contains(s) {
            return Ok(s.clone());
        }
        return Err(Failure::invalid(format!(
            "error: step `{s}` of deployment #{id} does not wait for a decision; {}",
            if open.is_empty() {
                "none does".to_string()
            } else {
                format!("these do: {}", open.join(", "))
            }
        )));
    }
    match open {
        [] => Err(Failure::invalid(format!(
            "error: deployment #{id} awaits a decision but no inconclusive watch step of it was recorded\n  = help: `stagegate show {id}` shows its steps"
        ))),
        [one] => Ok(one.clone()),
        many => Err(Failure::invalid(format!(
            "error: deployment #{id} has several watch steps to decide: {}; name one with --step",
            many.join(", ")
        ))),
    }
}

/// `text` with the plan's secret values of `env` masked (a comment quoting a token).
pub fn scrub_for(plan: &Plan, env: &str, text: &str) -> String {
    plan_scrubber(plan, env)(text)
}

/// Masks the plan's secret values in text a person typed (a reason quoting a token).
fn plan_scrubber(plan: &Plan, env: &str) -> impl Fn(&str) -> String {
    let scope = crate::context::prepare_scope(plan, env, &Default::default()).ok();
    move |s: &str| match &scope {
        Some(scope) => scope.scrubber().scrub(s),
        None => s.to_string(),
    }
}

/// Records the decision on the watch step itself: its status and its details.
async fn mark_step(
    store: &Store,
    steps: &[StepRun],
    step_id: &str,
    d: &DecisionRecord,
) -> Result<(), Failure> {
    let Some(step) = steps
        .iter()
        .find(|s| s.step_id == step_id && s.kind == "watch")
    else {
        return Ok(());
    };
    let mut step = step.clone();
    step.details["watch"]["decision"] = serde_json::json!({
        "pass": d.pass,
        "actor": d.actor,
        "reason": d.reason,
        "at": d.decided_at,
    });
    let why = step.error.clone().unwrap_or_default();
    if d.pass {
        step.status = stagegate_store::StepState::Passed;
        step.error = None;
    } else {
        step.status = stagegate_store::StepState::Failed;
        step.error = Some(format!(
            "{why}; {} decided it failed: {}",
            d.actor, d.reason
        ));
    }
    store.upsert_step(&step).await?;
    Ok(())
}

/// Services whose current release deployment `id` started.
fn services_of(plan: &Plan, driver: &dyn stagegate_engine::ServiceDriver, id: i64) -> Vec<String> {
    plan.services
        .iter()
        .filter(|s| {
            driver
                .current(&s.name)
                .and_then(|c| driver.release(&s.name, &c))
                .is_some_and(|r| r.meta.deployment_id == id)
        })
        .map(|s| s.name.clone())
        .collect()
}

/// Takes the environment's lock for a short change (returning the holding's token), or says
/// who holds it.
async fn lock(store: &Store, env: &str, who: &str, id: i64) -> Result<String, Failure> {
    let me = stagegate_engine::session::new_holding(
        env,
        who,
        &hostname(),
        Some(id),
        stagegate_engine::session::DEFAULT_LEASE,
    );
    match store.try_lock(env, &me).await? {
        LockAttempt::Acquired => Ok(me.token.unwrap_or_default()),
        LockAttempt::Held(h) => Err(Failure::new(
            exit::LOCKED,
            format!(
                "error: {}\n  = help: wait for it to finish, then decide again",
                stagegate_report::describe_lock(env, &h)
            ),
        )),
    }
}

/// `--pass` on a finished run: the new release stays, what it replaced is retired.
async fn accept(
    cli: &Cli,
    plan: &Plan,
    store: &Store,
    dep: &Deployment,
    steps: &[StepRun],
    step_id: &str,
    d: &DecisionRecord,
) -> CmdResult {
    let env = &dep.environment;
    let id = dep.id;
    let held = stagegate_engine::session::Heartbeat::start(
        store.clone(),
        env.clone(),
        lock(store, env, &d.actor, id).await?,
        stagegate_engine::session::DEFAULT_LEASE,
        Vec::new(),
    );
    let exe = std::env::current_exe().unwrap_or_default();
    let driver = crate::context::driver_for(cli, plan, env, exe);
    let (events, rx) = Events::channel();
    drop(rx);
    let mine = services_of(plan, driver.as_ref(), id);
    let mut retired = Vec::new();
    for name in &mine {
        if let Some(svc) = plan.service(name) {
            retired.extend(driver.retire(svc, &events).await);
        }
    }
    let mut summary = format!(
        "release {} is live in {env}: step `{step_id}` was inconclusive and {} decided it passed: {}",
        dep.release_version, d.actor, d.reason
    );
    let not_run: Vec<String> = plan_steps_after(plan, step_id)
        .into_iter()
        .filter(|s| !steps.iter().any(|r| r.step_id == *s))
        .map(|s| format!("`{s}`"))
        .collect();
    if !not_run.is_empty() {
        summary.push_str(&format!(
            "; the steps after it did not run: {}",
            not_run.join(", ")
        ));
    }
    let finished = store
        .finish_deployment(
            id,
            Outcome::Succeeded,
            exit::SUCCESS,
            &summary,
            stagegate_store::now_millis(),
        )
        .await;
    let token = held.token().to_string();
    drop(held);
    let _ = store.release_lock(env, &token).await;
    finished?;
    notify_accepted(plan, dep, &summary).await;
    println!("deployment #{id} succeeded: {summary}");
    if !retired.is_empty() {
        println!("retired: {}", retired.join(", "));
    }
    Ok(exit::SUCCESS)
}

/// Tells the notifiers that a deployment awaiting a decision succeeded after all; waits
/// for the sends (bounded) and prints failures as warnings.
async fn notify_accepted(plan: &Plan, dep: &Deployment, summary: &str) {
    use stagegate_engine::notify::{Notification, NotifiedRelease, rfc3339};
    if plan.notifiers(&dep.environment).is_empty() {
        return;
    }
    let Ok(scope) = crate::context::prepare_scope(plan, &dep.environment, &Default::default())
    else {
        eprintln!(
            "warning: the notifiers were not told: the secrets of `{}` are missing",
            dep.environment
        );
        return;
    };
    let notify = crate::run::notifier(plan, &scope);
    if notify.is_empty() {
        return;
    }
    notify.send(&Notification {
        event: stagegate_plan::NotifyEvent::Succeeded.as_str(),
        kind: dep.kind.clone(),
        project: dep.project.clone(),
        environment: dep.environment.clone(),
        deployment_id: Some(dep.id),
        request_id: None,
        release: NotifiedRelease {
            version: dep.release_version.clone(),
            sha: dep.release_sha.clone(),
        },
        outcome: Some(stagegate_engine::Outcome::Succeeded.as_str()),
        exit_code: Some(exit::SUCCESS),
        summary: Some(summary.to_string()),
        duration_ms: None,
        at: rfc3339(stagegate_engine::now_ms()),
    });
    for w in notify.drain().await {
        eprintln!("{w}");
    }
}

/// The plan's step ids after `step_id`, in order.
fn plan_steps_after(plan: &Plan, step_id: &str) -> Vec<String> {
    plan.steps()
        .skip_while(|(_, s)| s.id != step_id)
        .skip(1)
        .map(|(_, s)| s.id.clone())
        .collect()
}

/// `--fail` on a finished run: a rollback run puts its services back on the release
/// before it; the deployment is finished as rolled back (or as its rollback failed).
async fn reject(
    cli: &Cli,
    plan: &Plan,
    store: Store,
    dep: &Deployment,
    step_id: &str,
    d: &DecisionRecord,
) -> CmdResult {
    let env = dep.environment.clone();
    let id = dep.id;
    let exe = std::env::current_exe().map_err(|e| {
        Failure::internal(format!("error: cannot find the stagegate executable: {e}"))
    })?;
    let driver = crate::context::driver_for(cli, plan, &env, exe.clone());
    let mine = services_of(plan, driver.as_ref(), id);
    drop(driver);
    let why = format!(
        "deployment #{id}'s step `{step_id}` was decided failed by {}: {}",
        d.actor, d.reason
    );
    let rollback_id = Arc::new(AtomicI64::new(0));
    let code = if mine.is_empty() {
        None
    } else {
        let mut scope = crate::context::prepare_scope(plan, &env, &Default::default())?;
        scope.release.version = "previous".into();
        let session = crate::run::Session {
            cli,
            plan,
            store: store.clone(),
            env: env.clone(),
            args: crate::cli::RunArgs {
                actor: Some(d.actor.clone()),
                ..Default::default()
            },
            kind: "rollback",
            notify: crate::run::notifier(plan, &scope),
        };
        let seen = rollback_id.clone();
        let why = why.clone();
        Some(
            session
                .run("previous", "", move |rid, events, cancel, _abort| {
                    seen.store(rid, Ordering::SeqCst);
                    async move {
                        let req = stagegate_engine::ServiceRequest {
                            plan,
                            scope,
                            deployment_id: rid,
                            state_dir: state_dir(cli, plan),
                            supervisor_exe: exe,
                            cancel,
                            events,
                        };
                        stagegate_engine::executor::run_manual_rollback_of(
                            req,
                            &mine,
                            None,
                            Some(&why),
                        )
                        .await
                    }
                })
                .await?,
        )
    };
    let rid = rollback_id.load(Ordering::SeqCst);
    let (outcome, code, summary) = match code {
        None => (
            Outcome::RolledBack,
            exit::SUCCESS,
            format!("{why}; none of its releases runs any more, nothing to roll back"),
        ),
        Some(0) => (
            Outcome::RolledBack,
            exit::SUCCESS,
            format!("{why}; rolled back by deployment #{rid}"),
        ),
        Some(c) => (
            Outcome::RollbackFailed,
            c,
            format!(
                "{why}; the rollback (deployment #{rid}) failed: `stagegate show {rid}` says why"
            ),
        ),
    };
    let exit_code = if outcome == Outcome::RolledBack {
        exit::ROLLED_BACK
    } else {
        exit::ROLLBACK_FAILED
    };
    store
        .finish_deployment(
            id,
            outcome,
            exit_code,
            &summary,
            stagegate_store::now_millis(),
        )
        .await?;
    println!(
        "deployment #{id} {}: {summary}",
        outcome.as_str().replace('_', " ")
    );
    Ok(code)
}
