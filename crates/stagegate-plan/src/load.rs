//! Load steps: `load:` runs the built-in load generator against a service and gates the
//! deploy on its SLO thresholds.
//!
//! The requests are HTTP check definitions: `check: ID` reuses an `http` check step of the
//! plan (its request and its `expect`), and `scenario:` lists several requests per
//! iteration, each `{ check: ID }` or an inline `{ name, http, expect, capture }`. `setup:`
//! lists requests each virtual user sends once before its first iteration (a login whose
//! token is captured). Inside a load step, `${{ vu.NAME }}` is a virtual user's own
//! variable: a column of the `users` file (CSV or JSON) or a value captured by an earlier
//! request of that user.
//!
//! ```yaml
//! - id: load
//!   load:
//!     vus: 10
//!     requests: 100
//!     check: download          # an `http` check step of this plan
//!     slo: ["p95 < 2s", "status_5xx == 0", "error_rate < 5%"]
//! ```

use std::collections::HashMap;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};
use stagegate_load::slo::fmt_duration;
use stagegate_load::{AbortRule, LoadProfile, Model, RampStage, Stop, Threshold, parse_rate};

use crate::build::template;
use crate::check::{Assertion, CheckSpec, CheckTarget, Payload, RequestBody, Subject};
use crate::diagnostic::{Span, did_you_mean};
use crate::model::{Plan, Step, StepKind};
use crate::template::{Ref, Template};
use crate::yaml::{Cx, Spanned};

/// Keys of the `load:` mapping.
const LOAD_KEYS: &[&str] = &[
    "vus",
    "requests",
    "iterations",
    "duration",
    "rate",
    "max_in_flight",
    "warmup",
    "ramp",
    "timeout",
    "threads",
    "check",
    "scenario",
    "setup",
    "users",
    "cookies",
    "isolation",
    "slo",
    "abort",
];

/// Keys of an inline scenario or setup request.
const REQUEST_KEYS: &[&str] = &["name", "check", "http", "expect", "capture"];

/// A load step.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub span: Span,
    /// The model, warm-up, ramp, per-request timeout and threads.
    pub profile: LoadProfile,
    /// The requests of one iteration, in order (at least one).
    pub scenario: Vec<LoadRequest>,
    /// Requests each virtual user sends once before its first iteration.
    pub setup: Vec<LoadRequest>,
    /// A CSV or JSON file of users (relative to the plan): user `i` takes row `i`.
    pub users: Option<Spanned<Template>>,
    /// Give each virtual user its own cookie jar (the default).
    pub cookies: bool,
    /// Columns of the users file whose values no other user may ever see.
    pub isolation: Vec<Spanned<String>>,
    pub slo: Vec<Spanned<Threshold>>,
    pub abort: Vec<Spanned<AbortRule>>,
}

/// One request of a load step.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// Names it in per-request results and thresholds (`p95[login] < 300ms`).
    pub name: String,
    pub span: Span,
    pub source: RequestSource,
}

#[derive(Debug, Clone)]
pub enum RequestSource {
    /// An `http` check step of the plan, by id.
    Step(Spanned<String>),
    /// Written in the load step.
    Inline(Box<CheckSpec>),
}

impl LoadSpec {
    /// The check a request uses: its own, or the named step's.
    pub fn check_of<'p>(plan: &'p Plan, r: &'p LoadRequest) -> Option<&'p CheckSpec> {
        match &r.source {
            RequestSource::Inline(c) => Some(c),
            RequestSource::Step(id) => plan.steps().find_map(|(_, s)| match &s.kind {
                StepKind::Check(c) if s.id == id.value => Some(c.as_ref()),
                _ => None,
            }),
        }
    }

