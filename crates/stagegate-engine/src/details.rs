//! What a step found, typed: [`StepDetails`], one variant per kind of evidence.
//!
//! Each step kind records its own evidence (a gate's checks, a check's assertions, a load
//! test's report, a service's release). The store and the JSON report keep it as JSON of the
//! same shape as before these types existed (`{"gate": ...}`, `{"check": ..., "assertions":
//! [...]}`, `{"load": {...}}`, `{"service": ...}`, and later `{"migrate": {...}}`); reporters read the typed value, and a
//! record read back from the store is turned into one with [`StepDetails::from_json`].

use serde::{Deserialize, Serialize};
use stagegate_load::LoadReport;

use crate::check::AssertionResult;
use crate::gate::Evidence;
use crate::local::ArtifactDigest;

/// A step's evidence. Serialized without a tag: the variant's own fields say which it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepDetails {
    Gate(Box<Evidence>),
    Check(Box<CheckDetails>),
    Load(Box<LoadDetails>),
    Service(Box<ServiceDetails>),
    Watch(Box<crate::watch::WatchDetails>),
    /// A migrate step, or one of its rollback steps (`down`, `restore`).
    Migrate(Box<crate::migrate::MigrateDetails>),
    /// A step that did not run because its `when` was false.
    Skipped(SkipDetails),
    /// A `run` step or a rollback command: what it did is in its exit code, log and outputs.
    None(NoDetails),
}

/// A skipped step: `{"when": "false"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SkipDetails {
    pub when: String,
}

/// Serializes as `{}` (and reads any object without the other variants' keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NoDetails {}

impl Default for StepDetails {
    fn default() -> Self {
        StepDetails::None(NoDetails {})
    }
}

impl StepDetails {
    /// Reads recorded details (the store's JSON). What matches no variant reads as none.
    pub fn from_json(v: &serde_json::Value) -> StepDetails {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }

    pub fn gate(&self) -> Option<&Evidence> {
        match self {
            StepDetails::Gate(e) => Some(e),
            _ => None,
        }
    }

    pub fn check(&self) -> Option<&CheckDetails> {
        match self {
            StepDetails::Check(c) => Some(c),
            _ => None,
        }
    }

    pub fn load(&self) -> Option<&LoadDetails> {
        match self {
            StepDetails::Load(l) => Some(l),
            _ => None,
        }
    }

    pub fn watch(&self) -> Option<&crate::watch::WatchSummary> {
        match self {
            StepDetails::Watch(w) => Some(&w.watch),
            _ => None,
        }
    }

    pub fn migrate(&self) -> Option<&crate::migrate::MigrationRecord> {
        match self {
            StepDetails::Migrate(m) => Some(&m.migrate),
            _ => None,
        }
    }

    pub fn service(&self) -> Option<&ServiceDetails> {
        match self {
            StepDetails::Service(s) => Some(s),
            _ => None,
        }
    }

    /// The assertions of a check step (none for other kinds).
    pub fn assertions(&self) -> &[AssertionResult] {
        self.check().map_or(&[], |c| c.assertions.as_slice())
    }

    /// The same details with every string passed through `scrub` (secret values masked).
    pub fn scrubbed(&self, scrub: impl Fn(&serde_json::Value) -> serde_json::Value) -> Self {
        StepDetails::from_json(&scrub(&self.to_json()))
    }
}

/// A check step's record: `{"check": "http", "target": ..., "assertions": [...], ...}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckDetails {
    /// The check kind: `http`, `command`, `file`, `log`, `tcp`, ...
    pub check: String,
    /// What was checked, in words (`GET http://127.0.0.1:8080/health`).
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    pub duration_ms: u64,
    pub assertions: Vec<AssertionResult>,
    /// The `until` conditions of a polling check, from its last attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub until: Vec<AssertionResult>,
    /// What the last attempt observed: status, bytes, sha256, exit code, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<CaptureNote>,
    /// Seeds of `random:` request bodies, to replay a failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub random_seeds: Vec<u64>,
    /// A `repeat:` check's totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<RepeatTotals>,
}

/// What a check's last attempt observed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObservedSummary {
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where the body was saved (`save:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// A tcp check: whether the port was open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<bool>,
    /// A log check: how many lines were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
}

/// A value a check captured (its name and source; never its value).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaptureNote {
    pub name: String,
    pub from: String,
    pub secret: bool,
}

/// A `repeat:` check's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepeatTotals {
    pub count: u64,
    pub concurrency: u64,
    pub sent: u64,
    pub answered: u64,
    pub passed: u64,
    pub errors: u64,
    pub duration_ms: u64,
    pub checks_per_second: f64,
}

/// A load step's record: the generator's report and whether a baseline was compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadDetails {
    pub load: LoadReport,
    #[serde(default)]
    pub baseline: bool,
}

/// A deploy, retire or restore of a service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceDetails {
    pub service: String,
    /// The driver that did it (`local`), on a successful deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The release deployed or restored (none when the deploy failed before starting one).
    #[serde(default)]
    pub release: Option<String>,
    /// The release that ran before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// A restore: the release it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactDigest>,
    /// The health answer that made it healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON that older records hold reads into the right variant, and writes back the same.
    #[test]
    fn recorded_json_reads_into_its_variant_and_round_trips() {
        let cases = [
            (
                serde_json::json!({"gate": "git", "passed": true, "checks": []}),
                "gate",
            ),
            (
                serde_json::json!({"check": "http", "target": "GET /", "attempts": 1, "duration_ms": 3,
                    "assertions": [{"name": "status", "expected": "200", "actual": "200", "passed": true}],
                    "observed": {"duration_ms": 2, "status": 200, "bytes": 5}}),
                "check",
            ),
            (
                serde_json::json!({"service": "web", "driver": "local", "release": "1.0.0",
                    "previous": "0.9.0", "url": "http://127.0.0.1:1", "health": "200"}),
                "service",
            ),
            (
                serde_json::json!({"watch": {"verdict": "pass", "reason": "held", "window_ms": 1000,
                    "every_ms": 100, "elapsed_ms": 1000, "rounds": 10, "failure_limit": 0,
                    "inconclusive_limit": 0, "consecutive_error_limit": 4, "measurements": []}}),
                "watch",
            ),
            (
                serde_json::json!({"migrate": {"action": "restore", "up": "failed",
                    "backup": {"kind": "postgres", "path": "b.dump", "bytes": 10, "sha256": "ab",
                        "taken_at": 1, "duration_ms": 2},
                    "dropped": ["table public.t"], "statement": "restored"}}),
                "migrate",
            ),
            (serde_json::json!({}), "none"),
        ];
        for (json, want) in cases {
            let d = StepDetails::from_json(&json);
            let got = match &d {
                StepDetails::Gate(_) => "gate",
                StepDetails::Check(_) => "check",
                StepDetails::Load(_) => "load",
                StepDetails::Service(_) => "service",
                StepDetails::Watch(_) => "watch",
                StepDetails::Migrate(_) => "migrate",
                StepDetails::Skipped(_) => "skipped",
                StepDetails::None(_) => "none",
            };
            assert_eq!(got, want, "{json}");
            assert_eq!(d.to_json(), json, "{want} does not round-trip");
        }
    }
}
