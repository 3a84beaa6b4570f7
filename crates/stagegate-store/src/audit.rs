//! The audit log: a hash chain over what the store records.
//!
//! Every write that matters (a deployment begun or finished, a step finished, a lock
//! broken, a decision, an approval) appends an [`AuditRecord`] in the same transaction as the row it covers. A
//! record's `hash` is SHA-256 over the previous record's hash and its own fields, so
//! editing, deleting or reordering a record breaks the chain from there on; and each
//! covered row must equal what its latest record says, so editing, deleting or renumbering
//! a deployment, a step, a decision or an approval row is found too. Bypasses of protection
//! rules and promotions are records that cover no row. [`crate::Store::verify_audit`] checks both and
//! names the first broken link.
//!
//! A chain can be rebuilt by someone who can write the file and knows this scheme; what
//! anchors it is its head hash: `stagegate audit verify` prints it, and a copy kept
//! elsewhere (a CI log, a ticket) proves that the history up to it is unchanged.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{ApprovalRecord, Deployment, NewDeployment, StepRun};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// The first record of a store: how many deployments it held before the log began.
    Started,
    DeploymentBegun,
    /// Finished, abandoned, or given its true outcome later (a recovered finish).
    DeploymentFinished,
    StepFinished,
    LockBroken,
    /// A person's decision on an inconclusive watch step.
    Decision,
    /// An approval or rejection of a pending request; covers an `approvals` row.
    Approval,
    /// A protection rule bypassed; covers no row.
    Bypass,
    /// A promotion; covers no row (the deployment it started has its own records).
    Promotion,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Started => "audit_started",
            AuditKind::DeploymentBegun => "deployment_begun",
            AuditKind::DeploymentFinished => "deployment_finished",
            AuditKind::StepFinished => "step_finished",
            AuditKind::LockBroken => "lock_broken",
            AuditKind::Decision => "decision",
            AuditKind::Approval => "approval",
            AuditKind::Bypass => "bypass",
            AuditKind::Promotion => "promotion",
        }
    }

    /// Whether a record of this kind stands alone, covering no row (see
    /// [`crate::Store::record_audit_note`]).
    pub fn is_note(self) -> bool {
        matches!(self, AuditKind::Bypass | AuditKind::Promotion)
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AuditKind::Started,
            AuditKind::DeploymentBegun,
            AuditKind::DeploymentFinished,
            AuditKind::StepFinished,
            AuditKind::LockBroken,
            AuditKind::Decision,
            AuditKind::Approval,
            AuditKind::Bypass,
            AuditKind::Promotion,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One link of the chain, as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub deployment_id: Option<i64>,
    /// The covered fields as JSON text, exactly as hashed.
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a record: SHA-256 over a version tag, the previous hash and every field.
pub fn link_hash(
    prev: &str,
    seq: i64,
    at: i64,
    kind: &str,
    deployment_id: Option<i64>,
    data: &str,
) -> String {
    let mut h = Sha256::new();
    let dep = deployment_id.map_or_else(|| "-".to_string(), |d| d.to_string());
    for part in [
        "stagegate-audit-v1",
        prev,
        &seq.to_string(),
        &at.to_string(),
        kind,
        &dep,
        data,
    ] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Who broke a lock and why (`stagegate unlock`), as recorded.
#[derive(Debug, Clone)]
pub struct LockBreak {
    /// The OS user who ran `unlock`.
    pub by: String,
    /// Required with `--force`.
    pub reason: Option<String>,
    /// Broken although its holder looked alive (or ran on another host).
    pub forced: bool,
    /// Unix milliseconds.
    pub at: i64,
}

/// The first broken link `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditProblem {
    /// What is broken: `audit record #7`, `deployment #3`, `step 2 of deployment #3`.
    pub link: String,
    /// What is wrong with it, in a sentence.
    pub what: String,
}

/// What `verify` checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditReport {
    pub records: i64,
    /// The last record's hash (the genesis hash when the log is empty).
    pub head: String,
    pub deployments_checked: i64,
    pub steps_checked: i64,
    /// Decisions on inconclusive bakes (`stagegate decide`) checked against the log.
    pub decisions_checked: i64,
    /// Approvals and rejections of pending requests (`stagegate approve`) checked against
    /// the log.
    pub approvals_checked: i64,
    /// Deployments recorded before this store had an audit log (not covered).
    pub deployments_before_log: i64,
    /// `None` when every link holds.
    pub problem: Option<AuditProblem>,
}