    /// Every template the step holds (inline requests, the users file).
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        let mut out: Vec<&Spanned<Template>> = self.users.iter().collect();
        for r in self.setup.iter().chain(&self.scenario) {
            if let RequestSource::Inline(c) = &r.source {
                out.extend(c.templates());
            }
        }
        out
    }

    pub fn default_name(&self) -> String {
        let what = match &self.profile.model {
            Model::Closed { vus, stop, .. } => match stop {
                Stop::Requests(n) if self.scenario.len() > 1 => {
                    format!("{n} iterations, {vus} at a time")
                }
                Stop::Requests(n) => format!("{n} requests, {vus} at a time"),
                Stop::Duration(d) => format!("{vus} users for {}", fmt_duration(*d)),
            },
            Model::Open { rate, duration, .. } => {
                format!("{rate}/s for {}", fmt_duration(*duration))
            }
        };
        let names: Vec<&str> = self.scenario.iter().map(|r| r.name.as_str()).collect();
        format!("load: {what} ({})", names.join(", "))
    }

    /// Lines that `stagegate plan` shows under the step.
    pub fn describe(&self, render: &dyn Fn(&Template) -> String) -> Vec<String> {
        let mut lines = vec![self.default_name()];
        if !self.profile.warmup.is_zero() {
            lines.push(format!("  warm-up {}", fmt_duration(self.profile.warmup)));
        }
        for s in self.profile.ramp() {
            lines.push(format!(
                "  ramp to {} over {}",
                s.target,
                fmt_duration(s.duration)
            ));
        }
        if let Some(u) = &self.users {
            lines.push(format!("  users from {}", render(&u.value)));
        }
        for r in &self.setup {
            lines.push(format!("  setup: {}", r.name));
        }
        for r in &self.scenario {
            match &r.source {
                RequestSource::Step(id) => {
                    lines.push(format!("  {} (check `{}`)", r.name, id.value))
                }
                RequestSource::Inline(c) => {
                    lines.push(format!("  {}:", r.name));
                    lines.extend(c.describe(render).into_iter().map(|l| format!("    {l}")));
                }
            }
        }
        for f in &self.isolation {
            lines.push(format!("  isolation: no user sees another's `{}`", f.value));
        }
        for t in &self.slo {
            lines.push(format!("  slo: {}", t.value.text));
        }
        for a in &self.abort {
            lines.push(format!("  abort: {}", a.value.text));
        }
        lines
    }
}

