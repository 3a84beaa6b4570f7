//! What a step kind's runner gets and gives back.
//!
//! A kind (an HTTP check, a gate, a load test, ...) is an `async fn run(spec, &StepCtx) ->
//! StepOutcome` in its own module. The executor turns the outcome into a recorded
//! [`crate::StepResult`]: it scrubs secrets, stores outputs for later steps and masks the
//! outputs the kind marked secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stagegate_plan::{Plan, Ref, Scope, Scrubber, Step, Template, truthy};
use tokio_util::sync::CancellationToken;

use crate::event::{Events, StepRef, StepStatus};

/// What the person or pipeline running stagegate said up front.
#[derive(Debug, Clone, Default)]
pub struct RunInputs {
    /// Who runs this (recorded with acknowledgements and overrides).
    pub actor: String,
    /// Checklist items acknowledged with `--ack ITEM`.
    pub acks: Vec<String>,
    /// `--ack-all`: every checklist item is acknowledged by `actor`.
    pub ack_all: bool,
    /// Whether a person can be asked at a terminal.
    pub interactive: bool,
    /// `--override "justification"` for gates that allow one.
    pub override_reason: Option<String>,
    /// Evaluate time-based gates (deploy windows) as if it were this time (`check --at`).
    pub at: Option<jiff::Timestamp>,
    /// The report of each load step's last passing run in this environment (by step id), for
    /// thresholds such as `p95 <= +10% vs last_pass`. Read from the state store by the caller.
    pub baselines: BTreeMap<String, serde_json::Value>,
    /// Where an inconclusive `watch` gets its decision, and whether it waits for one.
    pub decisions: crate::watch::Decisions,
    /// Baselines of `watch` measurements by (step id, measurement name): found, or why not.
    /// `last_pass` ones are read from the state store by the caller; `before` ones are
    /// captured by the run itself before its first step.
    pub watch_baselines: BTreeMap<(String, String), Result<crate::watch::Baseline, String>>,
    /// A promotion's artifacts by service: what passed the source environment. A deploy
    /// whose artifacts differ fails (the local driver before it starts anything).
    pub pinned: BTreeMap<String, Vec<crate::local::ArtifactDigest>>,
}

/// Which steps a run executes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StepFilter {
    #[default]
    All,
    /// Only gates (`stagegate check ENV`): nothing changes.
    GatesOnly,
}

/// Everything a step kind's runner may use.
pub struct StepCtx<'a> {
    pub plan: &'a Plan,
    pub step: &'a Step,
    pub step_ref: &'a StepRef,
    pub scope: &'a Scope,
    pub scrubber: &'a Scrubber,
    pub cancel: &'a CancellationToken,
    pub events: &'a Events,
    /// The step's log file (scrub what you write to it).
    pub log: PathBuf,
    pub state_dir: &'a Path,
    pub deployment_id: i64,
    pub inputs: &'a RunInputs,
}

impl StepCtx<'_> {
    /// Where the step is written, `stagegate.yml:42`, for errors the plan can fix.
    pub fn place(&self) -> String {
        format!(
            "{}:{}",
            self.step
                .span
                .path()
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.step.span.pos.line
        )
    }

    /// The environment of a command the step runs (see [`command_env`]).
    pub fn command_env(&self) -> Result<BTreeMap<String, String>, String> {
        command_env(
            self.scope,
            self.deployment_id,
            self.step.env.iter().map(|(k, t)| (k, &t.value)),
        )
    }

    /// The working directory of a command the step runs (see [`command_cwd`]).
    pub fn command_cwd(&self) -> Result<PathBuf, String> {
        command_cwd(
            &self.plan.dir,
            self.scope,
            self.step.cwd.as_ref().map(|c| &c.value),
        )
    }
}

