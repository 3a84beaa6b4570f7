//! The `stagegate` binary: parses arguments, calls the libraries, maps results to exit codes.

/// `println!` that stops quietly when stdout is closed (`stagegate history | head -1`)
/// instead of panicking on a broken pipe.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` with the same broken-pipe behaviour as `println!`.
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod audit;
mod cli;
mod context;
mod decide;
mod doc;
mod explain;
mod load;
mod preflight;
mod promote;
mod query;
mod run;
mod runbook;
mod serve;

use clap::Parser;
use stagegate_engine::exit;
use stagegate_report::TerminalStyle;

use stagegate_engine::StepFilter;

use crate::cli::{
    BakeArgs, Cli, ColorChoice, Command, GateArgs, ProtectArgs, ReleaseArgs, RunArgs,
};
use crate::context::{CmdResult, Failure, load_plan, open_store, prepare_scope, state_dir};

pub fn terminal_style(choice: ColorChoice) -> TerminalStyle {
    let auto = TerminalStyle::for_stderr();
    match choice {
        ColorChoice::Auto => auto,
        ColorChoice::Always => TerminalStyle {
            color: true,
            ..auto
        },
        ColorChoice::Never => TerminalStyle {
            color: false,
            ..auto
        },
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::INVALID
            } else {
                exit::SUCCESS
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::INTERNAL);
        }
    };
    let code = runtime.block_on(dispatch(&cli)).unwrap_or_else(|f| {
        eprintln!("{}", f.message.trim_end());
        f.code
    });
    // The runtime may hold a blocked reader of a child's pipe; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

async fn dispatch(cli: &Cli) -> CmdResult {
    match &cli.command {
        Command::Supervise { dir } => Ok(stagegate_engine::supervisor::supervise(dir).await),
        Command::Validate { json } => query::validate(cli, *json),
        Command::Explain { key } => explain::explain(key.as_deref()),
        Command::Plan { env, release } => {
            let plan = load_plan(cli)?;
            let scope = prepare_scope(&plan, env, release)?;
            query::print_plan(&plan, &scope);
            Ok(exit::SUCCESS)
        }
        Command::Deploy {
            env,
            release,
            gates,
            bake,
            protect,
            run,
        } => {
            deploy(
                cli,
                env,
                release,
                gates,
                Some((bake, protect, None)),
                run,
                None,
                StepFilter::All,
            )
            .await
        }
        Command::Promote {
            from,
            to,
            gates,
            bake,
            protect,
            run,
        } => {
            deploy(
                cli,
                to,
                &ReleaseArgs::default(),
                gates,
                Some((bake, protect, Some(from.as_str()))),
                run,
                None,
                StepFilter::All,
            )
            .await
        }
        Command::Approve(args) => {
            promote::approve(cli, args, stagegate_store::Verdict::Approved).await
        }
        Command::Reject(args) => {
            promote::approve(cli, args, stagegate_store::Verdict::Rejected).await
        }
        Command::Decide(args) => decide::decide(cli, args).await,
        Command::Check {
            env,
            release,
            gates,
            at,
            run,
        } => {
            deploy(
                cli,
                env,
                release,
                gates,
                None,
                run,
                *at,
                StepFilter::GatesOnly,
            )
            .await
        }
        Command::Rollback {
            env,
            to,
            service,
            run,
        } => {
            let plan = load_plan(cli)?;
            if let Some(s) = service
                && plan.service(s).is_none()
            {
                return Err(Failure::invalid(format!(
                    "error: the plan has no service `{s}`"
                )));
            }
            let mut scope = prepare_scope(&plan, env, &Default::default())?;
            let store = open_store(cli, &plan).await?;
            let store_handle = store.clone();
            let exe = supervisor_exe()?;
            if let Some(t) = to {
                let driver = context::driver_for(cli, &plan, env, exe.clone());
                let found = plan
                    .services
                    .iter()
                    .filter(|s| service.as_ref().is_none_or(|o| *o == s.name))
                    .any(|s| driver.find_release(&s.name, t).is_some());
                if !found {
                    return Err(Failure::invalid(format!(
                        "error: no service of `{env}` has a release `{t}` on disk; `stagegate status {env}` lists the releases"
                    )));
                }
            }
            let label = to.clone().unwrap_or_else(|| "previous".into());
            // The record and the header name the release being returned to.
            scope.release.version = label.clone();
            let session = run::Session {
                cli,
                plan: &plan,
                store,
                env: env.clone(),
                args: run.clone(),
                kind: "rollback",
                notify: run::notifier(&plan, &scope),
            };
            let plan_ref = &plan;
            // A deploy awaiting a decision that this rollback undoes is finished by it.
            let pending = match service {
                None => decide::pending_decision(&store_handle, env).await?,
                Some(_) => None,
            };
            let rollback_id = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
            let seen = rollback_id.clone();
            let code = session
                .run(&label, "", move |id, events, cancel, _abort| async move {
                    seen.store(id, std::sync::atomic::Ordering::SeqCst);
                    let req = stagegate_engine::ServiceRequest {
                        plan: plan_ref,
                        scope,
                        deployment_id: id,
                        state_dir: state_dir(cli, plan_ref),
                        supervisor_exe: exe,
                        cancel,
                        events,
                    };
                    stagegate_engine::run_manual_rollback(req, service.as_deref(), to.as_deref())
                        .await
                })
                .await?;
            if let Some(d) = pending.filter(|_| code == exit::SUCCESS) {
                let rid = rollback_id.load(std::sync::atomic::Ordering::SeqCst);
                decide::finish_undecided(cli, &plan, &store_handle, &d, rid).await?;
            }
            Ok(code)
        }
        Command::Status { env, json } => query::status(cli, env, *json).await,
        Command::Stop { env, service } => query::stop(cli, env, service.as_deref()).await,
        Command::History { env, limit, json } => {
            query::history(cli, env.as_deref(), *limit, *json).await
        }
        Command::Show { deployment, json } => query::show(cli, *deployment, *json).await,
        Command::Unlock { env, force, reason } => {
            query::unlock(cli, env, *force, reason.as_deref()).await
        }
        Command::Audit { action } => audit::run(cli, action).await,
        Command::Load(args) => load::load(args).await,
        Command::Serve(args) => serve::serve(cli, args).await,
        Command::Token { action } => serve::token(cli, action).await,
        Command::Import {
            runbook,
            output,
            force,
        } => runbook::import(runbook, output.as_deref(), *force),
        Command::Doc {
            env,
            output,
            force,
            check,
        } => {
            let plan = load_plan(cli)?;
            doc::doc(
                &plan,
                &context::plan_path(cli),
                env.as_deref(),
                output.as_deref(),
                *force,
                *check,
            )
        }
    }
}

