//! A fake Kubernetes API server for tests (`mod kube;`) and for `examples/kubernetes`.
//!
//! Kubernetes cannot run on this machine (no container runtime, no kubelet), so its API is
//! faked: an in-process axum server on 127.0.0.1 speaking plain HTTP. Only the endpoints
//! stagegate uses are implemented:
//! - `GET` and `PATCH` (server-side apply, `application/apply-patch+yaml`; and
//!   `application/merge-patch+json`) of any namespaced object under `/api/v1/...` and
//!   `/apis/GROUP/VERSION/...`;
//! - `GET ...?watch=true` of a collection with `fieldSelector=metadata.name=NAME`, which
//!   streams watch events (one JSON object a line) until `timeoutSeconds`.
//!
//! Every request needs `Authorization: Bearer TOKEN` (else 401; `READ_ONLY_TOKEN` may read
//! but a patch gets 403), and its namespace must
//! exist (else 404 `namespaces "x" not found`). A Deployment without a container image is
//! refused with 422. A tiny controller plays the Deployment controller: after an apply
//! changes a Deployment's spec it bumps `metadata.generation` (and, when the pod template
//! changed, the `deployment.kubernetes.io/revision` annotation); half the rollout delay
//! later it has seen the generation and updated one replica; at the full delay the rollout
//! is done, unless the first container's image tag contains `bad` (then `Progressing=False`
//! with `ProgressDeadlineExceeded` and the old available count) or `slow` (it never ends).
//! Every request is recorded, so tests can assert what was applied.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The token the fake accepts.
pub const TOKEN: &str = "fake-kube-token";
/// A token the fake lets read but not change anything (403 on a patch).
pub const READ_ONLY_TOKEN: &str = "fake-kube-viewer";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Key of an object: (`api/v1` or `apis/apps/v1`, plural, namespace, name).
type Key = (String, String, String, String);

struct Inner {
    token: String,
    namespaces: Vec<String>,
    objects: BTreeMap<Key, Value>,
    seen: Vec<Seen>,
    version: u64,
    rollout: Duration,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<(Key, &'static str, Value)>,
}

pub struct FakeKube {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the fake on a free loopback port, with namespaces `default`, `staging` and
    /// `architect-staging` (seed 001's)
    /// and a rollout that takes `rollout` (half of it to the first updated replica).
    pub fn start(rollout: Duration) -> FakeKube {
        Self::start_on(0, rollout)
    }

    pub fn start_on(port: u16, rollout: Duration) -> FakeKube {
        let (changes, _) = broadcast::channel(1024);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                token: TOKEN.into(),
                namespaces: vec![
                    "default".into(),
                    "staging".into(),
                    "architect-staging".into(),
                ],
                objects: BTreeMap::new(),
                seen: Vec::new(),
                version: 1,
                rollout,
            })),
            changes,
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
            // Open watch streams would keep a graceful shutdown waiting: drop them.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        FakeKube {
            port,
            url: format!("http://127.0.0.1:{port}"),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Writes a kubeconfig at `path` with context `fake` (namespace `staging`, the user's
    /// token `token`) pointing at this server, and returns the path.
    pub fn kubeconfig(&self, path: &Path, token: &str) -> PathBuf {
        self.kubeconfig_for(path, token, "fake")
    }

    /// [`FakeKube::kubeconfig`] with the context named `context`.
    pub fn kubeconfig_for(&self, path: &Path, token: &str, context: &str) -> PathBuf {
        let text = format!(
            "apiVersion: v1
kind: Config
current-context: {context}
clusters:
- name: fake
  cluster:
    server: {url}
contexts:
- name: {context}
  context:
    cluster: fake
    user: tester
    namespace: staging
users:
- name: tester
  user:
    token: {token}
",
            url = self.url
        );
        std::fs::write(path, text).unwrap();
        path.to_path_buf()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.inner.lock().unwrap().seen.clone()
    }

    /// The server-side applies of `plural/name`, oldest first.
    pub fn applies(&self, plural: &str, name: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| {
                s.method == "PATCH"
                    && s.content_type.starts_with("application/apply-patch")
                    && s.path.ends_with(&format!("/{plural}/{name}"))
            })
            .collect()
    }

    /// The object as stored now.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .objects
            .iter()
            .find(|((_, p, ns, n), _)| p == plural && ns == namespace && n == name)
            .map(|(_, v)| v.clone())
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn query_of(q: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `/api/v1/namespaces/NS/PLURAL[/NAME]` or `/apis/G/V/namespaces/NS/PLURAL[/NAME]`.
fn parse_path(path: &str) -> Option<(String, String, String, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match *segs.first()? {
        "api" if segs.len() >= 2 => (format!("api/{}", segs[1]), &segs[2..]),
        "apis" if segs.len() >= 3 => (format!("apis/{}/{}", segs[1], segs[2]), &segs[3..]),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, plural] => Some((gv, ns.to_string(), plural.to_string(), None)),
        ["namespaces", ns, plural, name] => Some((
            gv,
            ns.to_string(),
            plural.to_string(),
            Some(name.to_string()),
        )),
        _ => None,
    }
}

