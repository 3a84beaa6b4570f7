//! A validated [`Plan`] written as a Markdown runbook: the reverse of [`crate::import`].
//!
//! Nothing is evaluated: templates are shown as written (`${{ secrets.TOKEN }}`), secrets
//! and vars by name only, so no value can leak. The same plan gives the same bytes.
//!
//! The document is laid out so that `stagegate import` reads every step back (see
//! `tests/round_trip.rs`): a `run` step is a `bash step` block (its name on the first
//! comment line, then the command as written), an `http` check a `curl` line with its
//! `# Expected:` line, a load step a `hey` line with its SLO lines, a checklist `- [ ]`
//! items; any other step (deploy, bake, migrate, other gates and checks) is described and
//! ends with a `- [ ] NAME` item that a reader ticks when it is done.

use std::collections::BTreeSet;
use std::fmt::Write;

use stagegate_load::profile::{Model, Stop};
use stagegate_plan::check::{
    Assertion, Auth, CheckSpec, CheckTarget, JsonTemplate, Matcher, Payload, RequestBody, Subject,
};
use stagegate_plan::diagnostic::did_you_mean;
use stagegate_plan::{
    Environment, GateKind, OnFailure, Plan, RequestSource, Step, StepKind, Template,
};

use crate::markdown::{code_span, escape_inline, fence};

/// The info string of a code block that is one `run` step, read back whole by the importer.
pub const STEP_BLOCK: &str = "bash step";

/// What to render.
#[derive(Debug, Clone, Default)]
pub struct DocOptions {
    /// Only this environment (all when `None`).
    pub environment: Option<String>,
    /// The command that regenerates the document, named in its intro line.
    pub command: String,
    /// The plan file, as the reader knows it (`stagegate.yml`).
    pub plan_file: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocError {
    #[error("unknown environment `{name}`: {hint}")]
    UnknownEnvironment { name: String, hint: String },
}

/// The plan as a Markdown runbook.
pub fn render(plan: &Plan, opts: &DocOptions) -> Result<String, DocError> {
    let environments: Vec<&Environment> = match &opts.environment {
        Some(name) => {
            let Some(env) = plan.environment(name) else {
                let names = plan.environment_names();
                let hint = did_you_mean(name, names.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("the plan defines: {}", names.join(", ")));
                return Err(DocError::UnknownEnvironment {
                    name: name.clone(),
                    hint,
                });
            };
            vec![env]
        }
        None => plan.environments.iter().collect(),
    };
    let mut d = Doc::default();
    d.line(&format!("# {}", escape_inline(&plan.project)));
    d.blank();
    d.line(&format!(
        "Generated from {} by {}. Do not edit it by hand: change the plan and run the command again.",
        code_span(&opts.plan_file),
        code_span(&opts.command)
    ));
    d.blank();
    environments_section(&mut d, plan, &environments);
    for stage in &plan.stages {
        d.line(&format!("## {}", escape_inline(&stage.name)));
        d.blank();
        for step in &stage.steps {
            step_section(&mut d, plan, step);
        }
    }
    rollback_section(&mut d, plan, &environments);
    Ok(d.finish())
}

#[derive(Default)]
struct Doc {
    out: String,
}

impl Doc {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn blank(&mut self) {
        self.out.push('\n');
    }

    fn item(&mut self, s: &str) {
        let _ = writeln!(self.out, "- {s}");
    }

    fn code(&mut self, info: &str, body: &str) {
        let f = fence(body);
        let _ = writeln!(self.out, "{f}{info}");
        self.out.push_str(body);
        if !body.ends_with('\n') {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "{f}");
        self.out.push('\n');
    }

