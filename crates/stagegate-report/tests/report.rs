//! Every reporter fed the same realistic run: two stages, a passing step, a failing step
//! with an output tail, a rollback with one restore step, finished `rolled_back` (exit 4).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use stagegate_engine::event::{Event, Outcome, Phase, StepRef, StepResult, StepStatus};
use stagegate_plan::Release;
use stagegate_report::{
    JsonLinesReporter, RunSummary, TerminalReporter, TerminalStyle, write_json, write_junit,
    write_markdown,
};

const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

fn step(seq: u32, phase: Phase, stage: &str, id: &str, name: &str, kind: &str) -> StepRef {
    StepRef {
        seq,
        phase,
        stage: stage.into(),
        id: id.into(),
        name: name.into(),
        kind: kind.into(),
    }
}

fn finished(
    step: StepRef,
    status: StepStatus,
    duration_ms: u64,
    exit_code: Option<i32>,
    output_tail: &str,
    error: Option<&str>,
) -> Event {
    Event::StepFinished(StepResult {
        step,
        status,
        started_at: T0,
        duration_ms,
        exit_code,
        attempts: 1,
        output_tail: output_tail.into(),
        error: error.map(Into::into),
        outputs: BTreeMap::new(),
        details: Default::default(),
    })
}

fn run() -> Vec<Event> {
    let build = step(
        1,
        Phase::Run,
        "build",
        "build",
        "Build | package app",
        "run",
    );
    let deploy = step(
        2,
        Phase::Run,
        "release",
        "deploy-web",
        "deploy web",
        "deploy",
    );
    let smoke = step(3, Phase::Run, "release", "smoke", "Smoke test", "run");
    let restore = step(
        4,
        Phase::Rollback,
        "release",
        "restore-web",
        "Restore web 0.9.0",
        "restore-service",
    );
    vec![
        Event::RunStarted {
            deployment_id: 42,
            project: "shop".into(),
            environment: "staging".into(),
            kind: "deploy".into(),
            release: Release {
                version: "1.0.0-d3".into(),
                sha: "1234567890abcdef1234567890abcdef12345678".into(),
            },
            plan_hash: "feedface".into(),
            steps_total: 3,
            at: T0,
        },
        Event::StageStarted {
            stage: "build".into(),
        },
        Event::StepStarted {
            step: build.clone(),
            at: T0,
        },
        finished(build, StepStatus::Passed, 120, Some(0), "built\n", None),
        Event::StageStarted {
            stage: "release".into(),
        },
        Event::StepStarted {
            step: deploy.clone(),
            at: T0 + 200,
        },
        Event::ServiceStarting {
            service: "web".into(),
            release: "1.0.0-d3".into(),
            port: 40123,
            dir: "/tmp/releases/web/1.0.0-d3".into(),
        },
        Event::ServiceHealthy {
            service: "web".into(),
            release: "1.0.0-d3".into(),
            url: "http://127.0.0.1:40123".into(),
            waited_ms: 310,
        },
        finished(deploy, StepStatus::Passed, 900, None, "", None),
        Event::StepStarted {
            step: smoke.clone(),
            at: T0 + 1200,
        },
        finished(
            smoke,
            StepStatus::Failed,
            63_000,
            Some(1),
            "GET /health\nexpected 200, got 500 `boom`\n",
            Some("command exited with status 1"),
        ),
        Event::RollbackStarted {
            reason: "step smoke failed".into(),
            actions: 1,
        },
        Event::StepStarted {
            step: restore.clone(),
            at: T0 + 65_000,
        },
        finished(restore, StepStatus::Passed, 400, None, "", None),
        Event::RollbackFinished {
            ok: true,
            not_rolled_back: vec!["the database migration 0042 (no down step)".into()],
        },
        Event::Warning {
            message: "retired release 0.8.0 left on disk".into(),
        },
        Event::RunFinished {
            outcome: Outcome::RolledBack,
            exit_code: 4,
            duration_ms: 66_000,
            summary: "Smoke test failed; web is back on 0.9.0.".into(),
            at: T0 + 66_000,
        },
    ]
}

fn summary() -> RunSummary {
    RunSummary::from_events(&run())
}

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

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn terminal(style: TerminalStyle) -> String {
    let buf = Shared::default();
    let mut t = TerminalReporter::new(Box::new(buf.clone()), style);
    for e in &run() {
        t.on_event(e);
    }
    t.finish();
    buf.text()
}

#[test]
fn summary_folds_the_run() {
    let s = summary();
    assert_eq!(s.deployment_id, 42);
    assert_eq!(s.project, "shop");
    assert_eq!(s.stages, ["build", "release"]);
    assert_eq!(s.steps.len(), 4);
    assert_eq!(s.run_steps().count(), 3);
    assert_eq!(s.rollback_steps().count(), 1);
    assert_eq!(
        s.failed_steps()
            .map(|r| r.step.id.as_str())
            .collect::<Vec<_>>(),
        ["smoke"]
    );
    assert_eq!(s.outcome, Some(Outcome::RolledBack));
    assert_eq!(s.exit_code, Some(4));
    let rb = s.rollback.as_ref().unwrap();
    assert_eq!(rb.reason, "step smoke failed");
    assert_eq!(rb.ok, Some(true));
    assert_eq!(rb.not_rolled_back.len(), 1);
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.services[0].url, "http://127.0.0.1:40123");
    assert_eq!(s.warnings, ["retired release 0.8.0 left on disk"]);
}

