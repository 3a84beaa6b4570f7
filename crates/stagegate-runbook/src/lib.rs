//! Markdown runbooks as draft stagegate plans.
//!
//! [`import`] reads a runbook in three steps:
//! 1. [`markdown::blocks`] walks the Markdown (pulldown-cmark's offset iterator) into flat
//!    blocks that know their source line: headings, code, checklist items, text.
//! 2. [`draft::build`] turns them into stages of items: checklists become `gate: checklist`,
//!    shell commands `run` steps ([`shell`] splits a block), `curl` lines `http` checks with
//!    their "Expected" notes ([`curl`]), `hey`/`ab`/`wrk` lines `load` steps with the SLO lines
//!    near them ([`load`]), and names in the text secrets ([`secrets`]).
//! 3. [`emit::write`] writes the plan as YAML text, every value quoted by [`yaml`] so that
//!    nothing from the runbook becomes YAML syntax or a template, and counts a [`Summary`].
//!
//! [`render::render`] goes the other way: a validated plan as a Markdown runbook
//! (`stagegate doc`), laid out so that importing it gives every step back.
//!
//! Nothing is dropped silently: what is not translated is a `# TODO (line N)` comment and a
//! [`Todo`] in the summary. The library never prints.

pub mod curl;
pub mod draft;
pub mod emit;
pub mod load;
pub mod markdown;
pub mod render;
pub mod secrets;
pub mod shell;
pub mod yaml;

use std::fmt;

/// Runbooks larger than this are refused: a runbook is a document, not a data file.
pub const MAX_INPUT: usize = 5 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("the runbook is {size} bytes; at most {MAX_INPUT} bytes (5 MiB) are read")]
    TooLarge { size: usize },
}

/// A drafted plan: its YAML text and what was found.
#[derive(Debug, Clone)]
pub struct Imported {
    pub yaml: String,
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub stages: usize,
    pub checklist_items: usize,
    pub commands: usize,
    pub curl_checks: usize,
    pub curl_expectations: usize,
    pub load_steps: usize,
    pub secrets: usize,
    pub forbidden: usize,
    pub todos: Vec<Todo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Todo {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} stages, {} checklist items, {} commands, {} curl checks ({} with expectations), {} load steps, {} secrets required, {} forbidden, {} TODOs",
            self.stages,
            self.checklist_items,
            self.commands,
            self.curl_checks,
            self.curl_expectations,
            self.load_steps,
            self.secrets,
            self.forbidden,
            self.todos.len()
        )?;
        for t in &self.todos {
            writeln!(f, "  TODO line {}: {}", t.line, t.message)?;
        }
        Ok(())
    }
}

pub use render::{DocError, DocOptions, render};

/// The first lines where `old` and `new` differ, numbered, for `stagegate doc --check`:
/// `-12: old text` / `+12: new text`, at most `max` differing lines. Empty when they match.
pub fn first_differences(old: &str, new: &str, max: usize) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut out = Vec::new();
    let mut shown = 0;
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x == y {
            continue;
        }
        if shown == max {
            out.push("...".to_string());
            break;
        }
        shown += 1;
        if let Some(x) = x {
            out.push(format!("-{}: {x}", i + 1));
        }
        if let Some(y) = y {
            out.push(format!("+{}: {y}", i + 1));
        }
    }
    if out.is_empty() && old != new {
        out.push("the files differ in their line endings or final newline".into());
    }
    out
}

/// Drafts a plan from a Markdown runbook.
pub fn import(markdown: &str) -> Result<Imported, ImportError> {
    if markdown.len() > MAX_INPUT {
        return Err(ImportError::TooLarge {
            size: markdown.len(),
        });
    }
    let blocks = markdown::blocks(markdown);
    let d = draft::build(&blocks);
    let (yaml, summary) = emit::write(&d);
    Ok(Imported { yaml, summary })
}
