//! Environment protection: what must hold before a release reaches an environment.
//!
//! ```yaml
//! roles:
//!   security: [carol, dave]
//!   devops: [bob]
//! environments:
//!   staging: {}
//!   production:
//!     promote_from: staging     # only what passed staging, byte for byte
//!     soak: 48h                 # ... after running healthy there this long
//!     wait_timer: 24h           # ... and this long after the promotion was asked for
//!     tags: "v*"                # release versions allowed here
//!     approvals: { required: 2, from: [security, devops], self_approve: false, distinct_roles: true }
//!     bypass: { by: [tech-lead] }   # who may skip promote_from and soak, with a reason
//! ```
//!
//! Entries of `from` and `by` are role names (keys of the top-level `roles`, whose members
//! are people's names) or people's names. The checks themselves run in the CLI, which has
//! the state store; this module reads and validates the rules.

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};

use crate::diagnostic::{Span, did_you_mean};
use crate::glob::Glob;
use crate::yaml::{Cx, Spanned};

const APPROVAL_KEYS: &[&str] = &[
    "required",
    "from",
    "roles",
    "self_approve",
    "distinct_roles",
];
const BYPASS_KEYS: &[&str] = &["by"];

/// The protection rules of one environment; all empty: unprotected.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    /// Releases reach this environment only by `stagegate promote FROM ENV`.
    pub promote_from: Option<Spanned<String>>,
    /// How long the same artifact must have run healthy in `promote_from`.
    pub soak: Option<Spanned<Duration>>,
    /// How long after a promotion (or protected deploy) is requested before it may run.
    pub wait_timer: Option<Spanned<Duration>>,
    pub approvals: Option<ApprovalRule>,
    /// Release versions allowed here (any when empty).
    pub tags: Vec<Spanned<Glob>>,
    /// Who may skip `promote_from` and `soak` (none: nobody, not even an administrator).
    pub bypass: Option<BypassRule>,
}

impl Protection {
    /// Whether anything protects the environment.
    pub fn is_empty(&self) -> bool {
        self.promote_from.is_none()
            && self.soak.is_none()
            && self.wait_timer.is_none()
            && self.approvals.is_none()
            && self.tags.is_empty()
            && self.bypass.is_none()
    }

    /// Whether a deploy must wait for something before it runs (approvals or a timer).
    pub fn waits(&self) -> bool {
        self.approvals.is_some() || self.wait_timer.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct ApprovalRule {
    pub span: Span,
    /// How many approvals it takes.
    pub required: u32,
    /// Who may approve: role names and people's names (anyone but the requester when empty).
    pub from: Vec<Spanned<String>>,
    /// Whether the person who asked for the deployment may approve it (default false).
    pub self_approve: bool,
    /// Whether every counted approval must come from a different role (default false).
    pub distinct_roles: bool,
}

#[derive(Debug, Clone)]
pub struct BypassRule {
    pub span: Span,
    /// Who may bypass: role names and people's names.
    pub by: Vec<Spanned<String>>,
}

/// Who is in which role (the top-level `roles`).
pub type Roles = BTreeMap<String, Vec<String>>;

/// Whether `person` is named by `entry` of a `from`/`by` list: the entry is the person, or a
/// role the person is a member of.
pub fn names(roles: &Roles, entry: &str, person: &str) -> bool {
    match roles.get(entry) {
        Some(members) => members.iter().any(|m| m == person),
        None => entry == person,
    }
}

/// The roles of `list` that `person` is a member of.
pub fn roles_of<'a>(roles: &Roles, list: &'a [Spanned<String>], person: &str) -> Vec<&'a str> {
    list.iter()
        .map(|e| e.value.as_str())
        .filter(|e| roles.get(*e).is_some_and(|m| m.iter().any(|p| p == person)))
        .collect()
}

