//! `stagegate import RUNBOOK.md [-o FILE] [--force]`: a draft plan from a Markdown runbook.

use std::io::Read;
use std::path::Path;

use stagegate_engine::exit;
use stagegate_runbook::MAX_INPUT;

use crate::context::{CmdResult, Failure};

pub fn import(runbook: &Path, output: Option<&Path>, force: bool) -> CmdResult {
    let shown = runbook.display();
    let file = std::fs::File::open(runbook).map_err(|e| {
        Failure::invalid(format!(
            "error: cannot read the runbook {shown}: {e}\nhelp: pass the path of a Markdown file"
        ))
    })?;
    // Read one byte past the limit, so a larger file is refused without reading it all.
    let mut bytes = Vec::new();
    file.take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::invalid(format!("error: cannot read the runbook {shown}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Failure::invalid(format!(
            "error: the runbook {shown} is not UTF-8 text\nhelp: convert it to UTF-8 (`iconv -t UTF-8`)"
        ))
    })?;
    let imported = stagegate_runbook::import(&text).map_err(|e| {
        Failure::invalid(format!(
            "error: {shown}: {e}\nhelp: split the runbook, or import the part that deploys"
        ))
    })?;
    let plan_path = match output {
        Some(out) => {
            if out.exists() && !force {
                return Err(Failure::invalid(format!(
                    "error: {} exists; nothing was written\nhelp: pass --force to overwrite it, or -o another file",
                    out.display()
                )));
            }
            std::fs::write(out, &imported.yaml).map_err(|e| {
                Failure::invalid(format!("error: cannot write {}: {e}", out.display()))
            })?;
            out.to_path_buf()
        }
        None => {
            print!("{}", imported.yaml);
            std::path::PathBuf::from("stagegate.yml")
        }
    };
    eprint!("{shown}: {}", imported.summary);
    // The draft must be a valid plan; one that is not is a bug in the importer.
    if let Err(diags) = stagegate_plan::load_str(&plan_path, &imported.yaml) {
        return Err(Failure::internal(format!(
            "{diags}error: the plan drafted from {shown} does not validate: this is a bug in `stagegate import`; please report it with the runbook"
        )));
    }
    if let Some(out) = output {
        eprintln!(
            "wrote {}: review the TODOs, then run `stagegate validate -f {}`",
            out.display(),
            out.display()
        );
    }
    Ok(exit::SUCCESS)
}
