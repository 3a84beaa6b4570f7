//! The `local` driver with a real service (the quickstart demo): releases, health, ports,
//! retirement, automatic and manual rollback, supervision after stagegate exits.

mod common;
use common::{Project, http_get, status_json};

fn plan(port: &str, extra_stage: &str) -> String {
    format!(
        r#"project: demo
vars: {{ break: "", verify: pass }}
environments:
  staging:
    secrets: {{ optional: [SERVICE_TOKEN] }}
services:
  web:
    artifacts: [demo]
    start: echo "starting with token $TOKEN"; exec ./demo
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
      DEMO_BREAK: "${{{{ vars.break }}}}"
      TOKEN: "${{{{ secrets.SERVICE_TOKEN || 'none' }}}}"
    port: {port}
    keep: 2
    stop_timeout: 2s
    health:
      path: /health
      expect: {{ status: 200, json: {{ "$.version": "${{{{ release.version }}}}" }} }}
      interval: 50ms
      timeout: 3s
stages:
  deploy:
    - deploy: web
  verify:
    - id: verify
      run: test "${{{{ vars.verify }}}}" = pass
{extra_stage}"#
    )
}

fn current(p: &Project) -> serde_json::Value {
    status_json(p, "staging")["services"][0].clone()
}

fn deploy(p: &Project, version: &str, extra: &[&str]) -> common::Out {
    let mut args = vec!["deploy", "staging", "--release-version", version];
    args.extend_from_slice(extra);
    p.run(&args)
}

#[test]
fn deploys_a_release_that_keeps_running_and_retires_the_old_one() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[])
        .code(0)
        .stderr_has("healthy at http://127.0.0.1:");
    let s = current(&p);
    assert_eq!(s["current"], "1.0.0-d1");
    assert_eq!(s["running"], true);
    let url1 = s["url"].as_str().unwrap().to_string();
    // stagegate has exited; the supervised service still answers.
    let (code, body) = http_get(&format!("{url1}/health")).expect("v1 answers");
    assert_eq!(code, 200);
    assert!(body.contains("\"version\":\"1.0.0\""), "{body}");
    let meta: serde_json::Value =
        serde_json::from_str(&p.read(".stagegate/releases/staging/web/1.0.0-d1/release.json"))
            .unwrap();
    assert_eq!(meta["artifacts"][0]["path"], "demo");
    assert_eq!(meta["artifacts"][0]["sha256"].as_str().unwrap().len(), 64);

    deploy(&p, "2.0.0", &[])
        .code(0)
        .stderr_has("retired web 1.0.0-d1");
    let s = current(&p);
    assert_eq!(s["current"], "2.0.0-d2");
    let url2 = s["url"].as_str().unwrap();
    assert_ne!(url1, url2, "auto ports give each release its own port");
    assert!(
        http_get(&format!("{url1}/health")).is_none(),
        "the old release was retired"
    );
    assert_eq!(http_get(&format!("{url2}/health")).unwrap().0, 200);

    // keep: 2 deletes the oldest release directories beyond two.
    deploy(&p, "3.0.0", &[]).code(0);
    let dirs: Vec<String> = std::fs::read_dir(p.path().join(".stagegate/releases/staging/web"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert!(!dirs.contains(&"1.0.0-d1".to_string()), "{dirs:?}");

    p.run(&["stop", "staging"])
        .code(0)
        .stdout_has("stopped web release 3.0.0-d3");
    assert_eq!(current(&p)["running"], false);
    p.run(&["status", "staging"]).code(0).stdout_has("STOPPED");
}

#[test]
fn an_unhealthy_release_is_rolled_back_to_the_previous_one() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    let url1 = current(&p)["url"].as_str().unwrap().to_string();
    deploy(&p, "1.1.0", &["--var", "break=health"])
        .code(4)
        .stderr_has("HTTP 503, expected 200")
        .stderr_has("restore web to 1.0.0-d1")
        .stderr_has("rolled back");
    let s = current(&p);
    assert_eq!(s["current"], "1.0.0-d1");
    assert_eq!(s["running"], true);
    assert_eq!(s["url"], url1.as_str());
    assert_eq!(http_get(&format!("{url1}/health")).unwrap().0, 200);
    let releases = s["releases"].as_array().unwrap();
    let broken = releases
        .iter()
        .find(|r| r["meta"]["id"] == "1.1.0-d2")
        .unwrap();
    assert_eq!(broken["meta"]["status"], "rolled_back");
    assert!(broken["supervisor_pid"].is_null());
    let h = p.run(&["history"]);
    h.code(0);
    let lines: Vec<&str> = h.stdout.lines().collect();
    assert!(
        lines[1].contains("1.1.0") && lines[1].contains("rolled_back"),
        "{}",
        h.stdout
    );
    assert!(
        lines[2].contains("1.0.0") && lines[2].contains("succeeded"),
        "{}",
        h.stdout
    );
}

#[test]
fn a_failed_check_after_a_healthy_deploy_switches_back() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    deploy(&p, "2.0.0", &["--var", "verify=fail"])
        .code(4)
        .stderr_has("step `verify` failed");
    let s = current(&p);
    assert_eq!(s["current"], "1.0.0-d1");
    assert_eq!(s["running"], true);
    let stopped = s["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["meta"]["id"] == "2.0.0-d2")
        .unwrap()
        .clone();
    assert!(
        stopped["supervisor_pid"].is_null(),
        "the failed release must be stopped: {stopped}"
    );
}

