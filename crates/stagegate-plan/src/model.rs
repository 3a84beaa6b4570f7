//! The validated plan: every duration parsed, every reference checked, every name resolved.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::diagnostic::{Source, Span};
use crate::gate::GateSpec;
use crate::template::{Expr, Template};
use crate::yaml::Spanned;

/// A plan ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: Arc<Source>,
    /// The directory the plan file is in: relative paths and commands start here.
    pub dir: PathBuf,
    /// sha256 of the plan file's bytes; approvals and records are bound to it.
    pub hash: String,
    pub project: String,
    pub release: ReleaseSpec,
    pub vars: BTreeMap<String, Spanned<Template>>,
    pub secrets: SecretSpec,
    pub environments: Vec<Environment>,
    /// Services in dependency order: a service comes after those it depends on.
    pub services: Vec<Service>,
    pub stages: Vec<Stage>,
    pub on_failure: OnFailure,
    pub state: StateSettings,
    /// Who is in which role, for approvals and bypasses.
    pub roles: crate::protect::Roles,
    /// GitHub events that `stagegate serve` turns into runs.
    pub triggers: Vec<crate::trigger::Trigger>,
    /// Who hears about every run (see [`crate::notify`]).
    pub notify: Vec<crate::notify::Notifier>,
}

impl Plan {
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every notifier of a run of `environment`: the plan's, then the environment's.
    pub fn notifiers(&self, environment: &str) -> Vec<&crate::notify::Notifier> {
        self.notify
            .iter()
            .chain(
                self.environment(environment)
                    .into_iter()
                    .flat_map(|e| &e.notify),
            )
            .collect()
    }

    pub fn environment_names(&self) -> Vec<&str> {
        self.environments.iter().map(|e| e.name.as_str()).collect()
    }

