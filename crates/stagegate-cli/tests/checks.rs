//! Check steps through the real binary: the example plans of seeds 000 and 003 against the
//! real staging-demo service (healthy, then with each fault), and http, command, tcp, log and
//! file checks against real servers on loopback and real processes.

mod common;
use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;

use common::{Out, Project, example, response, serve, show_json, step};

const ADMIN_PASSWORD: &str = "pw-Adm1n-unique-7731";
const JWT_SECRET: &str = "jwt-s1gning-key-unique-4410";
const BLOB_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn erp_hub(p: &Project, extra: &[&str]) -> Out {
    let mut args = vec!["deploy", "staging"];
    args.extend_from_slice(extra);
    p.run_env(
        &args,
        &[
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("JWT_SECRET", JWT_SECRET),
            ("BLOB_KEY", BLOB_KEY),
        ],
    )
}

#[test]
fn seed_000_e2e_passes_against_the_healthy_service() {
    let p = example("erp-hub-e2e");
    let o = erp_hub(
        &p,
        &[
            "--report",
            "junit=r.xml",
            "--report",
            "markdown=r.md",
            "--events",
            "e.jsonl",
        ],
    );
    o.code(0)
        .stderr_has("ok      the halves joined are the upload [joined]")
        .stderr_has("(3 assertions)")
        .lacks(ADMIN_PASSWORD)
        .lacks(JWT_SECRET);

    let v = show_json(&p, "1");
    let upload = step(&v, "upload");
    assert_eq!(upload["outputs"]["blob_id"].as_str().unwrap().len(), 16);
    let sent = upload["outputs"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sent.len(), 64);
    // The token was captured as a secret: recorded masked.
    assert_eq!(step(&v, "login")["outputs"]["token"], "***");
    // The halves joined hash to what was uploaded.
    let joined = step(&v, "joined");
    assert_eq!(joined["details"]["observed"]["sha256"], sent.as_str());
    assert_eq!(joined["details"]["observed"]["bytes"], 10485760);
    let full = std::fs::read(p.path().join("downloads/full.bin")).unwrap();
    assert_eq!(full.len(), 10 * 1024 * 1024);
    let half = std::fs::read(p.path().join("downloads/half.bin")).unwrap();
    assert_eq!(&full[..half.len()], &half[..]);
    // Every assertion is recorded with expected and actual.
    let health = &step(&v, "health")["details"]["assertions"];
    assert_eq!(
        health[2],
        serde_json::json!({ "name": "json $.version", "expected": "== 1.3.0", "actual": "\"1.3.0\"", "passed": true })
    );

    p.run(&["show", "1"])
        .code(0)
        .stdout_has("✓ json $.version: expected == 1.3.0, actual \"1.3.0\"")
        .stdout_has("✓ log present: expected a line is JSON with event == blob_download");
    let junit = p.read("r.xml");
    assert!(junit.contains(r#"assertions="4""#), "{junit}");
    assert!(junit.contains("✓ sha256: expected =="), "{junit}");
    let md = p.read("r.md");
    assert!(md.contains("### Checks"), "{md}");
    assert!(
        md.contains("| json \\$.version | `== 1.3.0` | `\"1.3.0\"` | ✅ |"),
        "{md}"
    );
    for f in ["r.xml", "r.md", "e.jsonl"] {
        let text = p.read(f);
        assert!(!text.contains(ADMIN_PASSWORD), "{f} leaks the password");
    }
}

#[test]
fn seed_000_e2e_fails_when_the_service_reports_a_wrong_version() {
    let p = example("erp-hub-e2e");
    erp_hub(&p, &["--var", "fault=wrong-version"])
        .code(4)
        .stderr_has("FAIL    health answers with the release's version [health]")
        .stderr_has("✗ json $.version: expected == 1.3.0, actual \"1.3.0-wrong\"")
        .stderr_has(
            "step `health` failed: 1 of 3 assertions failed: json $.version: expected == 1.3.0, actual \"1.3.0-wrong\"",
        )
        .stderr_has("rolled back");
}

#[test]
fn seed_000_e2e_fails_when_the_service_ignores_range() {
    let p = example("erp-hub-e2e");
    erp_hub(&p, &["--var", "fault=ignore-range"])
        .code(4)
        .stderr_has("FAIL    the first half, by range [half]")
        .stderr_has("✗ status: expected == 206, actual 200")
        .stderr_has("✗ body_len: expected == 5242880, actual 10485760")
        .stderr_has("step `half` failed: 3 of 3 assertions failed");
}

#[test]
fn seed_000_e2e_fails_when_the_service_corrupts_a_byte() {
    let p = example("erp-hub-e2e");
    let o = erp_hub(&p, &["--var", "fault=corrupt-byte"]);
    o.code(4)
        .stderr_has("FAIL    the full download is intact [full]")
        .stderr_has("✗ sha256: expected == ")
        .stderr_has("step `full` failed: 1 of 4 assertions failed: sha256: expected ==");
    // A 10 MiB body is described, never printed.
    assert!(
        o.stderr.contains("10.0 MiB of binary data beginning"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.len() < 20_000,
        "the output is {} bytes",
        o.stderr.len()
    );
}

#[test]
fn seed_000_ranged_halves_that_do_not_join_to_the_upload_fail_the_file_check() {
    // The corrupted byte sits in the second half: skip the full download to reach the join.
    let p = example("erp-hub-e2e");
    let plan = p.read("stagegate.yml");
    let start = plan.find("    - id: full\n").unwrap();
    let end = plan.find("    - id: half\n").unwrap();
    p.write(
        "stagegate.yml",
        &format!("{}{}", &plan[..start], &plan[end..]),
    );
    erp_hub(&p, &["--var", "fault=corrupt-byte"])
        .code(4)
        .stderr_has("FAIL    the halves joined are the upload [joined]")
        .stderr_has("✗ sha256: expected == ");
}

fn smoke(p: &Project, extra: &[&str]) -> Out {
    let mut args = vec!["deploy", "staging"];
    args.extend_from_slice(extra);
    p.run_env(
        &args,
        &[
            ("ALPACA_PAPER_API_KEY", "PK-paper-test"),
            ("ALPACA_PAPER_API_SECRET", "paper-secret-unique-9981"),
        ],
    )
}

#[test]
fn seed_003_smoke_tests_pass_against_healthy_services() {
    let p = example("paper-trading-smoke");
    smoke(&p, &[])
        .code(0)
        .stderr_has("ok      the orchestrator reaches its dependencies [orchestration]")
        .stderr_has("ok      no error in the orchestrator log")
        .lacks("paper-secret-unique-9981");
    let v = show_json(&p, "1");
    let paper = &step(&v, "paper-mode")["details"]["assertions"];
    assert_eq!(paper[1]["name"], "json $.dry_run");
    assert_eq!(paper[1]["actual"], "true");
}

#[test]
fn seed_003_smoke_tests_fail_on_a_wrong_version_or_live_trading() {
    let p = example("paper-trading-smoke");
    smoke(&p, &["--var", "fault=wrong-version"])
        .code(4)
        .stderr_has("✗ json $.version: expected == 2.4.0, actual \"2.4.0-wrong\"");
    smoke(&p, &["--var", "dry_run=false"])
        .code(4)
        .stderr_has("FAIL    the gateway trades on paper, in dry-run [paper-mode]")
        .stderr_has("✗ json $.dry_run: expected == true, actual false");
    smoke(&p, &["--var", "fault=log-error"])
        .code(4)
        .stderr_has("FAIL    no error in the signal log")
        .stderr_has("✗ log absent: expected no line matches /(?i)error|critical/");
}

fn plan(stages: &str) -> String {
    format!("project: demo\nenvironments:\n  staging: {{}}\nstages:\n{stages}")
}

#[test]
fn a_secret_capture_is_masked_everywhere() {
    const TOKEN: &str = "tok-CAPTURED-secret-5523";
    let port = serve(|line, _| {
        if line.starts_with("POST /login") {
            response(
                "200 OK",
                "application/json",
                format!(
                    r#"{{"access_token":"{TOKEN}","note":"{}"}}"#,
                    "x".repeat(300)
                )
                .as_bytes(),
            )
        } else {
            response("200 OK", "text/plain", b"whoami: someone")
        }
    });
    let p = Project::new(&plan(&format!(
        r#"  s:
    - id: login
      http: {{ method: POST, url: "http://127.0.0.1:{port}/login", json: {{ user: admin }} }}
      capture:
        token: {{ json: "$.access_token", secret: true }}
    - id: use
      name: use ${{{{ steps.login.outputs.token }}}}
      http:
        url: "http://127.0.0.1:{port}/me"
        auth: {{ bearer: "${{{{ steps.login.outputs.token }}}}" }}
        headers: {{ X-Echo: "${{{{ steps.login.outputs.token }}}}" }}
    - id: echo
      run: echo "the token is ${{{{ steps.login.outputs.token }}}}"
    - id: fail
      name: a failing check shows the body, masked
      http: {{ method: POST, url: "http://127.0.0.1:{port}/login" }}
      expect:
        body: {{ contains: nothing-like-this }}
        json: {{ "$.access_token": {{ equals: something-else }} }}
"#
    )));
    let o = p.run(&common::with_reports(&["deploy", "staging"]));
    o.code(3)
        .stderr_has("use *** [use]")
        .stderr_has("actual \"{\\\"access_token\\\":\\\"***\\\"")
        .lacks(TOKEN)
        .lacks("tok-CAPTURED");
    let files = common::assert_nowhere(&p, &["tok-CAPTURED"], "staging");
    assert!(
        files >= 4,
        "expected the store and step logs, found {files} files"
    );
    assert!(
        p.read(".stagegate/logs/1/003-echo.log")
            .contains("the token is ***")
    );
    assert!(
        p.read(".stagegate/logs/1/001-login.log")
            .contains("\"access_token\":\"***\"")
    );
}

#[test]
fn every_failed_assertion_is_listed_with_expected_and_actual() {
    let port = serve(|_, _| {
        let mut r = response("302 Found", "text/html", b"<html>moved</html>");
        let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        r.splice(
            at..at,
            b"\r\nLocation: https://auth.example.com/login"
                .iter()
                .copied(),
        );
        r
    });
    let p = Project::new(&plan(&format!(
        r#"  s:
    - id: redirect
      http: "http://127.0.0.1:{port}/"
      expect:
        status: 302
        headers:
          location: {{ matches: "^https://auth\\." }}
          content-type: {{ not: {{ contains: json }} }}
    - id: many
      http: "http://127.0.0.1:{port}/"
      expect:
        status: [200, 201]
        headers: {{ x-request-id: {{ exists: true }} }}
        json: {{ "$.version": "1.0" }}
        body_len: "> 1KiB"
        duration: "< 30s"
"#
    )));
    let o = p.run(&["deploy", "staging"]);
    o.code(3)
        .stderr_has("ok      GET http://127.0.0.1:")
        .stderr_has("error: 4 of 5 assertions failed")
        .stderr_has("✗ status: expected one of 200, 201, actual 302")
        .stderr_has("✗ header x-request-id: expected exists, actual absent")
        .stderr_has("✗ json $.version: expected == 1.0, actual the body is not JSON")
        .stderr_has("it begins: <html>moved</html>")
        .stderr_has("✗ body_len: expected > 1KiB, actual 18");
    assert!(!o.stderr.contains("✗ duration"), "{}", o.stderr);
}

#[test]
fn a_server_that_hangs_hits_the_timeout_of_the_check_that_waits() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let p = Project::new(&plan(&format!(
        "  s:\n    - id: hanging\n      http: {{ url: \"http://127.0.0.1:{port}/\", timeout: 300ms }}\n"
    )));
    p.run(&["deploy", "staging"]).code(3).stderr_has(&format!(
        "step `hanging` failed: GET http://127.0.0.1:{port}/: no complete answer within 300ms"
    ));
    // The step's own timeout bounds retries too.
    p.write(
        "stagegate.yml",
        &plan(&format!(
            "  s:\n    - id: patient\n      http: \"http://127.0.0.1:{port}/\"\n      timeout: 400ms\n      retry: {{ attempts: 50, interval: 10ms }}\n"
        )),
    );
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has(&format!("TIMEOUT GET http://127.0.0.1:{port}/ [patient]"))
        .stderr_has("the check did not finish within its timeout of 400ms");
}

#[test]
fn command_checks_capture_retry_and_poll_until() {
    let p = Project::new(&plan(
        r#"  s:
    - id: key
      command: |
        echo "Key length: 32 bytes"
        echo "warning: old key format" >&2
      expect:
        stdout: "Key length: 32 bytes"
        stderr: { contains: warning }
        exit_code: 0
      capture:
        length: { stdout: true, regex: "(\\d+) bytes" }
    - id: poll
      command: n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo "{\"state\":\"$([ $n -ge 3 ] && echo done || echo running)\",\"n\":$n}"
      until: { json: { "$.state": done } }
      retry: { attempts: 10, interval: 10ms }
      expect: { json: { "$.n": { ">=": 3 } } }
    - id: use
      command: test "${{ steps.key.outputs.length }}" = 32
    - id: flaky
      command: exit 3
      retry: { attempts: 3, interval: 10ms }
"#,
    ));
    let o = p.run(&["deploy", "staging"]);
    o.code(3)
        .stderr_has("ok      check: test \"32\" = 32 [use]")
        .stderr_has("retry   check: exit 3: attempt 1 of 3 failed")
        .stderr_has("error: after 3 attempts, 1 of 1 assertion failed")
        .stderr_has("✗ exit_code: expected == 0 (default), actual 3");
    let v = show_json(&p, "1");
    assert_eq!(step(&v, "key")["outputs"]["length"], "32");
    assert_eq!(step(&v, "poll")["attempts"], 3);
    assert_eq!(
        step(&v, "poll")["details"]["until"][0]["actual"],
        "\"done\""
    );
    assert_eq!(p.read("n").trim(), "3");
}

#[test]
fn tcp_checks_see_open_and_closed_ports() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Project::new(&plan(&format!(
        "  s:\n    - tcp: \"127.0.0.1:{open_port}\"\n    - tcp: \"127.0.0.1:{closed_port}\"\n      expect: {{ open: false }}\n    - id: closed\n      tcp: \"127.0.0.1:{closed_port}\"\n"
    )));
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has(&format!("ok      tcp 127.0.0.1:{open_port}"))
        .stderr_has("✗ open: expected == true (default), actual false");
    drop(open);
}

#[test]
fn log_checks_scan_files_and_followed_commands() {
    let p = Project::new(&plan(
        r#"  s:
    - name: the audit entry is there
      log: { file: logs/audit.log, tail: 2 }
      expect:
        present:
          - json: { event: blob_download, actor: admin, bytes: { ">": 0 } }
          - "blob_upload"
        absent: ["(?i)critical"]
    - id: followed
      log: { command: "echo $$ > log.pid; echo starting; sleep 0.3; echo 'ERROR: lost the broker'; sleep 30; echo 'ERROR: too late'", follow: 1s }
      expect: { absent: "(?i)error|critical" }
"#,
    ));
    p.write(
        "logs/audit.log",
        concat!(
            "{\"event\":\"blob_download\",\"actor\":\"old\",\"bytes\":1}\n",
            "{\"event\":\"blob_upload\",\"actor\":\"admin\",\"bytes\":10}\n",
            "{\"event\":\"blob_download\",\"actor\":\"admin\",\"bytes\":10485760}\n",
        ),
    );
    // Following stops after its window, not when the command ends: the line the command
    // prints at its end is not read (2 lines, not 3), and the command is gone.
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("ok      the audit entry is there")
        .stderr_has("FAIL    log of `echo $$ > log.pid; echo starting;")
        .stderr_has("1 matching line of 2; the first, line 2: ERROR: lost the broker");
    let pid: i32 = p.read("log.pid").trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the followed command survived its window: {stat}"
    );
    // A missing entry shows the closest line and why it is not it.
    p.write(
        "stagegate.yml",
        &plan(
            "  s:\n    - log: { file: logs/audit.log }\n      expect:\n        present:\n          - json: { event: blob_download, actor: admin, bytes: 5 }\n",
        ),
    );
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("the closest, line 3, has bytes is 10485760, expected == 5");
}

