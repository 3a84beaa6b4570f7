//! The result of a load test: summaries (serializable, so a past run can be compared with),
//! the generator's own health and verdict, thresholds, and a text rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::slo::ThresholdResult;
use crate::stats::{ErrorClass, IsolationExample, Stats};

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub stdev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |q: f64| ms(h.value_at_quantile(q));
        Self {
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            stdev_ms: h.stdev() / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(h.max()),
        }
    }

    /// The latency at a quantile (0.95 for p95) among the recorded ones.
    pub fn at(&self, quantile: f64) -> Option<f64> {
        let table = [
            (0.5, self.p50_ms),
            (0.9, self.p90_ms),
            (0.95, self.p95_ms),
            (0.99, self.p99_ms),
            (0.999, self.p999_ms),
            (1.0, self.max_ms),
        ];
        table
            .iter()
            .find(|(q, _)| (q - quantile).abs() < 1e-9)
            .map(|(_, v)| *v)
    }
}

/// Requests by error class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub transport: u64,
    #[serde(rename = "5xx")]
    pub status_5xx: u64,
    pub assertion: u64,
}

/// The figures of a set of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    /// Requests without an error.
    pub ok: u64,
    pub failed: u64,
    /// `failed / requests`, from 0 to 1.
    pub error_rate: f64,
    /// Requests per second over the measured phase.
    pub rps: f64,
    pub latency: LatencySummary,
    /// Answers by status code.
    #[serde(deserialize_with = "status_keys")]
    pub status: BTreeMap<u16, u64>,
    pub errors: ErrorCounts,
    /// The first message seen per error class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_examples: BTreeMap<String, String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// Passed checks / checks, from 0 to 1 (1 when nothing was checked).
    pub checks_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_example: Option<String>,
    pub isolation_violations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_example: Option<IsolationExample>,
}

impl Summary {
    pub fn from_stats(s: &Stats, seconds: f64) -> Self {
        let status = s
            .status
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(code, c)| (code as u16, *c))
            .collect();
        let checks = s.checks_passed + s.checks_failed;
        let error_examples = ErrorClass::ALL
            .iter()
            .filter_map(|c| {
                s.error_example(*c)
                    .map(|m| (c.as_str().to_string(), m.to_string()))
            })
            .collect();
        Self {
            requests: s.requests,
            ok: s.requests - s.failed,
            failed: s.failed,
            error_rate: s.error_rate().unwrap_or(0.0),
            rps: if seconds > 0.0 {
                s.requests as f64 / seconds
            } else {
                0.0
            },
            latency: LatencySummary::from_histogram(&s.latency),
            status,
            errors: ErrorCounts {
                connect: s.error_count(ErrorClass::Connect),
                timeout: s.error_count(ErrorClass::Timeout),
                transport: s.error_count(ErrorClass::Transport),
                status_5xx: s.error_count(ErrorClass::Status5xx),
                assertion: s.error_count(ErrorClass::Assertion),
            },
            error_examples,
            bytes_received: s.bytes_received,
            bytes_sent: s.bytes_sent,
            checks_passed: s.checks_passed,
            checks_failed: s.checks_failed,
            checks_rate: if checks == 0 {
                1.0
            } else {
                s.checks_passed as f64 / checks as f64
            },
            check_example: s.check_example.clone(),
            isolation_violations: s.isolation_violations,
            isolation_example: s.isolation_example.clone(),
        }
    }

    pub fn status_range(&self, lo: u16, hi: u16) -> u64 {
        self.status.range(lo..=hi).map(|(_, c)| c).sum()
    }
}

/// Reads status counts whose keys are JSON strings (`"200"`): a flattened summary is read
/// through a buffer that does not turn them back into numbers by itself.
fn status_keys<'de, D>(d: D) -> Result<BTreeMap<u16, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let raw = BTreeMap::<String, u64>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.parse::<u16>()
                .map(|k| (k, v))
                .map_err(|_| serde::de::Error::custom(format!("`{k}` is not a status code")))
        })
        .collect()
}

/// A summary of one request of the scenario, or of a setup request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedSummary {
    pub name: String,
    /// A setup request: sent once per virtual user before its first iteration (and again
    /// after a failed setup).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setup: bool,
    #[serde(flatten)]
    pub summary: Summary,
}

/// One bar of the latency histogram: requests whose latency is at most `le_ms` (and above
/// the previous bar's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// Whether the generator itself kept up; when not, the figures describe the generator, not
/// the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorHealth {
    pub threads: usize,
    /// CPU seconds the generator threads used.
    pub cpu_seconds: f64,
    /// CPU used / (threads × wall time), from 0 to 1.
    pub cpu_utilization: f64,
    /// Open model: how late the generator sent requests that were due, when a connection
    /// was free (the 99th percentile and the worst), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_lag_p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_lag_max_ms: Option<f64>,
    /// Open model: requests that were due while all `max_in_flight` connections were busy
    /// and waited for one (their wait is in their latency).
    pub waited_for_connection: u64,
    /// Open model: requests that were due but never sent because the run ended first.
    pub unsent: u64,
    /// Connections opened (reconnections included).
    pub connections: u64,
    pub cpu_saturated: bool,
    pub behind_schedule: bool,
    /// False when the figures cannot be trusted as a measure of the server.
    pub valid: bool,
    /// Plain sentences: what happened to the generator and what it means.
    pub notes: Vec<String>,
}

