//! The `ssh` driver: releases in versioned directories on remote hosts, a `current`
//! symlink, activation by systemd or by a command stagegate runs, rolling batches with a
//! health check per batch, a lock on each host, and rollback by switching `current` back.
//!
//! On each host, for a service directory `DIR`:
//!
//! ```text
//! DIR/releases/ID/            the artifacts, .stagegate.env (0600), .stagegate-start.sh
//! DIR/releases/ID/service.log the output of a `start:` service, service.pid its process
//! DIR/current -> releases/ID  switched with one rename
//! DIR/.stagegate-lock/holder  who deploys now (a directory made with one mkdir)
//! ```
//!
//! The ssh program of the system makes the connections (one master connection per host
//! and operation, every command multiplexed over it), so the user's ssh config, agent,
//! ProxyJump and known_hosts apply; `BatchMode` is on, host keys are checked strictly
//! unless a host says `accept-new`. Every script goes to `sh -s` on the host's stdin and
//! every value in it is quoted, so neither a value nor a secret becomes code or shows in a
//! process list. The records of what was deployed stay on this machine
//! ([`crate::records`]); `observe` asks the hosts what really runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use sha2::{Digest, Sha256};
use stagegate_plan::ssh::{Activation, Host, HostKeyCheck, SshService};
use stagegate_plan::{Environment, Plan, Service};
use tokio::io::AsyncWriteExt;

use crate::driver::{DriverFuture, ServiceDriver};
use crate::event::{Event, Events};
use crate::health::{http_client, wait_healthy};
use crate::local::{
    ArtifactDigest, DeployError, Deployed, DriverCtx, ReleaseMeta, ReleaseState, indent_tail,
    sanitize, seal_run, unseal, unsealed_probe,
};
use crate::records::{Records, find_in, previous_good_in};

/// The largest file stagegate uploads in one piece (artifacts are streamed through ssh).
const ENV_FILE: &str = ".stagegate.env";
const START_FILE: &str = ".stagegate-start.sh";
const STOP_FILE: &str = ".stagegate-stop.sh";
const LOCK_DIR: &str = ".stagegate-lock";
/// In a release's record while a run deploys it: `PID START_TIME` of that run.
const STARTER: &str = "starter";

pub struct SshDriver {
    records: Records,
    plan_dir: PathBuf,
    environment: String,
    hosts: Vec<Host>,
}

impl SshDriver {
    pub fn new(
        plan: &Plan,
        env: Option<&Environment>,
        state_dir: &Path,
        environment: &str,
    ) -> Self {
        Self {
            records: Records::new(state_dir, environment),
            plan_dir: plan.dir.clone(),
            environment: environment.to_string(),
            hosts: env.map(|e| e.hosts.clone()).unwrap_or_default(),
        }
    }

    fn settings(svc: &Service) -> &SshService {
        match &svc.driver {
            stagegate_plan::Driver::Ssh(s) => s,
            _ => unreachable!("the dispatcher hands only ssh services to the ssh driver"),
        }
    }

