//! Environment protection at run time: `promote FROM TO`, `approve`, `reject`, and the
//! checks a `deploy` of a protected environment passes first.
//!
//! A release reaches a protected environment through a *request*: a deployment row of kind
//! `request`, outcome `awaiting_approval`, bound to the plan's hash and to the artifact's
//! digest (version, git SHA, and the sha256 of every artifact or image id that passed the
//! source environment). Approvals and rejections are recorded against the request with the
//! same binding; one whose plan or artifact differs from the request's does not count. When
//! every condition holds (soak, wait timer, approvals), the request is closed as `approved`
//! and the deploy runs with the artifacts pinned: a deploy whose artifacts differ fails.
//! Every approval, rejection, bypass and promotion is in the audit log.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use stagegate_engine::exit;
use stagegate_engine::local::ArtifactDigest;
use stagegate_plan::protect::{names, roles_of};
use stagegate_plan::{Plan, Protection};
use stagegate_store::audit::AuditKind;
use stagegate_store::{ApprovalRecord, Deployment, NewDeployment, Outcome, Store, Verdict};

use crate::cli::{ApproveArgs, Cli};
use crate::context::{CmdResult, Failure, actor, hostname, load_plan, open_store};

/// The kind of the deployment rows that hold a request.
pub const REQUEST: &str = "request";

/// What a deploy carries: a release and, from a promotion, the artifacts that passed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Artifact {
    pub version: String,
    pub sha: String,
    /// Service -> its artifacts (files' sha256, images' ids); empty for a direct deploy.
    pub services: BTreeMap<String, Vec<ArtifactDigest>>,
    /// sha256 over all of the above: what approvals are bound to.
    pub digest: String,
}

impl Artifact {
    pub fn new(
        version: &str,
        sha: &str,
        services: BTreeMap<String, Vec<ArtifactDigest>>,
    ) -> Artifact {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update(s.len().to_le_bytes());
            h.update(s.as_bytes());
        };
        part("stagegate-artifact-v1");
        part(version);
        part(sha);
        for (svc, list) in &services {
            let mut list: Vec<&ArtifactDigest> = list.iter().collect();
            list.sort_by(|a, b| a.path.cmp(&b.path));
            for a in list {
                part(svc);
                part(&a.path);
                part(&a.sha256);
            }
        }
        let digest = hex::encode(h.finalize());
        Artifact {
            version: version.to_string(),
            sha: sha.to_string(),
            services,
            digest,
        }
    }

    fn short(&self) -> String {
        self.digest.chars().take(12).collect()
    }
}

/// What let a deploy of a protected environment go ahead: recorded in its run.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The artifacts the deploy must carry (a promotion), by service.
    pub pinned: BTreeMap<String, Vec<ArtifactDigest>>,
    /// The request it came through.
    pub request: Option<i64>,
    pub artifact: Artifact,
    pub from: Option<(String, i64)>,
    pub approvals: Vec<ApprovalRecord>,
    pub bypass: Option<(String, String)>,
}

impl Authorization {
    /// As the run records it ([`stagegate_engine::Event::Authorized`]).
    pub fn event(&self) -> stagegate_engine::event::Authorization {
        use stagegate_engine::event::Approver;
        stagegate_engine::event::Authorization {
            from: self.from.as_ref().map(|(f, _)| f.clone()),
            source_deployment: self.from.as_ref().map(|(_, d)| *d),
            request: self.request,
            artifact: self.artifact.digest.clone(),
            approvals: self
                .approvals
                .iter()
                .map(|a| Approver {
                    actor: a.actor.clone(),
                    role: a.role.clone(),
                    comment: a.comment.clone(),
                    at: a.at,
                })
                .collect(),
            bypass: self.bypass.as_ref().map(|(who, why)| Approver {
                actor: who.clone(),
                role: None,
                comment: why.clone(),
                at: stagegate_store::now_millis(),
            }),
        }
    }
}

/// What `promote FROM TO` deploys: the deployment that last passed FROM and still runs
/// there, with its artifact.
pub struct Source {
    pub env: String,
    pub deployment: Deployment,
    pub artifact: Artifact,
}

/// The [`Source`] of `promote FROM TO`, checking first that TO takes promotions from FROM.
pub async fn source_release(
    cli: &Cli,
    plan: &Plan,
    store: &Store,
    from: &str,
    to: &str,
) -> Result<Source, Failure> {
    let Some(e) = plan.environment(to) else {
        return Err(Failure::invalid(format!(
            "error: the plan has no environment `{to}`; it has: {}",
            plan.environment_names().join(", ")
        )));
    };
    match &e.protection.promote_from {
        Some(pf) if pf.value == from => {}
        Some(pf) => {
            return Err(refused(format!(
                "error: `{to}` takes promotions from `{}`, not from `{from}` (plan line {})\n  = help: `stagegate promote {} {to}`",
                pf.value, pf.span.pos.line, pf.value
            )));
        }
        None => {
            return Err(refused(format!(
                "error: `{to}` does not take promotions: the plan gives it no `promote_from`\n  = help: add `promote_from: {from}` to environment `{to}` (line {}), or deploy it directly with `stagegate deploy {to}`",
                e.span.pos.line
            )));
        }
    }
    let (deployment, artifact) = candidate(cli, plan, store, from).await?;
    Ok(Source {
        env: from.to_string(),
        deployment,
        artifact,
    })
}

