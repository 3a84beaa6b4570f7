//! Hostile template values never become shell syntax: a `--var`, a release version and a
//! value captured from an HTTP answer reach `run`, `build`, `start`, `rollback`, command
//! checks and command gates as data. The real binary, a real shell, the quickstart demo as
//! the service and a loopback HTTP server for the captured value.

mod common;
use common::{Project, response, serve};

/// A value that runs `touch MARKER` wherever it is pasted into a shell command unquoted,
/// inside double quotes, inside single quotes or after a `;`.
fn hostile(marker: &std::path::Path) -> String {
    let m = marker.display();
    format!("a$(touch {m})`touch {m}`;touch {m};'\"' touch {m}\"'\ntouch {m} #")
}

#[test]
fn hostile_values_are_data_in_every_shell_command() {
    let p = Project::with_demo("");
    let marker = p.path().join("pwned");
    let value = hostile(&marker);
    // The HTTP answer carries the hostile value too; a check captures it.
    let answer = serde_json::json!({ "name": value }).to_string();
    let port = serve(move |_, _| response("200 OK", "application/json", answer.as_bytes()));
    p.write(
        "stagegate.yml",
        &format!(
            r#"project: demo
vars: {{ who: nobody }}
environments:
  staging: {{}}
services:
  web:
    build: printf '%s' ${{{{ vars.who }}}} > build.txt
    artifacts: [demo]
    start: printf '%s' "${{{{ vars.who }}}}" > ../../../../../start.txt; exec ./demo
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
    port: auto
    health:
      path: /health
      interval: 50ms
      timeout: 3s
stages:
  gates:
    - gate: command
      command: printf '%s' '${{{{ vars.who }}}}' > gate.txt
  deploy:
    - deploy: web
  checks:
    - id: fetch
      http: {{ url: "http://127.0.0.1:{port}/name" }}
      capture: {{ name: "$.name" }}
    - id: check
      command: printf '%s' ${{{{ steps.fetch.outputs.name }}}} > check.txt
  steps:
    - id: use
      run: |
        printf '%s' "${{{{ steps.fetch.outputs.name }}}}" > captured.txt
        cat > heredoc.txt <<EOF
        ${{{{ vars.who }}}}
        EOF
      rollback: printf '%s' ${{{{ vars.who }}}} > rollback.txt
    - id: fail
      run: exit 1
"#
        ),
    );
    let o = p.run(&["deploy", "staging", "--var", &format!("who={value}")]);
    o.code(4);
    assert!(!marker.exists(), "a value ran as shell code:\n{}", o.stderr);
    for file in [
        "build.txt",
        "gate.txt",
        "check.txt",
        "captured.txt",
        "rollback.txt",
    ] {
        assert_eq!(p.read(file), value, "{file}");
    }
    assert_eq!(p.read("heredoc.txt"), format!("{value}\n"));
    // The start command runs in the release's directory, five levels below the plan's.
    assert_eq!(p.read("start.txt"), value, "start");
    p.run(&["stop", "staging"]).code(0);
}

#[test]
fn a_hostile_release_version_reaches_a_run_step_as_data() {
    let p = Project::new(
        "project: demo\nenvironments:\n  staging: {}\nstages:\n  s:\n    - run: printf '%s' ${{ release.version }} > v.txt\n",
    );
    let marker = p.path().join("pwned");
    let v = format!("1.0;touch {}", marker.display());
    p.run(&["deploy", "staging", "--release-version", &v])
        .code(0);
    assert!(!marker.exists());
    assert_eq!(p.read("v.txt"), v);
}

/// docs/plan.md's example does what the doc says.
#[test]
fn the_docs_example_prints_the_value_and_runs_nothing() {
    let plan = common::doc_plans("plan.md")
        .into_iter()
        .find(|p| p.contains("templates in commands are data"))
        .expect("the example in docs/plan.md");
    let p = Project::new(&plan);
    p.run(&["deploy", "staging", "--var", "who=$(touch pwned)"])
        .code(0);
    assert_eq!(
        p.read("greeting.txt"),
        "hello $(touch pwned), this is 0.0.0-dev\n"
    );
    assert!(!p.path().join("pwned").exists());
}