/// Reads a `load:` step.
pub(crate) fn read(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    common: &[&str],
) -> Option<StepKind> {
    let mut allowed: Vec<&str> = common.to_vec();
    allowed.push("load");
    cx.keys(m, what, &allowed);
    for key in ["retries", "retry_delay"] {
        if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
            cx.error_help(
                format!("{what}: `{key}` does not apply to a load step"),
                cx.key_span(k),
                "a load test runs once and its thresholds judge it; running it again until it passes would hide a failure",
            );
        }
    }
    let node = m.get_node("load")?;
    let lwhat = format!("`load` in {what}");
    let span = cx.span(node);
    let lm = cx.mapping(node, &lwhat)?;
    cx.keys(lm, &lwhat, LOAD_KEYS);

    let profile = read_profile(cx, lm, &lwhat, &span);

    let mut scenario = Vec::new();
    if let Some(c) = lm.get_node("check") {
        if let Some(id) = cx.scalar(c, &format!("`check` in {lwhat}")) {
            scenario.push(LoadRequest {
                name: id.value.clone(),
                span: id.span.clone(),
                source: RequestSource::Step(id),
            });
        }
        if lm.get_node("scenario").is_some() {
            cx.error_help(
                format!("{lwhat} has both `check` and `scenario`"),
                cx.span(c),
                "use `check: ID` for one request, or list every request under `scenario`",
            );
        }
    } else if let Some(s) = lm.get_node("scenario") {
        scenario = read_requests(cx, s, &format!("`scenario` in {lwhat}"));
        if scenario.is_empty() && matches!(s, Node::Sequence(_)) {
            cx.error(format!("`scenario` in {lwhat} is empty"), cx.span(s));
        }
    } else {
        cx.error_help(
            format!("{lwhat} has no requests"),
            span.clone(),
            "add `check: ID` (an `http` check step of this plan) or a `scenario:` list of requests",
        );
    }
    if let Some(n) = lm.get_node("requests")
        && scenario.len() > 1
    {
        cx.error_help(
            format!(
                "{lwhat}: `requests` counts requests, but each iteration of this scenario sends {}",
                scenario.len()
            ),
            cx.span(n),
            "write `iterations: N` (each runs the whole scenario), or `duration`",
        );
    }
    let setup = match lm.get_node("setup") {
        Some(s) => read_requests(cx, s, &format!("`setup` in {lwhat}")),
        None => Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for r in setup.iter().chain(&scenario) {
        if seen.contains(&r.name.as_str()) {
            cx.error_help(
                format!("two requests of {lwhat} are named `{}`", r.name),
                r.span.clone(),
                "give each request its own `name`: thresholds and results are per name",
            );
        }
        seen.push(&r.name);
    }

    let users = cx.string(lm, "users", &lwhat).and_then(|s| template(cx, s));
    let cookies = cx.bool(lm, "cookies", &lwhat).unwrap_or(true);
    let isolation = cx.string_list(lm, "isolation", &lwhat);
    if let (Some(first), None) = (isolation.first(), &users) {
        cx.error_help(
            format!("{lwhat} has an `isolation` rule but no `users` file"),
            first.span.clone(),
            "isolation compares each user's responses with the other users' values: add `users: users.csv`",
        );
    }
    let names: Vec<String> = seen.iter().map(|s| s.to_string()).collect();
    let slo = cx
        .string_list(lm, "slo", &lwhat)
        .into_iter()
        .filter_map(|s| match Threshold::parse(&s.value) {
            Ok(t) => {
                check_request_name(cx, t.request.as_deref(), &names, &s.span);
                Some(Spanned {
                    value: t,
                    span: s.span,
                })
            }
            Err(e) => {
                cx.error_help(
                    format!("`slo` in {lwhat}: {}", e.reason),
                    s.span,
                    "write a threshold such as `p95 < 500ms`, `error_rate < 1%`, `rps >= 100`, `p95[login] < 300ms` or `p95 <= +10% vs last_pass`",
                );
                None
            }
        })
        .collect();
    let abort = cx
        .string_list(lm, "abort", &lwhat)
        .into_iter()
        .filter_map(|s| match AbortRule::parse(&s.value) {
            Ok(a) => {
                check_request_name(cx, a.condition.request.as_deref(), &names, &s.span);
                Some(Spanned {
                    value: a,
                    span: s.span,
                })
            }
            Err(e) => {
                cx.error_help(
                    format!("`abort` in {lwhat}: {}", e.reason),
                    s.span,
                    "write a rule such as `error_rate > 5% over 10s` or `p99 > 2s`",
                );
                None
            }
        })
        .collect();

    Some(StepKind::Load(Box::new(LoadSpec {
        span,
        profile: profile?,
        scenario,
        setup,
        users,
        cookies,
        isolation,
        slo,
        abort,
    })))
}

fn check_request_name(cx: &mut Cx, name: Option<&str>, names: &[String], span: &Span) {
    let Some(name) = name else { return };
    if !names.iter().any(|n| n == name) {
        let help = match did_you_mean(name, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the requests are: {}", names.join(", ")),
        };
        cx.error_help(
            format!("the threshold names request `{name}`, which this load step does not send"),
            span.clone(),
            help,
        );
    }
}