/// A bypass asked for on the command line: reason and the role claimed.
#[derive(Debug, Clone, Default)]
pub struct BypassAsk {
    pub reason: Option<String>,
    pub role: Option<String>,
}

/// Waiting for approvals and timers (`--wait`), or not.
#[derive(Debug, Clone, Default)]
pub struct WaitAsk {
    pub wait: bool,
    pub timeout: Option<Duration>,
    /// Told `awaiting_approval` when a new request starts waiting.
    pub notify: stagegate_engine::notify::Notifier,
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn left(ms: i64) -> String {
    let d = Duration::from_millis(ms.max(0) as u64);
    // Whole seconds: `47h59m58s`, not milliseconds.
    stagegate_plan::yaml::fmt_duration(Duration::from_secs(d.as_secs().max(1)))
}

fn refused(msg: impl Into<String>) -> Failure {
    Failure::new(exit::REFUSED, msg)
}

/// The artifacts a finished deployment deployed: each passed deploy step's release artifacts.
async fn artifact_of(
    store: &Store,
    d: &Deployment,
) -> Result<(Artifact, BTreeMap<String, String>), Failure> {
    let mut services = BTreeMap::new();
    let mut releases = BTreeMap::new();
    for s in store.steps(d.id).await? {
        if s.kind != "deploy"
            || s.phase != stagegate_store::Phase::Run
            || s.status != stagegate_store::StepState::Passed
        {
            continue;
        }
        let Some(svc) = s.details["service"].as_str() else {
            continue;
        };
        let list: Vec<ArtifactDigest> =
            serde_json::from_value(s.details["artifacts"].clone()).unwrap_or_default();
        services.insert(svc.to_string(), list);
        if let Some(r) = s.details["release"].as_str() {
            releases.insert(svc.to_string(), r.to_string());
        }
    }
    Ok((
        Artifact::new(&d.release_version, &d.release_sha, services),
        releases,
    ))
}

/// The newest deploy of `env` that succeeded, with what it deployed, if it still runs.
async fn candidate(
    cli: &Cli,
    plan: &Plan,
    store: &Store,
    from: &str,
) -> Result<(Deployment, Artifact), Failure> {
    let recent = store.deployments(Some(from), 500).await?;
    let Some(d) = recent
        .into_iter()
        .find(|d| d.kind == "deploy" && d.outcome == Outcome::Succeeded)
    else {
        return Err(refused(format!(
            "error: no deployment of `{from}` has succeeded yet: there is nothing to promote\n  = help: `stagegate deploy {from}` first"
        )));
    };
    let (artifact, releases) = artifact_of(store, &d).await?;
    if releases.is_empty() {
        return Err(refused(format!(
            "error: deployment #{} of `{from}` deployed no service: there is no artifact to promote",
            d.id
        )));
    }
    // What passed must still run there: a later rollback or stop ends its soak.
    let exe = std::env::current_exe().unwrap_or_default();
    let driver = crate::context::driver_for(cli, plan, from, exe);
    for (svc_name, release) in &releases {
        let Some(svc) = plan.service(svc_name) else {
            return Err(refused(format!(
                "error: deployment #{} of `{from}` deployed service `{svc_name}`, which the plan no longer has",
                d.id
            )));
        };
        let states = driver.observe(svc).await;
        let now = states.iter().find(|r| r.current);
        let serving = now.is_some_and(|r| r.meta.id == *release && r.serving());
        if !serving {
            let what = match now {
                Some(r) => format!("`{from}` now runs {} of it", r.meta.id),
                None => format!("nothing of it runs in `{from}` now"),
            };
            return Err(refused(format!(
                "error: release {release} of service `{svc_name}`, which passed `{from}` in deployment #{}, no longer runs there: {what}\n  \
                 = help: only what runs healthy in `{from}` can be promoted; deploy it to `{from}` again (`stagegate deploy {from} --release-version {}`)",
                d.id, d.release_version
            )));
        }
    }
    Ok((d, artifact))
}

/// The request's artifact digest and source, from its `request` event.
async fn request_binding(store: &Store, id: i64) -> Result<Option<serde_json::Value>, Failure> {
    Ok(store
        .events(id)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.kind == "request")
        .map(|e| e.data))
}

