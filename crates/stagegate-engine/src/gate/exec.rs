//! Running a command for a gate and keeping its whole output: a gate asserts on what a
//! command printed, or reads secrets from it, so the tail a `run` step keeps is not enough.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::process::{Exit, Split, Stream, read_output, spawn_shell, wait_then_drain};

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
    let mut child = match spawn_shell(script, cwd, env) {
        Ok(c) => c,
        Err(e) => {
            return Captured {
                exit: Exit::SpawnFailed(e),
                stdout: String::new(),
                stderr: String::new(),
            };
        }
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut output = read_output(&mut child, Split::Chunks);
    let drain = async {
        while let Some((stream, chunk)) = output.recv().await {
            let kept = match stream {
                Stream::Stdout => &mut stdout,
                Stream::Stderr => &mut stderr,
            };
            let room = MAX_CAPTURE.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    };
    let exit = wait_then_drain(&mut child, drain, deadline, cancel).await;
    Captured {
        exit,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_left_in_the_background_does_not_hold_up_the_capture() {
        let dir = std::env::temp_dir().join(format!("stagegate-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            capture(
                "sleep 30 & echo $! > bg.pid; echo hi",
                &dir,
                &BTreeMap::new(),
                None,
                &CancellationToken::new(),
            ),
        )
        .await;
        if let Some(pid) = std::fs::read_to_string(dir.join("bg.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        let out = out.expect("the capture returns although `sleep 30` holds the pipes");
        assert_eq!(out.exit, Exit::Code(0));
        assert_eq!(out.stdout, "hi\n");
    }
}
