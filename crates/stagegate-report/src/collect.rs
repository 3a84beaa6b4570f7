//! [`RunSummary`]: a whole run, folded from its events.
//!
//! Feed every event to [`RunSummary::apply`] in the order the engine emitted them; the JSON,
//! JUnit and Markdown reports are rendered from the result. Events the summary does not
//! need (a step starting, a service starting) are ignored.

use serde::Serialize;
use stagegate_engine::event::{Event, Millis, Outcome, Phase, StepResult};
use stagegate_plan::Release;

/// Everything a report needs to know about one run.
///
/// The serialized field names are part of the JSON report's contract: add fields, do not
/// rename them.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub deployment_id: i64,
    pub project: String,
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub release: Release,
    pub plan_hash: String,
    /// How many steps the plan has (run phase).
    pub steps_total: usize,
    /// Milliseconds since the Unix epoch; `None` until the run has started.
    pub started_at: Option<Millis>,
    /// Stages in the order they started.
    pub stages: Vec<String>,
    /// `None` until the run has finished.
    pub outcome: Option<Outcome>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    /// What happened and what to do next, in one or two sentences.
    pub summary: Option<String>,
    pub finished_at: Option<Millis>,
    /// Every finished step in order, the rollback's steps included.
    pub steps: Vec<StepResult>,
    pub warnings: Vec<String>,
    /// `None` when no rollback began.
    pub rollback: Option<RollbackSummary>,
    /// Services that answered their health check, in order.
    pub services: Vec<ServiceSummary>,
    /// What let a deploy of a protected environment go ahead (promotion, approvals, bypass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized: Option<stagegate_engine::event::Authorization>,
    /// Who ran it, when the caller knows (the HTML report's header); not in the events.
    #[serde(skip)]
    pub actor: Option<String>,
    /// Each watch step's sampling rounds, by step id: what the HTML report charts.
    #[serde(skip)]
    pub bake_rounds: std::collections::BTreeMap<String, Vec<BakeRound>>,
}

/// One sampling round of a watch step: each measurement's value, in the order of the
/// step's `measure` list (`None` for a sample without one: no data, an error).
#[derive(Debug, Clone, PartialEq)]
pub struct BakeRound {
    pub round: u32,
    pub at: Millis,
    pub values: Vec<Option<f64>>,
}

/// What the rollback did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RollbackSummary {
    pub reason: String,
    /// How many undo actions the rollback planned.
    pub actions: usize,
    /// `None` while the rollback is still running.
    pub ok: Option<bool>,
    /// What could not be undone, in plain words.
    pub not_rolled_back: Vec<String>,
}

/// A service that became healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSummary {
    pub service: String,
    pub release: String,
    pub url: String,
    pub waited_ms: u64,
}

impl Default for RunSummary {
    fn default() -> Self {
        Self {
            deployment_id: 0,
            project: String::new(),
            environment: String::new(),
            kind: String::new(),
            release: Release {
                version: String::new(),
                sha: String::new(),
            },
            plan_hash: String::new(),
            steps_total: 0,
            started_at: None,
            stages: Vec::new(),
            outcome: None,
            exit_code: None,
            duration_ms: None,
            summary: None,
            finished_at: None,
            steps: Vec::new(),
            warnings: Vec::new(),
            rollback: None,
            services: Vec::new(),
            authorized: None,
            actor: None,
            bake_rounds: Default::default(),
        }
    }
}