/// The model (closed or open), warm-up, ramp, timeout and threads.
fn read_profile(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    span: &Span,
) -> Option<LoadProfile> {
    let vus = cx.uint(m, "vus", what);
    // `requests` for one request per iteration, `iterations` for a scenario of several.
    let requests = match (cx.uint(m, "requests", what), cx.uint(m, "iterations", what)) {
        (Some(_), Some(_)) => {
            cx.error_help(
                format!("{what} has both `requests` and `iterations`"),
                span.clone(),
                "keep `requests` for one request per iteration, `iterations` for a scenario",
            );
            None
        }
        (r, i) => r.or(i),
    };
    let duration = cx.duration(m, "duration", what);
    let rate = cx
        .string(m, "rate", what)
        .and_then(|s| match parse_rate(&s.value) {
            Ok(r) => Some(r),
            Err(e) => {
                cx.error(format!("`rate` in {what}: {e}"), s.span);
                None
            }
        });
    let max_in_flight = cx.uint(m, "max_in_flight", what);
    let open = m.get_node("rate").is_some();
    let ramp = match m.get_node("ramp") {
        Some(n) => read_ramp(cx, n, what, open)?,
        None => Vec::new(),
    };
    // A ramp sets the run's length; a `duration` beside it would be ignored.
    let duration = match (duration, ramp.is_empty()) {
        (Some(d), false) => {
            let total: Duration = ramp.iter().map(|s| s.duration).sum();
            cx.error_help(
                format!("{what} has both a `ramp` and a `duration`"),
                d.span,
                format!(
                    "the ramp sets how long the test runs ({}): remove `duration`",
                    fmt_duration(total)
                ),
            );
            return None;
        }
        (None, false) => Some(Spanned {
            value: Duration::ZERO,
            span: span.clone(),
        }),
        (d, true) => d,
    };
    let model = if open {
        if let Some(n) = m.get_node("vus") {
            cx.error_help(
                format!("{what} has both `rate` (open model) and `vus` (closed model)"),
                cx.span(n),
                "the open model sends `rate` requests per second with at most `max_in_flight` at once; the closed model runs `vus` users that each wait for their answer. Keep one",
            );
        }
        if let Some(n) = m.get_node("requests").or(m.get_node("iterations")) {
            cx.error_help(
                format!("{what}: the open model runs for a `duration`, not a number of requests"),
                cx.span(n),
                "replace `requests` with `duration: 30s`",
            );
        }
        let Some(duration) = duration else {
            if m.get_node("duration").is_none() && ramp.is_empty() {
                cx.error_help(
                    format!("{what} has a `rate` but no `duration`"),
                    span.clone(),
                    "add `duration: 30s`",
                );
            }
            return None;
        };
        Model::Open {
            rate: rate?,
            duration: duration.value,
            max_in_flight: max_in_flight.unwrap_or(1000) as usize,
            ramp,
        }
    } else {
        if let Some(n) = m.get_node("max_in_flight") {
            cx.error_help(
                format!("{what}: `max_in_flight` belongs to the open model"),
                cx.span(n),
                "add `rate: 100/s`, or remove `max_in_flight` (`vus` sets the concurrency)",
            );
        }
        if let (Some(_), false) = (requests, ramp.is_empty()) {
            cx.error_help(
                format!("{what} has both a `ramp` and a number of requests"),
                span.clone(),
                "the ramp sets how long the test runs: remove `requests` (or `iterations`)",
            );
            return None;
        }
        let stop = match (requests, duration) {
            (Some(n), None) => Stop::Requests(n),
            (None, Some(d)) => Stop::Duration(d.value),
            (Some(_), Some(d)) => {
                cx.error_help(
                    format!("{what} has both `requests` and `duration`"),
                    d.span,
                    "the run stops after a number of requests or after a time: keep one",
                );
                return None;
            }
            (None, None) => {
                if m.get_node("requests").is_none()
                    && m.get_node("iterations").is_none()
                    && m.get_node("duration").is_none()
                {
                    cx.error_help(
                        format!("{what} says neither how many requests nor for how long"),
                        span.clone(),
                        "add `requests: 100` or `duration: 30s` (with `vus`), or `rate: 100/s` and `duration: 30s`",
                    );
                }
                return None;
            }
        };
        let vus = match vus {
            Some(v) => v,
            None if m.get_node("vus").is_some() => return None,
            None if ramp.is_empty() => {
                cx.error_help(
                    format!("{what} has no `vus`"),
                    span.clone(),
                    "add `vus: 10` (virtual users, each sending its next request when answered), or `rate: 100/s` for the open model",
                );
                return None;
            }
            None => 0,
        };
        Model::Closed {
            vus: vus as usize,
            stop,
            ramp,
        }
    };
    let mut profile = LoadProfile::closed(1, Stop::Requests(1));
    profile.model = model;
    if let Some(w) = cx.duration(m, "warmup", what) {
        profile.warmup = w.value;
    }
    if let Some(t) = cx.duration(m, "timeout", what) {
        profile.timeout = t.value;
    }
    profile.threads = cx.uint(m, "threads", what).map(|t| t as usize);
    match profile.validate() {
        Ok(()) => Some(profile),
        Err(e) => {
            let msg = e.to_string();
            cx.error(format!("{what}: {msg}"), span.clone());
            None
        }
    }
}

