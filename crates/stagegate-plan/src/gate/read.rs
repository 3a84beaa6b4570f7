//! Reading `gate:` steps. Each gate type checks its own keys ("did you mean"), and every
//! problem is collected: a bad pattern, an unknown time zone or a missing file is an error
//! at its place in the plan, before anything runs.

use std::collections::HashSet;

use jiff::civil::{Date, DateTime, Time, Weekday};
use marked_yaml::types::{MarkedMappingNode, Node};

use super::*;
use crate::build::{ENV_NAME_HELP, is_env_name, quote_shift, template};
use crate::check::regex_error;
use crate::diagnostic::did_you_mean;
use crate::glob::expand_files;
use crate::model::{Plan, StepKind};
use crate::yaml::{Cx, one_or_many};

/// Keys of a gate step beyond the common step keys.
const GATE_KEYS: &[&str] = &["gate", "allow_override"];
const GIT_KEYS: &[&str] = &["repo", "branch", "clean", "pushed", "tag", "ancestor_of"];
const COMMAND_KEYS: &[&str] = &["command", "expect"];
const COMMAND_EXPECT_KEYS: &[&str] = &["exit", "output_contains", "output_lacks", "output_matches"];
const SECRETS_KEYS: &[&str] = &[
    "require",
    "forbid",
    "forbid_values",
    "only",
    "from",
    "drift",
];
const ENV_KEYS: &[&str] = &["from", "expect"];
const CONFIG_KEYS: &[&str] = &[
    "files",
    "forbid_hosts",
    "require_https",
    "forbid_values",
    "forbid_patterns",
];
const CHECKLIST_KEYS: &[&str] = &["items"];
const WINDOW_KEYS: &[&str] = &["timezone", "allow", "freeze"];

/// Value shapes known by name in `forbid_values`: (name, what it is, regex).
pub const VALUE_SHAPES: &[(&str, &str, &str)] = &[
    (
        "aws_access_key_id",
        "an AWS access key id",
        r"^(AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}$",
    ),
    (
        "stripe_live_key",
        "a Stripe live key",
        r"^(sk|rk|pk)_live_[A-Za-z0-9]+",
    ),
    (
        "github_token",
        "a GitHub token",
        r"^(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})$",
    ),
    (
        "slack_token",
        "a Slack token",
        r"^xox[abposr]-[A-Za-z0-9-]+",
    ),
    (
        "google_api_key",
        "a Google API key",
        r"^AIza[0-9A-Za-z_-]{35}$",
    ),
    (
        "private_key",
        "a private key",
        r"-----BEGIN ([A-Z]+ )*PRIVATE KEY-----",
    ),
];

/// Reads a `gate:` step.
pub(crate) fn read(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    common: &[&str],
) -> Option<StepKind> {
    let node = m.get_node("gate")?;
    let ty = cx.scalar(node, &format!("`gate` in {what}"))?;
    if !GATE_TYPES.contains(&ty.value.as_str()) {
        let help = did_you_mean(&ty.value, GATE_TYPES.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("gate types: {}", GATE_TYPES.join(", ")));
        cx.error_help(
            format!("unknown gate type `{}` in {what}", ty.value),
            ty.span,
            help,
        );
        return None;
    }
    let own: &[&str] = match ty.value.as_str() {
        "git" => GIT_KEYS,
        "command" => COMMAND_KEYS,
        "secrets" => SECRETS_KEYS,
        "env" => ENV_KEYS,
        "config" => CONFIG_KEYS,
        "checklist" => CHECKLIST_KEYS,
        _ => WINDOW_KEYS,
    };
    let gwhat = format!("{what} (a {} gate)", ty.value);
    let allowed: Vec<&str> = common.iter().chain(GATE_KEYS).chain(own).copied().collect();
    cx.keys(m, &gwhat, &allowed);
    // A misspelt key is reported once: not also as "nothing to check".
    let typo = m.iter().any(|(k, _)| !allowed.contains(&k.as_str()));
    if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == "rollback") {
        cx.error_help(
            format!("{gwhat} has a `rollback`"),
            cx.key_span(k),
            "a gate changes nothing, so there is nothing to roll back: remove `rollback`",
        );
    }
    let allow_override = cx.bool(m, "allow_override", &gwhat).unwrap_or(false);
    let kind = match ty.value.as_str() {
        "git" => read_git(cx, m, &gwhat, &ty.span, typo).map(GateKind::Git),
        "command" => read_command(cx, m, &gwhat, &ty.span).map(GateKind::Command),
        "secrets" => read_secrets(cx, m, &gwhat, &ty.span, typo).map(GateKind::Secrets),
        "env" => read_env(cx, m, &gwhat, &ty.span).map(GateKind::Env),
        "config" => read_config(cx, m, &gwhat, &ty.span, typo).map(GateKind::Config),
        "checklist" => read_checklist(cx, m, &gwhat, &ty.span).map(GateKind::Checklist),
        _ => read_window(cx, m, &gwhat, &ty.span, typo).map(GateKind::Window),
    }?;
    Some(StepKind::Gate(Box::new(GateSpec {
        span: ty.span,
        allow_override,
        kind,
    })))
}