#[test]
fn repeat_sends_a_request_many_times_with_bounded_concurrency() {
    let port = serve(|_, _| response("200 OK", "application/json", br#"{"status":"ok"}"#));
    let p = Project::new(&plan(&format!(
        r#"  s:
    - id: many
      http: "http://127.0.0.1:{port}/health"
      repeat: 200
      concurrency: 16
      expect: {{ status: 200, json: {{ "$.status": ok }} }}
"#
    )));
    p.run(&["deploy", "staging"])
        .code(0)
        .stderr_has("(2 assertions, 200 requests at");
    let v = show_json(&p, "1");
    let r = &step(&v, "many")["details"]["repeat"];
    assert_eq!(
        (r["sent"].as_u64(), r["passed"].as_u64()),
        (Some(200), Some(200))
    );
    p.run(&["show", "1"])
        .code(0)
        .stdout_has("200 requests, 16 at a time: 200 passed every assertion, 0 errors")
        .stdout_has("✓ json $.status: expected == ok, actual held for all 200 answers");
}

#[test]
fn request_bodies_auth_query_and_generated_payloads_reach_the_server() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let log = seen.clone();
    let port = serve(move |line, body| {
        log.lock().unwrap().push((line.to_string(), body.to_vec()));
        response("200 OK", "application/json", b"{}")
    });
    let p = Project::new(&plan(&format!(
        r#"  s:
    - http:
        method: PUT
        url: "http://127.0.0.1:{port}/json"
        query: {{ dry_run: "true", q: "a b" }}
        json: {{ name: demo, count: 3, on: true, none: null, tags: [a, "1"] }}
    - http: {{ method: POST, url: "http://127.0.0.1:{port}/form", form: {{ a: "1 2", b: "x&y" }} }}
    - http:
        method: POST
        url: "http://127.0.0.1:{port}/raw"
        body: {{ random_bytes: 1KiB, seed: 42 }}
      capture: {{ sent: {{ sha256: sent }} }}
    - http:
        method: POST
        url: "http://127.0.0.1:{port}/multipart"
        multipart:
          note: hello
          file: {{ file: data.txt }}
"#
    )));
    p.write("data.txt", "file content\n");
    p.run(&["deploy", "staging"]).code(0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "PUT /json?dry_run=true&q=a+b HTTP/1.1");
    let json: serde_json::Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "name": "demo", "count": 3, "on": true, "none": null, "tags": ["a", "1"] })
    );
    assert_eq!(seen[1].1, b"a=1+2&b=x%26y");
    assert_eq!(seen[2].1.len(), 1024);
    let v = show_json(&p, "1");
    let sent = v["steps"][2]["outputs"]["sent"].as_str().unwrap();
    let mut sha = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sha.stdin.take().unwrap().write_all(&seen[2].1).unwrap();
    let out = String::from_utf8(sha.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.starts_with(sent), "{out} vs {sent}");
    let multipart = String::from_utf8_lossy(&seen[3].1);
    assert!(
        multipart.contains("name=\"note\"\r\n\r\nhello\r\n"),
        "{multipart}"
    );
    assert!(
        multipart.contains("name=\"file\"; filename=\"data.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nfile content\n\r\n"),
        "{multipart}"
    );
}

