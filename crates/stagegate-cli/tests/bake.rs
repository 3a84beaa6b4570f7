//! Bakes (`watch` steps) end to end: the example plan `examples/bake` (seeds 000, 001 and
//! 002's monitoring) against the real staging-demo service and a real Prometheus (Debian's
//! `prometheus`, started per test on loopback, scraping every second). Each fault the
//! runbooks fear reaches its outcome: a clean release passes, a flapping one and a slowly
//! degrading one fail and are rolled back, one that stops exporting metrics is no data and
//! waits for a decision, and Prometheus going down mid-bake is an error limit. Nothing here
//! is mocked.

mod common;
mod prom;

use std::time::{Duration, Instant};

use common::{Out, Project, assert_not_stored, show_json, status_json, step};
use prom::Prometheus;

/// The token the plan sends to Prometheus (a secret: it must never show).
const TOKEN: &str = "prom-token-4f1c9e7d2b";

/// The bake example on its own service port, with its own Prometheus scraping that port.
struct Bake {
    p: Project,
    prom: Prometheus,
}

impl Bake {
    fn new() -> Bake {
        let port = prom::free_port();
        let prom = Prometheus::start(&[format!("127.0.0.1:{port}")]);
        let p = common::example("bake");
        let plan = p.read("stagegate.yml");
        assert!(plan.contains("port: 18180"), "the example's port changed");
        p.write(
            "stagegate.yml",
            &plan.replace("port: 18180", &format!("port: {port}")),
        );
        Bake { p, prom }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("PROMETHEUS_URL", self.prom.url.as_str()),
            ("PROM_TOKEN", TOKEN),
        ]
    }

    fn run(&self, args: &[&str]) -> Out {
        self.p.run_env(args, &self.env())
    }

    fn deploy(&self, version: &str, extra: &[&str]) -> Out {
        let mut args = vec!["deploy", "staging", "--release-version", version];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut c = self.p.cmd(args);
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("stagegate starts")
    }
}

impl Drop for Bake {
    fn drop(&mut self) {
        let _ = self.p.run(&["stop", "staging"]);
    }
}

/// No secret in the store, the logs, `show` or `history`.
fn assert_nowhere(b: &Bake, id: &str) {
    for cmd in [
        vec!["show", id],
        vec!["show", id, "--json"],
        vec!["history", "--json"],
    ] {
        b.run(&cmd).code(0).lacks(TOKEN);
    }
    assert!(assert_not_stored(&b.p, &[TOKEN]) > 0);
}

fn watch(show: &serde_json::Value) -> &serde_json::Value {
    &step(show, "bake")["details"]["watch"]
}

fn measurement<'a>(w: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    w["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no measurement {name}: {w:#}"))
}

fn current_release(b: &Bake) -> Option<String> {
    let s = status_json(&b.p, "staging");
    s["services"][0]["current"].as_str().map(str::to_string)
}