/// Checks what needs the whole plan: environments named by `drift` exist.
pub(crate) fn check_plan(cx: &mut Cx, plan: &Plan) {
    let envs = plan.environment_names();
    for (_, step) in plan.steps() {
        let StepKind::Gate(g) = &step.kind else {
            continue;
        };
        let GateKind::Secrets(s) = &g.kind else {
            continue;
        };
        for e in s.drift.iter().flat_map(|d| &d.with) {
            if !envs.contains(&e.value.as_str()) {
                let help = did_you_mean(&e.value, envs.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("the plan defines: {}", envs.join(", ")));
                cx.error_help(
                    format!("`drift` compares with unknown environment `{}`", e.value),
                    e.span.clone(),
                    help,
                );
            }
        }
    }
}

fn globs(cx: &mut Cx, m: &MarkedMappingNode, key: &str, what: &str) -> Vec<Spanned<Glob>> {
    cx.string_list(m, key, what)
        .into_iter()
        .filter_map(|s| glob(cx, s, key))
        .collect()
}

fn glob(cx: &mut Cx, s: Spanned<String>, key: &str) -> Option<Spanned<Glob>> {
    match Glob::new(&s.value) {
        Ok(g) => Some(Spanned {
            value: g,
            span: s.span,
        }),
        Err(e) => {
            cx.error_help(
                format!("bad pattern `{}` in `{key}`: {e}", s.value),
                s.span,
                "patterns use `*` (any characters), `?` (one character) and `[abc]` (one of a set)",
            );
            None
        }
    }
}

/// A regex; an error points at the bad character.
fn regex(cx: &mut Cx, s: Spanned<String>, key: &str) -> Option<Spanned<regex::Regex>> {
    match regex::Regex::new(&s.value) {
        Ok(r) => Some(Spanned {
            value: r,
            span: s.span,
        }),
        Err(e) => {
            let (offset, detail) = regex_error(&e);
            let mut at = s.span.clone();
            if let Some(o) = offset.filter(|_| !s.value.contains('\n')) {
                at.pos.col += quote_shift(&at.source, &at) + o;
                at.width = 1;
            }
            cx.error_help(
                format!("bad regular expression `{}` in `{key}`: {detail}", s.value),
                at,
                "escape special characters with `\\`, e.g. `127\\.0\\.0\\.1`; `(?i)` makes it ignore case",
            );
            None
        }
    }
}

/// A path (or file pattern) as a template. A literal path must name an existing file now;
/// a literal pattern must be valid (the files it matches are looked for when the gate runs).
fn path(cx: &mut Cx, s: Spanned<String>, key: &str) -> Option<Spanned<Template>> {
    let t = template(cx, s.clone())?;
    if !t.value.is_literal() {
        return Some(t);
    }
    let problem = if Glob::is_pattern(&s.value) {
        Glob::new(&s.value)
            .err()
            .map(|e| format!("bad pattern `{}`: {e}", s.value))
    } else {
        expand_files(&cx.dir, &s.value).err()
    };
    if let Some(e) = problem {
        cx.error_help(
            format!("`{key}`: {e}"),
            s.span,
            format!(
                "paths are relative to the plan's directory ({}); create the file or fix the path",
                cx.dir.display()
            ),
        );
        return None;
    }
    Some(t)
}

fn required_list(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    key: &str,
    what: &str,
    gate: &Span,
    help: &str,
) -> Vec<Spanned<String>> {
    let list = cx.string_list(m, key, what);
    if list.is_empty() {
        let span = m.get_node(key).map(|n| cx.span(n)).unwrap_or(gate.clone());
        cx.error_help(format!("{what} needs `{key}`"), span, help);
    }
    list
}

fn nothing_to_check(cx: &mut Cx, what: &str, gate: &Span, help: &str, typo: bool) {
    if !typo {
        cx.error_help(format!("{what} has nothing to check"), gate.clone(), help);
    }
}

fn read_git(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    gate: &Span,
    typo: bool,
) -> Option<GitGate> {
    let repo = cx.string(m, "repo", what);
    if let Some(r) = &repo {
        let dir = cx.dir.join(&r.value);
        if !dir.is_dir() {
            cx.error_help(
                format!("`repo`: directory `{}` does not exist", r.value),
                r.span.clone(),
                "`repo` is the repository's directory, relative to the plan",
            );
        }
    }
    let g = GitGate {
        repo,
        branch: globs(cx, m, "branch", what),
        clean: cx.bool(m, "clean", what).unwrap_or(false),
        pushed: cx.bool(m, "pushed", what).unwrap_or(false),
        tag: cx.string(m, "tag", what).and_then(|s| glob(cx, s, "tag")),
        ancestor_of: cx.string(m, "ancestor_of", what),
    };
    if g.branch.is_empty()
        && !g.clean
        && !g.pushed
        && g.tag.is_none()
        && g.ancestor_of.is_none()
        && !GIT_KEYS[1..].iter().any(|k| m.get_node(k).is_some())
    {
        nothing_to_check(
            cx,
            what,
            gate,
            "add one or more of `branch: [main]`, `clean: true`, `pushed: true`, `tag: \"v*\"`, `ancestor_of: main`",
            typo,
        );
    }
    Some(g)
}

