//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// stagegate: staging runbooks as code.
///
/// Reads a plan (`stagegate.yml`): environments, services and ordered stages of steps. Runs
/// it against an environment, rolls back by itself when a step fails, and records every step
/// in a state store (SQLite at `.stagegate/state.db` by default, or PostgreSQL).
///
/// Exit codes: 0 success, 1 internal error, 2 invalid plan or arguments, 3 a step failed and
/// nothing was rolled back, 4 a step failed and the deploy was rolled back, 5 the rollback
/// failed too, 6 the environment is locked, 7 a bake was inconclusive and awaits `stagegate
/// decide`, 8 a protected deploy awaits approval (or its soak or wait timer), 9 a protection
/// rule refused it, 130 interrupted. See docs/exit-codes.md.
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

    /// The state store: a SQLite file, or a PostgreSQL database (`postgresql://USER@HOST/DB`) [default: `state.url` or `state.path` in the plan, else .stagegate/state.db beside the plan]
    #[arg(long, global = true, env = "STAGEGATE_STATE", value_name = "PATH|URL")]
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
        bake: BakeArgs,
        #[command(flatten)]
        protect: ProtectArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Deploy to TO exactly what last passed FROM: its version, git SHA and artifacts
    ///
    /// Takes the newest deployment of FROM that succeeded and still runs there, checks TO's
    /// protection (`promote_from`, `tags`, `soak`, `wait_timer`, `approvals`) and deploys
    /// that release with its artifacts pinned: a build or image that differs fails the deploy.
    /// What is missing is recorded as a request awaiting approval (exit 8): `stagegate
    /// approve TO` records approvals; run `promote` again (or with --wait) to go on.
    #[command(
        after_help = "Examples:\n  stagegate promote staging production\n  stagegate promote staging production --wait --approval-timeout 2h"
    )]
    Promote {
        /// The environment the release passed
        from: String,
        /// The environment to deploy it to
        to: String,
        #[command(flatten)]
        gates: GateArgs,
        #[command(flatten)]
        bake: BakeArgs,
        #[command(flatten)]
        protect: ProtectArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Approve the open request to deploy to an environment (a promotion awaiting approval)
    ///
    /// The approval is bound to the plan's hash and the artifact's digest: a changed plan or
    /// artifact voids it. The person who asked cannot approve unless the plan allows
    /// (`self_approve: true`); `--role` must be a role of the plan's `roles` the approver is
    /// a member of. Recorded in the audit log.
    #[command(
        after_help = "Examples:\n  stagegate approve production --role security --comment \"pen test findings closed\"\n  STAGEGATE_ACTOR=bob stagegate approve production --deployment 12"
    )]
    Approve(ApproveArgs),
    /// Reject the open request to deploy to an environment; it is closed (needs --comment)
    Reject(ApproveArgs),
    /// Decide an inconclusive bake (`watch` step): pass it or fail it, with a reason
    ///
    /// A deployment whose watch step was inconclusive ends as `awaiting_decision` (exit 7)
    /// with its new release running. `--pass` finishes it as succeeded; `--fail` rolls its
    /// services back to the release before it (recorded as a rollback run) and finishes it
    /// as rolled back. A `deploy --wait-decision` still running picks the decision up and
    /// goes on with the steps after the watch. Who decided, when and why are recorded.
    #[command(
        after_help = "Examples:\n  stagegate decide 12 --pass --reason \"error rate flat, no data only from the canary's exporter restart\"\n  stagegate decide 12 --fail --reason \"p95 up 30% against last week\" --as alice"
    )]
    Decide(DecideArgs),
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
        /// Break the lock even if its holder looks alive or ran on another host (needs --reason)
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why, recorded in the audit log with who broke it
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Check or print the audit log: the hash chain over deployments, steps and lock breaks
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Explain a plan field: what it means, its default, an example
    Explain {
        /// A key such as `services.health`, `steps.retries` or `on_failure`; none lists them
        key: Option<String>,
    },
    /// Send HTTP load to a URL and report latency, throughput and errors (like hey or oha)
    ///
    /// Closed model by default: -c virtual users, each with its own keep-alive connection,
    /// sending its next request when the previous one is answered, for -n requests or -z
    /// time. With -q RATE, the open model: requests start at RATE per second whatever the
    /// server does, and latency counts from each request's intended send time. Exit code 3
    /// when an --slo threshold fails or an --abort rule stops the run. See docs/load.md.
    #[command(
        after_help = "Examples:\n  stagegate load http://127.0.0.1:8080/health -n 1000 -c 10 --slo 'p95 < 2s'\n  stagegate load https://staging.example.com/ -q 500/s -z 30s --warmup 5s --json\n  stagegate load http://127.0.0.1:8080/me --users users.csv -H 'X-User: ${{ vu.id }}' --isolation id"
    )]
    Load(Box<LoadArgs>),
    /// Serve the HTTP API and web page: history, runs, approvals, GitHub webhooks, /metrics
    ///
    /// Everything but `/healthz` needs an API token (`stagegate token create`) or a page
    /// login with one. Approvals through it follow the plan's rules with the token's subject
    /// as the approver. See docs/server.md.
    #[command(
        after_help = "Examples:\n  stagegate token create alice --subject alice --scope read,approve\n  GITHUB_WEBHOOK_SECRET=... stagegate serve --listen 127.0.0.1:8470 --github-secret-env GITHUB_WEBHOOK_SECRET"
    )]
    Serve(ServeArgs),
    /// Create, list or revoke the server's API tokens (kept hashed, 0600)
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Draft a plan from a Markdown runbook: checklists, commands, curl checks, load tests, secrets
    ///
    /// Headings become stages, `- [ ]` items checklist gates, shell blocks `run` steps named by
    /// their comments, `curl` lines `http` checks (an "Expected: HTTP 404, {...}" note is their
    /// `expect`), `hey`/`ab`/`wrk` lines `load` steps with the SLO lines near them, and secret
    /// names `secrets.require` or a `forbid` gate. Every item names its runbook line; what is
    /// not translated is a `# TODO (line N)` comment. Without -o the plan goes to stdout; the
    /// summary always goes to stderr. Exit code 2 for a missing or unreadable runbook or a
    /// refused overwrite. See docs/import.md.
    #[command(
        after_help = "Examples:\n  stagegate import RUNBOOK.md -o stagegate.yml\n  stagegate import docs/staging-runbook.md | less\n  stagegate import RUNBOOK.md -o stagegate.yml --force && stagegate validate"
    )]
    Import {
        /// The Markdown runbook
        runbook: PathBuf,
        /// Write the plan to this file instead of stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// Render the plan as a Markdown runbook, for people to read
    ///
    /// Writes the validated plan (-f PLAN) as Markdown: the environments with their
    /// protection, secrets and vars by name (never values), then every stage as a section and
    /// every step in order: `run` commands in `bash` blocks, `http` checks as the curl command
    /// with its expected answer, load steps with their SLOs, checklists as `- [ ]` items,
    /// deploys, bakes and gates described, `when:` conditions noted, and the rollback
    /// procedures. Templates are shown as written, nothing is evaluated. The same plan gives
    /// the same bytes, and `stagegate import` reads the runbook back into the same steps.
    ///
    /// Without -o the runbook goes to stdout. `--check -o FILE` renders the plan and compares
    /// it with FILE instead of writing it: exit 0 when it is up to date, 3 when it drifted
    /// (the first differing lines are shown), 2 when FILE is missing. See docs/doc.md.
    #[command(
        after_help = "Examples:\n  stagegate doc | less\n  stagegate doc -o RUNBOOK.md\n  stagegate doc staging -o docs/staging-runbook.md --force\n  stagegate doc --check -o RUNBOOK.md      # in CI: fails when RUNBOOK.md is out of date"
    )]
    Doc {
        /// Only this environment's protection, secrets and vars [default: every environment]
        env: Option<String>,
        /// Write the runbook to this file instead of stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists
        #[arg(long, requires = "output", conflicts_with = "check")]
        force: bool,
        /// Compare the output file with what the plan renders; write nothing
        #[arg(long, requires = "output")]
        check: bool,
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

#[derive(Debug, Args, Clone)]
pub struct DecideArgs {
    /// The deployment number, as in `history`
    pub deployment: i64,
    /// The release is good: finish the deployment as succeeded
    #[arg(long, conflicts_with = "fail", required_unless_present = "fail")]
    pub pass: bool,
    /// The release is bad: roll it back
    #[arg(long)]
    pub fail: bool,
    /// Why (recorded with who decided and when)
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// The watch step to decide, when more than one waits
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Who decides [default: $STAGEGATE_ACTOR, else $USER]
    #[arg(
        long,
        visible_alias = "as",
        env = "STAGEGATE_ACTOR",
        value_name = "NAME"
    )]
    pub actor: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ApproveArgs {
    /// The environment whose request this is
    pub env: String,
    /// The request's number (as in `history`) [default: the environment's open request]
    #[arg(long, value_name = "N")]
    pub deployment: Option<i64>,
    /// The role approving, one of the plan's `roles` you are a member of [default: your only approving role]
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// What you checked, or (rejecting) what is wrong; recorded
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Who approves [default: $STAGEGATE_ACTOR, else $USER]
    #[arg(
        long,
        visible_alias = "as",
        env = "STAGEGATE_ACTOR",
        value_name = "NAME"
    )]
    pub actor: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// The address to listen on (port 0: any free port, printed at start)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8470")]
    pub listen: String,
    /// The environment variable holding the GitHub webhook's secret; without it the
    /// webhook endpoint is off
    #[arg(long, value_name = "NAME")]
    pub github_secret_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a token; it is printed once, and only its hash is kept
    Create {
        /// A name for the token (to list and revoke it)
        name: String,
        /// Who acts with it: the approver and the actor of the runs it starts
        #[arg(long, value_name = "WHO")]
        subject: String,
        /// What it may do: read, approve, deploy (comma-separated or repeated)
        #[arg(long, value_name = "SCOPE", required = true)]
        scope: Vec<String>,
    },
    /// List the tokens (never the tokens themselves)
    List,
    /// Revoke a token: requests and page sessions with it fail from now on
    Revoke { name: String },
}

