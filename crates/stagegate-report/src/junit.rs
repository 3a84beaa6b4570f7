//! JUnit XML, for the test tab of CI systems.
//!
//! One `<testsuite>` per stage, in the order the stages ran, and one named `rollback` for
//! the rollback's steps. One `<testcase>` per step: its name is the step's name, its
//! classname `PROJECT.ENV.STAGE`, its time the step's duration. A failed, timed-out or
//! cancelled step carries a `<failure>` whose message is the step's error and whose text is
//! the tail of its output; a skipped step carries `<skipped>`. A check step sets the case's
//! `assertions` count and lists every assertion (expected, actual) in `<system-out>`; its
//! failure text starts with the failed ones.

use std::io::{self, Write};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use stagegate_engine::event::{Phase, StepResult, StepStatus};

use crate::collect::RunSummary;
use crate::format::strip_ansi;

/// The name of the suite that holds the rollback's steps.
pub const ROLLBACK_SUITE: &str = "rollback";

/// Writes the summary as a JUnit XML report.
pub fn write_junit(summary: &RunSummary, out: &mut dyn Write) -> io::Result<()> {
    let report = build_report(summary);
    report.serialize(&mut *out).map_err(io::Error::other)?;
    out.flush()
}

fn build_report(summary: &RunSummary) -> Report {
    let mut report = Report::new(format!(
        "stagegate {} {}",
        summary.project, summary.environment
    ));
    if let Some(ms) = summary.duration_ms {
        report.set_time(Duration::from_millis(ms));
    }

    // Suites in the order stages started; a step whose stage never announced itself still
    // gets a suite, after the others.
    let mut suites: Vec<TestSuite> = summary
        .stages
        .iter()
        .map(|s| new_suite(summary, s))
        .collect();
    let mut rollback: Option<TestSuite> = None;
    for step in &summary.steps {
        let suite = match step.step.phase {
            Phase::Rollback => rollback.get_or_insert_with(|| new_suite(summary, ROLLBACK_SUITE)),
            Phase::Run => {
                let i = match suites.iter().position(|s| s.name == *step.step.stage) {
                    Some(i) => i,
                    None => {
                        suites.push(new_suite(summary, &step.step.stage));
                        suites.len() - 1
                    }
                };
                &mut suites[i]
            }
        };
        let case = test_case(summary, &suite.name, step);
        let time = suite.time.unwrap_or_default() + case.time.unwrap_or_default();
        suite.set_time(time);
        suite.add_test_case(case);
    }
    if summary.rollback.is_some() && rollback.is_none() {
        // A rollback that had nothing to run still shows up, empty.
        rollback = Some(new_suite(summary, ROLLBACK_SUITE));
    }
    report.add_test_suites(suites);
    if let Some(rollback) = rollback {
        report.add_test_suite(rollback);
    }
    report
}

fn new_suite(summary: &RunSummary, name: &str) -> TestSuite {
    let mut suite = TestSuite::new(name);
    suite.set_time(Duration::ZERO);
    suite.add_property(("project", summary.project.as_str()));
    suite.add_property(("environment", summary.environment.as_str()));
    suite.add_property(("release", summary.release.version.as_str()));
    suite.add_property(("sha", summary.release.sha.as_str()));
    suite.add_property(("deployment_id", summary.deployment_id.to_string().as_str()));
    suite
}

fn test_case(summary: &RunSummary, suite: &str, r: &StepResult) -> TestCase {
    let status = match r.status {
        StepStatus::Passed => TestCaseStatus::success(),
        StepStatus::Skipped => {
            let mut status = TestCaseStatus::skipped();
            if let Some(reason) = &r.error {
                status.set_message(strip_ansi(reason));
            }
            status
        }
        StepStatus::Failed | StepStatus::TimedOut | StepStatus::Cancelled => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let message = match &r.error {
                Some(e) => strip_ansi(e),
                None => format!("step {}", crate::format::status_label(r.status)),
            };
            status.set_message(message);
            status.set_type(r.status.as_str());
            let mut description = String::new();
            for a in crate::checks::assertions(r).iter().filter(|a| !a.passed) {
                description.push_str(&format!("✗ {}\n", a.line()));
            }
            description.push_str(&strip_ansi(&r.output_tail));
            if !description.trim().is_empty() {
                status.set_description(description.trim_end());
            }
            status
        }
    };
    let mut case = TestCase::new(r.step.name.as_str(), status);
    case.set_classname(format!(
        "{}.{}.{}",
        summary.project, summary.environment, suite
    ));
    case.set_time(Duration::from_millis(r.duration_ms));
    case.add_property(("id", r.step.id.as_str()));
    case.add_property(("kind", r.step.kind.as_str()));
    if let Some(code) = r.exit_code {
        case.add_property(("exit_code", code.to_string().as_str()));
    }
    if r.attempts > 1 {
        case.add_property(("attempts", r.attempts.to_string().as_str()));
    }
    // A gate's evidence is its output: what it checked and found.
    if let Some(e) = crate::gate::evidence(r) {
        case.set_system_out(crate::gate::evidence_text(&e));
        if let Some(o) = &e.overridden {
            case.add_property(("overridden_by", o.by.as_str()));
            case.add_property(("override_reason", o.reason.as_str()));
        }
    }
    // A load test lists its figures and thresholds.
    if let Some(l) = crate::load::report(r) {
        let out: String = crate::load::lines(&l)
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        case.set_assertions(l.thresholds.len());
        case.set_system_out(strip_ansi(&out));
    }
    // A bake lists its measurements.
    if let Some(w) = crate::watch::summary(r) {
        let out: String = crate::watch::lines(w)
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        case.set_assertions(w.measurements.len());
        case.set_system_out(strip_ansi(&out));
    }
    // A migration: its backup, or what its rollback step undid.
    if let Some(m) = crate::migrate::record(r) {
        let out: String = crate::migrate::lines(m, None)
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        if !out.is_empty() {
            case.set_system_out(strip_ansi(&out));
        }
    }
    // A check lists its assertions: how many, and each with expected and actual.
    let assertions = crate::checks::assertions(r);
    if !assertions.is_empty() {
        case.set_assertions(assertions.len());
        let out: String = assertions
            .iter()
            .map(|a| format!("{} {}\n", crate::checks::mark(a.passed), a.line()))
            .collect();
        case.set_system_out(strip_ansi(&out));
    }
    case
}