fn read_command(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    gate: &Span,
) -> Option<CommandGate> {
    let run = match cx.string(m, "command", what) {
        Some(s) => template(cx, s),
        None => {
            cx.error_help(
                format!("{what} has no `command`"),
                gate.clone(),
                "add `command: ./scripts/check.sh` (a shell command, run in the plan's directory)",
            );
            None
        }
    };
    let mut exit_codes = vec![0];
    let mut output = Vec::new();
    if let Some(n) = m.get_node("expect")
        && let Some(em) = cx.mapping(n, &format!("`expect` in {what}"))
    {
        let ewhat = format!("`expect` in {what}");
        cx.keys(em, &ewhat, COMMAND_EXPECT_KEYS);
        if em.get_node("exit").is_some() {
            exit_codes.clear();
            for s in cx.string_list(em, "exit", &ewhat) {
                match s.value.trim().parse::<i32>() {
                    Ok(c) if (0..=255).contains(&c) => exit_codes.push(c),
                    _ => cx.error_help(
                        format!(
                            "`exit` must be an exit code from 0 to 255, found `{}`",
                            s.value
                        ),
                        s.span,
                        "write `exit: 0` or a list such as `exit: [0, 1]`",
                    ),
                }
            }
        }
        for s in cx.string_list(em, "output_contains", &ewhat) {
            output.extend(template(cx, s).map(OutputRule::Contains));
        }
        for s in cx.string_list(em, "output_lacks", &ewhat) {
            output.extend(template(cx, s).map(OutputRule::Lacks));
        }
        for s in cx.string_list(em, "output_matches", &ewhat) {
            output.extend(regex(cx, s, "output_matches").map(OutputRule::Matches));
        }
    }
    Some(CommandGate {
        run: run?,
        exit_codes,
        output,
    })
}

fn read_secrets(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    gate: &Span,
    typo: bool,
) -> Option<SecretsGate> {
    let mut g = SecretsGate {
        require: cx.string_list(m, "require", what),
        forbid: globs(cx, m, "forbid", what),
        only: globs(cx, m, "only", what),
        ..Default::default()
    };
    for r in &g.require {
        if !is_env_name(&r.value) {
            cx.error_help(
                format!("`{}` is not a valid secret name", r.value),
                r.span.clone(),
                ENV_NAME_HELP,
            );
        }
    }
    if let Some(n) = m.get_node("forbid_values") {
        let items = one_or_many(n);
        for item in items {
            if let Some(shape) = value_shape(cx, item) {
                g.forbid_values.push(shape);
            }
        }
    }
    if let Some(n) = m.get_node("from") {
        let items = one_or_many(n);
        for item in items {
            if let Some(src) = secret_source(cx, item) {
                g.from.push(src);
            }
        }
    }
    if let Some(n) = m.get_node("drift") {
        let mut d = SecretDrift::default();
        match n {
            Node::Mapping(dm) => {
                cx.keys(dm, "`drift`", &["with", "ignore"]);
                d.with = cx.string_list(dm, "with", "`drift`");
                d.ignore = globs(cx, dm, "ignore", "`drift`");
                if d.with.is_empty() {
                    cx.error_help(
                        "`drift` needs `with`: the environments to compare with",
                        cx.span(n),
                        "write `drift: { with: [production] }`",
                    );
                }
            }
            _ => d.with = cx.string_list(m, "drift", what),
        }
        g.drift = Some(d);
    }
    if g.require.is_empty()
        && g.forbid.is_empty()
        && g.forbid_values.is_empty()
        && g.drift.is_none()
        && !["require", "forbid", "forbid_values"]
            .iter()
            .any(|k| m.get_node(k).is_some())
    {
        nothing_to_check(
            cx,
            what,
            gate,
            "add `require: [NAME]`, `forbid: [\"*_LIVE_*\"]`, `forbid_values: [stripe_live_key]` or `drift: [production]`",
            typo,
        );
    }
    Some(g)
}