pub(crate) fn read_roles(cx: &mut Cx, n: &Node) -> Roles {
    let mut out = Roles::new();
    let Some(m) = cx.mapping(n, "`roles`") else {
        return out;
    };
    for (k, v) in m.iter() {
        let what = format!("role `{}`", k.as_str());
        if !crate::build::is_name(k.as_str()) {
            cx.error_help(
                format!("`{}` is not a valid role name", k.as_str()),
                cx.key_span(k),
                "use letters, digits, `-` and `_`",
            );
        }
        let members: Vec<String> = match v {
            Node::Sequence(seq) => seq
                .iter()
                .filter_map(|i| cx.scalar(i, &format!("a member of {what}")))
                .map(|s| s.value)
                .collect(),
            Node::Scalar(_) => cx.scalar(v, &what).into_iter().map(|s| s.value).collect(),
            Node::Mapping(_) => {
                let span = cx.span(v);
                cx.error_help(
                    format!("{what} must be a list of people's names"),
                    span,
                    "write e.g. `security: [carol, dave]`",
                );
                Vec::new()
            }
        };
        if members.is_empty() {
            cx.error_help(
                format!("{what} has no members"),
                cx.key_span(k),
                "list who is in it, e.g. `security: [carol, dave]`",
            );
        }
        out.insert(k.as_str().to_string(), members);
    }
    out
}

pub(crate) fn read_protection(cx: &mut Cx, m: &MarkedMappingNode, env: &str) -> Protection {
    let what = format!("environment `{env}`");
    let mut p = Protection {
        promote_from: cx.string(m, "promote_from", &what),
        soak: cx.duration(m, "soak", &what),
        wait_timer: cx.duration(m, "wait_timer", &what),
        ..Protection::default()
    };
    for t in cx.string_list(m, "tags", &what) {
        match Glob::new(&t.value) {
            Ok(g) => p.tags.push(Spanned {
                value: g,
                span: t.span,
            }),
            Err(e) => cx.error_help(
                format!("`tags` in {what}: `{}`: {e}", t.value),
                t.span,
                "write a pattern such as `v*` or `release-[0-9]*`",
            ),
        }
    }
    if let Some(n) = m.get_node("approvals") {
        let w = format!("`approvals` in {what}");
        if let Some(am) = cx.mapping(n, &w) {
            cx.keys(am, &w, APPROVAL_KEYS);
            let required = match cx.uint(am, "required", &w) {
                Some(0) => {
                    let span = am
                        .get_node("required")
                        .map_or_else(|| cx.span(n), |r| cx.span(r));
                    cx.error_help(
                        format!("`required` in {w} is 0"),
                        span,
                        "write how many approvals it takes (1 or more), or remove `approvals`",
                    );
                    1
                }
                Some(r) => r.min(u32::MAX as u64) as u32,
                None => 1,
            };
            let mut from = cx.string_list(am, "from", &w);
            from.extend(cx.string_list(am, "roles", &w));
            p.approvals = Some(ApprovalRule {
                span: cx.span(n),
                required,
                from,
                self_approve: cx.bool(am, "self_approve", &w).unwrap_or(false),
                distinct_roles: cx.bool(am, "distinct_roles", &w).unwrap_or(false),
            });
        }
    }
    if let Some(n) = m.get_node("bypass") {
        let w = format!("`bypass` in {what}");
        if let Some(bm) = cx.mapping(n, &w) {
            cx.keys(bm, &w, BYPASS_KEYS);
            let by = cx.string_list(bm, "by", &w);
            if by.is_empty() {
                cx.error_help(
                    format!("{w} names nobody"),
                    cx.span(n),
                    "say who may bypass, e.g. `by: [tech-lead]`, or remove `bypass` so nobody can",
                );
            }
            p.bypass = Some(BypassRule {
                span: cx.span(n),
                by,
            });
        }
    }
    if let (Some(soak), None) = (&p.soak, &p.promote_from) {
        let s = soak.span.clone();
        cx.error_help(
            format!("`soak` in {what} needs `promote_from`: soak is the time in the environment a release comes from"),
            s,
            "add `promote_from: staging` (the environment it must soak in), or remove `soak`",
        );
    }
    if let (Some(bypass), None) = (&p.bypass, &p.promote_from) {
        let s = bypass.span.clone();
        cx.error_help(
            format!("`bypass` in {what} has nothing to bypass without `promote_from`"),
            s,
            "add `promote_from`, or remove `bypass`",
        );
    }
    p
}

