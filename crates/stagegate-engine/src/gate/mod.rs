//! Gates: steps that check and change nothing, one module per gate type.
//!
//! [`run`] evaluates a gate into [`Evidence`] (every check with what it found), retries a
//! failed external check (`command`, `env`, `secrets`, `git`) as the step's `retries` say,
//! applies `--override` where the plan allows it, and returns the step's outcome with the
//! evidence in its details. [`preflight`] checks, at the start of a run and before any step,
//! what the plan reader could not: files named through templates exist.
//!
//! No gate puts a secret value in its evidence or messages: secrets appear by name and
//! fingerprint only (and the executor scrubs every string as well).

mod checklist;
mod command;
mod config;
mod env;
mod evidence;
mod exec;
mod git;
mod secrets;
mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;

use stagegate_plan::gate::{EnvSource, GateKind, GateSpec, SecretSource};
use stagegate_plan::glob::expand_files;
use stagegate_plan::{Plan, Ref, Scope, StepKind, Template};

pub use evidence::{Acknowledgement, Check, Evidence, Override};

use crate::event::{Event, StepStatus};
use crate::poll::{Attempt, PollPolicy, poll};
use crate::step::{StepCtx, StepOutcome};

/// What evaluating a gate found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub checks: Vec<Check>,
    pub acknowledgements: Vec<Acknowledgement>,
    /// The output of a command the gate ran.
    pub tail: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// What to do when the gate fails.
    pub help: Option<String>,
    pub outputs: BTreeMap<String, String>,
}

impl Findings {
    fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

/// Evaluates a gate step.
pub async fn run(spec: &GateSpec, ctx: &StepCtx<'_>) -> StepOutcome {
    // A person's answer or the clock will not change if asked again a second later.
    let retryable = !matches!(spec.kind, GateKind::Checklist(_) | GateKind::Window(_));
    let attempts = if retryable { ctx.step.retries + 1 } else { 1 };
    let policy = PollPolicy {
        attempts: Some(attempts),
        interval: ctx.step.retry_delay,
        deadline: None,
    };
    // An attempt's findings; none when the run was cancelled during it.
    let result = poll(
        &policy,
        ctx.cancel,
        |_| async {
            tokio::select! {
                f = evaluate_bounded(spec, ctx) => {
                    if f.passed() { Attempt::Done(f) } else { Attempt::Again(Some(f)) }
                }
                () = ctx.cancel.cancelled() => Attempt::Stop(None),
            }
        },
        |attempt, findings: &Option<Findings>| {
            if let Some(f) = findings {
                ctx.events.emit(Event::StepRetrying {
                    step: ctx.step_ref.clone(),
                    attempt,
                    attempts,
                    error: ctx.scrubber.scrub(&failure_summary(spec, f)),
                });
            }
        },
    )
    .await;
    let (findings, attempt) = match result {
        Ok(p) => (p.value, p.attempts),
        Err(g) => {
            let attempt = g.attempts();
            match g.into_last().flatten() {
                Some(f) => (f, attempt),
                None => {
                    return StepOutcome {
                        attempts: attempt,
                        ..StepOutcome::new(StepStatus::Cancelled)
                    }
                    .with_details(crate::details::StepDetails::Gate(Box::new(Evidence {
                        gate: spec.kind.type_name().into(),
                        ..Evidence::default()
                    })));
                }
            }
        }
    };
    conclude(spec, ctx, findings, attempt)
}

/// Evaluates the gate once. A command gate kills its own command at the step's timeout;
/// other gates are bounded here.
async fn evaluate_bounded(spec: &GateSpec, ctx: &StepCtx<'_>) -> Findings {
    let evaluation = evaluate(spec, ctx);
    match ctx.step.timeout {
        Some(t) if !matches!(spec.kind, GateKind::Command(_)) => {
            match tokio::time::timeout(t, evaluation).await {
                Ok(f) => f,
                Err(_) => Findings {
                    checks: vec![Check::fail(
                        spec.kind.type_name(),
                        format!("the gate did not finish within its timeout of {t:?}"),
                    )],
                    timed_out: true,
                    ..Default::default()
                },
            }
        }
        _ => evaluation.await,
    }
}

fn failure_summary(spec: &GateSpec, f: &Findings) -> String {
    let failed: Vec<&Check> = f.checks.iter().filter(|c| !c.ok).collect();
    let mut s = failed
        .iter()
        .map(|c| c.message.clone())
        .collect::<Vec<_>>()
        .join("; ");
    if failed.len() > 1 {
        s = format!("{} checks failed: {s}", failed.len());
    }
    if s.is_empty() {
        s = format!(
            "the gate checked nothing: it needs {}",
            what_to_check(&spec.kind)
        );
    }
    s
}

/// The keys that give a gate of this type something to check, for "it needs ...".
fn what_to_check(kind: &GateKind) -> &'static str {
    match kind {
        GateKind::Git(_) => "one or more of `branch`, `clean`, `pushed`, `tag` and `ancestor_of`",
        GateKind::Command(_) => {
            "`expect` (`exit`, `output_contains`, `output_lacks`, `output_matches`)"
        }
        GateKind::Secrets(_) => "`require`, `forbid`, `forbid_values`, `only` or `drift`",
        GateKind::Env(_) => "`expect: { NAME: value }`",
        GateKind::Config(_) => {
            "`files` that exist and a rule: `forbid_hosts`, `require_https`, `forbid_values` or `forbid_patterns`"
        }
        GateKind::Checklist(_) => "`items`",
        GateKind::Window(_) => "`allow` and/or `freeze`",
    }
}