pub(crate) fn begun_data(id: i64, d: &NewDeployment) -> Value {
    json!({
        "id": id,
        "project": d.project,
        "environment": d.environment,
        "kind": d.kind,
        "release_version": d.release_version,
        "release_sha": d.release_sha,
        "plan_hash": d.plan_hash,
        "actor": d.actor,
        "pid": d.pid,
        "host": d.host,
        "started_at": d.started_at,
    })
}

pub(crate) fn begun_data_of(d: &Deployment) -> Value {
    begun_data(
        d.id,
        &NewDeployment {
            project: d.project.clone(),
            environment: d.environment.clone(),
            kind: d.kind.clone(),
            release_version: d.release_version.clone(),
            release_sha: d.release_sha.clone(),
            plan_hash: d.plan_hash.clone(),
            actor: d.actor.clone(),
            pid: d.pid,
            host: d.host.clone(),
            started_at: d.started_at,
        },
    )
}

pub(crate) fn finished_data(
    id: i64,
    outcome: &str,
    exit_code: Option<i32>,
    summary: Option<&str>,
    finished_at: Option<i64>,
) -> Value {
    json!({
        "id": id,
        "outcome": outcome,
        "exit_code": exit_code,
        "summary": summary,
        "finished_at": finished_at,
    })
}

pub(crate) fn finished_data_of(d: &Deployment) -> Value {
    finished_data(
        d.id,
        d.outcome.as_str(),
        d.exit_code,
        d.summary.as_deref(),
        d.finished_at,
    )
}

pub(crate) fn step_data(s: &StepRun) -> Value {
    json!({
        "deployment_id": s.deployment_id,
        "seq": s.seq,
        "phase": s.phase.as_str(),
        "stage": s.stage,
        "step_id": s.step_id,
        "name": s.name,
        "kind": s.kind,
        "status": s.status.as_str(),
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "duration_ms": s.duration_ms,
        "exit_code": s.exit_code,
        "attempts": s.attempts,
        "output_tail": s.output_tail,
        "error": s.error,
        "outputs": s.outputs,
        "details": s.details,
    })
}

/// What an approval's audit record holds: every field of its row.
pub(crate) fn approval_data(a: &ApprovalRecord) -> Value {
    json!({
        "id": a.id,
        "deployment_id": a.deployment_id,
        "environment": a.environment,
        "verdict": a.verdict.as_str(),
        "actor": a.actor,
        "role": a.role,
        "comment": a.comment,
        "plan_hash": a.plan_hash,
        "artifact": a.artifact,
        "at": a.at,
    })
}