impl RunSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a whole event sequence.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut summary = Self::new();
        for e in events {
            summary.apply(e);
        }
        summary
    }

    /// Folds one event into the summary.
    pub fn apply(&mut self, e: &Event) {
        match e {
            Event::RunStarted {
                deployment_id,
                project,
                environment,
                kind,
                release,
                plan_hash,
                steps_total,
                at,
            } => {
                self.deployment_id = *deployment_id;
                self.project.clone_from(project);
                self.environment.clone_from(environment);
                self.kind.clone_from(kind);
                self.release = release.clone();
                self.plan_hash.clone_from(plan_hash);
                self.steps_total = *steps_total;
                self.started_at = Some(*at);
            }
            Event::StageStarted { stage } => {
                if !self.stages.contains(stage) {
                    self.stages.push(stage.clone());
                }
            }
            Event::StepFinished(result) => self.steps.push(result.clone()),
            Event::ServiceHealthy {
                service,
                release,
                url,
                waited_ms,
            } => self.services.push(ServiceSummary {
                service: service.clone(),
                release: release.clone(),
                url: url.clone(),
                waited_ms: *waited_ms,
            }),
            Event::RollbackStarted { reason, actions } => {
                self.rollback = Some(RollbackSummary {
                    reason: reason.clone(),
                    actions: *actions,
                    ok: None,
                    not_rolled_back: Vec::new(),
                });
            }
            Event::RollbackFinished {
                ok,
                not_rolled_back,
            } => {
                let rollback = self.rollback.get_or_insert_with(RollbackSummary::default);
                rollback.ok = Some(*ok);
                rollback.not_rolled_back.clone_from(not_rolled_back);
            }
            Event::Warning { message } => self.warnings.push(message.clone()),
            Event::Authorized(a) => self.authorized = Some(a.clone()),
            // Each watch step's tally is in its details; samples are in the event journal.
            Event::MeasurementRound {
                step_id,
                round,
                at,
                samples,
            } => self
                .bake_rounds
                .entry(step_id.clone())
                .or_default()
                .push(BakeRound {
                    round: *round,
                    at: *at,
                    values: samples.iter().map(|s| s.value).collect(),
                }),
            Event::Measurement { .. } | Event::DecisionPending { .. } | Event::Decided { .. } => {}
            Event::RunFinished {
                outcome,
                exit_code,
                duration_ms,
                summary,
                at,
            } => {
                self.outcome = Some(*outcome);
                self.exit_code = Some(*exit_code);
                self.duration_ms = Some(*duration_ms);
                self.summary = Some(summary.clone());
                self.finished_at = Some(*at);
            }
            Event::StepStarted { .. }
            | Event::StepRetrying { .. }
            | Event::StepProgress { .. }
            | Event::ServiceStarting { .. }
            | Event::ServiceRetired { .. }
            | Event::DriverProgress { .. } => {}
        }
    }

    /// Steps of the run phase, in order.
    pub fn run_steps(&self) -> impl Iterator<Item = &StepResult> {
        self.steps.iter().filter(|s| s.step.phase == Phase::Run)
    }

    /// Steps of the rollback, in order.
    pub fn rollback_steps(&self) -> impl Iterator<Item = &StepResult> {
        self.steps
            .iter()
            .filter(|s| s.step.phase == Phase::Rollback)
    }

    /// Steps that failed, timed out or were cancelled, in order (both phases).
    pub fn failed_steps(&self) -> impl Iterator<Item = &StepResult> {
        self.steps.iter().filter(|s| s.status.is_failure())
    }

    /// Whether the run finished and succeeded.
    pub fn succeeded(&self) -> bool {
        self.outcome == Some(Outcome::Succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_finished_without_start_still_records() {
        let mut s = RunSummary::new();
        s.apply(&Event::RollbackFinished {
            ok: false,
            not_rolled_back: vec!["the database migration".into()],
        });
        let rb = s.rollback.expect("rollback recorded");
        assert_eq!(rb.ok, Some(false));
        assert_eq!(
            rb.not_rolled_back,
            vec!["the database migration".to_string()]
        );
    }

    #[test]
    fn stages_are_recorded_once_in_order() {
        let mut s = RunSummary::new();
        for stage in ["build", "deploy", "build"] {
            s.apply(&Event::StageStarted {
                stage: stage.into(),
            });
        }
        assert_eq!(s.stages, vec!["build".to_string(), "deploy".to_string()]);
    }
}
