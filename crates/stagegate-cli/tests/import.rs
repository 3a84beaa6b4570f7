//! `stagegate import`: a seed runbook to a plan file that `stagegate validate` accepts, the
//! refusal to overwrite, and a missing runbook.

mod common;

use common::Project;

const SEED: &str = include_str!("../../stagegate-runbook/tests/seeds/003.md");

fn project() -> Project {
    let p = Project::new("");
    std::fs::remove_file(p.path().join("stagegate.yml")).unwrap();
    p.write("RUNBOOK.md", SEED);
    p
}

#[test]
fn a_seed_imports_to_a_plan_that_validates() {
    let p = project();
    let out = p.run(&["import", "RUNBOOK.md", "-o", "stagegate.yml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("curl checks"), "{}", out.stderr);
    assert!(out.stderr.contains("TODO line"), "{}", out.stderr);
    let plan = p.read("stagegate.yml");
    assert!(plan.contains("# runbook line"), "{plan}");
    assert!(plan.contains("gate: secrets"), "{plan}");
    let v = p.run(&["validate"]);
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn without_output_the_plan_goes_to_stdout_and_the_summary_to_stderr() {
    let p = project();
    let out = p.run(&["import", "RUNBOOK.md"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("# stagegate.yml"), "{}", out.stdout);
    assert!(!out.stdout.contains("TODO line"));
    assert!(out.stderr.contains("stages,"), "{}", out.stderr);
}

#[test]
fn an_existing_file_is_not_overwritten_without_force() {
    let p = project();
    p.write("stagegate.yml", "mine\n");
    let out = p.run(&["import", "RUNBOOK.md", "-o", "stagegate.yml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(p.read("stagegate.yml"), "mine\n");
    let out = p.run(&["import", "RUNBOOK.md", "-o", "stagegate.yml", "--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_ne!(p.read("stagegate.yml"), "mine\n");
}

#[test]
fn a_missing_runbook_is_exit_2_and_named() {
    let p = project();
    let out = p.run(&["import", "nope.md"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("nope.md"), "{}", out.stderr);
}

#[test]
fn a_runbook_over_5_mib_is_refused() {
    let p = project();
    p.write("big.md", &"x".repeat(5 * 1024 * 1024 + 10));
    let out = p.run(&["import", "big.md"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("5 MiB"), "{}", out.stderr);
}

/// docs/import.md shows a runbook and the plan it becomes: importing the one gives the other.
#[test]
fn the_example_in_the_docs_is_what_import_prints() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/import.md"),
    )
    .unwrap();
    let runbook = doc
        .split("~~~~markdown\n")
        .nth(1)
        .and_then(|r| r.split("~~~~\n").next())
        .expect("the runbook block");
    let plan = doc
        .split("```yaml\n# stagegate.yml\n")
        .nth(1)
        .and_then(|r| r.split("```\n").next())
        .expect("the plan block");
    let p = project();
    p.write("RUNBOOK.md", runbook);
    let out = p.run(&["import", "RUNBOOK.md"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("# stagegate.yml\n{plan}"));
}
