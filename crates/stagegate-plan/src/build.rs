//! Turning the YAML tree into a [`Plan`], collecting every error on the way.
//!
//! Two passes: the first reads each section into typed values (types, durations, unknown
//! keys); the second checks what refers to what (services, step outputs, vars, secrets,
//! dependency cycles). Both add to one list of diagnostics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};
use marked_yaml::{LoadError, LoaderOptions};
use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, Diagnostics, Pos, Source, Span, did_you_mean};
use crate::model::*;
use crate::template::{Ref, Template, parse_expr};
use crate::yaml::{Cx, Spanned, one_or_many};

const TOP_KEYS: &[&str] = &[
    "project",
    "release",
    "vars",
    "secrets",
    "environments",
    "services",
    "stages",
    "on_failure",
    "state",
    "roles",
    "triggers",
    "notify",
];
const ENV_KEYS: &[&str] = &[
    "vars",
    "secrets",
    "services",
    "on_failure",
    "hosts",
    "promote_from",
    "soak",
    "wait_timer",
    "approvals",
    "tags",
    "bypass",
    "notify",
];
const SECRET_KEYS: &[&str] = &["require", "optional", "dotenv"];
/// Keys every service has, whatever its driver.
const SERVICE_KEYS: &[&str] = &["driver", "health", "depends_on"];
/// The `local` driver's keys.
const LOCAL_KEYS: &[&str] = &[
    "build",
    "artifacts",
    "start",
    "env",
    "port",
    "stop_timeout",
    "keep",
];
const OVERRIDE_KEYS: &[&str] = &["env", "port", "start"];
const HEALTH_KEYS: &[&str] = &["path", "url", "expect", "interval", "timeout"];
const EXPECT_KEYS: &[&str] = &["status", "json"];
/// Keys every step may have, whatever its action.
pub(crate) const STEP_COMMON: &[&str] = &[
    "id",
    "name",
    "timeout",
    "retries",
    "retry_delay",
    "env",
    "cwd",
    "when",
    "continue_on_error",
    "rollback",
];
const STEP_ACTIONS: &[&str] = &["run", "deploy"];
const DRIVERS: &[&str] = &["local", "ssh", "kubernetes", "docker", "compose"];

/// Reads and validates a plan file.
///
/// On success the plan comes with its warnings; on failure, every error found.
pub fn load_file(path: &Path) -> Result<(Plan, Diagnostics), Diagnostics> {
    let fail = |message: String, help: &str| {
        let mut d = Diagnostics::default();
        d.error_help(message, None, help);
        d
    };
    let bytes = read_plan_bytes(path).map_err(|e| {
        let help = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "create a `stagegate.yml` here, or pass its path with `-f PATH` (see docs/plan.md)"
            }
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::FileTooLarge => {
                "pass the path of a regular YAML file with `-f PATH`"
            }
            _ => "check the file's permissions",
        };
        fail(
            format!("cannot read plan file {}: {e}", path.display()),
            help,
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let before = &bytes[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = String::from_utf8_lossy(&before[before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)..])
            .chars()
            .count()
            + 1;
        fail(
            format!(
                "plan file {} is not valid UTF-8: byte 0x{:02x} at offset {at} (line {line}, column {col})",
                path.display(),
                bytes[at]
            ),
            "save the file as UTF-8 (a plan cannot hold other encodings or binary data); `iconv -f LATIN1 -t UTF-8` converts a Latin-1 file",
        )
    })?;
    load_str(path, &text)
}

/// The largest plan file stagegate reads: far above any real plan (the benchmark's
/// 5,000-step plan is under 2 MiB).
pub const MAX_PLAN_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a plan file: a regular file (a FIFO or a device would block or never end), of at
/// most [`MAX_PLAN_BYTES`].
fn read_plan_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // Looked at before opening: opening a FIFO for reading waits for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, a socket or a device)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}"),
        ));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is larger than {} MiB", MAX_PLAN_BYTES / 1024 / 1024),
        ));
    }
    Ok(bytes)
}

/// Validates plan text as if it were read from `path`.
pub fn load_str(path: &Path, text: &str) -> Result<(Plan, Diagnostics), Diagnostics> {
    let source = Source::new(path, text);
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    // Commands run in release directories: every path the engine derives must be absolute.
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let mut cx = Cx::new(source.clone(), dir);
    if let Some((line, col)) = crate::yaml::too_deep(text) {
        cx.diags.error_help(
            format!(
                "the plan nests deeper than {} levels here",
                crate::yaml::MAX_YAML_DEPTH
            ),
            Some(Span {
                source: source.clone(),
                pos: Pos { line, col },
                width: 1,
            }),
            "no plan needs this much nesting: flatten it (a deep JSON body can live in a file)",
        );
        return Err(cx.diags);
    }
    let root = match marked_yaml::parse_yaml_with_options(
        0,
        text,
        // Only plain scalars coerce: a quoted `"1"` in a JSON body stays a string.
        LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true),
    ) {
        Ok(root) => root,
        Err(e) => {
            cx.diags.push(load_error(&source, e));
            return Err(cx.diags);
        }
    };
    let plan = read_plan(&mut cx, &root, source, hash);
    // Freeing a large tree takes a noticeable while; nothing waits for it.
    std::thread::spawn(move || drop(root));
    cx.diags.sort();
    match plan {
        Some(plan) if !cx.diags.has_errors() => Ok((plan, cx.diags)),
        _ => Err(cx.diags),
    }
}

fn load_error(source: &Arc<Source>, e: LoadError) -> Diagnostic {
    let at = |m: &marked_yaml::Marker| {
        Some(Span {
            source: source.clone(),
            pos: Pos {
                line: m.line(),
                col: m.column(),
            },
            width: 1,
        })
    };
    match e {
        LoadError::TopLevelMustBeMapping(m) => {
            Diagnostic::error("the plan must be a YAML mapping at its top level", at(&m))
                .with_help("start with `project: NAME`, see docs/plan.md")
        }
        LoadError::UnexpectedAnchor(m) => Diagnostic::error(
            "YAML anchors and aliases are not supported in plans",
            at(&m),
        )
        .with_help("repeat the values, or put shared values in `vars`"),
        LoadError::UnexpectedTag(m) => {
            Diagnostic::error("YAML tags (`!tag`) are not supported in plans", at(&m))
        }
        LoadError::MappingKeyMustBeScalar(m) => {
            Diagnostic::error("mapping keys must be plain strings", at(&m))
        }
        LoadError::DuplicateKey(inner) => {
            let first = inner
                .prev_key
                .span()
                .start()
                .map(|m| format!("line {}", m.line()))
                .unwrap_or_default();
            let d = Diagnostic::error(
                format!("duplicate key `{}`", inner.key.as_str()),
                inner.key.span().start().and_then(at),
            );
            d.with_help(format!(
                "it is already defined at {first}; remove or rename one of them"
            ))
        }
        LoadError::ScanError(m, err) => {
            let help = if err.info().contains("mapping values are not allowed") {
                "a value that contains `: ` must be quoted, or written as a block (`run: |` and the command on the lines below)"
            } else {
                "check indentation, colons and quotes on this line or the one before"
            };
            Diagnostic::error(format!("malformed YAML: {}", err.info()), at(&m)).with_help(help)
        }
        other => Diagnostic::error(format!("malformed YAML: {other}"), None),
    }
}

