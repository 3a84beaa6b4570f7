//! The `docker` driver: one container per release on the Docker engine, like the runbook's
//! `docker build`, `docker stop`, `docker run -d --name ... -p ... -e ...`, made safe.
//!
//! A deploy builds (or takes) the image, records its id and repo digests, and starts the
//! release's container `NAME-RELEASE`. Without a fixed `host_port` the container publishes
//! its port at a free loopback port and starts beside the old one; with one, the old
//! container is stopped first. The new container must be running, pass the image's own
//! HEALTHCHECK when it has one, and answer the service's health check; then it serves.
//! Old containers are stopped, not removed (the newest `keep` stay), so a rollback is a
//! `docker start` of the previous container, or a new container from the recorded image
//! id when it is gone.
//!
//! Secrets reach the container through an env file (0600, deleted as soon as the
//! container is created), never docker's argv; the records hold them sealed.
//!
//! [`compose`] is the `compose` driver; [`cli`] runs the programs.

pub(crate) mod cli;
pub mod compose;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stagegate_plan::{DockerService, Driver, HealthTarget, Scope, Scrubber, Service};
use tokio_util::sync::CancellationToken;

use crate::driver::{DriverFuture, ServiceDriver};
use crate::event::{Event, Events};
use crate::health::{http_client, wait_healthy};
use crate::local::{
    DeployError, Deployed, DriverCtx, ReleaseMeta, ReleaseState, me, sanitize, seal_run, unseal,
    unsealed_probe,
};
use crate::records::{Records, private_dir};
use cli::{Call, ContainerInfo, docker};

/// Who is starting a release (`PID START_TIME`), until its health is settled.
const STARTER: &str = "starter";
/// The label every container stagegate starts carries: its release id.
pub const RELEASE_LABEL: &str = "dev.stagegate.release";

/// What the record of a docker or compose release says about what it ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DockerRecord {
    /// The image as the plan named it (`erp-hub:1.3.0`).
    pub image: String,
    /// The image id (`sha256:...`): what a re-created container runs.
    pub image_id: String,
    /// The registry digests of the image, when it has been pushed or pulled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    pub container: String,
    #[serde(default)]
    pub container_id: String,
    /// The port inside the container, and where it is published.
    pub port: u16,
    pub host_port: u16,
    pub fixed_port: bool,
    /// The host address the port is published on.
    pub bind: String,
    /// The arguments after the image, secrets sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The image has a HEALTHCHECK, waited on before stagegate's own check.
    pub healthcheck: bool,
    /// `docker run --init`.
    #[serde(default)]
    pub init: bool,
}

pub struct DockerDriver {
    pub records: Records,
    pub plan_dir: PathBuf,
    pub project: String,
    pub environment: String,
}

fn settings(svc: &Service) -> &DockerService {
    match &svc.driver {
        Driver::Docker(d) => d,
        // The dispatcher hands this driver only `driver: docker` services.
        _ => unreachable!("the docker driver runs only `driver: docker` services"),
    }
}

/// A name Docker accepts, made of `s`.
fn docker_name(s: &str) -> String {
    let s = sanitize(s);
    match s.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => s,
        _ => format!("x{s}"),
    }
}

/// Why a deploy failed, and whether the engine was changed before it.
struct Failed {
    message: String,
    changed: bool,
}

impl DockerDriver {
    fn record(&self, service: &str, id: &str) -> Option<(PathBuf, ReleaseMeta)> {
        self.records.record(service, id)
    }

    fn base_name(&self, svc: &Service) -> String {
        match &settings(svc).container {
            Some(c) => c.value.clone(),
            None => docker_name(&format!(
                "{}-{}-{}",
                self.project, self.environment, svc.name
            )),
        }
    }

