//! The `local` driver: each release of a service lives in its own directory
//! (`.stagegate/releases/ENV/SERVICE/RELEASE/`) with its artifacts, logs and a supervisor
//! process that keeps it running after stagegate exits.
//!
//! Ports: with `port: auto` (the default) every release gets a free loopback port, so the new
//! release starts beside the old one and the old one keeps running until the deployment has
//! passed; rollback is then a switch, not a cold start. With a fixed `port: N` the old release
//! stops before the new one starts on N, and is started again if the new one is unhealthy.
//! The `current` file in the service directory names the release that serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stagegate_plan::{
    HealthTarget, LocalService, PortMode, Scope, Scrubber, Service, ServiceOverride, Spanned,
};
use tokio_util::sync::CancellationToken;

use crate::event::{Event, Events};
use crate::health::{HealthProbe, JsonField, http_client, wait_healthy};
use crate::process::process_start_ticks as process_start_time;
use crate::process::{CommandSpec, kill_group, pid_alive, run_command};
use crate::records::META;
use crate::supervisor::{
    ENV_COMMAND, ENV_MASK, ENV_STOP_MS, EXITS_LOG, SERVICE_PID, STARTER, STOPPING, SUPERVISOR_PID,
};

/// What is recorded about a release, in its directory. Never holds a secret value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub id: String,
    pub service: String,
    pub environment: String,
    pub version: String,
    pub sha: String,
    pub deployment_id: i64,
    pub created_at: i64,
    pub port: u16,
    pub url: String,
    /// The start command, secrets masked.
    pub command: String,
    pub artifacts: Vec<ArtifactDigest>,
    /// `starting`, `healthy`, `failed`, `rolled_back`, `retired`, `stopped`.
    pub status: String,
    /// What the release runs, as rendered at its deployment, with every secret value sealed
    /// back into its `${{ secrets.NAME }}` reference: a restart (rollback to this release)
    /// runs exactly this, reading only the secrets anew.
    pub sealed: SealedRun,
    /// The hosts a remote release went to (ssh driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Where a `kubernetes` release was applied and what its rollout ended as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<crate::kube::KubeRecord>,
    /// The image and container of a `docker` release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<crate::docker::DockerRecord>,
    /// The project, images and containers of a `compose` release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<crate::docker::compose::ComposeRecord>,
}