    /// The hosts the service goes to, in the environment's order.
    fn targets(&self, s: &SshService) -> Vec<Host> {
        stagegate_plan::ssh::select_hosts(&self.hosts, &s.hosts)
            .into_iter()
            .cloned()
            .collect()
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        if let Some(rest) = p.strip_prefix("~/")
            && let Some(home) = std::env::var_os("HOME")
        {
            return PathBuf::from(home).join(rest);
        }
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.plan_dir.join(path)
        }
    }

    /// One master connection to each host, all at once; the first failure is the answer.
    async fn connect_all(&self, hosts: &[Host]) -> Result<Vec<Remote>, String> {
        let tries = join_all(hosts.iter().map(|h| self.connect(h))).await;
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for r in tries {
            match r {
                Ok(c) => out.push(c),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            for c in out {
                c.close().await;
            }
            return Err(errors.join("\n"));
        }
        Ok(out)
    }

    async fn connect(&self, h: &Host) -> Result<Remote, String> {
        let mut b = SessionBuilder::default();
        b.port(h.port)
            .connect_timeout(h.connect_timeout)
            .server_alive_interval(Duration::from_secs(15))
            .known_hosts_check(match h.host_key_check {
                HostKeyCheck::Strict => KnownHosts::Strict,
                HostKeyCheck::AcceptNew => KnownHosts::Add,
            })
            .control_directory(std::env::temp_dir());
        if let Some(u) = &h.user {
            b.user(u.clone());
        }
        if let Some(k) = &h.identity {
            b.keyfile(self.resolve_path(k));
        }
        if let Some(k) = &h.known_hosts {
            b.user_known_hosts_file(self.resolve_path(k));
        }
        let started = Instant::now();
        match b.connect_mux(&h.address).await {
            Ok(s) => Ok(Remote {
                host: h.clone(),
                session: s,
            }),
            Err(e) => Err(connect_error(h, &e, started.elapsed())),
        }
    }

    fn dir_of(s: &SshService, svc: &Service, h: &Host) -> String {
        s.dir_on(&svc.name, h)
            .unwrap_or_else(|| format!("/srv/{}", svc.name))
    }

    /// Takes the lock on every host; on any refusal releases those taken and says who holds it.
    async fn lock_all(
        &self,
        remotes: &[Remote],
        svc: &Service,
        s: &SshService,
        holder: &str,
    ) -> Result<(), String> {
        let tries = join_all(remotes.iter().map(|r| {
            let dir = Self::dir_of(s, svc, &r.host);
            r.lock(dir, holder.to_string())
        }))
        .await;
        let refused: Vec<String> = tries.iter().filter_map(|t| t.clone().err()).collect();
        if refused.is_empty() {
            return Ok(());
        }
        for (r, t) in remotes.iter().zip(&tries) {
            if t.is_ok() {
                let _ = r.unlock(&Self::dir_of(s, svc, &r.host)).await;
            }
        }
        Err(refused.join("\n"))
    }

    async fn unlock_all(&self, remotes: &[Remote], svc: &Service, s: &SshService) {
        join_all(
            remotes
                .iter()
                .map(|r| async move { r.unlock(&Self::dir_of(s, svc, &r.host)).await }),
        )
        .await;
    }

    async fn close_all(remotes: Vec<Remote>) {
        join_all(remotes.into_iter().map(Remote::close)).await;
    }

    fn holder(&self, ctx: &DriverCtx<'_>, what: &str) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
        let machine = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into());
        format!(
            "{user}@{machine} (stagegate pid {}): {what} of deployment {} to {} since {}",
            std::process::id(),
            ctx.deployment_id,
            self.environment,
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    }

    /// The environment file of a release on a host: the sealed env with secrets read now,
    /// and what stagegate adds (`PORT`, `STAGEGATE_HOST`, ...). `KEY='value'` lines, which
    /// both `sh` (`set -a; . FILE`) and systemd's `EnvironmentFile=` read.
    fn env_file(
        ctx: &DriverCtx<'_>,
        meta: &ReleaseMeta,
        h: &Host,
        port: u16,
    ) -> Result<String, String> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &meta.sealed.env {
            env.insert(k.clone(), unseal(ctx.scope, v)?);
        }
        env.insert("PORT".into(), port.to_string());
        env.insert("STAGEGATE_HOST".into(), h.name.clone());
        env.insert("STAGEGATE_HOST_ADDRESS".into(), h.address.clone());
        env.insert("STAGEGATE_RELEASE".into(), meta.id.clone());
        env.insert("STAGEGATE_RELEASE_VERSION".into(), meta.version.clone());
        env.insert("STAGEGATE_ENVIRONMENT".into(), meta.environment.clone());
        let mut out = String::new();
        for (k, v) in env {
            if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("`{k}` is not a valid environment variable name"));
            }
            out.push_str(&format!("{k}={}\n", sq(&v)));
        }
        Ok(out)
    }

    /// Puts a release's files on a host (`DIR/releases/ID`, written under a temporary name
    /// and renamed, so a half upload never looks like a release).
    #[allow(clippy::too_many_arguments)] // the pieces of one release, each used once
    async fn upload(
        &self,
        r: &Remote,
        dir: &str,
        id: &str,
        files: &[Upload],
        env_file: &str,
        start: Option<&str>,
        stop: Option<&str>,
    ) -> Result<(), String> {
        let rel = format!("{dir}/releases/{id}");
        let part = format!("{dir}/releases/.{id}.partial");
        r.exec(&format!(
            "set -e\nrm -rf {p}\nmkdir -p {p}\nchmod 755 {p}\n",
            p = sq(&part)
        ))
        .await?
        .ok(&r.host, "prepare the release directory")?;
        for f in files {
            let data = std::fs::read(&f.local)
                .map_err(|e| format!("cannot read artifact {}: {e}", f.local.display()))?;
            r.put(&format!("{part}/{}", f.rel), &data, f.mode).await?;
        }
        r.put(&format!("{part}/{ENV_FILE}"), env_file.as_bytes(), 0o600)
            .await?;
        if let Some(s) = start {
            r.put(&format!("{part}/{START_FILE}"), s.as_bytes(), 0o700)
                .await?;
        }
        if let Some(s) = stop {
            r.put(&format!("{part}/{STOP_FILE}"), s.as_bytes(), 0o700)
                .await?;
        }
        r.exec(&format!(
            "set -e\nrm -rf {rel}\nmv {part} {rel}\n",
            rel = sq(&rel),
            part = sq(&part)
        ))
        .await?
        .ok(&r.host, "move the release into place")
    }

    /// Stops what serves on a host, switches `current` to `id` and starts it.
    async fn activate(
        &self,
        r: &Remote,
        s: &SshService,
        dir: &str,
        id: &str,
    ) -> Result<(), String> {
        let script = format!(
            "set -e\nD={d}\n{stop}\nln -sfn {target} \"$D/current.new\"\nmv -Tf \"$D/current.new\" \"$D/current\"\n{start}\n",
            d = sq(dir),
            stop = stop_script(s),
            target = sq(&format!("releases/{id}")),
            start = start_script(s),
        );
        r.exec(&script)
            .await?
            .ok(&r.host, &format!("activate release {id}"))
    }

    /// Stops what serves on a host and removes `current`.
    async fn deactivate(&self, r: &Remote, s: &SshService, dir: &str) -> Result<(), String> {
        let script = format!(
            "set -e\nD={d}\n{stop}\nrm -f \"$D/current\"\n",
            d = sq(dir),
            stop = stop_script(s)
        );
        r.exec(&script).await?.ok(&r.host, "stop the service")
    }

    /// The release `current` points to on a host, and whether its process runs.
    async fn probe_host(
        &self,
        r: &Remote,
        s: &SshService,
        dir: &str,
    ) -> Result<(Option<String>, bool), String> {
        let running = match &s.activation {
            Activation::Unit { unit, sudo } => format!(
                "if {}systemctl is-active --quiet {}; then echo running; fi",
                if *sudo { "sudo -n " } else { "" },
                sq(&unit.value)
            ),
            Activation::Command { .. } => "if [ -f \"$D/current/service.pid\" ] && kill -0 \"$(cat \"$D/current/service.pid\")\" 2>/dev/null; then echo running; fi".to_string(),
        };
        let out = r
            .exec(&format!(
                "D={d}\nt=$(readlink \"$D/current\" 2>/dev/null || true)\necho \"current=${{t#releases/}}\"\n{running}\n",
                d = sq(dir)
            ))
            .await?;
        out.clone().ok(&r.host, "read the current release")?;
        let mut current = None;
        let mut run = false;
        for line in out.stdout.lines() {
            if let Some(c) = line.strip_prefix("current=") {
                current = Some(c.to_string()).filter(|c| !c.is_empty());
            } else if line == "running" {
                run = true;
            }
        }
        Ok((current, run))
    }

    /// Waits for a release's health check on one host (from this machine, to ADDRESS:PORT).
    async fn health(
        &self,
        r: &Remote,
        ctx: &DriverCtx<'_>,
        meta: &ReleaseMeta,
        dir: &str,
        svc: &Service,
        s: &SshService,
    ) -> Result<Option<String>, String> {
        let mut m = meta.clone();
        m.url = format!("http://{}:{}", url_host(&r.host.address), s.port);
        let Some(probe) = unsealed_probe(ctx.scope, &m)? else {
            return Ok(None);
        };
        ctx.events.emit(Event::ServiceStarting {
            service: svc.name.clone(),
            release: meta.id.clone(),
            port: s.port,
            dir: format!("{}:{dir}/releases/{}", r.host.name, meta.id),
        });
        let alive = || None;
        match wait_healthy(&http_client(), &probe, &alive, ctx.cancel).await {
            Ok(h) => {
                ctx.events.emit(Event::ServiceHealthy {
                    service: svc.name.clone(),
                    release: meta.id.clone(),
                    url: probe.url.clone(),
                    waited_ms: h.waited.as_millis() as u64,
                });
                Ok(Some(format!("{} ({})", h.answer, probe.url)))
            }
            Err(e) => {
                let mut msg = format!(
                    "host {}: health check {} failed: {e}",
                    r.host.name, probe.url
                );
                if matches!(s.activation, Activation::Command { .. })
                    && let Ok(out) = r
                        .exec(&format!(
                            "tail -n 15 {}/releases/{}/service.log 2>/dev/null",
                            sq(dir),
                            sq(&meta.id)
                        ))
                        .await
                    && !out.stdout.trim().is_empty()
                {
                    let tail = indent_tail(&ctx.scrubber.scrub(&out.stdout));
                    msg.push_str(&tail.replacen(
                        "; last lines of output:",
                        &format!("\n  the end of {dir}/releases/{}/service.log:", meta.id),
                        1,
                    ));
                }
                Err(msg)
            }
        }
    }

    /// Rewrites a release's environment file (secrets as they are now), activates it and
    /// checks its health: a host put back on an earlier release.
    async fn bring_back(
        &self,
        r: &Remote,
        ctx: &DriverCtx<'_>,
        svc: &Service,
        s: &SshService,
        meta: &ReleaseMeta,
    ) -> Result<Option<String>, String> {
        let dir = Self::dir_of(s, svc, &r.host);
        let rel = format!("{dir}/releases/{}", meta.id);
        let there = r.exec(&format!("test -d {}", sq(&rel))).await?.status == 0;
        if !there {
            return Err(format!(
                "host {}: release {} is not in {dir}/releases any more",
                r.host.name, meta.id
            ));
        }
        let env = Self::env_file(ctx, meta, &r.host, s.port)?;
        r.put(&format!("{rel}/{ENV_FILE}"), env.as_bytes(), 0o600)
            .await?;
        self.activate(r, s, &dir, &meta.id).await?;
        self.health(r, ctx, meta, &dir, svc, s).await
    }

    fn all_states(&self, service: &str) -> Vec<ReleaseState> {
        let current = self.records.current(service);
        self.records
            .metas(service)
            .into_iter()
            .map(|(dir, meta)| {
                let is_current = current.as_deref() == Some(meta.id.as_str());
                // As recorded: `observe` asks the hosts.
                let live = (is_current && meta.status == "healthy")
                    .then(|| format!("recorded as running on {}", meta.hosts.join(", ")));
                ReleaseState::remote(meta, dir, is_current, live)
            })
            .collect()
    }

    pub async fn deploy(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
    ) -> Result<Deployed, DeployError> {
        let s = Self::settings(svc);
        let scope = ctx.scope;
        let hosts = self.targets(s);
        if hosts.is_empty() {
            return Err(DeployError::early(format!(
                "service `{}` has no hosts in environment `{}`",
                svc.name, self.environment
            )));
        }
        let previous = self.records.current(&svc.name);
        if let Some(build) = &s.build {
            crate::local::run_build(&svc.name, build, &self.plan_dir, ctx).await?;
        }
        let files = collect_uploads(&self.plan_dir, s, &svc.name).map_err(DeployError::early)?;
        let artifacts: Vec<ArtifactDigest> = files.iter().map(|f| f.digest.clone()).collect();
        if let Some(want) = ctx.pinned
            && let Some(why) = crate::local::artifacts_differ(want, &artifacts)
        {
            return Err(DeployError::early(format!(
                "service `{}`: {why}; nothing was uploaded",
                svc.name
            )));
        }
        let (start, stop) = match &s.activation {
            Activation::Command { start, stop } => (Some(start), stop.as_ref()),
            Activation::Unit { .. } => (None, None),
        };
        let mut sealed = seal_run(svc, ctx, start, &s.env).map_err(DeployError::early)?;
        let stop_script = match stop {
            Some(t) => {
                let sh = scope.render_shell(&t.value).map_err(|e| {
                    DeployError::early(format!("stop command of service `{}`: {e}", svc.name))
                })?;
                // The stop command's values join the release's environment.
                for (k, v) in sh.env {
                    sealed.env.insert(
                        k.replace("STAGEGATE_VALUE_", "STAGEGATE_STOP_VALUE_"),
                        scope.seal(&v),
                    );
                }
                Some(
                    sh.script
                        .replace("STAGEGATE_VALUE_", "STAGEGATE_STOP_VALUE_"),
                )
            }
            None => None,
        };
        let base = format!(
            "{}-d{}",
            sanitize(&scope.release.version),
            ctx.deployment_id
        );
        let mut id = base.clone();
        let mut n = 1;
        while self.records.release_dir(&svc.name, &id).exists() {
            n += 1;
            id = format!("{base}.{n}");
        }
        let command = match &s.activation {
            Activation::Unit { unit, sudo } => format!(
                "{}systemctl restart {}",
                if *sudo { "sudo -n " } else { "" },
                unit.value
            ),
            Activation::Command { start, .. } => scope.render_for_display(&start.value),
        };
        let meta = ReleaseMeta {
            id: id.clone(),
            service: svc.name.clone(),
            environment: scope.environment.clone(),
            version: scope.release.version.clone(),
            sha: scope.release.sha.clone(),
            deployment_id: ctx.deployment_id,
            created_at: crate::now_ms(),
            port: s.port,
            url: format!("http://{}:{}", url_host(&hosts[0].address), s.port),
            command,
            artifacts: artifacts.clone(),
            status: "starting".into(),
            sealed,
            hosts: hosts.iter().map(|h| h.name.clone()).collect(),
            kubernetes: None,
            docker: None,
            compose: None,
        };
        let start_text = match &s.activation {
            Activation::Command { .. } => {
                Some(unseal(scope, &meta.sealed.start).map_err(DeployError::early)?)
            }
            Activation::Unit { .. } => None,
        };

        let remotes = self.connect_all(&hosts).await.map_err(|e| {
            DeployError::early(format!("service `{}`: nothing was changed:\n{e}", svc.name))
        })?;
        let holder = self.holder(ctx, &format!("deploy of {} {}", svc.name, meta.version));
        if let Err(e) = self.lock_all(&remotes, svc, s, &holder).await {
            Self::close_all(remotes).await;
            return Err(DeployError::early(format!(
                "service `{}`: nothing was changed:\n{e}",
                svc.name
            )));
        }
        let rec_dir = self.records.release_dir(&svc.name, &id);
        if let Err(e) = Records::write_meta(&rec_dir, &meta).and_then(|_| {
            crate::records::write_private(&rec_dir.join(STARTER), crate::local::me().as_bytes())
        }) {
            self.unlock_all(&remotes, svc, s).await;
            Self::close_all(remotes).await;
            return Err(DeployError::early(format!(
                "cannot write the record {}: {e}",
                rec_dir.display()
            )));
        }

        let size = s.batch.size(remotes.len());
        let batches = remotes.len().div_ceil(size);
        let mut answers = Vec::new();
        let mut failure: Option<String> = None;
        for (b, batch) in remotes.chunks(size).enumerate() {
            let names: Vec<&str> = batch.iter().map(|r| r.host.name.as_str()).collect();
            ctx.events.emit(Event::DriverProgress {
                service: svc.name.clone(),
                message: format!(
                    "batch {}/{batches}: release {id} to {}",
                    b + 1,
                    names.join(", ")
                ),
            });
            let results = join_all(batch.iter().map(|r| {
                let dir = Self::dir_of(s, svc, &r.host);
                let files = &files;
                let meta = &meta;
                let start_text = start_text.as_deref();
                let stop_script = stop_script.as_deref();
                async move {
                    let env = Self::env_file(ctx, meta, &r.host, s.port)?;
                    self.upload(r, &dir, &meta.id, files, &env, start_text, stop_script)
                        .await?;
                    self.activate(r, s, &dir, &meta.id).await?;
                    self.health(r, ctx, meta, &dir, svc, s).await
                }
            }))
            .await;
            let mut failed = Vec::new();
            for (r, res) in batch.iter().zip(results) {
                match res {
                    Ok(Some(a)) => answers.push(format!("{}: {a}", r.host.name)),
                    Ok(None) => answers.push(format!("{}: started", r.host.name)),
                    Err(e) => failed.push(e),
                }
            }
            if !failed.is_empty() {
                let left: Vec<&str> = remotes[((b + 1) * size).min(remotes.len())..]
                    .iter()
                    .map(|r| r.host.name.as_str())
                    .collect();
                let mut msg = format!(
                    "release {id} of service `{}` failed in batch {}/{batches}:\n{}",
                    svc.name,
                    b + 1,
                    failed.join("\n")
                );
                if !left.is_empty() {
                    msg.push_str(&format!(
                        "\nthe hosts after this batch were not touched: {}",
                        left.join(", ")
                    ));
                }
                failure = Some(msg);
                break;
            }
        }
        self.unlock_all(&remotes, svc, s).await;
        Self::close_all(remotes).await;
        let _ = std::fs::remove_file(rec_dir.join(STARTER));
        if let Some(message) = failure {
            Records::set_status(&rec_dir, "failed");
            return Err(DeployError {
                message,
                release: Some(id),
                previous,
            });
        }
        Records::set_status(&rec_dir, "healthy");
        self.records
            .set_current(&svc.name, Some(&id))
            .map_err(|e| DeployError::early(format!("cannot record the current release: {e}")))?;
        Ok(Deployed {
            release: id,
            previous,
            url: meta.url.clone(),
            port: s.port,
            artifacts,
            health: Some(answers.join("; ")),
        })
    }

    pub async fn restore(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        target: Option<&str>,
        from: Option<&str>,
    ) -> Result<String, String> {
        let s = Self::settings(svc);
        let hosts = self.targets(s);
        let target_meta = match target {
            Some(t) => Some(
                Records::read_meta(&self.records.release_dir(&svc.name, t)).ok_or_else(|| {
                    format!(
                        "release {t} of service `{}` has no record any more",
                        svc.name
                    )
                })?,
            ),
            None => None,
        };
        let remotes = self.connect_all(&hosts).await?;
        let holder = self.holder(ctx, &format!("rollback of {}", svc.name));
        if let Err(e) = self.lock_all(&remotes, svc, s, &holder).await {
            Self::close_all(remotes).await;
            return Err(e);
        }
        let results = join_all(remotes.iter().map(|r| {
            let target_meta = target_meta.as_ref();
            async move {
                let r: &Remote = r;
                let dir = Self::dir_of(s, svc, &r.host);
                let (current, running) = self.probe_host(r, s, &dir).await?;
                match target_meta {
                    None => {
                        self.deactivate(r, s, &dir).await?;
                        Ok(format!("{}: stopped", r.host.name))
                    }
                    Some(m) if current.as_deref() == Some(m.id.as_str()) && running => {
                        // Already on the target (a later batch never got the new release):
                        // confirm it answers.
                        self.health(r, ctx, m, &dir, svc, s).await?;
                        Ok(format!("{}: already on {}", r.host.name, m.id))
                    }
                    Some(m) => {
                        self.bring_back(r, ctx, svc, s, m).await?;
                        Ok(format!("{}: back on {}", r.host.name, m.id))
                    }
                }
            }
        }))
        .await;
        self.unlock_all(&remotes, svc, s).await;
        Self::close_all(remotes).await;
        let mut done: Vec<String> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for r in results {
            match r {
                Ok(d) => {
                    ctx.events.emit(Event::DriverProgress {
                        service: svc.name.clone(),
                        message: d.clone(),
                    });
                    done.push(d)
                }
                Err(e) => failed.push(e),
            }
        }
        if let Some(f) = from
            && Some(f) != target
        {
            Records::set_status(&self.records.release_dir(&svc.name, f), "rolled_back");
        }
        if !failed.is_empty() {
            return Err(format!(
                "service `{}` is not back everywhere: {}\n{}",
                svc.name,
                if done.is_empty() {
                    "no host was restored".to_string()
                } else {
                    done.join("; ")
                },
                failed.join("\n")
            ));
        }
        self.records
            .set_current(&svc.name, target)
            .map_err(|e| e.to_string())?;
        match target {
            Some(t) => {
                Records::set_status(&self.records.release_dir(&svc.name, t), "healthy");
                Ok(format!(
                    "service `{}` is back on release {t}: {}",
                    svc.name,
                    done.join("; ")
                ))
            }
            None => Ok(format!(
                "service `{}` had no earlier release: stopped {} ({})",
                svc.name,
                from.unwrap_or("it"),
                done.join("; ")
            )),
        }
    }

    /// Marks the releases a deployment replaced as retired and removes the oldest beyond
    /// `keep` from the hosts and the records (never the current one or the rollback target).
    pub async fn retire(&self, svc: &Service, events: &Events) -> Vec<String> {
        let s = Self::settings(svc);
        let all = self.all_states(&svc.name);
        let mut retired = Vec::new();
        for r in all
            .iter()
            .filter(|r| !r.current && r.meta.status == "healthy")
        {
            Records::set_status(&r.dir, "retired");
            events.emit(Event::ServiceRetired {
                service: svc.name.clone(),
                release: r.meta.id.clone(),
            });
            retired.push(r.meta.id.clone());
        }
        let all = self.all_states(&svc.name);
        let target = previous_good_in(&all).map(|r| r.meta.id);
        let excess = all.len().saturating_sub(s.keep);
        let keep: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, r)| *i >= excess || r.current || Some(&r.meta.id) == target.as_ref())
            .map(|(_, r)| r.meta.id.clone())
            .collect();
        if excess > 0 {
            let hosts = self.targets(s);
            match self.connect_all(&hosts).await {
                Ok(remotes) => {
                    let keep_list = keep.iter().map(|k| sq(k)).collect::<Vec<_>>().join(" ");
                    join_all(remotes.iter().map(|r| {
                        let dir = Self::dir_of(s, svc, &r.host);
                        let script = format!(
                            "cd {}/releases 2>/dev/null || exit 0\nfor d in *; do\n  keep=no\n  for k in {keep_list}; do [ \"$d\" = \"$k\" ] && keep=yes; done\n  [ \"$keep\" = no ] && [ -d \"$d\" ] && rm -rf -- \"$d\"\ndone\nexit 0\n",
                            sq(&dir)
                        );
                        async move {
                            let _ = r.exec(&script).await;
                        }
                    }))
                    .await;
                    Self::close_all(remotes).await;
                    let keep_refs: Vec<&str> = keep.iter().map(String::as_str).collect();
                    self.records.prune(&svc.name, s.keep, &keep_refs);
                }
                Err(e) => events.emit(Event::Warning {
                    message: format!(
                        "old releases of service `{}` stay on the hosts: {e}",
                        svc.name
                    ),
                }),
            }
        }
        retired
    }

    pub async fn stop(&self, svc: &Service) -> Vec<String> {
        let s = Self::settings(svc);
        let hosts = self.targets(s);
        let Ok(remotes) = self.connect_all(&hosts).await else {
            return Vec::new();
        };
        let script_for = |r: &Remote| {
            format!(
                "set -e\nD={}\n{}\n",
                sq(&Self::dir_of(s, svc, &r.host)),
                stop_script(s)
            )
        };
        join_all(remotes.iter().map(|r| {
            let script = script_for(r);
            async move { r.exec(&script).await }
        }))
        .await;
        Self::close_all(remotes).await;
        let mut stopped = Vec::new();
        if let Some(c) = self.records.current(&svc.name) {
            Records::set_status(&self.records.release_dir(&svc.name, &c), "stopped");
            stopped.push(c);
        }
        stopped
    }

    /// A release a dead run left `starting` is marked failed (the next deploy or rollback
    /// puts the hosts on a known release; `observe` shows what each host runs).
    pub async fn reconcile(&self, svc: &Service) -> Vec<String> {
        let mut out = Vec::new();
        for (dir, meta) in self.records.metas(&svc.name) {
            let owner = std::fs::read_to_string(dir.join(STARTER)).unwrap_or_default();
            if meta.status == "starting" && !crate::local::owner_alive(&owner) {
                let _ = std::fs::remove_file(dir.join(STARTER));
                Records::set_status(&dir, "failed");
                out.push(meta.id);
            }
        }
        out
    }

    /// What each host runs now: the records' releases with `live` from the hosts.
    pub async fn observe(&self, svc: &Service) -> Vec<ReleaseState> {
        let s = Self::settings(svc);
        let mut all = self.all_states(&svc.name);
        for r in &mut all {
            r.live = None;
        }
        let hosts = self.targets(s);
        let remotes = match self.connect_all(&hosts).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(c) = all.iter_mut().find(|r| r.current) {
                    c.live = Some(format!("unknown: {e}"));
                }
                return all;
            }
        };
        let seen = join_all(remotes.iter().map(|r| async move {
            let dir = Self::dir_of(s, svc, &r.host);
            (r.host.name.clone(), self.probe_host(r, s, &dir).await)
        }))
        .await;
        Self::close_all(remotes).await;
        let mut by_release: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (host, res) in seen {
            match res {
                Ok((Some(cur), true)) => by_release.entry(cur).or_default().push(host),
                Ok((Some(cur), false)) => by_release
                    .entry(cur)
                    .or_default()
                    .push(format!("{host} (current, not running)")),
                Ok((None, _)) => {}
                Err(e) => by_release.entry(String::new()).or_default().push(e),
            }
        }
        for r in &mut all {
            if let Some(h) = by_release.get(&r.meta.id)
                && h.iter().any(|x| !x.contains("not running"))
            {
                r.live = Some(format!("running on {}", h.join(", ")));
            }
        }
        all
    }
}