    /// `docker run -d` of a release's container from its record; the env file is removed
    /// as soon as docker has read it.
    async fn create(
        &self,
        dir: &std::path::Path,
        rec: &DockerRecord,
        env: &BTreeMap<String, String>,
        args: &[String],
        ctx: &DriverCtx<'_>,
    ) -> Result<String, String> {
        let env_file = cli::write_env_file(&dir.join("container.env"), env)?;
        let mut a: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            rec.container.clone(),
            "--label".into(),
            format!("{RELEASE_LABEL}={}", dir_id(dir)),
            "--env-file".into(),
            env_file.display().to_string(),
        ];
        if rec.port != 0 {
            a.push("-p".into());
            a.push(if rec.fixed_port {
                format!("{}:{}:{}", rec.bind, rec.host_port, rec.port)
            } else {
                format!("127.0.0.1::{}", rec.port)
            });
        }
        if rec.init {
            a.push("--init".into());
        }
        if let Some(n) = &rec.network {
            a.push("--network".into());
            a.push(n.clone());
        }
        for v in &rec.volumes {
            a.push("-v".into());
            a.push(v.clone());
        }
        a.push(rec.image_id.clone());
        a.extend(args.iter().cloned());
        let r = docker(
            &a,
            &Call {
                log: ctx.log.as_deref(),
                scrubber: Some(ctx.scrubber),
                cancel: Some(ctx.cancel),
                timeout: Some(Duration::from_secs(120)),
                ..Default::default()
            },
        )
        .await;
        let _ = std::fs::remove_file(&env_file);
        r.map(|out| out.trim().to_string())
    }

    /// Waits until the container runs and, when the image has a HEALTHCHECK, passes it;
    /// returns the container as it is then.
    async fn wait_container(
        &self,
        name: &str,
        timeout: Duration,
        scrubber: &Scrubber,
        cancel: &CancellationToken,
    ) -> Result<ContainerInfo, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = cli::container(name).await?;
            let Some(c) = c else {
                return Err(format!("container {name} is gone"));
            };
            let s = &c.state;
            if !s.running && matches!(s.status.as_str(), "exited" | "dead") {
                return Err(format!(
                    "container {name} {}{}",
                    c.describe(),
                    cli::logs_tail(name, scrubber).await
                ));
            }
            match (&s.health, s.running) {
                (Some(h), true) if h.status == "healthy" => return Ok(c),
                (Some(h), true) if h.status == "unhealthy" => {
                    return Err(format!(
                        "container {name} is unhealthy by its image's HEALTHCHECK{}",
                        c.health_output()
                            .map(|o| format!(": {}", scrubber.scrub(&o)))
                            .unwrap_or_default()
                    ));
                }
                (None, true) => return Ok(c),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "container {name} is still {} after {}",
                    c.describe(),
                    stagegate_plan::yaml::fmt_duration(timeout)
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = cancel.cancelled() => return Err(format!("cancelled while container {name} started")),
            }
        }
    }

    async fn stop_container(&self, name: &str, timeout: Duration) -> Result<bool, String> {
        let Some(c) = cli::container(name).await? else {
            return Ok(false);
        };
        if !c.state.running && c.state.status != "restarting" {
            return Ok(false);
        }
        docker(
            &[
                "stop".into(),
                "-t".into(),
                timeout.as_secs().max(1).to_string(),
                name.into(),
            ],
            &Call {
                timeout: Some(timeout + Duration::from_secs(30)),
                ..Default::default()
            },
        )
        .await?;
        Ok(true)
    }

    /// Runs the container's checks and the service's health check; updates the record's
    /// port and address from what docker published.
    async fn settle(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        dir: &std::path::Path,
        meta: &mut ReleaseMeta,
    ) -> Result<Option<String>, String> {
        let d = settings(svc);
        let rec = meta.docker.clone().unwrap_or_default();
        let started = Instant::now();
        let c = self
            .wait_container(&rec.container, d.timeout, ctx.scrubber, ctx.cancel)
            .await?;
        if rec.port != 0 {
            let host_port = c.host_port(rec.port).unwrap_or(rec.host_port);
            let host = if rec.fixed_port && rec.bind != "0.0.0.0" {
                rec.bind.clone()
            } else {
                "127.0.0.1".into()
            };
            meta.port = host_port;
            meta.url = format!("http://{host}:{host_port}");
            if let Some(r) = meta.docker.as_mut() {
                r.host_port = host_port;
                r.container_id = c.id.clone();
            }
            let _ = Records::write_meta(dir, meta);
        }
        let ran = format!("container {}", rec.container);
        match release_health(svc, ctx, meta, &ran, started).await {
            Ok(answer) => Ok(Some(
                answer.unwrap_or_else(|| format!("{ran} {}", c.describe())),
            )),
            Err(e) => {
                // A container that exits just after it was seen running fails the health
                // check by a refused connection: say that it exited, as the wait above does.
                let exited = match cli::container(&rec.container).await {
                    Ok(Some(c)) if !c.state.running => {
                        format!("container {} {}; ", rec.container, c.describe())
                    }
                    _ => String::new(),
                };
                Err(format!(
                    "{exited}{e}{}",
                    cli::logs_tail(&rec.container, ctx.scrubber).await
                ))
            }
        }
    }

    async fn deploy_impl(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
    ) -> Result<Deployed, DeployError> {
        let early = DeployError::early;
        let d = settings(svc);
        let scope = ctx.scope;
        let name = &svc.name;
        self.reconcile_records(name).await;
        let previous = self.records.current(name);
        let image = scope
            .render(&d.image.value)
            .map(|s| s.trim().to_string())
            .map_err(|e| early(format!("`image` of service `{name}`: {e}")))?;
        if image.is_empty() || image.starts_with('-') || image.contains(char::is_whitespace) {
            return Err(early(format!(
                "`image` of service `{name}` renders to `{}`, which is not an image name",
                scope.seal(&image)
            )));
        }
        let call = Call {
            cwd: Some(&self.plan_dir),
            log: ctx.log.as_deref(),
            scrubber: Some(ctx.scrubber),
            cancel: Some(ctx.cancel),
            ..Default::default()
        };
        if let Some(b) = &d.build {
            ctx.events.emit(Event::DriverProgress {
                service: name.clone(),
                message: format!("docker build -t {image} {}", b.context.value),
            });
            let mut a: Vec<String> = vec!["build".into(), "-q".into(), "-t".into(), image.clone()];
            if let Some(f) = &b.dockerfile {
                a.push("-f".into());
                a.push(self.plan_dir.join(&f.value).display().to_string());
            }
            a.push(self.plan_dir.join(&b.context.value).display().to_string());
            docker(&a, &call)
                .await
                .map_err(|e| early(format!("the image of service `{name}`: {e}")))?;
        }
        let info = match cli::image(&image).await.map_err(early)? {
            Some(i) => i,
            None => {
                ctx.events.emit(Event::DriverProgress {
                    service: name.clone(),
                    message: format!("docker pull {image}"),
                });
                docker(&["pull".into(), image.clone()], &call).await.map_err(|e| {
                    early(format!(
                        "image `{image}` of service `{name}` is not on this Docker engine and could not be pulled: {e}\n  build it with `build: .`, or load it (`docker load`) before the deploy"
                    ))
                })?;
                cli::image(&image).await.map_err(early)?.ok_or_else(|| {
                    early(format!(
                        "image `{image}` is still not on the engine after a pull"
                    ))
                })?
            }
        };

        let id = self
            .records
            .new_id(name, &scope.release.version, ctx.deployment_id);
        let dir = self.records.release_dir(name, &id);
        let sealed = seal_run(svc, ctx, None, &d.env).map_err(early)?;
        let mut args = Vec::new();
        for a in &d.args {
            let v = scope
                .render(&a.value)
                .map_err(|e| early(format!("`args` of service `{name}`: {e}")))?;
            args.push(v);
        }
        let rec = DockerRecord {
            image: image.clone(),
            image_id: info.id.clone(),
            repo_digests: info.repo_digests.clone().unwrap_or_default(),
            container: docker_name(&format!("{}-{id}", self.base_name(svc))),
            container_id: String::new(),
            port: d.port.unwrap_or(0),
            host_port: d.host_port.unwrap_or(0),
            fixed_port: d.host_port.is_some(),
            bind: d
                .bind
                .as_ref()
                .map(|b| b.value.clone())
                .unwrap_or_else(|| "0.0.0.0".into()),
            args: args.iter().map(|a| scope.seal(a)).collect(),
            network: d.network.as_ref().map(|n| n.value.clone()),
            volumes: d.volumes.iter().map(|v| v.value.clone()).collect(),
            healthcheck: info.has_healthcheck(),
            init: d.init,
        };
        let mut meta = ReleaseMeta {
            id: id.clone(),
            service: name.clone(),
            environment: scope.environment.clone(),
            version: scope.release.version.clone(),
            sha: scope.release.sha.clone(),
            deployment_id: ctx.deployment_id,
            created_at: crate::now_ms(),
            port: rec.host_port,
            url: String::new(),
            command: scope.seal(&format!(
                "docker run -d --name {} {}{}",
                rec.container,
                image,
                args.iter().map(|a| format!(" {a}")).collect::<String>()
            )),
            artifacts: Vec::new(),
            status: "starting".into(),
            sealed,
            hosts: Vec::new(),
            kubernetes: None,
            docker: Some(rec.clone()),
            compose: None,
        };
        let write = || -> std::io::Result<()> {
            private_dir(&dir)?;
            std::fs::write(dir.join(STARTER), me())?;
            Records::write_meta(&dir, &meta)
        };
        write().map_err(|e| early(format!("cannot write {}: {e}", dir.display())))?;
        ctx.events.emit(Event::ServiceStarting {
            service: name.clone(),
            release: id.clone(),
            port: rec.port,
            dir: format!("container {}", rec.container),
        });

        let outcome = async {
            let mut changed = false;
            if rec.fixed_port
                && let Some(prev) = previous.as_ref().and_then(|p| self.record(name, p))
                && let Some(pr) = &prev.1.docker
            {
                ctx.events.emit(Event::DriverProgress {
                    service: name.clone(),
                    message: format!(
                        "stopping container {} to free port {}",
                        pr.container, rec.host_port
                    ),
                });
                changed = self
                    .stop_container(&pr.container, d.stop_timeout)
                    .await
                    .map_err(|message| Failed {
                        message,
                        changed: false,
                    })?;
            }
            let env = unseal_env(scope, &meta.sealed.env)
                .map_err(|message| Failed { message, changed })?;
            self.create(&dir, &rec, &env, &args, ctx)
                .await
                .map_err(|message| Failed { message, changed })?;
            self.settle(svc, ctx, &dir, &mut meta)
                .await
                .map_err(|message| Failed {
                    message,
                    changed: true,
                })
        }
        .await;
        let _ = std::fs::remove_file(dir.join(STARTER));
        match outcome {
            Ok(health) => {
                meta.status = "healthy".into();
                let _ = Records::write_meta(&dir, &meta);
                self.records
                    .set_current(name, Some(&id))
                    .map_err(|e| early(format!("cannot record the current release: {e}")))?;
                Ok(Deployed {
                    release: id,
                    previous,
                    url: meta.url.clone(),
                    port: meta.port,
                    artifacts: image_artifacts(
                        meta.docker
                            .iter()
                            .map(|d| (d.image.as_str(), d.image_id.as_str())),
                    ),
                    health,
                })
            }
            Err(why) => {
                // The new container stays (stopped) for `docker logs`.
                let _ = self.stop_container(&rec.container, d.stop_timeout).await;
                meta.status = "failed".into();
                let _ = Records::write_meta(&dir, &meta);
                let message = ctx.scrubber.scrub(&format!(
                    "release {id} of service `{name}`: {}",
                    why.message
                ));
                if !why.changed {
                    return Err(early(message));
                }
                Err(DeployError {
                    message,
                    release: Some(id),
                    previous,
                })
            }
        }
    }

    async fn restore_impl(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        target: Option<&str>,
        from: Option<&str>,
    ) -> Result<String, String> {
        let d = settings(svc);
        let name = &svc.name;
        let from_rec = from.and_then(|f| self.record(name, f));
        let stop_from = async |what: &mut Vec<String>| -> Result<(), String> {
            if let Some((fdir, fmeta)) = &from_rec
                && Some(fmeta.id.as_str()) != target
            {
                if let Some(fr) = &fmeta.docker
                    && self.stop_container(&fr.container, d.stop_timeout).await?
                {
                    what.push(format!("stopped container {}", fr.container));
                }
                Records::set_status(fdir, "rolled_back");
            }
            Ok(())
        };
        let mut what = Vec::new();
        let Some(target_id) = target else {
            stop_from(&mut what).await?;
            self.records
                .set_current(name, None)
                .map_err(|e| e.to_string())?;
            return Ok(format!(
                "service `{name}` had no earlier release: {}",
                if what.is_empty() {
                    "nothing was running".to_string()
                } else {
                    what.join(", ")
                }
            ));
        };
        let (dir, mut meta) = self.record(name, target_id).ok_or_else(|| {
            format!("release {target_id} of service `{name}` is not on record any more")
        })?;
        let rec = meta.docker.clone().ok_or_else(|| {
            format!("release {target_id} of service `{name}` is not a docker release")
        })?;
        if rec.fixed_port {
            stop_from(&mut what).await?;
        }
        let how = match cli::container(&rec.container).await? {
            Some(c) if c.state.running => format!("container {} was still running", rec.container),
            Some(_) => {
                docker(&["start".into(), rec.container.clone()], &Call::default()).await?;
                format!("started container {} again", rec.container)
            }
            None => {
                let env = unseal_env(ctx.scope, &meta.sealed.env)?;
                let args = rec
                    .args
                    .iter()
                    .map(|a| unseal(ctx.scope, a))
                    .collect::<Result<Vec<_>, _>>()?;
                self.create(&dir, &rec, &env, &args, ctx).await?;
                format!(
                    "container {} was gone: made it again from image {}",
                    rec.container, rec.image_id
                )
            }
        };
        let health = self.settle(svc, ctx, &dir, &mut meta).await.map_err(|e| {
            format!("release {target_id} of service `{name}` did not come back: {e}")
        })?;
        if !rec.fixed_port {
            stop_from(&mut what).await?;
        }
        meta.status = "healthy".into();
        let _ = Records::write_meta(&dir, &meta);
        self.records
            .set_current(name, Some(target_id))
            .map_err(|e| e.to_string())?;
        what.insert(0, how);
        Ok(format!(
            "service `{name}` is back on release {target_id} ({}): {}{}",
            rec.image,
            what.join(", "),
            health.map(|h| format!("; {h}")).unwrap_or_default()
        ))
    }

    /// A release a dead run left starting is marked `failed` and its container stopped.
    async fn reconcile_records(&self, service: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (dir, meta, was_starting) in self.records.abandoned(service, STARTER) {
            let _ = std::fs::remove_file(dir.join("container.env"));
            if was_starting && let Some(r) = &meta.docker {
                let _ = self
                    .stop_container(&r.container, Duration::from_secs(10))
                    .await;
            }
            out.push(meta.id);
        }
        out
    }

    fn states(&self, service: &str, live: &BTreeMap<String, String>) -> Vec<ReleaseState> {
        let current = self.records.current(service);
        self.records
            .metas(service)
            .into_iter()
            .map(|(dir, meta)| {
                let c = current.as_deref() == Some(meta.id.as_str());
                let l = live.get(&meta.id).cloned();
                ReleaseState::remote(meta, dir, c, l)
            })
            .collect()
    }
}