async fn handle(State(s): State<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query_of(req.uri().query());
    let headers: HeaderMap = req.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    {
        let mut inner = s.inner.lock().unwrap();
        inner.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth == format!("Bearer {READ_ONLY_TOKEN}") {
            if method == Method::PATCH {
                let (what, ns) = parse_path(&path)
                    .map(|(_, ns, plural, _)| (plural, ns))
                    .unwrap_or_default();
                return status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "{what} is forbidden: User \"viewer\" cannot patch resource \"{what}\" in the namespace \"{ns}\""
                    ),
                );
            }
        } else if auth != format!("Bearer {}", inner.token) {
            return status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
            );
        }
    }
    let Some((gv, ns, plural, name)) = parse_path(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the fake serves no {path}"),
        );
    };
    if !s.inner.lock().unwrap().namespaces.contains(&ns) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        );
    }
    let group = gv.split('/').nth(1).filter(|_| gv.starts_with("apis/"));
    let resource = match group {
        Some(g) => format!("{plural}.{g}"),
        None => plural.clone(),
    };
    match (method, name) {
        (Method::GET, Some(name)) => {
            let key = (gv, plural, ns, name.clone());
            match s.inner.lock().unwrap().objects.get(&key) {
                Some(v) => ok(StatusCode::OK, v),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{resource} \"{name}\" not found"),
                ),
            }
        }
        (Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            watch(s, gv, plural, ns, &query)
        }
        (Method::PATCH, Some(name)) => patch(
            s,
            (gv, plural, ns, name),
            &resource,
            &content_type,
            &query,
            &body,
        ),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake does not serve this".into(),
        ),
    }
}

