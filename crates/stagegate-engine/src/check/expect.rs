//! Assertions and captures, evaluated on what a check observed.
//!
//! The plan's assertions hold templates; [`Expectation::render`] resolves them once per step
//! (values, regexes, JSONPaths), so evaluating is a pure function of an [`Observation`] and
//! can run in many tasks at once (`repeat`). Every assertion is evaluated, passing or not,
//! and yields an [`AssertionResult`] with the expected and the actual value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stagegate_plan::check::{
    Assertion, Capture, CaptureSource, CmpOp, LogEntry, Matcher, Subject, describe_assertion,
    describe_entry, describe_matcher,
};
use stagegate_plan::{Scope, Scrubber, Template};

use super::AssertionResult;
use super::body::Body;

/// What one attempt of a check saw.
#[derive(Debug, Default)]
pub struct Observation {
    pub status: Option<u16>,
    /// Lowercase names; repeated headers joined with `, `.
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
    pub stderr: Option<Body>,
    pub duration: Duration,
    pub exit_code: Option<i32>,
    /// Why there is no exit code (killed by a signal).
    pub exit_note: Option<String>,
    pub open: Option<bool>,
    pub sent_sha256: Option<String>,
    /// The log window, for log checks.
    pub lines: Vec<String>,
    /// Secret values to mask in every value shown, before it is shortened.
    pub mask: Arc<Scrubber>,
    /// The series a Prometheus query returned.
    pub series: Vec<Series>,
}

/// One series of a Prometheus result: its labels and its points (one for an instant query).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// `(unix seconds, value)`; NaN where Prometheus answered `NaN`.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// `{status="5xx",instance="127.0.0.1:8080"}`, or `{}`.
    pub fn label_text(&self) -> String {
        let inner: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    }
}

impl Observation {
    /// Masks these secrets in everything shown from now on (the body's previews too).
    pub fn set_mask(&mut self, mask: Scrubber) {
        self.share_mask(Arc::new(mask));
    }

    /// [`Observation::set_mask`] with a scrubber shared by many observations (`repeat`):
    /// cloning a `Scrubber` copies every secret value, cloning the `Arc` does not.
    pub fn share_mask(&mut self, mask: Arc<Scrubber>) {
        if let Some(b) = self.body.as_mut() {
            b.mask = mask.clone();
        }
        if let Some(b) = self.stderr.as_mut() {
            b.mask = mask.clone();
        }
        self.mask = mask;
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response's headers as checks see them: lowercase names, repeated ones joined with `, `.
pub fn joined_headers(map: &http::HeaderMap) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(map.len());
    for (k, v) in map {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.iter_mut().find(|(n, _)| n == k.as_str()) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            None => headers.push((k.as_str().to_string(), v)),
        }
    }
    headers
}

/// A matcher with its templates resolved.
#[derive(Debug, Clone)]
pub enum Rule {
    Equals(String),
    OneOf(Vec<String>),
    StatusClass(u16),
    Contains(String),
    Matches(regex::Regex),
    Exists(bool),
    Count(Box<Rule>),
    Length(Box<Rule>),
    Compare(CmpOp, f64),
    Not(Box<Rule>),
}

#[derive(Debug, Clone)]
pub enum Target {
    Status,
    Header(String),
    Json(serde_json_path::JsonPath),
    Body,
    BodyLen,
    Sha256,
    Duration,
    ExitCode,
    Stderr,
    Open,
    /// Every value of every series.
    PromValue,
    /// The number of series.
    PromSeries,
    /// A label of every series.
    PromLabel(String),
}

#[derive(Debug, Clone)]
pub enum Entry {
    Matches(regex::Regex),
    Json(Vec<(serde_json_path::JsonPath, Vec<Rule>)>),
}

/// One rendered assertion.
#[derive(Debug, Clone)]
pub enum Expectation {
    Value {
        name: String,
        expected: String,
        target: Target,
        rule: Rule,
        numeric: bool,
        sha: bool,
    },
    LogAbsent {
        name: String,
        expected: String,
        pattern: regex::Regex,
    },
    LogPresent {
        name: String,
        expected: String,
        entry: Entry,
    },
}

/// A rendered capture.
#[derive(Debug, Clone)]
pub struct Take {
    pub name: String,
    pub from: String,
    source: Source,
    regex: Option<regex::Regex>,
    pub secret: bool,
}

#[derive(Debug, Clone)]
enum Source {
    Json(serde_json_path::JsonPath),
    Header(String),
    Body,
    Stderr,
    Status,
    BodySha256,
    SentSha256,
}

fn render(scope: &Scope, t: &Template) -> Result<String, String> {
    scope.render(t).map_err(String::from)
}