/// What a command stagegate runs for a step finds in its environment, besides stagegate's
/// own: the run's identity (`STAGEGATE_ENVIRONMENT`, `STAGEGATE_RELEASE_VERSION`,
/// `STAGEGATE_RELEASE_SHA`, `STAGEGATE_DEPLOYMENT`), then the step's `env`, rendered.
pub fn command_env<'t>(
    scope: &Scope,
    deployment_id: i64,
    step_env: impl IntoIterator<Item = (&'t String, &'t Template)>,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::from([
        (
            "STAGEGATE_ENVIRONMENT".to_string(),
            scope.environment.clone(),
        ),
        (
            "STAGEGATE_RELEASE_VERSION".to_string(),
            scope.release.version.clone(),
        ),
        (
            "STAGEGATE_RELEASE_SHA".to_string(),
            scope.release.sha.clone(),
        ),
        (
            "STAGEGATE_DEPLOYMENT".to_string(),
            deployment_id.to_string(),
        ),
    ]);
    for (k, t) in step_env {
        env.insert(
            k.clone(),
            scope.render(t).map_err(|e| format!("env `{k}`: {e}"))?,
        );
    }
    Ok(env)
}

/// Where a step's command runs: the plan's directory, or the step's `cwd` under it.
pub fn command_cwd(
    plan_dir: &Path,
    scope: &Scope,
    cwd: Option<&Template>,
) -> Result<PathBuf, String> {
    match cwd {
        None => Ok(plan_dir.to_path_buf()),
        Some(t) => Ok(plan_dir.join(scope.render(t).map_err(|e| format!("cwd: {e}"))?)),
    }
}

/// How a step of any kind ended.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    /// The last lines of what the step printed or saw.
    pub tail: String,
    pub error: Option<String>,
    pub outputs: BTreeMap<String, String>,
    /// Names of outputs whose values are secret: masked everywhere from now on.
    pub secret_outputs: Vec<String>,
    /// Evidence: what was checked and found.
    pub details: crate::details::StepDetails,
}

impl StepOutcome {
    pub fn new(status: StepStatus) -> Self {
        Self {
            status,
            exit_code: None,
            attempts: 1,
            tail: String::new(),
            error: None,
            outputs: BTreeMap::new(),
            secret_outputs: Vec::new(),
            details: Default::default(),
        }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::new(StepStatus::Failed)
        }
    }

    pub fn with_details(mut self, details: crate::details::StepDetails) -> Self {
        self.details = details;
        self
    }
}

/// Whether a step's `when` holds (a step without one always runs). In a condition, an unset
/// environment variable is empty, not an error.
pub fn when_holds(step: &Step, scope: &Scope) -> Result<bool, String> {
    let Some(w) = &step.when else {
        return Ok(true);
    };
    w.value
        .eval(&mut |r| match (r, scope.resolve(r)) {
            (Ref::Env(_), Err(_)) => Ok(String::new()),
            (_, v) => v,
        })
        .map(|v| truthy(&v))
        .map_err(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steps: &str) -> Plan {
        let text = format!("project: demo\nenvironments:\n  staging: {{}}\nstages:\n  s:\n{steps}");
        match stagegate_plan::load_str(std::path::Path::new("stagegate.yml"), &text) {
            Ok((plan, _)) => plan,
            Err(d) => panic!("the plan is valid: {d:?}"),
        }
    }

    fn scope(plan: &Plan) -> Scope {
        let opts = stagegate_plan::ScopeOptions {
            release_version: Some("1.0.0".into()),
            release_sha: Some("abc".into()),
            vars: Vec::new(),
            process_env: [("SET".to_string(), "yes".to_string())].into(),
        };
        Scope::prepare(plan, "staging", opts).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn an_unset_env_var_is_empty_in_when_for_the_run_and_up_front() {
        let plan = plan(
            "    - id: unset\n      run: 'true'\n      when: env.UNSET == 'yes'\n    \
             - id: set\n      run: 'true'\n      when: env.SET == 'yes'\n    \
             - id: later\n      run: 'true'\n      when: steps.unset.outputs.x == 'y'\n    \
             - id: always\n      run: 'true'\n",
        );
        let scope = scope(&plan);
        let step = |id: &str| {
            plan.steps()
                .map(|(_, s)| s)
                .find(|s| s.id == id)
                .unwrap_or_else(|| panic!("step {id}"))
        };
        assert_eq!(when_holds(step("unset"), &scope), Ok(false));
        assert_eq!(when_holds(step("set"), &scope), Ok(true));
        assert_eq!(when_holds(step("always"), &scope), Ok(true));
        assert!(crate::gate::skipped_up_front(step("unset"), &scope));
        assert!(!crate::gate::skipped_up_front(step("set"), &scope));
        // What the run produces is not known up front.
        assert!(!crate::gate::skipped_up_front(step("later"), &scope));
    }
}