/// The newest `approved` request of `env` for this plan and artifact, when no deploy of
/// `env` has succeeded since it was approved.
async fn unspent_approved(
    store: &Store,
    env: &str,
    plan: &Plan,
    artifact: &Artifact,
) -> Result<Option<Deployment>, Failure> {
    let recent = store.deployments(Some(env), 500).await?;
    let Some(pos) = recent
        .iter()
        .position(|d| d.kind == REQUEST && d.outcome != Outcome::AwaitingApproval)
    else {
        return Ok(None);
    };
    let req = &recent[pos];
    if req.outcome != Outcome::Approved || req.plan_hash != plan.hash {
        return Ok(None);
    }
    let binding = request_binding(store, req.id).await?.unwrap_or_default();
    if binding["artifact"]["digest"] != artifact.digest.as_str() {
        return Ok(None);
    }
    // `recent` is newest first: what came after the request is before it in the list.
    let spent = recent[..pos]
        .iter()
        .any(|d| d.kind == "deploy" && d.outcome == Outcome::Succeeded);
    if spent {
        return Ok(None);
    }
    Ok(Some(req.clone()))
}

/// The newest open request of `env`.
pub async fn open_request(store: &Store, env: &str) -> Result<Option<Deployment>, Failure> {
    Ok(store
        .deployments(Some(env), 500)
        .await?
        .into_iter()
        .find(|d| d.kind == REQUEST && d.outcome == Outcome::AwaitingApproval))
}

/// Where a request stands.
enum Standing {
    Ready,
    Waiting(Vec<String>),
    Rejected(String),
}