/// Checks the chain, then every covered row against its latest record; stops at the first
/// broken link.
pub(crate) fn verify(
    records: &[AuditRecord],
    deployments: &[Deployment],
    steps: &[StepRun],
    decisions: &[crate::DecisionRecord],
    approvals: &[ApprovalRecord],
) -> AuditReport {
    use std::collections::BTreeMap;

    let mut report = AuditReport {
        records: records.len() as i64,
        head: records
            .last()
            .map_or(GENESIS.to_string(), |r| r.hash.clone()),
        deployments_checked: 0,
        steps_checked: 0,
        decisions_checked: 0,
        approvals_checked: 0,
        deployments_before_log: 0,
        problem: None,
    };
    let fail = |mut report: AuditReport, link: String, what: String| {
        report.problem = Some(AuditProblem { link, what });
        report
    };

    // 1. The chain itself.
    let mut prev = GENESIS.to_string();
    let mut begun: BTreeMap<i64, (i64, Value)> = BTreeMap::new();
    let mut finished: BTreeMap<i64, (i64, Value)> = BTreeMap::new();
    let mut step_recs: BTreeMap<(i64, i64), (i64, Value)> = BTreeMap::new();
    let mut decision_recs: BTreeMap<(i64, String), (i64, Value)> = BTreeMap::new();
    let mut approval_recs: BTreeMap<i64, (i64, Value)> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let expected = i as i64 + 1;
        if r.seq != expected {
            let what = if r.seq > expected {
                format!(
                    "is missing: the log goes from #{} to #{}; a record was deleted",
                    expected - 1,
                    r.seq
                )
            } else {
                format!("is out of order: #{} comes after #{}", r.seq, expected - 1)
            };
            return fail(report, format!("audit record #{expected}"), what);
        }
        if r.prev_hash != prev {
            return fail(
                report,
                format!("audit record #{}", r.seq),
                format!(
                    "does not link to record #{}: a record before it was edited, deleted or reordered",
                    r.seq - 1
                ),
            );
        }
        if link_hash(&r.prev_hash, r.seq, r.at, &r.kind, r.deployment_id, &r.data) != r.hash {
            return fail(
                report,
                format!("audit record #{}", r.seq),
                "does not match its hash: it was edited".into(),
            );
        }
        prev = r.hash.clone();
        let Ok(data) = serde_json::from_str::<Value>(&r.data) else {
            return fail(
                report,
                format!("audit record #{}", r.seq),
                "holds data that is not JSON".into(),
            );
        };
        match AuditKind::parse(&r.kind) {
            Some(AuditKind::Started) if r.seq == 1 => {
                report.deployments_before_log = data["deployments_before"].as_i64().unwrap_or(0);
            }
            Some(AuditKind::DeploymentBegun) => {
                let id = data["id"].as_i64().unwrap_or(-1);
                if let Some((first, _)) = begun.get(&id) {
                    return fail(
                        report,
                        format!("audit record #{}", r.seq),
                        format!(
                            "begins deployment #{id} again (record #{first} began it): an id was reused"
                        ),
                    );
                }
                begun.insert(id, (r.seq, data));
            }
            Some(AuditKind::DeploymentFinished) => {
                let id = data["id"].as_i64().unwrap_or(-1);
                finished.insert(id, (r.seq, data));
            }
            Some(AuditKind::StepFinished) => {
                let key = (
                    data["deployment_id"].as_i64().unwrap_or(-1),
                    data["seq"].as_i64().unwrap_or(-1),
                );
                step_recs.insert(key, (r.seq, data));
            }
            Some(AuditKind::LockBroken | AuditKind::Bypass | AuditKind::Promotion) => {}
            Some(AuditKind::Approval) => {
                let id = data["id"].as_i64().unwrap_or(-1);
                if let Some((first, _)) = approval_recs.get(&id) {
                    return fail(
                        report,
                        format!("audit record #{}", r.seq),
                        format!(
                            "records approval #{id} again (record #{first} recorded it): an id was reused"
                        ),
                    );
                }
                approval_recs.insert(id, (r.seq, data));
            }
            Some(AuditKind::Decision) => {
                let key = (
                    data["deployment_id"].as_i64().unwrap_or(-1),
                    data["step_id"].as_str().unwrap_or_default().to_string(),
                );
                decision_recs.insert(key, (r.seq, data));
            }
            _ => {
                return fail(
                    report,
                    format!("audit record #{}", r.seq),
                    format!("has an unknown kind `{}`", r.kind),
                );
            }
        }
    }

    // 2. Every covered row against its latest record, and every record against its row.
    let legacy = report.deployments_before_log;
    let mut rows_seen = std::collections::BTreeSet::new();
    for d in deployments {
        if d.id <= legacy {
            continue;
        }
        rows_seen.insert(d.id);
        let link = format!("deployment #{}", d.id);
        let Some((seq, rec)) = begun.get(&d.id) else {
            return fail(
                report,
                link,
                "has no audit record: it was added, or renumbered, outside stagegate".into(),
            );
        };
        if let Some(diff) = first_difference(&begun_data_of(d), rec) {
            return fail(
                report,
                link,
                format!("differs from audit record #{seq}: {diff}"),
            );
        }
        match finished.get(&d.id) {
            Some((seq, rec)) => {
                if let Some(diff) = first_difference(&finished_data_of(d), rec) {
                    return fail(
                        report,
                        link,
                        format!("differs from audit record #{seq}: {diff}"),
                    );
                }
            }
            None if d.outcome != crate::OUTCOME_RUNNING || d.finished_at.is_some() => {
                return fail(
                    report,
                    link,
                    format!(
                        "says `{}`, but no audit record finished it: it was edited",
                        d.outcome
                    ),
                );
            }
            None => {}
        }
        report.deployments_checked += 1;
    }
    for (id, (seq, _)) in &begun {
        if !rows_seen.contains(id) {
            return fail(
                report,
                format!("deployment #{id}"),
                format!("was deleted or renumbered (audit record #{seq} began it)"),
            );
        }
    }
    let mut steps_seen = std::collections::BTreeSet::new();
    for s in steps {
        if s.deployment_id <= legacy {
            continue;
        }
        let key = (s.deployment_id, s.seq);
        steps_seen.insert(key);
        let link = format!(
            "step {} (`{}`) of deployment #{}",
            s.seq, s.step_id, s.deployment_id
        );
        match step_recs.get(&key) {
            Some((seq, rec)) => {
                if let Some(diff) = first_difference(&step_data(s), rec) {
                    return fail(
                        report,
                        link,
                        format!("differs from audit record #{seq}: {diff}"),
                    );
                }
            }
            None if s.status != crate::StepState::Running => {
                return fail(
                    report,
                    link,
                    format!(
                        "says `{}`, but has no audit record: it was added or edited outside stagegate",
                        s.status
                    ),
                );
            }
            None => {}
        }
        report.steps_checked += 1;
    }
    for ((dep, step), (seq, _)) in &step_recs {
        if !steps_seen.contains(&(*dep, *step)) {
            return fail(
                report,
                format!("step {step} of deployment #{dep}"),
                format!("was deleted (audit record #{seq} recorded it)"),
            );
        }
    }
    // 3. Every decision against its record, and every record against its decision.
    let mut decisions_seen = std::collections::BTreeSet::new();
    for d in decisions {
        let key = (d.deployment_id, d.step_id.clone());
        let link = format!(
            "the decision on step `{}` of deployment #{}",
            d.step_id, d.deployment_id
        );
        let Some((seq, rec)) = decision_recs.get(&key) else {
            return fail(
                report,
                link,
                "has no audit record: it was added outside stagegate".into(),
            );
        };
        let row = json!({
            "deployment_id": d.deployment_id,
            "step_id": d.step_id,
            "pass": d.pass,
            "actor": d.actor,
            "reason": d.reason,
        });
        if let Some(diff) = first_difference(&row, rec) {
            return fail(
                report,
                link,
                format!("differs from audit record #{seq}: {diff}"),
            );
        }
        decisions_seen.insert(key);
        report.decisions_checked += 1;
    }
    for ((dep, step), (seq, _)) in &decision_recs {
        if !decisions_seen.contains(&(*dep, step.clone())) {
            return fail(
                report,
                format!("the decision on step `{step}` of deployment #{dep}"),
                format!("was deleted (audit record #{seq} recorded it)"),
            );
        }
    }
    // 4. Every approval against its record, and every record against its approval.
    let mut approvals_seen = std::collections::BTreeSet::new();
    for a in approvals {
        let link = format!("approval #{} of deployment #{}", a.id, a.deployment_id);
        let Some((seq, rec)) = approval_recs.get(&a.id) else {
            return fail(
                report,
                link,
                "has no audit record: it was added, or renumbered, outside stagegate".into(),
            );
        };
        if let Some(diff) = first_difference(&approval_data(a), rec) {
            return fail(
                report,
                link,
                format!("differs from audit record #{seq}: {diff}"),
            );
        }
        approvals_seen.insert(a.id);
        report.approvals_checked += 1;
    }
    for (id, (seq, rec)) in &approval_recs {
        if !approvals_seen.contains(id) {
            let dep = rec["deployment_id"].as_i64().unwrap_or(-1);
            return fail(
                report,
                format!("approval #{id} of deployment #{dep}"),
                format!("was deleted or renumbered (audit record #{seq} recorded it)"),
            );
        }
    }
    report
}