/// The service's health check of a release that runs (`what`: `container NAME`), with its
/// `service_healthy` event; `None` when the service has no health check.
pub(crate) async fn release_health(
    svc: &Service,
    ctx: &DriverCtx<'_>,
    meta: &ReleaseMeta,
    what: &str,
    started: Instant,
) -> Result<Option<String>, String> {
    let probe = unsealed_probe(ctx.scope, meta)?;
    let (url, answer) = match &probe {
        None => (what.to_string(), None),
        Some(probe) => match wait_healthy(&http_client(), probe, &|| None, ctx.cancel).await {
            Ok(h) => (
                probe.url.clone(),
                Some(format!("{} ({})", h.answer, probe.url)),
            ),
            Err(e) => return Err(format!("health check {} failed: {e}", probe.url)),
        },
    };
    ctx.events.emit(Event::ServiceHealthy {
        service: svc.name.clone(),
        release: meta.id.clone(),
        url,
        waited_ms: started.elapsed().as_millis() as u64,
    });
    Ok(answer)
}

/// The release id a record directory belongs to.
fn dir_id(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn unseal_env(
    scope: &Scope,
    sealed: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    sealed
        .iter()
        .map(|(k, v)| {
            unseal(scope, v)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("env `{k}`: {e}"))
        })
        .collect()
}