#[test]
fn a_release_that_cannot_start_fails_fast_with_its_stderr() {
    let p = Project::with_demo(&plan("auto", ""));
    let o = deploy(&p, "1.0.0", &["--var", "break=crash"]);
    o.code(4)
        .stderr_has("exited with code 1 before it became healthy")
        .stderr_has("refusing to start (DEMO_BREAK=crash)");
    assert_eq!(current(&p)["current"], serde_json::Value::Null);
}

#[test]
fn manual_rollback_to_the_previous_or_a_named_release() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    deploy(&p, "2.0.0", &[]).code(0);
    p.run(&["rollback", "staging"])
        .code(0)
        .stderr_has("restore web to 1.0.0-d1")
        .stderr_has("not run by a manual rollback");
    let s = current(&p);
    assert_eq!(s["current"], "1.0.0-d1");
    let url = s["url"].as_str().unwrap();
    assert!(
        http_get(&format!("{url}/health"))
            .unwrap()
            .1
            .contains("1.0.0")
    );
    p.run(&["rollback", "staging", "--to", "2.0.0"]).code(0);
    assert_eq!(current(&p)["current"], "2.0.0-d2");
    p.run(&["rollback", "staging", "--to", "9.9.9"])
        .code(2)
        .stderr_has("has a release `9.9.9`");
    p.run(&["history"]).code(0).stdout_has("rollback");
}

#[test]
fn a_fixed_port_replaces_the_release_and_restores_it_on_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Project::with_demo(&plan(&port.to_string(), ""));
    let url = format!("http://127.0.0.1:{port}/health");
    deploy(&p, "1.0.0", &[]).code(0);
    assert!(http_get(&url).unwrap().1.contains("1.0.0"));
    deploy(&p, "2.0.0", &[]).code(0);
    assert!(http_get(&url).unwrap().1.contains("2.0.0"));
    deploy(&p, "3.0.0", &["--var", "break=health"])
        .code(4)
        .stderr_has("was started again");
    assert!(
        http_get(&url).unwrap().1.contains("2.0.0"),
        "the port serves the previous release again"
    );
    assert_eq!(current(&p)["current"], "2.0.0-d2");
}

#[test]
fn a_port_taken_by_another_process_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = Project::with_demo(&plan(&port.to_string(), ""));
    deploy(&p, "1.0.0", &[])
        .code(3)
        .stderr_has(&format!("port {port} is already in use by another process"))
        .stderr_has("nothing had changed");
    drop(listener);
}

#[test]
fn a_failing_build_changes_nothing() {
    let p = Project::with_demo(&plan("auto", "").replace("    artifacts: [demo]\n", "    build: \"echo compiling; echo 'error: it broke' >&2; exit 101\"\n    artifacts: [demo]\n"));
    deploy(&p, "1.0.0", &[])
        .code(3)
        .stderr_has("the build of service `web` exited with code 101")
        .stderr_has("error: it broke");
    assert!(
        !p.path()
            .join(".stagegate/releases/staging/web/1.0.0-d1")
            .exists()
    );
}

#[test]
fn service_logs_mask_secrets() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    let o = p.run_env(
        &["deploy", "staging", "--release-version", "2.0.0"],
        &[("SERVICE_TOKEN", "svc-secret-9876")],
    );
    o.code(0).lacks("svc-secret-9876");
    let log = p.read(".stagegate/releases/staging/web/2.0.0-d2/stdout.log");
    assert!(log.contains("starting with token ***"), "{log}");
    let meta = p.read(".stagegate/releases/staging/web/2.0.0-d2/release.json");
    assert!(!meta.contains("svc-secret-9876"), "{meta}");
}

#[test]
fn pruning_keeps_the_rollback_target_and_drops_failed_releases_first() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    deploy(&p, "2.0.0", &[]).code(0);
    deploy(&p, "2.1.0", &["--var", "break=health"]).code(4);
    deploy(&p, "3.0.0", &[]).code(0);
    let dirs: Vec<String> = std::fs::read_dir(p.path().join(".stagegate/releases/staging/web"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        dirs.contains(&"3.0.0-d4".to_string()) && dirs.contains(&"2.0.0-d2".to_string()),
        "{dirs:?}"
    );
    assert!(
        !dirs.contains(&"2.1.0-d3".to_string()),
        "the failed release goes first: {dirs:?}"
    );
    p.run(&["rollback", "staging"])
        .code(0)
        .stderr_has("restore web to 2.0.0-d2");
}

#[test]
fn a_supervisor_ignores_sighup() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    let s = current(&p);
    let sup = s["releases"][0]["supervisor_pid"].as_i64().unwrap() as i32;
    let svc = s["releases"][0]["service_pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = current(&p);
    assert_eq!(
        after["releases"][0]["service_pid"].as_i64().unwrap(),
        svc,
        "the service was not restarted"
    );
    assert_eq!(after["releases"][0]["exits"], 0);
}

#[test]
fn a_second_state_store_never_reuses_a_release_directory() {
    let p = Project::with_demo(&plan("auto", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    // A second store elsewhere keeps its own releases beside it.
    p.run(&[
        "deploy",
        "staging",
        "--release-version",
        "1.0.0",
        "--state",
        "other/state.db",
    ])
    .code(0);
    assert!(
        p.path()
            .join("other/releases/staging/web/1.0.0-d1/release.json")
            .exists()
    );
    assert_eq!(
        current(&p)["running"],
        true,
        "the first store's release still runs"
    );
    p.run(&["stop", "staging", "--state", "other/state.db"])
        .code(0);
}
