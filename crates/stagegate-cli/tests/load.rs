//! `stagegate load URL` through the real binary, against a real HTTP server on loopback.

mod common;
#[path = "../../stagegate-load/tests/server/mod.rs"]
mod server;

use common::Project;
use server::Behaviour;

fn project() -> Project {
    Project::new("")
}

#[test]
fn sends_exactly_n_requests_and_prints_a_summary_and_histogram() {
    let s = server::start(Behaviour::default());
    let o = project().run(&["load", &s.url("/"), "-n", "100", "-c", "10"]);
    o.code(0)
        .stdout_has("Requests:     100 (100 ok, 0 failed)")
        .stdout_has("Model:        closed (10 virtual users)")
        .stdout_has("Latency:")
        .stdout_has("p99.9")
        .stdout_has("Response time histogram:")
        .stdout_has("[200] 100 responses")
        .stdout_has("verdict:");
    assert_eq!(s.hits(), 100);
}

#[test]
fn json_report_carries_figures_and_thresholds() {
    let s = server::start(Behaviour::default());
    let o = project().run(&[
        "load",
        &s.url("/"),
        "-n",
        "50",
        "-c",
        "5",
        "--json",
        "--slo",
        "p95 < 2s",
        "--slo",
        "error_rate < 1%",
    ]);
    o.code(0);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
    assert_eq!(j["summary"]["requests"], 50);
    assert_eq!(j["summary"]["status"]["200"], 50);
    assert_eq!(j["model"], "closed");
    let t = j["thresholds"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["text"], "p95 < 2s");
    assert_eq!(t[0]["verdict"], "pass");
    assert_eq!(t[0]["limit"], 2000.0);
    assert!(t[0]["value"].as_f64().unwrap() > 0.0);
    assert!(j["histogram_bytes"].as_u64().unwrap() < 1 << 20);
}

#[test]
fn a_failed_threshold_exits_3_with_value_and_limit() {
    let s = server::start(Behaviour::default());
    let o = project().run(&[
        "load",
        &s.url("/status/500"),
        "-n",
        "20",
        "-c",
        "2",
        "--slo",
        "status_5xx == 0",
        "--slo",
        "p95 < 2s",
    ]);
    o.code(3)
        .stdout_has("✗ status_5xx == 0: 20 (limit == 0)")
        .stdout_has("✓ p95 < 2s")
        .stdout_has("5xx: 20 (first: status 500 from `GET /status/500`)");
}

#[test]
fn bad_threshold_syntax_names_the_text() {
    let s = server::start(Behaviour::default());
    let o = project().run(&["load", &s.url("/"), "-n", "1", "--slo", "p96 < 1s"]);
    o.code(2)
        .stderr_has("--slo: cannot read `p96 < 1s`: unknown metric `p96`")
        .stderr_has("did you mean");
    let o = project().run(&[
        "load",
        &s.url("/"),
        "-n",
        "1",
        "--abort",
        "error_rate > 5% over",
    ]);
    o.code(2)
        .stderr_has("--abort: cannot read `error_rate > 5% over`");
    assert_eq!(s.hits(), 0, "nothing was sent");
}

#[test]
fn invalid_arguments_exit_2() {
    let p = project();
    p.run(&["load", "ftp://x/"])
        .code(2)
        .stderr_has("must start with http:// or https://");
    p.run(&["load", "http://127.0.0.1:1/", "-n", "5", "-z", "1s"])
        .code(2)
        .stderr_has("cannot be used with");
    p.run(&["load", "http://127.0.0.1:1/", "-H", "NoColon"])
        .code(2)
        .stderr_has("invalid header `NoColon`");
}

#[test]
fn a_refused_port_is_reported_as_connect_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = project().run(&[
        "load",
        &format!("http://127.0.0.1:{port}/"),
        "-n",
        "10",
        "-c",
        "2",
    ]);
    o.code(0)
        .stdout_has("Requests:     10 (0 ok, 10 failed)")
        .stdout_has("connect: 10 (first: 127.0.0.1:");
}