#[derive(Debug, Args, Clone, Default)]
pub struct ProtectArgs {
    /// Skip a protected environment's promotion and soak, with this reason (the plan's
    /// `bypass` rule says who may; recorded in the audit log). Approvals still apply.
    #[arg(long, value_name = "REASON")]
    pub bypass: Option<String>,
    /// The role you bypass as, one of the `bypass.by` roles you are a member of
    #[arg(long = "bypass-role", value_name = "ROLE", requires = "bypass")]
    pub bypass_role: Option<String>,
    /// Wait for approvals, the soak and the wait timer (printing what is missing as it
    /// changes), then deploy, instead of exiting 8. `--wait` waits for them too, and then
    /// for the lock.
    #[arg(long)]
    pub wait_approval: bool,
    /// Give up waiting for approvals after this long (with --wait or --wait-approval)
    /// [default: wait until approved, rejected or interrupted]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub approval_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct BakeArgs {
    /// When a watch step is inconclusive, wait here for `stagegate decide` (from another
    /// shell) and go on, instead of ending the run as awaiting a decision (exit 7)
    #[arg(long)]
    pub wait_decision: bool,
    /// Give up waiting for a decision after this long: the watch then counts as failed and
    /// the deploy rolls back (with --wait-decision)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait_decision")]
    pub decision_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Wait for the environment's lock instead of failing when another run holds it (and,
    /// for a protected environment, for its approvals, soak and wait timer first)
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting for the lock after this long (with --wait)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub wait_timeout: std::time::Duration,
    /// How long the environment's lock stays fresh without a renewal; the run renews it every
    /// third of that. Twice this without a renewal, other machines take the run for gone
    /// (`unlock` then needs no --force), 1s to 1h [default: 60s]
    #[arg(long, value_name = "DURATION", env = "STAGEGATE_LOCK_LEASE", value_parser = parse_lease)]
    pub lock_lease: Option<std::time::Duration>,
    /// Write a report when the run ends: json=PATH, junit=PATH, markdown=PATH or html=PATH (repeatable)
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

#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// The URL to load: http:// or https://, path and query included
    pub url: String,