/// `deploy ENV` runs every stage; `check ENV` only the gates, changing nothing; `promote
/// FROM ENV` deploys what passed FROM (`bake` carries the protection flags and FROM).
#[allow(clippy::too_many_arguments)]
async fn deploy(
    cli: &Cli,
    env: &str,
    release: &ReleaseArgs,
    gates: &GateArgs,
    bake: Option<(&BakeArgs, &ProtectArgs, Option<&str>)>,
    run: &RunArgs,
    at: Option<jiff::Timestamp>,
    filter: StepFilter,
) -> CmdResult {
    let plan = load_plan(cli)?;
    if plan.environment(env).is_none() {
        // The scope says so with the list; before the store, so nothing is recorded.
        prepare_scope(&plan, env, release)?;
    }
    let store = open_store(cli, &plan).await?;
    let (bake, protect, from) = match bake {
        Some((b, p, f)) => (Some(b), Some(p), f),
        None => (None, None, None),
    };
    let mut release = release.clone();
    let mut source = None;
    if let Some(f) = from {
        if plan.environment(f).is_none() {
            return Err(Failure::invalid(format!(
                "error: the plan has no environment `{f}`; it has: {}",
                plan.environment_names().join(", ")
            )));
        }
        let src = promote::source_release(cli, &plan, &store, f, env).await?;
        release.version = Some(src.deployment.release_version.clone());
        release.sha = Some(src.deployment.release_sha.clone());
        source = Some(src);
    }
    let scope = prepare_scope(&plan, env, &release)?;
    let mut inputs = preflight::run_inputs(&plan, &scope, gates, run, at)?;
    // A check changes nothing, so nobody is told of it.
    let notify = if filter == StepFilter::GatesOnly {
        stagegate_engine::notify::Notifier::default()
    } else {
        run::notifier(&plan, &scope)
    };
    let mut authorized = None;
    if filter != StepFilter::GatesOnly {
        if let Some(d) = decide::pending_decision(&store, env).await? {
            return Err(Failure::new(
                exit::AWAITING_DECISION,
                format!(
                    "error: deployment #{} of release {} in `{env}` awaits a decision on its inconclusive bake; nothing ran\n  \
                     = help: `stagegate decide {} --pass --reason \"...\"` accepts it, `--fail` rolls it back; then deploy again",
                    d.id, d.release_version, d.id
                ),
            ));
        }
        if let Some(p) = protect {
            let who = context::actor(run.actor.as_deref());
            let ask = promote::BypassAsk {
                reason: p.bypass.clone(),
                role: p.bypass_role.clone(),
            };
            let wait = promote::WaitAsk {
                wait: p.wait_approval || run.wait,
                timeout: p.approval_timeout,
                notify: notify.clone(),
            };
            let release = (scope.release.version.as_str(), scope.release.sha.as_str());
            let asked = promote::authorize(
                &plan,
                &store,
                env,
                &who,
                release,
                source.as_ref(),
                &ask,
                wait,
            )
            .await;
            // Awaiting approval (exit 8), refused, or given up on: what was sent is waited
            // for before the command ends.
            if asked.is_err() {
                for w in notify.drain().await {
                    eprintln!("{w}");
                }
            }
            if let Some(a) = asked? {
                inputs.pinned = a.pinned.clone();
                authorized = Some(a.event());
            }
        }
        inputs.baselines = load_baselines(&store, &plan, env).await?;
        inputs.watch_baselines = load_watch_baselines(&store, &plan, env).await?;
        if let Some(b) = bake {
            inputs.decisions = stagegate_engine::watch::Decisions {
                source: Some(std::sync::Arc::new(decide::StoreDecisions(store.clone()))),
                wait: b.wait_decision,
                timeout: b.decision_timeout,
            };
        }
    }
    let exe = supervisor_exe()?;
    let (version, sha) = (scope.release.version.clone(), scope.release.sha.clone());
    let session = run::Session {
        cli,
        plan: &plan,
        store,
        env: env.to_string(),
        args: run.clone(),
        kind: if filter == StepFilter::GatesOnly {
            "check"
        } else {
            "deploy"
        },
        notify,
    };
    let plan_ref = &plan;
    session
        .run(&version, &sha, move |id, events, cancel, abort| {
            if let Some(a) = authorized {
                events.emit(stagegate_engine::Event::Authorized(a));
            }
            stagegate_engine::run_deploy(stagegate_engine::RunRequest {
                plan: plan_ref,
                scope,
                deployment_id: id,
                state_dir: state_dir(cli, plan_ref),
                supervisor_exe: exe,
                cancel,
                abort,
                events,
                inputs,
                filter,
            })
        })
        .await
}