#[test]
fn a_clean_release_bakes_and_every_round_is_recorded_and_reported() {
    let b = Bake::new();
    let o = b.deploy(
        "1.0.0",
        &[
            "--report",
            "markdown=report.md",
            "--report",
            "junit=report.xml",
            "--report",
            "json=report.json",
        ],
    );
    o.code(0).stderr_has("succeeded");
    let show = show_json(&b.p, "1");
    let w = watch(&show);
    assert_eq!(w["verdict"], "pass", "{w:#}");
    let rounds = w["rounds"].as_u64().unwrap();
    assert!(rounds >= 10, "a 12 s window every 1 s: {rounds} rounds");
    for m in w["measurements"].as_array().unwrap() {
        assert_eq!(m["verdict"], "pass", "{m:#}");
        assert_eq!(m["samples"].as_u64(), Some(rounds), "{m:#}");
        assert_eq!(m["failed"], 0, "{m:#}");
    }
    // What each decision states: the query as sent, the condition, the value.
    let err = measurement(w, "seed 000/002: error rate");
    assert!(
        err["target"]
            .as_str()
            .unwrap()
            .contains(r#"http_requests_total{job="demo",status="5xx"}[5s]"#),
        "{err:#}"
    );
    assert!(err["target"].as_str().unwrap().contains(&b.prom.url));
    assert_eq!(
        err["condition"],
        "pass < 0.01; fail > 0.05; failing for 3s before it counts; no data is inconclusive"
    );
    assert_eq!(measurement(w, "seed 000: hub up")["last"], "1");
    // Every round is stored, with one sample per measurement, in the plan's order.
    let stored = show["measurement_rounds"].as_array().unwrap();
    assert_eq!(stored.len() as u64, rounds);
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r["round"].as_u64(), Some(i as u64 + 1));
        assert_eq!(r["samples"].as_array().unwrap().len(), 6, "{r}");
        assert_eq!(r["samples"][2]["value"], 1.0, "hub up is 1: {r}");
    }
    // The reports show the bake's table.
    let md = b.p.read("report.md");
    assert!(md.contains("### Bakes"), "{md}");
    assert!(md.contains("| seed 001: 5xx rate |"), "{md}");
    let junit = b.p.read("report.xml");
    assert!(junit.contains("[pass] seed 000: p95 latency"), "{junit}");
    let json = b.p.read("report.json");
    assert!(json.contains("\"measurements\""), "{json}");
    // `show` prints it too.
    b.run(&["show", "1"])
        .code(0)
        .stdout_has("bake pass: every measurement passed")
        .stdout_has("[pass] seed 000: hub up (prometheus min(erp_hub_up{job=\"demo\"})");
    b.run(&["audit", "verify"]).code(0);
    assert_nowhere(&b, "1");
    for text in [&o.stdout, &o.stderr, &md, &junit, &json] {
        assert!(!text.contains(TOKEN));
    }
}

#[test]
fn a_flapping_release_fails_the_bake_and_is_rolled_back() {
    let b = Bake::new();
    let o = b.deploy(
        "1.1.0",
        &["--var", "fault=flap", "--var", "fault_after_ms=1500"],
    );
    o.code(4)
        .stderr_has("`health` fail: status: expected 2xx (default), actual 503")
        .stderr_has("ROLLED BACK");
    let show = show_json(&b.p, "1");
    let w = watch(&show);
    assert_eq!(w["verdict"], "fail", "{w:#}");
    let health = measurement(w, "health");
    assert_eq!(health["verdict"], "fail", "{health:#}");
    assert!(health["failed"].as_u64().unwrap() >= 1);
    // It failed early, not at the end of the 12 s window.
    assert!(w["rounds"].as_u64().unwrap() < 10, "{w:#}");
    assert_eq!(show["deployment"]["outcome"], "rolled_back");
    assert_eq!(
        current_release(&b),
        None,
        "the flapping release was stopped"
    );
}

#[test]
fn a_slow_degradation_fails_once_sustained_and_the_previous_release_serves_again() {
    let b = Bake::new();
    b.deploy("1.0.0", &[]).code(0);
    let o = b.deploy("1.2.0", &["--var", "fault=errors-after"]);
    o.code(4).stderr_has("failing for 3s");
    let show = show_json(&b.p, "2");
    let w = watch(&show);
    assert_eq!(w["verdict"], "fail", "{w:#}");
    let err = measurement(w, "seed 000/002: error rate");
    assert_eq!(err["verdict"], "fail", "{err:#}");
    // The first samples passed (errors begin 5 s after the start), then the rate breached
    // for 3 s before it counted as a failure.
    assert!(err["passed"].as_u64().unwrap() >= 1, "{err:#}");
    assert!(err["breaching"].as_u64().unwrap() >= 2, "{err:#}");
    assert!(err["max"].as_f64().unwrap() > 0.05, "{err:#}");
    assert!(
        err["reason"].as_str().unwrap().contains("is > 0.05"),
        "{err:#}"
    );
    assert_eq!(measurement(w, "seed 001: 5xx rate")["verdict"], "fail");
    assert_eq!(measurement(w, "health")["verdict"], "pass");
    assert!(
        current_release(&b).is_some_and(|r| r.starts_with("1.0.0")),
        "1.0.0 serves again: {:#}",
        status_json(&b.p, "staging")
    );
}

