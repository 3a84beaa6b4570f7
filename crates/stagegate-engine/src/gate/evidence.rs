//! What a gate records in its step's `details`: every check with what it found.
//!
//! The reports and `stagegate show` read it back (as [`crate::details::StepDetails::Gate`]), so the field
//! names are a contract: add fields, do not rename them.

use serde::{Deserialize, Serialize};

/// A gate's record: `{"gate": "git", "passed": true, "checks": [...], ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The gate type: `git`, `command`, `secrets`, `env`, `config`, `checklist`, `window`.
    pub gate: String,
    /// Whether every check passed (an override does not change this).
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Checklist items acknowledged, with who and when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledgements: Vec<Acknowledgement>,
    /// Set when a failed gate was passed with `--override`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<Override>,
    /// What to do when the gate failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// One thing a gate checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked: `branch`, `clean`, `require`, `DRY_RUN`, `window`, ...
    pub check: String,
    pub ok: bool,
    /// What was found, in a sentence.
    pub message: String,
    /// Details, one per line: `config/app.env:3: URL to localhost`, a secret's fingerprint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub id: String,
    pub text: String,
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// A failed gate passed on a person's word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub reason: String,
}

impl Check {
    pub fn pass(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: true,
            message: message.into(),
            findings: Vec::new(),
        }
    }

    pub fn fail(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            ..Self::pass(check, message)
        }
    }

    pub fn with_findings(mut self, findings: Vec<String>) -> Self {
        self.findings = findings;
        self
    }
}

/// The current time as RFC 3339 UTC, to the second.
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
