//! `gate: command`: a command (a test suite, a "CI is green" script) whose exit code and
//! output are asserted. The step's `timeout` kills the command's whole process group.

use stagegate_plan::gate::{CommandGate, OutputRule};

use super::exec::capture;
use super::{Check, Findings};
use crate::process::{Exit, TAIL_LINES, last_lines};
use crate::step::StepCtx;

pub(crate) async fn evaluate(c: &CommandGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let prepared = (|| {
        let shell = ctx.scope.render_shell(&c.run.value)?;
        let mut env = ctx.command_env()?;
        env.extend(shell.env);
        Ok::<_, String>((shell.script, env, ctx.command_cwd()?))
    })();
    let (script, env, cwd) = match prepared {
        Ok(p) => p,
        Err(e) => {
            f.checks.push(Check::fail(
                "run",
                format!("cannot prepare the command: {e}"),
            ));
            return f;
        }
    };
    let out = capture(&script, &cwd, &env, ctx.step.timeout, ctx.cancel).await;
    let output = out.output();
    let clean = ctx.scrubber.scrub(&output);
    let _ = crate::process::write_private(&ctx.log, clean.as_bytes());
    f.tail = last_lines(&clean, TAIL_LINES);
    let codes = c
        .exit_codes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    match &out.exit {
        Exit::Code(code) => {
            f.exit_code = Some(*code);
            f.outputs.insert("exit_code".into(), code.to_string());
            if c.exit_codes.contains(code) {
                f.checks.push(Check::pass(
                    "exit",
                    format!("the command exited with code {code} (expected {codes})"),
                ));
            } else {
                f.checks.push(Check::fail(
                    "exit",
                    format!("the command exited with code {code}, expected {codes}"),
                ));
            }
        }
        other => {
            f.timed_out = matches!(other, Exit::TimedOut);
            let how = match (other, ctx.step.timeout) {
                // The gate's own wording: the time first.
                (Exit::TimedOut, Some(t)) => {
                    format!("did not finish within {t:?}; its process group was killed")
                }
                _ => other.describe(ctx.step.timeout),
            };
            f.checks
                .push(Check::fail("exit", format!("the command {how}")));
            return f;
        }
    }
    for rule in &c.output {
        let check = match rule {
            OutputRule::Contains(t) => match ctx.scope.render(&t.value) {
                Ok(want) if output.contains(&want) => {
                    Check::pass("output_contains", format!("the output contains {want:?}"))
                }
                Ok(want) => Check::fail(
                    "output_contains",
                    format!("the output does not contain {want:?}"),
                ),
                Err(e) => Check::fail("output_contains", e),
            },
            OutputRule::Lacks(t) => match ctx.scope.render(&t.value) {
                Ok(bad) => match output.lines().position(|l| l.contains(&bad)) {
                    None => Check::pass("output_lacks", format!("the output lacks {bad:?}")),
                    Some(i) => Check::fail(
                        "output_lacks",
                        format!("the output contains {bad:?} (line {})", i + 1),
                    ),
                },
                Err(e) => Check::fail("output_lacks", e),
            },
            OutputRule::Matches(r) => {
                if r.value.is_match(&output) {
                    Check::pass(
                        "output_matches",
                        format!("the output matches /{}/", r.value.as_str()),
                    )
                } else {
                    Check::fail(
                        "output_matches",
                        format!("the output does not match /{}/", r.value.as_str()),
                    )
                }
            }
        };
        f.checks.push(check);
    }
    if f.checks.iter().any(|c| !c.ok) {
        f.help = Some(format!(
            "the command's output is in the step log {}",
            ctx.log.display()
        ));
    }
    f
}
