//! The `stagegate` binary: parses arguments, calls the libraries, maps results to exit codes.

mod cli;
mod context;
mod explain;
mod load;
mod query;
mod run;

use clap::Parser;
use stagegate_engine::exit;
use stagegate_report::TerminalStyle;

use crate::cli::{Cli, ColorChoice, Command};
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
        Command::Deploy { env, release, run } => {
            let plan = load_plan(cli)?;
            let scope = prepare_scope(&plan, env, release)?;
            let store = open_store(cli, &plan).await?;
            let exe = supervisor_exe()?;
            let (version, sha) = (scope.release.version.clone(), scope.release.sha.clone());
            let inputs = stagegate_engine::RunInputs {
                actor: context::actor(run.actor.as_deref()),
                interactive: std::io::IsTerminal::is_terminal(&std::io::stdin())
                    && std::env::var_os("CI").is_none(),
                ..Default::default()
            };
            let session = run::Session {
                cli,
                plan: &plan,
                store,
                env: env.clone(),
                args: run.clone(),
                kind: "deploy",
            };
            let plan_ref = &plan;
            session
                .run(&version, &sha, move |id, events, cancel, abort| {
                    stagegate_engine::run_deploy(stagegate_engine::RunRequest {
                        plan: plan_ref,
                        scope,
                        deployment_id: id,
                        state_dir: state_dir(plan_ref),
                        supervisor_exe: exe,
                        cancel,
                        abort,
                        events,
                        inputs,
                        filter: stagegate_engine::StepFilter::All,
                    })
                })
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
            let scope = prepare_scope(&plan, env, &Default::default())?;
            let store = open_store(cli, &plan).await?;
            let exe = supervisor_exe()?;
            let label = to.clone().unwrap_or_else(|| "previous".into());
            let session = run::Session {
                cli,
                plan: &plan,
                store,
                env: env.clone(),
                args: run.clone(),
                kind: "rollback",
            };
            let plan_ref = &plan;
            session
                .run(&label, "", move |id, events, cancel, _abort| async move {
                    let req = stagegate_engine::ServiceRequest {
                        plan: plan_ref,
                        scope,
                        deployment_id: id,
                        state_dir: state_dir(plan_ref),
                        supervisor_exe: exe,
                        cancel,
                        events,
                    };
                    stagegate_engine::run_manual_rollback(req, service.as_deref(), to.as_deref())
                        .await
                })
                .await
        }
        Command::Status { env, json } => query::status(cli, env, *json).await,
        Command::Stop { env, service } => query::stop(cli, env, service.as_deref()).await,
        Command::History { env, limit, json } => {
            query::history(cli, env.as_deref(), *limit, *json).await
        }
        Command::Show { deployment, json } => query::show(cli, *deployment, *json).await,
        Command::Unlock { env } => query::unlock(cli, env).await,
        Command::Load(args) => load::load(args).await,
    }
}

fn supervisor_exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe().map_err(|e| {
        Failure::internal(format!(
            "error: cannot find the stagegate executable to supervise services: {e}"
        ))
    })
}
