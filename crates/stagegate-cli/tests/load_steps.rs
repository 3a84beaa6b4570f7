//! Load steps through the real binary against the real staging-demo service on loopback:
//! the seed 000, 001 and 002 example plan passes on a good release; a slow release fails its
//! latency SLO and a leaking one its isolation rule, and both are rolled back to the good
//! release; thresholds compare with the last passing run in the store; secrets stay out of
//! every output; bad load steps are validation errors at their place.

mod common;

use common::{Project, example, show_json, status_json, step};

const ADMIN_PASSWORD: &str = "pw-L0ad-admin-unique-5521";

fn deploy(p: &Project, version: &str, extra: &[&str]) -> common::Out {
    let mut args = vec!["deploy", "staging", "--release-version", version];
    args.extend_from_slice(extra);
    p.run_env(&args, &[("DEMO_ADMIN_PASSWORD", ADMIN_PASSWORD)])
}

fn last_id(p: &Project) -> String {
    let o = p.run(&["history", "staging", "--json"]);
    o.code(0);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v[0]["id"].to_string()
}

/// The release the service runs now (`1.0.0-d1`: version and deployment).
fn running_version(p: &Project) -> String {
    let s = status_json(p, "staging");
    let current = s["services"][0]["current"].as_str().unwrap_or_default();
    current.split("-d").next().unwrap_or_default().to_string()
}