/// The approvals that count for a request under the plan's rule, and what is missing.
fn standing(
    plan: &Plan,
    p: &Protection,
    req: &Deployment,
    artifact: &Artifact,
    soak_since: Option<i64>,
    approvals: &[ApprovalRecord],
    now: i64,
) -> (Standing, Vec<ApprovalRecord>) {
    let mut waits = Vec::new();
    if let (Some(soak), Some(since)) = (&p.soak, soak_since) {
        let from = p.promote_from.as_ref().map_or("", |f| f.value.as_str());
        let due = since + soak.value.as_millis() as i64;
        if now < due {
            waits.push(format!(
                "soak: the artifact has run in `{from}` for {} of {}; {} left (until {})",
                left(now - since),
                stagegate_plan::yaml::fmt_duration(soak.value),
                left(due - now),
                when(due)
            ));
        }
    }
    if let Some(t) = &p.wait_timer {
        let due = req.started_at + t.value.as_millis() as i64;
        if now < due {
            waits.push(format!(
                "wait timer: {} after the request; {} left (until {})",
                stagegate_plan::yaml::fmt_duration(t.value),
                left(due - now),
                when(due)
            ));
        }
    }
    let mut counted: Vec<ApprovalRecord> = Vec::new();
    if let Some(rule) = &p.approvals {
        for a in approvals {
            let bound = a.plan_hash == plan.hash && a.artifact == artifact.digest;
            if !bound {
                continue;
            }
            if a.verdict == Verdict::Rejected {
                return (
                    Standing::Rejected(format!(
                        "rejected by {}{} at {}: {}",
                        a.actor,
                        a.role
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default(),
                        when(a.at),
                        a.comment
                    )),
                    counted,
                );
            }
            if counted.iter().any(|c| c.actor == a.actor) {
                continue;
            }
            if rule.distinct_roles && (a.role.is_none() || counted.iter().any(|c| c.role == a.role))
            {
                continue;
            }
            counted.push(a.clone());
        }
        let need = rule.required as usize;
        if counted.len() < need {
            let by = if counted.is_empty() {
                String::new()
            } else {
                format!(
                    " (so far: {})",
                    counted
                        .iter()
                        .map(|c| match &c.role {
                            Some(r) => format!("{} as {r}", c.actor),
                            None => c.actor.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let from = if rule.from.is_empty() {
                "anyone".to_string()
            } else {
                let open: Vec<&str> = rule
                    .from
                    .iter()
                    .map(|e| e.value.as_str())
                    .filter(|e| {
                        !(rule.distinct_roles
                            && counted.iter().any(|c| c.role.as_deref() == Some(*e)))
                    })
                    .collect();
                open.join(", ")
            };
            let distinct = if rule.distinct_roles {
                ", each from a different role"
            } else {
                ""
            };
            waits.push(format!(
                "approvals: {} of {}{by}; needs {} more from {from}{distinct}{}",
                counted.len(),
                need,
                need - counted.len(),
                if rule.self_approve {
                    String::new()
                } else {
                    format!(", not {}", req.actor)
                }
            ));
        }
        counted.truncate(need);
    }
    if waits.is_empty() {
        (Standing::Ready, counted)
    } else {
        (Standing::Waiting(waits), counted)
    }
}

/// Where a recorded request stands now: [`standing`] with its artifact digest and source
/// read from its `request` event (`binding`) and its approvals from the store.
async fn standing_of(
    store: &Store,
    plan: &Plan,
    p: &Protection,
    req: &Deployment,
    binding: &serde_json::Value,
) -> Result<(Standing, Vec<ApprovalRecord>), Failure> {
    let artifact = Artifact {
        version: req.release_version.clone(),
        sha: req.release_sha.clone(),
        services: BTreeMap::new(),
        digest: binding["artifact"]["digest"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    };
    let soak_since = match binding["source_deployment"].as_i64() {
        Some(src) => store.deployment(src).await?.and_then(|d| d.finished_at),
        None => None,
    };
    let approvals = store.approvals(req.id).await?;
    let now = stagegate_store::now_millis();
    Ok(standing(
        plan, p, req, &artifact, soak_since, &approvals, now,
    ))
}

/// The request for `artifact` in `env`: the open one bound to it, else a new one (an open
/// request bound to another plan or artifact is voided, its approvals no longer count).
async fn request_for(
    plan: &Plan,
    store: &Store,
    env: &str,
    who: &str,
    artifact: &Artifact,
    from: Option<(&str, i64)>,
) -> Result<(Deployment, bool), Failure> {
    // An approved request whose deploy did not succeed (the lock was held, a step failed)
    // keeps its approvals: they approved this artifact under this plan.
    if let Some(unspent) = unspent_approved(store, env, plan, artifact).await? {
        return Ok((unspent, false));
    }
    if let Some(open) = open_request(store, env).await? {
        let binding = request_binding(store, open.id).await?.unwrap_or_default();
        let same_artifact = binding["artifact"]["digest"] == artifact.digest.as_str();
        if same_artifact && open.plan_hash == plan.hash {
            return Ok((open, false));
        }
        let why = if open.plan_hash != plan.hash {
            format!(
                "voided: the plan changed (sha256 {} when requested, {} now); its approvals no longer count",
                &open.plan_hash[..12.min(open.plan_hash.len())],
                &plan.hash[..12]
            )
        } else {
            format!(
                "voided: a different artifact ({} {}) is to be deployed; its approvals no longer count",
                artifact.version,
                artifact.short()
            )
        };
        store
            .finish_deployment(
                open.id,
                Outcome::Voided,
                exit::REFUSED,
                &why,
                stagegate_store::now_millis(),
            )
            .await?;
        eprintln!("note: request #{} {why}", open.id);
    }
    let now = stagegate_store::now_millis();
    let id = store
        .begin_deployment(&NewDeployment {
            project: plan.project.clone(),
            environment: env.to_string(),
            kind: REQUEST.into(),
            release_version: artifact.version.clone(),
            release_sha: artifact.sha.clone(),
            plan_hash: plan.hash.clone(),
            actor: who.to_string(),
            pid: std::process::id(),
            host: hostname(),
            started_at: now,
        })
        .await?;
    store
        .record_event(
            id,
            "request",
            &json!({
                "from": from.map(|(e, _)| e),
                "source_deployment": from.map(|(_, d)| d),
                "artifact": artifact,
            }),
            now,
        )
        .await?;
    store
        .finish_deployment(
            id,
            Outcome::AwaitingApproval,
            exit::AWAITING_APPROVAL,
            "awaiting approval",
            now,
        )
        .await?;
    let req = store.deployment(id).await?.ok_or_else(|| {
        Failure::internal(format!(
            "error: request #{id} was recorded but cannot be read back"
        ))
    })?;
    Ok((req, true))
}

/// The `awaiting_approval` notification of a new request.
fn awaiting_approval(
    plan: &Plan,
    env: &str,
    req: &Deployment,
    artifact: &Artifact,
    what: &[String],
) -> stagegate_engine::notify::Notification {
    use stagegate_engine::notify::{Notification, NotifiedRelease, rfc3339};
    Notification {
        event: stagegate_plan::NotifyEvent::AwaitingApproval.as_str(),
        kind: "deploy".into(),
        project: plan.project.clone(),
        environment: env.to_string(),
        deployment_id: None,
        request_id: Some(req.id),
        release: NotifiedRelease {
            version: artifact.version.clone(),
            sha: artifact.sha.clone(),
        },
        outcome: None,
        exit_code: Some(exit::AWAITING_APPROVAL),
        summary: Some(format!(
            "request #{} by {} waits for: {}",
            req.id,
            req.actor,
            what.join("; ")
        )),
        duration_ms: None,
        at: rfc3339(stagegate_engine::now_ms()),
    }
}

/// Checks a deploy of `env` against its protection and returns what authorizes it, or why
/// it cannot go ahead (refused, exit 9; awaiting approval, exit 8).
#[allow(clippy::too_many_arguments)]
pub async fn authorize(
    plan: &Plan,
    store: &Store,
    env: &str,
    who: &str,
    release: (&str, &str),
    from: Option<&Source>,
    bypass: &BypassAsk,
    wait: WaitAsk,
) -> Result<Option<Authorization>, Failure> {
    let Some(e) = plan.environment(env) else {
        return Ok(None);
    };
    let p = &e.protection;
    if p.is_empty() && from.is_none() {
        return Ok(None);
    }
    let mut bypassed = None;
    // A promotion's source was checked against `promote_from` by `source_release`.
    let (source, artifact) = match (from, &p.promote_from) {
        (Some(src), _) => (
            Some((src.env.clone(), src.deployment.clone())),
            src.artifact.clone(),
        ),
        (None, Some(pf)) => {
            let Some(reason) = bypass.reason.as_deref().map(str::trim) else {
                let how = match &p.bypass {
                    Some(b) => format!(
                        "; in an emergency, `stagegate deploy {env} --bypass \"why\"` (allowed for: {})",
                        b.by.iter()
                            .map(|x| x.value.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => " (the plan allows no bypass)".into(),
                };
                return Err(refused(format!(
                    "error: `{env}` takes releases only by promotion from `{}` (plan line {}); nothing ran\n  = help: `stagegate promote {} {env}` deploys what passed `{}`{how}",
                    pf.value, pf.span.pos.line, pf.value, pf.value
                )));
            };
            let Some(rule) = &p.bypass else {
                return Err(refused(format!(
                    "error: `{env}` allows no bypass of its promotion from `{}`: the plan has no `bypass` rule, so nobody can skip it, administrators included; nothing ran\n  = help: `stagegate promote {} {env}`",
                    pf.value, pf.value
                )));
            };
            if reason.is_empty() {
                return Err(Failure::invalid(
                    "error: --bypass needs a reason: say why staging is skipped, e.g. --bypass \"INC-4312: checkout down, fix in 1.4.1\"",
                ));
            }
            let allowed: Vec<&str> = rule.by.iter().map(|x| x.value.as_str()).collect();
            let role = match &bypass.role {
                Some(r) if names(&plan.roles, r, who) && allowed.contains(&r.as_str()) => {
                    Some(r.clone())
                }
                Some(r) => {
                    return Err(refused(format!(
                        "error: {who} cannot bypass as `{r}`: {}; nothing ran",
                        if allowed.contains(&r.as_str()) {
                            format!("{who} is not a member of role `{r}`")
                        } else {
                            format!("`{r}` may not bypass (allowed: {})", allowed.join(", "))
                        }
                    )));
                }
                None => {
                    if !allowed.iter().any(|a| names(&plan.roles, a, who)) {
                        return Err(refused(format!(
                            "error: {who} may not bypass the promotion to `{env}` (allowed: {}); nothing ran",
                            allowed.join(", ")
                        )));
                    }
                    roles_of(&plan.roles, &rule.by, who)
                        .first()
                        .map(|r| r.to_string())
                }
            };
            let reason = crate::decide::scrub_for(plan, env, reason);
            store
                .record_audit_note(
                    AuditKind::Bypass,
                    None,
                    &json!({
                        "environment": env,
                        "skipped": format!("promotion from {}{}", pf.value, if p.soak.is_some() { " and soak" } else { "" }),
                        "actor": who,
                        "role": role,
                        "reason": reason,
                        "version": release.0,
                        "sha": release.1,
                        "plan_hash": plan.hash,
                    }),
                    stagegate_store::now_millis(),
                )
                .await?;
            eprintln!(
                "bypass: {who}{} skips the promotion from `{}` to `{env}`: {reason} (recorded in the audit log)",
                role.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
                pf.value
            );
            bypassed = Some((who.to_string(), reason));
            (None, Artifact::new(release.0, release.1, BTreeMap::new()))
        }
        (None, None) => (None, Artifact::new(release.0, release.1, BTreeMap::new())),
    };
    if !p.tags.is_empty() && !p.tags.iter().any(|t| t.value.matches(&artifact.version)) {
        return Err(refused(format!(
            "error: release {} may not go to `{env}`: its version matches none of `tags` ({}, plan line {}); nothing ran\n  = help: deploy a release whose version matches, e.g. a release tag",
            artifact.version,
            p.tags
                .iter()
                .map(|t| t.value.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            p.tags[0].span.pos.line
        )));
    }
    // With a bypass the soak is skipped; approvals and the wait timer still apply.
    let soak_since = source.as_ref().and_then(|(_, d)| d.finished_at);
    let needs_request = p.waits() || (p.soak.is_some() && source.is_some());
    let mut authorization = Authorization {
        pinned: artifact.services.clone(),
        request: None,
        artifact: artifact.clone(),
        from: source.as_ref().map(|(f, d)| (f.clone(), d.id)),
        approvals: Vec::new(),
        bypass: bypassed,
    };
    if !needs_request {
        return Ok(Some(authorization));
    }
    let (req, created) = request_for(
        plan,
        store,
        env,
        who,
        &artifact,
        source.as_ref().map(|(f, d)| (f.as_str(), d.id)),
    )
    .await?;
    if created {
        eprintln!(
            "request #{}: {} {} to `{env}` (artifact {}), by {who}",
            req.id,
            if source.is_some() {
                "promotion of"
            } else {
                "deploy of"
            },
            artifact.version,
            artifact.short()
        );
    }
    let started = std::time::Instant::now();
    let mut last_said = Vec::new();
    loop {
        let approvals = store.approvals(req.id).await?;
        let now = stagegate_store::now_millis();
        let (st, counted) = standing(plan, p, &req, &artifact, soak_since, &approvals, now);
        match st {
            Standing::Ready => {
                let by: Vec<String> = counted
                    .iter()
                    .map(|c| match &c.role {
                        Some(r) => format!("{} ({r})", c.actor),
                        None => c.actor.clone(),
                    })
                    .collect();
                let summary = format!(
                    "approved{}; deploy started by {who}",
                    if by.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", by.join(", "))
                    }
                );
                store
                    .finish_deployment(req.id, Outcome::Approved, exit::SUCCESS, &summary, now)
                    .await?;
                store
                    .record_audit_note(
                        AuditKind::Promotion,
                        Some(req.id),
                        &json!({
                            "environment": env,
                            "request": req.id,
                            "from": source.as_ref().map(|(f, _)| f),
                            "source_deployment": source.as_ref().map(|(_, d)| d.id),
                            "artifact": artifact.digest,
                            "version": artifact.version,
                            "sha": artifact.sha,
                            "plan_hash": plan.hash,
                            "approvals": counted.iter().map(|c| c.id).collect::<Vec<_>>(),
                            "by": who,
                        }),
                        now,
                    )
                    .await?;
                authorization.request = Some(req.id);
                authorization.approvals = counted;
                return Ok(Some(authorization));
            }
            Standing::Rejected(why) => {
                let summary = why.clone();
                store
                    .finish_deployment(req.id, Outcome::Rejected, exit::REFUSED, &summary, now)
                    .await?;
                return Err(refused(format!(
                    "error: request #{} to deploy {} to `{env}` was {why}; nothing ran\n  = help: a rejected request stays rejected; fix what was found and deploy a new release through `{}` again",
                    req.id,
                    artifact.version,
                    source.as_ref().map_or(env, |(f, _)| f.as_str())
                )));
            }
            Standing::Waiting(what) => {
                if created && last_said.is_empty() {
                    wait.notify
                        .send(&awaiting_approval(plan, env, &req, &artifact, &what));
                }
                if what != last_said {
                    // `history` shows what the request waits for, as of its last check.
                    let summary = format!("awaiting approval: waits for {}", what.join("; "));
                    store
                        .finish_deployment(
                            req.id,
                            Outcome::AwaitingApproval,
                            exit::AWAITING_APPROVAL,
                            &summary,
                            now,
                        )
                        .await?;
                }
                if !wait.wait {
                    let list = what
                        .iter()
                        .map(|w| format!("\n  - {w}"))
                        .collect::<String>();
                    return Err(Failure::new(
                        exit::AWAITING_APPROVAL,
                        format!(
                            "request #{} to deploy {} to `{env}` is awaiting approval; nothing ran. It waits for:{list}\n  = help: `stagegate approve {env} --role ROLE` records an approval; run this command again (or with --wait) to go on",
                            req.id, artifact.version
                        ),
                    ));
                }
                if what != last_said {
                    for w in &what {
                        eprintln!("waiting (request #{}): {w}", req.id);
                    }
                    last_said = what;
                }
                if let Some(t) = wait.timeout
                    && started.elapsed() >= t
                {
                    return Err(Failure::new(
                        exit::AWAITING_APPROVAL,
                        format!(
                            "error: gave up after {} waiting for request #{} to `{env}`; it stays open\n  = help: run this command again to go on waiting",
                            stagegate_plan::yaml::fmt_duration(t),
                            req.id
                        ),
                    ));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tokio::signal::ctrl_c() => {
                        return Err(Failure::new(
                            exit::AWAITING_APPROVAL,
                            format!("interrupted: request #{} stays open, awaiting approval", req.id),
                        ));
                    }
                }
                // A changed plan or artifact voids the request: stop waiting on it.
                if let Some(cur) = store.deployment(req.id).await?
                    && cur.outcome != Outcome::AwaitingApproval
                {
                    return Err(refused(format!(
                        "error: request #{} is no longer open: {} ({}); nothing ran",
                        req.id,
                        cur.outcome,
                        cur.summary.unwrap_or_default()
                    )));
                }
            }
        }
    }
}

/// `stagegate approve ENV` and `stagegate reject ENV`.
pub async fn approve(cli: &Cli, args: &ApproveArgs, verdict: Verdict) -> CmdResult {
    let plan = load_plan(cli)?;
    if plan.environment(&args.env).is_none() {
        return Err(Failure::invalid(format!(
            "error: the plan has no environment `{}`; it has: {}",
            args.env,
            plan.environment_names().join(", ")
        )));
    }
    let store = open_store(cli, &plan).await?;
    let who = actor(args.actor.as_deref());
    let ask = VerdictAsk {
        env: args.env.clone(),
        deployment: args.deployment,
        role: args.role.clone(),
        comment: args.comment.clone(),
    };
    for line in record_verdict(&plan, &store, &ask, &who, verdict).await? {
        println!("{line}");
    }
    Ok(exit::SUCCESS)
}

/// An approval or rejection asked for, from the command line or the server's API.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct VerdictAsk {
    pub env: String,
    #[serde(default)]
    pub deployment: Option<i64>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Records `who`'s approval or rejection of `ask.env`'s request under the plan's rules;
/// returns what to tell them. Refusals are [`Failure`]s with exit code 9 (2 for bad input).
pub async fn record_verdict(
    plan: &Plan,
    store: &Store,
    args: &VerdictAsk,
    who: &str,
    verdict: Verdict,
) -> Result<Vec<String>, Failure> {
    let who = who.to_string();
    let mut said = Vec::new();
    let env = &args.env;
    let Some(e) = plan.environment(env) else {
        return Err(Failure::invalid(format!(
            "error: the plan has no environment `{env}`; it has: {}",
            plan.environment_names().join(", ")
        )));
    };
    let Some(rule) = &e.protection.approvals else {
        return Err(Failure::invalid(format!(
            "error: environment `{env}` takes no approvals: the plan gives it no `approvals` rule (line {})",
            e.span.pos.line
        )));
    };
    let comment = args.comment.as_deref().map(str::trim).unwrap_or("");
    if verdict == Verdict::Rejected && comment.is_empty() {
        return Err(Failure::invalid(
            "error: a rejection needs --comment: say what is wrong, e.g. --comment \"p95 doubled in staging since 14:00\"",
        ));
    }
    let req = match args.deployment {
        Some(id) => match store.deployment(id).await? {
            Some(d) if d.kind == REQUEST && d.environment == *env => d,
            Some(d) => {
                return Err(Failure::invalid(format!(
                    "error: deployment #{id} is a `{}` run of `{}`, not a request to deploy to `{env}`\n  = help: `stagegate status {env}` shows its open request",
                    d.kind, d.environment
                )));
            }
            None => {
                return Err(Failure::invalid(format!(
                    "error: there is no deployment #{id}\n  = help: `stagegate history {env}` lists them"
                )));
            }
        },
        None => match open_request(store, env).await? {
            Some(d) => d,
            None => {
                return Err(Failure::invalid(format!(
                    "error: nothing in `{env}` awaits approval\n  = help: `stagegate promote FROM {env}` (or `deploy {env}`) asks for it first"
                )));
            }
        },
    };
    if req.outcome != Outcome::AwaitingApproval {
        return Err(refused(format!(
            "error: request #{} is not open: it is {} ({}); nothing was recorded",
            req.id,
            req.outcome,
            req.summary.clone().unwrap_or_default()
        )));
    }
    if req.plan_hash != plan.hash {
        return Err(refused(format!(
            "error: the plan changed since request #{} was made (sha256 {} then, {} now): an approval binds to the plan it approves; nothing was recorded\n  = help: run `stagegate promote` (or `deploy`) again: it voids the old request and opens one for this plan",
            req.id,
            &req.plan_hash[..12.min(req.plan_hash.len())],
            &plan.hash[..12]
        )));
    }
    let binding = request_binding(store, req.id).await?.unwrap_or_default();
    let digest = binding["artifact"]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if who == req.actor && !rule.self_approve {
        return Err(refused(format!(
            "error: {who} asked for request #{} and cannot {} it: the plan does not allow self-approval; nothing was recorded\n  = help: someone else from {} must",
            req.id,
            if verdict == Verdict::Approved {
                "approve"
            } else {
                "reject"
            },
            if rule.from.is_empty() {
                "the team".to_string()
            } else {
                rule.from
                    .iter()
                    .map(|f| f.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    let allowed: Vec<&str> = rule.from.iter().map(|f| f.value.as_str()).collect();
    let role = match &args.role {
        Some(r) => {
            if !plan.roles.contains_key(r) {
                return Err(Failure::invalid(format!(
                    "error: the plan has no role `{r}`; its roles are: {}",
                    if plan.roles.is_empty() {
                        "(none)".to_string()
                    } else {
                        plan.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                )));
            }
            if !names(&plan.roles, r, &who) {
                return Err(refused(format!(
                    "error: {who} is not a member of role `{r}` (its members: {}); nothing was recorded",
                    plan.roles[r].join(", ")
                )));
            }
            if !allowed.is_empty() && !allowed.contains(&r.as_str()) {
                return Err(refused(format!(
                    "error: role `{r}` does not approve deploys to `{env}` (who does: {}); nothing was recorded",
                    allowed.join(", ")
                )));
            }
            Some(r.clone())
        }
        None => {
            if !allowed.is_empty() && !allowed.iter().any(|a| names(&plan.roles, a, &who)) {
                return Err(refused(format!(
                    "error: {who} may not approve deploys to `{env}` (who may: {}); nothing was recorded",
                    allowed.join(", ")
                )));
            }
            let mine = roles_of(&plan.roles, &rule.from, &who);
            match mine.as_slice() {
                [] => None,
                [one] => Some(one.to_string()),
                many => {
                    return Err(Failure::invalid(format!(
                        "error: {who} is in more than one approving role ({}); say which with --role",
                        many.join(", ")
                    )));
                }
            }
        }
    };
    let approvals = store.approvals(req.id).await?;
    if let Some(prev) = approvals
        .iter()
        .find(|a| a.actor == who && a.plan_hash == plan.hash && a.artifact == digest)
    {
        return Err(refused(format!(
            "error: {who} already {} request #{} at {}: one person gives one approval, whatever their roles; nothing was recorded",
            prev.verdict,
            req.id,
            when(prev.at)
        )));
    }
    if rule.distinct_roles
        && verdict == Verdict::Approved
        && let Some(r) = &role
        && let Some(prev) = approvals.iter().find(|a| {
            a.role.as_deref() == Some(r)
                && a.verdict == Verdict::Approved
                && a.plan_hash == plan.hash
                && a.artifact == digest
        })
    {
        return Err(refused(format!(
            "error: role `{r}` has approved request #{} already ({}); approvals must come from distinct roles; nothing was recorded",
            req.id, prev.actor
        )));
    }
    let record = ApprovalRecord {
        id: 0,
        deployment_id: req.id,
        environment: env.clone(),
        verdict,
        actor: who.clone(),
        role: role.clone(),
        comment: crate::decide::scrub_for(plan, env, comment),
        plan_hash: plan.hash.clone(),
        artifact: digest.clone(),
        at: stagegate_store::now_millis(),
    };
    let aid = store.record_approval(&record).await?;
    let _ = store
        .record_event(
            req.id,
            verdict.as_str(),
            &json!({ "approval": aid, "actor": who, "role": role, "comment": record.comment }),
            record.at,
        )
        .await;
    let as_role = role
        .as_ref()
        .map(|r| format!(" as {r}"))
        .unwrap_or_default();
    if verdict == Verdict::Rejected {
        store
            .finish_deployment(
                req.id,
                Outcome::Rejected,
                exit::REFUSED,
                &format!("rejected by {who}{as_role}: {}", record.comment),
                record.at,
            )
            .await?;
        said.push(format!(
            "rejected: request #{} ({} to `{env}`) by {who}{as_role}; it is closed",
            req.id, req.release_version
        ));
        return Ok(said);
    }
    let (st, counted) = standing_of(store, plan, &e.protection, &req, &binding).await?;
    said.push(format!(
        "approved: request #{} ({} to `{env}`) by {who}{as_role} ({} of {})",
        req.id,
        req.release_version,
        counted.len(),
        rule.required
    ));
    let again = match binding["from"].as_str() {
        Some(f) => format!("stagegate promote {f} {env}"),
        None => format!(
            "stagegate deploy {env} --release-version {}",
            req.release_version
        ),
    };
    match st {
        Standing::Ready => said.push(format!("every condition holds: `{again}` deploys it")),
        Standing::Waiting(what) => {
            for w in what {
                said.push(format!("still waits for: {w}"));
            }
        }
        Standing::Rejected(_) => {}
    }
    Ok(said)
}

/// An environment's open request and a line on where it stands (`status`, the server).
pub async fn describe_open(
    store: &Store,
    plan: &Plan,
    env: &str,
) -> Result<Option<(Deployment, String)>, Failure> {
    let Some(req) = open_request(store, env).await? else {
        return Ok(None);
    };
    let Some(e) = plan.environment(env) else {
        return Ok(None);
    };
    let binding = request_binding(store, req.id).await?.unwrap_or_default();
    let (st, _) = standing_of(store, plan, &e.protection, &req, &binding).await?;
    let from = binding["from"]
        .as_str()
        .map(|f| format!(" from `{f}`"))
        .unwrap_or_default();
    let head = format!(
        "request #{}: {}{from} by {}, awaiting approval",
        req.id, req.release_version, req.actor
    );
    let text = match st {
        Standing::Waiting(w) => format!("{head}; waits for:\n    - {}", w.join("\n    - ")),
        Standing::Ready => {
            format!("{head}; every condition holds: promote (or deploy) again to go on")
        }
        Standing::Rejected(why) => format!("{head}; {why}"),
    };
    Ok(Some((req, text)))
}