pub(crate) fn template(cx: &mut Cx, s: Spanned<String>) -> Option<Spanned<Template>> {
    match Template::parse(&s.value) {
        Ok(t) => Some(Spanned {
            value: t,
            span: s.span,
        }),
        Err(e) => {
            let mut span = s.span.clone();
            if !s.value.contains('\n') {
                span.pos.col += quote_shift(&cx.source, &span) + e.offset;
                span.width = 1;
            }
            cx.error(e.message, span);
            None
        }
    }
}

/// A quoted scalar's node starts at the quote; offsets into the value start one later.
pub(crate) fn quote_shift(source: &Source, span: &Span) -> usize {
    let line = source.line(span.pos.line).unwrap_or("");
    match line.chars().nth(span.pos.col.saturating_sub(1)) {
        Some('"') | Some('\'') => 1,
        _ => 0,
    }
}

pub(crate) fn template_field(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    key: &str,
    what: &str,
) -> Option<Spanned<Template>> {
    let s = cx.string(m, key, what)?;
    template(cx, s)
}

pub(crate) fn template_map(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    key: &str,
    what: &str,
) -> BTreeMap<String, Spanned<Template>> {
    cx.string_map(m, key, what)
        .into_iter()
        .filter_map(|(k, v)| template(cx, v).map(|t| (k, t)))
        .collect()
}

fn read_plan(cx: &mut Cx, root: &Node, source: Arc<Source>, hash: String) -> Option<Plan> {
    let top = cx.mapping(root, "the plan")?;
    cx.keys(top, "the plan", TOP_KEYS);
    let whole = cx.span(root);

    let project = match cx.string(top, "project", "the plan") {
        Some(p) if !p.value.trim().is_empty() => p.value,
        Some(p) => {
            cx.error("`project` must not be empty", p.span);
            String::new()
        }
        None => {
            cx.error_help(
                "the plan has no `project`",
                whole.clone(),
                "add `project: NAME` at the top",
            );
            String::new()
        }
    };

    let mut release = ReleaseSpec::default();
    if let Some(n) = top.get_node("release")
        && let Some(m) = cx.mapping(n, "`release`")
    {
        cx.keys(m, "`release`", &["version", "sha"]);
        release.version = template_field(cx, m, "version", "`release`");
        release.sha = template_field(cx, m, "sha", "`release`");
    }

    let vars = template_map(cx, top, "vars", "the plan");
    let secrets = top
        .get_node("secrets")
        .map(|n| read_secrets(cx, n, "the plan"))
        .unwrap_or_default();
    let on_failure = read_on_failure(cx, top).unwrap_or(OnFailure::Rollback);

    let mut state = StateSettings::default();
    if let Some(n) = top.get_node("state")
        && let Some(m) = cx.mapping(n, "`state`")
    {
        cx.keys(m, "`state`", &["path", "url"]);
        let path = cx.string(m, "path", "`state`");
        let url = cx.string(m, "url", "`state`");
        if let Some(u) = &url {
            read_state_url(cx, u);
        }
        if let (Some(_), Some(u)) = (&path, &url) {
            cx.error_help(
                "`state` has both `path` and `url`",
                u.span.clone(),
                "keep one: `path` for a SQLite file, `url` for a PostgreSQL database",
            );
        }
        state.path = path.map(|p| p.value.into());
        state.url = url.map(|u| crate::Secret::new(u.value));
    }

    let roles = top
        .get_node("roles")
        .map(|n| crate::protect::read_roles(cx, n))
        .unwrap_or_default();
    let notify = top
        .get_node("notify")
        .map(|n| crate::notify::read_notify(cx, n, "the plan"))
        .unwrap_or_default();

    let triggers = top
        .get_node("triggers")
        .map(|n| crate::trigger::read_triggers(cx, n))
        .unwrap_or_default();

    let mut environments = Vec::new();
    match top.get_node("environments") {
        Some(n) => {
            if let Some(m) = cx.mapping(n, "`environments`") {
                for (k, v) in m.iter() {
                    if let Some(env) = read_environment(cx, k.as_str(), cx.key_span(k), v) {
                        environments.push(env);
                    }
                }
                if m.is_empty() {
                    cx.error_help(
                        "`environments` is empty",
                        cx.span(n),
                        "add one, e.g. `staging: {}`",
                    );
                }
            }
        }
        None => cx.error_help(
            "the plan has no `environments`",
            whole.clone(),
            "add `environments:` with at least one entry, e.g. `staging: {}`",
        ),
    }

    let mut services = Vec::new();
    if let Some(n) = top.get_node("services")
        && let Some(m) = cx.mapping(n, "`services`")
    {
        for (k, v) in m.iter() {
            if let Some(s) = read_service(cx, k.as_str(), cx.key_span(k), v) {
                services.push(s);
            }
        }
    }

    let mut stages = Vec::new();
    match top.get_node("stages") {
        Some(n) => {
            if let Some(m) = cx.mapping(n, "`stages`") {
                for (k, v) in m.iter() {
                    stages.push(read_stage(cx, k.as_str(), cx.key_span(k), v));
                }
            }
        }
        None => cx.error_help(
            "the plan has no `stages`",
            whole.clone(),
            "add `stages:` with at least one stage of steps, e.g. `deploy: [ { run: ./deploy.sh } ]`",
        ),
    }

    let mut plan = Plan {
        source,
        dir: cx.dir.clone(),
        hash,
        project,
        release,
        vars,
        secrets,
        environments,
        services,
        stages,
        on_failure,
        state,
        roles,
        triggers,
        notify,
    };
    check_references(cx, &mut plan);
    crate::kinds::check_plan(cx, &plan);
    Some(plan)
}