#[test]
fn metrics_gone_is_no_data_inconclusive_and_a_decision_to_fail_rolls_back() {
    let b = Bake::new();
    let o = b.deploy(
        "1.3.0",
        &[
            "--var",
            "fault=metrics-stop-after",
            "--var",
            "fault_after_ms=4000",
        ],
    );
    o.code(7)
        .stderr_has("AWAITING DECISION")
        .stderr_has("no data: the query returned no series")
        .stderr_has("stagegate decide 1 --pass");
    let show = show_json(&b.p, "1");
    assert_eq!(show["deployment"]["outcome"], "awaiting_decision");
    let w = watch(&show);
    assert_eq!(w["verdict"], "inconclusive", "{w:#}");
    let up = measurement(w, "seed 000: hub up");
    assert!(up["no_data"].as_u64().unwrap() >= 3, "{up:#}");
    assert!(
        current_release(&b).is_some_and(|r| r.starts_with("1.3.0")),
        "the new release keeps running while it waits"
    );

    // Nothing else deploys while it waits.
    b.deploy("1.4.0", &[])
        .code(7)
        .stderr_has("deployment #1 of release 1.3.0 in `staging` awaits a decision")
        .stderr_has("nothing ran");
    // A decision needs a reason, and the step must be one that waits.
    b.run(&["decide", "1", "--fail", "--reason", "  "])
        .code(2)
        .stderr_has("--reason is empty");
    b.run(&["decide", "1", "--fail", "--reason", "x", "--step", "warm"])
        .code(2)
        .stderr_has("these do: bake");
    b.run(&["decide", "9", "--fail", "--reason", "x"])
        .code(2)
        .stderr_has("there is no deployment #9");

    // Fail it: a rollback run stops 1.3.0 (there was nothing before it).
    let reason = format!("no metrics at all; token {TOKEN} checked");
    let o = b.run(&[
        "decide", "1", "--fail", "--reason", &reason, "--as", "alice",
    ]);
    o.code(0)
        .stdout_has("deployment #1 rolled back")
        .stdout_has("decided failed by alice")
        .stdout_has("rolled back by deployment #2");
    let show = show_json(&b.p, "1");
    assert_eq!(show["deployment"]["outcome"], "rolled_back");
    let bake = step(&show, "bake");
    assert_eq!(bake["status"], "failed");
    let d = &bake["details"]["watch"]["decision"];
    assert_eq!(d["actor"], "alice");
    assert_eq!(d["pass"], false);
    assert!(!d["reason"].as_str().unwrap().contains(TOKEN), "{d}");
    assert_eq!(show_json(&b.p, "2")["deployment"]["kind"], "rollback");
    assert_eq!(current_release(&b), None);
    // Decided once; the record says by whom.
    b.run(&["decide", "1", "--pass", "--reason", "changed my mind"])
        .code(2)
        .stderr_has("does not wait for a decision: it was rolled back")
        .stderr_has("decided failed by alice");
    b.run(&["audit", "verify"]).code(0);
    assert_nowhere(&b, "1");
}

#[test]
fn a_decision_to_pass_finishes_the_deployment_with_its_release_running() {
    let b = Bake::new();
    b.deploy(
        "1.3.0",
        &[
            "--var",
            "fault=metrics-stop-after",
            "--var",
            "fault_after_ms=4000",
        ],
    )
    .code(7);
    b.run(&[
        "decide",
        "1",
        "--pass",
        "--reason",
        "exporter bug, app is fine",
        "--as",
        "bob",
    ])
    .code(0)
    .stdout_has("deployment #1 succeeded")
    .stdout_has("bob decided it passed: exporter bug, app is fine");
    let show = show_json(&b.p, "1");
    assert_eq!(show["deployment"]["outcome"], "succeeded");
    assert_eq!(step(&show, "bake")["status"], "passed");
    assert_eq!(watch(&show)["decision"]["actor"], "bob");
    assert!(current_release(&b).is_some_and(|r| r.starts_with("1.3.0")));
    b.run(&["audit", "verify"])
        .code(0)
        .stdout_has("1 deployments, 1 decisions and");
    // The decision is in the hash chain: editing it behind stagegate's back shows.
    common::tamper(&b.p, "UPDATE decisions SET pass = 0");
    b.run(&["audit", "verify"])
        .code(3)
        .stderr_has("the audit log is broken at the decision on step `bake` of deployment #1: it differs from audit record")
        .stderr_has("`pass` is false but was recorded as true");
}

