//! Typed events: the one way the engine tells the world what happens.
//!
//! The terminal, the store, and the JSON, JUnit and Markdown reports all consume this stream.
//! Every string in an event has already been scrubbed of secret values by the engine.

use std::collections::BTreeMap;

use serde::Serialize;
use stagegate_plan::Release;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which part of a run a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Run,
    Rollback,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Run => "run",
            Phase::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    Failed,
    TimedOut,
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StepStatus::Failed | StepStatus::TimedOut | StepStatus::Cancelled
        )
    }
}

/// How a run ended. Each outcome has one exit code (see [`crate::exit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// A step failed and nothing was rolled back (nothing had changed, or `on_failure: stop`).
    Failed,
    /// A step failed and everything that ran was rolled back.
    RolledBack,
    /// A step failed and the rollback failed too: the environment is in a mixed state.
    RollbackFailed,
    /// Cancelled by Ctrl-C or SIGTERM; what had begun was rolled back.
    Interrupted,
    /// A `watch` step was inconclusive: the new release runs until `stagegate decide`.
    AwaitingDecision,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::RollbackFailed => "rollback_failed",
            Outcome::Interrupted => "interrupted",
            Outcome::AwaitingDecision => "awaiting_decision",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Succeeded => crate::exit::SUCCESS,
            Outcome::Failed => crate::exit::FAILED,
            Outcome::RolledBack => crate::exit::ROLLED_BACK,
            Outcome::RollbackFailed => crate::exit::ROLLBACK_FAILED,
            Outcome::Interrupted => crate::exit::INTERRUPTED,
            Outcome::AwaitingDecision => crate::exit::AWAITING_DECISION,
        }
    }
}

/// Names a step within a run: its order, stage and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRef {
    /// 1-based order within the run, rollback steps included.
    pub seq: u32,
    pub phase: Phase,
    pub stage: String,
    pub id: String,
    pub name: String,
    /// `run`, `deploy`, `rollback-command`, `restore-service`, ...
    pub kind: String,
}

/// The result of one step, as recorded and reported.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub step: StepRef,
    pub status: StepStatus,
    pub started_at: Millis,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    /// The last lines of the step's output.
    pub output_tail: String,
    pub error: Option<String>,
    pub outputs: BTreeMap<String, String>,
    /// Evidence: what the step checked and found (release ids, URLs, health answers).
    pub details: crate::details::StepDetails,
}

/// One measurement's sample in a [`Event::MeasurementRound`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RoundSample {
    pub state: crate::watch::SampleState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why, for any sample but a pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// See [`Event::Authorized`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Authorization {
    /// The environment the release passed, and the deployment there (a promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_deployment: Option<i64>,
    /// The request the approvals were given on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<i64>,
    /// sha256 over version, SHA and every artifact's digest.
    pub artifact: String,
    pub approvals: Vec<Approver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<Approver>,
}

/// Who approved (or bypassed), as what, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Approver {
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub comment: String,
    pub at: Millis,
}

