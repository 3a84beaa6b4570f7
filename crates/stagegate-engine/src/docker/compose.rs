//! The `compose` driver: a service that is a Compose project, one project per environment
//! (`PROJECT-ENVIRONMENT` unless the plan names it).
//!
//! A release is the plan's compose files plus an override file that stagegate writes into
//! the release's record with the images the plan's `images:` name for this release (tags by
//! version or commit SHA). A deploy runs `config -q` (nothing changes when the files are
//! wrong), then `up -d --remove-orphans`, then waits until every container of the project
//! runs and passes its image's HEALTHCHECK (compose v1 has no `--wait`, so stagegate watches
//! the containers itself), then runs the service's health check. The image id every
//! container runs is recorded. Rollback is `up -d` with the previous release's override:
//! the previous tags, on the compose files as they are now. `stop` is `compose stop`.
//!
//! The plan's `env:` reaches compose as its process environment (for `${VAR}` in the
//! files), never its argv; the records hold it sealed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stagegate_plan::{ComposeService, Driver, Service};

use super::cli::{self, Call, ContainerInfo, compose, docker};
use super::{health_url, release_health, unseal_env};
use crate::driver::{DriverFuture, ServiceDriver};
use crate::event::{Event, Events};
use crate::local::{DeployError, Deployed, DriverCtx, ReleaseMeta, ReleaseState, me, seal_run};
use crate::records::{Records, private_dir, write_private};

