//! Watch steps (bakes) in reports: the verdict with its reason, then one line per
//! measurement (what was queried, the condition, the sample counts, last, min and max), and
//! the person's decision on an inconclusive one.

use stagegate_engine::event::StepResult;
use stagegate_engine::watch::{MeasurementSummary, WatchSummary};

/// The watch summary of a step, `None` for steps that are not watches.
pub fn summary(r: &StepResult) -> Option<&WatchSummary> {
    r.details.watch()
}

/// `2 samples: 1 passed, 1 failed, 0 breaching, 0 inconclusive, 0 no data, 0 errors`.
pub fn counts(m: &MeasurementSummary) -> String {
    format!(
        "{} sample{}: {} passed, {} failed, {} breaching, {} inconclusive, {} no data, {} errors",
        m.samples,
        if m.samples == 1 { "" } else { "s" },
        m.passed,
        m.failed,
        m.breaching,
        m.inconclusive,
        m.no_data,
        m.errors
    )
}

/// `last 0.02, min 0, max 0.03`, or `-` without values.
pub fn values(m: &MeasurementSummary) -> String {
    let mut v = Vec::new();
    if let Some(l) = &m.last {
        v.push(format!("last {l}"));
    }
    if let (Some(lo), Some(hi)) = (m.min, m.max) {
        v.push(format!("min {}, max {}", fmt(lo), fmt(hi)));
    }
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn fmt(v: f64) -> String {
    stagegate_engine::check::fmt_value(v)
}

/// The decision line, if a person decided.
pub fn decision(w: &WatchSummary) -> Option<String> {
    w.decision.as_ref().map(|d| {
        format!(
            "decided {} by {} at {}: {}",
            if d.pass { "pass" } else { "fail" },
            d.actor,
            crate::format_time_ms(d.at),
            d.reason
        )
    })
}

/// Every line a reporter shows under a watch step.
pub fn lines(w: &WatchSummary) -> Vec<String> {
    let mut out = vec![format!("bake {}: {}", w.verdict, w.reason)];
    for m in &w.measurements {
        let target = if m.target.starts_with(&m.kind) {
            m.target.clone()
        } else {
            format!("{} {}", m.kind, m.target)
        };
        out.push(format!(
            "[{}] {} ({target}): {}; {}; {}",
            m.verdict,
            m.name,
            m.condition,
            counts(m),
            values(m)
        ));
        if let Some(b) = &m.baseline {
            out.push(match b.median {
                Some(med) => format!(
                    "    baseline ({}): median {} of {} values, {}",
                    b.from,
                    fmt(med),
                    b.samples,
                    b.source
                ),
                None => format!("    baseline ({}): {}", b.from, b.source),
            });
        }
        if let Some(c) = &m.comparison {
            out.push(format!("    compared: {c}"));
        }
        let said = m
            .comparison
            .as_ref()
            .is_some_and(|c| m.reason.contains(c.as_str()));
        if m.verdict != "pass" && !m.reason.is_empty() && !said {
            out.push(format!("    {}", m.reason));
        }
    }
    out.extend(decision(w));
    out
}
