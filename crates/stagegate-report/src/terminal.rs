//! [`TerminalReporter`]: a run's progress for people, as it happens.
//!
//! ```text
//! stagegate: deploying shop release 1.0.0 (sha 1234567) to staging [deployment #42]
//! == stage build
//!   ok      Build the app [build]  0.12s
//! == stage verify
//!   service web 1.0.0 healthy at http://127.0.0.1:40123 after 0.31s
//!   FAIL    Smoke test [smoke]  1.20s (exit 1)
//!           error: command exited with status 1
//!           | GET /health -> 500
//! == rollback: step `smoke` failed
//!   ok      Restore web 0.9.0 [restore-web]  0.40s
//! == rollback complete
//! stagegate: rolled back in 2.10s: ... (exit 4)
//! ```
//!
//! With [`TerminalStyle::live`], a `running: <step>…` line is drawn while a step runs and
//! erased (`\r` + `ESC[2K`) before the next line is printed. With [`TerminalStyle::color`],
//! marks and headers are colored with ANSI codes. With both off, the output is plain lines
//! without any escape code, and text that came from steps is stripped of its own.
//!
//! Write errors are ignored: losing the terminal must not stop a deployment.

use std::io::{IsTerminal, Write};

use stagegate_engine::event::{Event, Outcome, StepResult, StepStatus};
use stagegate_load::Verdict;

use crate::format::{format_duration_ms, last_lines, short_sha, strip_ansi};
use crate::gate::{LineKind, evidence_lines};

/// How many lines of a failed step's output the terminal shows.
const TAIL_LINES: usize = 15;

/// Column the text after a mark starts at: two spaces, a 7-wide mark and a space.
const INDENT: &str = "          ";

/// How the terminal output may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TerminalStyle {
    /// Color marks and headers with ANSI codes.
    pub color: bool,
    /// Redraw a "running: <step>…" line while a step runs (only on an interactive terminal).
    pub live: bool,
}

impl TerminalStyle {
    /// Plain lines: no color, no redrawn line.
    pub fn plain() -> Self {
        Self::default()
    }

    /// The usual choice for stderr: live and colored when stderr is a terminal, `TERM` is
    /// not `dumb` and `CI` is not set; no color when `NO_COLOR` is set.
    pub fn for_stderr() -> Self {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let tty = std::io::stderr().is_terminal()
            && env("TERM").is_none_or(|t| t.to_str() != Some("dumb"));
        Self {
            color: tty && env("NO_COLOR").is_none(),
            live: tty && env("CI").is_none(),
        }
    }
}