/// The first field in which `row` differs from `recorded`, in words.
pub(crate) fn first_difference(row: &Value, recorded: &Value) -> Option<String> {
    let (Some(a), Some(b)) = (row.as_object(), recorded.as_object()) else {
        return (row != recorded).then(|| "its contents differ".to_string());
    };
    for (k, rv) in b {
        let av = a.get(k).unwrap_or(&Value::Null);
        if av != rv {
            return Some(format!(
                "`{k}` is {} but was recorded as {}",
                short(av),
                short(rv)
            ));
        }
    }
    None
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_hash() {
        let base = link_hash(GENESIS, 1, 10, "k", Some(1), "{}");
        assert_ne!(base, link_hash("1", 1, 10, "k", Some(1), "{}"));
        assert_ne!(base, link_hash(GENESIS, 2, 10, "k", Some(1), "{}"));
        assert_ne!(base, link_hash(GENESIS, 1, 11, "k", Some(1), "{}"));
        assert_ne!(base, link_hash(GENESIS, 1, 10, "j", Some(1), "{}"));
        assert_ne!(base, link_hash(GENESIS, 1, 10, "k", None, "{}"));
        assert_ne!(base, link_hash(GENESIS, 1, 10, "k", Some(1), "{ }"));
        // Fields are length-prefixed: moving a character across a boundary changes it too.
        assert_ne!(
            link_hash(GENESIS, 1, 10, "ab", None, "c"),
            link_hash(GENESIS, 1, 10, "a", None, "bc")
        );
    }
}
