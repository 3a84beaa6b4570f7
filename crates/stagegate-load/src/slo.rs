//! Service-level thresholds, read from text and judged against a [`LoadReport`].
//!
//! ```text
//! p95 < 500ms            p99 < 1s               max <= 2s
//! error_rate < 1%        checks >= 99.9%        rps >= 100
//! status_5xx == 0        isolation_violations == 0
//! p95[login] < 300ms                         (one request of the scenario)
//! p95 <= +10% vs last_pass                   (against the last passing run)
//! error_rate > 5% over 10s                   (an abort rule: stop when true)
//! ```
//!
//! Every threshold is reported with its value, its limit and a verdict.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::{LoadReport, Summary, fmt_ms};

/// A threshold or abort rule that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read `{text}`: {reason}")]
pub struct SloError {
    pub text: String,
    pub reason: String,
}

/// What a metric measures, which decides how its limit is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Milliseconds; limits written as `500ms`, `1s`, `250us`.
    Ms,
    /// A fraction; limits written as `1%` or `0.01`.
    Ratio,
    /// Requests per second; limits written as `100` or `100/s`.
    Rps,
    /// A count; limits written as whole numbers.
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A latency quantile: 0.5 for p50, 0.999 for p99.9, 1.0 for max.
    Latency(f64),
    MinLatency,
    MeanLatency,
    ErrorRate,
    Checks,
    Rps,
    Requests,
    Errors,
    /// Answers with this status.
    Status(u16),
    /// Answers with a status from `hundreds*100` to `hundreds*100 + 99`.
    StatusClass(u16),
    IsolationViolations,
    ConnectErrors,
    Timeouts,
    TransportErrors,
    AssertionErrors,
}

const METRIC_NAMES: &[&str] = &[
    "p50",
    "p90",
    "p95",
    "p99",
    "p99.9",
    "max",
    "min",
    "mean",
    "error_rate",
    "checks",
    "rps",
    "requests",
    "errors",
    "status_5xx",
    "status_4xx",
    "status_NNN (e.g. status_429)",
    "isolation_violations",
    "connect_errors",
    "timeouts",
    "transport_errors",
    "assertion_errors",
];

impl Metric {
    fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "p50" | "median" => Metric::Latency(0.5),
            "p90" => Metric::Latency(0.9),
            "p95" => Metric::Latency(0.95),
            "p99" => Metric::Latency(0.99),
            "p99.9" | "p999" => Metric::Latency(0.999),
            "max" => Metric::Latency(1.0),
            "min" => Metric::MinLatency,
            "mean" | "avg" => Metric::MeanLatency,
            "error_rate" => Metric::ErrorRate,
            "checks" => Metric::Checks,
            "rps" => Metric::Rps,
            "requests" => Metric::Requests,
            "errors" => Metric::Errors,
            "isolation_violations" => Metric::IsolationViolations,
            "connect_errors" => Metric::ConnectErrors,
            "timeouts" => Metric::Timeouts,
            "transport_errors" => Metric::TransportErrors,
            "assertion_errors" => Metric::AssertionErrors,
            other => {
                let code = other.strip_prefix("status_")?;
                if let Some(h) = code.strip_suffix("xx") {
                    let h: u16 = h.parse().ok()?;
                    if !(1..=5).contains(&h) {
                        return None;
                    }
                    Metric::StatusClass(h)
                } else {
                    let c: u16 = code.parse().ok()?;
                    if !(100..=999).contains(&c) {
                        return None;
                    }
                    Metric::Status(c)
                }
            }
        })
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::Latency(_) | Metric::MinLatency | Metric::MeanLatency => Unit::Ms,
            Metric::ErrorRate | Metric::Checks => Unit::Ratio,
            Metric::Rps => Unit::Rps,
            _ => Unit::Count,
        }
    }

    /// The metric's value in a summary; `None` when there is nothing to measure it on.
    pub fn value(self, s: &Summary) -> Option<f64> {
        let answered = s.requests > 0 && s.latency.max_ms > 0.0;
        Some(match self {
            Metric::Latency(q) => {
                if !answered {
                    return None;
                }
                s.latency.at(q)?
            }
            Metric::MinLatency if answered => s.latency.min_ms,
            Metric::MeanLatency if answered => s.latency.mean_ms,
            Metric::MinLatency | Metric::MeanLatency => return None,
            Metric::ErrorRate => {
                if s.requests == 0 {
                    return None;
                }
                s.error_rate
            }
            Metric::Checks => {
                if s.checks_passed + s.checks_failed == 0 {
                    return None;
                }
                s.checks_rate
            }
            Metric::Rps => s.rps,
            Metric::Requests => s.requests as f64,
            Metric::Errors => s.failed as f64,
            Metric::Status(c) => s.status.get(&c).copied().unwrap_or(0) as f64,
            Metric::StatusClass(h) => s.status_range(h * 100, h * 100 + 99) as f64,
            Metric::IsolationViolations => s.isolation_violations as f64,
            Metric::ConnectErrors => s.errors.connect as f64,
            Metric::Timeouts => s.errors.timeout as f64,
            Metric::TransportErrors => s.errors.transport as f64,
            Metric::AssertionErrors => s.errors.assertion as f64,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    pub fn holds(self, value: f64, limit: f64) -> bool {
        // Counts and rounded figures compare equal within a hair of floating-point noise.
        let eq = (value - limit).abs() <= 1e-9 * limit.abs().max(1.0);
        match self {
            Op::Lt => value < limit && !eq,
            Op::Le => value < limit || eq,
            Op::Gt => value > limit && !eq,
            Op::Ge => value > limit || eq,
            Op::Eq => eq,
            Op::Ne => !eq,
        }
    }
}

/// The limit a value is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// In the metric's unit (ms, a fraction, requests per second, a count).
    Absolute(f64),
    /// The same metric of the last passing run, changed by this many percent.
    VsLastPass(f64),
}

/// One threshold: `p95 < 500ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub text: String,
    pub metric: Metric,
    /// A request of the scenario, for `p95[login] < 300ms`.
    pub request: Option<String>,
    pub op: Op,
    pub limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Nothing to measure (no request answered, no check ran): counts as a failure.
    NoData,
    /// A `vs last_pass` threshold with no passing run to compare with: does not fail.
    NoBaseline,
}