#[test]
fn method_headers_and_body_are_sent() {
    let s = server::start(Behaviour::default());
    let o = project().run(&[
        "load",
        &s.url("/echo"),
        "-n",
        "10",
        "-c",
        "1",
        "-m",
        "post",
        "-d",
        "hello",
        "-T",
        "text/plain",
        "--expect-status",
        "200,201",
        "--slo",
        "checks >= 99.9%",
    ]);
    // The server answers "POST hello": 10 bytes.
    o.code(0)
        .stdout_has("Received:     100 bytes (10 per request)")
        .stdout_has("Checks:       100.00% passed (10 of 10)")
        .stdout_has("✓ checks >= 99.9%");
}

#[test]
fn open_model_with_a_rate_sends_n_requests() {
    let s = server::start(Behaviour::default());
    let o = project().run(&["load", &s.url("/"), "-q", "200/s", "-n", "100", "--json"]);
    o.code(0);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
    assert_eq!(j["model"], "open");
    assert_eq!(j["summary"]["requests"], 100);
    assert_eq!(j["target_rps"], 200.0);
    assert_eq!(j["latency_from_intended_time"], true);
    assert_eq!(s.hits(), 100);
}

#[test]
fn comparison_with_a_previous_report() {
    let s = server::start(Behaviour::default());
    let p = project();
    let o = p.run(&[
        "load",
        &s.url("/"),
        "-n",
        "50",
        "--slo",
        "p95 <= +10% vs last_pass",
    ]);
    o.code(0)
        .stdout_has("- p95 <= +10% vs last_pass: ")
        .stdout_has("no passing run to compare with, so not judged");
    let o = p.run(&["load", &s.url("/"), "-n", "50", "--json"]);
    o.code(0);
    p.write("last.json", &o.stdout);
    let o = p.run(&[
        "load",
        &s.url("/"),
        "-n",
        "50",
        "--compare",
        "last.json",
        "--slo",
        "p95 <= +100000% vs last_pass",
        "--slo",
        "rps >= -99.99% vs last_pass",
    ]);
    o.code(0)
        .stdout_has("✓ p95 <= +100000% vs last_pass")
        .stdout_has("last passing run +100000%");
    p.write("bad.json", "{}");
    p.run(&["load", &s.url("/"), "-n", "1", "--compare", "bad.json"])
        .code(2)
        .stderr_has("--compare bad.json: not a `stagegate load --json` report");
    p.run(&["load", &s.url("/"), "-n", "1", "--compare", "nothing.json"])
        .code(2)
        .stderr_has("cannot read --compare nothing.json");
}

#[test]
fn every_user_has_an_identity_and_a_leak_fails_the_isolation_rule() {
    let s = server::start(Behaviour {
        leak_every: Some(7),
        ..Default::default()
    });
    let p = project();
    let mut csv = String::from("id,name\n");
    for i in 1..=30 {
        csv.push_str(&format!("user-{i},name {i}\n"));
    }
    p.write("users.csv", &csv);
    // 30 users, each sending its own id, judged on isolation.
    let isolated = |url: &str| {
        p.run(&[
            "load",
            url,
            "-n",
            "300",
            "-c",
            "30",
            "--users",
            "users.csv",
            "-H",
            "X-User: ${{ vu.id }}",
            "--isolation",
            "id",
            "--slo",
            "isolation_violations == 0",
        ])
    };
    let o = isolated(&s.url("/me"));
    o.code(3)
        .stdout_has("Identities:   30, isolation violations: ")
        .stdout_has("which belongs to another user")
        .stdout_has("✗ isolation_violations == 0");

    let ok = server::start(Behaviour::default());
    let o = isolated(&ok.url("/me"));
    o.code(0).stdout_has("✓ isolation_violations == 0: 0");

    p.run(&[
        "load",
        &ok.url("/me"),
        "-H",
        "X-User: ${{ vu.nope }}",
        "--users",
        "users.csv",
    ])
    .code(2)
    .stderr_has("nope")
    .stderr_has("their columns: id, name");
    p.run(&[
        "load",
        &ok.url("/me"),
        "--users",
        "users.csv",
        "--isolation",
        "email",
    ])
    .code(2)
    .stderr_has("users.csv has no column `email`");
}

#[test]
fn an_abort_rule_stops_the_run_and_exits_3() {
    let s = server::start(Behaviour::default());
    let o = project().run(&[
        "load",
        &s.url("/status/503"),
        "-z",
        "60s",
        "-c",
        "2",
        "--abort",
        "error_rate > 50%",
    ]);
    o.code(3)
        .stdout_has("Aborted: `error_rate > 50%`: 100.00% > 50.00%");
}
