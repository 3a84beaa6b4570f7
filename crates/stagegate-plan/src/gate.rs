//! Gates: steps that check and change nothing (`gate: git`, `command`, `secrets`, `env`,
//! `config`, `checklist`, `window`).
//!
//! A gate step is a [`GateSpec`]: the gate's own settings ([`GateKind`]) and whether a
//! person may pass it with `--override "justification"`. Everything a gate needs to be
//! evaluated is checked when the plan is read ([`read`]): patterns compile, time zones
//! exist, files named literally are there, environments named by `drift` are declared.
//! What depends on templates is checked again at the start of a run, before any step.

mod read;

use std::collections::BTreeMap;

use jiff::civil::{DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use serde_json_path::JsonPath;

use crate::build::{first_line, sketch};
use crate::diagnostic::Span;
use crate::glob::Glob;
use crate::template::Template;
use crate::yaml::Spanned;

pub(crate) use read::{check_plan, read};

/// The gate types, as written after `gate:`.
pub const GATE_TYPES: &[&str] = &[
    "git",
    "command",
    "secrets",
    "env",
    "config",
    "checklist",
    "window",
];

/// One gate step's settings.
#[derive(Debug, Clone)]
pub struct GateSpec {
    /// Where `gate: TYPE` is written.
    pub span: Span,
    /// Whether `--override "justification"` may pass this gate when it fails (recorded).
    pub allow_override: bool,
    pub kind: GateKind,
}

#[derive(Debug, Clone)]
pub enum GateKind {
    Git(GitGate),
    Command(CommandGate),
    Secrets(SecretsGate),
    Env(EnvGate),
    Config(ConfigGate),
    Checklist(ChecklistGate),
    Window(WindowGate),
}

/// `gate: git`: where the release comes from.
#[derive(Debug, Clone, Default)]
pub struct GitGate {
    /// The repository's directory, relative to the plan (default: the plan's directory).
    pub repo: Option<Spanned<String>>,
    /// The current branch must match one of these.
    pub branch: Vec<Spanned<Glob>>,
    /// No uncommitted change and no untracked file (stagegate's own state excepted).
    pub clean: bool,
    /// HEAD has no commit its upstream lacks (when the branch has an upstream).
    pub pushed: bool,
    /// A tag at HEAD matches this.
    pub tag: Option<Spanned<Glob>>,
    /// HEAD is this branch's tip or one of its ancestors.
    pub ancestor_of: Option<Spanned<String>>,
}

/// `gate: command`: a command whose exit code and output are asserted.
#[derive(Debug, Clone)]
pub struct CommandGate {
    /// The shell command (`command:`), run with `sh -c` in the plan's directory.
    pub run: Spanned<Template>,
    /// Exit codes that pass (default: 0).
    pub exit_codes: Vec<i32>,
    pub output: Vec<OutputRule>,
}

/// An assertion on a command's output (stdout and stderr together).
#[derive(Debug, Clone)]
pub enum OutputRule {
    Contains(Spanned<Template>),
    Lacks(Spanned<Template>),
    Matches(Spanned<regex::Regex>),
}

/// `gate: secrets`: which secrets an environment has, never showing a value.
#[derive(Debug, Clone, Default)]
pub struct SecretsGate {
    /// Names that must have a non-empty value in some source.
    pub require: Vec<Spanned<String>>,
    /// Names that must not have a value in any source.
    pub forbid: Vec<Spanned<Glob>>,
    /// Value shapes no secret may have (a live key in staging).
    pub forbid_values: Vec<ValueShape>,
    /// The names `forbid` and `forbid_values` look at; empty: every name in the sources.
    pub only: Vec<Spanned<Glob>>,
    /// Where names and values come from. Empty: the process environment and the
    /// environment's dotenv file.
    pub from: Vec<SecretSource>,
    pub drift: Option<SecretDrift>,
}

/// A recognisable kind of secret value.
#[derive(Debug, Clone)]
pub struct ValueShape {
    /// What the value looks like, for findings: `an AWS access key id`.
    pub label: String,
    pub regex: regex::Regex,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum SecretSource {
    /// The process environment stagegate runs in.
    Environment,
    /// A dotenv file, relative to the plan.
    Dotenv(Spanned<Template>),
    /// A command printing a JSON object of names to values (or `NAME=value` lines).
    Command {
        run: Spanned<Template>,
        /// Where the object is in the JSON output (`$.data.data` for `vault kv get`).
        json: Option<Spanned<JsonPath>>,
    },
}

/// Secret names that must be declared alike in other environments.
#[derive(Debug, Clone, Default)]
pub struct SecretDrift {
    pub with: Vec<Spanned<String>>,
    /// Names that may differ.
    pub ignore: Vec<Spanned<Glob>>,
}

/// `gate: env`: settings that must have a value.
#[derive(Debug, Clone)]
pub struct EnvGate {
    pub from: EnvSource,
    pub expect: Vec<EnvExpectation>,
}

#[derive(Debug, Clone)]
pub enum EnvSource {
    Environment,
    Dotenv(Spanned<Template>),
    /// A running service's configuration endpoint, answering JSON to a GET.
    Url {
        url: Spanned<Template>,
        headers: BTreeMap<String, Spanned<Template>>,
    },
}

#[derive(Debug, Clone)]
pub struct EnvExpectation {
    /// The variable's name, or a JSONPath for a URL source.
    pub key: Spanned<String>,
    pub query: Option<JsonPath>,
    pub equals: Spanned<Template>,
}

/// `gate: config`: lint configuration files for what an environment must not contain.
#[derive(Debug, Clone, Default)]
pub struct ConfigGate {
    /// Files or patterns (`config/*.yaml`), relative to the plan.
    pub files: Vec<Spanned<Template>>,
    /// URLs to these hosts are findings (`localhost`, `127.0.0.1`, `0.0.0.0`).
    pub forbid_hosts: Vec<Spanned<Glob>>,
    /// Every `http://` URL is a finding.
    pub require_https: bool,
    /// `KEY=value`, `KEY: value`, `"KEY": value` or `KEY = value` lines with these values.
    pub forbid_values: Vec<ForbiddenValue>,
    pub forbid_patterns: Vec<ForbiddenPattern>,
}

#[derive(Debug, Clone)]
pub struct ForbiddenValue {
    pub key: Spanned<String>,
    pub value: Spanned<String>,
}

#[derive(Debug, Clone)]
pub struct ForbiddenPattern {
    pub regex: Spanned<regex::Regex>,
    /// What a match means, for findings.
    pub message: Option<String>,
}

/// `gate: checklist`: items a person acknowledges.
#[derive(Debug, Clone, Default)]
pub struct ChecklistGate {
    pub items: Vec<ChecklistItem>,
}

#[derive(Debug, Clone)]
pub struct ChecklistItem {
    /// Given, or made from the text: `Database backup completed` is `database-backup-completed`.
    pub id: String,
    pub text: String,
    pub span: Span,
}

impl ChecklistItem {
    /// Whether `--ack ARG` names this item: its id, or its text in any case.
    pub fn answers_to(&self, arg: &str) -> bool {
        let arg = arg.trim();
        arg == self.id || arg.eq_ignore_ascii_case(self.text.trim())
    }
}

/// `gate: window`: when deploys may happen.
#[derive(Debug, Clone)]
pub struct WindowGate {
    pub timezone: Spanned<String>,
    pub tz: TimeZone,
    /// Open windows; none means always open (outside freezes).
    pub allow: Vec<AllowedWindow>,
    pub freeze: Vec<Freeze>,
}

/// Days of the week and a time range on each: `tue-thu 10:00-14:00`.
#[derive(Debug, Clone)]
pub struct AllowedWindow {
    pub days: Vec<Weekday>,
    pub start: Time,
    /// `None` is midnight at the end of the day. An end before the start runs into the
    /// next day (`22:00-02:00`).
    pub end: Option<Time>,
    pub span: Span,
}

impl AllowedWindow {
    /// `Tue-Thu 10:00-14:00`, as people write it.
    pub fn describe(&self) -> String {
        format!(
            "{} {}-{}",
            describe_days(&self.days),
            self.start.strftime("%H:%M"),
            self.end
                .map(|t| t.strftime("%H:%M").to_string())
                .unwrap_or_else(|| "24:00".into())
        )
    }
}

/// No deploy from `from` (inclusive) until `until` (exclusive), local time.
#[derive(Debug, Clone)]
pub struct Freeze {
    pub from: DateTime,
    pub until: DateTime,
    pub reason: String,
    pub span: Span,
}

pub const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

pub fn day_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

/// `Mon-Fri`, `Tue, Thu`, `every day`.
pub fn describe_days(days: &[Weekday]) -> String {
    if days.len() == 7 {
        return "every day".into();
    }
    let idx: Vec<usize> = WEEKDAYS
        .iter()
        .enumerate()
        .filter(|(_, d)| days.contains(d))
        .map(|(i, _)| i)
        .collect();
    let consecutive = idx.windows(2).all(|w| w[1] == w[0] + 1);
    if idx.len() > 2 && consecutive {
        format!(
            "{}-{}",
            day_name(WEEKDAYS[idx[0]]),
            day_name(WEEKDAYS[idx[idx.len() - 1]])
        )
    } else {
        idx.iter()
            .map(|i| day_name(WEEKDAYS[*i]))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl GateKind {
    /// The type as written after `gate:`.
    pub fn type_name(&self) -> &'static str {
        match self {
            GateKind::Git(_) => "git",
            GateKind::Command(_) => "command",
            GateKind::Secrets(_) => "secrets",
            GateKind::Env(_) => "env",
            GateKind::Config(_) => "config",
            GateKind::Checklist(_) => "checklist",
            GateKind::Window(_) => "window",
        }
    }
}

impl GateSpec {
    /// Every template the gate holds, for reference checks.
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        let mut out = Vec::new();
        match &self.kind {
            GateKind::Command(c) => {
                out.push(&c.run);
                for r in &c.output {
                    if let OutputRule::Contains(t) | OutputRule::Lacks(t) = r {
                        out.push(t);
                    }
                }
            }
            GateKind::Secrets(s) => {
                for src in &s.from {
                    match src {
                        SecretSource::Dotenv(t) => out.push(t),
                        SecretSource::Command { run, .. } => out.push(run),
                        SecretSource::Environment => {}
                    }
                }
            }
            GateKind::Env(e) => {
                match &e.from {
                    EnvSource::Dotenv(t) => out.push(t),
                    EnvSource::Url { url, headers } => {
                        out.push(url);
                        out.extend(headers.values());
                    }
                    EnvSource::Environment => {}
                }
                out.extend(e.expect.iter().map(|x| &x.equals));
            }
            GateKind::Config(c) => out.extend(&c.files),
            GateKind::Git(_) | GateKind::Checklist(_) | GateKind::Window(_) => {}
        }
        out
    }

    /// A readable default name: `git gate: branch main, clean tree`.
    pub fn default_name(&self) -> String {
        let what = match &self.kind {
            GateKind::Git(g) => {
                let mut parts = Vec::new();
                if !g.branch.is_empty() {
                    parts.push(format!("branch {}", join_globs(&g.branch)));
                }
                if g.clean {
                    parts.push("clean tree".into());
                }
                if g.pushed {
                    parts.push("pushed".into());
                }
                if let Some(t) = &g.tag {
                    parts.push(format!("tag {}", t.value));
                }
                if let Some(a) = &g.ancestor_of {
                    parts.push(format!("in {}", a.value));
                }
                parts.join(", ")
            }
            GateKind::Command(c) => first_line(&c.run.value, 50),
            GateKind::Secrets(_) => String::new(),
            GateKind::Env(e) => e
                .expect
                .iter()
                .map(|x| x.key.value.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            GateKind::Config(c) => c
                .files
                .iter()
                .map(|f| sketch(&f.value))
                .collect::<Vec<_>>()
                .join(", "),
            GateKind::Checklist(c) => format!("{} item(s)", c.items.len()),
            GateKind::Window(w) => w.timezone.value.clone(),
        };
        if what.is_empty() {
            format!("{} gate", self.kind.type_name())
        } else {
            format!("{} gate: {what}", self.kind.type_name())
        }
    }

    /// What `stagegate plan` shows under the step.
    pub fn describe(&self, render: &dyn Fn(&Template) -> String) -> Vec<String> {
        let mut out = Vec::new();
        match &self.kind {
            GateKind::Git(g) => {
                if let Some(r) = &g.repo {
                    out.push(format!("repository {}", r.value));
                }
                if !g.branch.is_empty() {
                    out.push(format!("branch is one of {}", join_globs(&g.branch)));
                }
                if g.clean {
                    out.push("working tree is clean".into());
                }
                if g.pushed {
                    out.push("HEAD is pushed to its upstream (when it has one)".into());
                }
                if let Some(t) = &g.tag {
                    out.push(format!("a tag at HEAD matches {}", t.value));
                }
                if let Some(a) = &g.ancestor_of {
                    out.push(format!("HEAD is in branch {}", a.value));
                }
            }
            GateKind::Command(c) => {
                out.extend(render(&c.run.value).lines().map(|l| format!("$ {l}")));
                out.push(format!(
                    "expect exit code {}",
                    c.exit_codes
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
                for r in &c.output {
                    out.push(match r {
                        OutputRule::Contains(t) => {
                            format!("expect output to contain {:?}", render(&t.value))
                        }
                        OutputRule::Lacks(t) => {
                            format!("expect output to lack {:?}", render(&t.value))
                        }
                        OutputRule::Matches(r) => {
                            format!("expect output to match /{}/", r.value.as_str())
                        }
                    });
                }
            }
            GateKind::Secrets(s) => {
                let sources: Vec<String> = if s.from.is_empty() {
                    vec!["the process environment and the environment's dotenv file".into()]
                } else {
                    s.from
                        .iter()
                        .map(|src| match src {
                            SecretSource::Environment => "the process environment".into(),
                            SecretSource::Dotenv(t) => format!("dotenv {}", render(&t.value)),
                            SecretSource::Command { run, .. } => {
                                format!("the output of `{}`", render(&run.value))
                            }
                        })
                        .collect()
                };
                out.push(format!("from {}", sources.join(", ")));
                if !s.require.is_empty() {
                    out.push(format!(
                        "require {}",
                        s.require
                            .iter()
                            .map(|x| x.value.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if !s.forbid.is_empty() {
                    out.push(format!("forbid names {}", join_globs(&s.forbid)));
                }
                if !s.only.is_empty() {
                    out.push(format!(
                        "looking only at names like {}",
                        join_globs(&s.only)
                    ));
                }
                if !s.forbid_values.is_empty() {
                    out.push(format!(
                        "forbid values that look like {}",
                        s.forbid_values
                            .iter()
                            .map(|v| v.label.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if let Some(d) = &s.drift {
                    out.push(format!(
                        "same secret names as {}",
                        d.with
                            .iter()
                            .map(|x| x.value.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            GateKind::Env(e) => {
                let from = match &e.from {
                    EnvSource::Environment => "the process environment".to_string(),
                    EnvSource::Dotenv(t) => format!("dotenv {}", render(&t.value)),
                    EnvSource::Url { url, .. } => format!("GET {}", render(&url.value)),
                };
                out.push(format!("in {from}:"));
                for x in &e.expect {
                    out.push(format!(
                        "  {} == {:?}",
                        x.key.value,
                        render(&x.equals.value)
                    ));
                }
            }
            GateKind::Config(c) => {
                out.push(format!(
                    "files {}",
                    c.files
                        .iter()
                        .map(|f| render(&f.value))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                if !c.forbid_hosts.is_empty() {
                    out.push(format!("no URL to {}", join_globs(&c.forbid_hosts)));
                }
                if c.require_https {
                    out.push("no http:// URL (https:// required)".into());
                }
                for v in &c.forbid_values {
                    out.push(format!("no {}={}", v.key.value, v.value.value));
                }
                for p in &c.forbid_patterns {
                    out.push(format!("nothing matching /{}/", p.regex.value.as_str()));
                }
            }
            GateKind::Checklist(c) => {
                for i in &c.items {
                    out.push(format!("[ ] {} ({})", i.text, i.id));
                }
            }
            GateKind::Window(w) => {
                if w.allow.is_empty() {
                    out.push("any time outside freezes".into());
                }
                for a in &w.allow {
                    out.push(format!("open {} {}", a.describe(), w.timezone.value));
                }
                for f in &w.freeze {
                    out.push(format!(
                        "frozen {} to {}: {}",
                        f.from.strftime("%Y-%m-%d %H:%M"),
                        f.until.strftime("%Y-%m-%d %H:%M"),
                        f.reason
                    ));
                }
            }
        }
        if self.allow_override {
            out.push("may be passed with --override \"justification\" (recorded)".into());
        }
        out
    }
}

fn join_globs(g: &[Spanned<Glob>]) -> String {
    g.iter()
        .map(|x| x.value.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