    /// Number of requests to send [default: 200] (closed model; with -q, the run lasts N / RATE seconds)
    #[arg(
        short = 'n',
        long = "requests",
        value_name = "N",
        conflicts_with_all = ["duration", "ramp"],
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub requests: Option<u64>,

    /// Virtual users, each with one connection [default: 50]; with -q, the most requests in flight [default: 1000]; with --ramp, the starting number of users [default: 0]
    #[arg(short = 'c', long = "concurrency", value_name = "N")]
    pub concurrency: Option<usize>,

    /// Send for this long instead of a number of requests (e.g. 30s, 2m)
    #[arg(short = 'z', long = "duration", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,

    /// Open model: start requests at this total rate (500, 500/s, 30000/m), whatever the server does
    #[arg(short = 'q', long = "rate", value_name = "RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Send load for this long first, without counting it
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: Option<std::time::Duration>,

    /// Move to TARGET users (or, with -q, requests per second) over DURATION, e.g. 100:30s; repeat for more steps; the ramp sets the run's length
    #[arg(long = "ramp", value_name = "TARGET:DURATION", value_parser = parse_ramp, conflicts_with = "duration")]
    pub ramp: Vec<(f64, std::time::Duration)>,

    /// HTTP method
    #[arg(short = 'm', long, value_name = "METHOD", default_value = "GET")]
    pub method: String,