fn value_shape(cx: &mut Cx, n: &Node) -> Option<ValueShape> {
    let span = cx.span(n);
    match n {
        Node::Scalar(s) => {
            let name = s.as_str();
            match VALUE_SHAPES.iter().find(|(k, ..)| *k == name) {
                Some((_, label, re)) => Some(ValueShape {
                    label: label.to_string(),
                    regex: regex::Regex::new(re).expect("built-in shapes compile"),
                    span,
                }),
                None => {
                    let names = VALUE_SHAPES.iter().map(|(k, ..)| *k);
                    let help = did_you_mean(name, names.clone())
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| {
                            format!(
                                "known shapes: {}; or write `{{ prefix: sk_live_ }}` or `{{ pattern: REGEX, name: WHAT }}`",
                                names.collect::<Vec<_>>().join(", ")
                            )
                        });
                    cx.error_help(format!("unknown value shape `{name}`"), span, help);
                    None
                }
            }
        }
        Node::Mapping(vm) => {
            cx.keys(
                vm,
                "an item of `forbid_values`",
                &["prefix", "pattern", "name"],
            );
            let name = cx.string(vm, "name", "an item of `forbid_values`");
            match (
                cx.string(vm, "prefix", "an item of `forbid_values`"),
                cx.string(vm, "pattern", "an item of `forbid_values`"),
            ) {
                (Some(p), None) if !p.value.is_empty() => Some(ValueShape {
                    label: name
                        .map(|n| n.value)
                        .unwrap_or_else(|| format!("a value starting with `{}`", p.value)),
                    regex: regex::Regex::new(&format!("^{}", regex::escape(&p.value)))
                        .expect("an escaped prefix compiles"),
                    span,
                }),
                (None, Some(p)) => {
                    let label = name
                        .map(|n| n.value)
                        .unwrap_or_else(|| format!("a value matching /{}/", p.value));
                    regex(cx, p, "pattern").map(|r| ValueShape {
                        label,
                        regex: r.value,
                        span,
                    })
                }
                _ => {
                    cx.error_help(
                        "an item of `forbid_values` needs one of `prefix` or `pattern`",
                        span,
                        "write `{ prefix: sk_live_ }` or `{ pattern: \"^AKIA[A-Z0-9]{16}$\", name: an AWS key id }`",
                    );
                    None
                }
            }
        }
        Node::Sequence(_) => {
            cx.error_help(
                "an item of `forbid_values` must be a shape name or a mapping",
                span,
                "write a shape name such as `stripe_live_key`, `{ prefix: sk_live_ }` or `{ pattern: REGEX, name: WHAT }`",
            );
            None
        }
    }
}

fn secret_source(cx: &mut Cx, n: &Node) -> Option<SecretSource> {
    let span = cx.span(n);
    let help = "write `environment`, `{ dotenv: .env.staging }` or `{ command: \"vault kv get -format=json secret/staging\", json: \"$.data.data\" }`";
    match n {
        Node::Scalar(s) if s.as_str() == "environment" => Some(SecretSource::Environment),
        Node::Mapping(sm) => {
            let what = "an item of `from`";
            cx.keys(sm, what, &["dotenv", "command", "json"]);
            match (sm.get_node("dotenv"), sm.get_node("command")) {
                (Some(_), None) => {
                    if let Some(j) = sm.get_node("json") {
                        cx.error_help(
                            "`json` applies to a `command` source only",
                            cx.span(j),
                            "remove `json`",
                        );
                    }
                    let s = cx.string(sm, "dotenv", what)?;
                    path(cx, s, "dotenv").map(SecretSource::Dotenv)
                }
                (None, Some(_)) => {
                    let run = cx.string(sm, "command", what).and_then(|s| template(cx, s));
                    let json = cx.string(sm, "json", what).and_then(|s| json_path(cx, s));
                    Some(SecretSource::Command { run: run?, json })
                }
                _ => {
                    cx.error_help(
                        "an item of `from` needs exactly one of `dotenv` or `command`",
                        span,
                        help,
                    );
                    None
                }
            }
        }
        other => {
            let found = match other {
                Node::Scalar(s) => format!("`{}`", s.as_str()),
                _ => "a list".into(),
            };
            cx.error_help(format!("unknown secret source {found}"), span, help);
            None
        }
    }
}

fn json_path(cx: &mut Cx, s: Spanned<String>) -> Option<Spanned<serde_json_path::JsonPath>> {
    match serde_json_path::JsonPath::parse(&s.value) {
        Ok(q) => Some(Spanned {
            value: q,
            span: s.span,
        }),
        Err(e) => {
            cx.error_help(
                format!("invalid JSONPath `{}`: {e}", s.value),
                s.span,
                "write a JSONPath such as `$.data.data` or `$.dry_run`",
            );
            None
        }
    }
}

/// A key a dotenv file may hold: letters, digits, `_`, `.` and `-` (as `dotenv` reads them).
fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

