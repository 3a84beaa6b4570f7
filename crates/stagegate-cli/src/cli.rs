//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// stagegate: staging runbooks as code.
///
/// Reads a plan (`stagegate.yml`): environments, services and ordered stages of steps. Runs
/// it against an environment, rolls back by itself when a step fails, and records every step
/// in a state store (SQLite at `.stagegate/state.db` by default).
///
/// Exit codes: 0 success, 1 internal error, 2 invalid plan or arguments, 3 a step failed and
/// nothing was rolled back, 4 a step failed and the deploy was rolled back, 5 the rollback
/// failed too, 6 the environment is locked, 130 interrupted. See docs/exit-codes.md.
#[derive(Debug, Parser)]
#[command(name = "stagegate", version, max_term_width = 100)]
pub struct Cli {
    /// The plan file [default: ./stagegate.yml]
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        env = "STAGEGATE_FILE",
        value_name = "PATH"
    )]
    pub file: Option<PathBuf>,

    /// The SQLite state store [default: `state.path` in the plan, else .stagegate/state.db beside the plan]
    #[arg(long, global = true, env = "STAGEGATE_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// When to color the output
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the plan and report every error at once, with file:line:col
    Validate {
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show what `deploy ENV` would run, in order, interpolated, secrets masked; changes nothing
    Plan {
        /// The environment, as named under `environments`
        env: String,
        #[command(flatten)]
        release: ReleaseArgs,
    },
    /// Run the plan's stages against an environment, rolling back on failure
    Deploy {
        /// The environment, as named under `environments`
        env: String,
        #[command(flatten)]
        release: ReleaseArgs,
        #[command(flatten)]
        gates: GateArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run only the plan's gates against an environment; changes nothing (for CI on every pull request)
    Check {
        /// The environment, as named under `environments`
        env: String,
        #[command(flatten)]
        release: ReleaseArgs,
        #[command(flatten)]
        gates: GateArgs,
        /// Evaluate deploy windows as if it were this time, e.g. 2025-10-07T11:00:00+01:00
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<jiff::Timestamp>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Put services back on their previous (or a named) release, health verified
    Rollback {
        /// The environment
        env: String,
        /// The release to return to: a release id (`1.0.0-d3`) or a version (`1.0.0`)
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
        /// Only this service
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show what runs in an environment: releases, processes, health, lock, unfinished runs
    Status {
        /// The environment
        env: String,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop the services of an environment (all, or one)
    Stop {
        /// The environment
        env: String,
        /// Only this service
        service: Option<String>,
    },
    /// List past deployments, newest first
    History {
        /// Only this environment
        env: Option<String>,
        /// How many to show
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: i64,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one deployment: its steps, durations, exit codes and output
    Show {
        /// The deployment number, as in `history`
        deployment: i64,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Break an environment's lock (after a killed run), marking its unfinished run abandoned
    Unlock {
        /// The environment
        env: String,
    },
    /// Explain a plan field: what it means, its default, an example
    Explain {
        /// A key such as `services.health`, `steps.retries` or `on_failure`; none lists them
        key: Option<String>,
    },
    /// (internal) supervise one release's process
    #[command(name = "__supervise", hide = true)]
    Supervise { dir: PathBuf },
}

#[derive(Debug, Args, Clone, Default)]
pub struct ReleaseArgs {
    /// The release version [default: `release.version` in the plan, else `git describe`]
    #[arg(long = "release-version", value_name = "VERSION")]
    pub version: Option<String>,
    /// The release's git SHA [default: `release.sha` in the plan, else `git rev-parse HEAD`]
    #[arg(long = "release-sha", value_name = "SHA")]
    pub sha: Option<String>,
    /// Set a plan variable, overriding the plan (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_kv)]
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Wait for the environment's lock instead of failing when another run holds it
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting for the lock after this long (with --wait)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub wait_timeout: std::time::Duration,
    /// Write a report when the run ends: json=PATH, junit=PATH or markdown=PATH (repeatable)
    #[arg(long = "report", value_name = "KIND=PATH", value_parser = parse_report)]
    pub reports: Vec<(ReportKind, PathBuf)>,
    /// Write every event as a JSON line to PATH (`-` for stdout)
    #[arg(long = "events", value_name = "PATH")]
    pub events: Option<PathBuf>,
    /// Who runs this, for the record (and who acknowledges checklist items) [default: $STAGEGATE_ACTOR, else $USER]
    #[arg(
        long,
        visible_alias = "as",
        env = "STAGEGATE_ACTOR",
        value_name = "NAME"
    )]
    pub actor: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GateArgs {
    /// Acknowledge a checklist item, by its id or its text (repeatable)
    #[arg(long = "ack", value_name = "ITEM")]
    pub acks: Vec<String>,
    /// Acknowledge every checklist item; needs --as NAME (or $STAGEGATE_ACTOR): who vouches for them
    #[arg(long)]
    pub ack_all: bool,
    /// Pass failed gates that allow it (`allow_override: true`); the justification is recorded
    #[arg(long = "override", value_name = "JUSTIFICATION")]
    pub override_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Json,
    Junit,
    Markdown,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty name"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_report(s: &str) -> Result<(ReportKind, PathBuf), String> {
    let (k, p) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KIND=PATH (e.g. junit=report.xml)"))?;
    let kind = match k {
        "json" => ReportKind::Json,
        "junit" => ReportKind::Junit,
        "markdown" | "md" => ReportKind::Markdown,
        other => {
            return Err(format!(
                "unknown report kind `{other}`: use json, junit or markdown"
            ));
        }
    };
    if p.is_empty() {
        return Err(format!("`{s}` has no path"));
    }
    Ok((kind, PathBuf::from(p)))
}

fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    s.parse::<jiff::Timestamp>()
        .or_else(|_| s.parse::<jiff::Zoned>().map(|z| z.timestamp()))
        .map_err(|_| {
            format!(
                "`{s}` is not a time with an offset or a zone, e.g. 2025-10-07T11:00:00+01:00, 2025-10-07T10:00:00Z or 2025-10-07T11:00[Europe/London]"
            )
        })
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    stagegate_plan::parse_duration(s)
}
