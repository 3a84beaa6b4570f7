//! Load steps in reports: the generator's report a load step recorded (`details.load`),
//! as a summary line and one line per SLO threshold.

use stagegate_engine::event::StepResult;
use stagegate_load::LoadReport;
use stagegate_load::report::fmt_ms;

/// The load report of a step, `None` for steps that are not load tests.
pub fn report(r: &StepResult) -> Option<LoadReport> {
    r.details.load().map(|l| l.load.clone())
}

/// Every line a reporter shows under a load step: the summary, each threshold (with its
/// mark) and the notes.
pub fn lines(l: &LoadReport) -> Vec<String> {
    let mut out = vec![summary_line(l)];
    for t in &l.thresholds {
        out.push(t.line());
    }
    out.extend(notes(l));
    out
}

/// `1000 requests in 1.2 s, 812.4/s · p50 1.20 ms · p95 3.40 ms · p99 5.00 ms · max 9.10 ms ·
/// errors 0 (0.00%)`.
pub fn summary_line(l: &LoadReport) -> String {
    let s = &l.summary;
    let target = l
        .target_rps
        .map(|t| format!(" (target {t:.1}/s)"))
        .unwrap_or_default();
    format!(
        "{} requests in {:.1} s, {:.1}/s{target} · p50 {} · p95 {} · p99 {} · max {} · errors {} ({:.2}%)",
        s.requests,
        l.duration_s,
        s.rps,
        fmt_ms(s.latency.p50_ms),
        fmt_ms(s.latency.p95_ms),
        fmt_ms(s.latency.p99_ms),
        fmt_ms(s.latency.max_ms),
        s.failed,
        s.error_rate * 100.0
    )
}

/// Lines under the summary: the isolation example, the first failed check, the generator's
/// warning when its figures are not valid.
pub fn notes(l: &LoadReport) -> Vec<String> {
    let s = &l.summary;
    let mut out = Vec::new();
    if s.isolation_violations > 0 {
        let example = s
            .isolation_example
            .as_ref()
            .map(|x| format!("; e.g. {}", x.detail))
            .unwrap_or_default();
        out.push(format!(
            "isolation: {} violation{}{example}",
            s.isolation_violations,
            if s.isolation_violations == 1 { "" } else { "s" }
        ));
    }
    if let Some(c) = &s.check_example {
        out.push(format!(
            "checks: {} failed of {}; e.g. {c}",
            s.checks_failed,
            s.checks_failed + s.checks_passed
        ));
    }
    for (class, example) in &s.error_examples {
        if class != "assertion" {
            out.push(format!("{class} error: {example}"));
        }
    }
    if let Some(a) = &l.aborted {
        out.push(format!("aborted: {a}"));
    }
    if !l.generator.valid {
        out.push(format!(
            "NOT VALID: the generator fell behind or ran out of CPU: {}",
            l.generator.notes.join("; ")
        ));
    }
    out
}
