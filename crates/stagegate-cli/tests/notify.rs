//! Notifications through the real binary to real loopback receivers: the generic webhook
//! (its body, headers and signature), Slack-shaped messages, retries, `on:` filtering, a
//! receiver that is down, the validation of `notify` entries, and that neither a webhook
//! URL nor a signing key is shown or stored anywhere.

mod common;
use std::sync::{Arc, Mutex};

use common::{Project, assert_nowhere, response, serve_head, with_reports};

/// One request a receiver got: its head (request line and headers) and body.
#[derive(Debug, Clone)]
struct Got {
    head: String,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A receiver that records each request and answers with `status(n)` for the n-th (from 1).
fn receiver(
    status: impl Fn(usize) -> &'static str + Send + Sync + 'static,
) -> (u16, Arc<Mutex<Vec<Got>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let port = serve_head(move |head, body| {
        let n = {
            let mut g = seen.lock().unwrap();
            g.push(Got {
                head: head.to_string(),
                body: body.to_vec(),
            });
            g.len()
        };
        response(status(n), "text/plain", b"ok")
    });
    (port, got)
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

const TOKEN: &str = "tok-3f9a1c77e2";
const SIGNING: &str = "sign-key-8d2e55b01a";

#[test]
fn a_successful_deploy_sends_started_and_succeeded_signed() {
    let (port, got) = receiver(|_| "200 OK");
    let p = Project::new(&format!(
        r#"project: demo
secrets: {{ require: [HOOK_TOKEN, HOOK_SECRET] }}
notify:
  - webhook: "http://127.0.0.1:{port}/hook?token=${{{{ secrets.HOOK_TOKEN }}}}"
    secret: "${{{{ secrets.HOOK_SECRET }}}}"
environments:
  staging: {{}}
stages:
  s:
    - id: hello
      run: echo hello
"#
    ));
    p.write(
        ".env.staging",
        &format!("HOOK_TOKEN={TOKEN}\nHOOK_SECRET={SIGNING}\n"),
    );
    let o = p.run(&with_reports(&[
        "deploy",
        "staging",
        "--release-version",
        "1.2.3",
    ]));
    o.code(0).lacks("warning:");
    let got = got.lock().unwrap().clone();
    let events: Vec<String> = got
        .iter()
        .map(|g| g.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["started", "succeeded"], "{got:#?}");
    let mut deliveries = Vec::new();
    for g in &got {
        assert!(g.head.starts_with("POST /hook?token="), "{}", g.head);
        let sig = g.header("X-Stagegate-Signature-256").expect("signed");
        assert_eq!(sig, format!("sha256={}", hmac_hex(SIGNING, &g.body)));
        assert_eq!(
            g.header("X-Stagegate-Event").as_deref(),
            g.json()["event"].as_str()
        );
        deliveries.push(g.header("X-Stagegate-Delivery").expect("a delivery id"));
    }
    assert_ne!(deliveries[0], deliveries[1]);
    let end = got[1].json();
    assert_eq!(end["project"], "demo");
    assert_eq!(end["kind"], "deploy");
    assert_eq!(end["environment"], "staging");
    assert_eq!(end["deployment_id"], 1);
    assert_eq!(end["release"]["version"], "1.2.3");
    assert_eq!(end["outcome"], "succeeded");
    assert_eq!(end["exit_code"], 0);
    assert!(end["summary"].is_string() && end["at"].is_string(), "{end}");
    assert!(got[0].json()["outcome"].is_null());
    p.run(&["plan", "staging"])
        .code(0)
        .stdout_has("notify:\n  notifier #1 (webhook to 127.0.0.1), signed on started, succeeded,");
    assert_nowhere(&p, &[TOKEN, SIGNING], "staging");
}

#[test]
fn a_rolled_back_deploy_notifies_slack_and_on_filters() {
    let (slack, slack_got) = receiver(|_| "200 OK");
    let (other, other_got) = receiver(|_| "200 OK");
    let p = Project::new(&format!(
        r#"project: demo
notify:
  - slack: "http://127.0.0.1:{slack}/services/T000/B000/XXXX"
    on: [rolled_back, failed]
    link: https://ci.example.com/runs/7
environments:
  staging:
    notify:
      - webhook: "http://127.0.0.1:{other}/only-success"
        on: [succeeded]
stages:
  s:
    - id: one
      run: echo did
      rollback: echo undid
    - id: bad
      run: echo "<broken>"; exit 1
"#
    ));
    p.run(&["deploy", "staging", "--release-version", "2.0"])
        .code(4);
    let got = slack_got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only rolled_back is sent: {got:#?}");
    let m = got[0].json();
    let text = m["text"].as_str().unwrap();
    assert!(
        text.contains("rolled back") && text.contains("staging"),
        "{text}"
    );
    let blocks = m["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    let all = serde_json::to_string(blocks).unwrap();
    for want in [
        "*Outcome*\\nrolled back",
        "*Version*\\n2.0",
        "#1",
        "Open the run",
    ] {
        assert!(all.contains(want), "{want} missing in {all}");
    }
    assert!(got[0].header("X-Stagegate-Signature-256").is_none());
    assert!(
        other_got.lock().unwrap().is_empty(),
        "`on: [succeeded]` got a rollback"
    );
}

#[test]
fn a_receiver_answering_500_twice_gets_three_attempts() {
    let (port, got) = receiver(|n| {
        if n <= 2 {
            "500 Internal Server Error"
        } else {
            "200 OK"
        }
    });
    let p = Project::new(&format!(
        r#"project: demo
notify:
  - webhook: "http://127.0.0.1:{port}/flaky"
    on: [succeeded]
    retries: 3
    timeout: 2s
environments: {{ staging: {{}} }}
stages:
  s:
    - run: echo fine
"#
    ));
    p.run(&["deploy", "staging"]).code(0).lacks("warning:");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:#?}");
    // Every attempt is the same delivery.
    let ids: Vec<_> = got
        .iter()
        .map(|g| g.header("X-Stagegate-Delivery"))
        .collect();
    assert!(ids.iter().all(|i| i.is_some() && *i == ids[0]), "{ids:?}");
}

#[test]
fn a_4xx_is_not_retried() {
    let (port, got) = receiver(|_| "404 Not Found");
    let p = Project::new(&format!(
        "project: demo\nnotify: [{{ webhook: \"http://127.0.0.1:{port}/gone\", on: [succeeded] }}]\nenvironments: {{ staging: {{}} }}\nstages:\n  s:\n    - run: echo fine\n"
    ));
    p.run(&["deploy", "staging"]).code(0).stderr_has(
        "warning: notifier #1 (webhook to 127.0.0.1) could not send `succeeded`: answered 404",
    );
    assert_eq!(got.lock().unwrap().len(), 1);
}

#[test]
fn a_receiver_that_is_down_is_a_warning_without_the_url() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hooks/{TOKEN}");
    let p = Project::new(
        r#"project: demo
secrets: { require: [DOWN_URL] }
notify:
  - webhook: "${{ secrets.DOWN_URL }}"
    retries: 1
environments: { staging: {} }
stages:
  s:
    - run: echo fine
"#,
    );
    p.write(".env.staging", &format!("DOWN_URL={url}\n"));
    let o = p.run(&with_reports(&["deploy", "staging"]));
    o.code(0)
        .stderr_has("warning: notifier #1 (webhook to 127.0.0.1) could not send `started`: could not connect")
        .stderr_has("could not send `succeeded`")
        .stderr_has("(2 attempts)")
        .lacks(TOKEN)
        .lacks("/hooks/");
    assert_nowhere(&p, &[TOKEN], "staging");
}

#[test]
fn notify_entries_are_validated_with_file_and_line() {
    let p = Project::new(
        r#"project: demo
notify:
  - webhook: not a url
    on: [started, faild]
    retries: 11
  - slack: https://hooks.slack.com/services/x
    webhook: https://hooks.example.com/x
  - on: [failed]
  - webhook: https://hooks.example.com/x
    on: [succeeded]
    secret: "${{ secrets.NOPE }}"
environments:
  staging:
    notify: { webhook: https://x.example.com }
stages:
  s:
    - run: echo fine
"#,
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("stagegate.yml:3:")
        .stderr_has("is not an http:// or https:// URL")
        .stderr_has("unknown event `faild`")
        .stderr_has("did you mean `failed`?")
        .stderr_has("stagegate.yml:5:")
        .stderr_has("`retries` in notifier #1 of `notify` in the plan is 11, more than 10")
        .stderr_has("has both `slack` and `webhook`")
        .stderr_has("says neither `slack` nor `webhook`")
        .stderr_has("undeclared secret `secrets.NOPE`")
        .stderr_has("`notify` in environment `staging` must be a list");
}

#[test]
fn a_protected_deploy_that_waits_notifies_awaiting_approval_once() {
    let (port, got) = receiver(|_| "200 OK");
    let p = Project::new(&format!(
        r#"project: demo
environments:
  staging:
    approvals: {{ required: 1 }}
    notify:
      - webhook: "http://127.0.0.1:{port}/approvals"
stages:
  s:
    - run: echo fine
"#
    ));
    p.run(&["deploy", "staging", "--release-version", "5.0"])
        .code(8)
        .lacks("warning:");
    // Asking again finds the same open request: nobody is told twice.
    p.run(&["deploy", "staging", "--release-version", "5.0"])
        .code(8);
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    let n = got[0].json();
    assert_eq!(n["event"], "awaiting_approval");
    assert_eq!(n["request_id"], 1);
    assert!(n["deployment_id"].is_null());
    assert_eq!(n["release"]["version"], "5.0");
    assert_eq!(n["exit_code"], 8);
    assert!(
        n["summary"]
            .as_str()
            .unwrap()
            .contains("request #1 by tester waits for"),
        "{n}"
    );
}

#[test]
fn a_bake_awaiting_decision_notifies_and_so_does_the_decision_to_pass() {
    // A Prometheus API that has no series: every sample is no data, so inconclusive.
    let prom = common::serve(|_, _| {
        response(
            "200 OK",
            "application/json",
            br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        )
    });
    let (port, got) = receiver(|_| "200 OK");
    let p = Project::new(&format!(
        r#"project: demo
notify:
  - webhook: "http://127.0.0.1:{port}/bake"
    on: [awaiting_decision, succeeded]
environments: {{ staging: {{}} }}
stages:
  bake:
    - id: bake
      watch:
        for: 2s
        every: 200ms
        inconclusive_limit: 0
        measure:
          - name: up
            prometheus: {{ url: "http://127.0.0.1:{prom}", query: "up" }}
            pass: "== 1"
            fail: "< 1"
"#
    ));
    p.run(&["deploy", "staging"]).code(7);
    p.run(&["decide", "1", "--pass", "--reason", "exporter down"])
        .code(0);
    let got = got.lock().unwrap().clone();
    let events: Vec<serde_json::Value> = got.iter().map(Got::json).collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["event"], "awaiting_decision");
    assert_eq!(events[0]["exit_code"], 7);
    assert_eq!(events[1]["event"], "succeeded");
    assert_eq!(events[1]["deployment_id"], 1);
    assert!(
        events[1]["summary"]
            .as_str()
            .unwrap()
            .contains("decided it passed: exporter down"),
        "{}",
        events[1]
    );
}