const OVERRIDE: &str = "compose.images.yml";
const STARTER: &str = "starter";
const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComposeRecord {
    pub project: String,
    /// The compose files, relative to the plan, with the sha256 each had.
    pub files: Vec<(String, String)>,
    /// Compose service -> image, as this release asked.
    pub images: BTreeMap<String, String>,
    /// What ran when the release settled.
    #[serde(default)]
    pub containers: Vec<ComposeContainer>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComposeContainer {
    pub service: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
}

pub struct ComposeDriver {
    pub records: Records,
    pub plan_dir: PathBuf,
    pub project: String,
    pub environment: String,
}

fn settings(svc: &Service) -> &ComposeService {
    match &svc.driver {
        Driver::Compose(c) => c,
        // The dispatcher hands this driver only `driver: compose` services.
        _ => unreachable!("the compose driver runs only `driver: compose` services"),
    }
}

/// A Compose project name: lowercase letters, digits, `-` and `_`.
fn project_name(s: &str) -> String {
    let s: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_start_matches(['-', '_']).to_string()
}

struct Failed {
    message: String,
    changed: bool,
}

impl ComposeDriver {
    fn record(&self, service: &str, id: &str) -> Option<(PathBuf, ReleaseMeta)> {
        self.records.record(service, id)
    }

    /// `-p PROJECT -f FILE... -f OVERRIDE`.
    fn base_args(&self, rec: &ComposeRecord, dir: &Path) -> Vec<String> {
        let mut a = vec!["-p".to_string(), rec.project.clone()];
        for (f, _) in &rec.files {
            a.push("-f".into());
            a.push(self.plan_dir.join(f).display().to_string());
        }
        if !rec.images.is_empty() {
            a.push("-f".into());
            a.push(dir.join(OVERRIDE).display().to_string());
        }
        a
    }

    /// The containers of the project, as docker sees them (one-off `run` containers left
    /// out).
    async fn project_containers(&self, project: &str) -> Result<Vec<ContainerInfo>, String> {
        let ids = docker(
            &[
                "ps".into(),
                "-aq".into(),
                "--filter".into(),
                format!("label={PROJECT_LABEL}={project}"),
            ],
            &Call::default(),
        )
        .await?;
        let ids: Vec<String> = ids.split_whitespace().map(String::from).collect();
        Ok(cli::containers(&ids)
            .await?
            .into_iter()
            .filter(|c| c.label(ONEOFF_LABEL) != Some("True"))
            .collect())
    }

    /// Waits until every container of the project (or of `only`) runs and, when its image
    /// has a HEALTHCHECK, is healthy.
    async fn wait_project(
        &self,
        project: &str,
        only: &[String],
        timeout: Duration,
        ctx: &DriverCtx<'_>,
    ) -> Result<Vec<ContainerInfo>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let all: Vec<ContainerInfo> = self
                .project_containers(project)
                .await?
                .into_iter()
                .filter(|c| {
                    only.is_empty()
                        || only
                            .iter()
                            .any(|s| Some(s.as_str()) == c.label(SERVICE_LABEL))
                })
                .collect();
            if all.is_empty() {
                return Err(format!("project {project} has no containers after `up`"));
            }
            let mut waiting = Vec::new();
            for c in &all {
                let s = &c.state;
                let svc = c.label(SERVICE_LABEL).unwrap_or(c.name()).to_string();
                if !s.running && matches!(s.status.as_str(), "exited" | "dead") {
                    return Err(format!(
                        "compose service `{svc}` (container {}) {}{}",
                        c.name(),
                        c.describe(),
                        cli::logs_tail(c.name(), ctx.scrubber).await
                    ));
                }
                match &s.health {
                    Some(h) if h.status == "unhealthy" => {
                        return Err(format!(
                            "compose service `{svc}` (container {}) is unhealthy by its image's HEALTHCHECK{}",
                            c.name(),
                            c.health_output()
                                .map(|o| format!(": {}", ctx.scrubber.scrub(&o)))
                                .unwrap_or_default()
                        ));
                    }
                    Some(h) if s.running && h.status == "healthy" => {}
                    None if s.running => {}
                    _ => waiting.push(format!("`{svc}` {}", c.describe())),
                }
            }
            if waiting.is_empty() {
                return Ok(all);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {} still waiting for {}",
                    stagegate_plan::yaml::fmt_duration(timeout),
                    waiting.join(", ")
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = ctx.cancel.cancelled() => return Err("cancelled while the containers started".into()),
            }
        }
    }

    /// `up -d` of a release, then the waits and the health check.
    async fn up(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        dir: &Path,
        meta: &mut ReleaseMeta,
    ) -> Result<Option<String>, Failed> {
        let c = settings(svc);
        let rec = meta.compose.clone().unwrap_or_default();
        let env = unseal_env(ctx.scope, &meta.sealed.env).map_err(|message| Failed {
            message,
            changed: false,
        })?;
        let call = Call {
            cwd: Some(&self.plan_dir),
            env: env.into_iter().collect(),
            log: ctx.log.as_deref(),
            scrubber: Some(ctx.scrubber),
            cancel: Some(ctx.cancel),
            timeout: Some(c.timeout + Duration::from_secs(300)),
        };
        let mut a = self.base_args(&rec, dir);
        a.extend(["config".to_string(), "-q".to_string()]);
        compose(&a, &call).await.map_err(|message| Failed {
            message: format!("the compose files do not load: {message}"),
            changed: false,
        })?;
        let mut a = self.base_args(&rec, dir);
        a.extend(["up", "-d", "--remove-orphans"].map(String::from));
        let started = Instant::now();
        compose(&a, &call).await.map_err(|message| Failed {
            message,
            changed: true,
        })?;
        let only: Vec<String> = c.services.iter().map(|s| s.value.clone()).collect();
        let running = self
            .wait_project(&rec.project, &only, c.timeout, ctx)
            .await
            .map_err(|message| Failed {
                message,
                changed: true,
            })?;
        if let Some(r) = meta.compose.as_mut() {
            r.containers = running
                .iter()
                .map(|c| ComposeContainer {
                    service: c.label(SERVICE_LABEL).unwrap_or_default().to_string(),
                    name: c.name().to_string(),
                    image: c.config.image.clone(),
                    image_id: c.image.clone(),
                })
                .collect();
            r.containers.sort_by(|a, b| a.service.cmp(&b.service));
        }
        let _ = Records::write_meta(dir, meta);
        let ran = format!("project {}", rec.project);
        let answer = release_health(svc, ctx, meta, &ran, started)
            .await
            .map_err(|message| Failed {
                message,
                changed: true,
            })?;
        Ok(Some(answer.unwrap_or_else(|| {
            format!("{ran}: {} container(s) running", running.len())
        })))
    }

    async fn deploy_impl(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
    ) -> Result<Deployed, DeployError> {
        let early = DeployError::early;
        let c = settings(svc);
        let scope = ctx.scope;
        let name = &svc.name;
        self.reconcile_records(name);
        let previous = self.records.current(name);
        let project = match &c.project {
            Some(p) => scope
                .render(&p.value)
                .map(|s| project_name(s.trim()))
                .map_err(|e| early(format!("`project` of service `{name}`: {e}")))?,
            None => project_name(&format!("{}-{}", self.project, self.environment)),
        };
        if project.is_empty() {
            return Err(early(format!(
                "the compose project of service `{name}` has an empty name: set `project:`"
            )));
        }
        let mut images = BTreeMap::new();
        for (k, t) in &c.images {
            let v = scope
                .render(&t.value)
                .map(|s| s.trim().to_string())
                .map_err(|e| early(format!("image of `{k}` in service `{name}`: {e}")))?;
            if v.is_empty() || v.contains(char::is_whitespace) || v.starts_with('-') {
                return Err(early(format!(
                    "the image of `{k}` in service `{name}` renders to `{}`, which is not an image name",
                    scope.seal(&v)
                )));
            }
            images.insert(k.clone(), v);
        }
        let mut files = Vec::new();
        for f in &c.files {
            let path = self.plan_dir.join(&f.value);
            let bytes = std::fs::read(&path)
                .map_err(|e| early(format!("cannot read compose file {}: {e}", path.display())))?;
            files.push((
                f.value.clone(),
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            ));
        }
        let first = c
            .files
            .first()
            .map(|f| self.plan_dir.join(&f.value))
            .unwrap_or_default();
        let id = self
            .records
            .new_id(name, &scope.release.version, ctx.deployment_id);
        let dir = self.records.release_dir(name, &id);
        let sealed = seal_run(svc, ctx, None, &c.env).map_err(early)?;
        let rec = ComposeRecord {
            project: project.clone(),
            files,
            images: images.clone(),
            containers: Vec::new(),
        };
        let mut meta = ReleaseMeta {
            id: id.clone(),
            service: name.clone(),
            environment: scope.environment.clone(),
            version: scope.release.version.clone(),
            sha: scope.release.sha.clone(),
            deployment_id: ctx.deployment_id,
            created_at: crate::now_ms(),
            port: 0,
            url: health_url(svc, scope),
            command: format!("compose -p {project} up -d"),
            artifacts: Vec::new(),
            status: "starting".into(),
            sealed,
            hosts: Vec::new(),
            kubernetes: None,
            docker: None,
            compose: Some(rec),
        };
        let write = || -> std::io::Result<()> {
            private_dir(&dir)?;
            write_private(
                &dir.join(OVERRIDE),
                override_file(&first, &images).as_bytes(),
            )?;
            std::fs::write(dir.join(STARTER), me())?;
            Records::write_meta(&dir, &meta)
        };
        write().map_err(|e| early(format!("cannot write {}: {e}", dir.display())))?;
        ctx.events.emit(Event::ServiceStarting {
            service: name.clone(),
            release: id.clone(),
            port: 0,
            dir: format!("compose project {project}"),
        });
        let outcome = self.up(svc, ctx, &dir, &mut meta).await;
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
                    port: 0,
                    artifacts: super::image_artifacts(meta.compose.iter().flat_map(|c| {
                        c.containers
                            .iter()
                            .map(|k| (k.service.as_str(), k.image_id.as_str()))
                    })),
                    health,
                })
            }
            Err(why) => {
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

    async fn compose_stop(
        &self,
        dir: &Path,
        rec: &ComposeRecord,
        ctx: Option<&DriverCtx<'_>>,
    ) -> Result<(), String> {
        let mut a = self.base_args(rec, dir);
        a.push("stop".into());
        let call = Call {
            cwd: Some(&self.plan_dir),
            log: ctx.and_then(|c| c.log.as_deref()),
            scrubber: ctx.map(|c| c.scrubber),
            timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        compose(&a, &call).await.map(|_| ())
    }

    async fn restore_impl(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        target: Option<&str>,
        from: Option<&str>,
    ) -> Result<String, String> {
        let name = &svc.name;
        let from_rec = from.and_then(|f| self.record(name, f));
        let Some(target_id) = target else {
            let mut what = "nothing was running".to_string();
            if let Some((fdir, fmeta)) = &from_rec
                && let Some(r) = &fmeta.compose
            {
                self.compose_stop(fdir, r, Some(ctx)).await?;
                Records::set_status(fdir, "rolled_back");
                what = format!("stopped project {}", r.project);
            }
            self.records
                .set_current(name, None)
                .map_err(|e| e.to_string())?;
            return Ok(format!("service `{name}` had no earlier release: {what}"));
        };
        let (dir, mut meta) = self.record(name, target_id).ok_or_else(|| {
            format!("release {target_id} of service `{name}` is not on record any more")
        })?;
        let rec = meta.compose.clone().ok_or_else(|| {
            format!("release {target_id} of service `{name}` is not a compose release")
        })?;
        let health = self.up(svc, ctx, &dir, &mut meta).await.map_err(|e| {
            format!(
                "release {target_id} of service `{name}` did not come back: {}",
                e.message
            )
        })?;
        meta.status = "healthy".into();
        let _ = Records::write_meta(&dir, &meta);
        self.records
            .set_current(name, Some(target_id))
            .map_err(|e| e.to_string())?;
        if let Some((fdir, fmeta)) = &from_rec
            && fmeta.id != target_id
        {
            Records::set_status(fdir, "rolled_back");
        }
        let images: Vec<String> = rec.images.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(format!(
            "service `{name}` is back on release {target_id}: `up -d` of project {} with {}{}",
            rec.project,
            if images.is_empty() {
                "the compose files' images".to_string()
            } else {
                images.join(", ")
            },
            health.map(|h| format!("; {h}")).unwrap_or_default()
        ))
    }

    fn reconcile_records(&self, service: &str) -> Vec<String> {
        self.records
            .abandoned(service, STARTER)
            .into_iter()
            .map(|(_, meta, _)| meta.id)
            .collect()
    }

    fn states(&self, service: &str, live: Option<(String, String)>) -> Vec<ReleaseState> {
        let current = self.records.current(service);
        self.records
            .metas(service)
            .into_iter()
            .map(|(dir, meta)| {
                let c = current.as_deref() == Some(meta.id.as_str());
                let l = live
                    .as_ref()
                    .filter(|(id, _)| *id == meta.id)
                    .map(|(_, s)| s.clone());
                ReleaseState::remote(meta, dir, c, l)
            })
            .collect()
    }
}

/// The override that pins each compose service to this release's image. It repeats the
/// first file's `version:` (compose v1 refuses to merge files of different versions).
fn override_file(first: &Path, images: &BTreeMap<String, String>) -> String {
    let version = std::fs::read_to_string(first)
        .ok()
        .and_then(|t| serde_saphyr::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str().map(String::from)));
    let mut out = String::from("# written by stagegate: the images of this release\n");
    if let Some(v) = version {
        out.push_str(&format!("version: {}\n", serde_json::Value::String(v)));
    }
    out.push_str("services:\n");
    for (k, v) in images {
        out.push_str(&format!(
            "  {}:\n    image: {}\n",
            serde_json::Value::String(k.clone()),
            serde_json::Value::String(v.clone())
        ));
    }
    out
}

