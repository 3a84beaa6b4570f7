//! `command` checks: run a shell command and look at its exit code, stdout and stderr.
//! Also the command source of `log` checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use stagegate_plan::Template;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::Observed;
use super::body::{BodyNeeds, BodySink};
use super::expect::Observation;
use crate::step::StepCtx;

/// How much of stderr is kept for assertions.
const STDERR_KEEP: u64 = 1024 * 1024;

/// The environment a check's command sees: the run's identity and the step's `env`.
pub fn command_env(ctx: &StepCtx<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "STAGEGATE_ENVIRONMENT".to_string(),
        ctx.scope.environment.clone(),
    );
    env.insert(
        "STAGEGATE_RELEASE_VERSION".to_string(),
        ctx.scope.release.version.clone(),
    );
    env.insert(
        "STAGEGATE_RELEASE_SHA".to_string(),
        ctx.scope.release.sha.clone(),
    );
    env.insert(
        "STAGEGATE_DEPLOYMENT".to_string(),
        ctx.deployment_id.to_string(),
    );
    for (k, t) in &ctx.step.env {
        env.insert(
            k.clone(),
            ctx.scope
                .render(&t.value)
                .map_err(|e| format!("env `{k}`: {e}"))?,
        );
    }
    Ok(env)
}

/// The working directory: the plan's, or the step's `cwd` under it.
pub fn command_cwd(ctx: &StepCtx<'_>) -> Result<PathBuf, String> {
    match &ctx.step.cwd {
        None => Ok(ctx.plan.dir.clone()),
        Some(t) => Ok(ctx.plan.dir.join(
            ctx.scope
                .render(&t.value)
                .map_err(|e| format!("cwd: {e}"))?,
        )),
    }
}

pub struct Prepared {
    pub script: String,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    needs: BodyNeeds,
}

impl Prepared {
    pub fn new(ctx: &StepCtx<'_>, script: &Template, needs: BodyNeeds) -> Result<Self, String> {
        Ok(Self {
            script: ctx
                .scope
                .render(script)
                .map_err(|e| format!("command: {e}"))?,
            cwd: command_cwd(ctx)?,
            env: command_env(ctx)?,
            needs,
        })
    }

    pub async fn run(
        &self,
        ctx: &StepCtx<'_>,
        deadline: Option<Instant>,
    ) -> Result<Observation, Observed> {
        let started = Instant::now();
        let mut child = spawn(&self.script, &self.cwd, &self.env).map_err(Observed::Failed)?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let needs = self.needs;
        let read_out = async move { drain(stdout, needs).await };
        let read_err = async move {
            drain(
                stderr,
                BodyNeeds {
                    sha256: false,
                    keep: STDERR_KEEP,
                },
            )
            .await
        };
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            (status, out, err) = async { tokio::join!(child.wait(), read_out, read_err) } => {
                Ok((status, out, err))
            }
            () = until => Err(true),
            () = ctx.cancel.cancelled() => Err(false),
        };
        match ended {
            Ok((status, out, err)) => {
                let status = status.map_err(|e| Observed::Failed(e.to_string()))?;
                use std::os::unix::process::ExitStatusExt;
                Ok(Observation {
                    exit_code: status.code(),
                    exit_note: status
                        .signal()
                        .map(|s| format!("the command was killed by signal {s}")),
                    body: Some(out.map_err(Observed::Failed)?),
                    stderr: Some(err.map_err(Observed::Failed)?),
                    duration: started.elapsed(),
                    ..Default::default()
                })
            }
            Err(timed_out) => {
                if let Some(pid) = pid {
                    crate::process::terminate_group(pid, &mut child, Duration::from_secs(3)).await;
                }
                let _ = child.wait().await;
                if timed_out {
                    Err(Observed::TimedOut(
                        "the command was still running when the step's timeout came; its process group was killed".into(),
                    ))
                } else {
                    Err(Observed::Failed("cancelled".into()))
                }
            }
        }
    }
}

/// `sh -c script` in its own process group, output piped.
pub fn spawn(
    script: &str,
    cwd: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> Result<tokio::process::Child, String> {
    if !cwd.is_dir() {
        return Err(format!(
            "working directory {} does not exist",
            cwd.display()
        ));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `sh`: {e}"))
}

async fn drain<R: AsyncRead + Unpin>(
    reader: Option<R>,
    needs: BodyNeeds,
) -> Result<super::body::Body, String> {
    let mut sink = BodySink::new(needs);
    if let Some(mut r) = reader {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading the command's output failed: {e}"))?;
            if n == 0 {
                break;
            }
            sink.push(&buf[..n]).await?;
        }
    }
    sink.finish().await
}