/// Turns findings into the step's outcome: the verdict, the override, the evidence.
fn conclude(spec: &GateSpec, ctx: &StepCtx<'_>, f: Findings, attempts: u32) -> StepOutcome {
    let passed = f.passed();
    let mut evidence = Evidence {
        gate: spec.kind.type_name().to_string(),
        passed,
        checks: f.checks.clone(),
        acknowledgements: f.acknowledgements.clone(),
        overridden: None,
        help: None,
    };
    let mut status = if passed {
        StepStatus::Passed
    } else if f.timed_out {
        StepStatus::TimedOut
    } else {
        StepStatus::Failed
    };
    let mut error = None;
    if !passed {
        let reason = ctx.inputs.override_reason.as_deref().map(str::trim);
        match reason {
            Some(reason) if spec.allow_override && !reason.is_empty() => {
                let who = if ctx.inputs.actor.is_empty() {
                    "unknown".to_string()
                } else {
                    ctx.inputs.actor.clone()
                };
                evidence.overridden = Some(Override {
                    by: who.clone(),
                    at: evidence::now_rfc3339(),
                    reason: reason.to_string(),
                });
                status = StepStatus::Passed;
                ctx.events.emit(Event::Warning {
                    message: ctx.scrubber.scrub(&format!(
                        "gate `{}` failed ({}) and was overridden by {who}: {reason}",
                        ctx.step.id,
                        failure_summary(spec, &f)
                    )),
                });
            }
            _ => {
                let mut message = format!(
                    "{} gate: {}",
                    spec.kind.type_name(),
                    failure_summary(spec, &f)
                );
                if let Some(help) = &f.help {
                    message.push_str(&format!("\nhelp: {help}"));
                }
                if reason.is_some() && !spec.allow_override {
                    message.push_str(
                        "\nnote: --override does not apply to this gate: the plan does not allow it (`allow_override: true`)",
                    );
                } else if reason.is_none() && spec.allow_override {
                    message.push_str(
                        "\nnote: the plan allows passing this gate with --override \"justification\" (recorded)",
                    );
                }
                evidence.help = f.help.clone();
                error = Some(message);
            }
        }
    }
    let details = crate::details::StepDetails::Gate(Box::new(evidence));
    StepOutcome {
        status,
        exit_code: f.exit_code,
        attempts,
        tail: f.tail,
        error,
        outputs: f.outputs,
        secret_outputs: Vec::new(),
        details,
    }
}

async fn evaluate(spec: &GateSpec, ctx: &StepCtx<'_>) -> Findings {
    match &spec.kind {
        GateKind::Git(g) => git::evaluate(g, ctx).await,
        GateKind::Command(c) => command::evaluate(c, ctx).await,
        GateKind::Secrets(s) => secrets::evaluate(s, ctx).await,
        GateKind::Env(e) => env::evaluate(e, ctx).await,
        GateKind::Config(c) => config::evaluate(c, ctx),
        GateKind::Checklist(c) => checklist::evaluate(c, ctx),
        GateKind::Window(w) => window::evaluate(w, ctx),
    }
}

/// A path relative to the plan, shown relative when it is inside the plan's directory.
pub(crate) fn show_path(plan: &Plan, p: &std::path::Path) -> String {
    p.strip_prefix(&plan.dir).unwrap_or(p).display().to_string()
}