fn read_on_failure(cx: &mut Cx, m: &MarkedMappingNode) -> Option<OnFailure> {
    let s = cx.string(m, "on_failure", "the plan")?;
    match s.value.as_str() {
        "rollback" => Some(OnFailure::Rollback),
        "stop" => Some(OnFailure::Stop),
        other => {
            cx.error_help(
                format!("`on_failure` must be `rollback` or `stop`, found `{other}`"),
                s.span,
                "`rollback` undoes what ran; `stop` leaves it as it is",
            );
            None
        }
    }
}

/// Checks `state.url`: a PostgreSQL URL, best without its password (never quoted: it may
/// hold one).
fn read_state_url(cx: &mut Cx, url: &Spanned<String>) {
    let lower = url.value.trim().to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        cx.error_help(
            "`state.url` must be a PostgreSQL URL (`postgresql://...`)",
            url.span.clone(),
            "write `postgresql://USER@HOST:5432/DATABASE`; for a SQLite file use `state.path`",
        );
        return;
    }
    match crate::conninfo::ConnInfo::parse(url.value.trim()) {
        Err(e) => cx.error_help(
            format!("`state.url`: {e}"),
            url.span.clone(),
            "write `postgresql://USER@HOST:5432/DATABASE`",
        ),
        // No snippet: the line shown under a diagnostic would print the password.
        Ok(c) if c.password().is_some() => cx.diags.push(
            Diagnostic::warning(
                format!(
                    "`state.url` ({}:{}) holds a password in the plan file: whoever reads the plan reads it",
                    url.span.path().display(),
                    url.span.pos.line
                ),
                None,
            )
            .with_help(
                "leave the password out and set PGPASSWORD (or ~/.pgpass), or pass the whole URL in STAGEGATE_STATE",
            ),
        ),
        Ok(_) => {}
    }
}

fn read_secrets(cx: &mut Cx, n: &Node, what: &str) -> SecretSpec {
    let mut spec = SecretSpec::default();
    match n {
        // `secrets: [A, B]` is short for `secrets: { require: [A, B] }`.
        Node::Sequence(seq) => {
            for item in seq.iter() {
                if let Some(s) = cx.scalar(item, "a secret name") {
                    spec.require.push(s);
                }
            }
        }
        _ => {
            let Some(m) = cx.mapping(n, &format!("`secrets` in {what}")) else {
                return spec;
            };
            cx.keys(m, "`secrets`", SECRET_KEYS);
            spec.require = cx.string_list(m, "require", "`secrets`");
            spec.optional = cx.string_list(m, "optional", "`secrets`");
            spec.dotenv = cx.string(m, "dotenv", "`secrets`");
        }
    }
    for s in spec.require.iter().chain(&spec.optional) {
        if !is_env_name(&s.value) {
            cx.error_help(
                format!("`{}` is not a valid secret name", s.value),
                s.span.clone(),
                ENV_NAME_HELP,
            );
        }
    }
    spec
}

/// The name of an environment variable, as secrets have: letters, digits and `_`, not
/// starting with a digit.
pub(crate) fn is_env_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The help for a name that [`is_env_name`] rejects.
pub(crate) const ENV_NAME_HELP: &str =
    "use letters, digits and underscores, not starting with a digit, e.g. `ADMIN_TOKEN`";

/// A name of an environment, a service, a step or an output: letters, digits, `-` and `_`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn read_environment(cx: &mut Cx, name: &str, span: Span, n: &Node) -> Option<Environment> {
    if !is_name(name) {
        cx.error_help(
            format!("`{name}` is not a valid environment name"),
            span.clone(),
            "use letters, digits, `-` and `_`",
        );
    }
    let what = format!("environment `{name}`");
    let mut env = Environment {
        name: name.to_string(),
        span,
        vars: BTreeMap::new(),
        secrets: SecretSpec::default(),
        services: BTreeMap::new(),
        on_failure: None,
        hosts: Vec::new(),
        protection: Default::default(),
        notify: Vec::new(),
    };
    // `staging:` with nothing under it is a valid, empty environment.
    if matches!(n, Node::Scalar(s) if s.as_str().is_empty()) {
        return Some(env);
    }
    let m = cx.mapping(n, &what)?;
    cx.keys(m, &what, ENV_KEYS);
    env.vars = template_map(cx, m, "vars", &what);
    env.secrets = m
        .get_node("secrets")
        .map(|s| read_secrets(cx, s, &what))
        .unwrap_or_default();
    env.on_failure = read_on_failure(cx, m);
    env.protection = crate::protect::read_protection(cx, m, name);
    if let Some(n) = m.get_node("notify") {
        env.notify = crate::notify::read_notify(cx, n, &what);
    }
    if let Some(h) = m.get_node("hosts") {
        env.hosts = crate::ssh::read_hosts(cx, h, name);
    }
    if let Some(sn) = m.get_node("services")
        && let Some(sm) = cx.mapping(sn, &format!("`services` in {what}"))
    {
        for (k, v) in sm.iter() {
            let swhat = format!("the override of service `{}` in {what}", k.as_str());
            let Some(om) = cx.mapping(v, &swhat) else {
                continue;
            };
            cx.keys(om, &swhat, OVERRIDE_KEYS);
            let o = ServiceOverride {
                env: template_map(cx, om, "env", &swhat),
                port: read_port(cx, om, &swhat),
                start: template_field(cx, om, "start", &swhat),
            };
            env.services.insert(k.as_str().to_string(), o);
        }
    }
    Some(env)
}

fn read_port(cx: &mut Cx, m: &MarkedMappingNode, what: &str) -> Option<PortMode> {
    let s = cx.string(m, "port", what)?;
    if s.value == "auto" {
        return Some(PortMode::Auto);
    }
    match s.value.parse::<u16>() {
        Ok(p) if p > 0 => Some(PortMode::Fixed(p)),
        _ => {
            cx.error_help(
                format!("`port` in {what} must be `auto` or a port number from 1 to 65535, found `{}`", s.value),
                s.span,
                "`auto` gives each release its own free port; a number makes the new release replace the old one on that port",
            );
            None
        }
    }
}

