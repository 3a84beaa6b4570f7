//! Notifications: who hears about a run, and of which of its moments.
//!
//! ```yaml
//! notify:
//!   - slack: "${{ secrets.SLACK_WEBHOOK_URL }}"      # a Slack incoming webhook
//!     on: [failed, rolled_back, awaiting_approval]   # default: every event
//!   - webhook: https://hooks.example.com/stagegate   # a generic JSON webhook
//!     secret: "${{ secrets.HOOK_SECRET }}"           # signs the body with HMAC-SHA256
//!     retries: 3                                     # default 3, backoff from 500ms
//!     timeout: 5s                                    # per attempt, default 5s
//!     link: https://ci.example.com/runs              # shown in the message (optional)
//! ```
//!
//! The list may stand at the top of the plan and under an environment; a run of that
//! environment notifies both. URLs and signing keys are templates, usually of secrets: they
//! are rendered when the run starts and never shown. Sending is the engine's
//! (`stagegate_engine::notify`); this module reads and validates the entries.

use std::time::Duration;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::types::Node;

use crate::diagnostic::{Span, did_you_mean};
use crate::template::Template;
use crate::yaml::{Cx, Spanned};

const ENTRY_KEYS: &[&str] = &[
    "slack", "webhook", "secret", "on", "retries", "timeout", "link",
];

/// The most retries an entry may ask for: with the backoff doubling from 500ms, ten
/// retries already wait over eight minutes in all.
pub const MAX_RETRIES: u64 = 10;
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A moment of a run that can be notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    Started,
    Succeeded,
    Failed,
    RolledBack,
    RollbackFailed,
    AwaitingDecision,
    Interrupted,
    /// A protected deploy waits for approvals (`stagegate promote`, exit code 8).
    AwaitingApproval,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 8] = [
        NotifyEvent::Started,
        NotifyEvent::Succeeded,
        NotifyEvent::Failed,
        NotifyEvent::RolledBack,
        NotifyEvent::RollbackFailed,
        NotifyEvent::AwaitingDecision,
        NotifyEvent::Interrupted,
        NotifyEvent::AwaitingApproval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::Succeeded => "succeeded",
            NotifyEvent::Failed => "failed",
            NotifyEvent::RolledBack => "rolled_back",
            NotifyEvent::RollbackFailed => "rollback_failed",
            NotifyEvent::AwaitingDecision => "awaiting_decision",
            NotifyEvent::Interrupted => "interrupted",
            NotifyEvent::AwaitingApproval => "awaiting_approval",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Where an entry sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// A Slack incoming webhook: `text` and `blocks`.
    Slack,
    /// Any endpoint: a JSON payload, signed when the entry has a `secret`.
    Webhook,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Slack => "slack",
            NotifyKind::Webhook => "webhook",
        }
    }
}

/// One entry of a `notify` list.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub span: Span,
    pub kind: NotifyKind,
    pub url: Spanned<Template>,
    /// The HMAC-SHA256 key of a `webhook` (never shown).
    pub secret: Option<Spanned<Template>>,
    /// The events to send; every one when the entry has no `on`.
    pub on: Vec<NotifyEvent>,
    pub retries: u32,
    pub timeout: Duration,
    /// A link shown in the message (a CI run, a dashboard).
    pub link: Option<Spanned<Template>>,
}

impl Notifier {
    pub fn wants(&self, e: NotifyEvent) -> bool {
        self.on.contains(&e)
    }

    pub fn templates(&self) -> impl Iterator<Item = &Spanned<Template>> {
        std::iter::once(&self.url)
            .chain(self.secret.iter())
            .chain(self.link.iter())
    }
}

