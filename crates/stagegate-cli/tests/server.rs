//! `stagegate serve` over real HTTP on loopback: the real binary serves a real SQLite store;
//! requests are sent by a plain HTTP/1.1 client over a TCP socket (no mock), and webhook
//! payloads are signed with HMAC-SHA256 as GitHub signs them.

mod common;
mod pg;
mod prom;

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Project, http};

const PLAN: &str = r#"project: shop
roles:
  security: [alice]
  devops: [bob]
environments:
  staging: {}
  production:
    approvals: { required: 2, from: [security, devops], distinct_roles: true }
triggers:
  - on: push
    branch: main
    deploy: staging
  - on: release
    tags: "v*"
    deploy: production
stages:
  deploy:
    - id: hello
      run: echo deploying ${{ release.version }}
"#;

const HOOK_SECRET: &str = "whsec-4b1d-77aa";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(p: &Project) -> Server {
    start_env(p, &[])
}

fn start_env(p: &Project, env: &[(&str, &str)]) -> Server {
    let mut c = p.cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--github-secret-env",
        "HOOK_SECRET",
    ]);
    c.envs(env.iter().copied());
    c.env("HOOK_SECRET", HOOK_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("stagegate serve starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "serve exited before listening"
        );
        if let Some(addr) = line
            .trim()
            .strip_prefix("stagegate serve: listening on http://")
        {
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Server { child, port }
}

fn token(p: &Project, name: &str, subject: &str, scope: &str) -> String {
    let out = p.run(&[
        "token",
        "create",
        name,
        "--subject",
        subject,
        "--scope",
        scope,
    ]);
    out.code(0);
    out.stdout.trim().to_string()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn hmac(key: &[u8], msg: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

fn wait_history(p: &Project, n: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let out = p.run(&["history", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        let done = rows.len() >= n && rows.iter().all(|r| r["outcome"] != "running");
        if done {
            return rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "history never reached {n} rows: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nothing_but_health_answers_without_a_valid_token_and_tokens_are_scoped() {
    let p = Project::new(PLAN);
    let read = token(&p, "reader", "rita", "read");
    let tokens = p.read(".stagegate/tokens.json");
    assert!(!tokens.contains(&read), "the token itself is not stored");
    let s = start(&p);

    assert_eq!(http(s.port, "GET", "/healthz", &[], "").status, 200);
    for path in [
        "/api/deployments",
        "/api/deployments/1",
        "/api/requests",
        "/api/decisions",
        "/api/me",
        "/metrics",
        "/api/deployments/1/events",
    ] {
        assert_eq!(
            http(s.port, "GET", path, &[], "").status,
            401,
            "{path} without a token"
        );
        let bad = http(
            s.port,
            "GET",
            path,
            &[("Authorization", "Bearer sgt_00000000")],
            "",
        );
        assert_eq!(bad.status, 401, "{path} with a wrong token");
        let other = http(
            s.port,
            "GET",
            path,
            &[("Authorization", &format!("Basic {read}"))],
            "",
        );
        assert_eq!(other.status, 401, "{path} with the token in another scheme");
    }
    for path in ["/api/approve", "/api/reject", "/api/decide", "/api/deploy"] {
        let body = r#"{"env":"production","deployment":1,"pass":true,"reason":"x"}"#;
        let r = http(
            s.port,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(r.status, 401, "POST {path} without a token");
    }
    // The page is the login form without a session, and carries no data.
    let page = http(s.port, "GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"login\""), "{}", page.body);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));

    let ok = http(
        s.port,
        "GET",
        "/api/deployments",
        &[("Authorization", &bearer(&read))],
        "",
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["deployments"], serde_json::json!([]));
    let denied = http(
        s.port,
        "POST",
        "/api/approve",
        &[
            ("Authorization", &bearer(&read)),
            ("Content-Type", "application/json"),
        ],
        r#"{"env":"production"}"#,
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        denied.body.contains("no `approve` scope"),
        "{}",
        denied.body
    );
    let denied = http(
        s.port,
        "POST",
        "/api/deploy",
        &[("Authorization", &bearer(&read))],
        r#"{"env":"staging"}"#,
    );
    assert_eq!(denied.status, 403);

    // A revoked token stops working at once.
    p.run(&["token", "revoke", "reader"]).code(0);
    assert_eq!(
        http(
            s.port,
            "GET",
            "/api/deployments",
            &[("Authorization", &bearer(&read))],
            ""
        )
        .status,
        401
    );
}

#[test]
fn approvals_through_the_api_follow_the_plans_rules_with_the_tokens_subject() {
    let p = Project::new(PLAN);
    let alice = token(&p, "alice", "alice", "approve");
    let bob = token(&p, "bob", "bob", "approve");
    let ci = token(&p, "ci", "tester", "approve");
    let s = start(&p);
    p.run(&["deploy", "production", "--release-version", "2.0.0"])
        .code(8);
    let reqs = http(
        s.port,
        "GET",
        "/api/requests",
        &[("Authorization", &bearer(&alice))],
        "",
    );
    assert_eq!(reqs.status, 200);
    assert_eq!(reqs.json()["requests"][0]["request"]["id"], 1);
    assert!(reqs.body.contains("approvals: 0 of 2"), "{}", reqs.body);

    let post = |t: &str, path: &str, body: &str| {
        http(
            s.port,
            "POST",
            path,
            &[
                ("Authorization", &bearer(t)),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    // The requester (the token's subject, not a name in the body) cannot approve.
    let r = post(
        &ci,
        "/api/approve",
        r#"{"env":"production","actor":"alice"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("tester asked for request #1"), "{}", r.body);
    let r = post(
        &alice,
        "/api/approve",
        r#"{"env":"production","role":"devops"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(&alice, "/api/approve", "not json");
    assert_eq!(r.status, 400);
    let r = post(
        &alice,
        "/api/approve",
        r#"{"env":"production","comment":"checked"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["by"], "alice");
    let r = post(&bob, "/api/approve", r#"{"env":"production"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("every condition holds"), "{}", r.body);

    p.run(&["deploy", "production", "--release-version", "2.0.0"])
        .code(0)
        .stderr_has("approved by alice (security), bob (devops)");
    let audit = p.run(&["audit", "show"]).code(0).stdout.clone();
    assert!(audit.contains("\"actor\":\"alice\""), "{audit}");
    p.run(&["audit", "verify"])
        .code(0)
        .stdout_has("2 approvals");

    // One deployment, in full, and its events as a stream that ends with the run.
    let one = http(
        s.port,
        "GET",
        "/api/deployments/2",
        &[("Authorization", &bearer(&alice))],
        "",
    );
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["deployment"]["outcome"], "succeeded");
    let live = http(
        s.port,
        "GET",
        "/api/deployments/2/events",
        &[("Authorization", &bearer(&alice))],
        "",
    );
    assert_eq!(live.status, 200);
    assert_eq!(live.header("content-type"), Some("text/event-stream"));
    assert!(
        live.body.contains("\"kind\":\"run_started\""),
        "{}",
        live.body
    );
    assert!(live.body.contains("event: end"), "{}", live.body);
    assert_eq!(
        http(
            s.port,
            "GET",
            "/api/deployments/99/events",
            &[("Authorization", &bearer(&alice))],
            ""
        )
        .status,
        404
    );

    let m = http(
        s.port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(&alice))],
        "",
    );
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("stagegate_deployments_total{environment=\"production\",kind=\"deploy\",outcome=\"succeeded\"} 1"),
        "{}",
        m.body
    );
    // The `hello` step of the production deploy, an `echo`: one run, under 5 s, with its sum.
    let labels = "environment=\"production\",kind=\"run\",phase=\"run\",status=\"passed\"";
    for line in [
        "# TYPE stagegate_step_duration_seconds histogram".to_string(),
        format!("stagegate_step_duration_seconds_bucket{{{labels},le=\"5\"}} 1"),
        format!("stagegate_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 1"),
        format!("stagegate_step_duration_seconds_count{{{labels}}} 1"),
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            m.body
        );
    }
    assert!(
        m.body
            .contains(&format!("stagegate_step_duration_seconds_sum{{{labels}}} ")),
        "{}",
        m.body
    );
}

/// The same server over a real PostgreSQL store (`tests/pg`): the command line and the
/// server share it; the URL's password is in no answer.
#[test]
fn over_a_postgresql_store_the_server_lists_approves_and_counts() {
    let pg = pg::Postgres::start();
    let db = pg.database("serve_store");
    let p = Project::new(PLAN);
    let env = [("STAGEGATE_STATE", db.url.as_str())];
    let alice = token(&p, "alice", "alice", "read,approve");
    let bob = token(&p, "bob", "bob", "read,approve");
    p.run_env(&["deploy", "staging", "--release-version", "5.0.0"], &env)
        .code(0);
    p.run_env(
        &["deploy", "production", "--release-version", "5.0.0"],
        &env,
    )
    .code(8);
    let s = start_env(&p, &env);
    let get = |path: &str| {
        let r = http(
            s.port,
            "GET",
            path,
            &[("Authorization", &bearer(&alice))],
            "",
        );
        assert!(!r.body.contains(&db.password), "{path} shows the password");
        r
    };
    let approve = |t: &str, role: &str| {
        http(
            s.port,
            "POST",
            "/api/approve",
            &[
                ("Authorization", &bearer(t)),
                ("Content-Type", "application/json"),
            ],
            &format!(r#"{{"env":"production","role":"{role}"}}"#),
        )
    };

    let h = get("/api/deployments").json();
    let kinds: Vec<(&str, &str)> = h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("request", "awaiting_approval"), ("deploy", "succeeded")]
    );
    let r = get("/api/requests").json();
    assert_eq!(r["requests"][0]["request"]["id"], 2, "{r:#}");
    assert_eq!(approve(&alice, "security").status, 200);
    let second = approve(&bob, "devops");
    assert_eq!(second.status, 200, "{}", second.body);
    // Approved in PostgreSQL: the deploy from the command line goes ahead.
    p.run_env(
        &["deploy", "production", "--release-version", "5.0.0"],
        &env,
    )
    .code(0);
    let one = get("/api/deployments/2").json();
    assert_eq!(one["approvals"].as_array().unwrap().len(), 2, "{one:#}");
    assert!(
        one["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "approval"),
        "{one:#}"
    );
    let m = get("/metrics").body;
    for line in [
        "stagegate_deployments_total{environment=\"production\",kind=\"deploy\",outcome=\"succeeded\"} 1",
        "stagegate_step_duration_seconds_count{environment=\"staging\",kind=\"run\",phase=\"run\",status=\"passed\"} 1",
        "stagegate_step_duration_seconds_count{environment=\"production\",kind=\"run\",phase=\"run\",status=\"passed\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "no `{line}` in:\n{m}");
    }
}

/// A load step and two bakes against a real Prometheus: `steady` has a value every round
/// (`vector(1)`), `unsure` has none (no such job), so the deploy ends awaiting a decision.
fn bake_plan(prom: &str, target: u16) -> String {
    format!(
        r#"project: shop
environments:
  staging: {{}}
stages:
  verify:
    - id: home
      http: "http://127.0.0.1:{target}/"
      expect: {{ status: 200 }}
  load:
    - id: load
      name: load the home page
      load: {{ vus: 2, requests: 40, check: home, slo: ["p95 < 2s"] }}
  bake:
    - id: steady
      name: steady
      watch:
        for: 2s
        every: 400ms
        measure:
          - name: one
            prometheus: {{ url: "{prom}", query: "vector(1)" }}
            pass: "== 1"
    - id: unsure
      watch:
        for: 2s
        every: 400ms
        measure:
          - name: missing
            prometheus: {{ url: "{prom}", query: 'up{{job="nothing-scrapes-this"}}' }}
            pass: "== 1"
            fail: "< 1"
"#
    )
}

#[test]
fn an_inconclusive_bake_is_decided_through_the_api_and_the_deployment_shows_its_charts() {
    let prom = prom::Prometheus::start(&[]);
    let target = common::serve(|_, _| common::response("200 OK", "text/plain", b"ok"));
    let p = Project::new(&bake_plan(&prom.url, target));
    let alice = token(&p, "alice", "alice", "read,approve");
    let reader = token(&p, "reader", "carol", "read");
    p.run(&["deploy", "staging", "--release-version", "2.0.0"])
        .code(7);
    let s = start(&p);
    let get = |path: &str, t: &str| http(s.port, "GET", path, &[("Authorization", &bearer(t))], "");
    let decide = |t: &str, body: &str| {
        http(
            s.port,
            "POST",
            "/api/decide",
            &[
                ("Authorization", &bearer(t)),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };

    let d = get("/api/decisions", &reader);
    assert_eq!(d.status, 200, "{}", d.body);
    let open = &d.json()["decisions"];
    assert_eq!(open.as_array().unwrap().len(), 1, "{open:#}");
    assert_eq!(open[0]["deployment"]["id"], 1);
    assert_eq!(open[0]["steps"][0]["id"], "unsure", "{open:#}");
    assert_eq!(open[0]["steps"][0]["verdict"], "inconclusive", "{open:#}");

    // A read token cannot decide; nor can an empty reason, or a non-number.
    let body = r#"{"deployment": 1, "pass": true, "reason": "-the exporter is off, by design"}"#;
    assert_eq!(decide(&reader, body).status, 403);
    let r = decide(&alice, r#"{"deployment": 1, "pass": true, "reason": "  "}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("reason"), "{}", r.body);
    assert_eq!(
        decide(
            &alice,
            r#"{"deployment": "1", "pass": true, "reason": "x"}"#
        )
        .status,
        400
    );
    assert_eq!(
        decide(
            &alice,
            r#"{"deployment": 1, "step": "--fail", "pass": true, "reason": "x"}"#
        )
        .status,
        400
    );

    // A reason starting with `-` stays a reason (it goes to the child as `--reason=...`).
    let r = decide(&alice, body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["by"], "alice");
    assert!(
        r.json()["said"].as_str().unwrap().contains("succeeded"),
        "{}",
        r.body
    );
    let again = decide(&alice, body);
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again.body.contains("does not wait for a decision"),
        "{}",
        again.body
    );
    assert_eq!(
        get("/api/decisions", &reader).json()["decisions"],
        serde_json::json!([])
    );

    let one = get("/api/deployments/1", &reader).json();
    assert_eq!(one["deployment"]["outcome"], "succeeded", "{one:#}");
    let decided = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "decided")
        .unwrap_or_else(|| panic!("no decided event: {one:#}"));
    assert_eq!(decided["data"]["actor"], "alice");
    assert_eq!(decided["data"]["reason"], "-the exporter is off, by design");
    // The load step's latency bars and the steady bake's line; the unsure bake had no values.
    let titles: Vec<&str> = one["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["load the home page: latency (ms)", "steady: one"],
        "{one:#}"
    );
    for c in one["charts"].as_array().unwrap() {
        let svg = c["svg"].as_str().unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
    assert!(
        one["charts"][0]["svg"].as_str().unwrap().contains(">p95<"),
        "{one:#}"
    );
    // The audit trail is this deployment's, and has the decision.
    let kinds: Vec<&str> = one["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"deployment_begun"), "{kinds:?}");
    assert!(kinds.contains(&"decision"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"deployment_finished"), "{kinds:?}");
}

#[test]
fn the_page_logs_in_with_a_token_and_its_changes_need_the_csrf_token_and_this_origin() {
    let p = Project::new(PLAN);
    let alice = token(&p, "alice", "alice", "read,approve");
    let s = start(&p);
    p.run(&["deploy", "production", "--release-version", "3.0.0"])
        .code(8);

    let bad = http(
        s.port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "token=sgt_nope",
    );
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    let login = http(
        s.port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("token={alice}"),
    );
    assert_eq!(login.status, 303, "{}", login.body);
    let set = login.header("set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = set.split(';').next().unwrap().to_string();

    let page = http(s.port, "GET", "/", &[("Cookie", &session)], "");
    assert!(
        page.body.contains("Awaiting approval"),
        "the app page after login"
    );
    let me = http(s.port, "GET", "/api/me", &[("Cookie", &session)], "").json();
    assert_eq!(me["subject"], "alice");
    let csrf = me["csrf"].as_str().unwrap().to_string();

    let body = r#"{"env":"production","comment":"from the page"}"#;
    let no_csrf = http(
        s.port,
        "POST",
        "/api/approve",
        &[("Cookie", &session)],
        body,
    );
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    let wrong = http(
        s.port,
        "POST",
        "/api/approve",
        &[("Cookie", &session), ("X-CSRF-Token", "0000")],
        body,
    );
    assert_eq!(wrong.status, 403);
    let foreign = http(
        s.port,
        "POST",
        "/api/approve",
        &[
            ("Cookie", &session),
            ("X-CSRF-Token", &csrf),
            ("Origin", "http://evil.example"),
        ],
        body,
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    let ok = http(
        s.port,
        "POST",
        "/api/approve",
        &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
        body,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.body.contains("by alice as security (1 of 2)"),
        "{}",
        ok.body
    );

    let out = http(s.port, "POST", "/logout", &[("Cookie", &session)], "");
    assert_eq!(out.status, 303);
    assert_eq!(
        http(s.port, "GET", "/api/me", &[("Cookie", &session)], "").status,
        401
    );
}

#[test]
fn signed_github_events_run_what_the_triggers_say_once() {
    let p = Project::new(PLAN);
    let s = start(&p);
    let push = r#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","sender":{"login":"octocat"}}"#;
    let sig = format!("sha256={}", hmac(HOOK_SECRET.as_bytes(), push.as_bytes()));
    let send = |event: &str, delivery: &str, sig: &str, body: &str| {
        http(
            s.port,
            "POST",
            "/api/webhooks/github",
            &[
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", sig),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    // Unsigned, signed with another key, or a body changed after signing: refused.
    assert_eq!(send("push", "d-0", "", push).status, 401);
    let other = format!("sha256={}", hmac(b"another-key", push.as_bytes()));
    assert_eq!(send("push", "d-0", &other, push).status, 401);
    let tampered = push.replace("main", "prod");
    assert_eq!(send("push", "d-0", &sig, &tampered).status, 401);

    let r = send("push", "d-1", &sig, push);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["as"], "github:octocat");
    // The same delivery again is a replay.
    assert_eq!(send("push", "d-1", &sig, push).status, 409);

    let rows = wait_history(&p, 1);
    assert_eq!(rows[0]["environment"], "staging");
    assert_eq!(rows[0]["release_version"], "0123456");
    assert_eq!(
        rows[0]["release_sha"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(rows[0]["actor"], "github:octocat");
    assert_eq!(rows[0]["outcome"], "succeeded");

    // A push to another branch and a release that matches no tag run nothing.
    let other_branch = push.replace("refs/heads/main", "refs/heads/feature");
    let r = send(
        "push",
        "d-2",
        &format!(
            "sha256={}",
            hmac(HOOK_SECRET.as_bytes(), other_branch.as_bytes())
        ),
        &other_branch,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["runs"], serde_json::json!([]));
    let release =
        r#"{"action":"published","release":{"tag_name":"v1.2.0"},"sender":{"login":"octocat"}}"#;
    let r = send(
        "release",
        "d-3",
        &format!(
            "sha256={}",
            hmac(HOOK_SECRET.as_bytes(), release.as_bytes())
        ),
        release,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    // Production needs two approvals: the run records a request and waits.
    let rows = wait_history(&p, 2);
    assert_eq!(rows[0]["kind"], "request");
    assert_eq!(rows[0]["release_version"], "v1.2.0");
    // A hostile ref never reaches a command line.
    let hostile =
        r#"{"action":"published","release":{"tag_name":"v1;rm -rf /"},"sender":{"login":"x"}}"#;
    let r = send(
        "release",
        "d-4",
        &format!(
            "sha256={}",
            hmac(HOOK_SECRET.as_bytes(), hostile.as_bytes())
        ),
        hostile,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let ping = r#"{"zen":"hi"}"#;
    assert_eq!(
        send(
            "ping",
            "d-5",
            &format!("sha256={}", hmac(HOOK_SECRET.as_bytes(), ping.as_bytes())),
            ping
        )
        .status,
        200
    );
}

#[test]
fn triggers_are_validated_with_file_and_line() {
    let p = Project::new(
        "project: shop
environments:
  staging: {}
triggers:
  - on: pull
    deploy: staging
  - on: push
    deploy: stagin
  - on: release
    branch: main
    deploy: staging
  - on: push
stages:
  s: [ { run: echo } ]
",
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("`on` in trigger 1 must be `push` or `release`, found `pull`")
        .stderr_has("did you mean `push`?")
        .stderr_has("a trigger names unknown environment `stagin`")
        .stderr_has("trigger 3 answers `release` but has `branch`")
        .stderr_has("trigger 4 runs nothing")
        .stderr_has("stagegate.yml:5");
}

/// A WebDriver session of a real headless Chromium (Debian's `chromium` and
/// `chromium-driver`), spoken to over HTTP.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver package)");
        let started = Instant::now();
        while http_status(port, "/status") != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-dev-shm-usage", "--window-size=1200,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let r = http(
            port,
            "POST",
            "/session",
            &[("Content-Type", "application/json")],
            &caps.to_string(),
        );
        assert_eq!(r.status, 200, "new session: {}", r.body);
        let session = r.json()["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            &[("Content-Type", "application/json")],
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        r.json()["value"].clone()
    }

    fn js(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            serde_json::json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Clicks the element `css` selects, as a person would (WebDriver's element click).
    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call(
            "POST",
            &format!("/element/{e}/click"),
            serde_json::json!({}),
        );
    }

    /// Waits until `script` returns something truthy, then returns it.
    fn until(&self, what: &str, script: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waited 30s for {what}; the page says: {}",
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn http_status(port: u16, path: &str) -> u16 {
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => http(port, "GET", path, &[], "").status,
        Err(_) => 0,
    }
}

#[test]
fn in_chromium_a_person_logs_in_approves_and_watches_the_promotion_run() {
    // Staging has a bake with one measurement that has values and one that has none.
    let prom = prom::Prometheus::start(&[]);
    let mut plan = PLAN.replace(
        "run: echo deploying ${{ release.version }}",
        "run: sleep 1; echo deploying ${{ release.version }}",
    );
    plan.push_str(&format!(
        r#"  bake:
    - id: unsure
      name: staging bake
      when: environment.name == 'staging'
      watch:
        for: 2s
        every: 400ms
        # `missing` is inconclusive at its fourth round without data: `one` has a line by then.
        inconclusive_limit: 3
        measure:
          - name: one
            prometheus: {{ url: "{url}", query: "vector(1)" }}
            pass: "== 1"
          - name: missing
            prometheus: {{ url: "{url}", query: 'up{{job="nothing-scrapes-this"}}' }}
            pass: "== 1"
            fail: "< 1"
"#,
        url = prom.url
    ));
    let p = Project::new(&plan);
    let alice = token(&p, "alice", "alice", "read,approve");
    let bob = token(&p, "bob", "bob", "approve");
    let s = start(&p);
    // A deploy that waits for its approvals, as a CI job would.
    let waiting = p.spawn(&[
        "deploy",
        "production",
        "--release-version",
        "4.0.0",
        "--wait-approval",
        "--approval-timeout",
        "600s",
    ]);
    wait_history(&p, 1);

    let t0 = Instant::now();
    let b = Browser::start();
    eprintln!("chromium session after {:?}", t0.elapsed());
    b.call(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://127.0.0.1:{}/", s.port)}),
    );
    let field = b.element("#token");
    b.call(
        "POST",
        &format!("/element/{field}/value"),
        serde_json::json!({"text": alice}),
    );
    b.click("#login-button");
    assert_eq!(
        b.until(
            "the subject",
            "return document.querySelector('#subject')?.textContent"
        ),
        "alice"
    );
    let waits = b.until(
        "the request",
        "return document.querySelector('#request-1')?.innerText",
    );
    assert!(
        waits.as_str().unwrap().contains("approvals: 0 of 2"),
        "{waits}"
    );

    b.js("document.querySelector('#comment-1').value = 'looked at the canary'");
    b.click("#approve-1");
    let said = b.until(
        "the answer",
        "return document.querySelector('#message').textContent",
    );
    assert!(
        said.as_str()
            .unwrap()
            .contains("by alice as security (1 of 2)"),
        "{said}"
    );

    // The second approval comes from bob over the API; the waiting deploy goes on.
    let r = http(
        s.port,
        "POST",
        "/api/approve",
        &[("Authorization", &format!("Bearer {bob}"))],
        r#"{"env":"production"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    b.until(
        "the run in the history",
        "return document.querySelector('tr[data-id=\"2\"]') !== null",
    );
    b.click("tr[data-id=\"2\"]");
    let outcome = b.until(
        "the run to finish on the page",
        "const o = document.querySelector('#outcome'); return o && o.textContent !== 'running' ? o.textContent : null",
    );
    assert_eq!(outcome, "succeeded");
    // The steps table is drawn again when the run ends: its one step is there, passed.
    let steps = b.js("return document.querySelector('#steps').innerText");
    assert!(steps.as_str().unwrap().contains("passed"), "{steps}");
    let events = b.js("return document.querySelector('#events').textContent");
    assert!(
        events.as_str().unwrap().contains("run_finished"),
        "{events}"
    );
    assert!(events.as_str().unwrap().contains("authorized"), "{events}");

    let png = b.call("GET", "/screenshot", serde_json::json!({}));
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(p.path().join("page.png"), &bytes).unwrap();
    // What the screenshot shows, checked in the page it was taken of: the approvals.
    let approvals = b.js("return document.querySelector('#detail').innerText");
    assert!(
        approvals.as_str().unwrap().contains("succeeded"),
        "{approvals}"
    );
    eprintln!("promotion seen on the page after {:?}", t0.elapsed());
    // The promotion run's audit trail, from its start to its end.
    let audit = b.js("return document.querySelector('#audit').innerText");
    let audit = audit.as_str().unwrap();
    assert!(
        audit.contains("deployment_begun") && audit.contains("deployment_finished"),
        "{audit}"
    );

    // A staging deploy whose bake is inconclusive: the page offers the decision.
    p.run(&["deploy", "staging", "--release-version", "4.1.0"])
        .code(7);
    eprintln!("staging deploy awaits a decision after {:?}", t0.elapsed());
    let offered = b.until(
        "the decision",
        "return document.querySelector('#decision-3-unsure')?.innerText",
    );
    assert!(
        offered.as_str().unwrap().contains("inconclusive"),
        "{offered}"
    );
    b.js("document.querySelector('#reason-3-unsure').value = 'the exporter is not deployed yet'");
    eprintln!("decision offered after {:?}", t0.elapsed());
    b.click("#pass-3-unsure");
    let said = b.until(
        "the decision's answer",
        "const m = document.querySelector('#message').textContent; return m.includes('deployment #3') ? m : null",
    );
    assert!(said.as_str().unwrap().contains("succeeded"), "{said}");
    b.until(
        "no decision left",
        "return document.querySelector('#decisions').textContent === 'none' ? true : null",
    );
    eprintln!("decided on the page after {:?}", t0.elapsed());
    // Its page: the bake's chart of `one` (the measurement without values has none).
    b.click("tr[data-id=\"3\"]");
    let charts = b.until(
        "the bake chart",
        "const c = document.querySelectorAll('#charts svg'); return c.length ? c[0].getAttribute('aria-label') : null",
    );
    assert_eq!(charts, "staging bake: one");
    let shown = b.js("return document.querySelector('#outcome').textContent");
    assert_eq!(shown, "succeeded");

    let out = waiting.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
