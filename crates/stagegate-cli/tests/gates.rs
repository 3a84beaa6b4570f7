//! Gates through the real binary: the examples under examples/gates (each passing and
//! blocked), git gates against real repositories with a bare upstream, commands, secrets
//! from real sources, env from a real HTTP server on loopback, config lint, checklists
//! (with a real terminal through `script`), windows and overrides, `check`, validation, and
//! no secret value in any output.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Project, show_json, show_json_with};

/// A plan with a staging and a production environment and the given stages.
fn plan(stages: &str) -> String {
    format!("project: demo\nenvironments:\n  staging: {{}}\n  production: {{}}\nstages:\n{stages}")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gates")
}

/// A copy of an example directory in a temp dir, without what earlier runs left.
fn example(name: &str) -> Project {
    let p = Project::new("");
    copy_dir(&examples().join(name), p.path());
    p
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        let name_s = name.to_string_lossy();
        if name_s == ".stagegate" || name_s.ends_with(".log") {
            continue;
        }
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The examples: each with a passing and a blocked case.

const PAPER: &[(&str, &str)] = &[
    ("ALPACA_PAPER_API_KEY", "PKTEST1234567890ABCD"),
    ("ALPACA_PAPER_API_SECRET", "paper-secret-value"),
    ("STAGING_DB_PASSWORD", "staging-db-pw"),
    ("DRY_RUN", "true"),
    ("ENVIRONMENT", "staging"),
];

#[test]
fn credentials_example_passes_with_paper_keys_and_blocks_a_live_key() {
    let p = example("credentials");
    p.run_clean(&["check", "staging"], PAPER)
        .code(0)
        .stderr_has("3 required secret(s) are set")
        .stderr_has("ALPACA_PAPER_API_KEY is set (sha256:")
        .stderr_has("DRY_RUN is `true`")
        .stderr_has("nothing was changed")
        .lacks("PKTEST1234567890ABCD");
    assert!(!p.path().join("deployed.log").exists());

    const LIVE: &str = "AKLIVE1234567890ABCD";
    let mut env = PAPER.to_vec();
    env.push(("ALPACA_LIVE_API_KEY", LIVE));
    p.run_clean(&["deploy", "staging"], &env)
        .code(3)
        .stderr_has("forbidden secret(s) set in staging: ALPACA_LIVE_API_KEY")
        .stderr_has("matches forbidden *_LIVE_*")
        .stderr_has("looks like an Alpaca live key id")
        .stderr_has("nothing had changed yet")
        .lacks(LIVE);
    assert!(
        !p.path().join("deployed.log").exists(),
        "the deploy step ran"
    );

    // DRY_RUN off: the env gate blocks.
    let mut env = PAPER.to_vec();
    env.retain(|(k, _)| *k != "DRY_RUN");
    env.push(("DRY_RUN", "false"));
    p.run_clean(&["deploy", "staging"], &env)
        .code(3)
        .stderr_has("DRY_RUN is `false` in the process environment, expected `true`");

    // With everything right, the deploy goes ahead.
    p.run_clean(&["deploy", "staging"], PAPER).code(0);
    assert!(p.read("deployed.log").contains("paper mode"));
}

#[test]
fn config_example_passes_and_blocks_localhost_urls_with_file_and_line() {
    let p = example("config");
    p.run(&["check", "staging"])
        .code(0)
        .stderr_has("read 4 file(s)")
        .stderr_has("no URL to localhost, 127.0.0.1, 0.0.0.0 in 4 files")
        .stderr_has("All checks pass");
    let o = p.run(&["check", "staging", "--var", "config=config.broken"]);
    o.code(3)
        .stderr_has("config.broken/staging.env:3: URL to localhost: http://localhost:8000")
        .stderr_has("config.broken/frontend.json:2: URL to 127.0.0.1: http://127.0.0.1:8000")
        .stderr_has("config.broken/backend.toml:3: URL to 0.0.0.0")
        .stderr_has("config.broken/staging.env:2: DEBUG=true")
        .stderr_has("plain http")
        // The password in a database URL is never shown.
        .stderr_has("postgresql://***@localhost:5432/netra")
        .lacks("hunter2")
        // A forbidden pattern names the line, never what matched.
        .stderr_has("config.broken/staging.env:5: a live payment key")
        .lacks("sk_live_abcdef123456");
    // Findings are in the record too.
    let v = show_json(&p, "2");
    let details = &v["steps"][0]["details"];
    assert_eq!(details["gate"], "config");
    assert_eq!(details["passed"], false);
    let text = details.to_string();
    assert!(text.contains("config.broken/staging.env:3"), "{text}");
    p.run(&["show", "2"])
        .code(0)
        .stdout_has("FAIL   4 findings of a URL to localhost")
        .stdout_has("- config.broken/staging.env:2: DEBUG=true");
}

#[test]
fn checklist_examples_pass_when_acknowledged_and_list_what_is_missing() {
    let p = example("checklists");
    p.run(&[
        "-f",
        "erp-hub.yml",
        "deploy",
        "staging",
        "--ack-all",
        "--as",
        "alice",
    ])
    .code(0)
    .stderr_has("Database backup completed: acknowledged by alice");
    let v = show_json_with(&p, &["-f", "erp-hub.yml"], "1");
    let acks = v["steps"][0]["details"]["acknowledgements"]
        .as_array()
        .unwrap();
    assert_eq!(acks.len(), 6);
    assert_eq!(acks[0]["id"], "ci-green");
    assert_eq!(acks[0]["by"], "alice");
    assert!(acks[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["deployment"]["actor"], "alice");

    std::fs::remove_file(p.path().join("deployed.log")).unwrap();
    p.run(&[
        "-f",
        "erp-hub.yml",
        "deploy",
        "staging",
        "--ack",
        "ci-green",
        "--ack",
        "Database backup completed",
    ])
    .code(3)
    .stderr_has("All CI checks passing on main branch: acknowledged by tester")
    .stderr_has("Database backup completed: acknowledged by tester")
    .stderr_has("Rollback plan reviewed: not acknowledged")
    .stderr_has("there is no terminal to ask at: pass --ack pr-7 --ack staging-healthy --ack rollback-plan --ack stakeholders");
    assert!(!p.path().join("deployed.log").exists());

    p.run(&["-f", "dashboard-api.yml", "check", "staging"])
        .code(3)
        .stderr_has("Security review completed: not acknowledged")
        .stderr_has("--ack security-review-completed");
    p.run(&[
        "-f",
        "dashboard-api.yml",
        "check",
        "staging",
        "--ack-all",
        "--as",
        "bob",
    ])
    .code(0)
    .stderr_has("Team communication plan established: acknowledged by bob");
}

#[test]
fn windows_example_opens_tuesday_to_thursday_and_records_a_hotfix_override() {
    let p = example("windows");
    p.run(&["check", "production", "--at", "2025-10-07T11:00:00+01:00"])
        .code(0)
        .stderr_has("is inside Tue-Thu 10:00-14:00 (Europe/London)");
    p.run(&["check", "production", "--at", "2025-10-06T11:00:00+01:00"])
        .code(3)
        .stderr_has("Mon 2025-10-06 11:00 BST (as given by --at) is outside the deploy windows")
        .stderr_has("the next window opens Tue 2025-10-07 10:00 BST (in 23h 00m)")
        .stderr_has("--override");
    p.run(&["check", "production", "--at", "2025-12-23T11:00:00Z"])
        .code(3)
        .stderr_has("is in a freeze until Mon 2026-01-05 00:00 GMT: year-end change freeze")
        .stderr_has("the next window opens Tue 2026-01-06 10:00 GMT");
    p.run(&[
        "check",
        "production",
        "--at",
        "2025-10-06T11:00:00+01:00",
        "--override",
        "hotfix for INC-4711",
        "--report",
        "markdown=r.md",
        "--report",
        "junit=r.xml",
    ])
    .code(0)
    .stderr_has("was overridden by tester: hotfix for INC-4711")
    .stderr_has("OVERRIDE overridden by tester at");
    // Shown in history, in show, and in the reports.
    p.run(&["history"])
        .code(0)
        .stdout_has("gate `release-window` overridden by tester at")
        .stdout_has("hotfix for INC-4711");
    let h: serde_json::Value = serde_json::from_str(&p.run(&["history", "--json"]).stdout).unwrap();
    assert_eq!(h[0]["overrides"][0]["step"], "release-window");
    assert_eq!(h[0]["overrides"][0]["by"], "tester");
    assert!(h[1].get("overrides").is_none(), "{h}");
    p.run(&["show", "4"])
        .code(0)
        .stdout_has("OVERRIDE overridden by tester");
    let md = p.read("r.md");
    assert!(md.contains("### ⚠️ Overrides"), "{md}");
    assert!(md.contains("overridden by **tester**"), "{md}");
    let junit = p.read("r.xml");
    assert!(
        junit.contains("overridden_by") && junit.contains("hotfix for INC-4711"),
        "{junit}"
    );
    // Staging has no window.
    p.run(&["check", "staging", "--at", "2025-10-06T11:00:00+01:00"])
        .code(0)
        .stderr_has("  skip    production release window [release-window]");
}

// ---------------------------------------------------------------------------------------
// git gates against real repositories.

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Tester")
        .env("GIT_AUTHOR_EMAIL", "tester@example.com")
        .env("GIT_COMMITTER_NAME", "Tester")
        .env("GIT_COMMITTER_EMAIL", "tester@example.com")
        .output()
        .expect("git runs");
    assert!(
        o.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A project that is a git clone with a bare upstream: `main` pushed and tagged `v1.0.0`.
fn git_project(gate: &str) -> (Project, tempfile::TempDir) {
    let p = Project::new(&plan(&format!(
        "  preflight:\n    - id: source\n{gate}\n  deploy:\n    - run: echo deployed >> .stagegate/deployed.log\n"
    )));
    let upstream = tempfile::tempdir().unwrap();
    git(upstream.path(), &["init", "-q", "--bare", "-b", "main"]);
    let d = p.path();
    p.write(".gitignore", ".stagegate/\n");
    git(d, &["init", "-q", "-b", "main"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "plan"]);
    git(
        d,
        &[
            "remote",
            "add",
            "origin",
            &upstream.path().display().to_string(),
        ],
    );
    git(d, &["push", "-q", "-u", "origin", "main"]);
    git(d, &["tag", "v1.0.0"]);
    (p, upstream)
}

const GIT_GATE: &str = r#"      gate: git
      branch: [main, "release/*"]
      clean: true
      pushed: true
      tag: "v*"
      ancestor_of: main"#;

#[test]
fn git_gate_passes_on_a_clean_pushed_tagged_main() {
    let (p, _upstream) = git_project(GIT_GATE);
    let o = p.run(&["deploy", "staging"]);
    o.code(0)
        .stderr_has("on branch main (allowed: main, release/*)")
        .stderr_has("the working tree is clean")
        .stderr_has("is pushed to origin/main")
        .stderr_has("tag v1.0.0 at HEAD matches v*")
        .stderr_has("is in main");
    let v = show_json(&p, "1");
    assert_eq!(v["steps"][0]["outputs"]["tag"], "v1.0.0");
    assert_eq!(v["steps"][0]["outputs"]["branch"], "main");
    // The state stagegate wrote (.stagegate, even when not ignored) does not make it dirty.
    std::fs::remove_file(p.path().join(".gitignore")).unwrap();
    git(p.path(), &["commit", "-q", "-am", "no ignore"]);
    git(p.path(), &["push", "-q"]);
    git(p.path(), &["tag", "v1.0.1"]);
    p.run(&["check", "staging"])
        .code(0)
        .stderr_has("the working tree is clean");
}

#[test]
fn git_gate_blocks_a_dirty_unpushed_untagged_tree() {
    let (p, _upstream) = git_project(GIT_GATE);
    p.write("notes.txt", "scratch\n");
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("the working tree has 1 uncommitted change(s)")
        .stderr_has("?? notes.txt")
        .stderr_has("commit or stash the changes")
        .lacks(".stagegate/");
    git(p.path(), &["add", "notes.txt"]);
    git(p.path(), &["commit", "-q", "-m", "notes"]);
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("main has 1 commit(s) not pushed to origin/main")
        .stderr_has("no tag at HEAD")
        .stderr_has("matches v* (tags at HEAD: none)");
    assert!(!p.path().join(".stagegate/deployed.log").exists());
    git(p.path(), &["push", "-q"]);
    git(p.path(), &["tag", "v1.1.0"]);
    p.run(&["deploy", "staging"]).code(0);
}

#[test]
fn git_gate_checks_the_branch_detached_heads_and_ancestry() {
    let (p, _upstream) = git_project(
        r#"      gate: git
      branch: [main, "release/*"]
      pushed: true
      ancestor_of: main"#,
    );
    git(p.path(), &["checkout", "-q", "-b", "feature/x"]);
    p.write("f.txt", "feature\n");
    git(p.path(), &["add", "f.txt"]);
    git(p.path(), &["commit", "-q", "-m", "feature"]);
    p.run(&["check", "staging"])
        .code(3)
        .stderr_has("on branch feature/x, which is not one of main, release/*")
        .stderr_has("branch feature/x has no upstream; nothing to compare with")
        .stderr_has("is not in main");
    // A release branch without an upstream: the branch passes, pushed has nothing to check.
    git(p.path(), &["checkout", "-q", "-b", "release/2", "main"]);
    p.run(&["check", "staging"])
        .code(0)
        .stderr_has("on branch release/2")
        .stderr_has("has no upstream");
    // A detached HEAD at the tip of main, as CI checks out.
    git(p.path(), &["checkout", "-q", "--detach", "main"]);
    p.run(&["check", "staging"])
        .code(0)
        .stderr_has("is detached at the tip of main");
    git(p.path(), &["checkout", "-q", "--detach", "feature/x"]);
    p.run(&["check", "staging"])
        .code(3)
        .stderr_has("is detached and no allowed branch (main, release/*) points at it (branches at HEAD: feature/x)");
    // Not a repository at all.
    let q = Project::new(&plan("  p:\n    - gate: git\n      clean: true\n"));
    q.run(&["check", "staging"])
        .code(3)
        .stderr_has("is not in a git repository");
}

// ---------------------------------------------------------------------------------------
// command gates.

#[test]
fn command_gate_asserts_exit_code_and_output() {
    let p = Project::new(&plan(
        r#"  preflight:
    - id: suite
      gate: command
      command: 'echo "tests: 12 passed"; echo "warning: slow" >&2'
      expect:
        output_contains: "12 passed"
        output_lacks: [FAILED]
        output_matches: 'tests: \d+ passed'
    - id: lenient
      gate: command
      command: exit 1
      expect: { exit: [0, 1] }
"#,
    ));
    p.run(&["check", "staging"])
        .code(0)
        .stderr_has("the output contains \"12 passed\"")
        .stderr_has("the output matches /tests: \\d+ passed/")
        .stderr_has("the command exited with code 1 (expected 0 or 1)");

    let p = Project::new(&plan(
        r#"  preflight:
    - id: ci-green
      gate: command
      command: echo "3 FAILED"; exit 2
      expect: { output_lacks: FAILED }
  deploy:
    - run: touch deployed
"#,
    ));
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("the command exited with code 2, expected 0")
        .stderr_has("the output contains \"FAILED\" (line 1)")
        .stderr_has("| 3 FAILED");
    assert!(!p.path().join("deployed").exists());
    assert_eq!(show_json(&p, "1")["steps"][0]["exit_code"], 2);
}

#[test]
fn command_gate_timeout_kills_and_retries_retry() {
    let p = Project::new(&plan(
        "  preflight:\n    - id: slow\n      gate: command\n      command: sleep 30\n      timeout: 300ms\n",
    ));
    p.run(&["check", "staging"])
        .code(3)
        .stderr_has("did not finish within 300ms");
    assert_eq!(show_json(&p, "1")["steps"][0]["status"], "timed_out");

    let p = Project::new(&plan(
        r#"  preflight:
    - id: warming-up
      gate: command
      command: n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ]
      retries: 3
      retry_delay: 10ms
"#,
    ));
    p.run(&["check", "staging"]).code(0).stderr_has("retry");
    assert_eq!(show_json(&p, "1")["steps"][0]["attempts"], 2);
}

// ---------------------------------------------------------------------------------------
// secrets gates.

#[test]
fn secrets_from_a_command_never_show_a_value_anywhere() {
    const LIVE: &str = "sk_live_51Habcdefghijklmnop";
    const DB: &str = "db-password-7f3a";
    let p = Project::new(&plan(
        r#"  preflight:
    - id: vault
      gate: secrets
      # As `vault kv get -format=json secret/staging` prints it.
      from:
        - { command: "cat vault.json", json: "$.data.data" }
      require: [DB_PASSWORD, STRIPE_KEY]
      forbid: ["*_LIVE_*"]
      forbid_values: [stripe_live_key, aws_access_key_id]
"#,
    ));
    p.write(
        "vault.json",
        &format!(
            r#"{{"request_id": "x", "data": {{"data": {{"DB_PASSWORD": "{DB}", "STRIPE_KEY": "{LIVE}", "AWS_KEY": "AKIAABCDEFGHIJKLMNOP"}}, "metadata": {{}}}}}}"#
        ),
    );
    let o = p.run(&common::with_reports(&["check", "staging"]));
    o.code(3)
        .stderr_has("DB_PASSWORD is set (sha256:")
        .stderr_has("from `cat vault.json…`")
        .stderr_has("STRIPE_KEY (sha256:")
        .stderr_has("looks like a Stripe live key")
        .stderr_has("AWS_KEY (sha256:")
        .stderr_has("looks like an AWS access key id")
        .lacks(LIVE)
        .lacks(DB)
        .lacks("AKIAABCDEFGHIJKLMNOP");
    let fingerprint = stagegate_fingerprint(LIVE);
    assert!(o.stderr.contains(&fingerprint), "{}", o.stderr);
    common::assert_nowhere(&p, &[LIVE, DB, "AKIAABCDEFGHIJKLMNOP"], "staging");
}

/// The fingerprint `Secret::fingerprint` gives: sha256, first 8 hex digits.
fn stagegate_fingerprint(v: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(v.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum runs");
    format!("sha256:{}", &String::from_utf8_lossy(&out.stdout)[..8])
}

#[test]
fn secrets_from_dotenv_files_required_names_and_drift() {
    let p = Project::new(
        r#"project: demo
environments:
  staging:
    secrets: { optional: [API_TOKEN, PAYMENTS_KEY] }
  production:
    secrets: { optional: [API_TOKEN] }
stages:
  preflight:
    - id: present
      gate: secrets
      from: [environment, { dotenv: deploy/staging.env }]
      require: [API_TOKEN, MISSING_ONE]
    - id: drift
      gate: secrets
      drift: [production]
"#,
    );
    p.write("deploy/staging.env", "API_TOKEN=tok-123\n");
    let o = p.run_clean(&["check", "staging"], &[]);
    o.code(3)
        .stderr_has("API_TOKEN is set (sha256:")
        .stderr_has("from deploy/staging.env")
        .stderr_has(
            "required secret(s) missing: MISSING_ONE (looked in: environment, deploy/staging.env)",
        )
        .stderr_has("PAYMENTS_KEY is declared for staging but not for production")
        // Both gates ran although the first failed.
        .stderr_has("the gate(s) `drift` failed as well")
        .lacks("tok-123");
    // An expected difference, and the name present: both pass.
    p.write(
        "stagegate.yml",
        &p.read("stagegate.yml")
            .replace("MISSING_ONE", "PAYMENTS_KEY")
            .replace(
                "drift: [production]",
                "drift: { with: [production], ignore: [\"PAYMENTS_*\"] }",
            ),
    );
    p.run_clean(&["check", "staging"], &[("PAYMENTS_KEY", "pk-1")])
        .code(0)
        .stderr_has("staging declares the same 1 secret name(s) as production");
    // `only` narrows what forbid_values looks at: the deployer's own AWS key is not a finding.
    p.write(
        "stagegate.yml",
        &plan("  p:\n    - gate: secrets\n      only: [\"ALPACA_*\"]\n      forbid_values: [aws_access_key_id]\n"),
    );
    let aws = [("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP")];
    p.run_clean(&["check", "staging"], &aws)
        .code(0)
        .stderr_has("none of 0 value(s)");
    p.write(
        "stagegate.yml",
        &p.read("stagegate.yml").replace("ALPACA_*", "A*"),
    );
    p.run_clean(&["check", "staging"], &aws)
        .code(3)
        .stderr_has("AWS_ACCESS_KEY_ID (sha256:");
    // A source command that fails says so, with its error stream.
    p.write(
        "stagegate.yml",
        &plan("  p:\n    - gate: secrets\n      from: [{ command: \"echo 'permission denied' >&2; exit 2\" }]\n      require: [X]\n"),
    );
    p.run_clean(&["check", "staging"], &[])
        .code(3)
        .stderr_has("the source command exited with code 2: permission denied");
}

// ---------------------------------------------------------------------------------------
// env gates.

/// A tiny HTTP server on loopback answering every request with `body` (JSON).
fn config_server(body: &'static str) -> String {
    let port =
        common::serve(move |_, _| common::response("200 OK", "application/json", body.as_bytes()));
    format!("http://127.0.0.1:{port}")
}

#[test]
fn env_gate_reads_a_running_services_config_endpoint() {
    let url = config_server(
        r#"{"dry_run": true, "alpaca_paper": true, "environment": "staging", "limits": {"orders": 5}}"#,
    );
    let p = Project::new(&format!(
        r#"project: demo
vars: {{ gateway: "{url}" }}
environments:
  staging: {{}}
stages:
  verify:
    - id: paper-mode
      gate: env
      from: {{ url: "${{{{ vars.gateway }}}}/api/v1/config" }}
      expect:
        "$.dry_run": "true"
        "$.environment": "${{{{ environment.name }}}}"
        "$.limits.orders": "5"
"#
    ));
    p.run(&["check", "staging"])
        .code(0)
        .stderr_has("$.dry_run is `true` in http://")
        .stderr_has("$.limits.orders is `5`");
    p.write(
        "stagegate.yml",
        &p.read("stagegate.yml").replace(
            "\"$.limits.orders\": \"5\"",
            "\"$.alpaca_paper\": \"false\"\n        \"$.missing\": \"x\"",
        ),
    );
    p.run(&["check", "staging"])
        .code(3)
        .stderr_has("$.alpaca_paper is `true` in http://")
        .stderr_has("expected `false`")
        .stderr_has("$.missing is not set");
    // Nothing listens: the gate says it cannot reach the service.
    p.run(&["check", "staging", "--var", "gateway=http://127.0.0.1:9"])
        .code(3)
        .stderr_has("cannot get http://127.0.0.1:9/api/v1/config");
}

#[test]
fn env_gate_reads_dotenv_files_and_never_shows_a_secret() {
    let p = Project::new(
        r#"project: demo
environments:
  staging:
    secrets: { optional: [ADMIN_TOKEN] }
stages:
  preflight:
    - gate: env
      from: { dotenv: .env.runtime }
      expect: { DRY_RUN: "true", ENVIRONMENT: staging }
    - gate: env
      expect: { ADMIN_TOKEN: expected-token }
"#,
    );
    p.write(".env.runtime", "DRY_RUN=false\nENVIRONMENT=staging\n");
    p.run_clean(
        &["check", "staging"],
        &[("ADMIN_TOKEN", "the-real-token-9")],
    )
    .code(3)
    .stderr_has("DRY_RUN is `false` in .env.runtime, expected `true`")
    .stderr_has("ENVIRONMENT is `staging` in .env.runtime")
    .stderr_has("ADMIN_TOKEN is sha256:")
    .lacks("the-real-token-9");
}

// ---------------------------------------------------------------------------------------
// checklists.

#[test]
fn checklist_acks_by_id_or_text_and_refuses_unknown_items() {
    let p = Project::new(&plan(
        "  preflight:\n    - gate: checklist\n      items: [Database backup completed, { id: rb, text: Rollback plan reviewed }]\n",
    ));
    p.run(&[
        "check",
        "staging",
        "--ack",
        "database backup COMPLETED",
        "--ack",
        "rb",
    ])
    .code(0);
    p.run(&["check", "staging", "--ack", "databse-backup-completed"])
        .code(2)
        .stderr_has("--ack `databse-backup-completed` names no checklist item: did you mean `database-backup-completed`?");
    // --ack-all needs a name to record.
    let o = p
        .cmd(&["check", "staging", "--ack-all"])
        .env_remove("STAGEGATE_ACTOR")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ack-all needs --as NAME"));
    p.run(&["check", "staging", "--ack-all", "--as", "carol"])
        .code(0)
        .stderr_has("acknowledged by carol");
}

#[test]
fn checklist_asks_at_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let p = Project::new(&plan(
        "  preflight:\n    - gate: checklist\n      items: [Database backup completed, Rollback plan reviewed]\n  deploy:\n    - run: touch deployed\n",
    ));
    let prompt = |answers: &str| {
        use std::io::Write;
        let mut c = Command::new("script")
            .args([
                "-qec",
                &format!("{} deploy staging --color never", common::bin().display()),
                "/dev/null",
            ])
            .current_dir(p.path())
            .env_remove("CI")
            .env("STAGEGATE_ACTOR", "dana")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(answers.as_bytes())
            .unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = prompt("y\nn\n");
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("[ ] Database backup completed ? [y/N]"),
        "{out}"
    );
    assert!(
        out.contains("Database backup completed: acknowledged by dana"),
        "{out}"
    );
    assert!(out.contains("were not confirmed at the prompt"), "{out}");
    assert!(!p.path().join("deployed").exists());
    let (code, out) = prompt("y\ny\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(p.path().join("deployed").exists());
}

// ---------------------------------------------------------------------------------------
// windows and overrides.

/// A freeze around now (yesterday to tomorrow, UTC), so the deploy is blocked whenever the
/// test runs.
fn freeze_now() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = |offset: i64| {
        let o = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", now + offset * 86400),
                "+%Y-%m-%d",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    (day(-1), day(1))
}

#[test]
fn a_freeze_blocks_a_deploy_and_only_an_allowed_override_passes_it() {
    let (from, to) = freeze_now();
    let gate = |allow: bool| {
        plan(&format!(
            "  preflight:\n    - id: freeze\n      gate: window\n      freeze: [{{ from: {from}, to: {to}, reason: incident 4711 in progress }}]\n      allow_override: {allow}\n  deploy:\n    - run: touch deployed\n"
        ))
    };
    let p = Project::new(&gate(false));
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has(": incident 4711 in progress")
        .stderr_has("the next window opens");
    p.run(&["deploy", "staging", "--override", "please"])
        .code(3)
        .stderr_has("--override does not apply to this gate");
    p.run(&["deploy", "staging", "--override", "  "])
        .code(2)
        .stderr_has("--override needs a justification");
    assert!(!p.path().join("deployed").exists());

    p.write("stagegate.yml", &gate(true));
    p.run(&[
        "deploy",
        "staging",
        "--override",
        "rollback of the bad config, approved by Erin",
    ])
    .code(0)
    .stderr_has("overridden by tester: rollback of the bad config, approved by Erin");
    assert!(p.path().join("deployed").exists());
    let v = show_json(&p, "3");
    assert_eq!(v["steps"][0]["details"]["passed"], false);
    assert_eq!(v["steps"][0]["details"]["overridden"]["by"], "tester");
    assert_eq!(v["steps"][0]["status"], "passed");
}

// ---------------------------------------------------------------------------------------
// check, ordering and exit codes.

#[test]
fn check_runs_only_the_gates_and_takes_no_lock() {
    let p = Project::new(&plan(
        r#"  build:
    - run: touch built
  preflight:
    - gate: env
      expect: { HOME: "${{ env.HOME }}" }
  deploy:
    - id: release
      run: touch started; echo "url=http://127.0.0.1:1" >> "$STAGEGATE_OUTPUT"; while [ ! -f go ]; do sleep 0.05; done
  verify:
    - id: after
      gate: command
      command: "true"
    - id: needs-deploy
      gate: env
      from: { url: "${{ steps.release.outputs.url }}/config" }
      expect: { "$.ok": "true" }
"#,
    ));
    let o = p.run(&["check", "staging"]);
    o.code(0)
        .stderr_has("checking the gates of demo")
        .stderr_has("== stage preflight")
        .stderr_has("== stage verify")
        .stderr_has("skipped by `check`: it needs `steps.release.outputs.url`, which only a deploy produces")
        .stderr_has("every gate passed")
        .stderr_has("nothing was changed")
        .lacks("== stage build")
        .lacks("== stage deploy");
    assert!(!p.path().join("built").exists());
    assert!(!p.path().join("started").exists());
    p.run(&["history"]).code(0).stdout_has("check");
    // A deploy holds the lock (its step waits for `go`); a check runs beside it.
    let mut deploy = p.spawn(&["deploy", "staging"]);
    p.wait_for("started", std::time::Duration::from_secs(10));
    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("lock: held by tester@");
    p.run(&["check", "staging"]).code(0);
    assert!(
        deploy.try_wait().unwrap().is_none(),
        "the deploy ended before the check ran beside it"
    );
    p.write("go", "");
    // The deploy itself evaluates that gate: nothing answers at the address, so it fails
    // (exit 3: the step before it has no rollback command).
    let out = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot get http://127.0.0.1:1/config"),
        "{stderr}"
    );
}

#[test]
fn failed_gates_stop_before_anything_changes_and_all_report() {
    let p = Project::new(&plan(
        r#"  preflight:
    - id: one
      gate: env
      expect: { NOPE_ONE: "1" }
    - id: two
      gate: env
      expect: { NOPE_TWO: "1" }
  deploy:
    - run: touch deployed
"#,
    ));
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("NOPE_ONE is not set")
        .stderr_has("NOPE_TWO is not set")
        .stderr_has("the gate(s) `two` failed as well")
        .stderr_has("nothing had changed yet");
    assert!(!p.path().join("deployed").exists());
}

#[test]
fn a_gate_failing_after_the_deploy_rolls_back() {
    let p = Project::new(&plan(
        r#"  deploy:
    - run: echo did >> journal
      rollback: echo undid >> journal
  verify:
    - id: smoke
      gate: command
      command: echo unhealthy; exit 1
"#,
    ));
    p.run(&["deploy", "staging"])
        .code(4)
        .stderr_has("step `smoke` failed: command gate");
    assert_eq!(p.read("journal"), "did\nundid\n");
}

// ---------------------------------------------------------------------------------------
// Bad input.

#[test]
fn validate_reports_every_gate_error_with_its_place() {
    let p = Project::new(&plan(
        r#"  preflight:
    - gate: gti
    - gate: git
      brnch: main
    - gate: secrets
      forbid: ["*_LIVE_["]
      forbid_values: [stripe_live, { prefix: sk_live_, pattern: x }]
      drift: [prodution]
    - gate: window
      timezone: Europe/Londn
      allow: [{ days: tue-thurs, hours: "10:00-25:00" }]
      freeze: [{ from: 2025-12-20, to: 2025-12-01 }]
    - gate: config
      files: [config/missing.env]
      forbid_patterns: ["(unclosed"]
    - gate: env
      from: { url: "http://127.0.0.1:1/config" }
      expect: { dry_run: "true" }
    - gate: command
      command: "true"
      rollback: echo undo
    - gate: checklist
      items: [Same thing, Same thing]
"#,
    ));
    let o = p.run(&["validate"]);
    o.code(2)
        .stderr_has("unknown gate type `gti`")
        .stderr_has("did you mean `git`?")
        .stderr_has("unknown key `brnch` in step 2 of stage `preflight` (a git gate)")
        .stderr_has("did you mean `branch`?")
        .stderr_has("bad pattern `*_LIVE_[` in `forbid`: `[` at position 8 has no closing `]`")
        .stderr_has("unknown value shape `stripe_live`")
        .stderr_has("did you mean `stripe_live_key`?")
        .stderr_has("needs one of `prefix` or `pattern`")
        .stderr_has("`drift` compares with unknown environment `prodution`")
        .stderr_has("did you mean `production`?")
        .stderr_has("unknown time zone `Europe/Londn`")
        .stderr_has("did you mean `Europe/London`?")
        .stderr_has("`25:00` is not a time of day (HH:MM)")
        .stderr_has("a freeze needs a `reason`")
        .stderr_has("the freeze ends (`2025-12-01`) before it starts (`2025-12-20`)")
        .stderr_has("`files`: file `config/missing.env` does not exist")
        .stderr_has("bad regular expression `(unclosed`")
        .stderr_has("with a `url` source, the keys of `expect` are JSONPaths")
        .stderr_has("has a `rollback`")
        .stderr_has("checklist item id `same-thing` is used twice")
        .stderr_has("stagegate.yml:9:7")
        .lacks("has nothing to check");
    assert!(
        o.stderr.contains("15 |       timezone: Europe/Londn"),
        "{}",
        o.stderr
    );
    // Nothing ran for deploy either.
    p.run(&["deploy", "staging"])
        .code(2)
        .stderr_has("nothing ran");
}

#[test]
fn a_gate_that_cannot_be_evaluated_stops_the_run_before_any_step() {
    let p = Project::new(&plan(
        r#"  build:
    - run: touch built
  preflight:
    - gate: config
      files: ["${{ vars.dir }}/app.env"]
      require_https: true
"#,
    ));
    p.write(
        "stagegate.yml",
        &p.read("stagegate.yml")
            .replace("project: demo\n", "project: demo\nvars: { dir: conf }\n"),
    );
    p.run(&["validate"]).code(0);
    let o = p.run(&["deploy", "staging"]);
    o.code(2)
        .stderr_has("stagegate.yml:11:15: gate `preflight-1` cannot be evaluated: `files`: file `conf/app.env` does not exist")
        .stderr_has("1 gate cannot be evaluated; nothing ran");
    assert!(!p.path().join("built").exists());
    p.run(&["history"])
        .code(0)
        .stdout_has("no deployments recorded");
    p.write("conf/app.env", "URL=https://ok.example.com\n");
    p.run(&["deploy", "staging"]).code(0);
}

// ---------------------------------------------------------------------------------------
// docs/gates.md: docs.rs validates every plan example; here the config and env examples run.

#[test]
fn the_config_and_env_examples_in_the_gates_doc_pass_with_their_files() {
    let mut ran = 0;
    for block in common::doc_plans("gates.md") {
        if !(block.contains("gate: config") || block.contains("dotenv: \"deploy/")) {
            continue;
        }
        // What a templated path names is checked when a run starts: with the files there,
        // the gates of the config and env examples pass.
        let p = Project::new(&block);
        p.write("config/staging.env", "URL=https://staging.example.com\n")
            .write(
                "config/staging/services.yaml",
                "url: https://staging.example.com\n",
            )
            .write("deploy/staging.env", "ALPACA_PAPER=true\n");
        let o = p.run_env(
            &["check", "staging"],
            &[("DRY_RUN", "true"), ("ENVIRONMENT", "staging")],
        );
        let read = if block.contains("gate: config") {
            "read 2 file(s)"
        } else {
            "ALPACA_PAPER is `true` in deploy/staging.env"
        };
        assert!(o.stderr.contains(read), "{block}\n{}", o.stderr);
        ran += 1;
    }
    assert!(
        ran >= 2,
        "expected a config and an env example in docs/gates.md, ran {ran}"
    );
}
