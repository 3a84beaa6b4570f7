//! `command` checks: run a shell command and look at its exit code, stdout and stderr.
//! Also the command source of `log` checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use stagegate_plan::Template;

use super::Observed;
use super::body::{BodyNeeds, BodySink};
use super::expect::Observation;
use crate::process::{Exit, Split, Stream, read_output, spawn_shell, wait_then_drain};
use crate::step::StepCtx;

/// How much of stderr is kept for assertions.
const STDERR_KEEP: u64 = 1024 * 1024;

pub struct Prepared {
    pub script: String,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    needs: BodyNeeds,
}

impl Prepared {
    pub fn new(ctx: &StepCtx<'_>, script: &Template, needs: BodyNeeds) -> Result<Self, String> {
        let shell = ctx
            .scope
            .render_shell(script)
            .map_err(|e| format!("command: {e}"))?;
        let mut env = ctx.command_env()?;
        env.extend(shell.env);
        Ok(Self {
            script: shell.script,
            cwd: ctx.command_cwd()?,
            env,
            needs,
        })
    }

    pub async fn run(
        &self,
        ctx: &StepCtx<'_>,
        deadline: Option<Instant>,
    ) -> Result<Observation, Observed> {
        let started = Instant::now();
        let mut child = spawn_shell(&self.script, &self.cwd, &self.env)
            .map_err(|e| Observed::Failed(format!("the command could not start: {e}")))?;
        let mut stdout = BodySink::new(self.needs);
        let mut stderr = BodySink::new(BodyNeeds {
            sha256: false,
            keep: STDERR_KEEP,
        });
        let mut failure = None;
        let mut output = read_output(&mut child, Split::Chunks);
        let drain = async {
            while let Some((stream, chunk)) = output.recv().await {
                let sink = match stream {
                    Stream::Stdout => &mut stdout,
                    Stream::Stderr => &mut stderr,
                };
                if failure.is_none()
                    && let Err(e) = sink.push(&chunk).await
                {
                    failure = Some(e);
                }
            }
        };
        let exit = wait_then_drain(&mut child, drain, deadline, ctx.cancel).await;
        let duration = started.elapsed();
        let (exit_code, exit_note) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(format!("the command was killed by signal {s}"))),
            Exit::TimedOut => {
                return Err(Observed::TimedOut(
                    "the command was still running when the step's timeout came; its process group was killed".into(),
                ));
            }
            Exit::Cancelled => return Err(Observed::Failed("cancelled".into())),
            Exit::SpawnFailed(e) => return Err(Observed::Failed(e)),
        };
        if let Some(e) = failure {
            return Err(Observed::Failed(e));
        }
        Ok(Observation {
            series: Vec::new(),
            exit_code,
            exit_note,
            body: Some(stdout.finish().await.map_err(Observed::Failed)?),
            stderr: Some(stderr.finish().await.map_err(Observed::Failed)?),
            duration,
            ..Default::default()
        })
    }
}