/// Writes a run's progress as human-readable lines.
pub struct TerminalReporter {
    out: Box<dyn Write + Send>,
    style: TerminalStyle,
    /// Whether a redrawable live line is on screen now.
    live_line: bool,
    /// The step running now, to redraw its live line after a retry line.
    running: Option<String>,
    /// When a progress line was last printed in plain mode (printed at most every 5 s).
    last_progress: Option<std::time::Instant>,
    /// The last source error shown per (watch step, measurement).
    last_errors: std::collections::HashMap<(String, String), String>,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[32m";
const BOLD_GREEN: &str = "\x1b[1;32m";
const YELLOW: &str = "\x1b[33m";
const BOLD_YELLOW: &str = "\x1b[1;33m";
const CYAN: &str = "\x1b[36m";

impl TerminalReporter {
    pub fn new(out: Box<dyn Write + Send>, style: TerminalStyle) -> Self {
        Self {
            out,
            style,
            live_line: false,
            running: None,
            last_progress: None,
            last_errors: Default::default(),
        }
    }

    /// Shows one event.
    pub fn on_event(&mut self, e: &Event) {
        self.render(e);
        let _ = self.out.flush();
    }

    /// Erases a live line left on screen and flushes. Call it when the run ends abruptly.
    pub fn finish(&mut self) {
        self.clear_live();
        let _ = self.out.flush();
    }

    /// A line that is not an event (a notice of the session): shown as is, below any live line.
    pub fn note(&mut self, text: &str) {
        self.clear_live();
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    fn render(&mut self, e: &Event) {
        match e {
            Event::RunStarted {
                deployment_id,
                project,
                environment,
                kind,
                release,
                ..
            } => {
                let sha = if release.sha.is_empty() {
                    String::new()
                } else {
                    format!(" (sha {})", short_sha(&release.sha))
                };
                let what = if kind == "check" {
                    format!(
                        "checking the gates of {project} release {}{sha} for {environment}",
                        release.version
                    )
                } else if kind == "rollback" {
                    format!(
                        "rolling back {project} to release {}{sha} in {environment}",
                        release.version
                    )
                } else {
                    format!(
                        "deploying {project} release {}{sha} to {environment}",
                        release.version
                    )
                };
                let line = format!(
                    "{}stagegate:{} {what} [deployment #{deployment_id}]",
                    self.c(BOLD),
                    self.r()
                );
                self.line(&line);
            }
            Event::StageStarted { stage } => {
                let line = format!("{}== stage {stage}{}", self.c(BOLD), self.r());
                self.line(&line);
            }
            Event::StepStarted { step, .. } => {
                self.running = Some(step.name.clone());
                self.draw_live();
            }
            Event::StepRetrying {
                step,
                attempt,
                attempts,
                error,
            } => {
                let line = format!(
                    "  {}{:<7}{} {}: attempt {attempt} of {attempts} failed: {}",
                    self.c(YELLOW),
                    "retry",
                    self.r(),
                    step.name,
                    self.clean(error).trim_end()
                );
                self.line(&line);
                self.draw_live();
            }
            Event::StepProgress {
                step,
                message,
                figures,
            } => {
                let text = self.clean(message);
                if self.style.live {
                    self.draw_live_text(&format!("{}: {}", step.name, text.trim_end()));
                } else {
                    // Figures at most every 5 s; other news (start, abort) at once.
                    let now = std::time::Instant::now();
                    let figures = *figures;
                    let due = self
                        .last_progress
                        .is_none_or(|t| now.duration_since(t).as_secs() >= 5);
                    if figures && due {
                        self.last_progress = Some(now);
                    }
                    if !figures || due {
                        let line = format!("{INDENT}{}", text.trim_end());
                        self.line(&line);
                    }
                }
            }
            Event::StepFinished(result) => {
                self.running = None;
                self.last_progress = None;
                self.step_finished(result);
            }
            Event::ServiceStarting {
                service,
                release,
                port,
                ..
            } => {
                if self.style.live {
                    let text = format!("starting: {service} {release} on port {port}…");
                    self.draw_live_text(&text);
                }
            }
            Event::ServiceHealthy {
                service,
                release,
                url,
                waited_ms,
            } => {
                let line = format!(
                    "  {}service{} {service} {release} healthy at {url} after {}",
                    self.c(CYAN),
                    self.r(),
                    format_duration_ms(*waited_ms)
                );
                self.line(&line);
                self.draw_live();
            }
            Event::ServiceRetired { service, release } => {
                let line = format!("  {}retired{} {service} {release}", self.c(DIM), self.r());
                self.line(&line);
                self.draw_live();
            }
            Event::DriverProgress { service, message } => {
                let line = format!(
                    "  {}service{} {service}: {}",
                    self.c(CYAN),
                    self.r(),
                    self.clean(message).trim_end()
                );
                self.line(&line);
                self.draw_live();
            }
            Event::RollbackStarted { reason, .. } => {
                let line = format!(
                    "{}== rollback: {}{}",
                    self.c(BOLD_YELLOW),
                    self.clean(reason).trim_end(),
                    self.r()
                );
                self.line(&line);
            }
            Event::RollbackFinished {
                ok,
                not_rolled_back,
            } => {
                let line = if *ok {
                    format!("{}== rollback complete{}", self.c(BOLD_GREEN), self.r())
                } else {
                    format!("{}== rollback FAILED{}", self.c(RED), self.r())
                };
                self.line(&line);
                if !not_rolled_back.is_empty() {
                    let line = format!("{}not rolled back:{}", self.c(RED), self.r());
                    self.line(&line);
                    for item in not_rolled_back {
                        let line = format!("  - {}", self.clean(item).trim_end());
                        self.line(&line);
                    }
                }
            }
            // Each sample is shown by its own `Measurement` event.
            Event::MeasurementRound { .. } => {}
            Event::Measurement {
                step,
                name,
                round,
                state,
                detail,
                ..
            } => {
                use stagegate_engine::watch::SampleState;
                // Failures and source errors as they happen; the rest is in the live line.
                // A source that keeps failing the same way is said once per streak.
                let key = (step.id.clone(), name.clone());
                let repeated = *state == SampleState::Error
                    && self.last_errors.get(&key).is_some_and(|d| d == detail);
                if *state == SampleState::Error {
                    self.last_errors.insert(key, detail.clone());
                } else {
                    self.last_errors.remove(&key);
                }
                if matches!(state, SampleState::Fail | SampleState::Error) && !repeated {
                    let line = format!(
                        "  {}{}{} {}: round {round}, `{name}` {}: {}",
                        self.c(YELLOW),
                        state.as_str(),
                        self.r(),
                        step.name,
                        state.as_str(),
                        self.clean(detail).trim_end()
                    );
                    self.line(&line);
                    self.draw_live();
                }
            }
            Event::DecisionPending {
                deployment_id,
                step,
                reason,
            } => {
                let line = format!(
                    "{}awaiting decision:{} {}: {}\n  decide with: stagegate decide {deployment_id} --pass|--fail --reason \"...\"",
                    self.c(BOLD_YELLOW),
                    self.r(),
                    step.name,
                    self.clean(reason).trim_end()
                );
                self.line(&line);
                self.draw_live();
            }
            Event::Decided {
                step,
                pass,
                actor,
                reason,
            } => {
                let line = format!(
                    "  {actor} decided `{}` {}: {}",
                    step.name,
                    if *pass { "passed" } else { "failed" },
                    self.clean(reason).trim_end()
                );
                self.line(&line);
                self.draw_live();
            }
            Event::Authorized(a) => {
                let line = format!(
                    "{}authorized:{} {}",
                    self.c(BOLD),
                    self.r(),
                    self.clean(&a.describe()).trim_end()
                );
                self.line(&line);
                self.draw_live();
            }
            Event::Warning { message } => {
                let line = format!(
                    "{}warning:{} {}",
                    self.c(BOLD_YELLOW),
                    self.r(),
                    self.clean(message).trim_end()
                );
                self.line(&line);
                self.draw_live();
            }
            Event::RunFinished {
                outcome,
                exit_code,
                duration_ms,
                summary,
                ..
            } => {
                self.running = None;
                let (color, label) = match outcome {
                    Outcome::Succeeded => (BOLD_GREEN, "succeeded"),
                    Outcome::Failed => (RED, "FAILED"),
                    Outcome::RolledBack => (BOLD_YELLOW, "ROLLED BACK"),
                    Outcome::RollbackFailed => (RED, "ROLLBACK FAILED"),
                    Outcome::Interrupted => (BOLD_YELLOW, "INTERRUPTED"),
                    Outcome::AwaitingDecision => (BOLD_YELLOW, "AWAITING DECISION"),
                };
                let summary = self.clean(summary);
                let summary = summary.trim();
                let summary = if summary.is_empty() {
                    String::new()
                } else {
                    format!(": {}", summary.replace('\n', " "))
                };
                let line = format!(
                    "{}stagegate: {label}{} in {}{summary} (exit {exit_code})",
                    self.c(color),
                    self.r(),
                    format_duration_ms(*duration_ms)
                );
                self.line(&line);
            }
        }
    }

    fn step_finished(&mut self, r: &StepResult) {
        let undecided = r
            .details
            .watch()
            .is_some_and(|w| w.verdict == "inconclusive" && w.decision.is_none());
        let (color, mark) = match r.status {
            StepStatus::Passed => (GREEN, "ok"),
            // An inconclusive bake has not failed: it waits for `stagegate decide`.
            StepStatus::Failed if undecided => (BOLD_YELLOW, "DECIDE"),
            StepStatus::Failed => (RED, "FAIL"),
            StepStatus::Skipped => (DIM, "skip"),
            StepStatus::TimedOut => (RED, "TIMEOUT"),
            StepStatus::Cancelled => (YELLOW, "cancel"),
        };
        let mut line = format!("  {}{mark:<7}{} {}", self.c(color), self.r(), r.step.name);
        if r.step.id != r.step.name {
            line.push_str(&format!(" [{}]", r.step.id));
        }
        if r.status != StepStatus::Skipped || r.duration_ms > 0 {
            line.push_str(&format!(
                "  {}{}{}",
                self.c(DIM),
                format_duration_ms(r.duration_ms),
                self.r()
            ));
        }
        let mut notes = Vec::new();
        if r.status.is_failure()
            && let Some(code) = r.exit_code.filter(|c| *c != 0)
        {
            notes.push(format!("exit {code}"));
        }
        if r.attempts > 1 {
            notes.push(format!("{} attempts", r.attempts));
        }
        if r.status == StepStatus::Passed
            && let Some(n) = crate::checks::note(r)
        {
            notes.push(n);
        }
        if !notes.is_empty() {
            line.push_str(&format!(" ({})", notes.join(", ")));
        }
        self.line(&line);

        // A gate shows its evidence whatever its outcome; its error's first line only
        // repeats the failed checks, so only the help under it follows.
        let gate = crate::gate::evidence(r);
        if let Some(e) = &gate {
            for l in evidence_lines(e) {
                let text = self.clean(&l.text);
                let line = match l.kind {
                    LineKind::Finding => {
                        format!(
                            "{INDENT}       {}-{} {}",
                            self.c(DIM),
                            self.r(),
                            text.trim_end()
                        )
                    }
                    kind => {
                        let color = match kind {
                            LineKind::Ok => GREEN,
                            LineKind::Failed => RED,
                            _ => BOLD_YELLOW,
                        };
                        format!(
                            "{INDENT}{}{:<6}{} {}",
                            self.c(color),
                            kind.mark(),
                            self.r(),
                            text.trim_end()
                        )
                    }
                };
                self.line(&line);
            }
        }

        // A migration shows its backup; its rollback steps what they undid.
        for l in crate::migrate::step_lines(r) {
            let line = format!("{INDENT}{}{}{}", self.c(DIM), self.clean(&l), self.r());
            self.line(&line);
        }

        // A load test shows its figures and every threshold, passing or not.
        let load = crate::load::report(r);
        if let Some(l) = &load {
            let line = format!(
                "{INDENT}{}{}{}",
                self.c(DIM),
                self.clean(&crate::load::summary_line(l)),
                self.r()
            );
            self.line(&line);
            for t in &l.thresholds {
                let color = match t.verdict {
                    Verdict::Pass => GREEN,
                    Verdict::NoBaseline => DIM,
                    Verdict::Fail | Verdict::NoData => RED,
                };
                let line = format!(
                    "{INDENT}{}{}{} {}: {}",
                    self.c(color),
                    t.mark(),
                    self.r(),
                    self.clean(&t.text),
                    self.clean(&t.message)
                );
                self.line(&line);
            }
            for n in crate::load::notes(l) {
                let line = format!("{INDENT}{}", self.clean(&n));
                self.line(&line);
            }
        }

        if r.status.is_failure() {
            let assertions = crate::checks::assertions(r);
            let headline = r.error.as_deref().and_then(crate::checks::error_headline);
            if let Some(head) = headline.filter(|_| assertions.iter().any(|a| !a.passed)) {
                // A check: its failed assertions, one per line, expected beside actual.
                let line = format!(
                    "{INDENT}{}error:{} {}",
                    self.c(RED),
                    self.r(),
                    self.clean(head)
                );
                self.line(&line);
                for a in assertions.iter().filter(|a| !a.passed) {
                    let line = format!(
                        "{INDENT}{}✗{} {}",
                        self.c(RED),
                        self.r(),
                        self.clean(&a.line())
                    );
                    self.line(&line);
                }
            } else if let Some(error) = &r.error {
                let error = self.clean(error);
                let skip = usize::from(gate.is_some());
                for (i, l) in error.trim_end().lines().enumerate().skip(skip) {
                    if skip == 1 {
                        let line = format!("{INDENT}{l}");
                        self.line(&line);
                        continue;
                    }
                    let line = if i == 0 {
                        format!("{INDENT}{}error:{} {l}", self.c(RED), self.r())
                    } else {
                        format!("{INDENT}       {l}")
                    };
                    self.line(&line);
                }
            }
            // A load test's tail is its report, shown above already.
            let tail = if load.is_some() {
                String::new()
            } else {
                self.clean(&r.output_tail)
            };
            for l in last_lines(&tail, TAIL_LINES) {
                let line = format!("{INDENT}{}|{} {l}", self.c(DIM), self.r());
                self.line(line.trim_end());
            }
        } else if r.status == StepStatus::Skipped
            && let Some(reason) = &r.error
        {
            let line = format!("{INDENT}{}", self.clean(reason).trim_end());
            self.line(&line);
        }
    }

    /// The color code, or nothing when colors are off.
    fn c(&self, code: &'static str) -> &'static str {
        if self.style.color { code } else { "" }
    }

    /// The reset code, or nothing when colors are off.
    fn r(&self) -> &'static str {
        self.c(RESET)
    }

    /// Text from outside (step output, errors): never let its escape codes through, and
    /// keep only newlines and tabs among control characters.
    fn clean(&self, text: &str) -> String {
        strip_ansi(text)
    }

    /// Prints one finished line, erasing a live line first.
    fn line(&mut self, text: &str) {
        self.clear_live();
        let _ = writeln!(self.out, "{text}");
    }

    fn clear_live(&mut self) {
        if self.live_line {
            let _ = write!(self.out, "\r\x1b[2K");
            self.live_line = false;
        }
    }

    /// Draws the live line for the running step, if any.
    fn draw_live(&mut self) {
        if !self.style.live {
            return;
        }
        if let Some(name) = self.running.clone() {
            self.draw_live_text(&format!("running: {name}…"));
        }
    }

    fn draw_live_text(&mut self, text: &str) {
        if !self.style.live {
            return;
        }
        let _ = write!(self.out, "\r\x1b[2K  {}{text}{}", self.c(DIM), self.r());
        self.live_line = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use stagegate_engine::event::{Phase, StepRef};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn step(name: &str, id: &str) -> StepRef {
        StepRef {
            seq: 1,
            phase: Phase::Run,
            stage: "build".into(),
            id: id.into(),
            name: name.into(),
            kind: "run".into(),
        }
    }

    fn render(style: TerminalStyle, events: &[Event]) -> String {
        let buf = Shared::default();
        let mut t = TerminalReporter::new(Box::new(buf.clone()), style);
        for e in events {
            t.on_event(e);
        }
        t.finish();
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    fn events() -> Vec<Event> {
        vec![
            Event::StepStarted {
                step: step("Build", "build"),
                at: 0,
            },
            Event::StepRetrying {
                step: step("Build", "build"),
                attempt: 1,
                attempts: 2,
                error: "\x1b[31mflaky\x1b[0m".into(),
            },
            Event::StepFinished(StepResult {
                step: step("Build", "build"),
                status: StepStatus::Passed,
                started_at: 0,
                duration_ms: 63_000,
                exit_code: Some(0),
                attempts: 2,
                output_tail: String::new(),
                error: None,
                outputs: Default::default(),
                details: Default::default(),
            }),
        ]
    }

    #[test]
    fn live_mode_redraws_and_erases_the_running_line() {
        let out = render(
            TerminalStyle {
                color: false,
                live: true,
            },
            &events(),
        );
        assert!(out.contains("\r\x1b[2K  running: Build…"), "{out:?}");
        // The retry line erases the live line, then the live line is drawn again.
        assert!(
            out.contains(
                "\r\x1b[2K  retry   Build: attempt 1 of 2 failed: flaky\n\r\x1b[2K  running: Build…"
            ),
            "{out:?}"
        );
        assert!(
            out.ends_with("\r\x1b[2K  ok      Build [build]  1m03s (2 attempts)\n"),
            "{out:?}"
        );
        assert!(
            !out.contains("\x1b[3"),
            "no colors when color is off: {out:?}"
        );
    }

    #[test]
    fn plain_mode_has_no_escape_codes_even_from_step_text() {
        let out = render(TerminalStyle::plain(), &events());
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(!out.contains("running:"), "{out:?}");
        assert_eq!(
            out,
            "  retry   Build: attempt 1 of 2 failed: flaky\n  ok      Build [build]  1m03s (2 attempts)\n"
        );
    }

    #[test]
    fn load_progress_is_a_live_line_or_a_plain_line_every_five_seconds() {
        let progress = |message: &str| Event::StepProgress {
            step: step("Load", "load"),
            message: message.into(),
            figures: message.starts_with("running"),
        };
        let events = [
            Event::StepStarted {
                step: step("Load", "load"),
                at: 0,
            },
            progress("starting: closed model, 10 users, 2 threads"),
            progress("running    1.0s  100 requests"),
            progress("running    2.0s  200 requests"),
        ];
        // Plain: the start line and the first progress line; the next comes 5 s later.
        let out = render(TerminalStyle::plain(), &events);
        assert_eq!(
            out,
            "          starting: closed model, 10 users, 2 threads\n          running    1.0s  100 requests\n"
        );
        // Live: each progress replaces the running line, which is erased at the end.
        let live = TerminalStyle {
            live: true,
            ..TerminalStyle::plain()
        };
        let out = render(live, &events);
        assert!(
            out.contains("\r\x1b[2K  Load: running    2.0s  200 requests"),
            "{out:?}"
        );
        assert!(out.ends_with("\r\x1b[2K"), "{out:?}");
    }

    #[test]
    fn color_mode_colors_the_mark() {
        let out = render(
            TerminalStyle {
                color: true,
                live: false,
            },
            &events(),
        );
        assert!(out.contains("\x1b[32mok     \x1b[0m Build"), "{out:?}");
        assert!(
            !out.contains("\x1b[2K"),
            "no redraws when live is off: {out:?}"
        );
    }
}