fn compile_regex(text: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(text).map_err(|e| {
        let (_, msg) = stagegate_plan::check::regex_error(&e);
        format!("invalid regex `{text}`: {msg}")
    })
}

fn compile_path(
    spec: &stagegate_plan::check::JsonPathSpec,
    scope: &Scope,
) -> Result<serde_json_path::JsonPath, String> {
    if let Some(p) = &spec.compiled {
        return Ok(p.clone());
    }
    let text = render(scope, &spec.text.value)?;
    serde_json_path::JsonPath::parse(&text)
        .map_err(|e| format!("invalid JSONPath `{text}`: {}", e.message()))
}

fn rule(m: &Matcher, scope: &Scope, subject: &Subject) -> Result<Rule, String> {
    let unit = subject.unit();
    Ok(match m {
        Matcher::Equals(t) => Rule::Equals(render(scope, &t.value)?),
        Matcher::OneOf(items) => Rule::OneOf(
            items
                .iter()
                .map(|t| render(scope, &t.value))
                .collect::<Result<_, _>>()?,
        ),
        Matcher::StatusClass(c) => Rule::StatusClass(*c),
        Matcher::Contains(t) => Rule::Contains(render(scope, &t.value)?),
        Matcher::Matches(r) => Rule::Matches(match &r.compiled {
            Some(c) => c.clone(),
            None => compile_regex(&render(scope, &r.text.value)?)?,
        }),
        Matcher::Exists(b) => Rule::Exists(*b),
        Matcher::Count(inner) => Rule::Count(Box::new(rule(inner, scope, &Subject::ExitCode)?)),
        Matcher::Length(inner) => Rule::Length(Box::new(rule(inner, scope, &Subject::ExitCode)?)),
        Matcher::Compare(op, t) => {
            let text = render(scope, &t.value)?;
            let n = if matches!(subject, Subject::Json(_)) {
                stagegate_plan::check::Unit::Number.parse(&text)
            } else {
                unit.parse(&text)
            }
            .map_err(|e| format!("in `{}`: {e}", subject.label("")))?;
            Rule::Compare(*op, n)
        }
        Matcher::Not(inner) => Rule::Not(Box::new(rule(inner, scope, subject)?)),
    })
}

impl Expectation {
    /// Resolves an assertion's templates against the run's values.
    pub fn render(a: &Assertion, scope: &Scope, kind: &str) -> Result<Self, String> {
        let shown = |t: &Template| scope.render(t).unwrap_or_else(|e| format!("<{e}>"));
        Ok(match a {
            Assertion::Value {
                subject,
                matcher,
                implicit,
                ..
            } => {
                let target = match subject {
                    Subject::Status => Target::Status,
                    Subject::Header(h) => Target::Header(h.clone()),
                    Subject::Json(p) => Target::Json(compile_path(p, scope)?),
                    Subject::Body => Target::Body,
                    Subject::BodyLen => Target::BodyLen,
                    Subject::Sha256 => Target::Sha256,
                    Subject::Duration => Target::Duration,
                    Subject::ExitCode => Target::ExitCode,
                    Subject::Stderr => Target::Stderr,
                    Subject::Open => Target::Open,
                    Subject::Value => Target::PromValue,
                    Subject::Series => Target::PromSeries,
                    Subject::Label(l) => Target::PromLabel(l.clone()),
                };
                let mut expected = describe_matcher(matcher, &shown);
                if *implicit {
                    expected.push_str(" (default)");
                }
                Expectation::Value {
                    name: subject.label(kind),
                    expected,
                    target,
                    rule: rule(matcher, scope, subject)?,
                    numeric: subject.is_numeric(),
                    sha: matches!(subject, Subject::Sha256),
                }
            }
            Assertion::LogAbsent { pattern, .. } => Expectation::LogAbsent {
                name: "log absent".into(),
                expected: describe_assertion(a, kind, &shown),
                pattern: match &pattern.compiled {
                    Some(c) => c.clone(),
                    None => compile_regex(&render(scope, &pattern.text.value)?)?,
                },
            },
            Assertion::LogPresent { entry, .. } => Expectation::LogPresent {
                name: "log present".into(),
                expected: format!("a line {}", describe_entry(entry, &shown)),
                entry: match entry {
                    LogEntry::Matches(r) => Entry::Matches(match &r.compiled {
                        Some(c) => c.clone(),
                        None => compile_regex(&render(scope, &r.text.value)?)?,
                    }),
                    LogEntry::Json(fields) => Entry::Json(
                        fields
                            .iter()
                            .map(|(p, ms)| {
                                let subject = Subject::Json(p.clone());
                                Ok((
                                    compile_path(p, scope)?,
                                    ms.iter()
                                        .map(|m| rule(m, scope, &subject))
                                        .collect::<Result<Vec<_>, String>>()?,
                                ))
                            })
                            .collect::<Result<_, String>>()?,
                    ),
                },
            },
        })
    }