    /// One blank line at the end, never two in a row.
    fn finish(self) -> String {
        let mut out = String::with_capacity(self.out.len());
        for l in self.out.split_inclusive('\n') {
            if l == "\n" && (out.is_empty() || out.ends_with("\n\n")) {
                continue;
            }
            out.push_str(l);
        }
        while out.ends_with("\n\n") {
            out.pop();
        }
        out
    }
}

fn names(list: impl IntoIterator<Item = String>) -> String {
    list.into_iter()
        .map(|n| code_span(&n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plain_names(list: impl IntoIterator<Item = String>) -> String {
    list.into_iter()
        .map(|n| escape_inline(&n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A header whose value is a credential: shown as `***` when written in the plan as text.
fn header(name: &str, value: &Template) -> String {
    const SENSITIVE: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
    ];
    let v = if SENSITIVE.contains(&name.to_ascii_lowercase().as_str()) {
        hidden(value)
    } else {
        value.written()
    };
    format!("{name}: {v}")
}

fn environments_section(d: &mut Doc, plan: &Plan, envs: &[&Environment]) {
    d.line("## Environments");
    d.blank();
    d.line("Secrets and vars are listed by name only: their values are never written here.");
    d.blank();
    let forbidden: BTreeSet<String> = plan
        .steps()
        .filter_map(|(_, s)| match &s.kind {
            StepKind::Gate(g) => match &g.kind {
                GateKind::Secrets(sg) => {
                    Some(sg.forbid.iter().map(|f| f.value.as_str().to_string()))
                }
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .collect();
    for env in envs {
        d.line(&format!("### {}", code_span(&env.name)));
        d.blank();
        let p = &env.protection;
        if p.is_empty() {
            d.item("Protection: none; `stagegate deploy` runs it directly.");
        }
        if let Some(from) = &p.promote_from {
            d.item(&format!(
                "Promoted from {} only: {}.",
                code_span(&from.value),
                code_span(&format!("stagegate promote {} {}", from.value, env.name))
            ));
        }
        if let Some(soak) = &p.soak {
            d.item(&format!(
                "Soak: the release must have run healthy in the source environment for {}.",
                fmt_duration(soak.value)
            ));
        }
        if let Some(w) = &p.wait_timer {
            d.item(&format!(
                "Wait timer: {} after the request before it may run.",
                fmt_duration(w.value)
            ));
        }
        if !p.tags.is_empty() {
            d.item(&format!(
                "Release versions allowed: {}.",
                names(p.tags.iter().map(|t| t.value.as_str().to_string()))
            ));
        }
        if let Some(a) = &p.approvals {
            let from = if a.from.is_empty() {
                "anyone but the requester".to_string()
            } else {
                names(a.from.iter().map(|f| f.value.clone()))
            };
            let mut rule = format!("Approvals: {} required, from {from}", a.required);
            rule.push_str(if a.self_approve {
                "; the requester may approve"
            } else {
                "; the requester may not approve"
            });
            if a.distinct_roles {
                rule.push_str("; each from a different role");
            }
            rule.push_str(" (`stagegate approve`).");
            d.item(&rule);
        }
        if let Some(b) = &p.bypass {
            d.item(&format!(
                "Bypass of promote_from and soak: by {}.",
                names(b.by.iter().map(|x| x.value.clone()))
            ));
        }
        let required: BTreeSet<String> = plan
            .secrets
            .require
            .iter()
            .chain(&env.secrets.require)
            .map(|s| s.value.clone())
            .collect();
        let optional: BTreeSet<String> = plan
            .secrets
            .optional
            .iter()
            .chain(&env.secrets.optional)
            .map(|s| s.value.clone())
            .collect();
        if !required.is_empty() {
            d.item(&format!("Secrets required: {}.", names(required)));
        }
        if !optional.is_empty() {
            // Plain text, not code spans: `import` reads a secret name in a code span as
            // required.
            d.item(&format!(
                "Secrets used when set: {}.",
                plain_names(optional)
            ));
        }
        if !forbidden.is_empty() {
            d.item(&format!(
                "Secrets forbidden (never set): {}.",
                names(forbidden.iter().cloned())
            ));
        }
        let vars: BTreeSet<String> = plan.vars.keys().chain(env.vars.keys()).cloned().collect();
        if !vars.is_empty() {
            d.item(&format!("Vars: {}.", names(vars)));
        }
        d.blank();
    }
}

fn step_section(d: &mut Doc, plan: &Plan, step: &Step) {
    d.line(&format!(
        "### {}: {}",
        code_span(&step.id),
        escape_inline(&one_line(&step.name))
    ));
    d.blank();
    let mut notes = Vec::new();
    if let Some(w) = &step.when {
        notes.push(format!(
            "Runs only when {}.",
            code_span(&w.value.to_string())
        ));
    }
    if let Some(c) = &step.cwd {
        notes.push(format!("In {}.", code_span(&c.value.written())));
    }
    if !step.env.is_empty() {
        notes.push(format!(
            "Environment: {} (values not shown).",
            plain_names(step.env.keys().cloned())
        ));
    }
    if let Some(t) = step.timeout {
        notes.push(format!("Timeout {}.", fmt_duration(t)));
    }
    if step.retries > 0 {
        notes.push(format!(
            "Retried {} times, {} apart.",
            step.retries,
            fmt_duration(step.retry_delay)
        ));
    }
    if step.continue_on_error {
        notes.push("A failure does not stop the deploy.".into());
    }
    if step.rollback.is_some() {
        notes.push("Has a rollback command (see Rollback procedures).".into());
    }
    if !notes.is_empty() {
        d.line(&notes.join(" "));
        d.blank();
    }
    let name = one_line(&step.name);
    match &step.kind {
        StepKind::Run { command } => {
            d.code(
                STEP_BLOCK,
                &format!(
                    "# {name}\n{}",
                    command.value.written().trim_end_matches('\n')
                ),
            );
        }
        StepKind::Check(c) if matches!(c.target, CheckTarget::Http(_)) => {
            d.code("bash", &curl_block(&name, c));
        }
        StepKind::Load(l) if hey_line(l).is_some() => {
            let mut body = format!("# {name}\n{}\n", hey_line(l).unwrap_or_default());
            for t in &l.slo {
                let _ = writeln!(body, "# - {}", t.value.text);
            }
            d.code("bash", &body);
        }
        StepKind::Gate(g) if matches!(g.kind, GateKind::Checklist(_)) => {
            if let GateKind::Checklist(c) = &g.kind {
                d.line("Confirm each item (`--ack ID` on the command line):");
                d.blank();
                for i in &c.items {
                    d.item(&format!("[ ] {}", escape_inline(&one_line(&i.text))));
                }
                d.blank();
            }
        }
        other => {
            let what = match other {
                StepKind::Deploy { service } => {
                    let driver = plan
                        .service(&service.value)
                        .map(|s| s.driver.name())
                        .unwrap_or("unknown");
                    format!(
                        "Deploys the service {} with the {} driver; a failure later rolls it back to its previous release.",
                        code_span(&service.value),
                        code_span(driver)
                    )
                }
                StepKind::Gate(g) => format!(
                    "A {} gate: it checks and changes nothing.",
                    code_span(g.kind.type_name())
                ),
                StepKind::Check(c) => {
                    format!("A {} check: it changes nothing.", code_span(c.kind()))
                }
                StepKind::Load(_) => "A load test, judged by its SLO thresholds.".into(),
                StepKind::Watch(_) => {
                    "A bake: measurements sampled over a window and judged.".into()
                }
                StepKind::Migrate(_) => "A database migration.".into(),
                StepKind::Run { .. } => String::new(),
            };
            d.line(&what);
            d.blank();
            let lines = other.describe(&|t: &Template| t.written());
            if !lines.is_empty() {
                // `*` bullets: a list of its own, apart from the `- [ ]` item below.
                for l in lines {
                    let _ = writeln!(d.out, "* {}", code_span(l.trim()));
                }
                d.blank();
            }
            d.item(&format!("[ ] {}", escape_inline(&name)));
            d.blank();
        }
    }
}

fn rollback_section(d: &mut Doc, plan: &Plan, envs: &[&Environment]) {
    d.line("## Rollback procedures");
    d.blank();
    let auto = |f: OnFailure| match f {
        OnFailure::Rollback => {
            "stagegate undoes what ran, newest first: deployed services go back to their previous release, steps with a rollback command run it"
        }
        OnFailure::Stop => "stagegate stops and leaves everything as it is (`on_failure: stop`)",
    };
    d.line(&format!("When a step fails, {}.", auto(plan.on_failure)));
    for env in envs {
        if let Some(f) = env.on_failure
            && f != plan.on_failure
        {
            d.line(&format!("In {}: {}.", code_span(&env.name), auto(f)));
        }
    }
    d.blank();
    for (_, step) in plan.steps() {
        let Some(rb) = &step.rollback else { continue };
        d.line(&format!("### Rollback of {}", code_span(&step.id)));
        d.blank();
        d.code(
            STEP_BLOCK,
            &format!(
                "# rollback: {}\n{}",
                one_line(&step.name),
                rb.value.written().trim_end_matches('\n')
            ),
        );
    }
}

/// `1h`, `90m`, `30s`, `200ms`: the largest unit that says it exactly.
fn fmt_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A word for `sh`: single-quoted unless it is plainly safe.
fn sh(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=,+%".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn url_with_query(h: &stagegate_plan::check::HttpRequest) -> String {
    let mut url = h.url.value.written();
    if !h.query.is_empty() {
        let q: Vec<String> = h
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", v.value.written()))
            .collect();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&q.join("&"));
    }
    url
}

/// A password written in the plan is not shown; a reference is shown as written.
fn hidden(t: &Template) -> String {
    if t.is_literal() {
        "***".into()
    } else {
        t.written()
    }
}

/// An `http` check as the equivalent curl command, with its `# Expected:` line.
fn curl_block(name: &str, c: &CheckSpec) -> String {
    let CheckTarget::Http(h) = &c.target else {
        return String::new();
    };
    let mut args: Vec<String> = vec!["-sS".into()];
    if h.method != "GET" {
        args.push(format!("-X {}", sh(&h.method)));
    }
    for (k, v) in &h.headers {
        args.push(format!("-H {}", sh(&header(k, &v.value))));
    }
    match &h.auth {
        Some(Auth::Bearer(t)) => args.push(format!(
            "-H {}",
            sh(&format!("Authorization: Bearer {}", hidden(&t.value)))
        )),
        Some(Auth::Basic { user, password }) => args.push(format!(
            "-u {}",
            sh(&format!(
                "{}:{}",
                user.value.written(),
                hidden(&password.value)
            ))
        )),
        None => {}
    }
    let mut comments = Vec::new();
    match &h.body {
        Some(RequestBody::Json(j)) => {
            args.push(format!("-H {}", sh("Content-Type: application/json")));
            args.push(format!("--data {}", sh(&json_text(j))));
        }
        Some(RequestBody::Form(f)) => {
            let pairs: Vec<String> = f
                .iter()
                .map(|(k, v)| format!("{k}={}", v.value.written()))
                .collect();
            args.push(format!("--data {}", sh(&pairs.join("&"))));
        }
        Some(RequestBody::Multipart(parts)) => {
            for p in parts {
                let value = match &p.content {
                    Payload::Text(t) => t.value.written(),
                    Payload::File(f) => format!("@{}", f.value.written()),
                    Payload::Random { size, .. } => {
                        comments.push(format!("# part {}: {size} random bytes", p.name));
                        continue;
                    }
                };
                args.push(format!("-F {}", sh(&format!("{}={value}", p.name))));
            }
        }
        Some(RequestBody::Raw(Payload::Text(t))) => {
            args.push(format!("--data {}", sh(&t.value.written())))
        }
        Some(RequestBody::Raw(Payload::File(f))) => args.push(format!(
            "--data-binary {}",
            sh(&format!("@{}", f.value.written()))
        )),
        Some(RequestBody::Raw(Payload::Random { size, .. })) => {
            comments.push(format!("# body: {size} random bytes"));
        }
        None => {}
    }
    if h.insecure {
        args.push("-k".into());
    }
    if h.follow_redirects {
        args.push("-L".into());
    }
    if let Some(t) = h.timeout {
        args.push(format!("-m {}", t.as_secs_f64()));
    }
    args.push(sh(&url_with_query(h)));
    let mut out = format!("# {name}\ncurl {}\n", args.join(" \\\n  "));
    for l in comments {
        out.push_str(&l);
        out.push('\n');
    }
    let (expected, rest) = expectations(c);
    if let Some(e) = expected {
        let _ = writeln!(out, "# Expected: {e}");
    }
    if !rest.is_empty() {
        out.push('\n');
        for r in rest {
            let _ = writeln!(out, "# and: {r}");
        }
    }
    out
}

/// The `# Expected:` text (`HTTP 200, {"status": "ok"}`) and every other assertion, described.
fn expectations(c: &CheckSpec) -> (Option<String>, Vec<String>) {
    let mut status = None;
    let mut json = serde_json::Map::new();
    let mut rest = Vec::new();
    for a in c.expect.iter() {
        if let Assertion::Value {
            subject, matcher, ..
        } = a
        {
            match (subject, matcher) {
                (Subject::Status, Matcher::Equals(t)) if t.value.is_literal() => {
                    status = Some(t.value.written());
                    continue;
                }
                (Subject::Status, Matcher::StatusClass(n)) => {
                    status = Some(format!("{n}xx"));
                    continue;
                }
                (Subject::Json(p), Matcher::Equals(t)) => {
                    if let Some(key) = p.text_raw.strip_prefix("$.")
                        && key
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    {
                        json.insert(key.into(), serde_json::Value::String(t.value.written()));
                        continue;
                    }
                }
                _ => {}
            }
        }
        rest.push(stagegate_plan::check::describe_assertion(
            a,
            c.kind(),
            &|t| t.written(),
        ));
    }
    let mut parts = Vec::new();
    if let Some(s) = status {
        parts.push(format!("HTTP {s}"));
    }
    if !json.is_empty() {
        parts.push(serde_json::Value::Object(json).to_string());
    }
    let expected = (!parts.is_empty()).then(|| parts.join(", "));
    (expected, rest)
}

fn json_text(j: &JsonTemplate) -> String {
    fn value(j: &JsonTemplate) -> serde_json::Value {
        match j {
            JsonTemplate::Null => serde_json::Value::Null,
            JsonTemplate::Bool(b) => serde_json::Value::Bool(*b),
            JsonTemplate::Number(n) => serde_json::Value::Number(n.clone()),
            JsonTemplate::String(t) => serde_json::Value::String(t.value.written()),
            JsonTemplate::Array(a) => serde_json::Value::Array(a.iter().map(value).collect()),
            JsonTemplate::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), value(v))).collect())
            }
        }
    }
    value(j).to_string()
}

/// The `hey` command of a load step with one plain request and a fixed number of users.
fn hey_line(l: &stagegate_plan::LoadSpec) -> Option<String> {
    let [req] = l.scenario.as_slice() else {
        return None;
    };
    let RequestSource::Inline(c) = &req.source else {
        return None;
    };
    let CheckTarget::Http(h) = &c.target else {
        return None;
    };
    if !l.setup.is_empty() || l.users.is_some() || h.body.is_some() || h.auth.is_some() {
        return None;
    }
    let Model::Closed { vus, stop, ramp } = &l.profile.model else {
        return None;
    };
    if !ramp.is_empty() || !l.profile.warmup.is_zero() {
        return None;
    }
    let mut args = vec!["hey".to_string()];
    match stop {
        Stop::Requests(n) => args.push(format!("-n {n}")),
        Stop::Duration(d) => args.push(format!("-z {}", fmt_duration(*d))),
    }
    args.push(format!("-c {vus}"));
    if h.method != "GET" {
        args.push(format!("-m {}", sh(&h.method)));
    }
    for (k, v) in &h.headers {
        args.push(format!("-H {}", sh(&header(k, &v.value))));
    }
    args.push(sh(&url_with_query(h)));
    Some(args.join(" "))
}
