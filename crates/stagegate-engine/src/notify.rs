//! Notifications: a run's start and end (and a deploy waiting for approval) sent to Slack
//! or to any webhook, in the background.
//!
//! - [`Target`]: one `notify` entry of the plan with its URL and signing key rendered
//!   (both [`Secret`]s, never shown: a target names itself by index and host only).
//! - [`Notification`]: what is sent, the generic webhook's JSON body as it is.
//! - [`Notifier`]: sends each notification to every target that wants it, each in its own
//!   task, retrying connection errors, 5xx and 429 with backoff. Nothing waits for a send
//!   during the run; [`Notifier::drain`] waits for what is pending at the end, for a
//!   bounded time, and returns the failures as warnings for the caller to show.
//! - [`NotifySink`]: the notifier as an [`EventSink`] of a session, sending `started` on
//!   [`Event::RunStarted`] and the outcome on [`Event::RunFinished`].
//!
//! A failed notification never changes a run's outcome or exit code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use stagegate_plan::{NotifyEvent, NotifyKind, Plan, Scope, Secret};
use tokio::task::JoinSet;

use crate::event::{Event, Millis, Outcome};
use crate::session::EventSink;

/// The first pause between attempts; it doubles after each.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// No pause between attempts is longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One `notify` entry, rendered for a run.
#[derive(Debug, Clone)]
pub struct Target {
    /// 1-based, in the order of [`Plan::notifiers`].
    pub index: usize,
    pub kind: NotifyKind,
    pub url: Secret,
    /// The URL's host: all that is ever said of where a target sends.
    pub host: String,
    pub secret: Option<Secret>,
    pub on: Vec<NotifyEvent>,
    pub retries: u32,
    pub timeout: Duration,
    pub link: Option<String>,
}

impl Target {
    /// `notifier #2 (webhook to hooks.example.com)`.
    pub fn label(&self) -> String {
        format!(
            "notifier #{} ({} to {})",
            self.index,
            self.kind.as_str(),
            self.host
        )
    }

    /// The longest one notification may take to send: every attempt timing out, and the
    /// pauses between them.
    pub fn max_time(&self) -> Duration {
        let mut total = self.timeout * (self.retries + 1);
        for attempt in 0..self.retries {
            total += backoff(attempt);
        }
        total
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF)
}

/// Renders the notifiers of a run of `scope.environment`. A notifier whose URL cannot be
/// rendered (an optional secret without a value) or is not a URL is left out, with a
/// warning that names it by index.
pub fn targets(plan: &Plan, scope: &Scope) -> (Vec<Target>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (i, n) in plan.notifiers(&scope.environment).into_iter().enumerate() {
        let index = i + 1;
        let what = format!("notifier #{index} ({})", n.kind.as_str());
        let url = match scope.render(&n.url.value) {
            Ok(u) => Secret::new(u),
            Err(e) => {
                warnings.push(format!(
                    "warning: {what} is left out: its URL cannot be rendered: {e}"
                ));
                continue;
            }
        };
        let host = match url::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                u.host_str().unwrap_or_default().to_string()
            }
            _ => {
                warnings.push(format!(
                    "warning: {what} is left out: its URL is not an http:// or https:// URL with a host"
                ));
                continue;
            }
        };
        let secret = match n.secret.as_ref().map(|s| scope.render(&s.value)) {
            None => None,
            Some(Ok(s)) => Some(Secret::new(s)),
            Some(Err(e)) => {
                warnings.push(format!(
                    "warning: {what} is left out: its signing secret cannot be rendered: {e}"
                ));
                continue;
            }
        };
        let link = n
            .link
            .as_ref()
            .and_then(|l| scope.render(&l.value).ok())
            .map(|l| scope.scrubber().scrub(&l));
        out.push(Target {
            index,
            kind: n.kind,
            url,
            host,
            secret,
            on: n.on.clone(),
            retries: n.retries,
            timeout: n.timeout,
            link,
        });
    }
    (out, warnings)
}