/// A release's start command, environment and health check with secrets sealed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SealedRun {
    pub start: String,
    pub env: BTreeMap<String, String>,
    pub health: Option<SealedHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedHealth {
    /// A full URL, or a path to append to the release's own URL.
    pub target: String,
    pub is_path: bool,
    pub status: Vec<u16>,
    /// (JSONPath, expected value)
    pub json: Vec<(String, String)>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactDigest {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Why `got` is not the artifact set `want` (what a promotion carries), if it is not:
/// the first path whose digest differs, is missing or is new.
pub fn artifacts_differ(want: &[ArtifactDigest], got: &[ArtifactDigest]) -> Option<String> {
    let short = |s: &str| s.chars().take(12).collect::<String>();
    for w in want {
        match got.iter().find(|g| g.path == w.path) {
            None => {
                return Some(format!(
                    "the artifact `{}` that passed the source environment is missing",
                    w.path
                ));
            }
            Some(g) if g.sha256 != w.sha256 => {
                return Some(format!(
                    "the artifact `{}` differs from what passed the source environment (sha256 {} there, {} here)",
                    w.path,
                    short(&w.sha256),
                    short(&g.sha256)
                ));
            }
            Some(_) => {}
        }
    }
    got.iter()
        .find(|g| !want.iter().any(|w| w.path == g.path))
        .map(|g| {
            format!(
                "the artifact `{}` was not part of what passed the source environment",
                g.path
            )
        })
}

/// A release on disk and whether it runs.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseState {
    pub meta: ReleaseMeta,
    pub dir: PathBuf,
    pub current: bool,
    pub supervisor_pid: Option<u32>,
    pub service_pid: Option<u32>,
    /// How many times the service process has exited since the release started.
    pub exits: usize,
    /// A stagegate process started this release and died before its health was settled
    /// (killed mid-deploy or mid-rollback): nobody will mark it healthy or stop it.
    pub abandoned: bool,
    /// The supervisor was told to stop (it may still be stopping a slow service).
    pub stopping: bool,
    /// A remote driver's word on what of this release runs where (`None`: nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

impl ReleaseState {
    /// Whether its supervisor runs (it may be stopping: see [`ReleaseState::serving`]).
    pub fn running(&self) -> bool {
        self.supervisor_pid.is_some() || self.live.is_some()
    }

    /// Running and not on its way out: a stop asked for earlier will not end it later.
    pub fn serving(&self) -> bool {
        self.running() && !self.stopping
    }
}

/// `PID START_TIME` of this process, for the files that name who acts on a release.
pub(crate) fn me() -> String {
    let pid = std::process::id();
    format!("{pid} {}", process_start_time(pid).unwrap_or(0))
}

/// Whether the process named in a `PID START_TIME` file still runs (the same process, not
/// another one that got the pid since).
pub(crate) fn owner_alive(text: &str) -> bool {
    let mut it = text.split_whitespace();
    let Some(pid) = it.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let started = it.next().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    pid_alive(pid) && (started == 0 || process_start_time(pid) == Some(started))
}

/// The result of a successful deploy of one service.
#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub release: String,
    pub previous: Option<String>,
    pub url: String,
    pub port: u16,
    pub artifacts: Vec<ArtifactDigest>,
    pub health: Option<String>,
}

/// A deploy that did not succeed. When `release` is set, a new release was started (and
/// stopped again): the deploy had begun, so the run rolls back to `previous`.
#[derive(Debug, Clone)]
pub struct DeployError {
    pub message: String,
    pub release: Option<String>,
    pub previous: Option<String>,
}

impl DeployError {
    pub(crate) fn early(message: String) -> Self {
        Self {
            message,
            release: None,
            previous: None,
        }
    }
}

/// Everything a driver call needs from the run.
pub struct DriverCtx<'a> {
    pub deployment_id: i64,
    pub scope: &'a Scope,
    pub overrides: Option<&'a ServiceOverride>,
    pub scrubber: &'a Scrubber,
    pub cancel: &'a CancellationToken,
    pub events: &'a Events,
    /// The step's log file: build output goes here.
    pub log: Option<PathBuf>,
    /// A promotion: the artifacts that passed the source environment, which this deploy
    /// must carry byte for byte (`None`: any).
    pub pinned: Option<&'a [ArtifactDigest]>,
}

pub struct LocalDriver {
    /// `.stagegate/releases/ENV`
    pub root: PathBuf,
    pub plan_dir: PathBuf,
    /// The program started as `PROGRAM __supervise DIR` (the stagegate binary).
    pub supervisor_exe: PathBuf,
}

fn settings(svc: &Service) -> &LocalService {
    svc.driver
        .local()
        .expect("the dispatcher hands only local services to the local driver")
}

pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl LocalDriver {
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.root.join(service)
    }

    fn records(&self) -> crate::records::Records {
        crate::records::Records {
            root: self.root.clone(),
        }
    }

    pub fn current(&self, service: &str) -> Option<String> {
        self.records().current(service)
    }

    fn set_current(&self, service: &str, id: Option<&str>) -> std::io::Result<()> {
        self.records().set_current(service, id)
    }

    pub fn read_meta(dir: &Path) -> Option<ReleaseMeta> {
        crate::records::Records::read_meta(dir)
    }

    fn write_meta(dir: &Path, meta: &ReleaseMeta) -> std::io::Result<()> {
        crate::records::Records::write_meta(dir, meta)
    }

    fn set_status(dir: &Path, status: &str) {
        crate::records::Records::set_status(dir, status)
    }

    fn pid_file(dir: &Path, name: &str) -> Option<u32> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn state(&self, service: &str, dir: &Path, current: Option<&str>) -> Option<ReleaseState> {
        let meta = Self::read_meta(dir)?;
        let supervisor_pid = Self::pid_file(dir, SUPERVISOR_PID).filter(|p| pid_alive(*p));
        let service_pid =
            supervisor_pid.and(Self::pid_file(dir, SERVICE_PID).filter(|p| pid_alive(*p)));
        let exits = std::fs::read_to_string(dir.join(EXITS_LOG))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        let _ = service;
        let abandoned =
            std::fs::read_to_string(dir.join(STARTER)).is_ok_and(|owner| !owner_alive(&owner));
        let stopping = supervisor_pid.is_some() && dir.join(STOPPING).exists();
        Some(ReleaseState {
            abandoned,
            stopping,
            current: current == Some(meta.id.as_str()),
            meta,
            dir: dir.to_path_buf(),
            supervisor_pid,
            service_pid,
            exits,
            live: None,
        })
    }

    /// Every release of a service on disk, oldest first.
    pub fn releases(&self, service: &str) -> Vec<ReleaseState> {
        let current = self.current(service);
        let Ok(entries) = std::fs::read_dir(self.service_dir(service)) else {
            return Vec::new();
        };
        let mut out: Vec<ReleaseState> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| self.state(service, &e.path(), current.as_deref()))
            .collect();
        out.sort_by_key(|r| (r.meta.created_at, r.meta.deployment_id));
        out
    }

    pub fn release(&self, service: &str, id: &str) -> Option<ReleaseState> {
        self.state(
            service,
            &self.service_dir(service).join(id),
            self.current(service).as_deref(),
        )
    }

    /// Finds a release by its id or, failing that, the newest with that version.
    pub fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        crate::records::find_in(&self.releases(service), wanted)
    }

    /// The newest release before the current one that was healthy once: the rollback target.
    pub fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        crate::records::previous_good_in(&self.releases(service))
    }

    /// Renders the service's start command, env and health check for this run, sealed.
    fn seal(svc: &Service, ctx: &DriverCtx) -> Result<SealedRun, String> {
        let l = settings(svc);
        seal_run(svc, ctx, Some(&l.start), &l.env)
    }

    fn port_mode(svc: &Service, ctx: &DriverCtx) -> PortMode {
        ctx.overrides
            .and_then(|o| o.port)
            .unwrap_or(settings(svc).port)
    }

    /// Starts the supervisor for a release directory and waits for the service's health.
    async fn start_release(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        dir: &Path,
        meta: &ReleaseMeta,
    ) -> Result<Option<String>, String> {
        let _ = settings(svc);
        let scope = ctx.scope;
        let command = unseal(scope, &meta.sealed.start)
            .map_err(|e| format!("start command of service `{}`: {e}", svc.name))?;
        let mut env = BTreeMap::new();
        for (k, v) in &meta.sealed.env {
            env.insert(
                k.clone(),
                unseal(scope, v)
                    .map_err(|e| format!("env `{k}` of service `{}`: {e}", svc.name))?,
            );
        }
        env.insert("PORT".into(), meta.port.to_string());
        env.insert("STAGEGATE_SERVICE".into(), svc.name.clone());
        env.insert("STAGEGATE_ENVIRONMENT".into(), meta.environment.clone());
        env.insert("STAGEGATE_RELEASE".into(), meta.id.clone());
        env.insert("STAGEGATE_RELEASE_VERSION".into(), meta.version.clone());
        env.insert("STAGEGATE_RELEASE_DIR".into(), dir.display().to_string());
        let mask: Vec<String> = scope
            .secrets
            .values()
            .map(|s| s.expose().to_string())
            .collect();
        let _ = std::fs::remove_file(dir.join(EXITS_LOG));
        let _ = std::fs::remove_file(dir.join(STOPPING));
        // Until its health is settled, this process answers for the release: if it dies
        // first, the next run sees the release as abandoned and stops it.
        std::fs::write(dir.join(STARTER), me())
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let res = self
            .spawn_and_wait(svc, ctx, dir, meta, command, env, mask)
            .await;
        let _ = std::fs::remove_file(dir.join(STARTER));
        res
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn_and_wait(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        dir: &Path,
        meta: &ReleaseMeta,
        command: String,
        env: BTreeMap<String, String>,
        mask: Vec<String>,
    ) -> Result<Option<String>, String> {
        let l = settings(svc);
        let scope = ctx.scope;
        let log = crate::process::append_private(&dir.join("supervisor.log"))
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let mut cmd = std::process::Command::new(&self.supervisor_exe);
        cmd.arg("__supervise")
            .arg(dir)
            .current_dir(dir)
            .envs(&scope.process_env)
            .envs(&env)
            .env(ENV_COMMAND, &command)
            .env(ENV_STOP_MS, l.stop_timeout.as_millis().to_string())
            .env(ENV_MASK, mask.join("\n"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start the supervisor ({}): {e}",
                self.supervisor_exe.display()
            )
        })?;
        let supervisor_pid = child.id();
        // The supervisor outlives this process on purpose; it is reaped by init once we exit.
        drop(child);
        ctx.events.emit(Event::ServiceStarting {
            service: svc.name.clone(),
            release: meta.id.clone(),
            port: meta.port,
            dir: dir.display().to_string(),
        });

        let dir_owned = dir.to_path_buf();
        let exited = move || -> Option<String> {
            let exits = std::fs::read_to_string(dir_owned.join(EXITS_LOG)).unwrap_or_default();
            let last = exits.lines().last().map(str::to_string);
            let alive = pid_alive(supervisor_pid);
            if last.is_none() && alive {
                return None;
            }
            let how = last
                .as_deref()
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|c| format!("exited with code {c}"))
                .unwrap_or_else(|| "stopped".into());
            let stderr = tail_file(&dir_owned.join("stderr.log"), 8);
            let stdout = if stderr.is_empty() {
                tail_file(&dir_owned.join("stdout.log"), 8)
            } else {
                String::new()
            };
            let output = if !stderr.is_empty() {
                format!("; last lines of stderr.log:\n{stderr}")
            } else if !stdout.is_empty() {
                format!("; last lines of stdout.log:\n{stdout}")
            } else {
                String::new()
            };
            Some(format!(
                "the service {how} before it became healthy{output}"
            ))
        };
        let Some(probe) = unsealed_probe(scope, meta)? else {
            // Without a health check, "healthy" means it is still running a moment later.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return match exited() {
                Some(why) => Err(why),
                None => Ok(None),
            };
        };
        let client = http_client();
        match wait_healthy(&client, &probe, &exited, ctx.cancel).await {
            Ok(h) => {
                ctx.events.emit(Event::ServiceHealthy {
                    service: svc.name.clone(),
                    release: meta.id.clone(),
                    url: meta.url.clone(),
                    waited_ms: h.waited.as_millis() as u64,
                });
                Ok(Some(format!("{} ({})", h.answer, probe.url)))
            }
            Err(e) => Err(format!("health check {} failed: {e}", probe.url)),
        }
    }

    /// Builds, stages and starts a new release; on failure the service is as it was before.
    pub async fn deploy(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
    ) -> Result<Deployed, DeployError> {
        let l = settings(svc);
        let scope = ctx.scope;
        let service_dir = self.service_dir(&svc.name);
        std::fs::create_dir_all(&service_dir).map_err(|e| {
            DeployError::early(format!("cannot create {}: {e}", service_dir.display()))
        })?;
        self.reconcile(svc).await;
        let previous = self
            .current(&svc.name)
            .and_then(|id| self.release(&svc.name, &id));

        if let Some(build) = &l.build {
            run_build(&svc.name, build, &self.plan_dir, ctx).await?;
        }

        let id = format!(
            "{}-d{}",
            sanitize(&scope.release.version),
            ctx.deployment_id
        );
        // Never reuse a release directory: another record (another state store) may own it.
        let mut id = id;
        let mut n = 1;
        while service_dir.join(&id).exists() {
            n += 1;
            id = format!(
                "{}-d{}.{n}",
                sanitize(&scope.release.version),
                ctx.deployment_id
            );
        }
        let dir = service_dir.join(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DeployError::early(format!("cannot create {}: {e}", dir.display())))?;
        let mut artifacts = Vec::new();
        for a in &l.artifacts {
            let from = self.plan_dir.join(&a.value);
            if !from.exists() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(DeployError::early(format!(
                    "artifact `{}` of service `{}` does not exist at {} (plan line {}); did the build produce it?",
                    a.value,
                    svc.name,
                    from.display(),
                    a.span.pos.line
                )));
            }
            let to = dir.join(&a.value);
            copy_and_digest(&from, &to, &a.value, &mut artifacts).map_err(|e| {
                DeployError::early(format!("cannot copy artifact `{}`: {e}", a.value))
            })?;
        }
        if let Some(want) = ctx.pinned
            && let Some(why) = artifacts_differ(want, &artifacts)
        {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(DeployError::early(format!(
                "service `{}`: {why}; nothing was started",
                svc.name
            )));
        }

        let mode = Self::port_mode(svc, ctx);
        let mut stopped_previous = false;
        let port = match mode {
            PortMode::Auto => free_port()
                .map_err(|e| DeployError::early(format!("cannot find a free port: {e}")))?,
            PortMode::Fixed(p) => {
                if !port_free(p) {
                    // Whichever release of this service holds the port gives it up.
                    let holder = self
                        .releases(&svc.name)
                        .into_iter()
                        .rev()
                        .find(|r| r.running() && r.meta.port == p);
                    match holder {
                        Some(h) => {
                            self.stop_dir(&h.dir, l.stop_timeout).await;
                            stopped_previous = previous
                                .as_ref()
                                .is_some_and(|prev| prev.meta.id == h.meta.id);
                            wait_port_free(p, Duration::from_secs(5)).await;
                        }
                        _ => {
                            let _ = std::fs::remove_dir_all(&dir);
                            return Err(DeployError::early(format!(
                                "port {p} is already in use by another process (not a release of service `{}`): stop that process, or set `port: auto` or another port",
                                svc.name
                            )));
                        }
                    }
                }
                p
            }
        };
        let url = format!("http://127.0.0.1:{port}");
        let sealed = Self::seal(svc, ctx).map_err(DeployError::early)?;
        let start = ctx
            .overrides
            .and_then(|o| o.start.as_ref())
            .unwrap_or(&l.start);
        let meta = ReleaseMeta {
            id: id.clone(),
            service: svc.name.clone(),
            environment: scope.environment.clone(),
            version: scope.release.version.clone(),
            sha: scope.release.sha.clone(),
            deployment_id: ctx.deployment_id,
            created_at: crate::now_ms(),
            port,
            url: url.clone(),
            command: scope.render_for_display(&start.value),
            artifacts: artifacts.clone(),
            status: "starting".into(),
            sealed,
            hosts: Vec::new(),
            kubernetes: None,
            docker: None,
            compose: None,
        };
        Self::write_meta(&dir, &meta).map_err(|e| {
            DeployError::early(format!("cannot write {}: {e}", dir.join(META).display()))
        })?;

        match self.start_release(svc, ctx, &dir, &meta).await {
            Ok(health) => {
                Self::set_status(&dir, "healthy");
                self.set_current(&svc.name, Some(&id)).map_err(|e| {
                    DeployError::early(format!("cannot record the current release: {e}"))
                })?;
                Ok(Deployed {
                    release: id,
                    previous: previous.map(|p| p.meta.id),
                    url,
                    port,
                    artifacts,
                    health,
                })
            }
            Err(why) => {
                self.stop_dir(&dir, l.stop_timeout).await;
                Self::set_status(&dir, "failed");
                let mut msg = format!("release {id} of service `{}`: {why}", svc.name);
                if stopped_previous && let Some(prev) = &previous {
                    match self.start_existing(svc, ctx, prev).await {
                        Ok(_) => msg.push_str(&format!(
                            "\nthe previous release {} was started again and is healthy",
                            prev.meta.id
                        )),
                        Err(e) => msg.push_str(&format!(
                            "\nthe previous release {} could not be started again: {e}",
                            prev.meta.id
                        )),
                    }
                }
                Err(DeployError {
                    message: msg,
                    release: Some(id),
                    previous: previous.map(|p| p.meta.id),
                })
            }
        }
    }

    /// Starts an existing release again (with its own version in the templates) if it is not running.
    async fn start_existing(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        r: &ReleaseState,
    ) -> Result<Option<String>, String> {
        // Read it again: it may have been stopped since the caller looked.
        let r = &self
            .release(&svc.name, &r.meta.id)
            .ok_or_else(|| format!("release {} is not on disk any more", r.meta.id))?;
        if r.running() && r.stopping {
            // A stop asked for earlier (by a run that died) would end it later: finish that
            // stop now and start the release afresh.
            self.stop_dir(&r.dir, Duration::ZERO).await;
        } else if r.running() {
            // Already serving: confirm it answers.
            let Some(probe) = unsealed_probe(ctx.scope, &r.meta)? else {
                return Ok(None);
            };
            let client = http_client();
            let alive = || None;
            return match wait_healthy(&client, &probe, &alive, ctx.cancel).await {
                Ok(h) => Ok(Some(h.answer)),
                Err(e) => Err(e.to_string()),
            };
        }
        let r = &self
            .release(&svc.name, &r.meta.id)
            .ok_or_else(|| format!("release {} is not on disk any more", r.meta.id))?;
        let mut meta = r.meta.clone();
        if Self::port_mode(svc, ctx) == PortMode::Auto && !port_free(meta.port) {
            meta.port = free_port().map_err(|e| e.to_string())?;
            meta.url = format!("http://127.0.0.1:{}", meta.port);
            let _ = Self::write_meta(&r.dir, &meta);
        }
        let res = self.start_release(svc, ctx, &r.dir, &meta).await;
        if res.is_err() {
            self.stop_dir(&r.dir, settings(svc).stop_timeout).await;
        }
        res
    }

    /// Makes `target` the serving release again (or, with none, stops the service) and stops
    /// `from`. Used by automatic rollback and by `stagegate rollback`.
    pub async fn restore(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        target: Option<&str>,
        from: Option<&str>,
    ) -> Result<String, String> {
        let l = settings(svc);
        self.reconcile(svc).await;
        let from_state = from.and_then(|f| self.release(&svc.name, f));
        let Some(target) = target else {
            if let Some(f) = &from_state {
                self.stop_dir(&f.dir, l.stop_timeout).await;
                Self::set_status(&f.dir, "rolled_back");
            }
            self.set_current(&svc.name, None)
                .map_err(|e| e.to_string())?;
            return Ok(format!(
                "service `{}` had no earlier release: stopped {}",
                svc.name,
                from.unwrap_or("it")
            ));
        };
        let t = self.release(&svc.name, target).ok_or_else(|| {
            format!(
                "release {target} of service `{}` is not on disk any more",
                svc.name
            )
        })?;
        if Self::port_mode(svc, ctx) != PortMode::Auto && !t.serving() {
            // On a fixed port every other running release of the service holds it.
            for other in self
                .releases(&svc.name)
                .iter()
                .filter(|r| r.running() && r.meta.id != target && r.meta.port == t.meta.port)
            {
                self.stop_dir(&other.dir, l.stop_timeout).await;
            }
            wait_port_free(t.meta.port, Duration::from_secs(5)).await;
        }
        let health = self.start_existing(svc, ctx, &t).await.map_err(|e| {
            format!(
                "release {target} of service `{}` did not come back: {e}",
                svc.name
            )
        })?;
        self.set_current(&svc.name, Some(target))
            .map_err(|e| e.to_string())?;
        Self::set_status(&t.dir, "healthy");
        if let Some(f) = &from_state
            && f.meta.id != target
        {
            self.stop_dir(&f.dir, l.stop_timeout).await;
            Self::set_status(&f.dir, "rolled_back");
        }
        // Only a release that runs and answers now counts as restored.
        let now = self
            .release(&svc.name, target)
            .filter(ReleaseState::serving)
            .ok_or_else(|| {
                format!(
                    "release {target} of service `{}` is not running after the rollback",
                    svc.name
                )
            })?;
        if let Some(probe) = unsealed_probe(ctx.scope, &now.meta)? {
            crate::health::probe_once(&http_client(), &probe)
                .await
                .map_err(|e| {
                    format!(
                        "release {target} of service `{}` does not answer its health check: {e}",
                        svc.name
                    )
                })?;
        }
        let now = now.meta.url;
        Ok(format!(
            "service `{}` is back on release {target} at {now}{}",
            svc.name,
            health.map(|h| format!(": {h}")).unwrap_or_default()
        ))
    }

    /// After a successful run: stop every release but the current one, and delete the oldest
    /// beyond `keep`. Returns the releases it stopped.
    pub async fn retire_others(&self, svc: &Service, events: &Events) -> Vec<String> {
        let l = settings(svc);
        let mut stopped = Vec::new();
        let all = self.releases(&svc.name);
        for r in all.iter().filter(|r| !r.current && r.running()) {
            self.stop_dir(&r.dir, l.stop_timeout).await;
            Self::set_status(&r.dir, "retired");
            events.emit(Event::ServiceRetired {
                service: svc.name.clone(),
                release: r.meta.id.clone(),
            });
            stopped.push(r.meta.id.clone());
        }
        for dir in self.prunable(&svc.name, l.keep) {
            let _ = std::fs::remove_dir_all(dir);
        }
        stopped
    }

    /// The release directories beyond `keep` to delete: releases that never became healthy
    /// go first (oldest first), then the oldest good ones. The current release, running ones
    /// and the newest good release before the current one (the rollback target) always stay.
    fn prunable(&self, service: &str, keep: usize) -> Vec<PathBuf> {
        let all = self.releases(service);
        let target = self.previous_good(service).map(|r| r.meta.id);
        let mut excess = all.len().saturating_sub(keep);
        let removable =
            |r: &&ReleaseState| !r.current && !r.running() && Some(&r.meta.id) != target.as_ref();
        let good =
            |r: &ReleaseState| matches!(r.meta.status.as_str(), "healthy" | "retired" | "stopped");
        let mut out = Vec::new();
        for r in all
            .iter()
            .filter(removable)
            .filter(|r| !good(r))
            .chain(all.iter().filter(removable).filter(|r| good(r)))
        {
            if excess == 0 {
                break;
            }
            out.push(r.dir.clone());
            excess -= 1;
        }
        out
    }

    /// Stops every running release of a service. Returns what it stopped.
    pub async fn stop_service(&self, svc: &Service) -> Vec<String> {
        let mut stopped = Vec::new();
        for r in self.releases(&svc.name).iter().filter(|r| r.running()) {
            self.stop_dir(&r.dir, settings(svc).stop_timeout).await;
            Self::set_status(&r.dir, "stopped");
            stopped.push(r.meta.id.clone());
        }
        stopped
    }

    /// Brings the release directories in line with what runs, before a deploy or a
    /// restore acts on them: a release a dead run left starting is stopped and marked
    /// `failed`; one whose stop a dead run began is stopped now, so that stop cannot end
    /// it later. Returns the abandoned releases it stopped.
    pub async fn reconcile(&self, svc: &Service) -> Vec<String> {
        let mut stopped = Vec::new();
        for r in self.releases(&svc.name) {
            if r.abandoned {
                if r.running() {
                    self.stop_dir(&r.dir, settings(svc).stop_timeout).await;
                }
                let _ = std::fs::remove_file(r.dir.join(STARTER));
                if r.meta.status == "starting" {
                    Self::set_status(&r.dir, "failed");
                }
                stopped.push(r.meta.id.clone());
            } else if r.stopping {
                self.stop_dir(&r.dir, Duration::ZERO).await;
            }
        }
        stopped
    }

    /// Whether a release of the service was left by a dead run (see [`Self::reconcile`]).
    pub fn has_abandoned(&self, service: &str) -> bool {
        self.releases(service).iter().any(|r| r.abandoned)
    }

    /// Stops a release's supervisor (which stops the service's process group).
    pub async fn stop_dir(&self, dir: &Path, stop_timeout: Duration) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let sup = Self::pid_file(dir, SUPERVISOR_PID).filter(|p| pid_alive(*p));
        let svc_pid = Self::pid_file(dir, SERVICE_PID);
        if let Some(p) = sup {
            // Said before the signal, so that a run that dies while the service takes its
            // time to stop leaves a trace: the next run finishes the stop.
            let _ = std::fs::write(dir.join(STOPPING), me());
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + stop_timeout + Duration::from_secs(2);
            while pid_alive(p) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if pid_alive(p) {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
        }
        if let Some(s) = svc_pid.filter(|p| pid_alive(*p)) {
            kill_group(s, Duration::from_secs(1)).await;
        }
        let _ = std::fs::remove_file(dir.join(SUPERVISOR_PID));
        let _ = std::fs::remove_file(dir.join(SERVICE_PID));
        let _ = std::fs::remove_file(dir.join(STOPPING));
    }
}

