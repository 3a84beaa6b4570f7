//! What `deploy` and `check` do before the run starts: refuse gates that cannot be
//! evaluated, check `--ack` and `--override`, and ask a person at a terminal to acknowledge
//! the checklist items. The engine never prompts; the answers go to it in [`RunInputs`].

use std::io::{BufRead, IsTerminal, Write};

use stagegate_engine::RunInputs;
use stagegate_plan::gate::{ChecklistItem, GateKind};
use stagegate_plan::{Plan, Scope, StepKind};

use crate::cli::{GateArgs, RunArgs};
use crate::context::{Failure, actor};

/// Builds the run's inputs, or says why the run cannot start (nothing has run yet).
pub fn run_inputs(
    plan: &Plan,
    scope: &Scope,
    gates: &GateArgs,
    run: &RunArgs,
    at: Option<jiff::Timestamp>,
) -> Result<RunInputs, Failure> {
    let errors = stagegate_engine::gate::preflight(plan, scope);
    if !errors.is_empty() {
        let n = errors.len();
        return Err(Failure::invalid(format!(
            "{}\nerror: {n} gate{} cannot be evaluated; nothing ran",
            errors
                .iter()
                .map(|e| format!("error: {e}"))
                .collect::<Vec<_>>()
                .join("\n"),
            if n == 1 { "" } else { "s" }
        )));
    }
    let all_items = checklist_items(plan, None);
    for a in &gates.acks {
        if !all_items.iter().any(|i| i.answers_to(a)) {
            let ids: Vec<&str> = all_items.iter().map(|i| i.id.as_str()).collect();
            let hint = if ids.is_empty() {
                "the plan has no checklist".to_string()
            } else {
                stagegate_plan::diagnostic::did_you_mean(a, ids.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("checklist items: {}", ids.join(", ")))
            };
            return Err(Failure::invalid(format!(
                "error: --ack `{a}` names no checklist item: {hint}"
            )));
        }
    }
    if gates.ack_all && run.actor.is_none() {
        return Err(Failure::invalid(
            "error: --ack-all needs --as NAME: the acknowledgements are recorded under that name",
        ));
    }
    if let Some(r) = &gates.override_reason
        && r.trim().is_empty()
    {
        return Err(Failure::invalid(
            "error: --override needs a justification, e.g. --override \"hotfix for incident 4711, approved by the tech lead\"",
        ));
    }
    let who = actor(run.actor.as_deref());
    let interactive = std::io::stdin().is_terminal() && std::env::var_os("CI").is_none();
    let mut acks = gates.acks.clone();
    if interactive && !gates.ack_all {
        let open: Vec<&ChecklistItem> = checklist_items(plan, Some(scope))
            .into_iter()
            .filter(|i| !acks.iter().any(|a| i.answers_to(a)))
            .collect();
        if !open.is_empty() {
            acks.extend(ask(&open, &who));
        }
    }
    Ok(RunInputs {
        actor: who,
        acks,
        ack_all: gates.ack_all,
        interactive,
        override_reason: gates.override_reason.clone(),
        at,
        baselines: Default::default(),
        decisions: Default::default(),
        watch_baselines: Default::default(),
        pinned: Default::default(),
    })
}

/// Checklist items of the plan; with a scope, only those of gates that will run (a `when`
/// that is false leaves its items out).
fn checklist_items<'p>(plan: &'p Plan, scope: Option<&Scope>) -> Vec<&'p ChecklistItem> {
    let mut out = Vec::new();
    for (_, step) in plan.steps() {
        let StepKind::Gate(g) = &step.kind else {
            continue;
        };
        let GateKind::Checklist(c) = &g.kind else {
            continue;
        };
        if scope.is_some_and(|scope| stagegate_engine::gate::skipped_up_front(step, scope)) {
            continue;
        }
        out.extend(&c.items);
    }
    out
}

/// Asks for each item on stderr, reading `y` or `n` from stdin. Returns the ids confirmed.
fn ask(items: &[&ChecklistItem], who: &str) -> Vec<String> {
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "checklist: confirm each item is done (recorded as acknowledged by {who})"
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut confirmed = Vec::new();
    for item in items {
        let _ = write!(err, "  [ ] {} ? [y/N] ", item.text);
        let _ = err.flush();
        let Some(Ok(answer)) = lines.next() else {
            let _ = writeln!(err);
            break;
        };
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            confirmed.push(item.id.clone());
        }
    }
    confirmed
}