fn read_env(cx: &mut Cx, m: &MarkedMappingNode, what: &str, gate: &Span) -> Option<EnvGate> {
    let help = "write `from: environment`, `from: { dotenv: .env.staging }` or `from: { url: \"http://127.0.0.1:8002/api/v1/config\" }`";
    let from = match m.get_node("from") {
        None => Some(EnvSource::Environment),
        Some(Node::Scalar(s)) if s.as_str() == "environment" => Some(EnvSource::Environment),
        Some(n @ Node::Mapping(fm)) => {
            let fwhat = "`from` of an env gate";
            cx.keys(fm, fwhat, &["dotenv", "url", "headers"]);
            match (fm.get_node("dotenv"), fm.get_node("url")) {
                (Some(_), None) => {
                    if let Some(h) = fm.get_node("headers") {
                        cx.error_help(
                            "`headers` apply to a `url` source only",
                            cx.span(h),
                            "remove `headers`",
                        );
                    }
                    cx.string(fm, "dotenv", fwhat)
                        .and_then(|s| path(cx, s, "dotenv"))
                        .map(EnvSource::Dotenv)
                }
                (None, Some(_)) => cx
                    .string(fm, "url", fwhat)
                    .and_then(|s| template(cx, s))
                    .map(|url| EnvSource::Url {
                        url,
                        headers: crate::build::template_map(cx, fm, "headers", fwhat),
                    }),
                _ => {
                    cx.error_help(
                        "`from` needs exactly one of `dotenv` or `url`",
                        cx.span(n),
                        help,
                    );
                    None
                }
            }
        }
        Some(n) => {
            cx.error_help("unknown source in `from`", cx.span(n), help);
            None
        }
    };
    let is_url = matches!(from, Some(EnvSource::Url { .. }));
    let mut expect = Vec::new();
    match m.get_node("expect") {
        None => cx.error_help(
            format!("{what} has no `expect`"),
            gate.clone(),
            "add `expect: { DRY_RUN: \"true\" }` (for a `url` source, keys are JSONPaths: `\"$.dry_run\": \"true\"`)",
        ),
        Some(n) => {
            if let Some(em) = cx.mapping(n, &format!("`expect` in {what}")) {
                for (k, v) in em.iter() {
                    let key = Spanned {
                        value: k.as_str().to_string(),
                        span: cx.key_span(k),
                    };
                    let query = if is_url {
                        if !key.value.starts_with('$') {
                            cx.error_help(
                                format!(
                                    "`{}`: with a `url` source, the keys of `expect` are JSONPaths",
                                    key.value
                                ),
                                key.span.clone(),
                                format!("write `\"$.{}\"`", key.value),
                            );
                            continue;
                        }
                        match json_path(cx, key.clone()) {
                            Some(q) => Some(q.value),
                            None => continue,
                        }
                    } else {
                        if !is_var_name(&key.value) {
                            cx.error_help(
                                format!("`{}` is not a variable name", key.value),
                                key.span.clone(),
                                "use letters, digits, `_`, `.` and `-`; JSONPath keys need `from: { url: ... }`",
                            );
                        }
                        None
                    };
                    let Some(equals) = cx
                        .scalar(v, &format!("the expected value of `{}`", key.value))
                        .and_then(|s| template(cx, s))
                    else {
                        continue;
                    };
                    expect.push(EnvExpectation { key, query, equals });
                }
                if em.is_empty() {
                    cx.error_help(
                        "`expect` is empty",
                        cx.span(n),
                        "add `DRY_RUN: \"true\"`",
                    );
                }
            }
        }
    }
    Some(EnvGate {
        from: from?,
        expect,
    })
}

fn read_config(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    gate: &Span,
    typo: bool,
) -> Option<ConfigGate> {
    let files = required_list(
        cx,
        m,
        "files",
        what,
        gate,
        "add `files: [config/staging.env]` (paths or patterns such as `config/*.yaml`, relative to the plan)",
    );
    let mut g = ConfigGate {
        files: files
            .into_iter()
            .filter_map(|f| path(cx, f, "files"))
            .collect(),
        forbid_hosts: cx
            .string_list(m, "forbid_hosts", what)
            .into_iter()
            .filter_map(|mut s| {
                s.value = s.value.to_ascii_lowercase();
                glob(cx, s, "forbid_hosts")
            })
            .collect(),
        require_https: cx.bool(m, "require_https", what).unwrap_or(false),
        ..Default::default()
    };
    for (k, v) in cx.string_map(m, "forbid_values", what) {
        let span = v.span.clone();
        g.forbid_values.push(ForbiddenValue {
            key: Spanned { value: k, span },
            value: v,
        });
    }
    if let Some(n) = m.get_node("forbid_patterns") {
        let items = one_or_many(n);
        for item in items {
            match item {
                Node::Mapping(pm) => {
                    let pwhat = "an item of `forbid_patterns`";
                    cx.keys(pm, pwhat, &["pattern", "message"]);
                    let message = cx.string(pm, "message", pwhat).map(|s| s.value);
                    match cx.string(pm, "pattern", pwhat) {
                        Some(p) => {
                            if let Some(regex) = regex(cx, p, "pattern") {
                                g.forbid_patterns.push(ForbiddenPattern { regex, message });
                            }
                        }
                        None => cx.error_help(
                            format!("{pwhat} has no `pattern`"),
                            cx.span(item),
                            "write `{ pattern: \"(?i)sandbox\", message: \"sandbox settings\" }`",
                        ),
                    }
                }
                other => {
                    if let Some(s) = cx.scalar(other, "an item of `forbid_patterns`")
                        && let Some(regex) = regex(cx, s, "forbid_patterns")
                    {
                        g.forbid_patterns.push(ForbiddenPattern {
                            regex,
                            message: None,
                        });
                    }
                }
            }
        }
    }
    if g.forbid_hosts.is_empty()
        && !g.require_https
        && g.forbid_values.is_empty()
        && g.forbid_patterns.is_empty()
        && !CONFIG_KEYS[1..].iter().any(|k| m.get_node(k).is_some())
    {
        nothing_to_check(
            cx,
            what,
            gate,
            "add a rule: `forbid_hosts: [localhost, 127.0.0.1, 0.0.0.0]`, `require_https: true`, `forbid_values: { DEBUG: \"true\" }` or `forbid_patterns: [REGEX]`",
            typo,
        );
    }
    Some(g)
}