/// Reads a `notify` list (`what` says where it stands: `the plan`, `environment `x``).
pub(crate) fn read_notify(cx: &mut Cx, n: &Node, what: &str) -> Vec<Notifier> {
    let list_what = format!("`notify` in {what}");
    let Node::Sequence(items) = n else {
        let span = cx.span(n);
        cx.error_help(
            format!("{list_what} must be a list"),
            span,
            "write e.g. `notify: [{ webhook: https://hooks.example.com/x }]`",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let w = format!("notifier #{} of {list_what}", i + 1);
        let Some(m) = cx.mapping(item, &w) else {
            continue;
        };
        if let Some(entry) = read_entry(cx, m, cx.span(item), &w) {
            out.push(entry);
        }
    }
    out
}

fn read_entry(cx: &mut Cx, m: &MarkedMappingNode, span: Span, w: &str) -> Option<Notifier> {
    cx.keys(m, w, ENTRY_KEYS);
    let slack = cx.string(m, "slack", w);
    let webhook = cx.string(m, "webhook", w);
    let (kind, url) = match (slack, webhook) {
        (Some(s), None) => (NotifyKind::Slack, s),
        (None, Some(h)) => (NotifyKind::Webhook, h),
        (Some(_), Some(h)) => {
            cx.error_help(
                format!("{w} has both `slack` and `webhook`"),
                h.span,
                "write one notifier per entry: `- slack: URL` and `- webhook: URL`",
            );
            return None;
        }
        (None, None) => {
            cx.error_help(
                format!("{w} says neither `slack` nor `webhook`"),
                span,
                "add `slack: URL` (a Slack incoming webhook) or `webhook: URL` (JSON to any endpoint)",
            );
            return None;
        }
    };
    let url = crate::build::template(cx, url)?;
    if url.value.is_literal() {
        check_url(cx, &url, w);
    }
    let secret = cx
        .string(m, "secret", w)
        .and_then(|s| crate::build::template(cx, s));
    if let (Some(s), NotifyKind::Slack) = (&secret, kind) {
        cx.error_help(
            format!("{w}: Slack does not check signatures, so `secret` has no use here"),
            s.span.clone(),
            "remove `secret`, or use `webhook:` for an endpoint that verifies X-Stagegate-Signature-256",
        );
    }
    if let Some(s) = &secret
        && s.value.is_literal()
    {
        cx.warning_help(
            format!("the signing `secret` of {w} is written in the plan"),
            s.span.clone(),
            "keep it out of the file: `secret: \"${{ secrets.HOOK_SECRET }}\"`, declared under `secrets`",
        );
    }
    let on = read_on(cx, m, w);
    let retries = match cx.uint(m, "retries", w) {
        Some(r) if r > MAX_RETRIES => {
            let s = m
                .get_node("retries")
                .map(|n| cx.span(n))
                .unwrap_or(span.clone());
            cx.error_help(
                format!("`retries` in {w} is {r}, more than {MAX_RETRIES}"),
                s,
                format!("write 0 to {MAX_RETRIES}; a notification is retried with backoff from 500ms, doubling"),
            );
            DEFAULT_RETRIES
        }
        Some(r) => r as u32,
        None => DEFAULT_RETRIES,
    };
    let timeout = match cx.duration(m, "timeout", w) {
        Some(t) if t.value.is_zero() || t.value > Duration::from_secs(60) => {
            cx.error_help(
                format!("`timeout` in {w} must be more than 0 and at most 60s"),
                t.span,
                "write e.g. `timeout: 5s`: the time one attempt may take",
            );
            DEFAULT_TIMEOUT
        }
        Some(t) => t.value,
        None => DEFAULT_TIMEOUT,
    };
    let link = cx
        .string(m, "link", w)
        .and_then(|s| crate::build::template(cx, s));
    if let Some(l) = &link
        && l.value.is_literal()
    {
        check_url(cx, l, w);
    }
    Some(Notifier {
        span,
        kind,
        url,
        secret,
        on,
        retries,
        timeout,
        link,
    })
}

fn read_on(cx: &mut Cx, m: &MarkedMappingNode, w: &str) -> Vec<NotifyEvent> {
    if m.get_node("on").is_none() {
        return NotifyEvent::ALL.to_vec();
    }
    let names = cx.string_list(m, "on", w);
    let mut on = Vec::new();
    for name in &names {
        match NotifyEvent::parse(&name.value) {
            Some(e) if !on.contains(&e) => on.push(e),
            Some(_) => {}
            None => {
                let all = NotifyEvent::ALL.map(NotifyEvent::as_str);
                let help = match did_you_mean(&name.value, all) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("events are: {}", all.join(", ")),
                };
                cx.error_help(
                    format!("unknown event `{}` in `on` of {w}", name.value),
                    name.span.clone(),
                    help,
                );
            }
        }
    }
    if names.is_empty()
        && let Some(n) = m.get_node("on")
    {
        let span = cx.span(n);
        cx.error_help(
            format!("`on` in {w} lists no event, so it would never send"),
            span,
            "list events, e.g. `on: [failed, rolled_back]`, or remove `on` to send every one",
        );
    }
    on
}

/// A URL written out must be `http://` or `https://` with a host.
fn check_url(cx: &mut Cx, t: &Spanned<Template>, w: &str) {
    let text: String = t
        .value
        .parts
        .iter()
        .map(|p| match p {
            crate::template::Part::Lit(s) => s.as_str(),
            crate::template::Part::Expr(_) => "",
        })
        .collect();
    let ok = url::Url::parse(&text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if ok.is_none() {
        cx.error_help(
            format!("{w}: the URL is not an http:// or https:// URL with a host"),
            t.span.clone(),
            "write the full URL, e.g. `https://hooks.example.com/stagegate`, or a template such as `\"${{ secrets.SLACK_WEBHOOK_URL }}\"`",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_environment_list_after_the_plan_list() {
        let (plan, _) = crate::load_str(
            std::path::Path::new("stagegate.yml"),
            "project: p\nnotify:\n  - slack: https://hooks.slack.com/services/a\nenvironments:\n  staging:\n    notify:\n      - webhook: https://h.example.com/x\n        on: [failed, failed, started]\n        retries: 0\n        timeout: 2s\n  prod: {}\nstages:\n  s:\n    - run: 'true'\n",
        )
        .expect("valid");
        let all = plan.notifiers("staging");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, NotifyKind::Slack);
        assert_eq!(all[0].on, NotifyEvent::ALL.to_vec());
        assert_eq!(all[0].retries, DEFAULT_RETRIES);
        assert_eq!(all[0].timeout, DEFAULT_TIMEOUT);
        assert_eq!(all[1].kind, NotifyKind::Webhook);
        assert_eq!(all[1].on, [NotifyEvent::Failed, NotifyEvent::Started]);
        assert_eq!(
            (all[1].retries, all[1].timeout),
            (0, Duration::from_secs(2))
        );
        assert_eq!(plan.notifiers("prod").len(), 1);
    }
}
