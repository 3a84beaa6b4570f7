//! The plans shown in `docs/` are real: every fenced block whose first line is
//! `# stagegate.yml` must pass `stagegate validate`, and every block whose first line is
//! `# invalid stagegate.yml` must fail it with exit code 2.
//!
//! An invalid block may be followed by a `console` block that starts with
//! `$ stagegate validate`; the rest of that block must be exactly what `validate` prints
//! on stderr for the invalid plan.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

const VALID: &str = "# stagegate.yml";
const INVALID: &str = "# invalid stagegate.yml";
const SHOWN_COMMAND: &str = "$ stagegate validate";

/// One fenced code block of a Markdown file.
#[derive(Debug, Clone)]
struct Block {
    /// The info string after the opening fence (`yaml`, `console`, ...).
    info: String,
    /// The 1-based line of the opening fence.
    line: usize,
    body: String,
}

/// Fenced blocks (``` or ~~~, three or more) in document order. A closing fence uses the
/// same character, at least as many times, and nothing else.
fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, Block)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let fence_char = line.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char.map_or(0, |c| line.chars().take_while(|x| *x == c).count());
        match &mut open {
            None => {
                if let Some(c) = fence_char
                    && fence_len >= 3
                {
                    open = Some((
                        c,
                        fence_len,
                        Block {
                            info: line[fence_len..].trim().to_string(),
                            line: i + 1,
                            body: String::new(),
                        },
                    ));
                }
            }
            Some((c, len, block)) => {
                if fence_char == Some(*c)
                    && fence_len >= *len
                    && line[fence_len..].trim().is_empty()
                {
                    blocks.push(open.take().expect("a block is open").2);
                } else {
                    block.body.push_str(raw);
                    block.body.push('\n');
                }
            }
        }
    }
    if let Some((_, _, block)) = open {
        panic!("unclosed code block opened at line {}", block.line);
    }
    blocks
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs_dir())
        .expect("docs/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

/// Runs `stagegate validate` on `plan`, written as `stagegate.yml` in a fresh directory.
fn validate(plan: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("stagegate.yml"), plan).expect("the plan is written");
    Command::new(env!("CARGO_BIN_EXE_stagegate"))
        .arg("validate")
        .current_dir(dir.path())
        .env_remove("STAGEGATE_FILE")
        .env_remove("STAGEGATE_STATE")
        .env("NO_COLOR", "1")
        .output()
        .expect("stagegate runs")
}

fn first_line(body: &str) -> &str {
    body.lines().next().unwrap_or("").trim_end()
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
    let mut valid_in_plan_md = 0;

    for file in doc_files() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("the doc is readable");
        let blocks = fenced_blocks(&text);
        for (i, block) in blocks.iter().enumerate() {
            let place = format!("docs/{name}, block at line {}", block.line);
            match first_line(&block.body) {
                VALID => {
                    valid += 1;
                    if name == "plan.md" {
                        valid_in_plan_md += 1;
                    }
                    let out = validate(&block.body);
                    if out.status.code() != Some(0) {
                        failures.push(format!(
                            "{place}: expected a valid plan, `stagegate validate` exited with {:?}:\n{}",
                            out.status.code(),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                INVALID => {
                    invalid += 1;
                    let out = validate(&block.body);
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    if out.status.code() != Some(2) {
                        failures.push(format!(
                            "{place}: expected an invalid plan (exit 2), `stagegate validate` exited with {:?}:\n{stderr}",
                            out.status.code(),
                        ));
                        continue;
                    }
                    // The output shown right after the plan must be the real one.
                    if let Some(shown) = blocks
                        .get(i + 1)
                        .filter(|b| b.info == "console" && first_line(&b.body) == SHOWN_COMMAND)
                    {
                        checked_outputs += 1;
                        let expected: String =
                            shown.body.lines().skip(1).collect::<Vec<_>>().join("\n");
                        if normalize(&expected) != normalize(&stderr) {
                            failures.push(format!(
                                "docs/{name}, block at line {}: the output shown differs from what `stagegate validate` prints.\n--- shown\n{}\n--- actual\n{}",
                                shown.line,
                                normalize(&expected),
                                normalize(&stderr)
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        valid >= 6,
        "expected at least 6 example plans in docs/, found {valid}"
    );
    assert!(
        valid_in_plan_md >= 6,
        "docs/plan.md should show the plan format with at least 6 examples, found {valid_in_plan_md}"
    );
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
    assert_eq!(blocks[1].body, "```\ninner\n```\n");
    assert_eq!(blocks[2].body, "z\n");
}