/// `Database backup completed` -> `database-backup-completed`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn read_checklist(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    gate: &Span,
) -> Option<ChecklistGate> {
    let mut g = ChecklistGate::default();
    let Some(n) = m.get_node("items") else {
        cx.error_help(
            format!("{what} has no `items`"),
            gate.clone(),
            "add `items: [Database backup completed, Rollback plan reviewed]`",
        );
        return Some(g);
    };
    let Node::Sequence(seq) = n else {
        cx.error_help(
            "`items` must be a list",
            cx.span(n),
            "write each item on a line starting with `- `",
        );
        return Some(g);
    };
    let mut seen: HashSet<String> = HashSet::new();
    for (i, item) in seq.iter().enumerate() {
        let span = cx.span(item);
        let (id, text) = match item {
            Node::Mapping(im) => {
                let iwhat = "a checklist item";
                cx.keys(im, iwhat, &["id", "text"]);
                let Some(text) = cx.string(im, "text", iwhat) else {
                    cx.error_help(
                        "a checklist item has no `text`",
                        span,
                        "write `{ id: backup, text: Database backup completed }`",
                    );
                    continue;
                };
                let id = cx.string(im, "id", iwhat);
                if let Some(id) = &id
                    && slug(&id.value) != id.value
                {
                    cx.error_help(
                        format!("`{}` is not a valid checklist item id", id.value),
                        id.span.clone(),
                        "use lowercase letters, digits and `-`, e.g. `db-backup`",
                    );
                }
                (id.map(|i| i.value), text.value)
            }
            other => match cx.scalar(other, "a checklist item") {
                Some(s) => (None, s.value),
                None => continue,
            },
        };
        if text.trim().is_empty() {
            cx.error_help(
                "a checklist item is empty",
                span,
                "write what must be done, e.g. `- Database backup completed`, or remove the item",
            );
            continue;
        }
        let id = id.unwrap_or_else(|| match slug(&text) {
            s if s.is_empty() => format!("item-{}", i + 1),
            s => s,
        });
        if !seen.insert(id.clone()) {
            cx.error_help(
                format!("checklist item id `{id}` is used twice"),
                span.clone(),
                "give one of them an `id`: `{ id: backup-2, text: ... }`",
            );
        }
        g.items.push(ChecklistItem {
            id,
            text: text.trim().to_string(),
            span,
        });
    }
    if g.items.is_empty() && seq.is_empty() {
        cx.error_help(
            "`items` is empty",
            cx.span(n),
            "add the items to acknowledge",
        );
    }
    Some(g)
}

