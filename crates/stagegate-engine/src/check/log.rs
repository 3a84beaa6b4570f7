//! `log` checks: the lines of a file or of a command's output, over a window: the last
//! `tail` lines, and what is appended while `follow` lasts.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use stagegate_plan::check::{LogFrom, LogSource};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};

use super::Observed;
use super::expect::Observation;
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
                cwd: super::command::command_cwd(ctx)?,
                env: super::command::command_env(ctx)?,
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
                            window.push(line_of(&partial));
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
                    window.push(line_of(&partial));
                }
            }
            Source::Command { script, cwd, env } => {
                let mut child =
                    super::command::spawn(script, cwd, env).map_err(Observed::Failed)?;
                let pid = child.id();
                window.following = false;
                let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
                for r in crate::process::take_output(&mut child) {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut r = BufReader::new(r.take(u64::MAX));
                        let mut buf = Vec::new();
                        while let Ok(n) = r.read_until(b'\n', &mut buf).await {
                            if n == 0 || tx.send(line_of(&buf)).await.is_err() {
                                break;
                            }
                            buf.clear();
                        }
                    });
                }
                drop(tx);
                let stop_at = follow_until.or(deadline);
                let stop = async {
                    match stop_at {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(stop);
                let mut timed_out = false;
                loop {
                    tokio::select! {
                        line = rx.recv() => match line {
                            Some(l) => window.push(l),
                            None => break,
                        },
                        () = &mut stop => {
                            timed_out = follow_until.is_none();
                            break;
                        }
                        () = ctx.cancel.cancelled() => break,
                    }
                }
                if let Some(pid) = pid {
                    crate::process::terminate_group(pid, &mut child, Duration::from_secs(2)).await;
                }
                let _ = child.wait().await;
                if timed_out {
                    return Err(Observed::TimedOut(
                        "the log command was still running when the step's timeout came (add `follow: 30s` to watch a command that does not end)".into(),
                    ));
                }
            }
        }
        Ok(Observation {
            lines: window.lines(),
            duration: started.elapsed(),
            ..Default::default()
        })
    }
}

fn line_of(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.trim_end_matches(['\n', '\r']).to_string()
}