    /// The assertion's name and what it expects (`json $.id`, `== u017`).
    pub fn label(&self) -> (String, String) {
        match self {
            Expectation::Value { name, expected, .. }
            | Expectation::LogAbsent { name, expected, .. }
            | Expectation::LogPresent { name, expected, .. } => (name.clone(), expected.clone()),
        }
    }

    /// Whether evaluating it reads the body's text.
    pub fn reads_body(&self) -> bool {
        matches!(
            self,
            Expectation::Value {
                target: Target::Body | Target::Json(_) | Target::Sha256 | Target::BodyLen,
                ..
            }
        )
    }

    /// Whether evaluating it reads a header.
    pub fn reads_headers(&self) -> bool {
        matches!(
            self,
            Expectation::Value {
                target: Target::Header(_),
                ..
            }
        )
    }

    /// Whether evaluating it needs the body's sha256.
    pub fn reads_sha256(&self) -> bool {
        matches!(self, Expectation::Value { sha: true, .. })
    }

    /// The same assertion with each text it compares with passed through `fill` (a virtual
    /// user's variables filled in, in load tests). Its label (`expected`) keeps the
    /// placeholders, so a user's values (a password column, a token) stay out of messages.
    pub fn for_user(&self, fill: &dyn Fn(&str) -> String) -> Self {
        fn rule(r: &Rule, fill: &dyn Fn(&str) -> String) -> Rule {
            match r {
                Rule::Equals(s) => Rule::Equals(fill(s)),
                Rule::OneOf(v) => Rule::OneOf(v.iter().map(|s| fill(s)).collect()),
                Rule::Contains(s) => Rule::Contains(fill(s)),
                Rule::Count(i) => Rule::Count(Box::new(rule(i, fill))),
                Rule::Length(i) => Rule::Length(Box::new(rule(i, fill))),
                Rule::Not(i) => Rule::Not(Box::new(rule(i, fill))),
                other => other.clone(),
            }
        }
        match self {
            Expectation::Value {
                name,
                expected,
                target,
                rule: r,
                numeric,
                sha,
            } => Expectation::Value {
                name: name.clone(),
                expected: expected.clone(),
                target: target.clone(),
                rule: rule(r, fill),
                numeric: *numeric,
                sha: *sha,
            },
            other => other.clone(),
        }
    }

    /// Evaluates on what was observed; the kind's word for the body (`body`, `stdout`) is
    /// used in messages.
    pub fn evaluate(&self, obs: &Observation, body_word: &str) -> AssertionResult {
        match self {
            Expectation::Value {
                name,
                expected,
                target,
                rule,
                numeric,
                sha,
            } => {
                if matches!(target, Target::PromValue | Target::PromLabel(_)) {
                    let (passed, actual) = every_series(target, rule, obs);
                    return AssertionResult {
                        name: name.clone(),
                        expected: expected.clone(),
                        actual,
                        passed,
                    };
                }
                let actual = actual(target, obs, body_word);
                let (passed, shown) = apply(rule, &actual, *numeric, *sha, &obs.mask);
                AssertionResult {
                    name: name.clone(),
                    expected: expected.clone(),
                    actual: shown,
                    passed,
                }
            }
            Expectation::LogAbsent {
                name,
                expected,
                pattern,
            } => {
                let hits: Vec<(usize, &String)> = obs
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| pattern.is_match(l))
                    .collect();
                let actual = match hits.first() {
                    None => format!("no match in {} lines", obs.lines.len()),
                    Some((i, l)) => format!(
                        "{} matching line{} of {}; the first, line {}: {}",
                        hits.len(),
                        if hits.len() == 1 { "" } else { "s" },
                        obs.lines.len(),
                        i + 1,
                        short(&obs.mask, l)
                    ),
                };
                AssertionResult {
                    name: name.clone(),
                    expected: expected.clone(),
                    actual,
                    passed: hits.is_empty(),
                }
            }
            Expectation::LogPresent {
                name,
                expected,
                entry,
            } => {
                let (passed, actual) = find_entry(entry, &obs.lines, &obs.mask);
                AssertionResult {
                    name: name.clone(),
                    expected: expected.clone(),
                    actual,
                    passed,
                }
            }
        }
    }
}

