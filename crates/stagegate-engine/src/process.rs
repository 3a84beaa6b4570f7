//! Running shell commands: a process group per command, output scrubbed and kept, deadlines
//! and cancellation that kill the whole group.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use stagegate_plan::Scrubber;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How many lines of output a step keeps for its record.
pub const TAIL_LINES: usize = 40;

/// A command to run with `sh -c`.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub script: String,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// Where the scrubbed output goes (appended).
    pub log: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    Cancelled,
    /// The command could not start (no shell, bad working directory).
    SpawnFailed(String),
}

#[derive(Debug, Clone)]
pub struct CommandResult {
    pub exit: Exit,
    pub tail: String,
}

impl CommandResult {
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            _ => None,
        }
    }

    /// A sentence saying how the command ended, for errors.
    pub fn describe(&self, timeout: Option<Duration>) -> String {
        match &self.exit {
            Exit::Code(0) => "succeeded".into(),
            Exit::Code(c) => format!("exited with code {c}"),
            Exit::Signal(s) => format!("was killed by signal {s}"),
            Exit::TimedOut => format!(
                "did not finish within its timeout of {}; its process group was killed",
                timeout.map(|t| format!("{t:?}")).unwrap_or_default()
            ),
            Exit::Cancelled => "was cancelled; its process group was killed".into(),
            Exit::SpawnFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// Runs `spec` to completion, or until its timeout or the cancel token, whichever is first.
pub async fn run_command(
    spec: &CommandSpec,
    scrubber: &Scrubber,
    cancel: &CancellationToken,
) -> CommandResult {
    if !spec.cwd.is_dir() {
        return CommandResult {
            exit: Exit::SpawnFailed(format!(
                "working directory {} does not exist",
                spec.cwd.display()
            )),
            tail: String::new(),
        };
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&spec.script)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandResult {
                exit: Exit::SpawnFailed(e.to_string()),
                tail: String::new(),
            };
        }
    };
    let pid = child.id();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(256);
    for reader in take_output(&mut child) {
        let tx = line_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(line_tx);

    let mut log = match &spec.log {
        Some(p) => tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .await
            .ok(),
        None => None,
    };
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let collect = async {
        while let Some(line) = line_rx.recv().await {
            let clean = scrubber.scrub(&line);
            if let Some(f) = log.as_mut() {
                let _ = f.write_all(clean.as_bytes()).await;
                let _ = f.write_all(b"\n").await;
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(clean);
        }
    };
    let deadline = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        (status, ()) = async { tokio::join!(child.wait(), collect) } => exit_of(status),
        () = deadline => Exit::TimedOut,
        () = cancel.cancelled() => Exit::Cancelled,
    };
    if matches!(status, Exit::TimedOut | Exit::Cancelled) {
        if let Some(pid) = pid {
            terminate_group(pid, &mut child, Duration::from_secs(3)).await;
        }
        let _ = child.wait().await;
    }
    let lines: Vec<String> = tail.into_iter().collect();
    CommandResult {
        exit: status,
        tail: lines.join("\n"),
    }
}

/// A child's stdout and stderr, taken as boxed readers (in that order).
pub fn take_output(
    child: &mut tokio::process::Child,
) -> Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> {
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    out.into_iter().chain(err).collect()
}

/// How a child ended, from what waiting for it returned.
pub fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            _ => Exit::Code(-1),
        },
        Err(e) => Exit::SpawnFailed(e.to_string()),
    }
}

/// Stops the process group led by our own `child`: SIGTERM, then SIGKILL for whatever is
/// left after `grace`. The child is reaped here, so its zombie does not look alive.
pub async fn terminate_group(pgid: u32, child: &mut tokio::process::Child, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let pg = Pid::from_raw(pgid as i32);
    if killpg(pg, Signal::SIGTERM).is_err() {
        return;
    }
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(grace, child.wait()).await;
    // Other members of the group (grandchildren) may be left; wait for them too.
    while started.elapsed() < grace && group_alive(pgid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = killpg(pg, Signal::SIGKILL);
}

/// Sends SIGTERM to a process group, then SIGKILL if anything is left after `grace`.
/// For groups whose leader is not our child (a release's service after a restart of ours).
pub async fn kill_group(pgid: u32, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let pg = Pid::from_raw(pgid as i32);
    if killpg(pg, Signal::SIGTERM).is_err() {
        return;
    }
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while waited < grace {
        tokio::time::sleep(step).await;
        waited += step;
        if !group_alive(pgid) {
            return;
        }
    }
    let _ = killpg(pg, Signal::SIGKILL);
}

/// Whether any live (not zombie) process is in the process group. A container's init may
/// never reap orphans, so a signal-0 probe, which succeeds on zombies, would wait in vain.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Without /proc, fall back to the signal probe.
        return nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None).is_ok();
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command name: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

/// Whether a process with this pid exists (it may belong to another user).
pub fn pid_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    if pid == 0 {
        return false;
    }
    match kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => !is_zombie(pid),
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

fn is_output_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Reads `KEY=value` lines (and `KEY<<DELIM` blocks) that a step wrote to its output file.
pub fn read_outputs(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read step outputs: {e}")),
    };
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line.split_once("<<").filter(|(key, delim)| {
            is_output_name(key.trim()) && !delim.is_empty() && !key.contains('=')
        });
        if let Some((key, delim)) = heredoc {
            let mut value = Vec::new();
            let mut closed = false;
            for (_, l) in lines.by_ref() {
                if l == delim {
                    closed = true;
                    break;
                }
                value.push(l);
            }
            if !closed {
                return Err(format!(
                    "output `{key}` (line {}) has no closing `{delim}`",
                    i + 1
                ));
            }
            out.insert(key.trim().to_string(), value.join("\n"));
        } else if let Some((key, value)) = line.split_once('=') {
            out.insert(key.trim().to_string(), value.to_string());
        } else {
            return Err(format!(
                "line {} of the output file is not `NAME=value`: `{line}`",
                i + 1
            ));
        }
    }
    Ok(out)
}