fn url_host(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// The shell that stops what serves in `$D/current` (nothing when nothing does).
fn stop_script(s: &SshService) -> String {
    match &s.activation {
        Activation::Unit { unit, sudo } => format!(
            "{}systemctl stop {} || true",
            if *sudo { "sudo -n " } else { "" },
            sq(&unit.value)
        ),
        Activation::Command { .. } => {
            let tenths = (s.stop_timeout.as_millis() / 100).max(1);
            format!(
                r#"if [ -d "$D/current" ]; then
  if [ -x "$D/current/{STOP_FILE}" ]; then
    (cd "$D/current" && set -a && . ./{ENV_FILE} && set +a && sh ./{STOP_FILE}) || true
  fi
  if [ -f "$D/current/service.pid" ]; then
    pid=$(cat "$D/current/service.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    n=0
    # Gone, or a zombie nobody has reaped yet (state Z in /proc).
    while kill -0 "$pid" 2>/dev/null && ! grep -qs '^[0-9]* (.*) Z' "/proc/$pid/stat" && [ "$n" -lt {tenths} ]; do sleep 0.1; n=$((n+1)); done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$D/current/service.pid"
  fi
fi"#
            )
        }
    }
}

/// The shell that starts the release `$D/current` points to.
fn start_script(s: &SshService) -> String {
    match &s.activation {
        Activation::Unit { unit, sudo } => format!(
            "{}systemctl restart {}",
            if *sudo { "sudo -n " } else { "" },
            sq(&unit.value)
        ),
        Activation::Command { .. } => format!(
            r#"cd "$D/current"
setsid sh -c 'set -a; . ./{ENV_FILE}; set +a; exec sh ./{START_FILE}' > service.log 2>&1 < /dev/null &
echo $! > service.pid"#
        ),
    }
}

/// A string as one single-quoted shell word.
pub(crate) fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A file to upload: where it is here, where it goes in the release, its mode and digest.
struct Upload {
    local: PathBuf,
    rel: String,
    mode: u32,
    digest: ArtifactDigest,
}

fn collect_uploads(plan_dir: &Path, s: &SshService, service: &str) -> Result<Vec<Upload>, String> {
    let mut out = Vec::new();
    for a in &s.artifacts {
        let from = plan_dir.join(&a.value);
        if !from.exists() {
            return Err(format!(
                "artifact `{}` of service `{service}` does not exist at {} (plan line {}); did the build produce it?",
                a.value,
                from.display(),
                a.span.pos.line
            ));
        }
        walk(&from, a.value.trim_end_matches('/'), &mut out)
            .map_err(|e| format!("cannot read artifact `{}`: {e}", a.value))?;
    }
    Ok(out)
}

fn walk(from: &Path, rel: &str, out: &mut Vec<Upload>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(from)?;
    if md.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(from)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            walk(&e.path(), &format!("{rel}/{name}"), out)?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(from)?;
    let digest = ArtifactDigest {
        path: rel.to_string(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: bytes.len() as u64,
    };
    out.push(Upload {
        local: from.to_path_buf(),
        rel: rel.to_string(),
        mode: md.permissions().mode() & 0o755,
        digest,
    });
    Ok(())
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self, host: &Host, what: &str) -> Result<(), String> {
        if self.status == 0 {
            return Ok(());
        }
        let why = self.stderr.trim();
        Err(format!(
            "host {}: could not {what} (exit {}){}",
            host.name,
            self.status,
            if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.lines().last().unwrap_or(why))
            }
        ))
    }
}