/// The release a notification is about.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NotifiedRelease {
    pub version: String,
    pub sha: String,
}

/// What a webhook receives (as JSON) and what a Slack message is made of.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// `started`, `succeeded`, `rolled_back`, `awaiting_approval`, ...
    pub event: &'static str,
    /// `deploy` or `rollback` (a manual rollback that `succeeded` put services back).
    pub kind: String,
    pub project: String,
    pub environment: String,
    /// `None` for a deploy awaiting approval: it has a request, not a deployment yet.
    pub deployment_id: Option<i64>,
    /// The request a deploy awaiting approval is recorded as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<i64>,
    pub release: NotifiedRelease,
    /// The outcome of a finished run (`None` for `started` and `awaiting_approval`).
    pub outcome: Option<&'static str>,
    pub exit_code: Option<i32>,
    pub summary: Option<String>,
    pub duration_ms: Option<u64>,
    /// RFC 3339, UTC.
    pub at: String,
}

impl Notification {
    fn kind(&self) -> NotifyEvent {
        NotifyEvent::parse(self.event).unwrap_or(NotifyEvent::Started)
    }
}

/// RFC 3339 for milliseconds since the epoch.
pub fn rfc3339(at: Millis) -> String {
    jiff::Timestamp::from_millisecond(at)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn notify_event(o: Outcome) -> NotifyEvent {
    match o {
        Outcome::Succeeded => NotifyEvent::Succeeded,
        Outcome::Failed => NotifyEvent::Failed,
        Outcome::RolledBack => NotifyEvent::RolledBack,
        Outcome::RollbackFailed => NotifyEvent::RollbackFailed,
        Outcome::Interrupted => NotifyEvent::Interrupted,
        Outcome::AwaitingDecision => NotifyEvent::AwaitingDecision,
    }
}

/// Sends notifications in the background. Cloning shares the pending sends.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Default for Notifier {
    /// A notifier with no target: it sends nothing.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl std::fmt::Debug for Notifier {
    // The targets' URLs are secrets: only their labels are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.inner.targets.iter().map(Target::label))
            .finish()
    }
}

struct Inner {
    targets: Vec<Target>,
    client: reqwest::Client,
    tasks: Mutex<JoinSet<Option<String>>>,
    /// Sends not finished yet, by a number of their own: what [`Notifier::drain`] gives up on.
    pending: Mutex<BTreeMap<u64, String>>,
    next: AtomicU64,
}

