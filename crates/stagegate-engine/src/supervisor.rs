//! The supervisor: a small detached process that keeps one release's service running after
//! `stagegate deploy` has exited, restarts it when it dies, and stops it cleanly on SIGTERM.
//!
//! It is the `stagegate` binary itself, started as `stagegate __supervise DIR`. Everything it
//! needs comes from its environment (so no secret is written to disk):
//! `STAGEGATE_SUPERVISE_COMMAND` (the start command), `STAGEGATE_SUPERVISE_STOP_MS`,
//! `STAGEGATE_SUPERVISE_MASK` (secret values to mask in the service's logs, one per line).
//! It writes `supervisor.pid`, `service.pid`, `exits.log`, `stdout.log` and `stderr.log` in DIR.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stagegate_plan::{Scrubber, Secret};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

pub const ENV_COMMAND: &str = "STAGEGATE_SUPERVISE_COMMAND";
pub const ENV_STOP_MS: &str = "STAGEGATE_SUPERVISE_STOP_MS";
pub const ENV_MASK: &str = "STAGEGATE_SUPERVISE_MASK";

pub const SUPERVISOR_PID: &str = "supervisor.pid";
pub const SERVICE_PID: &str = "service.pid";
pub const EXITS_LOG: &str = "exits.log";
/// `PID START_TIME` of the stagegate process that told the supervisor to stop, written
/// before the signal (or by the supervisor when a signal comes from elsewhere).
pub const STOPPING: &str = "stopping";
/// `PID START_TIME` of the stagegate process starting the release, while it waits for its
/// health.
pub const STARTER: &str = "starter.pid";

/// Runs the supervisor in `dir` until SIGTERM or SIGINT. Returns the process exit code.
pub async fn supervise(dir: &Path) -> i32 {
    let Ok(command) = std::env::var(ENV_COMMAND) else {
        return 2;
    };
    let stop_after = std::env::var(ENV_STOP_MS)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10));
    let mask: Vec<Secret> = std::env::var(ENV_MASK)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(Secret::new)
        .collect();
    let scrubber = Scrubber::new(&mask);
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return 1;
    };
    let _ = std::fs::write(dir.join(SUPERVISOR_PID), std::process::id().to_string());
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let mut child = match spawn(dir, &command, &scrubber) {
            Ok(c) => c,
            Err(e) => {
                append(
                    dir.join(EXITS_LOG),
                    &format!("{} spawn-failed {e}\n", crate::now_ms()),
                )
                .await;
                return 1;
            }
        };
        let pid = child.id().unwrap_or(0);
        let _ = std::fs::write(dir.join(SERVICE_PID), pid.to_string());
        // SIGHUP (a closed terminal) is not a reason to stop or restart anything.
        let stop = loop {
            tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).map(|c| c.to_string()).unwrap_or_else(|| "signal".into());
                    append(dir.join(EXITS_LOG), &format!("{} exited {code}\n", crate::now_ms())).await;
                    break false;
                }
                _ = term.recv() => break true,
                _ = int.recv() => break true,
                _ = hup.recv() => continue,
            }
        };
        if stop {
            if !dir.join(STOPPING).exists() {
                let _ = std::fs::write(dir.join(STOPPING), "0 0");
            }
            crate::process::terminate_group(pid, &mut child, stop_after).await;
            let _ = child.wait().await;
            let _ = std::fs::remove_file(dir.join(SERVICE_PID));
            let _ = std::fs::remove_file(dir.join(SUPERVISOR_PID));
            return 0;
        }
        // A service that ran a good while gets a fresh backoff; one that crashes at once waits longer.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = term.recv() => { let _ = std::fs::remove_file(dir.join(SUPERVISOR_PID)); return 0; }
            _ = int.recv() => { let _ = std::fs::remove_file(dir.join(SUPERVISOR_PID)); return 0; }
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn spawn(dir: &Path, command: &str, scrubber: &Scrubber) -> std::io::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_remove(ENV_COMMAND)
        .env_remove(ENV_MASK)
        .env_remove(ENV_STOP_MS)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(copy_lines(out, dir.join("stdout.log"), scrubber.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(copy_lines(err, dir.join("stderr.log"), scrubber.clone()));
    }
    Ok(child)
}

async fn copy_lines(src: impl tokio::io::AsyncRead + Unpin, path: PathBuf, scrubber: Scrubber) {
    let Ok(mut file) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
    else {
        return;
    };
    let mut lines = BufReader::new(src).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = file.write_all(scrubber.scrub(&line).as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
}

async fn append(path: PathBuf, text: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        let _ = f.write_all(text.as_bytes()).await;
    }
}