/// The last passing report of each load step in this environment that compares with it
/// (`p95 <= +10% vs last_pass`).
async fn load_baselines(
    store: &stagegate_store::Store,
    plan: &stagegate_plan::Plan,
    env: &str,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Failure> {
    let mut out = std::collections::BTreeMap::new();
    for (_, step) in plan.steps() {
        let stagegate_plan::StepKind::Load(spec) = &step.kind else {
            continue;
        };
        let compares = spec
            .slo
            .iter()
            .any(|t| matches!(t.value.limit, stagegate_load::slo::Limit::VsLastPass(_)));
        if !compares {
            continue;
        }
        if let Some(run) = store
            .last_passed_step(&plan.project, env, &step.id, "load")
            .await?
            && let Some(report) = run.details.get("load").filter(|r| !r.is_null())
        {
            out.insert(step.id.clone(), report.clone());
        }
    }
    Ok(out)
}

/// The `baseline: last_pass` of each watch measurement: its samples in the newest passing
/// run of that watch step in this environment (or why there are none).
async fn load_watch_baselines(
    store: &stagegate_store::Store,
    plan: &stagegate_plan::Plan,
    env: &str,
) -> Result<
    std::collections::BTreeMap<(String, String), Result<stagegate_engine::watch::Baseline, String>>,
    Failure,
> {
    use stagegate_plan::watch::BaselineFrom;
    let mut out = std::collections::BTreeMap::new();
    for (_, step) in plan.steps() {
        let stagegate_plan::StepKind::Watch(spec) = &step.kind else {
            continue;
        };
        let wanted: Vec<&str> = spec
            .measurements
            .iter()
            .filter(|m| {
                m.baseline
                    .as_ref()
                    .is_some_and(|b| b.from == BaselineFrom::LastPass)
            })
            .map(|m| m.name.as_str())
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let key = |m: &str| (step.id.clone(), m.to_string());
        let Some(run) = store
            .last_passed_step(&plan.project, env, &step.id, "watch")
            .await?
        else {
            for m in wanted {
                out.insert(
                    key(m),
                    Err(format!(
                        "no deployment of `{env}` has passed step `{}` yet",
                        step.id
                    )),
                );
            }
            continue;
        };
        let names: Vec<String> = run.details["watch"]["measurements"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let events = store.events(run.deployment_id).await?;
        for m in wanted {
            let got = match names.iter().position(|n| n == m) {
                None => Err(format!(
                    "deployment #{}'s bake had no measurement `{m}`",
                    run.deployment_id
                )),
                Some(i) => {
                    let values: Vec<f64> = events
                        .iter()
                        .filter(|e| e.kind == "measurement_round" && e.data["step_id"] == *step.id)
                        .filter_map(|e| e.data["samples"][i]["value"].as_f64())
                        .filter(|v| v.is_finite())
                        .collect();
                    if values.is_empty() {
                        Err(format!(
                            "deployment #{}'s bake recorded no values of `{m}`",
                            run.deployment_id
                        ))
                    } else {
                        Ok(stagegate_engine::watch::Baseline {
                            from: "last_pass".into(),
                            source: format!(
                                "deployment #{}'s bake, the last that passed ({} samples)",
                                run.deployment_id,
                                values.len()
                            ),
                            values,
                        })
                    }
                }
            };
            out.insert(key(m), got);
        }
    }
    Ok(out)
}

fn supervisor_exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe().map_err(|e| {
        Failure::internal(format!(
            "error: cannot find the stagegate executable to supervise services: {e}"
        ))
    })
}
