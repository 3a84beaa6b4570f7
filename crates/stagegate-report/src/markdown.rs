//! A Markdown summary of a run, fit for `$GITHUB_STEP_SUMMARY` (GitHub-flavored Markdown).
//!
//! A title with the outcome (`✅` or `❌`), a table of the deployment's facts, the summary
//! sentence, a table of steps, a table of the checks' assertions (expected and actual), the
//! gates with what each checked and found (overrides first, in their own section), a section
//! per other failed step with its error and output tail in
//! a fenced block, and the rollback: its reason, its steps and what was not rolled back.
//!
//! Text that came from the plan or from steps is escaped: Markdown punctuation is
//! backslash-escaped (so a `|` in a step name cannot break a table), and fenced blocks use a
//! fence longer than any run of backticks inside them.

use std::io::{self, Write};

use stagegate_engine::event::{Outcome, StepResult, StepStatus};

use crate::collect::RunSummary;
use crate::format::{format_duration_ms, format_time_ms, short_sha, status_label, strip_ansi};
use stagegate_load::Verdict;

use crate::gate::{Evidence, LineKind, evidence_lines};

/// Writes the summary as Markdown.
pub fn write_markdown(summary: &RunSummary, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(render(summary).as_bytes())?;
    out.flush()
}

fn render(s: &RunSummary) -> String {
    let mut md = String::new();
    let push = |md: &mut String, line: &str| {
        md.push_str(line);
        md.push('\n');
    };

    // Title.
    let (marker, verdict) = match s.outcome {
        Some(Outcome::Succeeded) => ("✅", "succeeded"),
        Some(Outcome::Failed) => ("❌", "failed"),
        Some(Outcome::RolledBack) => ("❌", "failed and was rolled back"),
        Some(Outcome::RollbackFailed) => ("❌", "failed and the rollback failed"),
        Some(Outcome::Interrupted) => ("❌", "was interrupted"),
        Some(Outcome::AwaitingDecision) => ("⏸️", "awaits a decision"),
        None => ("⏳", "did not finish"),
    };
    let what = if s.kind == "rollback" {
        "Rollback"
    } else if s.kind == "check" {
        "Gate check"
    } else {
        "Deployment"
    };
    push(
        &mut md,
        &format!(
            "## {marker} {what} of {} {} to {} {verdict}",
            escape(&s.project),
            escape(&s.release.version),
            escape(&s.environment)
        ),
    );
    md.push('\n');

    // Facts.
    push(&mut md, "| | |");
    push(&mut md, "|---|---|");
    push(&mut md, &format!("| Project | {} |", escape(&s.project)));
    let mut release = code(&s.release.version);
    if !s.release.sha.is_empty() {
        release.push_str(&format!(" (sha {})", code(short_sha(&s.release.sha))));
    }
    push(&mut md, &format!("| Release | {release} |"));
    push(
        &mut md,
        &format!("| Environment | {} |", escape(&s.environment)),
    );
    push(&mut md, &format!("| Deployment | #{} |", s.deployment_id));
    if let Some(at) = s.started_at {
        push(&mut md, &format!("| Started | {} |", format_time_ms(at)));
    }
    if let Some(ms) = s.duration_ms {
        push(
            &mut md,
            &format!("| Duration | {} |", format_duration_ms(ms)),
        );
    }
    let outcome = match (s.outcome, s.exit_code) {
        (Some(o), Some(code)) => format!("**{}** (exit {code})", o.as_str().replace('_', " ")),
        (Some(o), None) => format!("**{}**", o.as_str().replace('_', " ")),
        (None, _) => "unfinished".to_string(),
    };
    push(&mut md, &format!("| Outcome | {outcome} |"));
    if !s.plan_hash.is_empty() {
        push(
            &mut md,
            &format!("| Plan | {} |", code(short_sha(&s.plan_hash))),
        );
    }
    md.push('\n');

    if let Some(summary) = s
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        push(&mut md, &format!("> {}", escape(summary)));
        md.push('\n');
    }

    // Steps.
    let run_steps: Vec<&StepResult> = s.run_steps().collect();
    push(&mut md, "### Steps");
    md.push('\n');
    if run_steps.is_empty() {
        push(&mut md, "No step ran.");
    } else {
        step_table(&mut md, &run_steps);
    }
    md.push('\n');

    // Checks: every assertion with what was expected and what was found.
    let checks: Vec<(&StepResult, Vec<stagegate_engine::check::AssertionResult>)> = run_steps
        .iter()
        .map(|r| (*r, crate::checks::assertions(r)))
        .filter(|(_, a)| !a.is_empty())
        .collect();
    if !checks.is_empty() {
        let total: usize = checks.iter().map(|(_, a)| a.len()).sum();
        let failed: usize = checks
            .iter()
            .map(|(_, a)| a.iter().filter(|x| !x.passed).count())
            .sum();
        push(&mut md, "### Checks");
        md.push('\n');
        push(
            &mut md,
            &format!(
                "{} of {total} assertions passed in {} checks.",
                total - failed,
                checks.len()
            ),
        );
        md.push('\n');
        push(
            &mut md,
            "| Check | Assertion | Expected | Actual | Result |",
        );
        push(&mut md, "|---|---|---|---|:---:|");
        for (r, assertions) in &checks {
            for (i, a) in assertions.iter().enumerate() {
                let check = if i == 0 {
                    let mut c = escape(&r.step.name);
                    if r.step.id != r.step.name {
                        c.push_str(&format!(" ({})", code(&r.step.id)));
                    }
                    c
                } else {
                    String::new()
                };
                push(
                    &mut md,
                    &format!(
                        "| {check} | {} | {} | {} | {} |",
                        escape(&a.name),
                        code(&clip(&a.expected)),
                        code(&clip(&a.actual)),
                        if a.passed { "✅" } else { "❌" }
                    ),
                );
            }
        }
        md.push('\n');
    }

    // Load tests: figures and every SLO threshold with its value and limit.
    let loads: Vec<(&StepResult, stagegate_load::LoadReport)> = run_steps
        .iter()
        .filter_map(|r| crate::load::report(r).map(|l| (*r, l)))
        .collect();
    if !loads.is_empty() {
        push(&mut md, "### Load tests");
        md.push('\n');
        for (r, l) in &loads {
            let mut head = format!("**{}**", escape(&r.step.name));
            if r.step.id != r.step.name {
                head.push_str(&format!(" ({})", code(&r.step.id)));
            }
            push(
                &mut md,
                &format!("{head}: {}", escape(&crate::load::summary_line(l))),
            );
            md.push('\n');
            if !l.thresholds.is_empty() {
                push(&mut md, "| Threshold | Value | Result |");
                push(&mut md, "|---|---|:---:|");
                for t in &l.thresholds {
                    push(
                        &mut md,
                        &format!(
                            "| {} | {} | {} |",
                            code(&t.text),
                            escape(&t.message),
                            match t.verdict {
                                Verdict::Pass => "✅",
                                Verdict::NoBaseline => "➖",
                                Verdict::Fail | Verdict::NoData => "❌",
                            }
                        ),
                    );
                }
                md.push('\n');
            }
            for n in crate::load::notes(l) {
                push(&mut md, &format!("- {}", escape(&n)));
            }
            md.push('\n');
        }
    }

    // Bakes: every measurement with its query, condition, samples and values.
    let bakes: Vec<(&StepResult, &stagegate_engine::watch::WatchSummary)> = run_steps
        .iter()
        .filter_map(|r| crate::watch::summary(r).map(|w| (*r, w)))
        .collect();
    if !bakes.is_empty() {
        push(&mut md, "### Bakes");
        md.push('\n');
        for (r, w) in &bakes {
            let mut head = format!("**{}**", escape(&r.step.name));
            if r.step.id != r.step.name {
                head.push_str(&format!(" ({})", code(&r.step.id)));
            }
            push(
                &mut md,
                &format!("{head}: {}, {}", escape(&w.verdict), escape(&w.reason)),
            );
            md.push('\n');
            push(
                &mut md,
                "| Measurement | Query | Condition | Samples | Values | Result |",
            );
            push(&mut md, "|---|---|---|---|---|:---:|");
            for m in &w.measurements {
                push(
                    &mut md,
                    &format!(
                        "| {} | {} | {} | {} | {} | {} |",
                        escape(&m.name),
                        code(&clip(&m.target)),
                        escape(&m.condition),
                        escape(&crate::watch::counts(m)),
                        escape(&crate::watch::values(m)),
                        match m.verdict.as_str() {
                            "pass" => "✅",
                            "inconclusive" => "❔",
                            _ => "❌",
                        }
                    ),
                );
            }
            md.push('\n');
            if let Some(d) = crate::watch::decision(w) {
                push(&mut md, &format!("- {}", escape(&d)));
                md.push('\n');
            }
        }
    }

    // Migrations: each backup, and what the rollback undid.
    let migrations: Vec<(&StepResult, Vec<String>)> = s
        .steps
        .iter()
        .filter_map(|r| crate::migrate::record(r).map(|m| (r, crate::migrate::lines(m, None))))
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if !migrations.is_empty() {
        push(&mut md, "### Migrations");
        md.push('\n');
        for (r, lines) in &migrations {
            for l in lines {
                push(
                    &mut md,
                    &format!(
                        "- {} ({}): {}",
                        escape(&r.step.name),
                        code(&r.step.id),
                        escape(l)
                    ),
                );
            }
        }
        md.push('\n');
    }

    // Services.
    if !s.services.is_empty() {
        push(&mut md, "### Services");
        md.push('\n');
        for svc in &s.services {
            push(
                &mut md,
                &format!(
                    "- {} {} healthy at {} after {}",
                    escape(&svc.service),
                    code(&svc.release),
                    code(&svc.url),
                    format_duration_ms(svc.waited_ms)
                ),
            );
        }
        md.push('\n');
    }

    // Gates: what each checked and found; overrides stand out.
    let gates: Vec<(&StepResult, Evidence)> = s
        .run_steps()
        .filter_map(|r| crate::gate::evidence(r).map(|e| (r, e)))
        .collect();
    let overrides: Vec<&(&StepResult, Evidence)> = gates
        .iter()
        .filter(|(_, e)| e.overridden.is_some())
        .collect();
    if !overrides.is_empty() {
        push(&mut md, "### ⚠️ Overrides");
        md.push('\n');
        for (r, e) in overrides {
            if let Some(o) = &e.overridden {
                push(
                    &mut md,
                    &format!(
                        "- {} ({}) failed and was overridden by **{}** at {}: {}",
                        escape(&r.step.name),
                        code(&r.step.id),
                        escape(&o.by),
                        escape(&o.at),
                        escape(&o.reason)
                    ),
                );
            }
        }
        md.push('\n');
    }
    if !gates.is_empty() {
        push(&mut md, "### Gates");
        md.push('\n');
        for (r, e) in &gates {
            let verdict = match (e.passed, &e.overridden, r.status) {
                (true, ..) => "✅ passed",
                (false, Some(_), _) => "⚠️ overridden",
                (false, None, StepStatus::TimedOut) => "❌ timed out",
                (false, None, _) => "❌ failed",
            };
            push(
                &mut md,
                &format!(
                    "**{}** ({}): {verdict}",
                    escape(&r.step.name),
                    code(&r.step.id)
                ),
            );
            md.push('\n');
            for l in evidence_lines(e) {
                let line = match l.kind {
                    LineKind::Ok => format!("- ✅ {}", escape(&l.text)),
                    LineKind::Failed => format!("- ❌ {}", escape(&l.text)),
                    LineKind::Finding => format!("  - {}", code(&l.text)),
                    LineKind::Override => format!("- ⚠️ {}", escape(&l.text)),
                };
                push(&mut md, &line);
            }
            if let Some(help) = e.help.as_deref().filter(|_| !e.passed) {
                push(&mut md, &format!("- **What to do:** {}", escape(help)));
            }
            md.push('\n');
        }
    }

    // Failures, both phases.
    for r in s.failed_steps() {
        if gates.iter().any(|(g, _)| g.step.seq == r.step.seq) {
            continue;
        }
        let phase = match r.step.phase {
            stagegate_engine::event::Phase::Run => "",
            stagegate_engine::event::Phase::Rollback => "rollback step ",
        };
        push(
            &mut md,
            &format!(
                "### ❌ {phase}{} ({}, {})",
                escape(&r.step.name),
                escape(&r.step.stage),
                status_label(r.status)
            ),
        );
        md.push('\n');
        if let Some(error) = r.error.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            let error = strip_ansi(error);
            if error.contains('\n') {
                push(&mut md, "**Error:**");
                md.push('\n');
                fenced(&mut md, "text", &error);
            } else {
                push(&mut md, &format!("**Error:** {}", escape(&error)));
            }
            md.push('\n');
        }
        let tail = strip_ansi(&r.output_tail);
        if !tail.trim().is_empty() {
            push(
                &mut md,
                "<details open><summary>Output (last lines)</summary>",
            );
            md.push('\n');
            fenced(&mut md, "text", tail.trim_end());
            md.push('\n');
            push(&mut md, "</details>");
            md.push('\n');
        }
    }

    // Rollback.
    if let Some(rb) = &s.rollback {
        push(&mut md, "### Rollback");
        md.push('\n');
        push(
            &mut md,
            &format!("**Reason:** {}", escape(rb.reason.trim())),
        );
        md.push('\n');
        let result = match rb.ok {
            Some(true) => "✅ complete",
            Some(false) => "❌ failed",
            None => "did not finish",
        };
        push(&mut md, &format!("**Result:** {result}"));
        md.push('\n');
        let rollback_steps: Vec<&StepResult> = s.rollback_steps().collect();
        if !rollback_steps.is_empty() {
            step_table(&mut md, &rollback_steps);
            md.push('\n');
        }
        if !rb.not_rolled_back.is_empty() {
            push(&mut md, "**Not rolled back:**");
            md.push('\n');
            for item in &rb.not_rolled_back {
                push(&mut md, &format!("- {}", escape(item.trim())));
            }
            md.push('\n');
        }
    }

    // What authorized a protected deploy.
    if let Some(a) = &s.authorized {
        push(&mut md, "### Authorization");
        md.push('\n');
        if let Some(f) = &a.from {
            push(
                &mut md,
                &format!(
                    "- Promoted from **{}**{}",
                    escape(f),
                    a.source_deployment
                        .map(|d| format!(" (deployment #{d})"))
                        .unwrap_or_default()
                ),
            );
        }
        push(&mut md, &format!("- Artifact digest: `{}`", a.artifact));
        if let Some(r) = a.request {
            push(&mut md, &format!("- Request: #{r}"));
        }
        for ap in &a.approvals {
            push(
                &mut md,
                &format!(
                    "- Approved by **{}**{}{}",
                    escape(&ap.actor),
                    ap.role
                        .as_ref()
                        .map(|r| format!(" as {}", escape(r)))
                        .unwrap_or_default(),
                    if ap.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", escape(ap.comment.trim()))
                    }
                ),
            );
        }
        if let Some(b) = &a.bypass {
            push(
                &mut md,
                &format!(
                    "- **Bypass** by {}: {}",
                    escape(&b.actor),
                    escape(b.comment.trim())
                ),
            );
        }
        md.push('\n');
    }

    // Warnings.
    if !s.warnings.is_empty() {
        push(&mut md, "### Warnings");
        md.push('\n');
        for w in &s.warnings {
            push(&mut md, &format!("- {}", escape(w.trim())));
        }
        md.push('\n');
    }

    md
}