/// The project's containers, for `status`: `signal_service running (healthy), ...`.
fn describe(containers: &[ContainerInfo]) -> Option<String> {
    let up: Vec<String> = containers
        .iter()
        .filter(|c| c.state.running)
        .map(|c| {
            format!(
                "{} {}",
                c.label(SERVICE_LABEL).unwrap_or(c.name()),
                c.describe()
            )
        })
        .collect();
    (!up.is_empty()).then(|| up.join(", "))
}

impl ServiceDriver for ComposeDriver {
    fn name(&self) -> &'static str {
        "compose"
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

    fn retire<'a>(
        &'a self,
        svc: &'a Service,
        _events: &'a Events,
    ) -> DriverFuture<'a, Vec<String>> {
        Box::pin(async move {
            // `up -d` replaced the old containers already; the old records stay for rollback.
            let current = self.records.current(&svc.name);
            for (dir, meta) in self.records.metas(&svc.name) {
                if Some(&meta.id) != current.as_ref() && meta.status == "healthy" {
                    Records::set_status(&dir, "retired");
                }
            }
            self.records.prune(&svc.name, settings(svc).keep, &[]);
            Vec::new()
        })
    }

    fn stop<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(async move {
            let Some(id) = self.records.current(&svc.name) else {
                return Vec::new();
            };
            let Some((dir, meta)) = self.record(&svc.name, &id) else {
                return Vec::new();
            };
            let Some(rec) = &meta.compose else {
                return Vec::new();
            };
            match self.compose_stop(&dir, rec, None).await {
                Ok(()) => {
                    Records::set_status(&dir, "stopped");
                    vec![id]
                }
                Err(_) => Vec::new(),
            }
        })
    }

    fn reconcile<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<String>> {
        Box::pin(async move { self.reconcile_records(&svc.name) })
    }

    fn observe<'a>(&'a self, svc: &'a Service) -> DriverFuture<'a, Vec<ReleaseState>> {
        Box::pin(async move {
            let current = self.records.current(&svc.name);
            let project = current
                .as_ref()
                .and_then(|c| self.record(&svc.name, c))
                .and_then(|(_, m)| m.compose.map(|r| r.project));
            let live = match (current, project) {
                (Some(c), Some(p)) => match self.project_containers(&p).await {
                    Ok(cs) => describe(&cs).map(|s| (c, format!("project {p}: {s}"))),
                    Err(e) => Some((c, format!("unknown: {e}"))),
                },
                _ => None,
            };
            self.states(&svc.name, live)
        })
    }

    fn current(&self, service: &str) -> Option<String> {
        self.records.current(service)
    }

    fn releases(&self, service: &str) -> Vec<ReleaseState> {
        self.states(service, None)
    }

    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        crate::records::find_in(&self.releases(service), wanted)
    }

    fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        crate::records::previous_good_in(&self.releases(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_what_compose_accepts() {
        assert_eq!(
            project_name("Trading Platform-staging"),
            "trading-platform-staging"
        );
        assert_eq!(project_name("_x.y"), "x-y");
    }

    #[test]
    fn the_override_pins_images_and_keeps_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yml");
        std::fs::write(&f, "version: '3.8'\nservices:\n  a:\n    image: x\n").unwrap();
        let mut images = BTreeMap::new();
        images.insert("a".to_string(), "trading-a:abc123".to_string());
        let text = override_file(&f, &images);
        assert!(text.contains("version: \"3.8\"\n"), "{text}");
        assert!(
            text.contains("  \"a\":\n    image: \"trading-a:abc123\"\n"),
            "{text}"
        );
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["services"]["a"]["image"], "trading-a:abc123");
    }
}