/// Cross-checks once every environment is read: `promote_from` names another environment,
/// promotions form no cycle, role names in `from`/`by` that look like typos of a role.
pub(crate) fn check(cx: &mut Cx, roles: &Roles, envs: &[(String, Span, &Protection)]) {
    let names: Vec<&str> = envs.iter().map(|(n, _, _)| n.as_str()).collect();
    for (name, _, p) in envs {
        if let Some(from) = &p.promote_from {
            if from.value == *name {
                cx.error_help(
                    format!("environment `{name}` promotes from itself"),
                    from.span.clone(),
                    "name the environment releases come from, e.g. `promote_from: staging`",
                );
            } else if !names.contains(&from.value.as_str()) {
                let help = did_you_mean(&from.value, names.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("environments are: {}", names.join(", ")));
                cx.error_help(
                    format!(
                        "`promote_from` in environment `{name}` names unknown environment `{}`",
                        from.value
                    ),
                    from.span.clone(),
                    help,
                );
            }
        }
        // A cycle (a <- b <- a) would let nothing ever be deployed.
        let mut seen = vec![name.as_str()];
        let mut at = p
            .promote_from
            .as_ref()
            .map(|f| f.value.as_str())
            .filter(|f| f != name);
        while let Some(cur) = at {
            if cur == name {
                let span = p.promote_from.as_ref().unwrap().span.clone();
                cx.error_help(
                    format!("promotions form a cycle: {} -> {name}", seen.join(" <- ")),
                    span,
                    "one environment of the chain must take deploys directly (no `promote_from`)",
                );
                break;
            }
            if seen.contains(&cur) {
                break;
            }
            seen.push(cur);
            at = envs
                .iter()
                .find(|(n, _, _)| n == cur)
                .and_then(|(_, _, q)| q.promote_from.as_ref())
                .map(|f| f.value.as_str());
        }
        let role_names = || roles.keys().map(String::as_str);
        let lists = p
            .approvals
            .iter()
            .flat_map(|a| a.from.iter())
            .chain(p.bypass.iter().flat_map(|b| b.by.iter()));
        for e in lists {
            if roles.contains_key(&e.value) {
                continue;
            }
            if let Some(r) = did_you_mean(&e.value, role_names()) {
                cx.warning_help(
                    format!(
                        "`{}` in environment `{name}` is not a role, so it names a person; did you mean role `{r}`?",
                        e.value
                    ),
                    e.span.clone(),
                    "roles are the keys of the top-level `roles`",
                );
            }
        }
        if let Some(a) = &p.approvals {
            let role_entries: Vec<&str> = a
                .from
                .iter()
                .map(|e| e.value.as_str())
                .filter(|e| roles.contains_key(*e))
                .collect();
            if a.distinct_roles && (role_entries.len() as u32) < a.required {
                cx.error_help(
                    format!(
                        "`approvals` in environment `{name}` needs {} approvals from distinct roles, but `from` has {} role{}",
                        a.required,
                        role_entries.len(),
                        if role_entries.len() == 1 { "" } else { "s" }
                    ),
                    a.span.clone(),
                    "list more roles in `from` (declared under the top-level `roles`), lower `required`, or set `distinct_roles: false`",
                );
            } else if !a.from.is_empty() {
                // Everyone who could ever approve: fewer than `required` can never pass.
                let mut people: Vec<&str> = Vec::new();
                for e in &a.from {
                    match roles.get(&e.value) {
                        Some(m) => people.extend(m.iter().map(String::as_str)),
                        None => people.push(&e.value),
                    }
                }
                people.sort();
                people.dedup();
                if (people.len() as u32) < a.required {
                    cx.error_help(
                        format!(
                            "`approvals` in environment `{name}` needs {} approvals, but only {} people can give one ({})",
                            a.required,
                            people.len(),
                            people.join(", ")
                        ),
                        a.span.clone(),
                        "add people to `from` or to its roles, or lower `required`",
                    );
                }
            }
        }
    }
}
