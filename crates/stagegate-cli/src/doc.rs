//! `stagegate doc [ENV] [-o FILE] [--force] [--check]`: the plan as a Markdown runbook.

use std::path::Path;

use stagegate_engine::exit;
use stagegate_plan::Plan;
use stagegate_runbook::{DocOptions, first_differences};

use crate::context::{CmdResult, Failure};

/// How many differing lines `--check` shows.
const SHOWN_DIFFERENCES: usize = 10;

pub fn doc(
    plan: &Plan,
    plan_path: &Path,
    env: Option<&str>,
    output: Option<&Path>,
    force: bool,
    check: bool,
) -> CmdResult {
    let command = regenerate_command(plan_path, env, output);
    let opts = DocOptions {
        environment: env.map(str::to_string),
        command: command.clone(),
        plan_file: shown(plan_path),
    };
    let text = stagegate_runbook::render(plan, &opts).map_err(|e| {
        Failure::invalid(format!(
            "error: {}: {e}\nhelp: name an environment of the plan, or leave ENV out for all of them",
            plan_path.display()
        ))
    })?;
    let Some(out) = output else {
        print!("{text}");
        return Ok(exit::SUCCESS);
    };
    if check {
        let committed = match std::fs::read_to_string(out) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure::invalid(format!(
                    "error: {} does not exist, so there is nothing to check\nhelp: run `{command}` to write it, then commit it",
                    out.display()
                )));
            }
            Err(e) => {
                return Err(Failure::invalid(format!(
                    "error: cannot read {}: {e}",
                    out.display()
                )));
            }
        };
        if committed == text {
            eprintln!(
                "{} is up to date with {}",
                out.display(),
                plan_path.display()
            );
            return Ok(exit::SUCCESS);
        }
        let mut msg = format!(
            "error: {} is out of date: {} renders differently (- the file, + the plan):\n",
            out.display(),
            plan_path.display()
        );
        for l in first_differences(&committed, &text, SHOWN_DIFFERENCES) {
            msg.push_str("  ");
            msg.push_str(&l);
            msg.push('\n');
        }
        msg.push_str(&format!("help: run `{command}` to update it"));
        return Err(Failure::new(exit::FAILED, msg));
    }
    if out.exists() && !force {
        return Err(Failure::invalid(format!(
            "error: {} exists; nothing was written\nhelp: pass --force to overwrite it, or -o another file",
            out.display()
        )));
    }
    std::fs::write(out, &text)
        .map_err(|e| Failure::invalid(format!("error: cannot write {}: {e}", out.display())))?;
    eprintln!(
        "wrote {}: check it in CI with `stagegate doc --check -o {}`",
        out.display(),
        out.display()
    );
    Ok(exit::SUCCESS)
}

/// A path as the document may show it: as given when relative, else its file name (no
/// machine paths in a committed file, and the same bytes wherever it is rendered).
fn shown(path: &Path) -> String {
    if path.is_absolute() {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        path.display().to_string()
    }
}

/// The command that writes this document again, named in its intro line.
fn regenerate_command(plan_path: &Path, env: Option<&str>, output: Option<&Path>) -> String {
    let mut c = String::from("stagegate doc");
    if plan_path != Path::new("stagegate.yml") {
        c.push_str(&format!(" -f {}", shown(plan_path)));
    }
    if let Some(e) = env {
        c.push_str(&format!(" {e}"));
    }
    if let Some(o) = output {
        c.push_str(&format!(" -o {}", shown(o)));
    }
    c
}
