//! What the docs say about where files go and what a restored release runs with, checked
//! against the binary: `.outputs` files, releases and logs under `--state`, and the env of a
//! release that a rollback starts again.

mod common;
use common::Project;

/// docs/running.md, "Step logs": the output file is read when the step ends, then removed;
/// its values live on in the record.
#[test]
fn the_outputs_file_is_read_then_removed_and_its_values_are_recorded() {
    let p = Project::new(
        "project: demo\nenvironments:\n  staging: {}\nstages:\n  s:\n    - id: tag\n      run: echo \"tag=v1\" >> \"$STAGEGATE_OUTPUT\"\n",
    );
    p.run(&["deploy", "staging"]).code(0);
    let logs = p.path().join(".stagegate/logs/1");
    assert!(logs.join("001-tag.log").exists());
    assert!(!logs.join("001-tag.outputs").exists());
    let show = common::show_json(&p, "1");
    assert_eq!(common::step(&show, "tag")["outputs"]["tag"], "v1");
}

/// docs/plan.md, "state", and docs/local-driver.md: releases and step logs live beside the
/// store that `--state` names, not in the plan directory.
#[test]
fn releases_and_logs_follow_the_state_store() {
    let p = Project::with_demo(
        r#"project: demo
environments:
  staging: {}
services:
  web:
    artifacts: [demo]
    start: exec ./demo
    env: { DEMO_VERSION: "${{ release.version }}" }
    port: auto
    health: { path: /health, interval: 50ms, timeout: 3s }
stages:
  deploy:
    - deploy: web
"#,
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let db = elsewhere.path().join("team.db");
    let db = db.to_str().unwrap();
    p.run(&[
        "--state",
        db,
        "deploy",
        "staging",
        "--release-version",
        "1.0.0",
    ])
    .code(0);
    assert!(
        elsewhere
            .path()
            .join("releases/staging/web/1.0.0-d1")
            .is_dir()
    );
    assert!(elsewhere.path().join("logs/1").is_dir());
    assert!(!p.path().join(".stagegate").exists());
    p.run(&["--state", db, "stop", "staging"]).code(0);
}

/// docs/local-driver.md, "Automatic rollback": an old release started again runs with the
/// start command and env it was deployed with (secrets read anew), not the failed one's.
#[test]
fn a_restarted_release_gets_the_env_it_was_deployed_with() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Project::with_demo(&format!(
        r#"project: demo
vars: {{ greeting: hello, break: "" }}
environments:
  staging: {{}}
services:
  web:
    artifacts: [demo]
    start: printf '%s' "$GREETING" > "../../../../../greeting-$STAGEGATE_RELEASE"; exec ./demo
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
      DEMO_BREAK: "${{{{ vars.break }}}}"
      GREETING: "${{{{ vars.greeting }}}}"
    port: {port}
    stop_timeout: 2s
    health: {{ path: /health, interval: 50ms, timeout: 2s }}
stages:
  deploy:
    - deploy: web
"#
    ));
    p.run(&[
        "deploy",
        "staging",
        "--release-version",
        "1.0.0",
        "--var",
        "greeting=old",
    ])
    .code(0);
    assert_eq!(p.read("greeting-1.0.0-d1"), "old");
    std::fs::remove_file(p.path().join("greeting-1.0.0-d1")).unwrap();
    // With a fixed port the old release is stopped for the new one, and the failed new one
    // makes the rollback start the old one again.
    p.run(&[
        "deploy",
        "staging",
        "--release-version",
        "1.1.0",
        "--var",
        "greeting=new",
        "--var",
        "break=health",
    ])
    .code(4);
    assert_eq!(p.read("greeting-1.1.0-d2"), "new");
    assert_eq!(
        p.read("greeting-1.0.0-d1"),
        "old",
        "the restarted release's env"
    );
    p.run(&["stop", "staging"]).code(0);
}