fn step_table(md: &mut String, steps: &[&StepResult]) {
    md.push_str("| Stage | Step | Status | Duration | Exit code |\n");
    md.push_str("|---|---|---|---:|---:|\n");
    for r in steps {
        let mut step = escape(&r.step.name);
        if r.step.id != r.step.name {
            step.push_str(&format!(" ({})", code(&r.step.id)));
        }
        let status = match r.status {
            StepStatus::Passed | StepStatus::Skipped => status_label(r.status).to_string(),
            _ => format!("**{}**", status_label(r.status)),
        };
        let status = if r.attempts > 1 {
            format!("{status} ({} attempts)", r.attempts)
        } else {
            status
        };
        let exit = r
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "–".to_string());
        md.push_str(&format!(
            "| {} | {step} | {status} | {} | {exit} |\n",
            escape(&r.step.stage),
            format_duration_ms(r.duration_ms)
        ));
    }
}

/// At most 120 characters of a value, for a table cell.
fn clip(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

/// Escapes text for inline Markdown, table cells included: ASCII punctuation with a meaning
/// is backslash-escaped, line breaks become spaces, escape codes are dropped.
fn escape(text: &str) -> String {
    let text = strip_ansi(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '&' | '!' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Inline code that survives backticks and pipes: the delimiter is one backtick longer than
/// the longest run inside, and `|` is escaped (GitHub splits table cells before parsing
/// code spans).
fn code(text: &str) -> String {
    let text = strip_ansi(text).replace(['\n', '\t'], " ");
    if text.is_empty() {
        return String::new();
    }
    let ticks = "`".repeat(longest_backtick_run(&text) + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{}{pad}{ticks}", text.replace('|', "\\|"))
}

/// A fenced code block whose fence cannot be closed by its content.
fn fenced(md: &mut String, lang: &str, text: &str) {
    let fence = "`".repeat(longest_backtick_run(text).max(2) + 1);
    md.push_str(&format!("{fence}{lang}\n{text}\n{fence}\n"));
}

fn longest_backtick_run(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_inline_text() {
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(escape("*x* `y`\nz"), "\\*x\\* \\`y\\` z");
        assert_eq!(escape("<script>"), "\\<script\\>");
    }

    #[test]
    fn code_spans_survive_backticks_and_pipes() {
        assert_eq!(code("1.0.0"), "`1.0.0`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(code("a|b"), "`a\\|b`");
    }

    #[test]
    fn fences_are_longer_than_the_content_runs() {
        let mut md = String::new();
        fenced(&mut md, "text", "before\n````\nafter");
        assert_eq!(md, "`````text\nbefore\n````\nafter\n`````\n");
        let mut md = String::new();
        fenced(&mut md, "text", "plain");
        assert_eq!(md, "```text\nplain\n```\n");
    }
}
