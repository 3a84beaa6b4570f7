//! A self-contained HTML report of one run: one file, no external assets (inline CSS,
//! inline SVG charts, no script), to attach to a CI run or mail to someone.
//!
//! The header (project, environment, release, outcome, duration, who), the steps with their
//! status, duration, exit code and output tail, the checks' assertions, the gates' evidence,
//! load tests (their figures and a bar chart of latency percentiles), bakes (each
//! measurement, and a line chart of its samples when the run's rounds were seen), the
//! services, the rollback, the authorization and the warnings.
//!
//! Every piece of text is HTML-escaped: step output is whatever a command printed (secrets
//! are masked by the engine before any event is emitted), and must not become markup.

use std::fmt::Write as _;
use std::io::{self, Write};

use stagegate_engine::event::{Outcome, StepResult, StepStatus};
use stagegate_load::Verdict;

use crate::collect::{BakeRound, RunSummary};
use crate::format::{format_duration_ms, format_time_ms, short_sha, status_label, strip_ansi};
use crate::gate::{LineKind, evidence_lines};

/// Writes the summary as one HTML document.
pub fn write_html(summary: &RunSummary, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(render(summary).as_bytes())?;
    out.flush()
}

/// Escapes text for HTML content and attribute values; drops terminal escape codes.
pub fn escape(text: &str) -> String {
    let text = strip_ansi(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;color:#1f2328;background:#fff}
h1{font-size:1.5em;margin:.2em 0 .6em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;margin:.4em 0 1em;width:100%}th,td{border:1px solid #d0d7de;padding:.3em .55em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.facts{width:auto}table.facts th{width:9em}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:.6em;overflow:auto;white-space:pre-wrap;word-break:break-word;max-height:28em}
.badge{display:inline-block;padding:.05em .55em;border-radius:1em;font-size:.85em;font-weight:600;color:#fff;background:#6e7781}
.ok{background:#1a7f37}.bad{background:#cf222e}.wait{background:#9a6700}
span.pass{color:#1a7f37;font-weight:600}span.fail{color:#cf222e;font-weight:600}span.other{color:#9a6700;font-weight:600}
blockquote{margin:.5em 0;padding:.4em .9em;border-left:4px solid #d0d7de;color:#57606a}
details{margin:.3em 0}summary{cursor:pointer}svg{display:block;margin:.4em 0 1em;max-width:100%}
ul{margin:.3em 0 1em;padding-left:1.4em}
";

fn render(s: &RunSummary) -> String {
    let mut h = String::new();
    let what = match s.kind.as_str() {
        "rollback" => "Rollback",
        "check" => "Gate check",
        _ => "Deployment",
    };
    let (class, verdict) = match s.outcome {
        Some(Outcome::Succeeded) => ("ok", "succeeded"),
        Some(Outcome::Failed) => ("bad", "failed"),
        Some(Outcome::RolledBack) => ("bad", "rolled back"),
        Some(Outcome::RollbackFailed) => ("bad", "rollback failed"),
        Some(Outcome::Interrupted) => ("bad", "interrupted"),
        Some(Outcome::AwaitingDecision) => ("wait", "awaiting decision"),
        None => ("wait", "unfinished"),
    };
    let title = format!(
        "{what} #{} of {} {} to {}: {verdict}",
        s.deployment_id, s.project, s.release.version, s.environment
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(
        h,
        "<h1>{what} of {} <code>{}</code> to {} <span class=\"badge {class}\">{verdict}</span></h1>",
        escape(&s.project),
        escape(&s.release.version),
        escape(&s.environment)
    );

    // Facts.
    h.push_str("<table class=\"facts\">\n");
    let mut fact = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    fact("Project", escape(&s.project));
    fact("Environment", escape(&s.environment));
    let mut release = format!("<code>{}</code>", escape(&s.release.version));
    if !s.release.sha.is_empty() {
        let _ = write!(
            release,
            " (sha <code>{}</code>)",
            escape(short_sha(&s.release.sha))
        );
    }
    fact("Release", release);
    fact("Deployment", format!("#{}", s.deployment_id));
    let outcome = match (s.outcome, s.exit_code) {
        (Some(o), Some(c)) => format!("{} (exit code {c})", o.as_str().replace('_', " ")),
        (Some(o), None) => o.as_str().replace('_', " "),
        (None, _) => "unfinished".into(),
    };
    fact("Outcome", escape(&outcome));
    if let Some(at) = s.started_at {
        fact("Started", escape(&format_time_ms(at)));
    }
    if let Some(ms) = s.duration_ms {
        fact("Duration", escape(&format_duration_ms(ms)));
    }
    if let Some(who) = &s.actor {
        fact("Who", escape(who));
    }
    if !s.plan_hash.is_empty() {
        fact(
            "Plan",
            format!("<code>{}</code>", escape(short_sha(&s.plan_hash))),
        );
    }
    h.push_str("</table>\n");
    if let Some(sum) = s
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let _ = writeln!(h, "<blockquote>{}</blockquote>", escape(sum));
    }

    // Steps.
    let run_steps: Vec<&StepResult> = s.run_steps().collect();
    h.push_str("<h2>Steps</h2>\n");
    if run_steps.is_empty() {
        h.push_str("<p>No step ran.</p>\n");
    } else {
        step_table(&mut h, &run_steps);
        outputs(&mut h, &run_steps);
    }

    checks(&mut h, &run_steps);
    gates(&mut h, &run_steps);
    loads(&mut h, &run_steps);
    bakes(&mut h, s, &run_steps);

    // Migrations.
    let migrations: Vec<(&StepResult, Vec<String>)> = s
        .steps
        .iter()
        .filter_map(|r| crate::migrate::record(r).map(|m| (r, crate::migrate::lines(m, None))))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if !migrations.is_empty() {
        h.push_str("<h2>Migrations</h2>\n<ul>\n");
        for (r, lines) in &migrations {
            for l in lines {
                let _ = writeln!(
                    h,
                    "<li>{} (<code>{}</code>): {}</li>",
                    escape(&r.step.name),
                    escape(&r.step.id),
                    escape(l)
                );
            }
        }
        h.push_str("</ul>\n");
    }

    if !s.services.is_empty() {
        h.push_str("<h2>Services</h2>\n<ul>\n");
        for svc in &s.services {
            let _ = writeln!(
                h,
                "<li>{} <code>{}</code> healthy at <code>{}</code> after {}</li>",
                escape(&svc.service),
                escape(&svc.release),
                escape(&svc.url),
                escape(&format_duration_ms(svc.waited_ms))
            );
        }
        h.push_str("</ul>\n");
    }

    if let Some(rb) = &s.rollback {
        h.push_str("<h2>Rollback</h2>\n");
        let result = match rb.ok {
            Some(true) => "<span class=\"pass\">complete</span>",
            Some(false) => "<span class=\"fail\">failed</span>",
            None => "<span class=\"other\">did not finish</span>",
        };
        let _ = writeln!(
            h,
            "<p><strong>Reason:</strong> {}<br><strong>Result:</strong> {result} ({} action{} planned)</p>",
            escape(rb.reason.trim()),
            rb.actions,
            if rb.actions == 1 { "" } else { "s" }
        );
        let steps: Vec<&StepResult> = s.rollback_steps().collect();
        if !steps.is_empty() {
            step_table(&mut h, &steps);
            outputs(&mut h, &steps);
        }
        if !rb.not_rolled_back.is_empty() {
            h.push_str("<p><strong>Not rolled back:</strong></p>\n<ul>\n");
            for item in &rb.not_rolled_back {
                let _ = writeln!(h, "<li>{}</li>", escape(item.trim()));
            }
            h.push_str("</ul>\n");
        }
    }

    if let Some(a) = &s.authorized {
        h.push_str("<h2>Authorization</h2>\n<ul>\n");
        if let Some(f) = &a.from {
            let _ = writeln!(
                h,
                "<li>Promoted from <strong>{}</strong>{}</li>",
                escape(f),
                a.source_deployment
                    .map(|d| format!(" (deployment #{d})"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            h,
            "<li>Artifact digest: <code>{}</code></li>",
            escape(&a.artifact)
        );
        if let Some(r) = a.request {
            let _ = writeln!(h, "<li>Request: #{r}</li>");
        }
        for ap in &a.approvals {
            let _ = writeln!(
                h,
                "<li>Approved by <strong>{}</strong>{} at {}{}</li>",
                escape(&ap.actor),
                ap.role
                    .as_ref()
                    .map(|r| format!(" as {}", escape(r)))
                    .unwrap_or_default(),
                escape(&format_time_ms(ap.at)),
                if ap.comment.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", escape(ap.comment.trim()))
                }
            );
        }
        if let Some(b) = &a.bypass {
            let _ = writeln!(
                h,
                "<li><strong>Bypass</strong> by {} at {}: {}</li>",
                escape(&b.actor),
                escape(&format_time_ms(b.at)),
                escape(b.comment.trim())
            );
        }
        h.push_str("</ul>\n");
    }

    if !s.warnings.is_empty() {
        h.push_str("<h2>Warnings</h2>\n<ul>\n");
        for w in &s.warnings {
            let _ = writeln!(h, "<li>{}</li>", escape(w.trim()));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn status_span(status: StepStatus) -> String {
    let class = match status {
        StepStatus::Passed => "pass",
        StepStatus::Skipped => "other",
        _ => "fail",
    };
    format!("<span class=\"{class}\">{}</span>", status_label(status))
}

fn step_name(r: &StepResult) -> String {
    let mut n = escape(&r.step.name);
    if r.step.id != r.step.name {
        let _ = write!(n, " (<code>{}</code>)", escape(&r.step.id));
    }
    n
}

fn step_table(h: &mut String, steps: &[&StepResult]) {
    h.push_str("<table>\n<tr><th>#</th><th>Stage</th><th>Step</th><th>Kind</th><th>Status</th><th>Duration</th><th>Exit code</th></tr>\n");
    for r in steps {
        let mut status = status_span(r.status);
        if r.attempts > 1 {
            let _ = write!(status, " ({} attempts)", r.attempts);
        }
        let exit = r.exit_code.map(|c| c.to_string()).unwrap_or("–".into());
        let _ = writeln!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td class=\"num\">{}</td><td class=\"num\">{exit}</td></tr>",
            r.step.seq,
            escape(&r.step.stage),
            step_name(r),
            escape(&r.step.kind),
            escape(&format_duration_ms(r.duration_ms)),
        );
    }
    h.push_str("</table>\n");
}

/// Each step's error and output tail, open for failures.
fn outputs(h: &mut String, steps: &[&StepResult]) {
    for r in steps {
        let error = r.error.as_deref().map(str::trim).filter(|e| !e.is_empty());
        let tail = r.output_tail.trim_end();
        if error.is_none() && tail.trim().is_empty() {
            continue;
        }
        let open = if r.status.is_failure() { " open" } else { "" };
        let _ = writeln!(
            h,
            "<details{open}><summary>{} {}</summary>",
            step_name(r),
            status_span(r.status)
        );
        if let Some(e) = error {
            let _ = writeln!(h, "<p><strong>Error:</strong></p><pre>{}</pre>", escape(e));
        }
        if !tail.trim().is_empty() {
            let _ = writeln!(
                h,
                "<p><strong>Output</strong> (last lines):</p><pre>{}</pre>",
                escape(tail)
            );
        }
        h.push_str("</details>\n");
    }
}

fn checks(h: &mut String, steps: &[&StepResult]) {
    let checks: Vec<(&StepResult, Vec<stagegate_engine::check::AssertionResult>)> = steps
        .iter()
        .map(|r| (*r, crate::checks::assertions(r)))
        .filter(|(_, a)| !a.is_empty())
        .collect();
    if checks.is_empty() {
        return;
    }
    h.push_str("<h2>Checks</h2>\n<table>\n<tr><th>Check</th><th>Assertion</th><th>Expected</th><th>Actual</th><th>Result</th></tr>\n");
    for (r, assertions) in &checks {
        for a in assertions {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                step_name(r),
                escape(&a.name),
                escape(&a.expected),
                escape(&a.actual),
                if a.passed {
                    "<span class=\"pass\">pass</span>"
                } else {
                    "<span class=\"fail\">fail</span>"
                }
            );
        }
    }
    h.push_str("</table>\n");
}

fn gates(h: &mut String, steps: &[&StepResult]) {
    let gates: Vec<(&StepResult, crate::gate::Evidence)> = steps
        .iter()
        .filter_map(|r| crate::gate::evidence(r).map(|e| (*r, e)))
        .collect();
    if gates.is_empty() {
        return;
    }
    h.push_str("<h2>Gates</h2>\n");
    for (r, e) in &gates {
        let verdict = match (e.passed, &e.overridden) {
            (true, _) => "<span class=\"pass\">passed</span>",
            (false, Some(_)) => "<span class=\"other\">overridden</span>",
            (false, None) => "<span class=\"fail\">failed</span>",
        };
        let _ = writeln!(
            h,
            "<p><strong>{}</strong> ({}): {verdict}</p>\n<ul>",
            step_name(r),
            escape(&e.gate)
        );
        for l in evidence_lines(e) {
            let (mark, text) = match l.kind {
                LineKind::Ok => ("<span class=\"pass\">ok</span> ", escape(&l.text)),
                LineKind::Failed => ("<span class=\"fail\">FAIL</span> ", escape(&l.text)),
                LineKind::Finding => ("", format!("<code>{}</code>", escape(&l.text))),
                LineKind::Override => ("<span class=\"other\">OVERRIDE</span> ", escape(&l.text)),
            };
            let _ = writeln!(h, "<li>{mark}{text}</li>");
        }
        if let Some(help) = e.help.as_deref().filter(|_| !e.passed) {
            let _ = writeln!(h, "<li><strong>What to do:</strong> {}</li>", escape(help));
        }
        h.push_str("</ul>\n");
    }
}

fn loads(h: &mut String, steps: &[&StepResult]) {
    let loads: Vec<(&StepResult, stagegate_load::LoadReport)> = steps
        .iter()
        .filter_map(|r| crate::load::report(r).map(|l| (*r, l)))
        .collect();
    if loads.is_empty() {
        return;
    }
    h.push_str("<h2>Load tests</h2>\n");
    for (r, l) in &loads {
        let _ = writeln!(
            h,
            "<p><strong>{}</strong>: {}</p>",
            step_name(r),
            escape(&crate::load::summary_line(l))
        );
        h.push_str(&latency_chart("Latency (ms)", l));
        if !l.thresholds.is_empty() {
            h.push_str("<table>\n<tr><th>Threshold</th><th>Value</th><th>Result</th></tr>\n");
            for t in &l.thresholds {
                let v = match t.verdict {
                    Verdict::Pass => "<span class=\"pass\">pass</span>",
                    Verdict::NoBaseline => "<span class=\"other\">no baseline</span>",
                    Verdict::Fail => "<span class=\"fail\">fail</span>",
                    Verdict::NoData => "<span class=\"fail\">no data</span>",
                };
                let _ = writeln!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{v}</td></tr>",
                    escape(&t.text),
                    escape(&t.message)
                );
            }
            h.push_str("</table>\n");
        }
        let notes = crate::load::notes(l);
        if !notes.is_empty() {
            h.push_str("<ul>\n");
            for n in notes {
                let _ = writeln!(h, "<li>{}</li>", escape(&n));
            }
            h.push_str("</ul>\n");
        }
    }
}

fn bakes(h: &mut String, s: &RunSummary, steps: &[&StepResult]) {
    let bakes: Vec<(&StepResult, &stagegate_engine::watch::WatchSummary)> = steps
        .iter()
        .filter_map(|r| crate::watch::summary(r).map(|w| (*r, w)))
        .collect();
    if bakes.is_empty() {
        return;
    }
    h.push_str("<h2>Bakes</h2>\n");
    for (r, w) in &bakes {
        let _ = writeln!(
            h,
            "<p><strong>{}</strong>: {}, {}</p>",
            step_name(r),
            escape(&w.verdict),
            escape(&w.reason)
        );
        h.push_str("<table>\n<tr><th>Measurement</th><th>Query</th><th>Condition</th><th>Samples</th><th>Values</th><th>Result</th></tr>\n");
        for m in &w.measurements {
            let v = match m.verdict.as_str() {
                "pass" => "<span class=\"pass\">pass</span>".to_string(),
                "inconclusive" => "<span class=\"other\">inconclusive</span>".to_string(),
                other => format!("<span class=\"fail\">{}</span>", escape(other)),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{v}</td></tr>",
                escape(&m.name),
                escape(&m.target),
                escape(&m.condition),
                escape(&crate::watch::counts(m)),
                escape(&crate::watch::values(m))
            );
        }
        h.push_str("</table>\n");
        let rounds: &[BakeRound] = s
            .bake_rounds
            .get(&r.step.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, m) in w.measurements.iter().enumerate() {
            let points: Vec<(u32, f64)> = rounds
                .iter()
                .filter_map(|round| Some((round.round, round.values.get(i).copied()??)))
                .collect();
            if points.len() >= 2 {
                h.push_str(&line_chart(&m.name, &points));
            }
        }
        if let Some(d) = crate::watch::decision(w) {
            let _ = writeln!(h, "<p>{}</p>", escape(&d));
        }
    }
}

/// A load run's latency percentiles (p50 to max) as a bar chart.
pub fn latency_chart(title: &str, l: &stagegate_load::LoadReport) -> String {
    let lat = &l.summary.latency;
    let bars = [
        ("p50", lat.p50_ms),
        ("p90", lat.p90_ms),
        ("p95", lat.p95_ms),
        ("p99", lat.p99_ms),
        ("p99.9", lat.p999_ms),
        ("max", lat.max_ms),
    ];
    bar_chart(title, &bars)
}

/// A number for a chart label: at most three decimals, no trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A horizontal bar chart as inline SVG.
pub fn bar_chart(title: &str, bars: &[(&str, f64)]) -> String {
    let (w, row, left, right) = (560.0, 22.0, 60.0, 90.0);
    let height = 28.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
    let mut svg = format!(
        "<svg width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"{t}\">\n<text x=\"0\" y=\"14\" font-size=\"12\" font-weight=\"600\">{t}</text>\n",
        t = escape(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 24.0 + row * i as f64;
        let len = if max > 0.0 {
            (v / max) * (w - left - right)
        } else {
            0.0
        };
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"#0969da\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{} ms</text>",
            left - 6.0,
            y + 13.0,
            escape(label),
            len.max(1.0),
            row - 6.0,
            left + len.max(1.0) + 5.0,
            y + 13.0,
            num(*v)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A line chart of `(round, value)` points as inline SVG.
pub fn line_chart(title: &str, points: &[(u32, f64)]) -> String {
    let (w, hgt, left, top, bottom, right) = (560.0, 180.0, 56.0, 22.0, 24.0, 12.0);
    let (x0, x1) = (
        points.first().map_or(0, |p| p.0) as f64,
        points.last().map_or(1, |p| p.0) as f64,
    );
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    };
    let sx = |x: f64| left + (x - x0) / (x1 - x0).max(1.0) * (w - left - right);
    let sy = |y: f64| top + (hi - y) / (hi - lo) * (hgt - top - bottom);
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", sx(*x as f64), sy(*y)))
        .collect();
    let mut svg = format!(
        "<svg width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\" role=\"img\" aria-label=\"{t}\">\n<text x=\"0\" y=\"14\" font-size=\"12\" font-weight=\"600\">{t}</text>\n",
        t = escape(title)
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\" stroke=\"#8c959f\"/><line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#8c959f\"/>",
        b = hgt - bottom,
        r = w - right
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
        left - 4.0,
        top + 4.0,
        num(hi),
        left - 4.0,
        hgt - bottom,
        num(lo)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{left}\" y=\"{}\" font-size=\"10\">round {}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">round {}</text>",
        hgt - 6.0,
        x0,
        w - right,
        hgt - 6.0,
        x1
    );
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    );
    for (x, y) in points {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#0969da\"><title>round {x}: {}</title></circle>",
            sx(*x as f64),
            sy(*y),
            num(*y)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn charts_are_svg_with_escaped_titles() {
        let b = bar_chart("<b>", &[("p50", 1.5), ("max", 3.0)]);
        assert!(b.starts_with("<svg") && b.contains("&lt;b&gt;") && b.contains("1.5 ms"));
        let l = line_chart("error rate", &[(1, 0.1), (2, 0.3), (3, 0.2)]);
        assert!(l.contains("<polyline") && l.contains("round 3: 0.2"));
        // One value repeated still draws inside the box.
        assert!(!line_chart("flat", &[(1, 2.0), (2, 2.0)]).contains("NaN"));
    }
}
