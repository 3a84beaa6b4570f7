//! What every command starts from: the plan, the state store, where things live.

use std::collections::HashMap;
use std::path::PathBuf;

use stagegate_engine::exit;
use stagegate_plan::{Plan, Scope, ScopeOptions};
use stagegate_store::Store;

use crate::cli::{Cli, ReleaseArgs};

/// An error that ends the command with a message and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(exit::INVALID, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(exit::INTERNAL, message)
    }
}

impl From<stagegate_store::StoreError> for Failure {
    fn from(e: stagegate_store::StoreError) -> Self {
        Failure::internal(e.to_string())
    }
}

pub type CmdResult = Result<i32, Failure>;

pub fn plan_path(cli: &Cli) -> PathBuf {
    cli.file
        .clone()
        .unwrap_or_else(|| PathBuf::from("stagegate.yml"))
}

/// Loads and validates the plan; prints warnings; fails with every error.
pub fn load_plan(cli: &Cli) -> Result<Plan, Failure> {
    let path = plan_path(cli);
    match stagegate_plan::load_file(&path) {
        Ok((plan, warnings)) => {
            for w in warnings.warnings() {
                eprint!("{w}");
            }
            Ok(plan)
        }
        Err(diags) => {
            let n = diags.error_count();
            Err(Failure::invalid(format!(
                "{diags}error: the plan {} has {n} error{}; nothing ran",
                path.display(),
                if n == 1 { "" } else { "s" }
            )))
        }
    }
}

/// Where releases, logs and (by default) the state store live: the store's directory, so a
/// store moved with `--state` or `state.path` takes its releases and logs along and two
/// stores never share release directories. By default `.stagegate` beside the plan.
pub fn state_dir(cli: &Cli, plan: &Plan) -> PathBuf {
    store_path(cli, plan)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The state store's default place: `.stagegate/state.db` in the plan's directory.
pub fn default_store_path(plan_dir: &std::path::Path) -> PathBuf {
    plan_dir.join(".stagegate").join("state.db")
}

/// The drivers of an environment's services (local ones supervise with `supervisor_exe`).
pub fn driver_for(
    cli: &Cli,
    plan: &Plan,
    env: &str,
    supervisor_exe: PathBuf,
) -> Box<dyn stagegate_engine::ServiceDriver> {
    stagegate_engine::driver_for(plan, &state_dir(cli, plan), env, supervisor_exe)
}

pub fn store_path(cli: &Cli, plan: &Plan) -> PathBuf {
    // Absolute, because services run in release directories under it.
    if let Some(p) = &cli.state {
        return std::path::absolute(p).unwrap_or_else(|_| p.clone());
    }
    match &plan.state.path {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => plan.dir.join(p),
        None => default_store_path(&plan.dir),
    }
}

/// Opens the plan's state store, recording first the outcomes of runs that ended while it
/// could not be written (a full disk), each told on stderr.
pub async fn open_store(cli: &Cli, plan: &Plan) -> Result<Store, Failure> {
    let store = Store::open(&store_path(cli, plan)).await?;
    for r in store.recover_pending().await? {
        eprintln!(
            "note: recorded deployment #{}'s outcome, {}, which the state store could not take when it ended; the lock of `{}` is freed",
            r.deployment_id, r.outcome, r.environment
        );
    }
    Ok(store)
}

pub fn prepare_scope(plan: &Plan, env: &str, release: &ReleaseArgs) -> Result<Scope, Failure> {
    let opts = ScopeOptions {
        release_version: release.version.clone(),
        release_sha: release.sha.clone(),
        vars: release.vars.clone(),
        process_env: std::env::vars().collect::<HashMap<_, _>>(),
    };
    Scope::prepare(plan, env, opts).map_err(|errors| {
        Failure::invalid(
            errors
                .iter()
                .map(|e| format!("error: {e}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

pub fn actor(given: Option<&str>) -> String {
    given
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".into())
}
