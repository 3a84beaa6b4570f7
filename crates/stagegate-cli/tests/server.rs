//! `stagegate serve` over real HTTP on loopback: the real binary serves a real SQLite store;
//! requests are sent by a plain HTTP/1.1 client over a TCP socket (no mock), and webhook
//! payloads are signed with HMAC-SHA256 as GitHub signs them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use common::Project;
use sha2::{Digest, Sha256};

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
    let mut c = p.cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--github-secret-env",
        "HOOK_SECRET",
    ]);
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

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
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
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex::encode(outer.finalize())
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
