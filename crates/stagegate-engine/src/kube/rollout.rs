//! Waiting for a Deployment's rollout by watching it, as `kubectl rollout status` does.
//!
//! Done when the controller has seen the newest spec (`observedGeneration >= generation`)
//! and every replica is updated and available with no old one left; failed at once when
//! its `Progressing` condition turns `False` with `ProgressDeadlineExceeded`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio_util::sync::CancellationToken;

use super::DeploymentRecord;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{0}")]
    Api(kube::Error),
    #[error("deployment/{name} exceeded its progress deadline: {message}")]
    DeadlineExceeded { name: String, message: String },
    #[error("deployment/{name} did not finish its rollout within {}s: {progress}", .timeout.as_secs())]
    TimedOut {
        name: String,
        timeout: Duration,
        progress: String,
    },
    #[error("deployment/{name} was deleted during its rollout")]
    Deleted { name: String },
    #[error("the wait for deployment/{name} was cancelled")]
    Cancelled { name: String },
}

/// What a Deployment's status says of its rollout.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Done,
    Pending(String),
    Failed(String),
}

pub fn judge(d: &Deployment) -> Verdict {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Verdict::Pending(format!(
            "waiting for the controller to see generation {generation} (it has seen {observed})"
        ));
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Verdict::Failed(c.message.clone().unwrap_or_else(|| "no message".into()));
    }
    let want = d.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        Verdict::Pending(format!("{updated} of {want} replicas updated"))
    } else if total > updated {
        Verdict::Pending(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Verdict::Pending(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Verdict::Done
    }
}

/// Watches deployment `name` until its rollout is done, failed, or `deadline` passes.
pub async fn wait(
    api: &Api<Deployment>,
    name: &str,
    deadline: Instant,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Deployment, WaitError> {
    let mut progress;
    let timed_out = |progress: String| WaitError::TimedOut {
        name: name.to_string(),
        timeout,
        progress,
    };
    loop {
        // Read it first: the watch then starts from this version, so no change is missed.
        let d = api.get(name).await.map_err(WaitError::Api)?;
        match judge(&d) {
            Verdict::Done => return Ok(d),
            Verdict::Failed(message) => {
                return Err(WaitError::DeadlineExceeded {
                    name: name.into(),
                    message,
                });
            }
            Verdict::Pending(p) => progress = p,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(progress));
        }
        let version = d.metadata.resource_version.clone().unwrap_or_default();
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(left.as_secs().clamp(1, 290) as u32);
        let mut stream = api
            .watch(&wp, &version)
            .await
            .map_err(WaitError::Api)?
            .boxed();
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = tokio::time::sleep_until(deadline.into()) => return Err(timed_out(progress)),
                _ = cancel.cancelled() => return Err(WaitError::Cancelled { name: name.into() }),
            };
            match next {
                Some(Ok(WatchEvent::Added(d) | WatchEvent::Modified(d))) => match judge(&d) {
                    Verdict::Done => return Ok(d),
                    Verdict::Failed(message) => {
                        return Err(WaitError::DeadlineExceeded {
                            name: name.into(),
                            message,
                        });
                    }
                    Verdict::Pending(p) => progress = p,
                },
                Some(Ok(WatchEvent::Deleted(_))) => {
                    return Err(WaitError::Deleted { name: name.into() });
                }
                Some(Ok(WatchEvent::Bookmark(_))) => {}
                // 410 Gone (the version is too old), a dropped stream, the server's own
                // timeout: read the Deployment again and watch anew.
                Some(Ok(WatchEvent::Error(_))) | Some(Err(_)) | None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
}

fn images(d: &Deployment) -> Vec<String> {
    d.spec
        .template
        .spec
        .as_ref()
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn revision(d: &Deployment) -> Option<String> {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
}

/// What the record keeps of a Deployment whose rollout ended.
pub fn record_of(name: &str, d: &Deployment) -> DeploymentRecord {
    DeploymentRecord {
        name: name.to_string(),
        images: images(d),
        generation: d.metadata.generation.unwrap_or(0),
        revision: revision(d),
    }
}

/// `deployment web 3/3 available, revision 4, image registry/web:1.0.0`, and whether any
/// replica is available.
pub fn describe_live(name: &str, d: &Deployment) -> (String, bool) {
    let want = d.spec.replicas.unwrap_or(1);
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let mut line = format!("deployment {name} {available}/{want} available");
    if let Some(r) = revision(d) {
        line.push_str(&format!(", revision {r}"));
    }
    let imgs = images(d);
    if !imgs.is_empty() {
        line.push_str(&format!(", image {}", imgs.join(", ")));
    }
    (line, available > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "generation": generation },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "web" } },
                "template": { "spec": { "containers": [{ "name": "web", "image": "web:1" }] } },
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_done_only_when_the_controller_saw_the_spec_and_all_replicas_are_new() {
        let all = serde_json::json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
        });
        assert_eq!(judge(&deployment(2, all.clone())), Verdict::Done);
        // The same figures from before the new generation was seen say nothing.
        assert!(matches!(judge(&deployment(3, all)), Verdict::Pending(_)));
        let surge = serde_json::json!({
            "observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3,
        });
        assert_eq!(
            judge(&deployment(2, surge)),
            Verdict::Pending("1 old replicas pending termination".into())
        );
        let unavailable = serde_json::json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2,
        });
        assert!(matches!(
            judge(&deployment(2, unavailable)),
            Verdict::Pending(_)
        ));
    }

    #[test]
    fn progress_deadline_exceeded_fails_at_once() {
        let failed = serde_json::json!({
            "observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
            "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-2\" has timed out progressing.",
            }],
        });
        assert_eq!(
            judge(&deployment(2, failed)),
            Verdict::Failed("ReplicaSet \"web-2\" has timed out progressing.".into())
        );
    }
}