fn read_service(cx: &mut Cx, name: &str, span: Span, n: &Node) -> Option<Service> {
    let what = format!("service `{name}`");
    if !is_name(name) {
        cx.error_help(
            format!("`{name}` is not a valid service name"),
            span.clone(),
            "use letters, digits, `-` and `_`",
        );
    }
    let m = cx.mapping(n, &what)?;
    let driver = cx.string(m, "driver", &what);
    if let Some(d) = &driver
        && !DRIVERS.contains(&d.value.as_str())
    {
        let help = did_you_mean(&d.value, DRIVERS.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("available drivers: {}", DRIVERS.join(", ")));
        cx.error_help(
            format!("unknown driver `{}` for {what}", d.value),
            d.span.clone(),
            help,
        );
    }
    let driver_name = driver.as_ref().map(|d| d.value.as_str()).unwrap_or("local");
    // Each driver reads its own keys; an unknown driver (already an error) is read as
    // `local` so its other mistakes are reported too.
    let own: &[&str] = match driver_name {
        "local" => LOCAL_KEYS,
        "ssh" => crate::ssh::SSH_KEYS,
        "kubernetes" => crate::kube::KUBE_KEYS,
        "docker" => crate::docker::DOCKER_KEYS,
        "compose" => crate::docker::COMPOSE_KEYS,
        _ => LOCAL_KEYS,
    };
    let keys: Vec<&str> = SERVICE_KEYS.iter().chain(own).copied().collect();
    cx.keys(m, &what, &keys);
    let driver = match driver_name {
        "local" => Driver::Local(read_local(cx, m, &what, &span)),
        "ssh" => crate::ssh::read_ssh(cx, m, &what, &span),
        "kubernetes" => Driver::Kubernetes(crate::kube::read_kube(cx, m, &what, &span)),
        "docker" => Driver::Docker(crate::docker::read_docker(cx, m, &what, &span)),
        "compose" => Driver::Compose(crate::docker::read_compose(cx, m, &what, &span)),
        _ => Driver::Local(read_local(cx, m, &what, &span)),
    };
    let health = m.get_node("health").and_then(|h| read_health(cx, h, &what));
    crate::kube::check_health(cx, &driver, health.as_ref(), &what);
    crate::docker::check_health(cx, &driver, health.as_ref(), &what);
    Some(Service {
        name: name.to_string(),
        span,
        driver,
        health,
        depends_on: cx.string_list(m, "depends_on", &what),
    })
}

/// The `local` driver's settings of a service.
fn read_local(cx: &mut Cx, m: &MarkedMappingNode, what: &str, span: &Span) -> LocalService {
    let what = what.to_string();
    let start = template_field(cx, m, "start", &what);
    if start.is_none() && m.get_node("start").is_none() {
        cx.error_help(
            format!("{what} has no `start` command"),
            span.clone(),
            "add `start: ./my-service --port $PORT` (it runs in the release directory)",
        );
    }
    let keep = cx.uint(m, "keep", &what).unwrap_or(3);
    if keep < 2
        && let Some(n) = m.get_node("keep")
    {
        cx.error_help(
            format!("`keep` in {what} must be at least 2"),
            cx.span(n),
            "the previous release must stay on disk for rollback",
        );
    }
    let local = LocalService {
        build: template_field(cx, m, "build", &what),
        artifacts: cx.string_list(m, "artifacts", &what),
        start: start.unwrap_or_else(|| Spanned {
            value: Template::default(),
            span: span.clone(),
        }),
        env: template_map(cx, m, "env", &what),
        port: read_port(cx, m, &what).unwrap_or(PortMode::Auto),
        stop_timeout: cx
            .duration(m, "stop_timeout", &what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(10)),
        keep: keep.max(2) as usize,
    };
    for a in &local.artifacts {
        if Path::new(&a.value).is_absolute() || a.value.split('/').any(|c| c == "..") {
            cx.error_help(
                format!(
                    "artifact `{}` must be a path inside the plan directory",
                    a.value
                ),
                a.span.clone(),
                "artifacts are copied into the release directory under the same relative path",
            );
        }
    }
    local
}

fn read_health(cx: &mut Cx, n: &Node, service: &str) -> Option<HealthCheck> {
    let what = format!("the health check of {service}");
    let m = cx.mapping(n, &what)?;
    cx.keys(m, &what, HEALTH_KEYS);
    let span = cx.span(n);
    let target = match (
        template_field(cx, m, "path", &what),
        template_field(cx, m, "url", &what),
    ) {
        (Some(p), None) => HealthTarget::Path(p),
        (None, Some(u)) => HealthTarget::Url(u),
        (Some(_), Some(u)) => {
            cx.error_help(
                format!("{what} has both `path` and `url`"),
                u.span,
                "keep one: `path` is relative to the release's own address",
            );
            return None;
        }
        (None, None) => {
            if m.get_node("path").is_none() && m.get_node("url").is_none() {
                cx.error_help(
                    format!("{what} has neither `path` nor `url`"),
                    span,
                    "add `path: /health`",
                );
            }
            return None;
        }
    };
    let mut status = vec![200];
    let mut json = Vec::new();
    if let Some(en) = m.get_node("expect")
        && let Some(em) = cx.mapping(en, "`expect`")
    {
        cx.keys(em, "`expect`", EXPECT_KEYS);
        if let Some(sn) = em.get_node("status") {
            let items = one_or_many(sn);
            status.clear();
            for item in items {
                match item
                    .as_scalar()
                    .and_then(|s| s.as_str().parse::<u16>().ok())
                    .filter(|c| (100..600).contains(c))
                {
                    Some(code) => status.push(code),
                    None => cx.error(
                        "`status` must be an HTTP status code (100-599) or a list of them",
                        cx.span(item),
                    ),
                }
            }
        }
        if let Some(jn) = em.get_node("json")
            && let Some(jm) = cx.mapping(jn, "`json` in `expect`")
        {
            for (k, v) in jm.iter() {
                let path = Spanned {
                    value: k.as_str().to_string(),
                    span: cx.key_span(k),
                };
                let query = match serde_json_path::JsonPath::parse(&path.value) {
                    Ok(q) => Some(q),
                    Err(e) => {
                        cx.error_help(
                            format!("invalid JSONPath `{}`: {e}", path.value),
                            path.span.clone(),
                            "write a JSONPath such as `$.version` or `$.items[0].id`",
                        );
                        None
                    }
                };
                let equals = cx
                    .scalar(v, "an expected JSON value")
                    .and_then(|s| template(cx, s));
                if let (Some(query), Some(equals)) = (query, equals) {
                    json.push(JsonExpectation {
                        path,
                        query,
                        equals,
                    });
                }
            }
        }
    }
    Some(HealthCheck {
        span,
        target,
        status,
        json,
        interval: cx
            .duration(m, "interval", &what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_millis(250)),
        timeout: cx
            .duration(m, "timeout", &what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(60)),
    })
}