impl Notifier {
    pub fn new(targets: Vec<Target>) -> Self {
        let client = reqwest::Client::builder()
            // A webhook that redirects could send the signed body somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stagegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a default HTTP client always builds");
        Self {
            inner: Arc::new(Inner {
                targets,
                client,
                tasks: Mutex::new(JoinSet::new()),
                pending: Mutex::new(BTreeMap::new()),
                next: AtomicU64::new(1),
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.targets.is_empty()
    }

    /// Starts sending `n` to every target that wants its event; returns at once. Must be
    /// called within a tokio runtime.
    pub fn send(&self, n: &Notification) {
        let kind = n.kind();
        for t in self.inner.targets.iter().filter(|t| t.on.contains(&kind)) {
            let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
            let label = t.label();
            lock(&self.inner.pending).insert(id, format!("{label}, `{}`", n.event));
            let body = match t.kind {
                NotifyKind::Webhook => serde_json::to_vec(n),
                NotifyKind::Slack => serde_json::to_vec(&slack_message(n, t.link.as_deref())),
            }
            .unwrap_or_default();
            let client = self.inner.client.clone();
            let target = t.clone();
            let inner = self.inner.clone();
            let event = n.event;
            lock(&self.inner.tasks).spawn(async move {
                let r = deliver(&client, &target, event, body).await;
                lock(&inner.pending).remove(&id);
                r.err()
                    .map(|e| format!("warning: {label} could not send `{event}`: {e}"))
            });
        }
    }

    /// The longest any send may take.
    pub fn max_time(&self) -> Duration {
        self.inner
            .targets
            .iter()
            .map(Target::max_time)
            .max()
            .unwrap_or_default()
    }

    /// Waits for the pending sends, at most [`Notifier::max_time`] and a second; returns a
    /// warning for each that failed or was given up on.
    pub async fn drain(&self) -> Vec<String> {
        let limit = self.max_time() + Duration::from_secs(1);
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        let mut warnings = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok(Some(w)))) => warnings.push(w),
                Ok(Some(_)) => {}
                Err(_) => {
                    tasks.abort_all();
                    for what in lock(&self.inner.pending).values() {
                        warnings.push(format!(
                            "warning: {what} still unsent after {limit:?}; gave up"
                        ));
                    }
                    break;
                }
            }
        }
        warnings
    }

    /// The notifier as a session's sink.
    pub fn sink(&self) -> NotifySink {
        NotifySink {
            notifier: self.clone(),
            run: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A unique id for one delivery (the same for each of its attempts).
fn delivery_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let hex = hex::encode(&h.finalize()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `sha256=HEX` of HMAC-SHA256(`key`, `body`): the `X-Stagegate-Signature-256` header.
pub fn signature(key: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one body, retrying connection errors, timeouts, 5xx and 429. The error never
/// holds the URL: it says what happened (`answered 503 Service Unavailable`, `timed out`).
async fn deliver(
    client: &reqwest::Client,
    t: &Target,
    event: &str,
    body: Vec<u8>,
) -> Result<u32, String> {
    let delivery = delivery_id();
    let sig = t.secret.as_ref().map(|k| signature(k.expose(), &body));
    let attempts = t.retries + 1;
    let mut last = String::new();
    for attempt in 0..attempts {
        let mut req = client
            .post(t.url.expose())
            .timeout(t.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if t.kind == NotifyKind::Webhook {
            req = req
                .header("X-Stagegate-Event", event)
                .header("X-Stagegate-Delivery", &delivery);
            if let Some(s) = &sig {
                req = req.header("X-Stagegate-Signature-256", s);
            }
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(attempt + 1),
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                last = format!("answered {}", r.status());
            }
            Ok(r) => {
                return Err(format!(
                    "answered {} (not retried: check the URL and the receiver's settings)",
                    r.status()
                ));
            }
            Err(e) => last = describe(&e, t.timeout),
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    Err(format!(
        "{last} ({attempts} attempt{})",
        if attempts == 1 { "" } else { "s" }
    ))
}

/// What went wrong with a request, without its URL.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {timeout:?}");
    }
    // The innermost I/O error says it best (`Connection refused (os error 111)`).
    let mut source = std::error::Error::source(e);
    let mut io = None;
    while let Some(s) = source {
        if let Some(i) = s.downcast_ref::<std::io::Error>() {
            io = Some(i.to_string());
        }
        source = s.source();
    }
    let what = if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    match io {
        Some(i) => format!("{what}: {i}"),
        None => what.to_string(),
    }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message: `text` (the notification and the fallback) and
/// `blocks` (a header, the facts, the summary, the link).
pub fn slack_message(n: &Notification, link: Option<&str>) -> serde_json::Value {
    let what = n.outcome.unwrap_or(n.event).replace('_', " ");
    let deployment = match (n.deployment_id, n.request_id) {
        (Some(d), _) => format!(" (deployment #{d})"),
        (None, Some(r)) => format!(" (request #{r})"),
        (None, None) => String::new(),
    };
    let text = if n.kind == "rollback" {
        format!(
            "stagegate: rollback of {} in {}: {what}{deployment}",
            n.project, n.environment
        )
    } else {
        format!(
            "stagegate: {} {} to {}: {what}{deployment}",
            n.project, n.release.version, n.environment
        )
    };
    let mut fields = vec![
        ("Outcome", what.clone()),
        ("Project", n.project.clone()),
        ("Environment", n.environment.clone()),
        ("Version", n.release.version.clone()),
    ];
    if let Some(d) = n.deployment_id {
        fields.push(("Deployment", format!("#{d}")));
    }
    if let Some(r) = n.request_id {
        fields.push(("Request", format!("#{r}")));
    }
    if let Some(ms) = n.duration_ms {
        fields.push(("Duration", crate_duration(ms)));
    }
    let fields: Vec<serde_json::Value> = fields
        .into_iter()
        .map(|(k, v)| {
            serde_json::json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(&v))})
        })
        .collect();
    let mut blocks = vec![
        serde_json::json!({
            "type": "header",
            "text": {"type": "plain_text", "text": text.chars().take(150).collect::<String>()}
        }),
        serde_json::json!({"type": "section", "fields": fields}),
    ];
    if let Some(s) = n.summary.as_deref().filter(|s| !s.is_empty()) {
        blocks.push(serde_json::json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": slack_escape(s)}
        }));
    }
    if let Some(l) = link {
        blocks.push(serde_json::json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("<{}|Open the run>", slack_escape(l))}
        }));
    }
    serde_json::json!({"text": slack_escape(&text), "blocks": blocks})
}