    pub fn steps(&self) -> impl Iterator<Item = (&Stage, &Step)> {
        self.stages
            .iter()
            .flat_map(|st| st.steps.iter().map(move |s| (st, s)))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReleaseSpec {
    pub version: Option<Spanned<Template>>,
    pub sha: Option<Spanned<Template>>,
}

#[derive(Debug, Clone, Default)]
pub struct SecretSpec {
    /// Must have a value before anything runs.
    pub require: Vec<Spanned<String>>,
    /// Used when present, masked like the others.
    pub optional: Vec<Spanned<String>>,
    /// A dotenv file to read values from (default: `.env.<environment>` when it exists).
    pub dotenv: Option<Spanned<String>>,
}

impl SecretSpec {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.require
            .iter()
            .chain(&self.optional)
            .map(|s| s.value.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub span: Span,
    pub vars: BTreeMap<String, Spanned<Template>>,
    pub secrets: SecretSpec,
    pub services: BTreeMap<String, ServiceOverride>,
    pub on_failure: Option<OnFailure>,
    /// The machines `ssh` services deploy to.
    pub hosts: Vec<crate::ssh::Host>,
    /// What must hold before a release reaches this environment.
    pub protection: crate::protect::Protection,
    /// Who hears about runs of this environment, beside the plan's `notify`.
    pub notify: Vec<crate::notify::Notifier>,
}

/// What an environment changes in a service.
#[derive(Debug, Clone, Default)]
pub struct ServiceOverride {
    pub env: BTreeMap<String, Spanned<Template>>,
    pub port: Option<PortMode>,
    pub start: Option<Spanned<Template>>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub span: Span,
    pub driver: Driver,
    pub health: Option<HealthCheck>,
    pub depends_on: Vec<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub enum Driver {
    Local(LocalService),
    Ssh(crate::ssh::SshService),
    Kubernetes(crate::kube::KubeService),
    Docker(crate::docker::DockerService),
    Compose(crate::docker::ComposeService),
}

impl Driver {
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Local(_) => "local",
            Driver::Ssh(_) => "ssh",
            Driver::Kubernetes(_) => "kubernetes",
            Driver::Docker(_) => "docker",
            Driver::Compose(_) => "compose",
        }
    }

    /// Every template the driver renders (checked for unknown references at build time).
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        match self {
            Driver::Local(l) => l
                .build
                .iter()
                .chain(std::iter::once(&l.start))
                .chain(l.env.values())
                .collect(),
            Driver::Ssh(s) => {
                let mut out: Vec<&Spanned<Template>> =
                    s.build.iter().chain(s.env.values()).collect();
                if let crate::ssh::Activation::Command { start, stop } = &s.activation {
                    out.push(start);
                    out.extend(stop);
                }
                out
            }
            Driver::Kubernetes(k) => k.templates(),
            Driver::Docker(d) => d.templates(),
            Driver::Compose(c) => c.templates(),
        }
    }

    /// The `local` settings, when the service runs on this machine.
    pub fn local(&self) -> Option<&LocalService> {
        match self {
            Driver::Local(l) => Some(l),
            _ => None,
        }
    }
}

/// The `local` driver: a supervised process in its own release directory.
#[derive(Debug, Clone)]
pub struct LocalService {
    /// Run in the plan directory before the release directory is made.
    pub build: Option<Spanned<Template>>,
    /// Files or directories (relative to the plan directory) copied into the release.
    pub artifacts: Vec<Spanned<String>>,
    /// The command that starts the service, run by `sh -c` in the release directory.
    pub start: Spanned<Template>,
    pub env: BTreeMap<String, Spanned<Template>>,
    pub port: PortMode,
    pub stop_timeout: Duration,
    /// How many releases to keep on disk (the current one included).
    pub keep: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// A free loopback port per release: the new release starts beside the old one.
    Auto,
    /// One fixed port: the old release stops before the new one starts.
    Fixed(u16),
}

/// Wait until the service answers as expected, or give up at the deadline.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub span: Span,
    pub target: HealthTarget,
    pub status: Vec<u16>,
    pub json: Vec<JsonExpectation>,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum HealthTarget {
    /// A path on the release's own URL (`http://127.0.0.1:PORT`).
    Path(Spanned<Template>),
    Url(Spanned<Template>),
}

#[derive(Debug, Clone)]
pub struct JsonExpectation {
    pub path: Spanned<String>,
    pub query: serde_json_path::JsonPath,
    pub equals: Spanned<Template>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub span: Span,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Given in the plan, or `STAGE-N` (1-based) when not.
    pub id: String,
    pub explicit_id: bool,
    pub name: String,
    pub span: Span,
    pub kind: StepKind,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub env: BTreeMap<String, Spanned<Template>>,
    pub cwd: Option<Spanned<Template>>,
    pub when: Option<Spanned<Expr>>,
    pub continue_on_error: bool,
    pub rollback: Option<Spanned<Template>>,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Run {
        command: Spanned<Template>,
    },
    Deploy {
        service: Spanned<String>,
    },
    /// A check that changes nothing (`gate: git`, `secrets`, `window`, ...).
    Gate(Box<GateSpec>),
    /// A check: an HTTP request, a command, a TCP port, a log or a file, with assertions.
    Check(Box<crate::check::CheckSpec>),
    /// A load test with SLO thresholds (`load:`).
    Load(Box<crate::load::LoadSpec>),
    /// A bake window: measurements sampled at an interval and judged (`watch:`).
    Watch(Box<crate::watch::WatchSpec>),
    /// A database migration: a backup, `up`, and what undoes it (`migrate:`).
    Migrate(Box<crate::migrate::MigrateSpec>),
}

impl StepKind {
    /// The action's name, as recorded: `run`, `deploy`, ...
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Run { .. } => "run",
            StepKind::Deploy { .. } => "deploy",
            StepKind::Gate(_) => "gate",
            StepKind::Check(c) => c.kind(),
            StepKind::Load(_) => "load",
            StepKind::Watch(_) => "watch",
            StepKind::Migrate(_) => "migrate",
        }
    }

    /// Every template the step's action holds, for reference checks.
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        match self {
            StepKind::Run { command } => vec![command],
            StepKind::Deploy { .. } => Vec::new(),
            StepKind::Gate(g) => g.templates(),
            StepKind::Check(c) => c.templates(),
            StepKind::Load(l) => l.templates(),
            StepKind::Watch(w) => w.templates(),
            StepKind::Migrate(m) => m.templates(),
        }
    }

    /// Whether the step only checks and changes nothing (`stagegate check` runs these).
    pub fn is_gate(&self) -> bool {
        matches!(self, StepKind::Gate(_))
    }

    /// A readable default name when the step has no `name`.
    pub fn default_name(&self) -> String {
        match self {
            // A command's first line, as written.
            StepKind::Run { command } => crate::build::first_line(&command.value, 60),
            StepKind::Deploy { service } => format!("deploy {}", service.value),
            StepKind::Gate(g) => g.default_name(),
            StepKind::Check(c) => c.default_name(),
            StepKind::Load(l) => l.default_name(),
            StepKind::Watch(w) => w.default_name(),
            StepKind::Migrate(m) => m.default_name(),
        }
    }

    /// Lines that `stagegate plan` shows under the step, templates rendered by `render`.
    pub fn describe(&self, render: &dyn Fn(&Template) -> String) -> Vec<String> {
        match self {
            StepKind::Run { command } => render(&command.value)
                .lines()
                .map(|l| format!("$ {l}"))
                .collect(),
            StepKind::Deploy { service } => vec![format!("deploy service {}", service.value)],
            StepKind::Gate(g) => g.describe(render),
            StepKind::Check(c) => c.describe(render),
            StepKind::Load(l) => l.describe(render),
            StepKind::Watch(w) => w.describe(render),
            StepKind::Migrate(m) => m.describe(render),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Undo what ran, newest first (the default).
    Rollback,
    /// Leave everything as it is and say so.
    Stop,
}

#[derive(Debug, Clone, Default)]
pub struct StateSettings {
    /// The SQLite file (default `.stagegate/state.db` beside the plan).
    pub path: Option<PathBuf>,
    /// A PostgreSQL database instead (`postgresql://USER@HOST:PORT/DB`). A secret: it may
    /// hold a password, so `Debug` masks it.
    pub url: Option<crate::Secret>,
}
