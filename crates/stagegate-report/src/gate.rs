//! A gate's evidence, as lines of text: what each check found, the findings under it, who
//! acknowledged what, and an override with its justification.
//!
//! The terminal, the JUnit and Markdown reports and `stagegate show` all render gates from
//! these, so a gate reads the same everywhere.

use stagegate_engine::event::StepResult;
pub use stagegate_engine::gate::Evidence;

/// One line of a gate's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceLine {
    pub kind: LineKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A check that passed.
    Ok,
    /// A check that failed.
    Failed,
    /// A finding under the check before it.
    Finding,
    /// A failed gate passed with `--override`.
    Override,
}

impl LineKind {
    /// A short mark for plain text: `ok`, `FAIL`, `-`, `OVERRIDE`.
    pub fn mark(self) -> &'static str {
        match self {
            LineKind::Ok => "ok",
            LineKind::Failed => "FAIL",
            LineKind::Finding => "-",
            LineKind::Override => "OVERRIDE",
        }
    }
}

/// The evidence of a step, if it is a gate.
pub fn evidence(step: &StepResult) -> Option<Evidence> {
    (step.step.kind == "gate")
        .then(|| step.details.gate().cloned())
        .flatten()
}

/// Every line of a gate's evidence, checks in order with their findings under them.
pub fn evidence_lines(e: &Evidence) -> Vec<EvidenceLine> {
    let mut out = Vec::new();
    for c in &e.checks {
        out.push(EvidenceLine {
            kind: if c.ok { LineKind::Ok } else { LineKind::Failed },
            text: c.message.clone(),
        });
        for f in &c.findings {
            out.push(EvidenceLine {
                kind: LineKind::Finding,
                text: f.clone(),
            });
        }
    }
    if let Some(o) = &e.overridden {
        out.push(EvidenceLine {
            kind: LineKind::Override,
            text: format!("overridden by {} at {}: {}", o.by, o.at, o.reason),
        });
    }
    out
}

/// The evidence as plain text, one line each: `ok   on branch main`.
pub fn evidence_text(e: &Evidence) -> String {
    evidence_lines(e)
        .iter()
        .map(|l| match l.kind {
            LineKind::Finding => format!("       - {}", l.text),
            k => format!("{:<6} {}", k.mark(), l.text),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use stagegate_engine::gate::{Check, Override};

    use super::*;

    #[test]
    fn lines_follow_checks_and_findings() {
        let e = Evidence {
            gate: "config".into(),
            passed: false,
            checks: vec![
                Check::pass("require_https", "every URL uses https"),
                Check::fail("forbid_hosts", "1 finding").with_findings(vec![
                    "app.env:3: URL to localhost: http://localhost:8000".into(),
                ]),
            ],
            overridden: Some(Override {
                by: "alice".into(),
                at: "2025-10-07T10:00:00Z".into(),
                reason: "hotfix".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            evidence_text(&e),
            "ok     every URL uses https\nFAIL   1 finding\n       - app.env:3: URL to localhost: http://localhost:8000\nOVERRIDE overridden by alice at 2025-10-07T10:00:00Z: hotfix"
        );
    }
}
