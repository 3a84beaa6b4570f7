//! `validate`, `plan` and `explain` through the real binary.

mod common;
use common::Project;

#[test]
fn reports_every_error_at_once_with_location_and_suggestion() {
    let p = Project::new(
        r#"project: demo
environments:
  staging: {}
services:
  web:
    start: ./web
    depends_on: [db]
    helth: { path: /health }
  db:
    start: ./db
    depends_on: [web]
stages:
  deploy:
    - deploy: wbe
    - id: a
      run: echo ${{ steps.b.outputs.x }}
      timeout: soon
    - id: b
      rnu: echo hi
    - id: a
      run: echo ${{ vars.missing }} ${{ secrets.TOKEN }}
      retries: many
"#,
    );
    let o = p.run(&["validate"]);
    o.code(2)
        .stderr_has("unknown key `helth` in service `web`")
        .stderr_has("did you mean `health`?")
        .stderr_has("--> ")
        .stderr_has("stagegate.yml:8:5")
        .stderr_has("step deploys unknown service `wbe`")
        .stderr_has("did you mean `web`?")
        .stderr_has("services depend on each other in a cycle")
        .stderr_has("step `a` uses outputs of step `b`, which runs later")
        .stderr_has("`timeout` in step 2 of stage `deploy`")
        .stderr_has("unknown key `rnu`")
        .stderr_has("did you mean `run`?")
        .stderr_has("duplicate step id `a`")
        .stderr_has("unknown variable `vars.missing`")
        .stderr_has("undeclared secret `secrets.TOKEN`")
        .stderr_has("must be a whole number");
    // The source line and a caret under the offending key.
    assert!(
        o.stderr.contains("8 |     helth: { path: /health }"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("  |     ^^^^^"), "{}", o.stderr);
    // Every error at once: 11, then the line that counts them.
    assert!(
        o.stderr.contains("error: stagegate.yml has 11 errors"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.matches("error:").count(), 12, "{}", o.stderr);
}

#[test]
fn malformed_yaml_names_the_line() {
    let p = Project::new(
        "project: demo\nenvironments:\n  staging: {}\nstages:\n  deploy:\n    - run: \"unterminated\n",
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("malformed YAML")
        .stderr_has("stagegate.yml:");
    let p =
        Project::new("project: demo\nproject: again\nenvironments: {staging: {}}\nstages: {}\n");
    p.run(&["validate"])
        .code(2)
        .stderr_has("duplicate key `project`")
        .stderr_has("stagegate.yml:2:1");
}

#[test]
fn invalid_template_and_json_path_point_into_the_value() {
    let p = Project::new(
        r#"project: demo
environments: { staging: {} }
services:
  web:
    start: ./web
    health: { path: /health, expect: { json: { "$.[bad": "1" } } }
stages:
  deploy:
    - run: echo ${{ varz.base }}
"#,
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("unknown reference `varz.base`; did you mean `vars`?")
        .stderr_has("stagegate.yml:9:21")
        .stderr_has("invalid JSONPath `$.[bad`");
}

#[test]
fn a_valid_plan_says_what_it_holds() {
    let p = Project::new(
        "project: demo\nenvironments: { staging: {} }\nstages:\n  build:\n    - run: 'true'\n",
    );
    p.run(&["validate"])
        .code(0)
        .stdout_has("is valid: 1 environment(s), 0 service(s), 1 stage(s), 1 step(s)");
    let json = p.run(&["validate", "--json"]);
    json.code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["valid"], true);
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let p = Project::new(
        "project: demo\nenvironments: { staging: {} }\nstages:\n  build:\n    - rn: 'true'\n",
    );
    let o = p.run(&["validate", "--json"]);
    o.code(2);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(v["valid"], false);
    assert_eq!(d["line"], 5, "{v}");
    assert_eq!(d["column"], 7, "{v}");
    assert!(
        d["help"].as_str().unwrap().contains("did you mean `run`?"),
        "{v}"
    );
}

#[test]
fn missing_plan_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(common::bin())
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot read plan file stagegate.yml") && err.contains("-f PATH"),
        "{err}"
    );
}

#[test]
fn plan_shows_the_steps_and_masks_secrets() {
    let p = Project::new(
        r#"project: demo
vars: { base: "http://127.0.0.1:9" }
environments:
  staging:
    secrets: { require: [API_TOKEN] }
    vars: { base: "http://127.0.0.1:8000" }
stages:
  verify:
    - id: ping
      run: 'curl -H "Authorization: Bearer ${{ secrets.API_TOKEN }}" ${{ vars.base }}/health'
      rollback: echo undo ${{ release.version }}
"#,
    );
    p.write(".env.staging", "API_TOKEN=tok-very-secret-123\n");
    let o = p.run(&["plan", "staging", "--release-version", "2.0.0"]);
    o.code(0)
        .stdout_has("plan: demo -> staging (release 2.0.0")
        .stdout_has("Bearer ***\" http://127.0.0.1:8000/health")
        .stdout_has("API_TOKEN = *** (from .env.staging)")
        .stdout_has("rollback: echo undo 2.0.0")
        .stdout_has("nothing was run")
        .lacks("tok-very-secret-123");
    assert!(
        !p.path().join(".stagegate/state.db").exists(),
        "plan must not create state"
    );
}

#[test]
fn unknown_environment_and_missing_secret_are_input_errors() {
    let p = Project::new(
        "project: demo\nenvironments:\n  staging:\n    secrets: [API_TOKEN]\nstages:\n  s:\n    - run: 'true'\n",
    );
    p.run(&["plan", "stagign"])
        .code(2)
        .stderr_has("unknown environment `stagign`: did you mean `staging`?");
    p.run(&["deploy", "staging"])
        .code(2)
        .stderr_has("requires secret API_TOKEN with no value")
        .stderr_has(".env.staging");
}

#[test]
fn explain_documents_fields() {
    let p = Project::new("project: x\n");
    p.run(&["explain", "services.port"])
        .code(0)
        .stdout_has("default: auto");
    p.run(&["explain", "retries"])
        .code(0)
        .stdout_has("steps.retries");
    p.run(&["explain", "services.helth"])
        .code(2)
        .stderr_has("did you mean `services.health`?");
    p.run(&["explain"]).code(0).stdout_has("on_failure");
}

#[test]
fn deploy_steps_release_templates_and_dependency_order_are_checked() {
    let p = Project::new(
        r#"project: demo
release: { version: "${{ vars.v }}" }
vars: { v: "1" }
environments: { staging: {} }
services:
  api: { start: ./api, depends_on: [db] }
  db: { start: ./db }
stages:
  deploy:
    - deploy: api
      retries: 2
    - deploy: db
    - run: 'true'
      retries: 500
"#,
    );
    p.run(&["validate"])
        .code(2)
        .stderr_has("`release` cannot use `vars.v`")
        .stderr_has("`retries` does not apply to a deploy step")
        .stderr_has("service `api` is deployed before `db`, which it depends on")
        .stderr_has("at most 100");
}

/// Input built to crash or stall the reader gets a clear error (exit 2) instead: deep
/// template and YAML nesting (a stack overflow, exit 134, before), a 300 KB time zone (8 s
/// before), invalid UTF-8 (no offset and a wrong hint before), a FIFO (blocked forever).
#[test]
fn hostile_plans_get_clear_errors_not_crashes_or_stalls() {
    let base = "project: x\nenvironments:\n  staging: {}\nstages:\n  s:\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!(
                "{base}    - run: echo ${{{{ {}vars.a{} }}}}\n",
                "(".repeat(8000),
                ")".repeat(8000)
            ),
            "the expression nests deeper than 64 levels",
        ),
        (
            format!(
                "{base}    - run: x\ndeep: {}1{}\n",
                "[".repeat(10000),
                "]".repeat(10000)
            ),
            "the plan nests deeper than 128 levels here",
        ),
        (
            {
                let mut t = format!("{base}    - run: x\ndeep:\n");
                for i in 0..3000 {
                    t.push_str(&" ".repeat(i + 1));
                    t.push_str("a:\n");
                }
                t
            },
            "--> stagegate.yml:135:",
        ),
        (
            format!(
                "{base}    - gate: window\n      timezone: {}\n      allow: [\"Mon-Fri 09:00-17:00\"]\n",
                "A".repeat(300_000)
            ),
            "unknown time zone",
        ),
    ];
    for (plan, want) in cases {
        let p = Project::new(&plan);
        let o = p.run(&["validate"]);
        o.code(2).stderr_has(want);
    }

    let p = Project::new("");
    std::fs::write(
        p.path().join("stagegate.yml"),
        b"project: caf\xe9\nenvironments:\n  staging: {}\n",
    )
    .unwrap();
    p.run(&["validate"])
        .code(2)
        .stderr_has("is not valid UTF-8: byte 0xe9 at offset 12 (line 1, column 13)")
        .stderr_has("save the file as UTF-8")
        .lacks("permissions");

    let fifo = p.path().join("fifo.yml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    p.run(&["-f", "fifo.yml", "validate"])
        .code(2)
        .stderr_has("it is not a regular file");
    p.run(&["-f", ".", "validate"])
        .code(2)
        .stderr_has("it is a directory");
}