fn watch(
    s: Shared,
    gv: String,
    plural: String,
    ns: String,
    query: &BTreeMap<String, String>,
) -> Response {
    let name = query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string);
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let mut rx = s.changes.subscribe();
    let matches = move |k: &Key| {
        k.0 == gv && k.1 == plural && k.2 == ns && name.as_ref().is_none_or(|n| &k.3 == n)
    };
    // What changed after `since` and before this watch began is sent first.
    let initial: Vec<Value> = {
        let inner = s.inner.lock().unwrap();
        inner
            .objects
            .iter()
            .filter(|(k, v)| {
                matches(k) && rv(v) > since
            })
            .map(|(_, v)| json!({ "type": if since == 0 { "ADDED" } else { "MODIFIED" }, "object": v }))
            .collect()
    };
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        for ev in initial {
            if tx.send(Ok(Bytes::from(format!("{ev}\n")))).await.is_err() {
                return;
            }
        }
        let end = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = &mut end => return,
                r = rx.recv() => match r {
                    Ok((k, kind, obj)) if matches(&k) => {
                        let ev = json!({ "type": kind, "object": obj });
                        if tx.send(Ok(Bytes::from(format!("{ev}\n")))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(out, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn rv(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn patch(
    s: Shared,
    key: Key,
    resource: &str,
    content_type: &str,
    query: &BTreeMap<String, String>,
    body: &str,
) -> Response {
    let name = key.3.clone();
    let Ok(incoming) = serde_json::from_str::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON".into(),
        );
    };
    let apply = content_type.starts_with("application/apply-patch");
    if apply && query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        );
    }
    if !apply && !content_type.starts_with("application/merge-patch") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the fake takes apply and merge patches, not {content_type}"),
        );
    }
    let is_deployment = key.1 == "deployments";
    let mut inner = s.inner.lock().unwrap();
    let old = inner.objects.get(&key).cloned();
    let mut obj = match (&old, apply) {
        (None, false) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
            );
        }
        (None, true) => {
            let mut o = incoming.clone();
            o["metadata"]["uid"] = json!(format!("uid-{}", inner.version));
            o["metadata"]["generation"] = json!(1);
            o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            if is_deployment {
                o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
                o["status"] = json!({});
            }
            o
        }
        (Some(old), true) => {
            // The applied intent replaces what the object held; the server's fields stay.
            let mut o = incoming.clone();
            for f in ["uid", "generation", "creationTimestamp"] {
                o["metadata"][f] = old["metadata"][f].clone();
            }
            let rev = old
                .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .cloned();
            if let Some(r) = rev {
                o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = r;
            }
            if let Some(st) = old.get("status") {
                o["status"] = st.clone();
            }
            o
        }
        (Some(old), false) => {
            let mut o = old.clone();
            merge(&mut o, &incoming);
            o
        }
    };
    if is_deployment {
        let image = obj
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .unwrap_or("");
        if image.is_empty() {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!(
                    "Deployment.apps \"{name}\" is invalid: spec.template.spec.containers[0].image: Required value"
                ),
            );
        }
    }
    let spec_changed = old
        .as_ref()
        .is_some_and(|o| o.get("spec") != obj.get("spec"));
    let template_changed = old
        .as_ref()
        .is_some_and(|o| o.pointer("/spec/template") != obj.pointer("/spec/template"));
    if spec_changed {
        let g = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        obj["metadata"]["generation"] = json!(g);
    }
    if is_deployment && template_changed {
        let r: i64 = obj
            .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
            json!((r + 1).to_string());
    }
    inner.version += 1;
    obj["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    inner.objects.insert(key.clone(), obj.clone());
    let rollout = inner.rollout;
    drop(inner);
    let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
    let _ = s.changes.send((key.clone(), kind, obj.clone()));
    if is_deployment && (old.is_none() || spec_changed) {
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        tokio::spawn(control(s.clone(), key, generation, rollout));
    }
    ok(
        if old.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &obj,
    )
}

/// The Deployment controller, faked: half a rollout to the first updated replica, a
/// whole one to the end (or to `ProgressDeadlineExceeded` for an image tagged `:bad`).
async fn control(s: Shared, key: Key, generation: i64, rollout: Duration) {
    let step = |s: &Shared, f: &dyn Fn(&mut Value, i64, String)| -> bool {
        let mut inner = s.inner.lock().unwrap();
        let Some(obj) = inner.objects.get(&key).cloned() else {
            return false;
        };
        // A newer apply has its own controller task.
        if obj["metadata"]["generation"].as_i64() != Some(generation) {
            return false;
        }
        let mut obj = obj;
        let want = obj
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let image = obj
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        f(&mut obj, want, image);
        obj["status"]["observedGeneration"] = json!(generation);
        inner.version += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.version.to_string());
        inner.objects.insert(key.clone(), obj.clone());
        drop(inner);
        let _ = s.changes.send((key.clone(), "MODIFIED", obj));
        true
    };
    tokio::time::sleep(rollout / 2).await;
    let going = step(&s, &|o, want, _| {
        let available = o
            .pointer("/status/availableReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        o["status"]["updatedReplicas"] = json!(want.min(1));
        o["status"]["replicas"] = json!(available + want.min(1));
        o["status"]["conditions"] = json!([{
            "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
            "message": "ReplicaSet is progressing.",
        }]);
    });
    if !going {
        return;
    }
    tokio::time::sleep(rollout / 2).await;
    step(&s, &|o, want, image| {
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let tag = image.rsplit(':').next().unwrap_or("");
        if tag.contains("bad") {
            o["status"]["conditions"] = json!([{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": format!("ReplicaSet \"{name}-bad\" has timed out progressing."),
            }]);
        } else if tag.contains("slow") {
            // Never done: the replica never becomes available.
        } else {
            o["status"]["replicas"] = json!(want);
            o["status"]["updatedReplicas"] = json!(want);
            o["status"]["readyReplicas"] = json!(want);
            o["status"]["availableReplicas"] = json!(want);
            o["status"]["conditions"] = json!([{
                "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                "message": format!("ReplicaSet \"{name}\" has successfully progressed."),
            }, {
                "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }]);
        }
    });
}