fn crate_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, (ms % 1000) / 100)
    }
}

/// What [`NotifySink`] keeps of [`Event::RunStarted`] for the end's notification.
#[derive(Debug, Clone)]
struct RunFacts {
    deployment_id: i64,
    kind: String,
    project: String,
    environment: String,
    release: NotifiedRelease,
}

/// Sends `started` and the outcome of a session's run.
pub struct NotifySink {
    notifier: Notifier,
    run: Option<RunFacts>,
}

impl EventSink for NotifySink {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                deployment_id,
                project,
                environment,
                kind,
                release,
                at,
                ..
            } => {
                let facts = RunFacts {
                    deployment_id: *deployment_id,
                    kind: kind.clone(),
                    project: project.clone(),
                    environment: environment.clone(),
                    release: NotifiedRelease {
                        version: release.version.clone(),
                        sha: release.sha.clone(),
                    },
                };
                self.notifier.send(&Notification {
                    event: NotifyEvent::Started.as_str(),
                    kind: facts.kind.clone(),
                    project: facts.project.clone(),
                    environment: facts.environment.clone(),
                    deployment_id: Some(facts.deployment_id),
                    request_id: None,
                    release: facts.release.clone(),
                    outcome: None,
                    exit_code: None,
                    summary: None,
                    duration_ms: None,
                    at: rfc3339(*at),
                });
                self.run = Some(facts);
            }
            Event::RunFinished {
                outcome,
                exit_code,
                duration_ms,
                summary,
                at,
            } => {
                let Some(facts) = &self.run else {
                    return;
                };
                self.notifier.send(&Notification {
                    event: notify_event(*outcome).as_str(),
                    kind: facts.kind.clone(),
                    project: facts.project.clone(),
                    environment: facts.environment.clone(),
                    deployment_id: Some(facts.deployment_id),
                    request_id: None,
                    release: facts.release.clone(),
                    outcome: Some(outcome.as_str()),
                    exit_code: Some(*exit_code),
                    summary: Some(summary.clone()),
                    duration_ms: Some(*duration_ms),
                    at: rfc3339(*at),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_from_500ms_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }

    #[test]
    fn delivery_ids_differ() {
        assert_ne!(delivery_id(), delivery_id());
    }

    #[test]
    fn slack_text_is_escaped() {
        let n = Notification {
            event: "failed",
            kind: "deploy".into(),
            project: "demo".into(),
            environment: "staging".into(),
            deployment_id: Some(3),
            request_id: None,
            release: NotifiedRelease {
                version: "1.0".into(),
                sha: String::new(),
            },
            outcome: Some("failed"),
            exit_code: Some(1),
            summary: Some("<b> & co".into()),
            duration_ms: Some(1500),
            at: rfc3339(0),
        };
        let m = slack_message(&n, None);
        assert_eq!(m["blocks"][2]["text"]["text"], "&lt;b&gt; &amp; co");
        assert!(m["text"].as_str().unwrap().contains("staging: failed"));
    }
}
