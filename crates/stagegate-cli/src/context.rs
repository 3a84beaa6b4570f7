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

/// Where the state store is: a SQLite file, or a PostgreSQL database (`--state
/// postgresql://...`, `STAGEGATE_STATE`, or `state.url` in the plan).
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres {
        /// Holds the password, if the URL has one: shown only through [`StoreLocation::describe`].
        url: stagegate_plan::Secret,
        /// This machine's state directory: releases, logs, outcome reservations.
        local_dir: PathBuf,
    },
}

impl StoreLocation {
    pub async fn open(&self) -> Result<Store, Failure> {
        Ok(match self {
            StoreLocation::Sqlite(p) => Store::open(p).await?,
            StoreLocation::Postgres { url, local_dir } => {
                Store::open_postgres(url.expose(), local_dir).await?
            }
        })
    }
}

/// `--state`'s value as a PostgreSQL URL, if it is one.
fn state_flag_url(cli: &Cli) -> Option<String> {
    let text = cli.state.as_ref()?.to_str()?;
    stagegate_store::is_postgres_url(text).then(|| text.trim().to_string())
}

/// Where releases, logs and (by default) the state store live: the store's directory, so a
/// store moved with `--state` or `state.path` takes its releases and logs along and two
/// stores never share release directories. By default `.stagegate` beside the plan, which
/// is also where they live when the store is a PostgreSQL database.
pub fn state_dir(cli: &Cli, plan: &Plan) -> PathBuf {
    match store_location(cli, plan) {
        StoreLocation::Postgres { local_dir, .. } => local_dir,
        StoreLocation::Sqlite(path) => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// The state store's default place: `.stagegate/state.db` in the plan's directory.
pub fn default_store_path(plan_dir: &std::path::Path) -> PathBuf {
    plan_dir.join(".stagegate").join("state.db")
}

/// The local state directory beside a plan in `plan_dir`, when the store is elsewhere.
pub fn default_local_dir(plan_dir: &std::path::Path) -> PathBuf {
    let dir = plan_dir.join(".stagegate");
    std::path::absolute(&dir).unwrap_or(dir)
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

/// The store: `--state` (a path or a PostgreSQL URL), else the plan's `state.url` or
/// `state.path`, else `.stagegate/state.db` beside the plan.
pub fn store_location(cli: &Cli, plan: &Plan) -> StoreLocation {
    if let Some(url) = state_flag_url(cli) {
        return StoreLocation::Postgres {
            url: stagegate_plan::Secret::new(url),
            local_dir: default_local_dir(&plan.dir),
        };
    }
    // Absolute, because services run in release directories under it.
    if let Some(p) = &cli.state {
        return StoreLocation::Sqlite(std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    }
    if let Some(url) = &plan.state.url {
        return StoreLocation::Postgres {
            url: url.clone(),
            local_dir: default_local_dir(&plan.dir),
        };
    }
    StoreLocation::Sqlite(match &plan.state.path {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => plan.dir.join(p),
        None => default_store_path(&plan.dir),
    })
}

/// Opens the plan's state store, recording first the outcomes of runs that ended while it
/// could not be written (a full disk), each told on stderr.
pub async fn open_store(cli: &Cli, plan: &Plan) -> Result<Store, Failure> {
    let store = store_location(cli, plan).open().await?;
    recover(&store).await?;
    Ok(store)
}

/// Records the outcomes earlier runs left outside the store; tells each on stderr.
async fn recover(store: &Store) -> Result<(), Failure> {
    for r in store.recover_pending().await? {
        eprintln!(
            "note: recorded deployment #{}'s outcome, {}, which the state store could not take when it ended; the lock of `{}` is freed",
            r.deployment_id, r.outcome, r.environment
        );
    }
    Ok(())
}

/// Opens the store `--state` names when there is no plan to read: a PostgreSQL URL (its
/// local directory `.stagegate` beside `plan_dir`), else `None`.
pub async fn open_flag_url(
    cli: &Cli,
    plan_dir: &std::path::Path,
) -> Result<Option<Store>, Failure> {
    let Some(url) = state_flag_url(cli) else {
        return Ok(None);
    };
    let store = Store::open_postgres(&url, &default_local_dir(plan_dir)).await?;
    recover(&store).await?;
    Ok(Some(store))
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