/// The thresholds a load step recorded, as (text, verdict).
fn thresholds(show: &serde_json::Value, id: &str) -> Vec<(String, String)> {
    step(show, id)["details"]["load"]["thresholds"]
        .as_array()
        .unwrap_or_else(|| panic!("no thresholds for {id}"))
        .iter()
        .map(|t| {
            (
                t["text"].as_str().unwrap().to_string(),
                t["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_seed_load_tests_pass_then_a_slow_and_a_leaking_release_are_rolled_back() {
    let p = example("load");

    // 1. A good release: every load test passes, each threshold with its value.
    let o = deploy(&p, "1.0.0", &[]);
    o.code(0)
        .stderr_has("seed 000: 100 downloads, 10 at a time")
        .stderr_has("✓ p95 < 2s")
        .stderr_has("✓ isolation_violations == 0")
        .stderr_has("- p95 <= +200% vs last_pass")
        .lacks(ADMIN_PASSWORD);
    let first = last_id(&p);
    let show = show_json(&p, &first);
    let downloads = &step(&show, "load-downloads")["details"]["load"];
    assert_eq!(downloads["summary"]["requests"], 100, "{downloads:#}");
    assert_eq!(downloads["summary"]["failed"], 0, "{downloads:#}");
    assert_eq!(downloads["concurrency"], 10);
    let iso = &step(&show, "load-isolation")["details"]["load"];
    assert_eq!(iso["summary"]["isolation_violations"], 0, "{iso:#}");
    let names: Vec<&str> = iso["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["threads", "login"], "{iso:#}");
    // Each of the 150 users logs in once, with its own row.
    assert_eq!(iso["requests"][1]["requests"], 150, "{iso:#}");
    assert_eq!(iso["requests"][1]["setup"], true, "{iso:#}");
    let config = thresholds(&show, "load-config");
    assert!(!config.is_empty(), "load-config recorded no threshold");
    assert!(
        config
            .iter()
            .all(|(t, v)| v == "pass" || (t.contains("last_pass") && v == "no_baseline")),
        "{config:?}"
    );

    // 2. A slow release: seed 001's latency SLOs fail, compared with 1.0.0 too; rolled back.
    let o = deploy(&p, "1.1.0", &["--var", "fault=slow"]);
    o.code(4)
        .stderr_has("✗ p50 < 100ms")
        .stderr_has("✗ p95 <= +200% vs last_pass")
        .stderr_has("SLO thresholds failed")
        .lacks(ADMIN_PASSWORD);
    assert_eq!(running_version(&p), "1.0.0");
    let show = show_json(&p, &last_id(&p));
    let t = thresholds(&show, "load-config");
    assert!(
        t.contains(&("p50 < 100ms".to_string(), "fail".to_string())),
        "{t:?}"
    );
    assert!(
        t.contains(&("p95 <= +200% vs last_pass".to_string(), "fail".to_string())),
        "the baseline is 1.0.0's run: {t:?}"
    );

    // 3. A release that leaks one user's data to another: isolation fails; rolled back.
    let o = deploy(
        &p,
        "1.2.0",
        &[
            "--var",
            "fault=leak-threads",
            "--report",
            "markdown=out/report.md",
            "--report",
            "junit=out/junit.xml",
        ],
    );
    o.code(4)
        .stderr_has("✗ isolation_violations == 0")
        .stderr_has("isolation: the user of row")
        .lacks(ADMIN_PASSWORD);
    assert_eq!(running_version(&p), "1.0.0");
    let show = show_json(&p, &last_id(&p));
    let iso = &step(&show, "load-isolation")["details"]["load"]["summary"];
    assert!(iso["isolation_violations"].as_u64().unwrap() > 0, "{iso:#}");
    // The reports show every threshold of every load test, with its value.
    let md = p.read("out/report.md");
    assert!(md.contains("### Load tests"), "{md}");
    assert!(
        md.contains("| `isolation_violations == 0` |") && md.contains("❌"),
        "{md}"
    );
    assert!(md.contains("| `p95 < 2s` |"), "{md}");
    let junit = p.read("out/junit.xml");
    assert!(junit.contains("✗ isolation_violations == 0:"), "{junit}");
    assert!(
        junit.contains("✓ p95[login] &lt; 2s:") || junit.contains("✓ p95[login] < 2s:"),
        "{junit}"
    );
    let example = iso["isolation_example"]["detail"].as_str().unwrap();
    let (own, got) = isolation_ids(example)
        .unwrap_or_else(|| panic!("names the user's and the other user's id: {example}"));
    assert_ne!(own, got, "the value belongs to another user: {example}");

    // The admin password and the captured admin token (a JWT, `eyJ...`), which every
    // download of the load test sent, are in no stored byte: the store (and its WAL), the
    // step logs and the release metadata.
    common::assert_not_stored(&p, &[ADMIN_PASSWORD, "eyJ"]);
}

/// The two user ids of an isolation example: "(`id` = u012) got `u010`" gives (12, 10).
fn isolation_ids(detail: &str) -> Option<(u32, u32)> {
    let id = |s: &str| {
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let rest = detail.split_once("(`id` = u")?.1;
    let (own, rest) = rest.split_once(") got `u")?;
    let got = rest.split_once('`')?.0;
    Some((id(own)?, id(got)?))
}

fn plan(stages: &str) -> String {
    format!("project: t\nenvironments:\n  staging: {{}}\nstages:\n{stages}")
}

#[test]
fn bad_load_steps_are_validation_errors_at_their_place() {
    let p = Project::new(&plan(
        r#"  load:
    - id: a
      load:
        vus: 10
        rate: 100/s
        duration: 1s
        check: nope
    - id: b
      load:
        vus: 5
        scenario:
          - name: x
            http: http://127.0.0.1:1/
        slo: ["p95 < fast", "p95[y] < 1s"]
    - id: c
      load:
        vus: 2
        requests: 10
        scenario:
          - http: "http://127.0.0.1:1/u/${{ vu.id }}"
          - http: "http://127.0.0.1:1/"
        isolation: [id]
    - id: d
      run: echo ${{ vu.id }}
    - id: e
      retries: 2
      load:
        rate: 10/s
        duration: 1s
        ramp: [{ target: fast, duration: 1s }, { duration: 1s }]
        scenario:
          - name: up
            http: { url: "http://127.0.0.1:1/", save: out.bin }
            retry: { attempts: 3, interval: 1s }
"#,
    ));
    let o = p.run(&["validate"]);
    o.code(2)
        .stderr_has("has both `rate` (open model) and `vus` (closed model)")
        .stderr_has("uses unknown check `nope`")
        .stderr_has("says neither how many requests nor for how long")
        .stderr_has("`slo` in `load` in")
        .stderr_has("names request `y`, which this load step does not send")
        .stderr_has("has an `isolation` rule but no `users` file")
        .stderr_has("uses `vu.id`, which no users file or capture provides")
        .stderr_has("`vu.id` is only known in the requests of a load step")
        .stderr_has("`retries` does not apply to a load step")
        .stderr_has("each iteration of this scenario sends 2")
        .stderr_has("`target` in `ramp` in")
        .stderr_has("has no `target`")
        .stderr_has("cannot be load-tested: it saves its body to a file")
        .stderr_has("cannot be load-tested: it polls or repeats")
        .stderr_has("stagegate.yml:");
}

#[test]
fn an_abort_rule_stops_a_failing_load_test_early_and_fails_the_step() {
    // Nothing listens on this port: every request is a connect error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Project::new(&plan(&format!(
        r#"  load:
    - id: l
      load:
        vus: 2
        duration: 30s
        scenario:
          - name: root
            http: http://127.0.0.1:{port}/
        slo: ["error_rate < 1%"]
        abort: ["error_rate > 50% over 1s"]
"#
    )));
    let o = p.run(&["deploy", "staging"]);
    o.code(3).stderr_has("the load test was aborted");
    let show = show_json(&p, "1");
    let load = &step(&show, "l")["details"]["load"];
    let aborted = load["aborted"].as_str().unwrap_or_default();
    assert!(aborted.contains("error_rate > 50% over 1s"), "{load:#}");
    let ran = load["duration_s"].as_f64().unwrap();
    assert!(
        ran < 30.0,
        "the abort rule stopped a 30 s run early: ran {ran} s"
    );
}

/// A plan that deploys the staging demo (with `fault`) and runs `stages` after it.
fn demo_plan(fault: &str, stages: &str) -> Project {
    let p = Project::new(&format!(
        r#"project: t
environments:
  staging: {{}}
services:
  api:
    driver: local
    build: test -x build/staging-demo
    artifacts: [build/staging-demo]
    start: ./build/staging-demo
    env: {{ DEMO_FAULT: "{fault}", DEMO_SLOW_MS: "300" }}
    health: {{ path: /health, interval: 100ms, timeout: 10s }}
stages:
  deploy:
    - deploy: api
{stages}"#
    ));
    std::fs::create_dir_all(p.path().join("build")).unwrap();
    std::fs::copy(
        common::staging_demo_bin(),
        p.path().join("build/staging-demo"),
    )
    .unwrap();
    p.write(
        "users.json",
        // Nicknames with quotes and a backslash: inserted into JSON bodies, escaped.
        r#"[{"id": "u001", "email": "u001@demo.test", "password": "pass-u001", "nick": "Ann \"A\""},
            {"id": "u002", "email": "u002@demo.test", "password": "pass-u002", "nick": "back\\slash"},
            {"id": "u003", "email": "u003@demo.test", "password": "pass-u003", "nick": "plain"}]"#,
    );
    p
}

#[test]
fn a_scenario_captures_per_user_and_each_user_keeps_its_own_cookies() {
    let p = demo_plan(
        "",
        r#"  load:
    # Each user logs in (its own cookie jar, on by default, keeps the session), creates a
    # thread and reads it back by the id it captured: the thread must be the user's own.
    - id: create-and-read
      load:
        vus: 3
        iterations: 30
        users: users.json
        setup:
          - name: login
            http:
              method: POST
              url: "${{ services.api.url }}/api/session"
              json: { email: "${{ vu.email }}", password: "${{ vu.password }}" }
        scenario:
          - name: create
            http:
              method: POST
              url: "${{ services.api.url }}/api/threads"
              json: { title: "load test of ${{ vu.id }} by ${{ vu.nick }}" }
            expect: { status: 201, json: { "$.owner": "${{ vu.id }}" } }
            capture: { thread: "$.id" }
          - name: read
            http: "${{ services.api.url }}/api/threads/${{ vu.thread }}"
            expect:
              status: 200
              json:
                "$.owner": "${{ vu.id }}"
                "$.title": { contains: "${{ vu.id }}" }
        isolation: [id]
        slo: ["errors == 0", "checks == 100%", "isolation_violations == 0", "requests[read] == 30"]
"#,
    );
    let o = p.run(&["deploy", "staging"]);
    o.code(0).stderr_has("✓ checks == 100%");
    let show = show_json(&p, "1");
    let load = &step(&show, "create-and-read")["details"]["load"];
    let names: Vec<(&str, u64)> = load["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["requests"].as_u64().unwrap()))
        .collect();
    // 30 iterations of create then read, and one login per user.
    assert_eq!(
        names,
        [("create", 30), ("read", 30), ("login", 3)],
        "{load:#}"
    );
}

#[test]
fn with_cookies_off_a_user_is_not_logged_in() {
    // With `cookies: false`, the session cookie the login set is not sent back: every read is
    // a 401, the default status check fails, and the deploy is rolled back.
    let p = demo_plan(
        "",
        r#"  load:
    - id: read
      load:
        vus: 2
        requests: 10
        users: users.json
        cookies: false
        setup:
          - name: login
            http:
              method: POST
              url: "${{ services.api.url }}/api/session"
              json: { email: "${{ vu.email }}", password: "${{ vu.password }}" }
        scenario:
          - name: threads
            http: "${{ services.api.url }}/api/threads"
        slo: ["checks == 100%"]
"#,
    );
    let o = p.run(&["deploy", "staging"]);
    o.code(4)
        .stderr_has("✗ checks == 100%")
        .stderr_has("expected 2xx (default), actual 401");
}

#[test]
fn a_ramp_moves_the_number_of_users_and_sets_the_length() {
    let p = demo_plan(
        "",
        r#"  load:
    # From 1 user to 6 over 1 s, then 6 users for 1 s: the ramp is the test's length.
    - id: ramp
      load:
        vus: 1
        ramp:
          - { target: 6, duration: 1s }
          - { target: 6, duration: 1s }
        scenario:
          - name: health
            http: "${{ services.api.url }}/health"
        slo: ["errors == 0"]
"#,
    );
    p.run(&["deploy", "staging"]).code(0);
    let show = show_json(&p, "1");
    let load = &step(&show, "ramp")["details"]["load"];
    let ran = load["duration_s"].as_f64().unwrap();
    assert!(ran >= 1.9, "the ramp lasts 2 s: {ran} {load:#}");
    assert_eq!(load["concurrency"], 6, "{load:#}");

    // A ramp beside a duration or a number of requests is a validation error.
    let bad = Project::new(&plan(
        r#"  load:
    - load:
        vus: 1
        duration: 5s
        ramp: [{ target: 6, duration: 1s }]
        scenario: [{ name: a, http: "http://127.0.0.1:1/" }]
    - load:
        vus: 1
        requests: 5
        ramp: [{ target: 6, duration: 1s }]
        scenario: [{ name: a, http: "http://127.0.0.1:1/" }]
"#,
    ));
    bad.run(&["validate"])
        .code(2)
        .stderr_has("has both a `ramp` and a `duration`")
        .stderr_has("the ramp sets how long the test runs (1s): remove `duration`")
        .stderr_has("has both a `ramp` and a number of requests");
}

#[test]
fn plan_and_explain_describe_load_steps() {
    let p = example("load");
    p.run_env(
        &["plan", "staging"],
        &[("DEMO_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    )
    .code(0)
    .stdout_has("load: 100 requests, 10 at a time (download)")
    .stdout_has("load: 200/s for 3s (config)")
    .stdout_has("setup: login")
    .stdout_has("auth: bearer ${{ vu.token }}")
    .stdout_has("isolation: no user sees another's `email`")
    .stdout_has("slo: p95 <= +200% vs last_pass")
    .stdout_has("abort: error_rate > 20% over 1s")
    .lacks(ADMIN_PASSWORD);
    p.run(&["explain", "steps.load"])
        .code(0)
        .stdout_has("closed (`vus` with `requests` or `duration`)");
    p.run(&["explain", "load.slo"])
        .code(0)
        .stdout_has("vs last_pass");
}