/// The result of a load test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// `closed` or `open`.
    pub model: String,
    pub url: String,
    /// Virtual users (closed) or the most requests in flight (open).
    pub concurrency: usize,
    /// Open model: requests per second asked for (the average over the run, with ramps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rps: Option<f64>,
    /// Seconds from the end of the warm-up to the last answer.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub warmup_requests: u64,
    /// Open model: latency counts from each request's intended send time.
    pub latency_from_intended_time: bool,
    pub summary: Summary,
    /// Per request of the scenario, then per setup request, when there is more than one
    /// request in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<NamedSummary>,
    pub histogram: Vec<Bucket>,
    /// Bytes the run's latency histogram takes, whatever the number of requests.
    pub histogram_bytes: usize,
    pub generator: GeneratorHealth,
    /// Identities loaded, and how many users shared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<usize>,
    /// Set when an abort rule stopped the run: the rule and the value that tripped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// Stopped from outside (Ctrl-C, a deadline) before it finished.
    pub cancelled: bool,
    pub thresholds: Vec<ThresholdResult>,
    /// Plain sentences about the run itself (shared identities, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LoadReport {
    /// The summary of a named request (of the scenario, or a setup request), or of the whole
    /// run for `None`.
    pub fn summary_for(&self, request: Option<&str>) -> Option<&Summary> {
        match request {
            None => Some(&self.summary),
            Some(name) => self
                .requests
                .iter()
                .find(|r| r.name == name)
                .map(|r| &r.summary),
        }
    }

    /// Whether every threshold passed and no abort rule stopped the run.
    pub fn passed(&self) -> bool {
        self.aborted.is_none()
            && !self.cancelled
            && self.thresholds.iter().all(ThresholdResult::passed)
    }

    /// A plain-text rendering: summary, latency distribution, histogram, status codes,
    /// errors, the generator's verdict and thresholds.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let s = &self.summary;
        let _ = writeln!(o, "Summary:");
        let _ = writeln!(
            o,
            "  Model:        {} ({} {})",
            self.model,
            self.concurrency,
            if self.model == "open" {
                "in flight at most"
            } else {
                "virtual users"
            }
        );
        let _ = writeln!(
            o,
            "  Requests:     {} ({} ok, {} failed)",
            s.requests, s.ok, s.failed
        );
        let _ = writeln!(o, "  Duration:     {:.3} s", self.duration_s);
        if self.warmup_requests > 0 || self.warmup_s > 0.0 {
            let _ = writeln!(
                o,
                "  Warm-up:      {:.1} s, {} requests not counted",
                self.warmup_s, self.warmup_requests
            );
        }
        match self.target_rps {
            Some(t) => {
                let _ = writeln!(
                    o,
                    "  Requests/s:   {:.1} (target {:.1}, {:.1}%)",
                    s.rps,
                    t,
                    if t > 0.0 { s.rps / t * 100.0 } else { 0.0 }
                );
            }
            None => {
                let _ = writeln!(o, "  Requests/s:   {:.1}", s.rps);
            }
        }
        let _ = writeln!(o, "  Error rate:   {:.2}%", s.error_rate * 100.0);
        let _ = writeln!(
            o,
            "  Received:     {} bytes ({} per request)",
            s.bytes_received,
            s.bytes_received.checked_div(s.requests).unwrap_or(0)
        );
        if s.checks_passed + s.checks_failed > 0 {
            let _ = writeln!(
                o,
                "  Checks:       {:.2}% passed ({} of {})",
                s.checks_rate * 100.0,
                s.checks_passed,
                s.checks_passed + s.checks_failed
            );
        }
        if let Some(n) = self.identities {
            let _ = writeln!(
                o,
                "  Identities:   {n}, isolation violations: {}",
                s.isolation_violations
            );
        }

        let l = &s.latency;
        let _ = writeln!(
            o,
            "\nLatency{}:",
            if self.latency_from_intended_time {
                " (from each request's intended send time)"
            } else {
                ""
            }
        );
        for (name, v) in [
            ("min", l.min_ms),
            ("mean", l.mean_ms),
            ("p50", l.p50_ms),
            ("p90", l.p90_ms),
            ("p95", l.p95_ms),
            ("p99", l.p99_ms),
            ("p99.9", l.p999_ms),
            ("max", l.max_ms),
        ] {
            let _ = writeln!(o, "  {name:<6} {}", fmt_ms(v));
        }

        if !self.histogram.is_empty() {
            let _ = writeln!(o, "\nResponse time histogram:");
            let most = self
                .histogram
                .iter()
                .map(|b| b.count)
                .max()
                .unwrap_or(1)
                .max(1);
            let width = self
                .histogram
                .iter()
                .map(|b| fmt_ms(b.le_ms).len())
                .max()
                .unwrap_or(0);
            let cwidth = self
                .histogram
                .iter()
                .map(|b| b.count.to_string().len())
                .max()
                .unwrap_or(1);
            for b in &self.histogram {
                let bar = (b.count * 40).div_ceil(most) as usize;
                let _ = writeln!(
                    o,
                    "  {:>width$} [{:>cwidth$}] |{}",
                    fmt_ms(b.le_ms),
                    b.count,
                    "■".repeat(bar)
                );
            }
        }

        if !s.status.is_empty() {
            let _ = writeln!(o, "\nStatus codes:");
            for (code, n) in &s.status {
                let _ = writeln!(o, "  [{code}] {n} responses");
            }
        }
        if s.failed > 0 {
            let _ = writeln!(o, "\nErrors:");
            let e = &s.errors;
            for (name, n) in [
                ("connect", e.connect),
                ("timeout", e.timeout),
                ("transport", e.transport),
                ("5xx", e.status_5xx),
                ("assertion", e.assertion),
            ] {
                if n > 0 {
                    let example = s
                        .error_examples
                        .get(name)
                        .map(|m| format!(" (first: {m})"))
                        .unwrap_or_default();
                    let _ = writeln!(o, "  {name}: {n}{example}");
                }
            }
        }
        if let Some(x) = &s.isolation_example {
            let _ = writeln!(
                o,
                "\nIsolation: {} violations; first: {}",
                s.isolation_violations, x.detail
            );
        }
        if self.requests.len() > 1 {
            let _ = writeln!(o, "\nPer request:");
            for r in &self.requests {
                let _ = writeln!(
                    o,
                    "  {}{}: {} requests, {:.2}% errors, p50 {}, p95 {}, p99 {}",
                    r.name,
                    if r.setup { " (setup)" } else { "" },
                    r.summary.requests,
                    r.summary.error_rate * 100.0,
                    fmt_ms(r.summary.latency.p50_ms),
                    fmt_ms(r.summary.latency.p95_ms),
                    fmt_ms(r.summary.latency.p99_ms)
                );
            }
        }

        let g = &self.generator;
        let _ = writeln!(o, "\nGenerator:");
        let lag = match (g.schedule_lag_p99_ms, g.schedule_lag_max_ms) {
            (Some(p), Some(m)) => format!(", schedule lag p99 {}, max {}", fmt_ms(p), fmt_ms(m)),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  {} thread{}, {:.2} CPU s ({:.0}% of its CPU), {} connections{lag}",
            g.threads,
            if g.threads == 1 { "" } else { "s" },
            g.cpu_seconds,
            g.cpu_utilization * 100.0,
            g.connections
        );
        for n in &g.notes {
            let _ = writeln!(o, "  {n}");
        }
        let _ = writeln!(
            o,
            "  {}",
            if g.valid {
                "verdict: the figures measure the server"
            } else {
                "verdict: NOT VALID: the generator was the bottleneck; the figures measure it, not the server"
            }
        );
        for n in &self.notes {
            let _ = writeln!(o, "\nNote: {n}");
        }
        if let Some(a) = &self.aborted {
            let _ = writeln!(o, "\nAborted: {a}");
        }
        if self.cancelled {
            let _ = writeln!(o, "\nCancelled before the end: the figures cover what ran.");
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(o, "\nThresholds:");
            for t in &self.thresholds {
                let _ = writeln!(o, "  {}", t.line());
            }
        }
        o
    }
}