/// One host's master connection.
struct Remote {
    host: Host,
    session: Session,
}

impl Remote {
    /// Runs a script with `sh -s`, the script on stdin.
    async fn exec(&self, script: &str) -> Result<Out, String> {
        self.run("sh -s", script.as_bytes()).await
    }

    /// Writes `bytes` to `path` on the host (a temporary name, then a rename).
    async fn put(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        let tmp = format!("{path}.stagegate-tmp");
        let cmd = format!(
            "umask 022 && mkdir -p {p} && (umask 077 && cat > {t}) && chmod {mode:o} {t} && mv -f {t} {f}",
            p = sq(parent),
            t = sq(&tmp),
            f = sq(path)
        );
        self.run(&format!("sh -c {}", sq(&cmd)), bytes)
            .await?
            .ok(&self.host, &format!("write {path}"))
    }

    async fn run(&self, command: &str, stdin: &[u8]) -> Result<Out, String> {
        let mut cmd = self.session.raw_command(command);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .await
            .map_err(|e| format!("host {}: {}", self.host.name, chain(&e)))?;
        if let Some(mut w) = child.stdin().take() {
            w.write_all(stdin).await.map_err(|e| {
                format!(
                    "host {}: cannot send to the remote shell: {e}",
                    self.host.name
                )
            })?;
            let _ = w.shutdown().await;
            drop(w);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("host {}: {}", self.host.name, chain(&e)))?;
        Ok(Out {
            status: out.status.code().unwrap_or(255),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn lock(&self, dir: String, holder: String) -> Result<(), String> {
        let script = format!(
            "D={d}\nmkdir -p \"$D\" || exit 3\nif mkdir \"$D/{LOCK_DIR}\" 2>/dev/null; then\n  printf '%s\\n' {h} > \"$D/{LOCK_DIR}/holder\"\n  exit 0\nfi\ncat \"$D/{LOCK_DIR}/holder\" 2>/dev/null\nexit 75\n",
            d = sq(&dir),
            h = sq(&holder)
        );
        let out = self.exec(&script).await?;
        match out.status {
            0 => Ok(()),
            75 => Err(format!(
                "host {} is locked by {}\n  wait for that run to finish; if it died, remove the lock: ssh {} rm -r {dir}/{LOCK_DIR}",
                self.host.name,
                out.stdout.trim(),
                self.host.address
            )),
            _ => out.ok(&self.host, &format!("create {dir}")),
        }
    }

    async fn unlock(&self, dir: &str) -> Result<(), String> {
        self.exec(&format!("rm -rf {}/{LOCK_DIR}", sq(dir)))
            .await
            .map(|_| ())
    }

    async fn close(self) {
        let _ = self.session.close().await;
    }
}

/// An error and its causes, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !t.is_empty() && !out.contains(&t) {
            out.push_str(": ");
            out.push_str(t.trim());
        }
        src = s.source();
    }
    out
}