/// Runs a service's `build` command in the plan directory, output to the step's log.
pub(crate) async fn run_build(
    service: &str,
    build: &Spanned<stagegate_plan::Template>,
    plan_dir: &Path,
    ctx: &DriverCtx<'_>,
) -> Result<(), DeployError> {
    let scope = ctx.scope;
    let shell = scope
        .render_shell(&build.value)
        .map_err(|e| DeployError::early(format!("build command of service `{service}`: {e}")))?;
    let script = shell.script;
    let mut env: BTreeMap<String, String> = shell.env;
    env.insert(
        "STAGEGATE_RELEASE_VERSION".into(),
        scope.release.version.clone(),
    );
    env.insert("STAGEGATE_ENVIRONMENT".into(), scope.environment.clone());
    let spec = CommandSpec {
        script,
        cwd: plan_dir.to_path_buf(),
        env,
        timeout: None,
        log: ctx.log.clone(),
    };
    let r = run_command(&spec, ctx.scrubber, ctx.cancel).await;
    if !r.success() {
        return Err(DeployError::early(format!(
            "the build of service `{service}` {}{}",
            r.describe(None),
            indent_tail(&r.tail)
        )));
    }
    Ok(())
}

/// Renders a service's start command (as a script whose values sit in `STAGEGATE_VALUE_N`
/// variables of the environment), its environment and its health check for this run, with
/// every secret sealed back into its reference. The environment's overrides apply.
pub(crate) fn seal_run(
    svc: &Service,
    ctx: &DriverCtx,
    start: Option<&Spanned<stagegate_plan::Template>>,
    base_env: &BTreeMap<String, Spanned<stagegate_plan::Template>>,
) -> Result<SealedRun, String> {
    let scope = ctx.scope;
    let render = |what: &str, t: &stagegate_plan::Template| {
        scope
            .render(t)
            .map(|v| scope.seal(&v))
            .map_err(|e| format!("{what} of service `{}`: {e}", svc.name))
    };
    let start = ctx.overrides.and_then(|o| o.start.as_ref()).or(start);
    let mut env = BTreeMap::new();
    for (k, t) in base_env
        .iter()
        .chain(ctx.overrides.map(|o| o.env.iter()).into_iter().flatten())
    {
        env.insert(k.clone(), render(&format!("env `{k}`"), &t.value)?);
    }
    let health = match &svc.health {
        None => None,
        Some(h) => {
            let (target, is_path) = match &h.target {
                HealthTarget::Path(p) => (render("health path", &p.value)?, true),
                HealthTarget::Url(u) => (render("health url", &u.value)?, false),
            };
            let mut json = Vec::new();
            for j in &h.json {
                json.push((
                    j.path.value.clone(),
                    render("expected health value", &j.equals.value)?,
                ));
            }
            Some(SealedHealth {
                target,
                is_path,
                status: h.status.clone(),
                json,
                interval_ms: h.interval.as_millis() as u64,
                timeout_ms: h.timeout.as_millis() as u64,
            })
        }
    };
    // The start command's values travel in variables of the release's environment,
    // sealed like the rest of it.
    let mut sealed_start = String::new();
    if let Some(start) = start {
        let shell = scope
            .render_shell(&start.value)
            .map_err(|e| format!("start command of service `{}`: {e}", svc.name))?;
        for (k, v) in shell.env {
            env.insert(k, scope.seal(&v));
        }
        sealed_start = scope.seal(&shell.script);
    }
    Ok(SealedRun {
        start: sealed_start,
        env,
        health,
    })
}