#[test]
fn bad_checks_are_validation_errors_at_their_place() {
    let p = Project::new(&plan(
        r#"  s:
    - http: "http://127.0.0.1:1/"
      expect:
        json: { "$.items[": 1 }
        body: { matches: "a(b" }
        status: 9xx
        duration: "< soon"
      capture: { x: "blob_id" }
      retyr: 3
    - command: "true"
      until: { exit_code: 0 }
    - log: { file: x.log }
"#,
    ));
    let o = p.run(&["validate"]);
    o.code(2)
        .stderr_has("invalid JSONPath `$.items[`")
        .stderr_has("stagegate.yml:8:25")
        .stderr_has("invalid regex `a(b`: unclosed group")
        .stderr_has("stagegate.yml:9:28")
        .stderr_has("`9xx` is not a status class")
        .stderr_has("in `duration`: `soon` is not a duration")
        .stderr_has("capture `x`: `blob_id` is not a JSONPath")
        .stderr_has("unknown key `retyr`")
        .stderr_has("did you mean `retry`?")
        .stderr_has("has `until` but no `retry`")
        .stderr_has("is a log check with nothing to look for");
    assert!(
        o.stderr.contains("9 |         body: { matches: \"a(b\" }"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("  |                            ^\n"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_file_check_reads_files_joined_in_order() {
    let p = Project::new(&plan(
        "  s:\n    - file: [a.part, b.part]\n      expect:\n        size: 11\n        body: hello world\n        sha256: B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9\n      capture: { digest: { sha256: body } }\n    - id: missing\n      file: nope.bin\n      expect: { size: 1 }\n",
    ));
    p.write("a.part", "hello ").write("b.part", "world");
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("ok      file a.part + b.part")
        .stderr_has("step `missing` failed: file nope.bin: cannot read nope.bin: No such file");
}

#[test]
fn plan_and_explain_describe_checks() {
    let p = Project::new(
        r#"project: demo
environments:
  staging:
    secrets: { require: [TOKEN] }
stages:
  verify:
    - id: upload
      http:
        method: POST
        url: "http://127.0.0.1:9/upload"
        auth: { bearer: "${{ secrets.TOKEN }}" }
        multipart: { file: { random_bytes: 1MiB, seed: 3 } }
      expect: { status: 201, json: { "$.size": { ">=": 1 } } }
      capture: { id: "$.id", token: { header: x-token, secret: true } }
      retry: { attempts: 3, interval: 100ms }
"#,
    );
    p.run_env(&["plan", "staging"], &[("TOKEN", "t0ken-value-3321")])
        .code(0)
        .stdout_has("POST http://127.0.0.1:9/upload")
        .stdout_has("auth: bearer ***")
        .stdout_has("body: multipart file=1048576 random bytes (seed 3)")
        .stdout_has("expect status == 201; json $.size >= 1")
        .stdout_has("capture token from header x-token (secret)")
        .stdout_has("retry 3 attempts every 100ms")
        .lacks("t0ken-value-3321");
    p.run(&["explain", "expect"])
        .code(0)
        .stdout_has("steps.expect")
        .stdout_has("every assertion is evaluated");
    p.run(&["explain", "steps.http"])
        .code(0)
        .stdout_has("random_bytes");
}

/// TLS options against a real TLS server (`openssl s_server`) with a certificate from a
/// private CA: rejected by default, accepted with `ca:` or `insecure: true`.
#[test]
fn tls_options_trust_a_private_ca_or_any_certificate() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out server.pem 2>/dev/null",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .args(["-cert", "server.pem", "-key", "server.key"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed().as_secs() < 10,
            "openssl s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let p = Project::new(&plan(&format!(
        r#"  s:
    - id: insecure
      http: {{ url: "https://127.0.0.1:{port}/", tls: {{ insecure: true }} }}
    - id: private-ca
      http: {{ url: "https://127.0.0.1:{port}/", tls: {{ ca: ca.pem }} }}
    - id: default
      http: "https://127.0.0.1:{port}/"
"#
    )));
    std::fs::copy(dir.path().join("ca.pem"), p.path().join("ca.pem")).unwrap();
    let o = p.run(&["deploy", "staging"]);
    let _ = server.kill();
    let _ = server.wait();
    o.code(3)
        .stderr_has(&format!("ok      GET https://127.0.0.1:{port}/ [insecure]"))
        .stderr_has(&format!(
            "ok      GET https://127.0.0.1:{port}/ [private-ca]"
        ))
        .stderr_has("step `default` failed: GET https://127.0.0.1:")
        .stderr_has("certificate");
}
