//! Triggers: which GitHub events `stagegate serve` turns into runs.
//!
//! ```yaml
//! triggers:
//!   - on: push            # a push to a branch
//!     branch: staging     # glob, e.g. `release/*`
//!     deploy: staging
//!   - on: release         # a release published
//!     tags: "v*"
//!     promote: { from: staging, to: production }
//! ```
//!
//! A push runs `deploy ENV` with the pushed commit as the release SHA and its short form
//! as the version; a release runs `deploy ENV` or `promote FROM TO` for the release's tag.

use marked_yaml::types::Node;

use crate::diagnostic::Span;
use crate::glob::Glob;
use crate::yaml::Cx;

const TRIGGER_KEYS: &[&str] = &["on", "branch", "tags", "deploy", "promote"];
const EVENTS: &[&str] = &["push", "release"];

/// The GitHub event a trigger answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerEvent {
    Push,
    Release,
}

/// What a trigger runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerAction {
    Deploy(String),
    Promote { from: String, to: String },
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub span: Span,
    pub on: TriggerEvent,
    /// Branch patterns a push must match (any when empty).
    pub branches: Vec<Glob>,
    /// Tag patterns a release must match (any when empty).
    pub tags: Vec<Glob>,
    pub action: TriggerAction,
}

impl Trigger {
    /// Whether this trigger answers `event` for `git_ref` (a branch name or a tag).
    pub fn matches(&self, event: TriggerEvent, git_ref: &str) -> bool {
        if self.on != event {
            return false;
        }
        let pats = match event {
            TriggerEvent::Push => &self.branches,
            TriggerEvent::Release => &self.tags,
        };
        pats.is_empty() || pats.iter().any(|g| g.matches(git_ref))
    }
}

fn globs(
    cx: &mut Cx,
    m: &marked_yaml::types::MarkedMappingNode,
    key: &str,
    what: &str,
) -> Vec<Glob> {
    let mut out = Vec::new();
    for t in cx.string_list(m, key, what) {
        match Glob::new(&t.value) {
            Ok(g) => out.push(g),
            Err(e) => cx.error_help(
                format!("`{key}` in {what}: `{}`: {e}", t.value),
                t.span,
                "write a pattern such as `main`, `release/*` or `v*`",
            ),
        }
    }
    out
}

pub(crate) fn read_triggers(cx: &mut Cx, n: &Node) -> Vec<Trigger> {
    let mut out = Vec::new();
    let Node::Sequence(seq) = n else {
        let span = cx.span(n);
        cx.error_help(
            "`triggers` must be a list",
            span,
            "write e.g. `triggers: [ { on: push, branch: staging, deploy: staging } ]`",
        );
        return out;
    };
    for (i, item) in seq.iter().enumerate() {
        let what = format!("trigger {}", i + 1);
        let Some(m) = cx.mapping(item, &what) else {
            continue;
        };
        cx.keys(m, &what, TRIGGER_KEYS);
        let span = cx.span(item);
        let on = match cx.string(m, "on", &what) {
            Some(s) if s.value == "push" => TriggerEvent::Push,
            Some(s) if s.value == "release" => TriggerEvent::Release,
            Some(s) => {
                let help = crate::diagnostic::did_you_mean(&s.value, EVENTS.iter().copied())
                    .map(|x| format!("did you mean `{x}`?"))
                    .unwrap_or_else(|| "write `push` or `release`".into());
                cx.error_help(
                    format!(
                        "`on` in {what} must be `push` or `release`, found `{}`",
                        s.value
                    ),
                    s.span,
                    help,
                );
                continue;
            }
            None => {
                cx.error_help(
                    format!("{what} has no `on`"),
                    span,
                    "say which GitHub event it answers: `on: push` or `on: release`",
                );
                continue;
            }
        };
        let branches = globs(cx, m, "branch", &what);
        let tags = globs(cx, m, "tags", &what);
        if on == TriggerEvent::Push && !tags.is_empty() {
            cx.error_help(
                format!("{what} answers `push` but has `tags`"),
                span.clone(),
                "a push is matched by `branch`; use `on: release` for tags",
            );
        }
        if on == TriggerEvent::Release && !branches.is_empty() {
            cx.error_help(
                format!("{what} answers `release` but has `branch`"),
                span.clone(),
                "a release is matched by `tags`",
            );
        }
        let deploy = cx.string(m, "deploy", &what);
        let promote = m.get_node("promote").and_then(|p| {
            let w = format!("`promote` in {what}");
            let pm = cx.mapping(p, &w)?;
            cx.keys(pm, &w, &["from", "to"]);
            match (cx.string(pm, "from", &w), cx.string(pm, "to", &w)) {
                (Some(f), Some(t)) => Some((f, t)),
                _ => {
                    let s = cx.span(p);
                    cx.error_help(
                        format!("{w} needs `from` and `to`"),
                        s,
                        "write `promote: { from: staging, to: production }`",
                    );
                    None
                }
            }
        });
        let action = match (deploy, promote) {
            (Some(d), None) => TriggerAction::Deploy(d.value),
            (None, Some((f, t))) => TriggerAction::Promote {
                from: f.value,
                to: t.value,
            },
            (Some(d), Some(_)) => {
                cx.error_help(
                    format!("{what} has both `deploy` and `promote`"),
                    d.span,
                    "keep one: a trigger runs one command",
                );
                continue;
            }
            (None, None) => {
                cx.error_help(
                    format!("{what} runs nothing"),
                    span,
                    "add `deploy: ENV` or `promote: { from: ENV, to: ENV }`",
                );
                continue;
            }
        };
        out.push(Trigger {
            span,
            on,
            branches,
            tags,
            action,
        });
    }
    out
}

/// The environments triggers name exist.
pub(crate) fn check(cx: &mut Cx, triggers: &[Trigger], envs: &[&str]) {
    for t in triggers {
        let named: Vec<&str> = match &t.action {
            TriggerAction::Deploy(e) => vec![e.as_str()],
            TriggerAction::Promote { from, to } => vec![from.as_str(), to.as_str()],
        };
        for e in named {
            if !envs.contains(&e) {
                let help = crate::diagnostic::did_you_mean(e, envs.iter().copied())
                    .map(|x| format!("did you mean `{x}`?"))
                    .unwrap_or_else(|| format!("environments are: {}", envs.join(", ")));
                cx.error_help(
                    format!("a trigger names unknown environment `{e}`"),
                    t.span.clone(),
                    help,
                );
            }
        }
    }
}
