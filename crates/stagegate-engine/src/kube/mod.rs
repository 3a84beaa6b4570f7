//! The `kubernetes` driver: server-side apply of a service's manifests, then a watch on
//! its Deployments until the rollout is done, like `kubectl apply` + `kubectl rollout status`.
//!
//! A release is the set of manifests rendered for one deployment. Its record
//! (`STATE/releases/ENV/SERVICE/ID/`) keeps `release.json` and `manifests.yaml`, the
//! manifests exactly as applied with every secret sealed back into its
//! `${{ secrets.NAME }}` reference. Rollback re-applies the previous release's recorded
//! manifests (secrets read anew) and waits for that rollout, like `kubectl rollout undo`.
//! `stop` scales the current release's Deployments to zero; it deletes nothing.
//!
//! [`manifest`] renders and parses manifests; [`rollout`] judges a Deployment's status and
//! watches it; [`connect`] builds the client from a kubeconfig and words the API's errors.

mod connect;
mod manifest;
mod rollout;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use stagegate_plan::{Driver, HealthTarget, KubeService, Scope, Service};

use crate::driver::{DriverFuture, ServiceDriver};
use crate::event::{Event, Events};
use crate::health::{http_client, wait_healthy};
use crate::local::{
    DeployError, Deployed, DriverCtx, ReleaseMeta, ReleaseState, me, seal_run, unseal,
    unsealed_probe,
};
use crate::records::{Records, private_dir, write_private};

pub use connect::Target;
use manifest::Object;

/// The field manager stagegate applies as.
pub const FIELD_MANAGER: &str = "stagegate";
/// The sealed manifests of a release, in its record directory.
const MANIFESTS: &str = "manifests.yaml";
/// Who is applying a release (`PID START_TIME`), until its rollout is settled.
const STARTER: &str = "starter";

/// What the record of a kubernetes release says about where and what it applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KubeRecord {
    /// The kubeconfig context used (empty: its current context at the time).
    pub context: String,
    pub namespace: String,
    /// The kubeconfig file named in the plan (none: `KUBECONFIG` or `~/.kube/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// The API server's address.
    pub server: String,
    /// sha256 of `manifests.yaml` (rendered, secrets sealed).
    pub manifest_sha256: String,
    /// Every object applied, as `Kind/name`.
    pub objects: Vec<String>,
    /// The Deployments waited on, as the cluster reported them when the rollout ended.
    pub deployments: Vec<DeploymentRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub name: String,
    pub images: Vec<String>,
    pub generation: i64,
    /// The `deployment.kubernetes.io/revision` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

pub struct KubeDriver {
    pub records: Records,
    pub plan_dir: PathBuf,
}

fn settings(svc: &Service) -> &KubeService {
    match &svc.driver {
        Driver::Kubernetes(k) => k,
        // The dispatcher hands this driver only `driver: kubernetes` services.
        _ => unreachable!("the kubernetes driver runs only `driver: kubernetes` services"),
    }
}

/// Where a service's manifests go, as the plan says for this run.
struct Placement {
    context: Option<String>,
    namespace: Option<String>,
    kubeconfig: Option<String>,
}

impl Placement {
    fn of(svc: &Service, scope: &Scope) -> Result<Self, String> {
        let k = settings(svc);
        let render = |what: &str, t: &Option<stagegate_plan::Spanned<stagegate_plan::Template>>| {
            t.as_ref()
                .map(|t| scope.render(&t.value).map(|v| v.trim().to_string()))
                .transpose()
                .map(|v| v.filter(|v| !v.is_empty()))
                .map_err(|e| format!("`{what}` of service `{}`: {e}", svc.name))
        };
        Ok(Self {
            context: render("context", &k.context)?,
            namespace: render("namespace", &k.namespace)?,
            kubeconfig: render("kubeconfig", &k.kubeconfig)?,
        })
    }

    fn of_record(r: &KubeRecord) -> Self {
        Self {
            context: Some(r.context.clone()).filter(|c| !c.is_empty()),
            namespace: Some(r.namespace.clone()),
            kubeconfig: r.kubeconfig.clone(),
        }
    }
}