fn read_stage(cx: &mut Cx, name: &str, span: Span, n: &Node) -> Stage {
    let mut stage = Stage {
        name: name.to_string(),
        span: span.clone(),
        steps: Vec::new(),
    };
    let Node::Sequence(seq) = n else {
        cx.error_help(
            format!("stage `{name}` must be a list of steps"),
            cx.span(n),
            "write each step on a line starting with `- `",
        );
        return stage;
    };
    if seq.is_empty() {
        cx.diags.push(Diagnostic::warning(
            format!("stage `{name}` has no steps"),
            Some(span),
        ));
    }
    for (i, item) in seq.iter().enumerate() {
        if let Some(step) = read_step(cx, name, i, item) {
            stage.steps.push(step);
        }
    }
    stage
}

fn read_step(cx: &mut Cx, stage: &str, index: usize, n: &Node) -> Option<Step> {
    let span = cx.span(n);
    let what = format!("step {} of stage `{stage}`", index + 1);
    let m = cx.mapping(n, &what)?;
    let all_actions: Vec<&str> = STEP_ACTIONS
        .iter()
        .chain(crate::kinds::ACTIONS)
        .copied()
        .collect();

    // A gate's own keys may share a name with another action (`gate: command` has a
    // `command:`), so a step with `gate:` is a gate.
    let actions: Vec<&str> = if m.get_node("gate").is_some() {
        vec!["gate"]
    } else {
        all_actions
            .iter()
            .copied()
            .filter(|a| m.get_node(a).is_some())
            .collect()
    };
    // Run and deploy steps take the common keys; other kinds check their own keys.
    if !matches!(actions.as_slice(), [a] if crate::kinds::ACTIONS.contains(a)) {
        let allowed: Vec<&str> = STEP_COMMON.iter().chain(&all_actions).copied().collect();
        cx.keys(m, &what, &allowed);
    }
    let kind = match actions.as_slice() {
        [] => {
            cx.error_help(
                format!("{what} has no action"),
                span.clone(),
                format!("add one of: {}", all_actions.join(", ")),
            );
            None
        }
        ["run"] => template_field(cx, m, "run", &what).map(|command| StepKind::Run { command }),
        ["deploy"] => cx
            .string(m, "deploy", &what)
            .map(|service| StepKind::Deploy { service }),
        [action] => crate::kinds::read(cx, action, m, &what, STEP_COMMON),
        many => {
            cx.error_help(
                format!("{what} has more than one action: {}", many.join(", ")),
                span.clone(),
                "split it into one step per action",
            );
            None
        }
    };

    let id = cx.string(m, "id", &what);
    if let Some(id) = &id {
        cx.step_ids.push(id.value.clone());
    }
    if let Some(id) = &id
        && !is_name(&id.value)
    {
        cx.error_help(
            format!("`{}` is not a valid step id", id.value),
            id.span.clone(),
            "use letters, digits, `-` and `_`, e.g. `build_image`",
        );
    }
    let when = cx.string(m, "when", &what).and_then(|s| {
        // `when` may be written bare (`env.X == 'y'`) or as a template (`${{ env.X == 'y' }}`).
        let text = s.value.trim();
        let inner = text
            .strip_prefix("${{")
            .and_then(|t| t.strip_suffix("}}"))
            .unwrap_or(text);
        match parse_expr(inner, 0) {
            Ok(e) => Some(Spanned {
                value: e,
                span: s.span,
            }),
            Err(e) => {
                cx.error(format!("in `when`: {}", e.message), s.span);
                None
            }
        }
    });
    let retries = cx.uint(m, "retries", &what).unwrap_or(0);
    if retries > 100
        && let Some(n) = m.get_node("retries")
    {
        cx.error_help(
            format!("`retries` in {what} is {retries}; at most 100"),
            cx.span(n),
            "a step that needs more is better polled with a longer `retry_delay`",
        );
    }
    if matches!(kind, Some(StepKind::Deploy { .. })) {
        for key in [
            "timeout",
            "retries",
            "retry_delay",
            "env",
            "cwd",
            "rollback",
        ] {
            if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
                let why = match key {
                    "timeout" => "the service's `health.timeout` bounds how long a deploy waits",
                    "rollback" => "a deploy step rolls back to the previous release by itself",
                    "env" => "set the service's environment under `services.NAME.env`",
                    "cwd" => "a service's commands run in its release directory",
                    _ => "a deploy step runs once; a failed health check rolls back",
                };
                let help = format!("remove `{key}`: {why}");
                cx.error_help(
                    format!("`{key}` does not apply to a deploy step ({what})"),
                    cx.key_span(k),
                    help,
                );
            }
        }
    }
    let kind = kind?;
    let name = cx
        .string(m, "name", &what)
        .map(|s| s.value)
        .unwrap_or_else(|| kind.default_name());
    Some(Step {
        id: id
            .as_ref()
            .map(|i| i.value.clone())
            .unwrap_or_else(|| format!("{stage}-{}", index + 1)),
        explicit_id: id.is_some(),
        name,
        span,
        kind,
        timeout: cx.duration(m, "timeout", &what).map(|d| d.value),
        retries: retries.min(100) as u32,
        retry_delay: cx
            .duration(m, "retry_delay", &what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(1)),
        env: template_map(cx, m, "env", &what),
        cwd: template_field(cx, m, "cwd", &what),
        when,
        continue_on_error: cx.bool(m, "continue_on_error", &what).unwrap_or(false),
        rollback: template_field(cx, m, "rollback", &what),
    })
}

/// A template as written, with `${{…}}` for its expressions.
pub(crate) fn sketch(t: &Template) -> String {
    t.parts
        .iter()
        .map(|p| match p {
            crate::template::Part::Lit(l) => l.as_str(),
            crate::template::Part::Expr(_) => "${{…}}",
        })
        .collect()
}

/// A template's first non-blank line, as written (see [`sketch`]), cut to `max` characters:
/// default step names.
pub(crate) fn first_line(t: &Template, max: usize) -> String {
    first_text_line(&sketch(t), max)
}

/// The first non-blank line of `text`, trimmed and cut to `max` characters; `…` marks a cut
/// or more lines after it.
pub(crate) fn first_text_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut out: String = line.chars().take(max).collect();
    if line.chars().count() > max || text.trim().lines().count() > 1 {
        out.push('…');
    }
    out
}

