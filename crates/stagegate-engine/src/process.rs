//! Running shell commands: a process group per command, output scrubbed and kept, deadlines
//! and cancellation that kill the whole group.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use stagegate_plan::Scrubber;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
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
        self.exit.describe(timeout)
    }
}

impl Exit {
    /// How a command ended, as the end of a sentence: `the command exited with code 2`.
    /// `timeout` is the one that applied, for [`Exit::TimedOut`].
    pub fn describe(&self, timeout: Option<Duration>) -> String {
        match self {
            Exit::Code(0) => "succeeded".into(),
            Exit::Code(c) => format!("exited with code {c}"),
            Exit::Signal(s) => format!("was killed by signal {s}"),
            Exit::TimedOut => format!(
                "did not finish within its timeout{}; its process group was killed",
                timeout.map(|t| format!(" of {t:?}")).unwrap_or_default()
            ),
            Exit::Cancelled => "was cancelled; its process group was killed".into(),
            Exit::SpawnFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// The last `n` lines of `text`, trailing blank lines left out.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `spec` to completion, or until its timeout or the cancel token, whichever is first.
pub async fn run_command(
    spec: &CommandSpec,
    scrubber: &Scrubber,
    cancel: &CancellationToken,
) -> CommandResult {
    match spawn_shell(&spec.script, &spec.cwd, &spec.env) {
        Ok(child) => supervise(child, spec.timeout, spec.log.as_deref(), scrubber, cancel).await,
        Err(e) => CommandResult {
            exit: Exit::SpawnFailed(e),
            tail: String::new(),
        },
    }
}

/// A program run without a shell: its arguments reach it as they are, never parsed.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    pub program: String,
    pub args: Vec<std::ffi::OsString>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// Where the scrubbed output goes (appended).
    pub log: Option<PathBuf>,
}

/// Runs `spec` like [`run_command`] runs a shell command: its own process group, output
/// scrubbed into the log and the tail, killed at the timeout or on cancel.
pub async fn run_program(
    spec: &ProgramSpec,
    scrubber: &Scrubber,
    cancel: &CancellationToken,
) -> CommandResult {
    match spawn_program(spec, Stdio::null()) {
        Ok(child) => supervise(child, spec.timeout, spec.log.as_deref(), scrubber, cancel).await,
        Err(e) => CommandResult {
            exit: Exit::SpawnFailed(e),
            tail: String::new(),
        },
    }
}

/// Starts `spec` in a process group of its own with `stdin`, stdout and stderr piped,
/// killed if its handle is dropped.
pub fn spawn_program(spec: &ProgramSpec, stdin: Stdio) -> Result<Child, String> {
    if !spec.cwd.is_dir() {
        return Err(format!(
            "working directory {} does not exist",
            spec.cwd.display()
        ));
    }
    Command::new(&spec.program)
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", spec.program))
}

/// Waits for a started child (see [`spawn_shell`], [`spawn_program`]) until it exits, its
/// timeout passes or `cancel` fires, keeping its output, scrubbed, in `log` and the tail.
pub async fn supervise(
    mut child: Child,
    timeout: Option<Duration>,
    log: Option<&Path>,
    scrubber: &Scrubber,
    cancel: &CancellationToken,
) -> CommandResult {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut output = read_output(&mut child, Split::Lines);
    let mut log = match log {
        Some(p) => tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(p)
            .await
            .ok(),
        None => None,
    };
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let collect = async {
        while let Some((_, line)) = output.recv().await {
            let clean = scrubber.scrub(&line_text(&line));
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
    let exit = wait_then_drain(&mut child, collect, deadline, cancel).await;
    let lines: Vec<String> = tail.into_iter().collect();
    CommandResult {
        exit,
        tail: lines.join("\n"),
    }
}

/// `sh -c script` in a process group of its own (a timeout stops everything it started),
/// in `cwd`, with `env` added to stagegate's environment; stdin closed, stdout and stderr
/// piped. The shell is killed if its handle is dropped.
pub fn spawn_shell(
    script: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Child, String> {
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
        .map_err(|e| format!("sh: {e}"))
}

/// Which stream of a command a piece of its output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How [`read_output`] hands output over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One line at a time, its line break included (see [`line_text`]).
    Lines,
    /// As it is read.
    Chunks,
}

/// A child's stdout and stderr, taken as boxed readers (in that order).
pub fn take_output(
    child: &mut Child,
) -> Vec<(Stream, Box<dyn tokio::io::AsyncRead + Unpin + Send>)> {
    let out = child.stdout.take().map(|s| {
        (
            Stream::Stdout,
            Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        )
    });
    let err = child.stderr.take().map(|s| {
        (
            Stream::Stderr,
            Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        )
    });
    out.into_iter().chain(err).collect()
}

/// Reads the child's stdout and stderr, each in a task of its own, and hands over what they
/// read as it comes. When the receiver is dropped the tasks go on reading to the end and
/// drop what they read, so a process the command left in the background that still writes
/// there does not get a broken pipe.
pub fn read_output(child: &mut Child, split: Split) -> mpsc::Receiver<(Stream, Vec<u8>)> {
    let (tx, rx) = mpsc::channel(256);
    for (stream, reader) in take_output(child) {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            let mut listened = true;
            loop {
                let mut buf = Vec::new();
                let n = match split {
                    Split::Lines => reader.read_until(b'\n', &mut buf).await.unwrap_or(0),
                    Split::Chunks => match reader.fill_buf().await {
                        Ok(chunk) => {
                            buf.extend_from_slice(chunk);
                            chunk.len()
                        }
                        Err(_) => 0,
                    },
                };
                if n == 0 {
                    break;
                }
                if split == Split::Chunks {
                    reader.consume(n);
                }
                if listened && tx.send((stream, buf)).await.is_err() {
                    listened = false;
                }
            }
        });
    }
    rx
}

/// A line as [`Split::Lines`] hands it over, as text: line break removed, invalid UTF-8
/// replaced.
pub fn line_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\n', '\r'])
        .to_string()
}

/// How long a command's output may go on coming after its shell has exited. A process the
/// command started in the background (`srv &`) inherits the pipes and may hold them open
/// for ever.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long a process group has between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Waits for the shell `child` to exit while `drain` consumes its output (see
/// [`read_output`]), then gives `drain` up to [`DRAIN_GRACE`] more to reach the end of it.
/// When `deadline` passes or `cancel` fires first, the whole process group is stopped
/// (SIGTERM, then SIGKILL) and the exit says which.
pub async fn wait_then_drain(
    child: &mut Child,
    drain: impl Future<Output = ()>,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Exit {
    let pid = child.id();
    let mut drain = std::pin::pin!(drain);
    let mut drained = false;
    let mut until = std::pin::pin!(async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    });
    let exit = loop {
        tokio::select! {
            status = child.wait() => break exit_of(status),
            () = &mut drain, if !drained => drained = true,
            () = &mut until => break Exit::TimedOut,
            () = cancel.cancelled() => break Exit::Cancelled,
        }
    };
    if matches!(exit, Exit::TimedOut | Exit::Cancelled) {
        if let Some(pid) = pid {
            terminate_group(pid, child, KILL_GRACE).await;
        }
        let _ = child.wait().await;
    }
    if !drained {
        let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
    }
    exit
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
pub async fn terminate_group(pgid: u32, child: &mut Child, grace: Duration) {
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

/// Opens `path` for appending, creating it private (0600): logs may hold what a command
/// printed.
pub fn append_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Writes `path` whole, creating it private (0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
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

/// When a process started, in clock ticks since boot (`/proc/PID/stat` field 22): with the
/// boot id, what tells a pid's process apart from a later one that reuses the pid.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): a pid recorded under another boot
/// names no process of this one.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether the process that was `pid` (started at `started`, under boot `boot`) still runs.
/// A pid now held by another process (another start time or boot) is not it. Without a
/// recorded start time (records of older versions), a live pid counts as the same process.
pub fn same_process_alive(pid: u32, started: Option<u64>, boot: Option<&str>) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    if let (Some(then), Some(now)) = (boot, boot_id().as_deref())
        && then != now
    {
        return false;
    }
    match (started, process_start_ticks(pid)) {
        (Some(then), Some(now)) => then == now,
        _ => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of this test's own.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stagegate-process-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Stops the background process whose pid the script wrote to `bg.pid`.
    fn stop_background(dir: &Path) {
        if let Some(pid) = std::fs::read_to_string(dir.join("bg.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_process_left_in_the_background_does_not_hold_up_the_command() {
        let dir = scratch("run");
        let spec = CommandSpec {
            // `sleep` inherits the pipes and holds them open after the shell exits.
            script: "sleep 30 & echo $! > bg.pid; echo hi".into(),
            cwd: dir.clone(),
            env: BTreeMap::new(),
            timeout: None,
            log: None,
        };
        let res = tokio::time::timeout(
            Duration::from_secs(20),
            run_command(&spec, &Scrubber::default(), &CancellationToken::new()),
        )
        .await;
        stop_background(&dir);
        let res = res.expect("the command returns although `sleep 30` holds its pipes");
        assert_eq!(res.exit, Exit::Code(0));
        assert_eq!(res.tail, "hi");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_group_and_keeps_what_was_printed() {
        let spec = CommandSpec {
            script: "echo started; sleep 30".into(),
            cwd: std::env::temp_dir(),
            env: BTreeMap::new(),
            timeout: Some(Duration::from_millis(300)),
            log: None,
        };
        let res = tokio::time::timeout(
            Duration::from_secs(20),
            run_command(&spec, &Scrubber::default(), &CancellationToken::new()),
        )
        .await
        .expect("the timeout ends the command");
        assert_eq!(res.exit, Exit::TimedOut);
        assert_eq!(res.tail, "started");
    }

    #[test]
    fn a_missing_working_directory_is_said() {
        let e = spawn_shell(
            "true",
            Path::new("/nonexistent/stagegate"),
            &BTreeMap::new(),
        )
        .err()
        .unwrap_or_default();
        assert!(
            e.contains("working directory /nonexistent/stagegate does not exist"),
            "{e}"
        );
    }
}