impl KubeDriver {
    fn record(&self, service: &str, id: &str) -> Option<(PathBuf, ReleaseMeta)> {
        self.records.record(service, id)
    }

    fn kubeconfig_path(&self, p: &Placement) -> Option<PathBuf> {
        p.kubeconfig.as_ref().map(|k| {
            let path = Path::new(k);
            if path.is_absolute() {
                path.to_path_buf()
            } else {
                self.plan_dir.join(path)
            }
        })
    }

    async fn connect(&self, p: &Placement) -> Result<Target, String> {
        connect::connect(
            self.kubeconfig_path(p).as_deref(),
            p.context.as_deref(),
            p.namespace.as_deref(),
        )
        .await
    }

    /// Applies `objects` (server-side, as [`FIELD_MANAGER`], forcing conflicts) and waits
    /// for the rollout of `deployments`. Returns what the Deployments ended as; an error
    /// says whether anything was applied before it.
    async fn apply_and_wait(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        target: &Target,
        objects: &[Object],
        deployments: &[String],
        release: &str,
    ) -> Result<Vec<DeploymentRecord>, Failed> {
        let k = settings(svc);
        let scrub = |s: String| ctx.scrubber.scrub(&s);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        for (i, o) in objects.iter().enumerate() {
            let api: Api<DynamicObject> = match &o.namespace {
                Some(ns) => Api::namespaced_with(target.client.clone(), ns, &o.resource),
                None => Api::all_with(target.client.clone(), &o.resource),
            };
            api.patch(&o.name, &pp, &Patch::Apply(&o.body))
                .await
                .map_err(|e| Failed {
                    message: scrub(target.explain(&e, &format!("apply {}", o.label()), o)),
                    changed: i > 0,
                })?;
        }
        let started = Instant::now();
        let deadline = started + k.timeout;
        let waits = deployments.iter().map(|name| {
            let api: Api<Deployment> = Api::namespaced(target.client.clone(), &target.namespace);
            async move {
                rollout::wait(&api, name, deadline, k.timeout, ctx.cancel)
                    .await
                    .map_err(|e| match e {
                        rollout::WaitError::Api(e) => {
                            target.explain_get(&e, &format!("watch deployment/{name}"), name)
                        }
                        other => other.to_string(),
                    })
            }
        });
        let done = futures_util::future::join_all(waits).await;
        let mut out = Vec::new();
        for (name, r) in deployments.iter().zip(done) {
            let d = r.map_err(|e| Failed {
                message: scrub(e),
                changed: true,
            })?;
            ctx.events.emit(Event::ServiceHealthy {
                service: svc.name.clone(),
                release: release.to_string(),
                url: format!("deployment/{name} in namespace {}", target.namespace),
                waited_ms: started.elapsed().as_millis() as u64,
            });
            out.push(rollout::record_of(name, &d));
        }
        Ok(out)
    }

    /// Runs the service's health check (after the rollout) when it has one.
    async fn check_health(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
        meta: &ReleaseMeta,
    ) -> Result<Option<String>, String> {
        if let Some(h) = &meta.sealed.health
            && h.is_path
        {
            return Err(format!(
                "the health check of service `{}` has a `path`, but a kubernetes service has no address of its own: give a full `url`",
                svc.name
            ));
        }
        let Some(probe) = unsealed_probe(ctx.scope, meta)? else {
            return Ok(None);
        };
        let alive = || None;
        match wait_healthy(&http_client(), &probe, &alive, ctx.cancel).await {
            Ok(h) => Ok(Some(format!("{} ({})", h.answer, probe.url))),
            Err(e) => Err(format!("health check {} failed: {e}", probe.url)),
        }
    }

