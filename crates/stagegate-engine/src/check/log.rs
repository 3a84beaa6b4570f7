//! `log` checks: the lines of a file or of a command's output, over a window: the last
//! `tail` lines, and what is appended while `follow` lasts.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use stagegate_plan::check::{LogFrom, LogSource};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};

use super::Observed;
use super::expect::Observation;
use crate::process::{
    Exit, Split, line_text, read_output, spawn_shell, terminate_group, wait_then_drain,
};
use crate::step::StepCtx;

/// The window when `tail` is not given: the last lines kept from a file or a command.
pub const DEFAULT_TAIL: usize = 10_000;
/// At most this many lines are kept from what `follow` sees.
const FOLLOW_MAX: usize = 100_000;

enum Source {
    File {
        rel: String,
        path: PathBuf,
    },
    Command {
        script: String,
        cwd: PathBuf,
        env: BTreeMap<String, String>,
    },
}

pub struct Prepared {
    source: Source,
    tail: usize,
    follow: Option<Duration>,
}

/// The lines seen: the last `tail` of what was there, then everything that followed.
struct Window {
    before: VecDeque<String>,
    tail: usize,
    after: Vec<String>,
    following: bool,
}

impl Window {
    fn push(&mut self, line: String) {
        if self.following {
            if self.after.len() < FOLLOW_MAX {
                self.after.push(line);
            }
            return;
        }
        if self.before.len() == self.tail {
            self.before.pop_front();
        }
        self.before.push_back(line);
    }

    fn lines(self) -> Vec<String> {
        let mut out: Vec<String> = self.before.into();
        out.extend(self.after);
        out
    }
}

impl Prepared {
    pub fn new(ctx: &StepCtx<'_>, l: &LogSource) -> Result<Self, String> {
        let source = match &l.from {
            LogFrom::File(t) => {
                let rel = ctx
                    .scope
                    .render(&t.value)
                    .map_err(|e| format!("log file: {e}"))?;
                Source::File {
                    path: ctx.plan.dir.join(&rel),
                    rel,
                }
            }
            LogFrom::Command(t) => Source::Command {
                script: ctx
                    .scope
                    .render(&t.value)
                    .map_err(|e| format!("log command: {e}"))?,
                cwd: ctx.command_cwd()?,
                env: ctx.command_env()?,
            },
        };
        Ok(Self {
            source,
            tail: l.tail.unwrap_or(DEFAULT_TAIL),
            follow: l.follow,
        })
    }

    pub fn target(&self) -> String {
        match &self.source {
            Source::File { rel, .. } => format!("log {rel}"),
            Source::Command { script, .. } => {
                format!("log of $ {}", script.lines().next().unwrap_or(""))
            }
        }
    }

    pub async fn read(
        &self,
        ctx: &StepCtx<'_>,
        deadline: Option<Instant>,
    ) -> Result<Observation, Observed> {
        let started = Instant::now();
        let mut window = Window {
            before: VecDeque::new(),
            tail: self.tail,
            after: Vec::new(),
            following: false,
        };
        // Following stops at its end, or at the step's deadline if that comes first.
        let follow_until = self.follow.map(|f| {
            let end = started + f;
            deadline.map_or(end, |d| d.min(end))
        });
        match &self.source {
            Source::File { rel, path } => {
                let f = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| Observed::Failed(format!("cannot read the log {rel}: {e}")))?;
                let mut reader = BufReader::new(f);
                let mut buf = Vec::new();
                let mut partial = Vec::new();
                loop {
                    buf.clear();
                    let n = reader
                        .read_until(b'\n', &mut buf)
                        .await
                        .map_err(|e| Observed::Failed(format!("cannot read the log {rel}: {e}")))?;
                    if n > 0 {
                        partial.extend_from_slice(&buf);
                        if partial.ends_with(b"\n") {
                            window.push(line_text(&partial));
                            partial.clear();
                        }
                        continue;
                    }
                    // At the end of the file: follow it, or stop.
                    let Some(until) = follow_until else { break };
                    window.following = true;
                    if Instant::now() >= until || ctx.cancel.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    // A file truncated or replaced (log rotation) is read from its start.
                    let pos = reader.stream_position().await.unwrap_or(0);
                    let len = tokio::fs::metadata(path)
                        .await
                        .map(|m| m.len())
                        .unwrap_or(pos);
                    if len < pos {
                        let f = tokio::fs::File::open(path).await.map_err(|e| {
                            Observed::Failed(format!("cannot read the log {rel}: {e}"))
                        })?;
                        reader = BufReader::new(f);
                    }
                }
                if !partial.is_empty() {
                    window.push(line_text(&partial));
                }
            }
            Source::Command { script, cwd, env } => {
                let mut child = spawn_shell(script, cwd, env).map_err(|e| {
                    Observed::Failed(format!("the log command could not start: {e}"))
                })?;
                let pid = child.id();
                let mut output = read_output(&mut child, Split::Lines);
                let collect = async {
                    while let Some((_, line)) = output.recv().await {
                        window.push(line_text(&line));
                    }
                };
                // Following ends at its end (or the step's deadline); without it, the
                // command must end by the step's deadline.
                let exit =
                    wait_then_drain(&mut child, collect, follow_until.or(deadline), ctx.cancel)
                        .await;
                // A log command only reads: what it left running in the background goes too.
                if let (Some(pid), Exit::Code(_) | Exit::Signal(_)) = (pid, &exit) {
                    terminate_group(pid, &mut child, Duration::from_secs(2)).await;
                }
                if exit == Exit::TimedOut && follow_until.is_none() {
                    return Err(Observed::TimedOut(
                        "the log command was still running when the step's timeout came (add `follow: 30s` to watch a command that does not end)".into(),
                    ));
                }
            }
        }
        Ok(Observation {
            series: Vec::new(),
            lines: window.lines(),
            duration: started.elapsed(),
            ..Default::default()
        })
    }
}
