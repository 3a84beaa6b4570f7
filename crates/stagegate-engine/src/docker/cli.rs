//! Running the `docker` (and `docker compose` / `docker-compose`) command line.
//!
//! Every value goes to the program as its own argument, never through a shell, so a value
//! cannot become code. Secrets reach Docker only through an env file (0600, removed once
//! the container is created) or the child's environment, never its argv. Output that goes
//! to a step's log is scrubbed of secrets first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use stagegate_plan::Scrubber;
use tokio_util::sync::CancellationToken;

/// How one call runs.
#[derive(Default)]
pub(crate) struct Call<'a> {
    pub cwd: Option<&'a Path>,
    /// Added to the child's environment (compose interpolation; may hold secrets).
    pub env: Vec<(String, String)>,
    /// The step's log: the command line and its output are appended, scrubbed.
    pub log: Option<&'a Path>,
    pub scrubber: Option<&'a Scrubber>,
    pub cancel: Option<&'a CancellationToken>,
    pub timeout: Option<Duration>,
}

/// `docker ARGS...`: stdout on success; on failure a message that says what to do.
pub(crate) async fn docker(args: &[String], call: &Call<'_>) -> Result<String, String> {
    run("docker", args, call).await
}

/// The compose program: `docker compose` when the CLI plugin is there, else `docker-compose`.
pub(crate) fn compose_program() -> Result<(&'static str, &'static [&'static str]), String> {
    static FOUND: OnceLock<Option<bool>> = OnceLock::new();
    let v2 = *FOUND.get_or_init(|| {
        let ok = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ok("docker", &["compose", "version"]) {
            Some(true)
        } else if ok("docker-compose", &["version"]) {
            Some(false)
        } else {
            None
        }
    });
    match v2 {
        Some(true) => Ok(("docker", &["compose"])),
        Some(false) => Ok(("docker-compose", &[])),
        None => Err("neither `docker compose` nor `docker-compose` runs here: install the Compose plugin (docker-compose-plugin) or docker-compose".into()),
    }
}

/// `docker compose ARGS...` (or `docker-compose ARGS...`).
pub(crate) async fn compose(args: &[String], call: &Call<'_>) -> Result<String, String> {
    let (prog, pre) = compose_program()?;
    let all: Vec<String> = pre
        .iter()
        .map(|s| s.to_string())
        .chain(args.iter().cloned())
        .collect();
    run(prog, &all, call).await
}

async fn run(program: &str, args: &[String], call: &Call<'_>) -> Result<String, String> {
    let scrub = |s: &str| match call.scrubber {
        Some(sc) => sc.scrub(s),
        None => s.to_string(),
    };
    let line = format!("$ {program} {}", args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(d) = call.cwd {
        cmd.current_dir(d);
    }
    for (k, v) in &call.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("the `{program}` command is not installed here: install Docker Engine's command line (and Compose for `driver: compose`), or put `{program}` on PATH")
        } else {
            format!("cannot run `{program}`: {e}")
        }
    })?;
    let wait = child.wait_with_output();
    let never = CancellationToken::new();
    let cancel = call.cancel.unwrap_or(&never);
    let limit = call.timeout.unwrap_or(Duration::from_secs(24 * 3600));
    let out = tokio::select! {
        r = tokio::time::timeout(limit, wait) => match r {
            Ok(r) => r.map_err(|e| format!("`{program}` failed: {e}"))?,
            Err(_) => return Err(format!("`{}` did not finish in {}", scrub(&line[2..]), stagegate_plan::yaml::fmt_duration(limit))),
        },
        _ = cancel.cancelled() => return Err(format!("`{}` was cancelled", scrub(&line[2..]))),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(log) = call.log {
        append_log(log, &scrub(&format!("{line}\n{stdout}{stderr}")));
    }
    if out.status.success() {
        return Ok(stdout);
    }
    Err(scrub(&explain(program, args, &stderr)))
}

fn append_log(log: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = f.write_all(b"\n");
        }
    }
}

/// A failed call's message: what Docker said, and what to do for the usual causes.
fn explain(program: &str, args: &[String], stderr: &str) -> String {
    let what = args
        .iter()
        .find(|a| !a.starts_with('-') && *a != "compose")
        .cloned()
        .unwrap_or_default();
    let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = said[said.len().saturating_sub(6)..].join("\n  ");
    let low = stderr.to_lowercase();
    let hint = if low.contains("cannot connect to the docker daemon")
        || low.contains("is the docker daemon running")
    {
        Some(
            "the Docker engine is not running, or DOCKER_HOST points to one that is not: start it (`systemctl start docker`) and try again",
        )
    } else if low.contains("permission denied") && low.contains("docker.sock") {
        Some(
            "this user may not use the Docker engine: add it to the `docker` group, or run stagegate as a user who may",
        )
    } else if low.contains("port is already allocated") || low.contains("address already in use") {
        Some(
            "the host port is taken by another process or container: free it, or change `host_port`",
        )
    } else if low.contains("pull access denied") || low.contains("manifest unknown") {
        Some(
            "the image is not on this engine and cannot be pulled: build it (`build:`), load it, or fix the image name",
        )
    } else {
        None
    };
    let mut msg = format!("`{program} {what}` failed: {tail}");
    if let Some(h) = hint {
        msg.push_str(&format!("\n  {h}"));
    }
    msg
}