#[test]
fn deploy_wait_decision_waits_for_decide_from_another_process_and_goes_on() {
    let b = Bake::new();
    let child = b.spawn(&[
        "deploy",
        "staging",
        "--release-version",
        "1.3.0",
        "--var",
        "fault=metrics-stop-after",
        "--var",
        "fault_after_ms=4000",
        "--wait-decision",
    ]);
    // Until the bake is inconclusive, there is nothing to decide.
    let start = Instant::now();
    loop {
        let o = b.run(&[
            "decide",
            "1",
            "--pass",
            "--reason",
            "looked at the app's logs",
            "--as",
            "carol",
        ]);
        if o.code == 0 {
            assert!(o.stdout.contains("the waiting deploy"), "{o:?}");
            break;
        }
        assert_eq!(o.code, 2, "{o:?}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the deploy never waited for a decision: {o:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("awaiting decision:"), "{stderr}");
    assert!(stderr.contains("carol decided"), "{stderr}");
    let show = show_json(&b.p, "1");
    assert_eq!(show["deployment"]["outcome"], "succeeded");
    let d = &watch(&show)["decision"];
    assert_eq!(d["actor"], "carol", "{show:#}");
    assert_eq!(d["reason"], "looked at the app's logs");
}

#[test]
fn prometheus_down_mid_bake_is_a_source_error_and_rolls_back() {
    let mut b = Bake::new();
    let child = b.spawn(&[
        "deploy",
        "staging",
        "--release-version",
        "1.4.0",
        "--events",
        "events.jsonl",
    ]);
    // Stop Prometheus once the bake has taken two rounds.
    let start = Instant::now();
    while b
        .p
        .read("events.jsonl")
        .matches("\"measurement_round\"")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the bake did not start:\n{}",
            b.p.read("events.jsonl")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.prom.stop();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("5 errors in a row (limit 4)"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    // The terminal says a source's error once per streak, not once a second.
    let lines = stderr
        .lines()
        .filter(|l| l.contains("` error: cannot reach Prometheus"))
        .count();
    assert_eq!(lines, 4, "one line per Prometheus measurement:\n{stderr}");
    let show = show_json(&b.p, "1");
    let w = watch(&show);
    assert_eq!(w["verdict"], "error", "{w:#}");
    let up = measurement(w, "seed 000: hub up");
    assert_eq!(up["errors"], 5, "{up:#}");
    assert_eq!(
        up["failed"], 0,
        "an error of the source is not a failure: {up:#}"
    );
    // The checks that do not need Prometheus went on passing.
    assert_eq!(measurement(w, "health")["verdict"], "pass");
    assert_eq!(show["deployment"]["outcome"], "rolled_back");
}

/// A plan of one-shot `prometheus` check steps against `url`.
fn check_plan(url: &str, checks: &str) -> String {
    format!(
        "project: p\nenvironments:\n  staging: {{}}\nvars:\n  prom: {url}\nstages:\n  verify:\n{checks}"
    )
}

#[test]
fn one_shot_prometheus_checks_pass_fail_and_say_no_data() {
    let prom = Prometheus::start(&[]);
    let pass = check_plan(
        &prom.url,
        r#"    - id: self-up
      prometheus: { url: "${{ vars.prom }}", query: 'up{job="self"}' }
      expect: "== 1"
    - id: labels
      prometheus: { url: "${{ vars.prom }}", query: 'up' }
      expect:
        labels: { job: self }
    - id: range
      prometheus: { url: "${{ vars.prom }}", query: 'up{job="self"}', range: 5s, step: 1s }
      expect: { value: ">= 1", series: 1 }
"#,
    );
    let p = Project::new(&pass);
    p.run(&["deploy", "staging"]).code(0);
    let show = show_json(&p, "1");
    let a = &step(&show, "self-up")["details"]["assertions"];
    assert!(a.to_string().contains("== 1"), "{a}");

    let fail = check_plan(
        &prom.url,
        r#"    - id: wrong
      prometheus: { url: "${{ vars.prom }}", query: 'up{job="self"}' }
      expect: "== 0"
"#,
    );
    Project::new(&fail)
        .run(&["deploy", "staging"])
        .code(3)
        .stderr_has("expected == 0, actual 1");

    let missing = check_plan(
        &prom.url,
        r#"    - id: missing
      prometheus: { url: "${{ vars.prom }}", query: 'no_such_metric_anywhere' }
      expect: "< 0.01"
"#,
    );
    Project::new(&missing)
        .run(&["deploy", "staging"])
        .code(3)
        .stderr_has("no data: the query returned no series");

    let bad = check_plan(
        &prom.url,
        r#"    - id: bad
      prometheus: { url: "${{ vars.prom }}", query: 'sum(' }
      expect: "== 1"
"#,
    );
    Project::new(&bad)
        .run(&["deploy", "staging"])
        .code(3)
        .stderr_has("bad_data");
}

#[test]
fn bad_watch_keys_are_refused_naming_the_line_and_what_to_write() {
    let p = Project::new(
        r#"project: p
environments:
  staging: {}
stages:
  bake:
    - watch:
        for: 1m
        every: 10ms
        failure_limt: 2
        no_data: maybe
        measure:
          - name: a
            prometheus: { url: "http://127.0.0.1:9", query: "up" }
          - name: c
            http: http://127.0.0.1:9/
            pass: "< 1"
"#,
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("`every` in `watch` in step 1 of stage `bake` is shorter than 100ms")
        .stderr_has("stagegate.yml:8:16")
        .stderr_has("did you mean `failure_limit`?")
        .stderr_has("write `no_data: inconclusive` (the default), `fail` or `pass`")
        .stderr_has("measurement 1 of `watch` in step 1 of stage `bake` has no condition")
        .stderr_has("`pass` applies to `prometheus` measurements");
}

#[test]
fn a_manual_rollback_instead_of_a_decision_finishes_the_waiting_deployment() {
    let b = Bake::new();
    b.deploy("1.0.0", &[]).code(0);
    b.deploy(
        "1.3.0",
        &[
            "--var",
            "fault=metrics-stop-after",
            "--var",
            "fault_after_ms=4000",
        ],
    )
    .code(7);
    b.run(&["rollback", "staging"])
        .code(0)
        .stderr_has("nobody decided: `stagegate rollback` (deployment #3) rolled it back");
    let show = show_json(&b.p, "2");
    assert_eq!(show["deployment"]["outcome"], "rolled_back");
    assert!(current_release(&b).is_some_and(|r| r.starts_with("1.0.0")));
    // Nothing waits any more: `decide` says so, and deploys go ahead.
    b.run(&["decide", "2", "--pass", "--reason", "late"])
        .code(2)
        .stderr_has("does not wait for a decision");
}

/// Two bakes of the demo's latency: one against the same query just before the deploy
/// (`baseline: before`, a relative condition), one comparing the bake's samples with the
/// last passing bake's (`baseline: last_pass`, Mann-Whitney).
const BASELINE_PLAN: &str = r#"project: baselines
vars:
  prom: "${{ env.PROMETHEUS_URL }}"
  fault: ""
environments:
  staging: {}
services:
  api:
    artifacts: [demo]
    start: ./demo
    port: PORT
    env: { DEMO_FAULT: "${{ vars.fault }}", DEMO_SLOW_MS: "60", DEMO_VERSION: "${{ release.version }}" }
    health: { path: /health, interval: 100ms, timeout: 10s }
stages:
  deploy:
    - deploy: api
  verify:
    # Until Prometheus has scraped the new release, its last `up` may be of the restart (0).
    - id: scraped
      prometheus:
        url: "${{ vars.prom }}"
        query: 'sum(demo_build_info{job="demo",version="${{ release.version }}"})'
      expect: "== 1"
      retry: { attempts: 60, interval: 250ms }
  bake:
    - id: vs-before
      watch:
        for: 3s
        every: 1s
        measure:
          - name: traffic
            command: curl -s -o /dev/null "${{ services.api.url }}/api/v1/config"
          - name: up vs before
            prometheus: { url: "${{ vars.prom }}", query: 'sum(up{job="demo"})' }
            baseline: before
            no_baseline: pass
            fail: "< -50% vs baseline"
    - id: vs-last-pass
      watch:
        for: 12s
        every: 500ms
        measure:
          - name: traffic
            command: curl -s -o /dev/null "${{ services.api.url }}/api/v1/config"
          - name: latency
            prometheus:
              url: "${{ vars.prom }}"
              query: 'sum(rate(http_request_duration_seconds_sum{job="demo"}[2s])) / sum(rate(http_request_duration_seconds_count{job="demo"}[2s]))'
            baseline: last_pass
            no_baseline: pass
            pass: "< 10"
            compare: { direction: increase, effect: 50% }
"#;

#[test]
fn baselines_before_the_deploy_and_of_the_last_pass_judge_a_slower_release() {
    let port = prom::free_port();
    let prom = Prometheus::start(&[format!("127.0.0.1:{port}")]);
    let p = Project::new(&BASELINE_PLAN.replace("PORT", &port.to_string()));
    std::fs::copy(common::staging_demo_bin(), p.path().join("demo")).unwrap();
    let env = [("PROMETHEUS_URL", prom.url.as_str())];
    p.run_env(&["validate"], &env).code(0);
    // Let Prometheus see the port down first, so `before` has a value for the first deploy.
    assert!(prom.wait_for_series(r#"up{job="demo"} == 0"#, Duration::from_secs(15)));

    // The first deploy: `up` was 0 before it, and there is no passing bake yet.
    let o = p.run_env(&["deploy", "staging", "--release-version", "1.0.0"], &env);
    o.code(0);
    let show = show_json(&p, "1");
    let before = &step(&show, "vs-before")["details"]["watch"]["measurements"][1];
    assert_eq!(before["baseline"]["from"], "before", "{before:#}");
    assert!(
        before["baseline"]["samples"].as_u64().unwrap() >= 1,
        "{before:#}"
    );
    assert_eq!(before["baseline"]["median"], 0.0, "{before:#}");
    let latency = &step(&show, "vs-last-pass")["details"]["watch"]["measurements"][1];
    assert!(
        latency["comparison"]
            .as_str()
            .unwrap()
            .contains("not compared: no baseline (no deployment of `staging` has passed step `vs-last-pass` yet)"),
        "{latency:#}"
    );

    // The second: 60 ms slower on every request. `before` is the first release (up 1);
    // the last passing bake's latency samples are its baseline, and it is far slower.
    let o = p.run_env(
        &[
            "deploy",
            "staging",
            "--release-version",
            "1.1.0",
            "--var",
            "fault=slow",
        ],
        &env,
    );
    o.code(4)
        .stderr_has("Mann-Whitney")
        .stderr_has("significantly higher");
    let show = show_json(&p, "2");
    let before = &step(&show, "vs-before")["details"]["watch"]["measurements"][1];
    assert_eq!(before["baseline"]["median"], 1.0, "{before:#}");
    assert_eq!(before["verdict"], "pass", "{before:#}");
    let w = &step(&show, "vs-last-pass")["details"]["watch"];
    assert_eq!(w["verdict"], "fail", "{w:#}");
    let latency = &w["measurements"][1];
    assert_eq!(latency["baseline"]["from"], "last_pass");
    assert!(
        latency["baseline"]["source"]
            .as_str()
            .unwrap()
            .starts_with("deployment #1's bake"),
        "{latency:#}"
    );
    let c = latency["comparison"].as_str().unwrap();
    assert!(c.contains("above the +50% floor"), "{c}");
    // Every sample passed its own condition: only the comparison failed it.
    assert_eq!(latency["failed"], 0, "{latency:#}");
    p.run_env(&["show", "2"], &env)
        .code(0)
        .stdout_has("baseline (last_pass): median")
        .stdout_has("compared: against deployment #1's bake");
    p.run_env(&["stop", "staging"], &env);
}

#[test]
fn prometheus_behind_basic_auth_lets_the_right_password_in_and_never_shows_it() {
    let prom = Prometheus::start_with_basic_auth(&[]);
    let plan = |password: &str| {
        check_plan(
            &prom.url,
            &format!(
                r#"    - id: self-up
      prometheus:
        url: "${{{{ vars.prom }}}}"
        query: 'up{{job="self"}}'
        auth: {{ basic: {{ user: {}, password: "{password}" }} }}
        timeout: 5s
      expect: "== 1"
"#,
                prom::BASIC_USER
            ),
        )
        .replace(
            "  staging: {}",
            "  staging:\n    secrets:\n      require: [PROM_PASSWORD]",
        )
    };
    let good = Project::new(&plan("${{ secrets.PROM_PASSWORD }}"));
    let o = good.run_env(
        &["deploy", "staging"],
        &[("PROM_PASSWORD", prom::BASIC_PASSWORD)],
    );
    o.code(0).lacks(prom::BASIC_PASSWORD);
    assert!(assert_not_stored(&good, &[prom::BASIC_PASSWORD]) > 0);
    good.run_env(&["show", "1", "--json"], &[])
        .code(0)
        .lacks(prom::BASIC_PASSWORD);

    // A wrong password is refused by Prometheus: an error of the source, with its status.
    let bad = Project::new(&plan("${{ secrets.PROM_PASSWORD }}"));
    bad.run_env(
        &["deploy", "staging"],
        &[("PROM_PASSWORD", "wrong-password-x")],
    )
    .code(3)
    .stderr_has("401")
    .lacks("wrong-password-x");
}

#[test]
fn interrupting_a_bake_rolls_back_like_any_failure() {
    let b = Bake::new();
    b.deploy("1.0.0", &[]).code(0);
    let child = b.spawn(&[
        "deploy",
        "staging",
        "--release-version",
        "1.1.0",
        "--events",
        "events.jsonl",
    ]);
    let start = Instant::now();
    while b
        .p
        .read("events.jsonl")
        .matches("\"measurement_round\"")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the bake did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let show = show_json(&b.p, "2");
    assert_eq!(watch(&show)["verdict"], "cancelled", "{show:#}");
    assert!(
        current_release(&b).is_some_and(|r| r.starts_with("1.0.0")),
        "1.0.0 serves again: {stderr}"
    );
}

#[test]
fn nobody_deciding_within_the_decision_timeout_fails_the_bake_and_rolls_back() {
    let b = Bake::new();
    let o = b.deploy(
        "1.3.0",
        &[
            "--var",
            "fault=metrics-stop-after",
            "--var",
            "fault_after_ms=4000",
            "--wait-decision",
            "--decision-timeout",
            "2s",
        ],
    );
    o.code(4)
        .stderr_has("nobody decided within 2s, so it counts as failed");
    let show = show_json(&b.p, "1");
    assert_eq!(watch(&show)["verdict"], "fail", "{show:#}");
    assert_eq!(show["deployment"]["outcome"], "rolled_back");
}

#[test]
fn a_breach_that_cannot_last_long_enough_and_a_window_shorter_than_every_are_refused() {
    let p = Project::new(
        r#"project: p
environments:
  staging: {}
stages:
  bake:
    - watch:
        for: 10s
        every: 2s
        measure:
          - name: a
            prometheus: { url: "http://127.0.0.1:9", query: "up" }
            fail: "< 1"
            sustained: 9s
    - watch:
        for: 10s
        measure:
          - name: b
            prometheus: { url: "http://127.0.0.1:9", query: "up" }
            pass: "== 1"
"#,
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("`sustained: 9s` in measurement 1 of `watch` in step 1 of stage `bake` can never be reached in the window `for: 10s` sampled `every: 2s`")
        .stderr_has("a breach lasts at most `for` minus `every` (8s)")
        .stderr_has("the window `for: 10s` in `watch` in step 2 of stage `bake` is shorter than the default `every: 30s`");
}
