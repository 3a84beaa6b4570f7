//! Running a command for a gate and keeping its whole output: a gate asserts on what a
//! command printed, or reads secrets from it, so the tail a `run` step keeps is not enough.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::process::{Exit, terminate_group};

/// How much of each stream is kept; the rest is read and dropped.
const MAX_CAPTURE: usize = 4 * 1024 * 1024;

pub(crate) struct Captured {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    /// stdout, then stderr.
    pub fn output(&self) -> String {
        match (self.stdout.is_empty(), self.stderr.is_empty()) {
            (_, true) => self.stdout.clone(),
            (true, false) => self.stderr.clone(),
            (false, false) => format!("{}\n{}", self.stdout.trim_end_matches('\n'), self.stderr),
        }
    }
}

/// Runs `script` with `sh -c` in its own process group; a timeout or the cancel token kills
/// the whole group.
pub(crate) async fn capture(
    script: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> Captured {
    let failed = |e: String| Captured {
        exit: Exit::SpawnFailed(e),
        stdout: String::new(),
        stderr: String::new(),
    };
    if !cwd.is_dir() {
        return failed(format!(
            "working directory {} does not exist",
            cwd.display()
        ));
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let pid = child.id();
    let read_all = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let Some(mut s) = stream else {
                return kept;
            };
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = MAX_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        })
    };
    let out = read_all(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    );
    let err = read_all(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    );
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let exit = tokio::select! {
        status = child.wait() => crate::process::exit_of(status),
        () = deadline => Exit::TimedOut,
        () = cancel.cancelled() => Exit::Cancelled,
    };
    if matches!(exit, Exit::TimedOut | Exit::Cancelled) {
        if let Some(pid) = pid {
            terminate_group(pid, &mut child, Duration::from_secs(3)).await;
        }
        let _ = child.wait().await;
    }
    // A grandchild may hold the pipes open after the shell exits: do not wait for it long.
    let grace = Duration::from_secs(2);
    let stdout = tokio::time::timeout(grace, out)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let stderr = tokio::time::timeout(grace, err)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Captured {
        exit,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A sentence saying how a command ended.
pub(crate) fn describe_exit(exit: &Exit, timeout: Option<Duration>) -> String {
    match exit {
        Exit::Code(c) => format!("exited with code {c}"),
        Exit::Signal(s) => format!("was killed by signal {s}"),
        Exit::TimedOut => format!(
            "did not finish within {}; its process group was killed",
            timeout
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|| "its timeout".into())
        ),
        Exit::Cancelled => "was cancelled".into(),
        Exit::SpawnFailed(e) => format!("could not start: {e}"),
    }
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