/// The service's health URL, when the plan gives a full one (shown as the address).
pub(crate) fn health_url(svc: &Service, scope: &Scope) -> String {
    match svc.health.as_ref().map(|h| &h.target) {
        Some(HealthTarget::Url(u)) => scope.render_for_display(&u.value),
        _ => String::new(),
    }
}

impl ServiceDriver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn deploy<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
    ) -> DriverFuture<'a, Result<Deployed, DeployError>> {
        Box::pin(self.deploy_impl(svc, ctx))
    }

    fn restore<'a>(
        &'a self,
        svc: &'a Service,
        ctx: &'a DriverCtx<'a>,
        target: Option<&'a str>,
        from: Option<&'a str>,
    ) -> DriverFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.restore_impl(svc, ctx, target, from)
                .await
                .map_err(|e| ctx.scrubber.scrub(&e))
        })
    }

    fn retire<'a>(&'a self, svc: &'a Service, events: &'a Events) -> DriverFuture<'a, Vec<String>> {
        Box::pin(async move {
            let d = settings(svc);
            let current = self.records.current(&svc.name);
            let mut stopped = Vec::new();
            for (dir, meta) in self.records.metas(&svc.name) {
                if Some(&meta.id) == current.as_ref() {
                    continue;
                }
                if let Some(r) = &meta.docker
                    && let Ok(true) = self.stop_container(&r.container, d.stop_timeout).await
                {
                    events.emit(Event::ServiceRetired {
                        service: svc.name.clone(),
                        release: meta.id.clone(),
                    });
                    stopped.push(meta.id.clone());
                }
                if meta.status == "healthy" {
                    Records::set_status(&dir, "retired");
                }
            }
            // Containers beyond `keep` are removed with their records; their images stay.
            let all = self.records.metas(&svc.name);
            let excess = all.len().saturating_sub(d.keep);
            for (_, meta) in all.iter().take(excess) {
                if Some(&meta.id) != current.as_ref()
                    && let Some(r) = &meta.docker
                {
                    let _ = docker(
                        &["rm".into(), "-f".into(), r.container.clone()],
                        &Call::default(),
                    )
                    .await;
                }
            }
            self.records.prune(&svc.name, d.keep, &[]);
            stopped
        })
    }

    fn stop<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(async move {
            let d = settings(svc);
            let mut out = Vec::new();
            for (dir, meta) in self.records.metas(&svc.name) {
                if let Some(r) = &meta.docker
                    && let Ok(true) = self.stop_container(&r.container, d.stop_timeout).await
                {
                    if meta.status == "healthy" {
                        Records::set_status(&dir, "stopped");
                    }
                    out.push(meta.id);
                }
            }
            out
        })
    }

    fn reconcile<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(self.reconcile_records(&svc.name))
    }

    fn observe<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<ReleaseState>> {
        Box::pin(async move {
            let metas = self.records.metas(&svc.name);
            let names: Vec<String> = metas
                .iter()
                .filter_map(|(_, m)| m.docker.as_ref().map(|r| r.container.clone()))
                .collect();
            let mut live = BTreeMap::new();
            match cli::containers(&names).await {
                Ok(found) => {
                    for c in found {
                        if !c.state.running {
                            continue;
                        }
                        if let Some((_, m)) = metas.iter().find(|(_, m)| {
                            m.docker.as_ref().is_some_and(|r| r.container == c.name())
                        }) {
                            let at = m
                                .docker
                                .as_ref()
                                .filter(|r| r.port != 0)
                                .and_then(|r| c.host_port(r.port))
                                .map(|p| format!(", port {p}"))
                                .unwrap_or_default();
                            live.insert(
                                m.id.clone(),
                                format!("container {} {}{at}", c.name(), c.describe()),
                            );
                        }
                    }
                }
                Err(e) => {
                    if let Some(c) = self.records.current(&svc.name) {
                        live.insert(c, format!("unknown: {e}"));
                    }
                }
            }
            self.states(&svc.name, &live)
        })
    }

    fn current(&self, service: &str) -> Option<String> {
        self.records.current(service)
    }

    fn releases(&self, service: &str) -> Vec<ReleaseState> {
        self.states(service, &BTreeMap::new())
    }

    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        crate::records::find_in(&self.releases(service), wanted)
    }

    fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        crate::records::previous_good_in(&self.releases(service))
    }
}

/// Images as a release's artifacts: `image NAME` with the image id's hex as its sha256, so
/// a promotion can check that it runs the very image that passed (a rebuilt tag differs).
pub(crate) fn image_artifacts<'a>(
    images: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<crate::local::ArtifactDigest> {
    images
        .map(|(name, id)| crate::local::ArtifactDigest {
            path: format!("image {name}"),
            sha256: id.strip_prefix("sha256:").unwrap_or(id).to_string(),
            bytes: 0,
        })
        .collect()
}