/// What `docker image inspect` says of an image.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageInfo {
    pub id: String,
    #[serde(default)]
    pub repo_digests: Option<Vec<String>>,
    #[serde(default)]
    pub config: Option<ImageConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub healthcheck: Option<serde_json::Value>,
}

impl ImageInfo {
    pub fn has_healthcheck(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.healthcheck.as_ref())
            .and_then(|h| h.get("Test"))
            .and_then(|t| t.as_array())
            .is_some_and(|t| t.first().and_then(|s| s.as_str()) != Some("NONE") && !t.is_empty())
    }
}

pub(crate) async fn image(image: &str) -> Result<Option<ImageInfo>, String> {
    match docker(
        &["image".into(), "inspect".into(), image.into()],
        &Call::default(),
    )
    .await
    {
        Ok(out) => {
            let v: Vec<ImageInfo> = serde_json::from_str(&out)
                .map_err(|e| format!("cannot read `docker image inspect {image}`: {e}"))?;
            Ok(v.into_iter().next())
        }
        Err(e) if e.contains("No such image") || e.contains("no such image") => Ok(None),
        Err(e) => Err(e),
    }
}

/// What `docker container inspect` says of a container.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The image id the container runs.
    pub image: String,
    pub state: ContainerState,
    pub config: ContainerConfig,
    #[serde(default)]
    pub network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerState {
    pub status: String,
    pub running: bool,
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Health {
    pub status: String,
    #[serde(default)]
    pub log: Option<Vec<HealthLog>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthLog {
    #[serde(default)]
    pub output: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    /// The image as named when the container was made.
    pub image: String,
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkSettings {
    #[serde(default)]
    pub ports: Option<std::collections::BTreeMap<String, Option<Vec<PortBinding>>>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PortBinding {
    #[serde(rename = "HostIp", default)]
    pub host_ip: String,
    #[serde(rename = "HostPort", default)]
    pub host_port: String,
}

impl ContainerInfo {
    pub fn name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.config.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// The host port `port/tcp` is published at.
    pub fn host_port(&self, port: u16) -> Option<u16> {
        let ports = self.network_settings.as_ref()?.ports.as_ref()?;
        let b = ports.get(&format!("{port}/tcp"))?.as_ref()?;
        b.iter()
            .find(|b| !b.host_ip.contains(':'))
            .or(b.first())
            .and_then(|b| b.host_port.parse().ok())
    }

    /// `running (healthy)`, `exited (1)`.
    pub fn describe(&self) -> String {
        let s = &self.state;
        match (&s.health, s.running) {
            (Some(h), true) => format!("running ({})", h.status),
            (None, true) => "running".into(),
            _ if s.status == "exited" => format!("exited ({})", s.exit_code),
            _ => s.status.clone(),
        }
    }

    /// The last health check's output, when the image's HEALTHCHECK failed.
    pub fn health_output(&self) -> Option<String> {
        let out = self
            .state
            .health
            .as_ref()?
            .log
            .as_ref()?
            .last()?
            .output
            .trim();
        (!out.is_empty()).then(|| out.lines().take(3).collect::<Vec<_>>().join(" / "))
    }
}

/// Inspects containers by name or id; missing ones are left out.
pub(crate) async fn containers(names: &[String]) -> Result<Vec<ContainerInfo>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<String> = vec!["container".into(), "inspect".into()];
    args.extend(names.iter().cloned());
    let out = match docker(&args, &Call::default()).await {
        Ok(out) => out,
        // One missing among several: docker prints what it found and fails.
        Err(e) if e.contains("No such") || e.contains("no such") => {
            if names.len() == 1 {
                return Ok(Vec::new());
            }
            let mut found = Vec::new();
            for n in names {
                found.extend(Box::pin(containers(std::slice::from_ref(n))).await?);
            }
            return Ok(found);
        }
        Err(e) => return Err(e),
    };
    serde_json::from_str(&out).map_err(|e| format!("cannot read `docker container inspect`: {e}"))
}

pub(crate) async fn container(name: &str) -> Result<Option<ContainerInfo>, String> {
    Ok(containers(&[name.to_string()]).await?.into_iter().next())
}

/// The last lines a container wrote, scrubbed, for an error message.
pub(crate) async fn logs_tail(name: &str, scrubber: &Scrubber) -> String {
    let args: Vec<String> = ["logs", "--tail", "8", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(&args).stdin(Stdio::null()).kill_on_drop(true);
    let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await else {
        return String::new();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    scrubber.scrub(&format!(
        "\n  its last output:\n    {}",
        lines.join("\n    ")
    ))
}

/// Writes a `--env-file` (0600): one `KEY=VALUE` per line. Docker reads such files
/// literally, so a value with a newline cannot be passed and is refused.
pub(crate) fn write_env_file(
    path: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<PathBuf, String> {
    let mut text = String::new();
    for (k, v) in env {
        if v.contains('\n') || v.contains('\r') {
            return Err(format!(
                "the value of env `{k}` has a line break, which Docker's env files cannot carry: pass it as a file (a volume) instead"
            ));
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    crate::records::write_private(path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}