/// The second pass: names and references across sections.
fn check_references(cx: &mut Cx, plan: &mut Plan) {
    let service_names: Vec<String> = plan.services.iter().map(|s| s.name.clone()).collect();
    let service_set: HashSet<String> = service_names.iter().cloned().collect();
    let svc_candidates = || service_names.iter().map(String::as_str);

    // Environment overrides name real services.
    for env in &plan.environments {
        for name in env.services.keys() {
            if !service_set.contains(name) {
                let help = did_you_mean(name, svc_candidates())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| "declare it under `services`".into());
                cx.error_help(
                    format!(
                        "environment `{}` overrides unknown service `{name}`",
                        env.name
                    ),
                    env.span.clone(),
                    help,
                );
            }
        }
    }

    crate::ssh::check_hosts(cx, &plan.services, &plan.environments);
    let protected: Vec<_> = plan
        .environments
        .iter()
        .map(|e| (e.name.clone(), e.span.clone(), &e.protection))
        .collect();
    crate::protect::check(cx, &plan.roles, &protected);
    crate::trigger::check(cx, &plan.triggers, &plan.environment_names());

    // Service dependencies exist and have no cycle; order services so dependencies come first.
    for s in &plan.services {
        for d in &s.depends_on {
            if !service_set.contains(&d.value) {
                let help = did_you_mean(&d.value, svc_candidates())
                    .map(|x| format!("did you mean `{x}`?"))
                    .unwrap_or_else(|| format!("known services: {}", service_names.join(", ")));
                cx.error_help(
                    format!(
                        "service `{}` depends on unknown service `{}`",
                        s.name, d.value
                    ),
                    d.span.clone(),
                    help,
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(&plan.services) {
        let first = plan.service(&cycle[0]).map(|s| s.span.clone());
        cx.diags.push(
            Diagnostic::error(
                format!(
                    "services depend on each other in a cycle: {}",
                    cycle.join(" -> ")
                ),
                first,
            )
            .with_help("remove one of the `depends_on` entries in the cycle"),
        );
    } else {
        plan.services = topo_order(std::mem::take(&mut plan.services));
    }

    // Step ids are unique; deploy steps name real services, once each.
    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut deployed: HashMap<String, Span> = HashMap::new();
    let mut earlier_ids: HashSet<String> = HashSet::new();
    let all_ids: HashSet<String> = cx
        .step_ids
        .iter()
        .cloned()
        .chain(plan.steps().map(|(_, s)| s.id.clone()))
        .collect();
    // Where each id is first written (the last insert of an id wins, so go backwards).
    let written_order: HashMap<String, usize> = cx
        .step_ids
        .iter()
        .enumerate()
        .rev()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    let declared_before = |target: &str, current: &str| -> bool {
        let t = written_order.get(target);
        let c = written_order.get(current);
        matches!((t, c), (Some(t), Some(c)) if t < c)
    };
    let var_names = |env: &Environment| -> HashSet<String> {
        plan.vars.keys().chain(env.vars.keys()).cloned().collect()
    };
    let env_vars: Vec<(String, HashSet<String>)> = plan
        .environments
        .iter()
        .map(|e| (e.name.clone(), var_names(e)))
        .collect();
    let env_secrets: Vec<(String, HashSet<String>)> = plan
        .environments
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                plan.secrets
                    .names()
                    .chain(e.secrets.names())
                    .map(String::from)
                    .collect(),
            )
        })
        .collect();

    // Spans are worked out only for the references that turn out to be wrong.
    let mut refs_to_check: Vec<(Ref, RefAt, Option<usize>)> = Vec::new();
    fn collect<'p>(
        t: &'p Spanned<Template>,
        step: Option<usize>,
        out: &mut Vec<(Ref, RefAt<'p>, Option<usize>)>,
    ) {
        for (r, offset) in t.value.refs() {
            out.push((r, RefAt::In(t, offset), step));
        }
    }

    for (index, (_stage, step)) in plan.steps().enumerate() {
        let first_ref = refs_to_check.len();
        if let Some(prev) = seen.get(&step.id) {
            cx.diags.push(
                Diagnostic::error(
                    format!("duplicate step id `{}`", step.id),
                    Some(step.span.clone()),
                )
                .with_help(format!(
                    "the id is already used at line {}; step ids must be unique across the plan",
                    prev.pos.line
                )),
            );
        } else {
            seen.insert(step.id.clone(), step.span.clone());
        }
        match &step.kind {
            StepKind::Deploy { service } => {
                if !service_set.contains(&service.value) {
                    let help = did_you_mean(&service.value, svc_candidates())
                        .map(|x| format!("did you mean `{x}`?"))
                        .unwrap_or_else(|| {
                            if service_names.is_empty() {
                                "declare it under `services`".into()
                            } else {
                                format!("known services: {}", service_names.join(", "))
                            }
                        });
                    cx.error_help(
                        format!("step deploys unknown service `{}`", service.value),
                        service.span.clone(),
                        help,
                    );
                } else if let Some(prev) = deployed.get(&service.value) {
                    cx.error_help(
                        format!("service `{}` is deployed twice", service.value),
                        service.span.clone(),
                        format!(
                            "it is already deployed at line {}; deploy each service once per plan",
                            prev.pos.line
                        ),
                    );
                } else {
                    deployed.insert(service.value.clone(), service.span.clone());
                }
            }
            other => {
                for t in other.templates() {
                    collect(t, Some(index), &mut refs_to_check);
                }
            }
        }
        for t in step
            .env
            .values()
            .chain(step.cwd.iter())
            .chain(step.rollback.iter())
        {
            collect(t, Some(index), &mut refs_to_check);
        }
        if let Some(w) = &step.when {
            let mut rs = Vec::new();
            w.value.refs(&mut rs);
            for (r, _) in rs {
                refs_to_check.push((r, RefAt::At(&w.span), Some(index)));
            }
        }
        // A reference to a step's outputs must point to an earlier step, and `vu.*` is
        // known only in a load step. This step's references were pushed last, from
        // `first_ref` on.
        let load_step = matches!(step.kind, StepKind::Load(_));
        let mut own = Vec::new();
        for (r, at, from) in &refs_to_check[first_ref..] {
            match r {
                Ref::StepOutput { step: target, .. } => {
                    own.push((target.clone(), at.span(), *from))
                }
                Ref::Vu(name) if !load_step => cx.error_help(
                    format!("`vu.{name}` is only known in the requests of a load step"),
                    at.span(),
                    "a virtual user's variables exist while a load test runs; use `vars`, `secrets` or a step output here",
                ),
                _ => {}
            }
        }
        for (target, span, _) in own {
            if target == step.id {
                cx.error_help(
                    format!("step `{}` refers to its own outputs", step.id),
                    span,
                    "outputs exist only once a step has finished",
                );
            } else if !all_ids.contains(&target) {
                let help = did_you_mean(&target, all_ids.iter().map(String::as_str))
                    .map(|x| format!("did you mean `{x}`?"))
                    .unwrap_or_else(|| "give the step that writes the output an `id:`".into());
                cx.error_help(format!("unknown step `{target}`"), span, help);
            } else if !earlier_ids.contains(&target) && !declared_before(&target, &step.id) {
                cx.error_help(
                    format!(
                        "step `{}` uses outputs of step `{target}`, which runs later",
                        step.id
                    ),
                    span,
                    "move the step that writes the output before this one",
                );
            }
        }
        earlier_ids.insert(step.id.clone());
    }
    // A service is deployed after the services it depends on (when they are deployed here too).
    let order: Vec<(&str, Span)> = plan
        .steps()
        .filter_map(|(_, s)| match &s.kind {
            StepKind::Deploy { service } => Some((service.value.as_str(), service.span.clone())),
            _ => None,
        })
        .collect();
    let deploy_index: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .rev()
        .map(|(i, (n, _))| (*n, i))
        .collect();
    let by_name: HashMap<&str, &Service> =
        plan.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (i, (name, span)) in order.iter().enumerate() {
        let Some(svc) = by_name.get(name) else {
            continue;
        };
        for d in &svc.depends_on {
            if let Some(&j) = deploy_index.get(d.value.as_str())
                && j > i
            {
                cx.error_help(
                    format!(
                        "service `{name}` is deployed before `{}`, which it depends on",
                        d.value
                    ),
                    span.clone(),
                    format!("move the `deploy: {}` step before this one", d.value),
                );
            }
        }
    }
    // Remove step-output refs: they are checked above.
    refs_to_check.retain(|(r, _, _)| !matches!(r, Ref::StepOutput { .. }));

    for s in &plan.services {
        for t in s.driver.templates() {
            collect(t, None, &mut refs_to_check);
        }
        if let Some(h) = &s.health {
            match &h.target {
                HealthTarget::Path(t) | HealthTarget::Url(t) => {
                    collect(t, None, &mut refs_to_check)
                }
            }
            for j in &h.json {
                collect(&j.equals, None, &mut refs_to_check);
            }
        }
    }
    // The release identity is settled before anything else: it may use only `env`.
    for t in plan.release.version.iter().chain(plan.release.sha.iter()) {
        for (r, _) in t.value.refs() {
            if !matches!(r, Ref::Env(_) | Ref::Project | Ref::EnvironmentName) {
                cx.error_help(
                    format!("`release` cannot use `{r}`: the release is settled before vars, secrets and steps"),
                    t.span.clone(),
                    "use `${{ env.NAME }}` or a literal, or pass --release-version",
                );
            }
        }
    }
    for t in plan.vars.values() {
        collect(t, None, &mut refs_to_check);
    }
    for n in &plan.notify {
        for t in n.templates() {
            collect(t, None, &mut refs_to_check);
        }
    }
    for env in &plan.environments {
        for t in env.vars.values() {
            collect(t, None, &mut refs_to_check);
        }
        for n in &env.notify {
            for t in n.templates() {
                collect(t, None, &mut refs_to_check);
            }
        }
        for o in env.services.values() {
            for t in o.env.values().chain(o.start.iter()) {
                collect(t, None, &mut refs_to_check);
            }
        }
    }

    for (r, at, _) in refs_to_check {
        match &r {
            Ref::Var(name) => {
                let missing: Vec<&str> = env_vars
                    .iter()
                    .filter(|(_, vs)| !vs.contains(name))
                    .map(|(e, _)| e.as_str())
                    .collect();
                if !missing.is_empty() {
                    let all: HashSet<&str> = env_vars
                        .iter()
                        .flat_map(|(_, v)| v.iter().map(String::as_str))
                        .collect();
                    let help = match did_you_mean(name, all.iter().copied()) {
                        Some(s) => format!("did you mean `vars.{s}`?"),
                        None => format!(
                            "define `{name}` under `vars` (for every environment) or under each environment's `vars`"
                        ),
                    };
                    let msg = if missing.len() == env_vars.len() {
                        format!("unknown variable `vars.{name}`")
                    } else {
                        format!(
                            "variable `vars.{name}` is not defined for environment {}",
                            missing.join(", ")
                        )
                    };
                    cx.error_help(msg, at.span(), help);
                }
            }
            Ref::Secret(name) => {
                let missing: Vec<&str> = env_secrets
                    .iter()
                    .filter(|(_, vs)| !vs.contains(name))
                    .map(|(e, _)| e.as_str())
                    .collect();
                if !missing.is_empty() {
                    let all: HashSet<&str> = env_secrets
                        .iter()
                        .flat_map(|(_, v)| v.iter().map(String::as_str))
                        .collect();
                    let declared: Vec<&str> = env_secrets
                        .iter()
                        .filter(|(_, vs)| vs.contains(name))
                        .map(|(e, _)| e.as_str())
                        .collect();
                    let help = match did_you_mean(name, all.iter().copied()) {
                        // Declared in some environments only: say where, not "did you mean" itself.
                        Some(s) if s == name.as_str() => format!(
                            "it is declared for {} only: add `{name}` to the `secrets` of {} too, or at the top of the plan",
                            declared.join(", "),
                            missing.join(", ")
                        ),
                        Some(s) => format!("did you mean `secrets.{s}`?"),
                        None => format!(
                            "declare `{name}` under `secrets: {{ require: [...] }}` at the top or in each environment"
                        ),
                    };
                    let msg = if missing.len() == env_secrets.len() {
                        format!("undeclared secret `secrets.{name}`")
                    } else {
                        format!(
                            "secret `secrets.{name}` is not declared for environment {}",
                            missing.join(", ")
                        )
                    };
                    cx.error_help(msg, at.span(), help);
                }
            }
            Ref::Service { name, .. } if !service_set.contains(name) => {
                let help = did_you_mean(name, svc_candidates())
                    .map(|x| format!("did you mean `{x}`?"))
                    .unwrap_or_else(|| "declare it under `services`".into());
                cx.error_help(
                    format!("unknown service `{name}` in reference"),
                    at.span(),
                    help,
                );
            }
            _ => {}
        }
    }
}