    /// A request header, `Name: value` (repeatable); may use ${{ vu.NAME }} with --users
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// The request body
    #[arg(
        short = 'd',
        long = "body",
        value_name = "TEXT",
        conflicts_with = "body_file"
    )]
    pub body: Option<String>,

    /// Read the request body from a file
    #[arg(short = 'D', long = "body-file", value_name = "PATH")]
    pub body_file: Option<PathBuf>,

    /// The Content-Type header
    #[arg(short = 'T', long = "content-type", value_name = "TYPE")]
    pub content_type: Option<String>,

    /// A request not answered within this long is a timeout error
    #[arg(short = 't', long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,

    /// Generator threads [default: the CPUs this process may use]
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: Option<usize>,

    /// Virtual users' identities: a CSV (header row first) or JSON file; user i takes row i
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,

    /// Give each virtual user its own cookie jar
    #[arg(long)]
    pub cookies: bool,

    /// Count responses that show a user another user's value of this identity column
    #[arg(long, value_name = "COLUMN", requires = "users")]
    pub isolation: Vec<String>,

    /// Check every response's status is one of these (e.g. 200,204); failures are errors
    #[arg(long = "expect-status", value_name = "CODES", value_delimiter = ',')]
    pub expect_status: Vec<u16>,

    /// A threshold, e.g. 'p95 < 500ms', 'error_rate < 1%', 'rps >= 100' (repeatable)
    #[arg(long = "slo", value_name = "THRESHOLD")]
    pub slo: Vec<String>,

    /// Stop early when this holds, e.g. 'error_rate > 5% over 10s' (repeatable)
    #[arg(long = "abort", value_name = "RULE")]
    pub abort: Vec<String>,

    /// A previous `--json` report, the baseline for thresholds such as 'p95 <= +10% vs last_pass'
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,

    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    stagegate_load::parse_rate(s)
}

fn parse_ramp(s: &str) -> Result<(f64, std::time::Duration), String> {
    let (t, d) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not TARGET:DURATION (e.g. 100:30s)"))?;
    let target = stagegate_load::parse_rate(t)?;
    Ok((target, parse_duration(d)?))
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

/// `stagegate audit ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditAction {
    /// Recompute the chain and compare every deployment and step with it; exit 0 when every
    /// link holds, 3 naming the first broken one
    Verify {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the audit log, oldest record first
    Show {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Json,
    Junit,
    Markdown,
    Html,
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
        "html" => ReportKind::Html,
        other => {
            return Err(format!(
                "unknown report kind `{other}`: use json, junit, markdown or html"
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

fn parse_lease(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
        return Err(format!(
            "a lock lease of {s} is out of range: give 1s to 1h (60s is the default)"
        ));
    }
    Ok(d)
}
