//! The stagegate plan: reading `stagegate.yml`, validating it, and rendering its templates.
//!
//! Data flows in three steps:
//! 1. [`load_file`] parses YAML into a tree with positions (`marked_yaml`), then reads it into
//!    a typed [`Plan`], collecting **every** error as a [`Diagnostic`] with file, line, column,
//!    the source line and a "did you mean" where one helps.
//! 2. [`Scope::prepare`] takes a plan and an environment name and gathers the values a run
//!    needs: vars, secrets (process environment and dotenv files), the release identity.
//! 3. The executor renders each step's [`Template`]s against the scope as the run goes,
//!    adding step outputs and service addresses to it.
//!
//! Secrets are [`Secret`] values that print as `***`; a [`Scrubber`] masks them in any text.
//!
//! Step kinds beyond `run` and `deploy` plug in through [`kinds`]; [`gate`] is one: steps
//! that check and change nothing, with [`glob`] patterns for names, tags and files;
//! [`migrate`] another: a database migration with a backup, whose connection string
//! [`conninfo`] takes apart so it travels in `PG*` variables.

mod build;
pub mod check;
pub mod conninfo;
pub mod diagnostic;
pub mod docker;
pub mod dotenv;
pub mod gate;
pub mod glob;
pub mod kinds;
pub mod kube;
pub mod load;
pub mod migrate;
pub mod model;
pub mod notify;
pub mod protect;
pub mod scope;
pub mod secret;
pub mod shell;
pub mod ssh;
pub mod template;
pub mod trigger;
pub mod watch;
pub mod yaml;

pub use build::{load_file, load_str};
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use docker::{ComposeService, DockerBuild, DockerService};
pub use gate::{GateKind, GateSpec};
pub use glob::Glob;
pub use kube::KubeService;
pub use load::{LoadRequest, LoadSpec, RequestSource};
pub use migrate::{BackupSpec, MigrateSpec, RestorePolicy};
pub use model::*;
pub use notify::{Notifier, NotifyEvent, NotifyKind};
pub use protect::{ApprovalRule, BypassRule, Protection, Roles};
pub use scope::{Release, Scope, ScopeOptions, ServiceEndpoint};
pub use secret::{MASK, Scrubber, Secret};
pub use shell::{ShellScript, render_shell};
pub use template::{Expr, Ref, RenderError, Template, truthy};
pub use yaml::{Spanned, parse_duration};