#[test]
fn terminal_plain() {
    let out = terminal(TerminalStyle::plain());
    assert!(!out.contains('\x1b'), "escape code in plain output:\n{out}");
    assert!(
        !out.contains('\r'),
        "carriage return in plain output:\n{out}"
    );
    let expected = "\
stagegate: deploying shop release 1.0.0-d3 (sha 1234567) to staging [deployment #42]
== stage build
  ok      Build | package app [build]  0.12s
== stage release
  service web 1.0.0-d3 healthy at http://127.0.0.1:40123 after 0.31s
  ok      deploy web [deploy-web]  0.90s
  FAIL    Smoke test [smoke]  1m03s (exit 1)
          error: command exited with status 1
          | GET /health
          | expected 200, got 500 `boom`
== rollback: step smoke failed
  ok      Restore web 0.9.0 [restore-web]  0.40s
== rollback complete
not rolled back:
  - the database migration 0042 (no down step)
warning: retired release 0.8.0 left on disk
stagegate: ROLLED BACK in 1m06s: Smoke test failed; web is back on 0.9.0. (exit 4)
";
    assert_eq!(out, expected);
}

#[test]
fn terminal_live_and_color() {
    let out = terminal(TerminalStyle {
        color: true,
        live: true,
    });
    assert!(out.contains("running: Smoke test…"), "{out:?}");
    assert!(
        out.contains("starting: web 1.0.0-d3 on port 40123…"),
        "{out:?}"
    );
    assert!(
        out.contains("\x1b[1;31mFAIL   \x1b[0m Smoke test"),
        "{out:?}"
    );
    // Every live line is erased before the next line; none is left at the end.
    assert!(out.ends_with("(exit 4)\n"), "{out:?}");
    let plain_lines = terminal(TerminalStyle::plain()).lines().count();
    assert_eq!(out.lines().count(), plain_lines, "{out:?}");
}

#[test]
fn json_round_trips() {
    let mut buf = Vec::new();
    write_json(&summary(), &mut buf).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(v["outcome"], "rolled_back");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["deployment_id"], 42);
    assert_eq!(v["release"]["version"], "1.0.0-d3");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[2]["step"]["id"], "smoke");
    assert_eq!(steps[2]["status"], "failed");
    assert_eq!(steps[2]["error"], "command exited with status 1");
    assert_eq!(steps[3]["step"]["phase"], "rollback");
    assert_eq!(v["rollback"]["ok"], true);
    assert_eq!(v["services"][0]["service"], "web");
    // Pretty: more than one line.
    assert!(buf.iter().filter(|b| **b == b'\n').count() > 10);
}

#[test]
fn json_lines_stream_every_event() {
    let buf = Shared::default();
    let mut r = JsonLinesReporter::new(Box::new(buf.clone()));
    let events = run();
    for e in &events {
        r.on_event(e).unwrap();
    }
    let text = buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    for (line, e) in lines.iter().zip(&events) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"], e.kind());
    }
}