/// How a threshold fared: its value, its limit and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub text: String,
    pub unit: Unit,
    pub value: Option<f64>,
    pub limit: Option<f64>,
    pub verdict: Verdict,
    /// One sentence: what was found.
    pub message: String,
}

impl ThresholdResult {
    pub fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Pass | Verdict::NoBaseline)
    }

    /// The verdict as one character: `✓` passed, `✗` failed or had no data, `-` not judged
    /// (no passing run to compare with).
    pub fn mark(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass => "✓",
            Verdict::Fail | Verdict::NoData => "✗",
            Verdict::NoBaseline => "-",
        }
    }

    /// `✓ p95 < 500ms: 12.30 ms (limit 500.0 ms)`.
    pub fn line(&self) -> String {
        format!("{} {}: {}", self.mark(), self.text, self.message)
    }
}

/// Formats a value in a unit: `12.30 ms`, `0.50%`, `812.4/s`, `3`.
pub fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ms => fmt_ms(v),
        Unit::Ratio => format!("{:.2}%", v * 100.0),
        Unit::Rps => format!("{v:.1}/s"),
        Unit::Count => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        }
    }
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Self, SloError> {
        let err = |reason: String| SloError {
            text: text.to_string(),
            reason,
        };
        let t = text.trim();
        let (lhs, op, rhs) = split_op(t).ok_or_else(|| {
            err("write it as `METRIC OP LIMIT`, for example `p95 < 500ms` or `error_rate < 1%` (operators: < <= > >= == !=)".into())
        })?;
        let (name, request) = match lhs.split_once('[') {
            Some((m, rest)) => {
                let req = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err(format!("`{lhs}` opens `[` without closing it")))?;
                if req.trim().is_empty() {
                    return Err(err("the request name in `[...]` is empty".into()));
                }
                (m.trim(), Some(req.trim().to_string()))
            }
            None => (lhs, None),
        };
        let metric = Metric::parse(name).ok_or_else(|| {
            err(format!(
                "unknown metric `{name}`{}; known metrics: {}",
                suggest(name),
                METRIC_NAMES.join(", ")
            ))
        })?;
        let (value_text, vs) = match rhs.split_once(" vs ") {
            Some((v, base)) => (v.trim(), Some(base.trim())),
            None => (rhs, None),
        };
        let limit = match vs {
            Some("last_pass") => {
                let pct = value_text
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .filter(|p| p.is_finite() && (value_text.starts_with('+') || value_text.starts_with('-') || *p == 0.0))
                    .ok_or_else(|| {
                        err(format!(
                            "`{value_text}` is not a change: compare with the last passing run as `+10%` or `-5%`"
                        ))
                    })?;
                Limit::VsLastPass(pct)
            }
            Some(other) => {
                return Err(err(format!(
                    "`vs {other}` is not a baseline: the one baseline is `vs last_pass`"
                )));
            }
            None => {
                if value_text.starts_with('+') {
                    return Err(err(format!(
                        "`{value_text}` is a change: add `vs last_pass` to compare with the last passing run"
                    )));
                }
                Limit::Absolute(parse_limit(metric.unit(), value_text).map_err(err)?)
            }
        };
        Ok(Threshold {
            text: t.to_string(),
            metric,
            request,
            op,
            limit,
        })
    }

    /// Judges the threshold against a report, with the last passing run when there is one.
    pub fn evaluate(&self, report: &LoadReport, last_pass: Option<&LoadReport>) -> ThresholdResult {
        let unit = self.metric.unit();
        let result =
            |value: Option<f64>, limit: Option<f64>, verdict, message: String| ThresholdResult {
                text: self.text.clone(),
                unit,
                value,
                limit,
                verdict,
                message,
            };
        let Some(summary) = report.summary_for(self.request.as_deref()) else {
            let names: Vec<&str> = report.requests.iter().map(|r| r.name.as_str()).collect();
            return result(
                None,
                None,
                Verdict::NoData,
                format!(
                    "the scenario has no request named `{}` (it has: {})",
                    self.request.as_deref().unwrap_or_default(),
                    if names.is_empty() {
                        "one unnamed request".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        };
        let value = self.metric.value(summary);
        let limit = match self.limit {
            Limit::Absolute(l) => l,
            Limit::VsLastPass(pct) => {
                let base = last_pass
                    .and_then(|r| r.summary_for(self.request.as_deref()))
                    .and_then(|s| self.metric.value(s));
                match base {
                    Some(b) => b * (1.0 + pct / 100.0),
                    None => {
                        return result(
                            value,
                            None,
                            Verdict::NoBaseline,
                            format!(
                                "{} now; no passing run to compare with, so not judged",
                                value
                                    .map(|v| fmt_value(unit, v))
                                    .unwrap_or("no data".into())
                            ),
                        );
                    }
                }
            }
        };
        let Some(v) = value else {
            let why = match self.metric {
                Metric::Checks => "no check ran",
                _ => "no request was answered",
            };
            return result(
                None,
                Some(limit),
                Verdict::NoData,
                format!("no data: {why} (limit {})", fmt_value(unit, limit)),
            );
        };
        let ok = self.op.holds(v, limit);
        let base_note = match self.limit {
            Limit::VsLastPass(pct) => format!(", last passing run {pct:+}%"),
            Limit::Absolute(_) => String::new(),
        };
        result(
            Some(v),
            Some(limit),
            if ok { Verdict::Pass } else { Verdict::Fail },
            format!(
                "{} (limit {} {}{base_note})",
                fmt_value(unit, v),
                self.op.as_str(),
                fmt_value(unit, limit)
            ),
        )
    }
}

/// A rule that stops a run early: `error_rate > 5% over 10s` stops it when, over the last
/// 10 seconds, more than 5% of requests failed. Without `over`, the rule looks at the whole
/// run so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbortRule {
    pub text: String,
    pub condition: Threshold,
    pub window: Option<Duration>,
}

impl AbortRule {
    pub fn parse(text: &str) -> Result<Self, SloError> {
        let t = text.trim();
        let (cond, window) = match t.rsplit_once(" over ") {
            Some((c, w)) => {
                let d = parse_duration(w.trim()).map_err(|reason| SloError {
                    text: t.to_string(),
                    reason: format!("the window {reason}"),
                })?;
                if d.is_zero() {
                    return Err(SloError {
                        text: t.to_string(),
                        reason: "the window must be longer than zero".into(),
                    });
                }
                (c, Some(d))
            }
            None => (t, None),
        };
        let condition = Threshold::parse(cond).map_err(|e| SloError {
            text: t.to_string(),
            reason: e.reason,
        })?;
        if matches!(condition.limit, Limit::VsLastPass(_)) {
            return Err(SloError {
                text: t.to_string(),
                reason: "an abort rule compares with a fixed limit, not `vs last_pass`".into(),
            });
        }
        if condition.request.is_some() {
            return Err(SloError {
                text: t.to_string(),
                reason: "an abort rule looks at all requests: remove `[...]`".into(),
            });
        }
        Ok(AbortRule {
            text: t.to_string(),
            condition,
            window,
        })
    }

    /// `Some(what was found)` when the rule's condition holds for this summary.
    pub fn tripped(&self, s: &Summary) -> Option<String> {
        let v = self.condition.metric.value(s)?;
        let Limit::Absolute(limit) = self.condition.limit else {
            return None;
        };
        let unit = self.condition.metric.unit();
        self.condition.op.holds(v, limit).then(|| {
            format!(
                "`{}`: {} {} {}{}",
                self.text,
                fmt_value(unit, v),
                self.condition.op.as_str(),
                fmt_value(unit, limit),
                self.window
                    .map(|w| format!(" over the last {}", fmt_duration(w)))
                    .unwrap_or_default()
            )
        })
    }
}

/// Writes a duration as whole seconds (`10s`) when it is one, else in milliseconds
/// (`1500ms`, `200ms`).
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 && s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Splits at the first comparison operator.
fn split_op(t: &str) -> Option<(&str, Op, &str)> {
    let i = t.find(['<', '>', '=', '!'])?;
    let rest = &t[i..];
    let (op, len) = if rest.starts_with("<=") {
        (Op::Le, 2)
    } else if rest.starts_with(">=") {
        (Op::Ge, 2)
    } else if rest.starts_with("==") {
        (Op::Eq, 2)
    } else if rest.starts_with("!=") {
        (Op::Ne, 2)
    } else if rest.starts_with('<') {
        (Op::Lt, 1)
    } else if rest.starts_with('>') {
        (Op::Gt, 1)
    } else {
        return None;
    };
    let lhs = t[..i].trim();
    let rhs = t[i + len..].trim();
    if lhs.is_empty() || rhs.is_empty() {
        return None;
    }
    Some((lhs, op, rhs))
}

/// ` (did you mean `p95`?)` for a metric name at most two edits from a known one.
fn suggest(name: &str) -> String {
    METRIC_NAMES
        .iter()
        .map(|m| (strsim::levenshtein(name, m), *m))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, m)| format!(" (did you mean `{m}`?)"))
        .unwrap_or_default()
}