fn read_window(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    gate: &Span,
    typo: bool,
) -> Option<WindowGate> {
    let timezone = cx.string(m, "timezone", what).unwrap_or_else(|| Spanned {
        value: "UTC".into(),
        span: gate.clone(),
    });
    let tz = match jiff::tz::TimeZone::get(&timezone.value) {
        Ok(tz) => Some(tz),
        Err(_) => {
            let names: Vec<String> = jiff::tz::db()
                .available()
                .map(|n| n.as_str().to_string())
                .collect();
            let help = did_you_mean(&timezone.value, names.iter().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| "use an IANA time zone name such as `Europe/London`, `America/New_York` or `UTC`".into());
            cx.error_help(
                format!("unknown time zone `{}`", timezone.value),
                timezone.span.clone(),
                help,
            );
            None
        }
    };
    let mut allow = Vec::new();
    if let Some(n) = m.get_node("allow") {
        let items = one_or_many(n);
        for item in items {
            let span = cx.span(item);
            let Some(am) = cx.mapping(item, "an item of `allow`") else {
                continue;
            };
            cx.keys(am, "an item of `allow`", &["days", "hours"]);
            let days = match am.get_node("days") {
                None => WEEKDAYS.to_vec(),
                Some(_) => {
                    let mut days = Vec::new();
                    for d in cx.string_list(am, "days", "an item of `allow`") {
                        match parse_days(&d.value) {
                            Ok(ds) => days.extend(ds),
                            Err(e) => cx.error_help(
                                e,
                                d.span,
                                "write days as `mon`..`sun`, ranges such as `tue-thu`, or `weekdays`",
                            ),
                        }
                    }
                    WEEKDAYS
                        .iter()
                        .copied()
                        .filter(|d| days.contains(d))
                        .collect()
                }
            };
            let (start, end) = match cx.string(am, "hours", "an item of `allow`") {
                None => (Time::midnight(), None),
                Some(h) => match parse_hours(&h.value) {
                    Ok(r) => r,
                    Err(e) => {
                        cx.error_help(e, h.span, "write hours as `HH:MM-HH:MM`, e.g. `10:00-14:00` (`24:00` is midnight at the end of the day)");
                        continue;
                    }
                },
            };
            allow.push(AllowedWindow {
                days,
                start,
                end,
                span,
            });
        }
    }
    let mut freeze = Vec::new();
    if let Some(n) = m.get_node("freeze") {
        let items = one_or_many(n);
        for item in items {
            let span = cx.span(item);
            let fwhat = "a freeze";
            let Some(fm) = cx.mapping(item, fwhat) else {
                continue;
            };
            cx.keys(fm, fwhat, &["from", "to", "reason"]);
            let from = cx.string(fm, "from", fwhat);
            let to = cx.string(fm, "to", fwhat);
            let reason = cx.string(fm, "reason", fwhat);
            if reason.as_ref().is_none_or(|r| r.value.trim().is_empty()) {
                cx.error_help(
                    "a freeze needs a `reason`",
                    span.clone(),
                    "the reason is shown to whoever the freeze stops, e.g. `reason: year-end change freeze`",
                );
            }
            let (Some(from), Some(to)) = (from, to) else {
                cx.error_help(
                    "a freeze needs `from` and `to`",
                    span,
                    "write dates (`2025-12-20`, `to` inclusive) or date-times (`2025-12-20 18:00`, `to` exclusive)",
                );
                continue;
            };
            let start = match parse_moment(&from.value, false) {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.error_help(
                        format!("`from`: {e}"),
                        from.span.clone(),
                        "write `2025-12-20` or `2025-12-20 18:00`",
                    );
                    None
                }
            };
            let until = match parse_moment(&to.value, true) {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.error_help(
                        format!("`to`: {e}"),
                        to.span.clone(),
                        "write `2026-01-02` or `2026-01-02 09:00`",
                    );
                    None
                }
            };
            let (Some(start), Some(until)) = (start, until) else {
                continue;
            };
            if until <= start {
                cx.error_help(
                    format!(
                        "the freeze ends (`{}`) before it starts (`{}`)",
                        to.value, from.value
                    ),
                    to.span,
                    "swap `from` and `to`",
                );
                continue;
            }
            freeze.push(Freeze {
                from: start,
                until,
                reason: reason
                    .map(|r| r.value.trim().to_string())
                    .unwrap_or_default(),
                span,
            });
        }
    }
    if allow.is_empty()
        && freeze.is_empty()
        && m.get_node("allow").is_none()
        && m.get_node("freeze").is_none()
    {
        nothing_to_check(
            cx,
            what,
            gate,
            "add `allow: [{ days: tue-thu, hours: \"10:00-14:00\" }]` and/or `freeze: [{ from: 2025-12-20, to: 2026-01-02, reason: ... }]`",
            typo,
        );
    }
    Some(WindowGate {
        timezone,
        tz: tz?,
        allow,
        freeze,
    })
}

fn parse_day(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    let d = match s.get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    };
    // `mon`, `monday` and the usual short forms (`tues`, `thurs`) are accepted.
    let full = format!("{}day", day_full(d));
    (full.starts_with(&s) || s == full).then_some(d)
}

fn day_full(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tues",
        Weekday::Wednesday => "wednes",
        Weekday::Thursday => "thurs",
        Weekday::Friday => "fri",
        Weekday::Saturday => "satur",
        Weekday::Sunday => "sun",
    }
}

/// `mon`, `tue-thu`, `weekdays`, `weekend`, `every day`; also comma-separated.
pub(crate) fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.to_ascii_lowercase().as_str() {
            "weekdays" => out.extend(&WEEKDAYS[..5]),
            "weekend" | "weekends" => out.extend(&WEEKDAYS[5..]),
            "every day" | "daily" | "all" => out.extend(WEEKDAYS),
            p => match p.split_once('-') {
                Some((a, b)) => {
                    let (Some(a), Some(b)) = (parse_day(a), parse_day(b)) else {
                        return Err(format!("`{part}` is not a range of days"));
                    };
                    let (i, j) = (index(a), index(b));
                    // A range may wrap around the week: `fri-mon`.
                    let mut k = i;
                    loop {
                        out.push(WEEKDAYS[k]);
                        if k == j {
                            break;
                        }
                        k = (k + 1) % 7;
                    }
                }
                None => out.push(parse_day(p).ok_or_else(|| format!("`{part}` is not a day"))?),
            },
        }
    }
    if out.is_empty() {
        return Err("no days given".into());
    }
    Ok(out)
}

fn index(d: Weekday) -> usize {
    WEEKDAYS.iter().position(|x| *x == d).unwrap_or(0)
}

/// `10:00-14:00`; `24:00` as an end is midnight at the end of the day.
pub(crate) fn parse_hours(text: &str) -> Result<(Time, Option<Time>), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a range of hours"))?;
    let time = |s: &str| -> Result<Time, String> {
        let s = s.trim();
        let s = if s.len() <= 2 {
            format!("{s}:00")
        } else {
            s.to_string()
        };
        s.parse::<Time>()
            .map_err(|_| format!("`{}` is not a time of day (HH:MM)", s))
    };
    let start = time(a)?;
    let end = if matches!(b.trim(), "24:00" | "24") {
        None
    } else {
        Some(time(b)?)
    };
    if end == Some(start) {
        return Err(format!("`{text}` is an empty range"));
    }
    Ok((start, end))
}

