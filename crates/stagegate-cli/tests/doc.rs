//! `stagegate doc`: the plan as a Markdown runbook on stdout or in a file, the refusal to
//! overwrite, `--check` (0 up to date, 3 drifted, 2 missing), an unknown environment, no
//! secret value anywhere, fences longer than the backticks in a command, the round trip
//! through `stagegate import`, and the example in docs/doc.md.

mod common;

use common::Project;

const PLAN: &str = r#"project: shop
vars:
  base: http://127.0.0.1:8000
  api_key: sk-live-VARVALUE123
secrets:
  require: [SHOP_API_TOKEN]
roles:
  security: [alice]
  devops: [bob]
environments:
  staging: {}
  production:
    promote_from: staging
    soak: 1h
    approvals: { required: 2, from: [security, devops], distinct_roles: true }
stages:
  checks:
    - gate: checklist
      items:
        - Database backup completed
        - Rollback plan reviewed
  deploy:
    - id: migrate
      name: Migrate the database
      run: ./bin/migrate up
      rollback: ./bin/migrate down 1
      env:
        DB_PASSWORD: hunter2-ENVVALUE
    - id: notes
      name: Write the release notes
      when: ${{ environment.name == 'staging' }}
      run: |
        cat > notes.md <<'EOF'
        ```text
        released ${{ release.version }}
        ```
        EOF
  verify:
    - id: health
      name: Health check
      http:
        url: ${{ vars.base }}/health
        headers:
          Authorization: Bearer ${{ secrets.SHOP_API_TOKEN }}
      expect:
        status: 200
        json: { "$.status": "ok" }
    - id: literal-token
      name: Token written in the plan
      http:
        url: ${{ vars.base }}/admin
        headers:
          X-Api-Key: ak-HEADERVALUE
"#;

fn project() -> Project {
    Project::new(PLAN)
}