/// Reads a duration: a number and a unit (`500ms`, `1.5s`, `250us`, `2m`), several added
/// up (`1h30m`, `1m 30s`), or a bare number of seconds (`30`). Units: `us` (or `µs`), `ms`,
/// `s` (or `sec`), `m` (or `min`), `h` and `d`. The one duration parser of stagegate: plans
/// read theirs with it too.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HOW: &str = "write 500ms, 30s, 1h30m or 2d";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("the duration is empty: {HOW}"));
    }
    let too_long = || format!("`{t}` is too long a duration");
    if let Ok(secs) = t.parse::<f64>()
        && secs >= 0.0
        && secs.is_finite()
    {
        return Duration::try_from_secs_f64(secs).map_err(|_| too_long());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{t}` is not a duration: {HOW}"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let secs = match unit {
            "" => return Err(format!("`{t}` has a number without a unit: {HOW}")),
            "us" | "\u{b5}s" | "\u{3bc}s" => value / 1e6,
            "ms" => value / 1e3,
            "s" | "sec" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "`{t}` has an unknown unit `{other}`: use us, ms, s, m, h or d"
                ));
            }
        };
        let d = Duration::try_from_secs_f64(secs).map_err(|_| too_long())?;
        total = total.checked_add(d).ok_or_else(too_long)?;
    }
    Ok(total)
}

fn parse_limit(unit: Unit, t: &str) -> Result<f64, String> {
    match unit {
        // A bare number could be seconds or milliseconds: a latency limit says which.
        Unit::Ms if t.chars().all(|c| c.is_ascii_digit() || c == '.') => Err(format!(
            "`{t}` needs a unit: write 500ms, 2s or 250us (this metric is a latency)"
        )),
        Unit::Ms => parse_duration(t)
            .map(|d| d.as_secs_f64() * 1000.0)
            .map_err(|e| format!("{e} (this metric is a latency)")),
        Unit::Ratio => {
            let (num, scale) = match t.strip_suffix('%') {
                Some(n) => (n.trim(), 100.0),
                None => (t, 1.0),
            };
            let v: f64 = num
                .parse()
                .map_err(|_| format!("`{t}` is not a rate: write it as a percentage such as 1%"))?;
            let v = v / scale;
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{t}` is not between 0% and 100%"));
            }
            Ok(v)
        }
        Unit::Rps => crate::profile::parse_rate(t),
        Unit::Count => {
            let v: f64 = t
                .parse()
                .map_err(|_| format!("`{t}` is not a number: this metric is a count"))?;
            if v < 0.0 || !v.is_finite() {
                return Err(format!("`{t}` must be zero or more"));
            }
            Ok(v)
        }
    }
}