/// A value to match.
#[derive(Debug)]
enum Actual<'a> {
    Num(f64, String),
    Text(String),
    Nodes(Vec<&'a Value>),
    Bool(bool),
    /// There is no value; the text says why.
    Missing(String),
}

fn actual<'a>(target: &Target, obs: &'a Observation, body_word: &str) -> Actual<'a> {
    let body = |what: &str| -> Result<&Body, String> {
        obs.body
            .as_ref()
            .ok_or_else(|| format!("there is no {what}"))
    };
    match target {
        Target::Status => match obs.status {
            Some(s) => Actual::Num(s as f64, s.to_string()),
            None => Actual::Missing("no answer".into()),
        },
        Target::Header(h) => match obs.header(h) {
            Some(v) => Actual::Text(v.to_string()),
            None => Actual::Missing(format!("no `{h}` header")),
        },
        Target::Json(path) => match body(body_word).and_then(|b| b.json(body_word)) {
            Ok(doc) => Actual::Nodes(path.query(doc).all()),
            Err(e) => Actual::Missing(e),
        },
        Target::Body => match body(body_word).and_then(|b| b.text(body_word)) {
            Ok(t) if body_word == "stdout" => Actual::Text(chomp(t)),
            Ok(t) => Actual::Text(t),
            Err(e) => Actual::Missing(e),
        },
        Target::BodyLen => match body(body_word) {
            Ok(b) => Actual::Num(b.len as f64, b.len.to_string()),
            Err(e) => Actual::Missing(e),
        },
        Target::Sha256 => match body(body_word).map(|b| b.sha256.clone()) {
            Ok(Some(h)) => Actual::Text(h),
            Ok(None) => Actual::Missing("the hash was not computed".into()),
            Err(e) => Actual::Missing(e),
        },
        Target::Duration => {
            let ms = obs.duration.as_secs_f64() * 1000.0;
            Actual::Num(ms, format_ms(ms))
        }
        Target::ExitCode => match obs.exit_code {
            Some(c) => Actual::Num(c as f64, c.to_string()),
            None => Actual::Missing(
                obs.exit_note
                    .clone()
                    .unwrap_or_else(|| "no exit code".into()),
            ),
        },
        Target::Stderr => match obs.stderr.as_ref().map(|b| b.text("stderr")) {
            Some(Ok(t)) => Actual::Text(chomp(t)),
            Some(Err(e)) => Actual::Missing(e),
            None => Actual::Missing("there is no stderr".into()),
        },
        Target::Open => match obs.open {
            Some(b) => Actual::Bool(b),
            None => Actual::Missing("not tried".into()),
        },
        Target::PromSeries => {
            let n = obs.series.len();
            Actual::Num(n as f64, n.to_string())
        }
        // Evaluated series by series in `every_series`.
        Target::PromValue | Target::PromLabel(_) => Actual::Missing("no series".into()),
    }
}

/// A number as Prometheus results show it: up to 6 significant decimals.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A value or label condition on a Prometheus result holds when it holds for every point
/// of every series; an empty result or a NaN point is no data, never a pass.
fn every_series(target: &Target, rule: &Rule, obs: &Observation) -> (bool, String) {
    if obs.series.is_empty() {
        return (false, "no data: the query returned no series".into());
    }
    let mut bad = 0usize;
    let mut first_bad: Option<String> = None;
    let mut checked = 0usize;
    for s in &obs.series {
        let mut series_bad = None;
        match target {
            Target::PromLabel(l) => {
                let actual = match s.labels.get(l) {
                    Some(v) => Actual::Text(v.clone()),
                    None => Actual::Missing(format!("no label `{l}`")),
                };
                let (ok, shown) = apply(rule, &actual, false, false, &obs.mask);
                checked += 1;
                if !ok {
                    series_bad = Some(shown);
                }
            }
            _ => {
                for &(_, v) in &s.points {
                    checked += 1;
                    if v.is_nan() {
                        series_bad = Some("NaN (no data)".into());
                        break;
                    }
                    let (ok, shown) =
                        apply(rule, &Actual::Num(v, fmt_value(v)), true, false, &obs.mask);
                    if !ok {
                        series_bad = Some(shown);
                        break;
                    }
                }
            }
        }
        if let Some(shown) = series_bad {
            bad += 1;
            if first_bad.is_none() {
                first_bad = Some(format!("{shown} for {}", s.label_text()));
            }
        }
    }
    let n = obs.series.len();
    match first_bad {
        Some(f) => (
            false,
            format!(
                "{f} ({bad} of {n} series fail{})",
                if bad == 1 { "s" } else { "" }
            ),
        ),
        None => {
            let shown = match (target, obs.series.as_slice()) {
                (Target::PromValue, [one]) if one.points.len() == 1 => fmt_value(one.points[0].1),
                (Target::PromValue, _) => {
                    let max = obs
                        .series
                        .iter()
                        .flat_map(|s| s.points.iter().map(|p| p.1))
                        .fold(f64::NEG_INFINITY, f64::max);
                    format!(
                        "{checked} values in {n} series, the largest {}",
                        fmt_value(max)
                    )
                }
                _ => format!("{n} series"),
            };
            (true, shown)
        }
    }
}