/// Says what a failed connection means and what to do.
fn connect_error(h: &Host, e: &openssh::Error, took: Duration) -> String {
    let text = chain(e);
    let lower = text.to_lowercase();
    let target = format!(
        "{}{}:{}",
        h.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default(),
        h.address,
        h.port
    );
    let (what, help) = if lower.contains("host key verification failed")
        || lower.contains("no ed25519 host key is known")
        || lower.contains("host key is known")
        || lower.contains("remote host identification has changed")
    {
        (
            "its host key is not known (or has changed)",
            format!(
                "check the key and add it: ssh-keyscan -p {} {} >> {}; or set `known_hosts:` for the host",
                h.port,
                h.address,
                h.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")
            ),
        )
    } else if lower.contains("permission denied") || lower.contains("too many authentication") {
        (
            "authentication failed",
            "check the host's `user` and `identity` (the key must be in the user's authorized_keys), or the ssh agent".to_string(),
        )
    } else if lower.contains("connection refused") {
        (
            "the connection was refused",
            "is sshd running on that port? check the host's `address` and `port`".to_string(),
        )
    } else if lower.contains("timed out")
        || lower.contains("no route")
        || lower.contains("unreachable")
    {
        (
            "the host is unreachable",
            "check the address, the network and `connect_timeout`".to_string(),
        )
    } else if lower.contains("could not resolve") || lower.contains("name or service not known") {
        (
            "its name does not resolve",
            "check the host's `address`".to_string(),
        )
    } else {
        (
            "the connection failed",
            "try `ssh -v` with the same user, port and key".to_string(),
        )
    };
    format!(
        "host {} ({target}): {what} after {:.1}s: {}\n  {help}",
        h.name,
        took.as_secs_f64(),
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
    )
}

impl ServiceDriver for SshDriver {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn deploy<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
    ) -> DriverFuture<'a, Result<Deployed, DeployError>> {
        Box::pin(SshDriver::deploy(self, svc, ctx))
    }

    fn restore<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
        target: Option<&'a str>,
        from: Option<&'a str>,
    ) -> DriverFuture<'a, Result<String, String>> {
        Box::pin(SshDriver::restore(self, svc, ctx, target, from))
    }

    fn retire<'a>(&'a self, svc: &'a Service, events: &'a Events) -> DriverFuture<'a, Vec<String>> {
        Box::pin(SshDriver::retire(self, svc, events))
    }

    fn stop<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(SshDriver::stop(self, svc))
    }

    fn reconcile<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(SshDriver::reconcile(self, svc))
    }

    fn observe<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<ReleaseState>> {
        Box::pin(SshDriver::observe(self, svc))
    }

    fn current(&self, service: &str) -> Option<String> {
        self.records.current(service)
    }

    fn releases(&self, service: &str) -> Vec<ReleaseState> {
        self.all_states(service)
    }

    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        find_in(&self.all_states(service), wanted)
    }

    fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        previous_good_in(&self.all_states(service))
    }
}