/// A date (`2025-12-20`) or a date and time (`2025-12-20 18:00`). A date as an end is
/// inclusive: the freeze lasts until the next midnight.
pub(crate) fn parse_moment(text: &str, end: bool) -> Result<DateTime, String> {
    let t = text.trim();
    if let Ok(d) = t.parse::<Date>()
        && !t.contains(['T', ' ', ':'])
    {
        let d = if end {
            d.tomorrow().map_err(|e| e.to_string())?
        } else {
            d
        };
        return Ok(d.to_datetime(Time::midnight()));
    }
    t.replacen(' ', "T", 1).parse::<DateTime>().map_err(|_| {
        format!("`{t}` is not a date (`2025-12-20`) or a date and time (`2025-12-20 18:00`)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_pattern_is_checked_for_syntax_and_a_literal_path_for_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let plan = |files: &str| {
            let text = format!(
                "project: demo\nenvironments: {{ staging: {{}} }}\nstages:\n  s:\n    - gate: config\n      files: {files}\n      require_https: true\n"
            );
            let path = dir.path().join("stagegate.yml");
            std::fs::write(&path, &text).unwrap();
            crate::load_file(&path)
        };
        std::fs::write(dir.path().join("app.env"), "A=1\n").unwrap();
        assert!(plan("[app.env]").is_ok());
        // What a pattern matches is looked for when the gate runs.
        assert!(plan("[\"conf/*.env\"]").is_ok());
        let errors = plan("[missing.env, \"conf/[x\"]").unwrap_err().to_string();
        assert!(
            errors.contains("`files`: file `missing.env` does not exist"),
            "{errors}"
        );
        assert!(
            errors.contains("`files`: bad pattern `conf/[x`"),
            "{errors}"
        );
    }

    #[test]
    fn a_bad_regex_is_reported_at_the_bad_character() {
        let text = "project: demo\nenvironments: { staging: {} }\nstages:\n  s:\n    - gate: command\n      command: ./check.sh\n      expect: { output_matches: \"ok(\" }\n";
        let errors = crate::load_str(std::path::Path::new("stagegate.yml"), text).unwrap_err();
        let e = errors.errors().next().unwrap();
        assert_eq!(
            e.message,
            "bad regular expression `ok(` in `output_matches`: unclosed group"
        );
        // Column 33 is the quote; `(` is the third character of the value.
        assert_eq!(e.location().as_deref(), Some("stagegate.yml:7:36"));
    }

    #[test]
    fn an_empty_checklist_item_and_a_listed_value_shape_come_with_help() {
        let text = "project: demo\nenvironments: { staging: {} }\nstages:\n  s:\n    - gate: checklist\n      items: [\"  \", Backup done]\n    - gate: secrets\n      forbid_values: [[x]]\n";
        let errors = crate::load_str(std::path::Path::new("stagegate.yml"), text).unwrap_err();
        for message in [
            "a checklist item is empty",
            "an item of `forbid_values` must be a shape name or a mapping",
        ] {
            let d = errors.errors().find(|d| d.message == message);
            assert!(d.is_some_and(|d| d.help.is_some()), "{message}: {errors}");
        }
    }

    #[test]
    fn days_hours_and_moments() {
        assert_eq!(
            parse_days("tue-thu").unwrap(),
            vec![Weekday::Tuesday, Weekday::Wednesday, Weekday::Thursday]
        );
        assert_eq!(parse_days("weekdays").unwrap().len(), 5);
        assert_eq!(
            parse_days("fri-mon").unwrap(),
            vec![
                Weekday::Friday,
                Weekday::Saturday,
                Weekday::Sunday,
                Weekday::Monday
            ]
        );
        assert_eq!(parse_days("Thursday").unwrap(), vec![Weekday::Thursday]);
        assert_eq!(parse_days("thurs").unwrap(), vec![Weekday::Thursday]);
        assert!(parse_days("funday").is_err());
        assert!(parse_days("tuesdayx").is_err());
        let (s, e) = parse_hours("10:00-14:00").unwrap();
        assert_eq!(s.strftime("%H:%M").to_string(), "10:00");
        assert_eq!(e.unwrap().strftime("%H:%M").to_string(), "14:00");
        assert_eq!(parse_hours("00:00-24:00").unwrap().1, None);
        assert!(parse_hours("25:00-26:00").is_err());
        assert!(parse_hours("10:00").is_err());
        assert_eq!(
            parse_moment("2025-12-20", true).unwrap().to_string(),
            "2025-12-21T00:00:00"
        );
        assert_eq!(
            parse_moment("2025-12-20 18:00", true).unwrap().to_string(),
            "2025-12-20T18:00:00"
        );
        assert!(parse_moment("20/12/2025", false).is_err());
        assert_eq!(
            slug("**All CI checks** passing (main)"),
            "all-ci-checks-passing-main"
        );
    }
}