/// A command's output without its last line break, as the shell's `$(...)` gives it.
fn chomp(mut t: String) -> String {
    if t.ends_with('\n') {
        t.pop();
        if t.ends_with('\r') {
            t.pop();
        }
    }
    t
}

fn format_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// At most one line of 200 characters: a value as reports show it, secrets masked first
/// (a secret cut in two by the shortening would escape the mask).
pub fn short(mask: &Scrubber, text: &str) -> String {
    const MAX: usize = 200;
    let one_line = mask.scrub(text).replace(['\n', '\r'], " ");
    let n = one_line.chars().count();
    if n > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}… ({} bytes)", text.len())
    } else {
        one_line
    }
}

/// Text in quotes with escapes, so a stray line break or space shows.
fn quoted(t: &str) -> String {
    serde_json::to_string(t).unwrap_or_else(|_| t.to_string())
}

fn node_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn show_nodes(mask: &Scrubber, nodes: &[&Value]) -> String {
    match nodes {
        [] => "nothing (the path selects no value)".into(),
        [one] => short(mask, &one.to_string()),
        many => short(
            mask,
            &Value::Array(many.iter().map(|v| (*v).clone()).collect()).to_string(),
        ),
    }
}

/// Whether a JSON value equals the expected text: strings by text, other values by their
/// JSON form (`true`, `10`, `{"a":1}` however it is spaced).
fn json_equals(v: &Value, expected: &str) -> bool {
    match v {
        Value::String(s) => s == expected,
        Value::Number(n) => {
            n.to_string() == expected.trim() || expected.trim().parse::<f64>().ok() == n.as_f64()
        }
        other => {
            serde_json::to_string(other).ok().as_deref() == Some(expected.trim())
                || serde_json::from_str::<Value>(expected).is_ok_and(|e| &e == other)
        }
    }
}