impl Authorization {
    /// One line: `promotion of #4 from staging (artifact 1a2b…), approved by alice (security)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.from {
            parts.push(format!(
                "promotion from {f}{}",
                self.source_deployment
                    .map(|d| format!(" (deployment #{d})"))
                    .unwrap_or_default()
            ));
        }
        parts.push(format!(
            "artifact {}",
            self.artifact.chars().take(12).collect::<String>()
        ));
        if !self.approvals.is_empty() {
            let by: Vec<String> = self
                .approvals
                .iter()
                .map(|a| match &a.role {
                    Some(r) => format!("{} ({r})", a.actor),
                    None => a.actor.clone(),
                })
                .collect();
            parts.push(format!("approved by {}", by.join(", ")));
        }
        if let Some(b) = &self.bypass {
            parts.push(format!("bypass by {}: {}", b.actor, b.comment));
        }
        parts.join("; ")
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        deployment_id: i64,
        project: String,
        environment: String,
        /// `deploy` or `rollback`.
        kind: String,
        release: Release,
        plan_hash: String,
        steps_total: usize,
        at: Millis,
    },
    StageStarted {
        stage: String,
    },
    StepStarted {
        step: StepRef,
        at: Millis,
    },
    /// An attempt failed and the step will try again.
    StepRetrying {
        step: StepRef,
        attempt: u32,
        attempts: u32,
        error: String,
    },
    StepFinished(StepResult),
    /// A long step's progress (a load test's rate, p95 and errors), about once a second.
    StepProgress {
        step: StepRef,
        message: String,
        /// A periodic line of figures (rate, p95, errors), as opposed to news such as the
        /// start or an abort: reporters may show fewer of them.
        figures: bool,
    },
    ServiceStarting {
        service: String,
        release: String,
        port: u16,
        dir: String,
    },
    ServiceHealthy {
        service: String,
        release: String,
        url: String,
        waited_ms: u64,
    },
    ServiceRetired {
        service: String,
        release: String,
    },
    /// A remote driver's news: a batch of hosts starting, a host done.
    DriverProgress {
        service: String,
        message: String,
    },
    RollbackStarted {
        reason: String,
        actions: usize,
    },
    RollbackFinished {
        ok: bool,
        /// What could not be undone, in plain words.
        not_rolled_back: Vec<String>,
    },
    Warning {
        message: String,
    },
    /// One sample of a `watch` step's measurement.
    Measurement {
        step: StepRef,
        name: String,
        /// The sampling round, from 1.
        round: u32,
        state: crate::watch::SampleState,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        /// Why the sample is what it is (`0.31 is > 0.05`, `no data: ...`).
        detail: String,
        at: Millis,
    },
    /// One sampling round of a `watch` step: every measurement's sample, in the order of
    /// the step's `measure` list (the names are in the step's details). This is what the
    /// store keeps of a bake, compactly; the per-sample [`Event::Measurement`]s are for the
    /// live stream only.
    MeasurementRound {
        step_id: String,
        round: u32,
        at: Millis,
        samples: Vec<RoundSample>,
    },
    /// An inconclusive watch waits for `stagegate decide`.
    DecisionPending {
        deployment_id: i64,
        step: StepRef,
        reason: String,
    },
    /// A person decided an inconclusive watch.
    Decided {
        step: StepRef,
        pass: bool,
        actor: String,
        reason: String,
    },
    /// What let a deploy of a protected environment go ahead: a promotion with its
    /// approvals, or a bypass with its reason.
    Authorized(Authorization),
    RunFinished {
        outcome: Outcome,
        exit_code: i32,
        duration_ms: u64,
        /// One or two sentences: what happened and what to do next.
        summary: String,
        at: Millis,
    },
}

impl Event {
    /// The `event` tag: `run_started`, `step_finished`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::StageStarted { .. } => "stage_started",
            Event::StepStarted { .. } => "step_started",
            Event::Measurement { .. } => "measurement",
            Event::MeasurementRound { .. } => "measurement_round",
            Event::DecisionPending { .. } => "decision_pending",
            Event::Decided { .. } => "decided",
            Event::Authorized(_) => "authorized",
            Event::StepRetrying { .. } => "step_retrying",
            Event::StepFinished(_) => "step_finished",
            Event::StepProgress { .. } => "step_progress",
            Event::ServiceStarting { .. } => "service_starting",
            Event::ServiceHealthy { .. } => "service_healthy",
            Event::ServiceRetired { .. } => "service_retired",
            Event::DriverProgress { .. } => "driver_progress",
            Event::RollbackStarted { .. } => "rollback_started",
            Event::RollbackFinished { .. } => "rollback_finished",
            Event::Warning { .. } => "warning",
            Event::RunFinished { .. } => "run_finished",
        }
    }
}

/// Where the engine sends events. Cloning shares the channel.
#[derive(Clone)]
pub struct Events {
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl Events {
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn emit(&self, e: Event) {
        // A closed receiver means nobody listens any more; the run goes on regardless.
        let _ = self.tx.send(e);
    }
}

// The store keeps the same statuses as typed words of its own.
impl From<Phase> for stagegate_store::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Run => stagegate_store::Phase::Run,
            Phase::Rollback => stagegate_store::Phase::Rollback,
        }
    }
}

impl From<StepStatus> for stagegate_store::StepState {
    fn from(s: StepStatus) -> Self {
        use stagegate_store::StepState as S;
        match s {
            StepStatus::Passed => S::Passed,
            StepStatus::Failed => S::Failed,
            StepStatus::TimedOut => S::TimedOut,
            StepStatus::Skipped => S::Skipped,
            StepStatus::Cancelled => S::Cancelled,
        }
    }
}

impl From<Outcome> for stagegate_store::Outcome {
    fn from(o: Outcome) -> Self {
        use stagegate_store::Outcome as O;
        match o {
            Outcome::Succeeded => O::Succeeded,
            Outcome::Failed => O::Failed,
            Outcome::RolledBack => O::RolledBack,
            Outcome::RollbackFailed => O::RollbackFailed,
            Outcome::Interrupted => O::Interrupted,
            Outcome::AwaitingDecision => O::AwaitingDecision,
        }
    }
}
