//! The plans shown in `docs/` are real: every fenced block whose first line starts with
//! `# stagegate.yml` (alone, or with a title: `# stagegate.yml: a config gate`) must pass
//! `stagegate validate`, and every block whose first line is `# invalid stagegate.yml` must
//! fail it with exit code 2.
//!
//! An invalid block may be followed by a `console` block that starts with
//! `$ stagegate validate`; the rest of that block must be exactly what `validate` prints
//! on stderr for the invalid plan.

mod common;

use common::{Block, Project, fenced_blocks};

const INVALID: &str = "# invalid stagegate.yml";
const SHOWN_COMMAND: &str = "$ stagegate validate";

/// The fewest valid plans each doc shows: a doc's examples cannot vanish unnoticed.
const AT_LEAST: &[(&str, usize)] = &[
    ("plan.md", 6),
    ("checks.md", 5),
    ("gates.md", 8),
    ("load.md", 1),
    ("bake.md", 5),
    ("migrations.md", 3),
    ("drivers.md", 2),
    ("drivers-kubernetes.md", 2),
    ("drivers-docker.md", 2),
    ("store.md", 1),
    ("promotion.md", 3),
    ("server.md", 1),
    ("notifications.md", 1),
    ("import.md", 1),
];

/// Runs `stagegate validate` on `plan`, written as `stagegate.yml` in a fresh directory.
fn validate(plan: &str) -> common::Out {
    Project::new(plan).run_env(&["validate"], &[("NO_COLOR", "1")])
}

fn normalize(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

#[test]
fn plans_in_the_docs_validate() {
    let mut valid = 0;
    let mut invalid = 0;
    let mut checked_outputs = 0;
    let mut failures = Vec::new();
    let mut valid_in: Vec<(String, usize)> = Vec::new();

    for file in common::doc_files() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("the doc is readable");
        let blocks = fenced_blocks(&text);
        let mut valid_here = 0;
        for (i, block) in blocks.iter().enumerate() {
            let place = format!("docs/{name}, block at line {}", block.line);
            if block.is_plan() {
                valid += 1;
                valid_here += 1;
                let out = validate(&block.body);
                if out.code != 0 {
                    failures.push(format!(
                        "{place}: expected a valid plan, `stagegate validate` exited with {}:\n{}",
                        out.code, out.stderr
                    ));
                }
            } else if block.first_line() == INVALID {
                invalid += 1;
                let out = validate(&block.body);
                let stderr = &out.stderr;
                if out.code != 2 {
                    failures.push(format!(
                        "{place}: expected an invalid plan (exit 2), `stagegate validate` exited with {}:\n{stderr}",
                        out.code,
                    ));
                    continue;
                }
                // The output shown right after the plan must be the real one.
                if let Some(shown) = blocks
                    .get(i + 1)
                    .filter(|b: &&Block| b.info == "console" && b.first_line() == SHOWN_COMMAND)
                {
                    checked_outputs += 1;
                    let expected: String =
                        shown.body.lines().skip(1).collect::<Vec<_>>().join("\n");
                    if normalize(&expected) != normalize(stderr) {
                        failures.push(format!(
                            "docs/{name}, block at line {}: the output shown differs from what `stagegate validate` prints.\n--- shown\n{}\n--- actual\n{}",
                            shown.line,
                            normalize(&expected),
                            normalize(stderr)
                        ));
                    }
                }
            }
        }
        valid_in.push((name, valid_here));
    }

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        valid >= 6,
        "expected at least 6 example plans in docs/, found {valid}"
    );
    for (doc, least) in AT_LEAST {
        let found = valid_in
            .iter()
            .find(|(n, _)| n == doc)
            .map_or(0, |(_, n)| *n);
        assert!(
            found >= *least,
            "docs/{doc} should show at least {least} valid plans, found {found}"
        );
    }
    assert!(
        invalid >= 1,
        "expected at least one `{INVALID}` block in docs/"
    );
    assert!(
        checked_outputs >= 1,
        "expected at least one invalid plan followed by its `{SHOWN_COMMAND}` output"
    );
}

#[test]
fn fenced_blocks_are_found() {
    let text =
        "a\n```yaml\n# stagegate.yml\nx: 1\n```\n\n````md\n```\ninner\n```\n````\n~~~\nz\n~~~\n";
    let blocks = fenced_blocks(text);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0].info, "yaml");
    assert_eq!(blocks[0].line, 2);
    assert_eq!(blocks[0].body, "# stagegate.yml\nx: 1\n");
    assert!(blocks[0].is_plan());
    assert_eq!(blocks[1].body, "```\ninner\n```\n");
    assert_eq!(blocks[2].body, "z\n");
    let titled = fenced_blocks(
        "```yaml\n# stagegate.yml: a config gate\n```\n```yaml\n# invalid stagegate.yml\n```\n",
    );
    assert!(titled[0].is_plan());
    assert!(!titled[1].is_plan());
}