fn read_ramp(cx: &mut Cx, n: &Node, what: &str, open: bool) -> Option<Vec<RampStage>> {
    let rwhat = format!("`ramp` in {what}");
    let Node::Sequence(seq) = n else {
        cx.error_help(
            format!("{rwhat} must be a list"),
            cx.span(n),
            "write `ramp: [{ target: 50, duration: 30s }, { target: 0, duration: 10s }]`",
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in seq.iter() {
        let Some(m) = cx.mapping(item, &format!("an item of {rwhat}")) else {
            ok = false;
            continue;
        };
        cx.keys(m, &rwhat, &["target", "duration"]);
        let target = match cx.string(m, "target", &rwhat) {
            Some(s) => {
                let parsed = if open {
                    parse_rate(&s.value)
                } else {
                    s.value
                        .trim()
                        .parse::<u64>()
                        .map(|v| v as f64)
                        .map_err(|_| format!("`{}` is not a number of users", s.value))
                };
                match parsed {
                    Ok(v) => Some(v),
                    Err(e) => {
                        cx.error(format!("`target` in {rwhat}: {e}"), s.span);
                        None
                    }
                }
            }
            None => {
                cx.error_help(
                    format!("an item of {rwhat} has no `target`"),
                    cx.span(item),
                    if open {
                        "add `target: 200/s` (the rate to reach)"
                    } else {
                        "add `target: 50` (the number of users to reach)"
                    },
                );
                None
            }
        };
        let duration = cx.duration(m, "duration", &rwhat);
        if m.get_node("duration").is_none() {
            cx.error_help(
                format!("an item of {rwhat} has no `duration`"),
                cx.span(item),
                "add `duration: 30s` (how long the move to `target` takes)",
            );
        }
        match (target, duration) {
            (Some(target), Some(d)) => out.push(RampStage {
                target,
                duration: d.value,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// Reads `scenario:` or `setup:`: a list of `{ check: ID }` or inline requests.
fn read_requests(cx: &mut Cx, n: &Node, what: &str) -> Vec<LoadRequest> {
    let Node::Sequence(seq) = n else {
        cx.error_help(
            format!("{what} must be a list of requests"),
            cx.span(n),
            "write `- check: ID` or `- { name: login, http: { method: POST, url: ... }, capture: {...} }`",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in seq.iter().enumerate() {
        let iwhat = format!("request {} of {what}", i + 1);
        let Some(m) = cx.mapping(item, &iwhat) else {
            continue;
        };
        let name = cx.string(m, "name", &iwhat);
        if let Some(c) = m.get_node("check") {
            cx.keys(m, &iwhat, &["name", "check"]);
            if let Some(id) = cx.scalar(c, &format!("`check` in {iwhat}")) {
                out.push(LoadRequest {
                    name: name.map(|n| n.value).unwrap_or_else(|| id.value.clone()),
                    span: id.span.clone(),
                    source: RequestSource::Step(id),
                });
            }
            continue;
        }
        if m.get_node("http").is_none() {
            cx.error_help(
                format!("{iwhat} has neither `check` nor `http`"),
                cx.span(item),
                "write `check: ID` to reuse an `http` check step, or `http: { method, url, ... }`",
            );
            continue;
        }
        let Some(spec) = crate::check::read(cx, "http", m, &iwhat, REQUEST_KEYS) else {
            continue;
        };
        let span = cx.span(item);
        let name = match name {
            Some(n) => n.value,
            None => match &spec.target {
                CheckTarget::Http(h) => format!("{} {}", h.method, h.url_text),
                _ => format!("request {}", i + 1),
            },
        };
        check_loadable(cx, &spec, &span, &iwhat);
        out.push(LoadRequest {
            name,
            span,
            source: RequestSource::Inline(Box::new(spec)),
        });
    }
    out
}

/// What a check may not do when it is sent thousands of times in a load test.
fn check_loadable(cx: &mut Cx, spec: &CheckSpec, span: &Span, what: &str) {
    let mut no = |thing: &str, help: &str| {
        cx.error_help(
            format!("{what} cannot be load-tested: it {thing}"),
            span.clone(),
            help.to_string(),
        );
    };
    let CheckTarget::Http(h) = &spec.target else {
        no(
            "is not an `http` check",
            "a load step sends HTTP requests: name an `http` check step",
        );
        return;
    };
    match &h.body {
        Some(RequestBody::Multipart(_)) => no(
            "sends a multipart body",
            "send `json`, `form` or a text `body` in a load test; keep the upload in its own check step",
        ),
        Some(RequestBody::Raw(Payload::Random { .. })) => no(
            "sends generated random bytes",
            "send `json`, `form` or a text `body` in a load test",
        ),
        _ => {}
    }
    if h.save.is_some() {
        no(
            "saves its body to a file",
            "every response would overwrite it: remove `save` or keep that check as its own step",
        );
    }
    if h.follow_redirects {
        no(
            "follows redirects",
            "a load test measures each answer as it comes: expect the 3xx status instead",
        );
    }
    if h.ca.is_some() || h.insecure {
        no(
            "sets TLS options",
            "the load generator uses the system's trusted certificates; test a plain or publicly trusted endpoint",
        );
    }
    if spec.retry.is_some() || !spec.until.is_empty() || spec.repeat.is_some() {
        no(
            "polls or repeats (`retry`, `until`, `repeat`)",
            "the load profile says how many requests go out: remove them from this request",
        );
    }
    for a in &spec.expect {
        if let Assertion::Value {
            subject: Subject::Duration,
            span,
            ..
        } = a
        {
            cx.error_help(
                format!("{what}: a `duration` assertion does not apply under load"),
                span.clone(),
                "set a latency threshold instead, such as `slo: [\"p95[NAME] < 500ms\"]`",
            );
        }
    }
}

/// Checks across the plan: `check: ID` names an `http` check step that can be load-tested,
/// and `vu.NAME` is known.
pub(crate) fn check_plan(cx: &mut Cx, plan: &Plan) {
    let check_ids: Vec<&str> = plan
        .steps()
        .filter(|(_, s)| matches!(&s.kind, StepKind::Check(c) if c.kind() == "http"))
        .map(|(_, s)| s.id.as_str())
        .collect();
    // Steps by id, once: a plan may have many load requests naming checks.
    let by_id: HashMap<&str, &Step> = plan.steps().map(|(_, s)| (s.id.as_str(), s)).collect();
    for (_, step) in plan.steps() {
        // `vu.*` outside a load step is reported by `check_references`, at the reference.
        let StepKind::Load(spec) = &step.kind else {
            continue;
        };
        let what = format!("load step `{}`", step.id);
        // Variables every user has: the users file's columns are only known when it is
        // read, so only captures are checked here.
        let mut captured: Vec<String> = Vec::new();
        for r in spec.setup.iter().chain(&spec.scenario) {
            match &r.source {
                RequestSource::Step(id) => match by_id.get(id.value.as_str()) {
                    None => {
                        let help = match did_you_mean(&id.value, check_ids.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None if check_ids.is_empty() => {
                                    "the plan has no `http` check step: write the request inline with `http:`".into()
                                }
                                None => format!("`http` check steps: {}", check_ids.join(", ")),
                            };
                        cx.error_help(
                            format!("{what} uses unknown check `{}`", id.value),
                            id.span.clone(),
                            help,
                        );
                    }
                    Some(s) => match &s.kind {
                        StepKind::Check(c) => {
                            check_loadable(cx, c, &id.span, &format!("check `{}`", id.value));
                            captured.extend(c.captures.iter().map(|c| c.name.clone()));
                        }
                        _ => cx.error_help(
                            format!(
                                "{what} uses step `{}`, which is a `{}` step, not an `http` check",
                                id.value,
                                s.kind.name()
                            ),
                            id.span.clone(),
                            "name an `http` check step, or write the request inline with `http:`",
                        ),
                    },
                },
                RequestSource::Inline(c) => {
                    captured.extend(c.captures.iter().map(|c| c.name.clone()));
                }
            }
        }
        if spec.users.is_some() {
            continue;
        }
        for t in spec.templates() {
            for (r, _) in t.value.refs() {
                if let Ref::Vu(name) = &r
                    && !captured.contains(name)
                {
                    let help = if captured.is_empty() {
                        "add `users: users.csv` (a column per variable), or capture it in a `setup` request".to_string()
                    } else {
                        format!(
                            "captured here: {}; or add `users: users.csv` with a `{name}` column",
                            captured.join(", ")
                        )
                    };
                    cx.error_help(
                        format!("{what} uses `vu.{name}`, which no users file or capture provides"),
                        t.span.clone(),
                        help,
                    );
                }
            }
        }
    }
}
