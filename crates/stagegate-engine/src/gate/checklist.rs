//! `gate: checklist`: items a person acknowledges.
//!
//! The engine never asks anyone: the command line does, before the run starts, when it has a
//! terminal, and passes the answers in [`crate::RunInputs`] with `--ack ITEM` and
//! `--ack-all`. Each acknowledgement is recorded with who and when.

use stagegate_plan::gate::ChecklistGate;

use super::evidence::now_rfc3339;
use super::{Acknowledgement, Check, Findings};
use crate::step::StepCtx;

pub(crate) fn evaluate(g: &ChecklistGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let inputs = ctx.inputs;
    let by = if inputs.actor.is_empty() {
        "unknown".to_string()
    } else {
        inputs.actor.clone()
    };
    let at = now_rfc3339();
    let mut missing = Vec::new();
    for item in &g.items {
        let acked = inputs.ack_all || inputs.acks.iter().any(|a| item.answers_to(a));
        if acked {
            f.acknowledgements.push(Acknowledgement {
                id: item.id.clone(),
                text: item.text.clone(),
                by: by.clone(),
                at: at.clone(),
            });
            f.checks.push(Check::pass(
                &item.id,
                format!("{}: acknowledged by {by} at {at}", item.text),
            ));
        } else {
            missing.push(item);
            f.checks.push(Check::fail(
                &item.id,
                format!("{}: not acknowledged", item.text),
            ));
        }
    }
    if !missing.is_empty() {
        let ids = missing
            .iter()
            .map(|i| format!("--ack {}", i.id))
            .collect::<Vec<_>>()
            .join(" ");
        f.help = Some(if inputs.interactive {
            format!(
                "{} item(s) were not confirmed at the prompt; confirm them, or pass {ids}",
                missing.len()
            )
        } else {
            format!(
                "there is no terminal to ask at: pass {ids}, or --ack-all --as NAME once each item is done"
            )
        });
    }
    f
}