    async fn deploy_impl(
        &self,
        svc: &Service,
        ctx: &DriverCtx<'_>,
    ) -> Result<Deployed, DeployError> {
        let early = |message: String| DeployError {
            message,
            release: None,
            previous: None,
        };
        let k = settings(svc);
        let scope = ctx.scope;
        self.reconcile_records(&svc.name);
        let previous = self.records.current(&svc.name);
        let placement = Placement::of(svc, scope).map_err(early)?;
        let rendered = manifest::render(&self.plan_dir, &k.manifests, scope)
            .map_err(|e| early(format!("service `{}`: {e}", svc.name)))?;
        let target = self
            .connect(&placement)
            .await
            .map_err(|e| early(format!("service `{}`: {e}", svc.name)))?;
        let objects = manifest::parse(&rendered, &target.namespace)
            .map_err(|e| early(format!("service `{}`: {}", svc.name, scope.seal(&e))))?;
        let deployments = manifest::deployments(&objects, &k.deployments)
            .map_err(|e| early(format!("service `{}`: {e}", svc.name)))?;

        let sealed_text = scope.seal(&rendered);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            sealed_text.as_bytes(),
        ));
        let id = self
            .records
            .new_id(&svc.name, &scope.release.version, ctx.deployment_id);
        let dir = self.records.release_dir(&svc.name, &id);
        let sealed = seal_run(svc, ctx, None, &Default::default()).map_err(early)?;
        let url = health_url(svc, scope);
        let mut meta = ReleaseMeta {
            id: id.clone(),
            service: svc.name.clone(),
            environment: scope.environment.clone(),
            version: scope.release.version.clone(),
            sha: scope.release.sha.clone(),
            deployment_id: ctx.deployment_id,
            created_at: crate::now_ms(),
            port: 0,
            url: url.clone(),
            command: format!(
                "kubectl apply --server-side -n {} ({} objects)",
                target.namespace,
                objects.len()
            ),
            artifacts: Vec::new(),
            status: "starting".into(),
            sealed,
            hosts: Vec::new(),
            kubernetes: Some(KubeRecord {
                context: target.context.clone(),
                namespace: target.namespace.clone(),
                kubeconfig: placement.kubeconfig.clone(),
                server: target.server.clone(),
                manifest_sha256: sha,
                objects: objects.iter().map(Object::label).collect(),
                // Named now, so a rollback to no release knows what to scale down.
                deployments: deployments
                    .iter()
                    .map(|name| DeploymentRecord {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            docker: None,
            compose: None,
        };
        let write = || -> std::io::Result<()> {
            private_dir(&dir)?;
            write_private(&dir.join(MANIFESTS), sealed_text.as_bytes())?;
            std::fs::write(dir.join(STARTER), me())?;
            Records::write_meta(&dir, &meta)
        };
        write().map_err(|e| early(format!("cannot write {}: {e}", dir.display())))?;
        ctx.events.emit(Event::ServiceStarting {
            service: svc.name.clone(),
            release: id.clone(),
            port: 0,
            dir: dir.display().to_string(),
        });

        let outcome = match self
            .apply_and_wait(svc, ctx, &target, &objects, &deployments, &id)
            .await
        {
            Ok(done) => {
                if let Some(r) = meta.kubernetes.as_mut() {
                    r.deployments = done;
                }
                let _ = Records::write_meta(&dir, &meta);
                self.check_health(svc, ctx, &meta)
                    .await
                    .map_err(|message| Failed {
                        message,
                        changed: true,
                    })
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(dir.join(STARTER));
        match outcome {
            Ok(health) => {
                Records::set_status(&dir, "healthy");
                self.records
                    .set_current(&svc.name, Some(&id))
                    .map_err(|e| early(format!("cannot record the current release: {e}")))?;
                Ok(Deployed {
                    release: id,
                    previous,
                    url,
                    port: 0,
                    artifacts: Vec::new(),
                    health,
                })
            }
            Err(why) => {
                Records::set_status(&dir, "failed");
                let message = format!("release {id} of service `{}`: {}", svc.name, why.message);
                if !why.changed {
                    // The first apply was refused: the cluster is as it was.
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
        let from_rec = from.and_then(|f| self.record(&svc.name, f));
        let Some(target_id) = target else {
            // No earlier release: the service stops (its Deployments scaled to zero).
            let mut what = String::from("nothing was running");
            if let Some((dir, meta)) = &from_rec {
                let scaled = self.scale_to_zero(meta).await?;
                Records::set_status(dir, "rolled_back");
                what = format!("scaled {} to 0 replicas", scaled.join(", "));
            }
            self.records
                .set_current(&svc.name, None)
                .map_err(|e| e.to_string())?;
            return Ok(format!(
                "service `{}` had no earlier release: {what}",
                svc.name
            ));
        };
        let (dir, meta) = self.record(&svc.name, target_id).ok_or_else(|| {
            format!(
                "release {target_id} of service `{}` is not on record any more",
                svc.name
            )
        })?;
        let rec = meta.kubernetes.clone().ok_or_else(|| {
            format!(
                "release {target_id} of service `{}` is not a kubernetes release",
                svc.name
            )
        })?;
        let sealed = std::fs::read_to_string(dir.join(MANIFESTS))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(MANIFESTS).display()))?;
        let text = unseal(ctx.scope, &sealed)
            .map_err(|e| format!("the recorded manifests of release {target_id}: {e}"))?;
        let placement = Placement::of_record(&rec);
        let t = self.connect(&placement).await?;
        let objects = manifest::parse(&text, &t.namespace).map_err(|e| ctx.scope.seal(&e))?;
        let names: Vec<String> = rec.deployments.iter().map(|d| d.name.clone()).collect();
        let deployments = if names.is_empty() {
            manifest::deployments(&objects, &[])?
        } else {
            names
        };
        let done = self
            .apply_and_wait(svc, ctx, &t, &objects, &deployments, target_id)
            .await
            .map_err(|e| {
                format!(
                    "release {target_id} of service `{}` did not come back: {}",
                    svc.name, e.message
                )
            })?;
        let health = self.check_health(svc, ctx, &meta).await?;
        let mut meta = meta;
        meta.status = "healthy".into();
        if let Some(r) = meta.kubernetes.as_mut() {
            r.deployments = done.clone();
        }
        let _ = Records::write_meta(&dir, &meta);
        self.records
            .set_current(&svc.name, Some(target_id))
            .map_err(|e| e.to_string())?;
        if let Some((fdir, fmeta)) = &from_rec
            && fmeta.id != target_id
        {
            Records::set_status(fdir, "rolled_back");
        }
        let images: Vec<String> = done.iter().flat_map(|d| d.images.clone()).collect();
        Ok(format!(
            "service `{}` is back on release {target_id}: re-applied its manifests ({}) in namespace {}{}",
            svc.name,
            images.join(", "),
            t.namespace,
            health.map(|h| format!("; {h}")).unwrap_or_default()
        ))
    }

    /// Scales the Deployments a release applied to zero replicas; returns them.
    async fn scale_to_zero(&self, meta: &ReleaseMeta) -> Result<Vec<String>, String> {
        let Some(rec) = &meta.kubernetes else {
            return Ok(Vec::new());
        };
        let t = self.connect(&Placement::of_record(rec)).await?;
        let api: Api<Deployment> = Api::namespaced(t.client.clone(), &t.namespace);
        let mut out = Vec::new();
        let patch = serde_json::json!({ "spec": { "replicas": 0 } });
        for d in &rec.deployments {
            api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| t.explain_get(&e, &format!("scale deployment/{}", d.name), &d.name))?;
            out.push(format!("deployment/{}", d.name));
        }
        Ok(out)
    }

    /// A release a dead run left applying is marked `failed`.
    fn reconcile_records(&self, service: &str) -> Vec<String> {
        self.records
            .abandoned(service, STARTER)
            .into_iter()
            .map(|(_, meta, _)| meta.id)
            .collect()
    }

    fn states(&self, service: &str) -> Vec<ReleaseState> {
        let current = self.records.current(service);
        let metas = self.records.metas(service);
        let live = current
            .as_ref()
            .and_then(|c| metas.iter().find(|(_, m)| &m.id == c))
            .and_then(|(_, m)| m.kubernetes.clone())
            .map(|rec| self.live_blocking(&rec));
        metas
            .into_iter()
            .map(|(dir, meta)| {
                let is_current = current.as_deref() == Some(meta.id.as_str());
                let l = if is_current {
                    live.clone().flatten()
                } else {
                    None
                };
                ReleaseState::remote(meta, dir, is_current, l)
            })
            .collect()
    }

    /// What the cluster says of a release's Deployments (`deployment web 3/3 available,
    /// revision 4`); `None` when none of them has a replica. Asked on a thread of its own,
    /// as the callers are not async.
    fn live_blocking(&self, rec: &KubeRecord) -> Option<String> {
        let placement = Placement::of_record(rec);
        let path = self.kubeconfig_path(&placement);
        let rec = rec.clone();
        let ask = move || -> Option<String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let fut = async {
                    let t = connect::connect(
                        path.as_deref(),
                        placement.context.as_deref(),
                        placement.namespace.as_deref(),
                    )
                    .await?;
                    let api: Api<Deployment> = Api::namespaced(t.client.clone(), &t.namespace);
                    let mut parts = Vec::new();
                    let mut any = false;
                    for d in &rec.deployments {
                        match api.get(&d.name).await {
                            Ok(dep) => {
                                let (line, up) = rollout::describe_live(&d.name, &dep);
                                any |= up;
                                parts.push(line);
                            }
                            Err(e) => parts.push(t.explain_get(
                                &e,
                                &format!("get deployment/{}", d.name),
                                &d.name,
                            )),
                        }
                    }
                    Ok::<_, String>((parts.join("; "), any))
                };
                match tokio::time::timeout(Duration::from_secs(10), fut).await {
                    Ok(Ok((line, true))) => Some(line),
                    Ok(Ok((_, false))) => None,
                    Ok(Err(e)) => Some(format!("unknown: {e}")),
                    Err(_) => Some("unknown: the Kubernetes API did not answer in 10s".into()),
                }
            })
        };
        std::thread::spawn(ask).join().ok().flatten()
    }
}

/// Why applying or a rollout failed, and whether the cluster was changed before it.
struct Failed {
    message: String,
    changed: bool,
}

/// The health check's URL, shown as the service's address (empty without one).
fn health_url(svc: &Service, scope: &Scope) -> String {
    match svc.health.as_ref().map(|h| &h.target) {
        Some(HealthTarget::Url(u)) => scope.render_for_display(&u.value),
        _ => String::new(),
    }
}

impl ServiceDriver for KubeDriver {
    fn name(&self) -> &'static str {
        "kubernetes"
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
            // Kubernetes scales the old ReplicaSets down itself: nothing to stop. The older
            // records are marked retired and those beyond `keep` deleted.
            let current = self.records.current(&svc.name);
            for (dir, meta) in self.records.metas(&svc.name) {
                if Some(&meta.id) != current.as_ref() && meta.status == "healthy" {
                    Records::set_status(&dir, "retired");
                }
            }
            let target = self.previous_good(&svc.name).map(|r| r.meta.id);
            let keep: Vec<&str> = target.iter().map(String::as_str).collect();
            self.records.prune(&svc.name, settings(svc).keep, &keep);
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
            match self.scale_to_zero(&meta).await {
                Ok(_) => {
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

    fn current(&self, service: &str) -> Option<String> {
        self.records.current(service)
    }

    fn releases(&self, service: &str) -> Vec<ReleaseState> {
        self.states(service)
    }

    fn find_release(&self, service: &str, wanted: &str) -> Option<ReleaseState> {
        crate::records::find_in(&self.states(service), wanted)
    }

    fn previous_good(&self, service: &str) -> Option<ReleaseState> {
        // Only the records matter here: no need to ask the cluster.
        let current = self.records.current(service);
        let all: Vec<ReleaseState> = self
            .records
            .metas(service)
            .into_iter()
            .map(|(dir, meta)| {
                let c = current.as_deref() == Some(meta.id.as_str());
                ReleaseState::remote(meta, dir, c, None)
            })
            .collect();
        crate::records::previous_good_in(&all)
    }
}