/// Where a reference stands: inside a template (at a byte offset) or at a whole value.
enum RefAt<'p> {
    In(&'p Spanned<Template>, usize),
    At(&'p Span),
}

impl RefAt<'_> {
    fn span(&self) -> Span {
        match self {
            RefAt::At(span) => (*span).clone(),
            RefAt::In(t, offset) => {
                let mut span = t.span.clone();
                let line = t.span.source.line(span.pos.line).unwrap_or("");
                // Multi-line values keep the value's own position.
                if !line.is_empty() && !t.span.source.text.is_empty() {
                    span.pos.col += quote_shift(&t.span.source, &span) + offset;
                    span.width = line
                        .chars()
                        .skip(span.pos.col.saturating_sub(1))
                        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
                        .count()
                        .max(1);
                }
                span
            }
        }
    }
}

fn find_cycle(services: &[Service]) -> Option<Vec<String>> {
    fn visit<'a>(
        s: &'a str,
        deps: &HashMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut HashSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|x| *x == s) {
            let mut cycle: Vec<String> = stack[pos..].iter().map(|x| x.to_string()).collect();
            cycle.push(s.to_string());
            return Some(cycle);
        }
        if done.contains(s) {
            return None;
        }
        stack.push(s);
        for d in deps.get(s).into_iter().flatten() {
            if let Some(c) = visit(d, deps, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(s);
        None
    }
    let deps: HashMap<&str, Vec<&str>> = services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(|d| d.value.as_str()).collect(),
            )
        })
        .collect();
    let mut done = HashSet::new();
    for s in services {
        if let Some(c) = visit(&s.name, &deps, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Orders services so that each comes after those it depends on, keeping the written order
/// otherwise. Called only when there is no cycle.
fn topo_order(services: Vec<Service>) -> Vec<Service> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut placed = vec![false; services.len()];
    let mut order = Vec::with_capacity(services.len());
    fn place(
        i: usize,
        services: &[Service],
        index: &HashMap<&str, usize>,
        placed: &mut [bool],
        order: &mut Vec<usize>,
    ) {
        if placed[i] {
            return;
        }
        placed[i] = true;
        for d in &services[i].depends_on {
            if let Some(&j) = index.get(d.value.as_str()) {
                place(j, services, index, placed, order);
            }
        }
        order.push(i);
    }
    for i in 0..services.len() {
        place(i, &services, &index, &mut placed, &mut order);
    }
    drop(index);
    let mut slots: Vec<Option<Service>> = services.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(stages: &str) -> Vec<Diagnostic> {
        let text = format!("project: demo\nenvironments: {{ staging: {{}} }}\nstages:\n{stages}");
        match load_str(Path::new("stagegate.yml"), &text) {
            Ok(_) => Vec::new(),
            Err(d) => d.errors().cloned().collect(),
        }
    }

    #[test]
    fn default_names_are_a_first_line_cut_short() {
        let long = "x".repeat(80);
        let text = format!(
            "project: demo\nenvironments: {{ staging: {{}} }}\nstages:\n  s:\n    - run: |\n        echo ${{{{ env.A }}}}\n        echo two\n    - run: {long}\n    - gate: command\n      command: {long}\n"
        );
        let (plan, _) = load_str(Path::new("stagegate.yml"), &text).unwrap();
        let names: Vec<&str> = plan.steps().map(|(_, s)| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "echo ${{…}}…".to_string(),
                format!("{}…", "x".repeat(60)),
                format!("command gate: {}…", "x".repeat(50)),
            ]
        );
    }

    #[test]
    fn secret_names_follow_one_rule_in_secrets_and_in_a_secrets_gate() {
        let found =
            errors("  s:\n    - gate: secrets\n      require: [GOOD_1, bad-name, 1ST, a.b]\n");
        let gate: Vec<&str> = found.iter().map(|d| d.message.as_str()).collect();
        let text = "project: demo\nsecrets: [GOOD_1, bad-name, 1ST, a.b]\nenvironments: { staging: {} }\nstages: { s: [ { run: echo } ] }\n";
        let top: Vec<String> = load_str(Path::new("stagegate.yml"), text)
            .unwrap_err()
            .errors()
            .map(|d| d.message.clone())
            .collect();
        let expected = [
            "`bad-name` is not a valid secret name",
            "`1ST` is not a valid secret name",
            "`a.b` is not a valid secret name",
        ];
        assert_eq!(gate, expected);
        assert_eq!(top, expected);
        assert!(is_env_name("_X") && !is_env_name("") && !is_env_name("9"));
    }

    #[test]
    fn keys_that_do_not_apply_to_a_deploy_step_say_remove() {
        let text = "project: demo\nenvironments: { staging: {} }\nservices: { web: { start: ./web } }\nstages: { s: [ { deploy: web, retries: 2, cwd: x } ] }\n";
        let found: Vec<(String, Option<String>)> = load_str(Path::new("stagegate.yml"), text)
            .unwrap_err()
            .errors()
            .map(|d| (d.message.clone(), d.help.clone()))
            .collect();
        for key in ["retries", "cwd"] {
            assert!(
                found.iter().any(|(m, h)| m
                    .starts_with(&format!("`{key}` does not apply to a deploy step"))
                    && h.as_deref()
                        .is_some_and(|h| h.starts_with(&format!("remove `{key}`: ")))),
                "{found:?}"
            );
        }
    }

    #[test]
    fn vu_is_known_only_in_a_load_step() {
        let found =
            errors("  s:\n    - run: echo ${{ vu.id }}\n      env: { A: \"${{ vu.name }}\" }\n");
        let vu: Vec<&Diagnostic> = found
            .iter()
            .filter(|d| {
                d.message
                    .contains("is only known in the requests of a load step")
            })
            .collect();
        let at: Vec<(String, Option<String>)> = vu
            .iter()
            .map(|d| (d.message.clone(), d.location()))
            .collect();
        assert!(
            at.contains(&(
                "`vu.id` is only known in the requests of a load step".into(),
                Some("stagegate.yml:5:21".into())
            )),
            "{at:?}"
        );
        assert!(
            at.iter()
                .any(|(m, _)| m == "`vu.name` is only known in the requests of a load step"),
            "{at:?}"
        );
        assert!(vu.iter().all(|d| d.help.as_deref()
            == Some("a virtual user's variables exist while a load test runs; use `vars`, `secrets` or a step output here")));
    }
}