/// Judges every threshold: the results go in `report.thresholds`.
pub fn evaluate_all(
    report: &mut LoadReport,
    thresholds: &[Threshold],
    last_pass: Option<&LoadReport>,
) {
    report.thresholds = thresholds
        .iter()
        .map(|t| t.evaluate(report, last_pass))
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_thresholds_of_the_seeds() {
        let t = Threshold::parse("p95 < 2s").unwrap();
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::Latency(0.95), Op::Lt, Limit::Absolute(2000.0))
        );
        assert_eq!(
            Threshold::parse("error_rate < 1%").unwrap().limit,
            Limit::Absolute(0.01)
        );
        let Limit::Absolute(l) = Threshold::parse("checks >= 99.9%").unwrap().limit else {
            panic!("absolute")
        };
        assert!((l - 0.999).abs() < 1e-12, "{l}");
        assert_eq!(
            Threshold::parse("rps >= 100/s").unwrap().limit,
            Limit::Absolute(100.0)
        );
        assert_eq!(
            Threshold::parse("status_5xx == 0").unwrap().metric,
            Metric::StatusClass(5)
        );
        assert_eq!(
            Threshold::parse("p99.9<=250us").unwrap().limit,
            Limit::Absolute(0.25)
        );
        let t = Threshold::parse("p95[login] < 300ms").unwrap();
        assert_eq!(t.request.as_deref(), Some("login"));
        let t = Threshold::parse("p95 <= +10% vs last_pass").unwrap();
        assert_eq!(t.limit, Limit::VsLastPass(10.0));
    }

    #[test]
    fn bad_syntax_names_the_text_and_says_what_to_write() {
        let e = Threshold::parse("p96 < 1s").unwrap_err().to_string();
        assert!(e.contains("cannot read `p96 < 1s`"), "{e}");
        assert!(e.contains("unknown metric `p96`"), "{e}");
        assert!(
            e.contains("did you mean `p95`?") || e.contains("did you mean `p90`?"),
            "{e}"
        );
        let e = Threshold::parse("p95 < 500").unwrap_err().to_string();
        assert!(e.contains("needs a unit"), "{e}");
        let e = Threshold::parse("p95 fast").unwrap_err().to_string();
        assert!(e.contains("METRIC OP LIMIT"), "{e}");
        let e = Threshold::parse("error_rate < lots")
            .unwrap_err()
            .to_string();
        assert!(e.contains("percentage"), "{e}");
        let e = Threshold::parse("p95 <= +10%").unwrap_err().to_string();
        assert!(e.contains("add `vs last_pass`"), "{e}");
        let e = Threshold::parse("p95 <= +10% vs yesterday")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`vs yesterday` is not a baseline"), "{e}");
        let e = AbortRule::parse("error_rate > 5% over soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read `error_rate > 5% over soon`"), "{e}");
    }

    fn report(p95: f64, requests: u64, failed: u64) -> LoadReport {
        let mut r = LoadReport::default();
        r.summary.requests = requests;
        r.summary.failed = failed;
        r.summary.error_rate = failed as f64 / requests.max(1) as f64;
        r.summary.latency.p95_ms = p95;
        r.summary.latency.max_ms = p95 * 2.0;
        r.summary.rps = 120.0;
        r.summary.status.insert(200, requests - failed);
        r.summary.status.insert(503, failed);
        r
    }

    #[test]
    fn evaluates_with_value_limit_and_verdict() {
        let r = report(420.0, 1000, 20);
        let res = Threshold::parse("p95 < 500ms").unwrap().evaluate(&r, None);
        assert_eq!(res.verdict, Verdict::Pass);
        assert_eq!((res.value, res.limit), (Some(420.0), Some(500.0)));
        assert!(
            res.line().contains("420.0 ms (limit < 500.0 ms)"),
            "{}",
            res.line()
        );
        let res = Threshold::parse("error_rate < 1%")
            .unwrap()
            .evaluate(&r, None);
        assert_eq!(res.verdict, Verdict::Fail);
        assert!(res.message.contains("2.00%"), "{}", res.message);
        let res = Threshold::parse("status_5xx == 0")
            .unwrap()
            .evaluate(&r, None);
        assert_eq!((res.verdict, res.value), (Verdict::Fail, Some(20.0)));
        let res = Threshold::parse("rps >= 100").unwrap().evaluate(&r, None);
        assert_eq!(res.verdict, Verdict::Pass);
        let res = Threshold::parse("checks >= 99%")
            .unwrap()
            .evaluate(&r, None);
        assert_eq!(res.verdict, Verdict::NoData);
        let res = Threshold::parse("p95[login] < 1s")
            .unwrap()
            .evaluate(&r, None);
        assert_eq!(res.verdict, Verdict::NoData);
        assert!(
            res.message.contains("no request named `login`"),
            "{}",
            res.message
        );
    }

    #[test]
    fn marks_show_the_verdict() {
        let r = report(420.0, 1000, 20);
        let judge = |t: &str| Threshold::parse(t).unwrap().evaluate(&r, None);
        let pass = judge("p95 < 500ms");
        assert_eq!((pass.mark(), pass.passed()), ("✓", true));
        assert!(
            pass.line().starts_with("✓ p95 < 500ms: "),
            "{}",
            pass.line()
        );
        let fail = judge("error_rate < 1%");
        assert_eq!((fail.mark(), fail.passed()), ("✗", false));
        let no_data = judge("checks >= 99%");
        assert_eq!((no_data.mark(), no_data.passed()), ("✗", false));
        let not_judged = judge("p95 <= +10% vs last_pass");
        assert_eq!((not_judged.mark(), not_judged.passed()), ("-", true));
        assert!(
            not_judged
                .line()
                .starts_with("- p95 <= +10% vs last_pass: ")
        );
    }

    #[test]
    fn compares_with_the_last_passing_run() {
        let t = Threshold::parse("p95 <= +10% vs last_pass").unwrap();
        let now = report(105.0, 100, 0);
        assert_eq!(t.evaluate(&now, None).verdict, Verdict::NoBaseline);
        assert!(t.evaluate(&now, None).passed());
        let last = report(100.0, 100, 0);
        let res = t.evaluate(&now, Some(&last));
        assert_eq!(res.verdict, Verdict::Pass);
        assert!((res.limit.unwrap() - 110.0).abs() < 1e-9);
        let slower = report(120.0, 100, 0);
        assert_eq!(t.evaluate(&slower, Some(&last)).verdict, Verdict::Fail);
    }

    #[test]
    fn durations_are_read_with_units_compounds_or_as_seconds() {
        let ok = |t: &str| parse_duration(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250\u{b5}s"), Duration::from_micros(250));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("2sec"), Duration::from_secs(2));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("2min"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("2d"), Duration::from_secs(2 * 86400));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok(" 500 ms "), Duration::from_millis(500));
        assert_eq!(ok("2"), Duration::from_secs(2));
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("0s"), Duration::ZERO);
        let err = |t: &str| parse_duration(t).unwrap_err();
        assert!(err("").contains("empty"), "{}", err(""));
        assert!(err("soon").contains("`soon` is not a duration"));
        assert!(err("s").contains("is not a duration"));
        assert!(err("-5s").contains("is not a duration"));
        assert!(
            err("1h30").contains("a number without a unit"),
            "{}",
            err("1h30")
        );
        assert!(err("5x").contains("unknown unit `x`"), "{}", err("5x"));
        assert!(err("10 parsecs").contains("unknown unit `parsecs`"));
        assert!(err("1.2.3s").contains("is not a duration"));
        assert!(err("99999999999999999999d").contains("too long"));
        let a = AbortRule::parse("error_rate > 5% over 1m30s").unwrap();
        assert_eq!(a.window, Some(Duration::from_secs(90)));
    }

    #[test]
    fn durations_are_written_in_seconds_or_milliseconds() {
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn abort_rules_trip_on_their_condition() {
        let a = AbortRule::parse("error_rate > 5% over 10s").unwrap();
        assert_eq!(a.window, Some(Duration::from_secs(10)));
        assert!(a.tripped(&report(1.0, 100, 2).summary).is_none());
        let why = a.tripped(&report(1.0, 100, 10).summary).unwrap();
        assert!(why.contains("10.00% > 5.00% over the last 10s"), "{why}");
        assert!(AbortRule::parse("p95 > 2s").unwrap().window.is_none());
    }
}
