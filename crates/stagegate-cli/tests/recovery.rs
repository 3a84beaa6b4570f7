//! Recovery after `stagegate deploy` is killed with SIGKILL mid-run: `rollback`, the next
//! deploy and `status` must go by what really runs (and answers on the port), not by the
//! `current` file alone.

mod common;
use common::{Project, http_get, status_json};
use std::time::{Duration, Instant};

/// The demo behind a shell that ignores SIGTERM for the server and notes it got one in
/// `term.marker` (in the release directory): a service that is slow to stop.
fn plan(port: &str) -> String {
    format!(
        r#"project: demo
vars: {{ break: "" }}
environments:
  staging:
services:
  web:
    artifacts: [demo]
    start: (trap "" TERM; exec ./demo) & pid=$!; trap "echo TERM > term.marker" TERM; while kill -0 $pid 2>/dev/null; do wait $pid; done
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
      DEMO_BREAK: "${{{{ vars.break }}}}"
    port: {port}
    stop_timeout: 4s
    health:
      path: /health
      expect: {{ status: 200, json: {{ "$.version": "${{{{ release.version }}}}" }} }}
      interval: 50ms
      timeout: 30s
stages:
  deploy:
    - deploy: web
"#
    )
}

fn wait_until(what: &str, max: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < max,
            "{what} did not happen within {max:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kill9(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
}

/// The version the release in `current` answers with, read from its health URL.
fn serving_version(p: &Project) -> Option<String> {
    let s = status_json(p, "staging")["services"][0].clone();
    let url = s["url"].as_str()?.to_string();
    let (code, body) = http_get(&format!("{url}/health"))?;
    (code == 200).then_some(body)
}

fn answers(url: &str, version: &str) -> bool {
    http_get(url).is_some_and(|(c, b)| c == 200 && b.contains(version))
}

#[test]
fn rollback_after_a_kill_during_retire_keeps_the_target_running() {
    let p = Project::with_demo(&plan("auto"));
    p.run(&["deploy", "staging", "--release-version", "1.0.0"])
        .code(0);
    let mut child = p.spawn(&["deploy", "staging", "--release-version", "2.0.0"]);
    // The retire phase has begun once the old release got its SIGTERM.
    p.wait_for(
        ".stagegate/releases/staging/web/1.0.0-d1/term.marker",
        Duration::from_secs(30),
    );
    kill9(&mut child);
    p.run(&["unlock", "staging"]).code(0);
    p.run(&["rollback", "staging", "--to", "1.0.0"]).code(0);
    // Longer than the dead run's stop could still take (stop_timeout 4s).
    std::thread::sleep(Duration::from_secs(6));
    let body = serving_version(&p);
    assert!(
        body.as_deref().is_some_and(|b| b.contains("1.0.0")),
        "release 1.0.0 answers after the rollback; got {body:?}"
    );
}

/// Deploys 1.0.0 on a fixed port, then kills a deploy of a never-healthy 2.0.0 while it
/// holds the port in its health wait.
fn killed_in_health_wait() -> (Project, String) {
    let port = free_port();
    let p = Project::with_demo(&plan(&port.to_string()));
    let url = format!("http://127.0.0.1:{port}/health");
    p.run(&["deploy", "staging", "--release-version", "1.0.0"])
        .code(0);
    let mut child = p.spawn(&[
        "deploy",
        "staging",
        "--release-version",
        "2.0.0",
        "--var",
        "break=health",
    ]);
    wait_until("2.0.0 on the port", Duration::from_secs(30), || {
        http_get(&url).is_some_and(|(_, b)| b.contains("2.0.0"))
    });
    kill9(&mut child);
    p.run(&["unlock", "staging"]).code(0);
    (p, url)
}

#[test]
fn rollback_to_after_a_kill_in_the_health_wait_frees_the_port() {
    let (p, url) = killed_in_health_wait();
    p.run(&["rollback", "staging", "--to", "1.0.0"]).code(0);
    assert!(answers(&url, "1.0.0"), "1.0.0 serves the port again");
}

#[test]
fn plain_rollback_after_a_kill_in_the_health_wait_restores_the_service() {
    let (p, url) = killed_in_health_wait();
    let s = status_json(&p, "staging");
    let text = s.to_string();
    assert!(
        text.contains("abandoned"),
        "status says a release was left starting by a dead run: {text}"
    );
    p.run(&["rollback", "staging"])
        .code(0)
        .lacks("nothing to roll back");
    assert!(answers(&url, "1.0.0"), "1.0.0 serves the port again");
}

#[test]
fn the_next_deploy_after_a_kill_in_the_health_wait_takes_the_port() {
    let (p, url) = killed_in_health_wait();
    p.run(&["deploy", "staging", "--release-version", "3.0.0"])
        .code(0)
        .lacks("another process");
    assert!(answers(&url, "3.0.0"), "3.0.0 serves the port");
    let releases = status_json(&p, "staging")["services"][0]["releases"].clone();
    let two = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["meta"]["id"] == "2.0.0-d2")
        .cloned();
    assert!(
        two.as_ref().is_some_and(|r| r["supervisor_pid"].is_null()),
        "the abandoned release is stopped: {two:?}"
    );
}