fn attr<'a>(xml: &'a str, element_start: &str, name: &str) -> &'a str {
    let at = xml
        .find(element_start)
        .unwrap_or_else(|| panic!("no {element_start} in\n{xml}"));
    let element = &xml[at..at + xml[at..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    let start = element
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        + key.len();
    &element[start..start + element[start..].find('"').unwrap()]
}

#[test]
fn junit_has_suites_cases_and_failure() {
    let mut buf = Vec::new();
    write_junit(&summary(), &mut buf).unwrap();
    let xml = String::from_utf8(buf).unwrap();

    assert_eq!(attr(&xml, "<testsuites", "tests"), "4", "{xml}");
    assert_eq!(attr(&xml, "<testsuites", "failures"), "1", "{xml}");
    assert_eq!(
        attr(&xml, "<testsuite name=\"build\"", "tests"),
        "1",
        "{xml}"
    );
    assert_eq!(
        attr(&xml, "<testsuite name=\"release\"", "tests"),
        "2",
        "{xml}"
    );
    assert_eq!(
        attr(&xml, "<testsuite name=\"release\"", "failures"),
        "1",
        "{xml}"
    );
    assert_eq!(
        attr(&xml, "<testsuite name=\"rollback\"", "tests"),
        "1",
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");

    assert_eq!(
        attr(&xml, "<testcase name=\"Smoke test\"", "classname"),
        "shop.staging.release"
    );
    assert_eq!(
        attr(&xml, "<testcase name=\"Smoke test\"", "time"),
        "63.000"
    );
    assert_eq!(
        attr(&xml, "<testcase name=\"Restore web 0.9.0\"", "classname"),
        "shop.staging.rollback"
    );
    assert_eq!(
        attr(&xml, "<failure", "message"),
        "command exited with status 1"
    );
    assert_eq!(attr(&xml, "<failure", "type"), "failed");
    assert!(xml.contains("expected 200, got 500 `boom`"), "{xml}");

    // It parses back.
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(report.tests, 4);
    assert_eq!(report.test_suites.len(), 3);
}

#[test]
fn junit_marks_skipped_steps() {
    let mut s = summary();
    s.steps[1].status = StepStatus::Skipped;
    s.steps[1].error = Some("condition `false` is false".into());
    let mut buf = Vec::new();
    write_junit(&s, &mut buf).unwrap();
    let xml = String::from_utf8(buf).unwrap();
    assert_eq!(attr(&xml, "<testsuites", "skipped"), "1", "{xml}");
    assert_eq!(
        attr(&xml, "<skipped", "message"),
        "condition `false` is false",
        "{xml}"
    );
}

#[test]
fn markdown_summary() {
    let mut buf = Vec::new();
    write_markdown(&summary(), &mut buf).unwrap();
    let md = String::from_utf8(buf).unwrap();

    assert!(
        md.starts_with("## ❌ Deployment of shop 1.0.0-d3 to staging failed and was rolled back\n"),
        "{md}"
    );
    assert!(
        md.contains("| Release | `1.0.0-d3` (sha `1234567`) |"),
        "{md}"
    );
    assert!(md.contains("| Deployment | #42 |"), "{md}");
    assert!(md.contains("| Duration | 1m06s |"), "{md}");
    assert!(
        md.contains("| Outcome | **rolled back** (exit 4) |"),
        "{md}"
    );
    // The pipe in the step name is escaped, so the row keeps its five cells.
    assert!(
        md.contains("| build | Build \\| package app (`build`) | passed | 0.12s | 0 |"),
        "{md}"
    );
    assert!(!md.contains("Build | package"), "{md}");
    assert!(
        md.contains("| release | Smoke test (`smoke`) | **failed** | 1m03s | 1 |"),
        "{md}"
    );
    // The failure section has the error and the tail in a fence.
    assert!(md.contains("### ❌ Smoke test (release, failed)"), "{md}");
    assert!(
        md.contains("**Error:** command exited with status 1"),
        "{md}"
    );
    assert!(
        md.contains("```text\nGET /health\nexpected 200, got 500 `boom`\n```\n"),
        "{md}"
    );
    // The rollback.
    assert!(md.contains("### Rollback"), "{md}");
    assert!(md.contains("**Reason:** step smoke failed"), "{md}");
    assert!(
        md.contains("| release | Restore web 0.9.0 (`restore-web`) | passed | 0.40s | – |"),
        "{md}"
    );
    assert!(
        md.contains("**Not rolled back:**\n\n- the database migration 0042 (no down step)"),
        "{md}"
    );
    assert!(md.contains("- retired release 0.8.0 left on disk"), "{md}");
}

#[test]
fn html_report_is_self_contained_and_charts_a_bake() {
    use stagegate_engine::details::StepDetails;
    use stagegate_engine::event::RoundSample;
    use stagegate_engine::watch::{MeasurementSummary, SampleState, WatchDetails, WatchSummary};
    let mut events = run();
    let finish = events.pop().unwrap();
    let watch = step(9, Phase::Run, "verify", "bake", "Bake <prod>", "watch");
    for (round, v) in [(1, 0.01), (2, 0.04), (3, 0.02)] {
        events.push(Event::MeasurementRound {
            step_id: "bake".into(),
            round,
            at: T0 + round as i64 * 1000,
            samples: vec![RoundSample {
                state: SampleState::Pass,
                value: Some(v),
                detail: None,
            }],
        });
    }
    let Event::StepFinished(mut r) = finished(watch, StepStatus::Passed, 3000, None, "", None)
    else {
        unreachable!()
    };
    r.details = StepDetails::Watch(Box::new(WatchDetails {
        watch: WatchSummary {
            verdict: "pass".into(),
            reason: "every sample passed".into(),
            measurements: vec![MeasurementSummary {
                name: "error_rate".into(),
                verdict: "pass".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    }));
    events.push(Event::StepFinished(r));
    events.push(finish);
    let mut buf = Vec::new();
    stagegate_report::write_html(&RunSummary::from_events(&events), &mut buf).unwrap();
    let html = String::from_utf8(buf).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for want in [
        "Build | package app",
        "Bake &lt;prod&gt;",
        "<h2>Bakes</h2>",
        "<svg ",
        "aria-label=\"error_rate\"",
        "round 2: 0.04",
        "<h2>Rollback</h2>",
    ] {
        assert!(html.contains(want), "{want} missing:\n{html}");
    }
    // Text may name a URL (a service's); nothing may load one.
    for bad in ["<link", "<script", "src=", "href=", "url("] {
        assert!(!html.contains(bad), "{bad} in:\n{html}");
    }
}