/// Where the environment's secrets dotenv file is (`secrets.dotenv`, else `.env.ENV`).
pub(crate) fn environment_dotenv(plan: &Plan, environment: &str) -> Option<PathBuf> {
    let env = plan.environment(environment)?;
    match env.secrets.dotenv.as_ref().or(plan.secrets.dotenv.as_ref()) {
        Some(p) => Some(plan.dir.join(&p.value)),
        None => Some(plan.dir.join(format!(".env.{environment}"))).filter(|p| p.exists()),
    }
}

/// Checks, before any step runs, that every gate of the run can be evaluated: the files its
/// templates name exist. Gates whose `when` is false are left out; templates that need
/// values produced during the run are checked when the gate runs.
pub fn preflight(plan: &Plan, scope: &Scope) -> Vec<String> {
    let mut errors = Vec::new();
    for (_, step) in plan.steps() {
        let StepKind::Gate(g) = &step.kind else {
            continue;
        };
        if skipped_up_front(step, scope) {
            continue;
        }
        let mut paths: Vec<(&stagegate_plan::Spanned<Template>, &str)> = Vec::new();
        match &g.kind {
            GateKind::Config(c) => paths.extend(c.files.iter().map(|f| (f, "files"))),
            GateKind::Secrets(s) => {
                for src in &s.from {
                    if let SecretSource::Dotenv(t) = src {
                        paths.push((t, "dotenv"));
                    }
                }
            }
            GateKind::Env(e) => {
                if let EnvSource::Dotenv(t) = &e.from {
                    paths.push((t, "dotenv"));
                }
            }
            _ => {}
        }
        for (t, key) in paths {
            if t.value.refs().iter().any(|(r, _)| produced_during_run(r)) {
                continue;
            }
            let at = format!(
                "{}:{}:{}",
                t.span.path().display(),
                t.span.pos.line,
                t.span.pos.col
            );
            match scope.render(&t.value) {
                Err(e) => errors.push(format!(
                    "{at}: gate `{}` cannot be evaluated: `{key}`: {e}",
                    step.id
                )),
                Ok(p) => {
                    if let Err(e) = expand_files(&plan.dir, &p) {
                        errors.push(scope.scrubber().scrub(&format!(
                            "{at}: gate `{}` cannot be evaluated: `{key}`: {e} (paths are relative to {})",
                            step.id,
                            plan.dir.display()
                        )));
                    }
                }
            }
        }
    }
    errors
}

/// Whether a step's `when` is false before the run starts: it names no value the run
/// produces (a step's outputs, a service's address) and does not hold. The executor
/// evaluates the same `when` with [`crate::step::when_holds`] when the step's turn comes.
pub fn skipped_up_front(step: &stagegate_plan::Step, scope: &Scope) -> bool {
    let Some(w) = &step.when else {
        return false;
    };
    let mut refs = Vec::new();
    w.value.refs(&mut refs);
    !refs.iter().any(|(r, _)| produced_during_run(r))
        && matches!(crate::step::when_holds(step, scope), Ok(false))
}

/// What a gate needs that only the steps `check` leaves out produce: a service's address, or
/// the outputs of a step that is not a gate. `None` when `check` can evaluate it.
pub(crate) fn needs_deploy_values(plan: &Plan, step: &stagegate_plan::Step) -> Option<String> {
    let mut refs: Vec<Ref> = step
        .kind
        .templates()
        .iter()
        .flat_map(|t| t.value.refs())
        .map(|(r, _)| r)
        .collect();
    if let Some(w) = &step.when {
        let mut more = Vec::new();
        w.value.refs(&mut more);
        refs.extend(more.into_iter().map(|(r, _)| r));
    }
    let mut needs: Vec<String> = refs
        .iter()
        .filter(|r| match r {
            Ref::Service { .. } => true,
            Ref::StepOutput { step: id, .. } => plan
                .steps()
                .find(|(_, s)| s.id == *id)
                .is_none_or(|(_, s)| !s.kind.is_gate()),
            _ => false,
        })
        .map(|r| format!("`{r}`"))
        .collect();
    // A value named twice (in the `when` and a template, or two templates) is listed once.
    needs.sort();
    needs.dedup();
    (!needs.is_empty()).then(|| needs.join(", "))
}

fn produced_during_run(r: &Ref) -> bool {
    matches!(r, Ref::StepOutput { .. } | Ref::Service { .. })
}