/// Applies a rule; returns whether it holds and the actual value as shown in reports.
fn apply(
    rule: &Rule,
    actual: &Actual<'_>,
    numeric: bool,
    sha: bool,
    mask: &Scrubber,
) -> (bool, String) {
    let shown = || match actual {
        Actual::Num(_, s) => s.clone(),
        Actual::Text(t) => quoted(&short(mask, t)),
        Actual::Nodes(n) => show_nodes(mask, n),
        Actual::Bool(b) => b.to_string(),
        Actual::Missing(why) => mask.scrub(why).replace(['\n', '\r'], " "),
    };
    let holds = match rule {
        Rule::Not(inner) => {
            let (p, s) = apply(inner, actual, numeric, sha, mask);
            return (!p, s);
        }
        Rule::Exists(want) => {
            let exists = match actual {
                Actual::Missing(_) => false,
                Actual::Nodes(n) => !n.is_empty(),
                _ => true,
            };
            let shown = match actual {
                Actual::Nodes(n) if n.is_empty() => "absent".into(),
                Actual::Missing(_) if matches!(actual, Actual::Missing(w) if w.starts_with("no `")) => {
                    "absent".into()
                }
                _ => shown(),
            };
            return (exists == *want, shown);
        }
        Rule::Count(inner) => {
            return match actual {
                Actual::Nodes(n) => {
                    let (p, _) = apply(
                        inner,
                        &Actual::Num(n.len() as f64, String::new()),
                        true,
                        false,
                        mask,
                    );
                    (p, format!("{} ({})", n.len(), show_nodes(mask, n)))
                }
                _ => (false, shown()),
            };
        }
        Rule::Length(inner) => {
            let len = match actual {
                Actual::Text(t) => Some(t.chars().count()),
                Actual::Nodes(n) if n.len() == 1 => match n[0] {
                    Value::String(s) => Some(s.chars().count()),
                    Value::Array(a) => Some(a.len()),
                    Value::Object(o) => Some(o.len()),
                    _ => None,
                },
                _ => None,
            };
            return match len {
                Some(l) => {
                    let (p, _) = apply(
                        inner,
                        &Actual::Num(l as f64, String::new()),
                        true,
                        false,
                        mask,
                    );
                    (p, format!("length {l}"))
                }
                None => (false, format!("{} has no length", shown())),
            };
        }
        _ if matches!(actual, Actual::Missing(_)) => false,
        Rule::Equals(e) => equals(actual, e, numeric, sha),
        Rule::OneOf(items) => items.iter().any(|e| equals(actual, e, numeric, sha)),
        Rule::StatusClass(c) => matches!(actual, Actual::Num(n, _) if (*n as u16) / 100 == *c),
        Rule::Contains(e) => match actual {
            Actual::Text(t) => t.contains(e.as_str()),
            Actual::Num(_, s) => s.contains(e.as_str()),
            Actual::Bool(b) => b.to_string().contains(e.as_str()),
            Actual::Nodes(n) => match n.as_slice() {
                [] => false,
                [Value::String(s)] => s.contains(e.as_str()),
                [Value::Array(items)] => items.iter().any(|i| json_equals(i, e)),
                [Value::Object(o)] => o.contains_key(e.as_str()),
                [other] => other.to_string().contains(e.as_str()),
                many => many.iter().any(|i| json_equals(i, e)),
            },
            Actual::Missing(_) => false,
        },
        Rule::Matches(r) => match actual {
            Actual::Text(t) => r.is_match(t),
            Actual::Num(_, s) => r.is_match(s),
            Actual::Bool(b) => r.is_match(&b.to_string()),
            Actual::Nodes(n) => n.len() == 1 && r.is_match(&node_text(n[0])),
            Actual::Missing(_) => false,
        },
        Rule::Compare(op, b) => {
            let a = match actual {
                Actual::Num(n, _) => Some(*n),
                Actual::Text(t) => t.trim().parse::<f64>().ok(),
                Actual::Nodes(n) if n.len() == 1 => match n[0] {
                    Value::Number(x) => x.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            match a {
                Some(a) => op.holds(a, *b),
                None => {
                    return (false, format!("{} is not a number", shown()));
                }
            }
        }
    };
    (holds, shown())
}

fn equals(actual: &Actual<'_>, expected: &str, numeric: bool, sha: bool) -> bool {
    match actual {
        Actual::Num(n, s) => {
            if numeric {
                let unit_value = expected.trim().parse::<f64>().ok().or_else(|| {
                    stagegate_plan::check::parse_size(expected)
                        .ok()
                        .map(|b| b as f64)
                });
                unit_value == Some(*n) || s == expected.trim()
            } else {
                s == expected.trim()
            }
        }
        Actual::Text(t) if sha => t.eq_ignore_ascii_case(expected.trim()),
        Actual::Text(t) => t == expected,
        Actual::Bool(b) => b.to_string() == expected.trim(),
        Actual::Nodes(n) => match n.as_slice() {
            [] => false,
            [one] => json_equals(one, expected),
            many => json_equals(
                &Value::Array(many.iter().map(|v| (*v).clone()).collect()),
                expected,
            ),
        },
        Actual::Missing(_) => false,
    }
}

/// Finds a log line matching the entry; without one, shows the closest JSON line.
fn find_entry(entry: &Entry, lines: &[String], mask: &Scrubber) -> (bool, String) {
    match entry {
        Entry::Matches(r) => match lines.iter().position(|l| r.is_match(l)) {
            Some(i) => (true, format!("line {}: {}", i + 1, short(mask, &lines[i]))),
            None => (false, format!("no match in {} lines", lines.len())),
        },
        Entry::Json(fields) => {
            let mut best: Option<(usize, usize, String)> = None;
            let mut json_lines = 0;
            for (i, line) in lines.iter().enumerate() {
                let Ok(doc) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                json_lines += 1;
                let mut ok = 0;
                let mut first_miss = None;
                for (path, rules) in fields {
                    let nodes = path.query(&doc).all();
                    let a = Actual::Nodes(nodes);
                    let mut all = true;
                    for r in rules {
                        let (p, shown) = apply(r, &a, false, false, mask);
                        if !p && first_miss.is_none() {
                            first_miss = Some(format!(
                                "{} is {shown}, expected {}",
                                path_name(path),
                                describe_rule(r)
                            ));
                        }
                        all &= p;
                    }
                    if all {
                        ok += 1;
                    }
                }
                if ok == fields.len() {
                    return (true, format!("line {}: {}", i + 1, short(mask, line)));
                }
                if best.as_ref().is_none_or(|(b, _, _)| ok > *b) {
                    best = Some((ok, i, first_miss.unwrap_or_default()));
                }
            }
            match best {
                Some((_, i, miss)) => (
                    false,
                    format!(
                        "no match in {} lines ({json_lines} JSON); the closest, line {}, has {miss}: {}",
                        lines.len(),
                        i + 1,
                        short(mask, &lines[i])
                    ),
                ),
                None => (false, format!("no JSON line among {} lines", lines.len())),
            }
        }
    }
}

fn path_name(p: &serde_json_path::JsonPath) -> String {
    let s = p.to_string();
    s.strip_prefix("$['")
        .and_then(|x| x.strip_suffix("']"))
        .map(str::to_string)
        .unwrap_or(s)
}

fn describe_rule(r: &Rule) -> String {
    match r {
        Rule::Equals(e) => format!("== {e}"),
        Rule::OneOf(items) => format!("one of {}", items.join(", ")),
        Rule::StatusClass(c) => format!("{c}xx"),
        Rule::Contains(e) => format!("contains {e:?}"),
        Rule::Matches(r) => format!("matches /{}/", r.as_str()),
        Rule::Exists(true) => "present".into(),
        Rule::Exists(false) => "absent".into(),
        Rule::Count(i) => format!("count {}", describe_rule(i)),
        Rule::Length(i) => format!("length {}", describe_rule(i)),
        Rule::Compare(op, n) => format!("{} {n}", op.symbol()),
        Rule::Not(i) => format!("not {}", describe_rule(i)),
    }
}

impl Take {
    pub fn render(c: &Capture, scope: &Scope) -> Result<Self, String> {
        let source = match &c.source {
            CaptureSource::Json(p) => Source::Json(compile_path(p, scope)?),
            CaptureSource::Header(h) => Source::Header(h.clone()),
            CaptureSource::Body => Source::Body,
            CaptureSource::Stderr => Source::Stderr,
            CaptureSource::Status => Source::Status,
            CaptureSource::BodySha256 => Source::BodySha256,
            CaptureSource::SentSha256 => Source::SentSha256,
        };
        let regex = match &c.regex {
            Some(r) => Some(match &r.compiled {
                Some(x) => x.clone(),
                None => compile_regex(&render(scope, &r.text.value)?)?,
            }),
            None => None,
        };
        let mut from = c.source.describe();
        if let Some(r) = &c.regex {
            from.push_str(&format!(" by /{}/", r.raw));
        }
        Ok(Self {
            name: c.name.clone(),
            from,
            source,
            regex,
            secret: c.secret,
        })
    }

    /// Whether it reads the body (or its hash).
    pub fn reads_body(&self) -> bool {
        matches!(
            self.source,
            Source::Json(_) | Source::Body | Source::BodySha256
        )
    }

    pub fn reads_sha256(&self) -> bool {
        matches!(self.source, Source::BodySha256)
    }

    pub fn reads_headers(&self) -> bool {
        matches!(self.source, Source::Header(_))
    }

    /// The captured value, or why there is none.
    pub fn take(&self, obs: &Observation, body_word: &str) -> Result<String, String> {
        let body = || {
            obs.body
                .as_ref()
                .ok_or_else(|| format!("there is no {body_word}"))
        };
        let raw = match &self.source {
            Source::Json(p) => {
                let doc = body()?.json(body_word)?;
                match p.query(doc).all().first() {
                    Some(v) => node_text(v),
                    None => {
                        return Err(format!(
                            "`{}` selects nothing in the {body_word}: {}",
                            p,
                            body()?.preview()
                        ));
                    }
                }
            }
            Source::Header(h) => obs
                .header(h)
                .map(str::to_string)
                .ok_or_else(|| format!("the answer has no `{h}` header"))?,
            Source::Body if body_word == "stdout" => chomp(body()?.text(body_word)?),
            Source::Body => body()?.text(body_word)?,
            Source::Stderr => obs
                .stderr
                .as_ref()
                .ok_or("there is no stderr")?
                .text("stderr")
                .map(chomp)?,
            Source::Status => obs
                .status
                .map(|s| s.to_string())
                .ok_or("there is no status")?,
            Source::BodySha256 => body()?.sha256.clone().ok_or("the hash was not computed")?,
            Source::SentSha256 => obs
                .sent_sha256
                .clone()
                .ok_or("the request sent no file or generated bytes to hash")?,
        };
        match &self.regex {
            None => Ok(raw),
            Some(r) => match r.captures(&raw) {
                Some(c) => Ok(c
                    .get(1)
                    .or_else(|| c.get(0))
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default()),
                None => Err(format!(
                    "/{}/ does not match {}",
                    r.as_str(),
                    short(&obs.mask, &raw)
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs_json(body: &str) -> Observation {
        Observation {
            series: Vec::new(),
            status: Some(200),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(Body::from_bytes(body.as_bytes().to_vec(), true)),
            ..Default::default()
        }
    }

    fn value(target: Target, rule: Rule) -> Expectation {
        Expectation::Value {
            name: "x".into(),
            expected: "y".into(),
            numeric: matches!(target, Target::Status | Target::BodyLen | Target::Duration),
            sha: matches!(target, Target::Sha256),
            target,
            rule,
        }
    }

    fn path(p: &str) -> Target {
        Target::Json(serde_json_path::JsonPath::parse(p).unwrap())
    }

    #[test]
    fn json_rules() {
        let o = obs_json(r#"{"version":"1.3.0","n":3,"ok":true,"files":[{"id":"a"},{"id":"b"}]}"#);
        let check = |t: Target, r: Rule| value(t, r).evaluate(&o, "body");
        assert!(check(path("$.version"), Rule::Equals("1.3.0".into())).passed);
        let wrong = check(path("$.version"), Rule::Equals("1.4.0".into()));
        assert!(!wrong.passed);
        assert_eq!(wrong.actual, "\"1.3.0\"");
        assert!(check(path("$.ok"), Rule::Equals("true".into())).passed);
        assert!(check(path("$.n"), Rule::Compare(CmpOp::Ge, 3.0)).passed);
        assert!(check(path("$.files[*].id"), Rule::Contains("b".into())).passed);
        assert!(
            check(
                path("$.files[*]"),
                Rule::Count(Box::new(Rule::Equals("2".into())))
            )
            .passed
        );
        assert!(
            check(
                path("$.files"),
                Rule::Length(Box::new(Rule::Compare(CmpOp::Eq, 2.0)))
            )
            .passed
        );
        assert!(check(path("$.missing"), Rule::Exists(false)).passed);
        assert!(
            check(
                path("$.version"),
                Rule::Not(Box::new(Rule::Matches(regex::Regex::new("^2").unwrap())))
            )
            .passed
        );
        let missing = check(path("$.nope"), Rule::Equals("x".into()));
        assert!(!missing.passed);
        assert!(
            missing.actual.contains("selects no value"),
            "{}",
            missing.actual
        );
    }

    #[test]
    fn status_headers_and_body() {
        let o = obs_json(r#"{"a":1}"#);
        let check = |t: Target, r: Rule| value(t, r).evaluate(&o, "body");
        assert!(check(Target::Status, Rule::StatusClass(2)).passed);
        assert!(
            check(
                Target::Status,
                Rule::OneOf(vec!["201".into(), "200".into()])
            )
            .passed
        );
        assert!(!check(Target::Status, Rule::Equals("404".into())).passed);
        assert!(
            check(
                Target::Header("content-type".into()),
                Rule::Contains("json".into())
            )
            .passed
        );
        let h = check(Target::Header("etag".into()), Rule::Exists(true));
        assert!(!h.passed);
        assert_eq!(h.actual, "absent");
        assert!(check(Target::BodyLen, Rule::Equals("7".into())).passed);
        assert!(
            check(
                Target::Body,
                Rule::Matches(regex::Regex::new(r#""a":\d"#).unwrap())
            )
            .passed
        );
        let sha = "015ABD7F5CC57A2DD94B7590F04AD8084273905EE33EC5CEBEAE62276A97F862";
        assert!(
            check(Target::Sha256, Rule::Equals(sha.into())).passed,
            "sha256 compares without case"
        );
    }

    #[test]
    fn a_body_that_is_not_json_fails_json_assertions_and_says_why() {
        let mut o = obs_json("<html>502 Bad Gateway</html>");
        o.status = Some(502);
        let r = value(path("$.version"), Rule::Equals("1".into())).evaluate(&o, "body");
        assert!(!r.passed);
        assert!(
            r.actual.contains("not JSON") && r.actual.contains("<html>502"),
            "{}",
            r.actual
        );
    }

    #[test]
    fn log_entries_report_the_closest_line() {
        let lines: Vec<String> = [
            "plain text",
            r#"{"event":"blob_download","actor":"admin","status":"failure","bytes":10}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let entry = Entry::Json(vec![
            (
                serde_json_path::JsonPath::parse("$['actor']").unwrap(),
                vec![Rule::Equals("admin".into())],
            ),
            (
                serde_json_path::JsonPath::parse("$['status']").unwrap(),
                vec![Rule::Equals("success".into())],
            ),
        ]);
        let (ok, why) = find_entry(&entry, &lines, &Scrubber::default());
        assert!(!ok);
        assert!(
            why.contains("line 2, has status is \"failure\", expected == success"),
            "{why}"
        );
    }
}