#[test]
fn the_runbook_goes_to_stdout() {
    let p = project();
    let out = p.run(&["doc"]);
    assert_eq!(out.code, 0, "{out:?}");
    let md = &out.stdout;
    assert!(md.starts_with("# shop\n"), "{md}");
    assert!(
        md.contains("Generated from `stagegate.yml` by `stagegate doc`"),
        "{md}"
    );
    for want in [
        "### `production`",
        "- Promoted from `staging` only: `stagegate promote staging production`.",
        "for 1h",
        "- Approvals: 2 required, from `security`, `devops`",
        "- Secrets required: `SHOP_API_TOKEN`.",
        "- Vars: `api_key`, `base`.",
        "## deploy",
        "- [ ] Database backup completed",
        "# Migrate the database\n./bin/migrate up\n",
        "Runs only when `environment.name == 'staging'`.",
        "# Health check\ncurl -sS \\\n  -H 'Authorization: Bearer ${{ secrets.SHOP_API_TOKEN }}' \\\n  '${{ vars.base }}/health'\n# Expected: HTTP 200, {\"status\":\"ok\"}\n",
        "## Rollback procedures",
        "# rollback: Migrate the database\n./bin/migrate down 1\n",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    // The same plan, the same bytes.
    assert_eq!(p.run(&["doc"]).stdout, *md);
}

#[test]
fn secret_and_var_values_are_never_shown() {
    let p = project();
    let out = p.run_env(&["doc"], &[("SHOP_API_TOKEN", "tok-PROCESSVALUE")]);
    assert_eq!(out.code, 0, "{out:?}");
    for value in [
        "VARVALUE123",
        "ENVVALUE",
        "PROCESSVALUE",
        "hunter2",
        "HEADERVALUE",
    ] {
        assert!(
            !out.stdout.contains(value),
            "{value} shown:\n{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains(value),
            "{value} shown:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stdout.contains("DB\\_PASSWORD (values not shown)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("-H 'X-Api-Key: ***'"), "{}", out.stdout);
}

#[test]
fn a_command_with_a_fence_gets_a_longer_one() {
    let p = project();
    let md = p.run(&["doc"]).stdout;
    let block = "````bash step\n# Write the release notes\ncat > notes.md <<'EOF'\n```text\nreleased ${{ release.version }}\n```\nEOF\n````\n";
    assert!(md.contains(block), "{md}");
}

#[test]
fn one_environment_only() {
    let p = project();
    let out = p.run(&["doc", "production"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("### `production`"));
    assert!(!out.stdout.contains("### `staging`"), "{}", out.stdout);
    assert!(out.stdout.contains("by `stagegate doc production`"));
}

#[test]
fn an_unknown_environment_is_exit_2_with_a_suggestion() {
    let p = project();
    let out = p.run(&["doc", "prodution"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("unknown environment `prodution`: did you mean `production`?"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn output_refuses_to_overwrite_without_force() {
    let p = project();
    let out = p.run(&["doc", "-o", "RUNBOOK.md"]);
    assert_eq!(out.code, 0, "{out:?}");
    let first = p.read("RUNBOOK.md");
    assert!(
        first.contains("by `stagegate doc -o RUNBOOK.md`"),
        "{first}"
    );
    p.write("RUNBOOK.md", "mine\n");
    let out = p.run(&["doc", "-o", "RUNBOOK.md"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("RUNBOOK.md exists"), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(p.read("RUNBOOK.md"), "mine\n");
    let out = p.run(&["doc", "-o", "RUNBOOK.md", "--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(p.read("RUNBOOK.md"), first);
}

#[test]
fn check_is_0_when_up_to_date_3_on_drift_2_when_missing() {
    let p = project();
    let out = p.run(&["doc", "--check", "-o", "RUNBOOK.md"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("RUNBOOK.md does not exist"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("stagegate doc -o RUNBOOK.md"),
        "{}",
        out.stderr
    );

    assert_eq!(p.run(&["doc", "-o", "RUNBOOK.md"]).code, 0);
    let out = p.run(&["doc", "--check", "-o", "RUNBOOK.md"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("up to date"), "{}", out.stderr);

    // The plan changes; the committed runbook does not.
    p.write(
        "stagegate.yml",
        &PLAN.replace("Health check", "Health probe"),
    );
    let before = p.read("RUNBOOK.md");
    let out = p.run(&["doc", "--check", "-o", "RUNBOOK.md"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("RUNBOOK.md is out of date"),
        "{}",
        out.stderr
    );
    let line = before
        .lines()
        .position(|l| l == "### `health`: Health check")
        .unwrap()
        + 1;
    assert!(
        out.stderr
            .contains(&format!("-{line}: ### `health`: Health check")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("+{line}: ### `health`: Health probe")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("help: run `stagegate doc -o RUNBOOK.md` to update it"),
        "{}",
        out.stderr
    );
    assert_eq!(p.read("RUNBOOK.md"), before, "--check writes nothing");
}

#[test]
fn the_runbook_imports_back_to_the_same_steps() {
    let p = project();
    assert_eq!(p.run(&["doc", "-o", "RUNBOOK.md"]).code, 0);
    let out = p.run(&["import", "RUNBOOK.md", "-o", "imported.yml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = p.run(&["-f", "imported.yml", "validate"]);
    assert_eq!(v.code, 0, "{v:?}");
    let plan = p.read("imported.yml");
    let mut at = 0;
    for want in [
        "text: \"Database backup completed\"",
        "text: \"Rollback plan reviewed\"",
        "- name: \"Migrate the database\"",
        "run: \"./bin/migrate up\"",
        "rollback: \"./bin/migrate down 1\"",
        "- name: \"Write the release notes\"",
        "released ${{ '${{' }} release.version }}",
        "- name: \"Health check\"",
        "url: \"${{ '${{' }} vars.base }}/health\"",
        "status: 200",
    ] {
        let found = plan[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} not found in order in:\n{plan}"));
        at += found + want.len();
    }
    // A step's env names are not taken for secrets to require; the plan's secret is.
    assert!(!plan.contains("DB_PASSWORD"), "{plan}");
    assert!(plan.contains("- \"SHOP_API_TOKEN\""), "{plan}");
    // The rollback is the step's, not a manual step of its own.
    assert!(!plan.contains("when: \"false\""), "{plan}");
}

/// docs/doc.md shows a plan and the runbook it renders: rendering the one gives the other.
#[test]
fn the_example_in_the_docs_is_what_doc_prints() {
    let doc = std::fs::read_to_string(common::docs_dir().join("doc.md")).unwrap();
    let plan = doc
        .split("```yaml\n# stagegate.yml\n")
        .nth(1)
        .and_then(|r| r.split("```\n").next())
        .expect("the plan block");
    let runbook = doc
        .split("~~~~markdown\n")
        .nth(1)
        .and_then(|r| r.split("~~~~\n").next())
        .expect("the runbook block");
    let p = Project::new(&format!("# stagegate.yml\n{plan}"));
    let out = p.run(&["doc", "-o", "RUNBOOK.md"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(p.read("RUNBOOK.md"), runbook);
}