/// `0.42 ms`, `12.3 ms`, `1.204 s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.1} ms")
    } else if ms >= 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// Eleven linear buckets from the fastest to the slowest answer, like hey's.
pub fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min(), h.max());
    let n = 11u64;
    let step = ((hi - lo) / (n - 1)).max(1);
    let mut out = Vec::new();
    let mut prev_edge: Option<u64> = None;
    for i in 0..n {
        let edge = if i == n - 1 { hi } else { lo + step * i };
        if prev_edge.is_some_and(|p| edge <= p) {
            continue;
        }
        let count = match prev_edge {
            None => h.count_between(0, edge),
            Some(p) => h.count_between(p, edge) - h.count_at(p),
        };
        out.push(Bucket {
            le_ms: edge as f64 / 1000.0,
            count,
        });
        prev_edge = Some(edge);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_every_request_once() {
        let mut h = crate::stats::latency_histogram();
        for v in [100u64, 200, 200, 900, 1000, 5000] {
            h.record(v).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 6, "{b:?}");
        assert_eq!(b.first().unwrap().count, 1);
        assert!(b.len() <= 11);
    }

    #[test]
    fn per_request_summaries_with_status_counts_read_back() {
        let mut summary = Summary::default();
        summary.status.insert(200, 7);
        summary.status.insert(503, 1);
        let named = NamedSummary {
            name: "login".into(),
            setup: true,
            summary,
        };
        let text = serde_json::to_string(&named).unwrap();
        assert!(text.contains(r#""200":7"#), "{text}");
        let back: NamedSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, named);
        let value = serde_json::to_value(&named).unwrap();
        let back: NamedSummary = serde_json::from_value(value).unwrap();
        assert_eq!(back, named);
    }
}