/// Puts the secrets back into a sealed value.
pub(crate) fn unseal(scope: &Scope, sealed: &str) -> Result<String, String> {
    if !sealed.contains("${{") {
        return Ok(sealed.to_string());
    }
    let t = stagegate_plan::Template::parse(sealed).map_err(|e| e.message)?;
    Ok(scope.render(&t)?)
}

pub(crate) fn unsealed_probe(
    scope: &Scope,
    meta: &ReleaseMeta,
) -> Result<Option<HealthProbe>, String> {
    let Some(h) = &meta.sealed.health else {
        return Ok(None);
    };
    let target = unseal(scope, &h.target)?;
    let url = if h.is_path {
        format!("{}{target}", meta.url)
    } else {
        target
    };
    let mut json = Vec::new();
    for (path, equals) in &h.json {
        let query = serde_json_path::JsonPath::parse(path)
            .map_err(|e| format!("JSONPath `{path}`: {e}"))?;
        json.push(JsonField {
            path: path.clone(),
            query,
            equals: unseal(scope, equals)?,
        });
    }
    Ok(Some(HealthProbe {
        url,
        status: h.status.clone(),
        json,
        interval: Duration::from_millis(h.interval_ms),
        timeout: Duration::from_millis(h.timeout_ms),
    }))
}

pub(crate) fn copy_and_digest(
    from: &Path,
    to: &Path,
    rel: &str,
    out: &mut Vec<ArtifactDigest>,
) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        let mut entries: Vec<_> = std::fs::read_dir(from)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            copy_and_digest(&e.path(), &to.join(&name), &format!("{rel}/{name}"), out)?;
        }
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = std::fs::copy(from, to)?;
    let mut f = std::fs::File::open(to)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    out.push(ArtifactDigest {
        path: rel.to_string(),
        sha256: hex::encode(h.finalize()),
        bytes,
    });
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

async fn wait_port_free(port: u16, max: Duration) {
    let deadline = std::time::Instant::now() + max;
    while !port_free(port) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn indent_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = tail.lines().collect();
        let last = &lines[lines.len().saturating_sub(10)..];
        format!(
            "; last lines of output:\n{}",
            last.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}
