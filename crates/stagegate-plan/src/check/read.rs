//! Reading check steps: the action, `expect`, `until`, `capture`, `retry` and `repeat`,
//! collecting every error with its place in the plan.

use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};

use super::*;
use crate::build::{is_name, quote_shift, template, template_field};
use crate::diagnostic::{Span, did_you_mean};
use crate::template::Template;
use crate::yaml::{Cx, Spanned, one_or_many, scalar_bool};

/// Keys every check step may have besides its action and the common step keys.
const CHECK_KEYS: &[&str] = &["expect", "capture", "retry", "until"];
/// Keys only `http` steps have.
const HTTP_STEP_KEYS: &[&str] = &["repeat", "concurrency"];
const HTTP_KEYS: &[&str] = &[
    "method",
    "url",
    "headers",
    "query",
    "auth",
    "json",
    "form",
    "multipart",
    "body",
    "timeout",
    "follow_redirects",
    "tls",
    "save",
    "max_body",
];
const PROM_KEYS: &[&str] = &[
    "url", "query", "range", "step", "headers", "auth", "timeout",
];
const LOG_KEYS: &[&str] = &["file", "command", "tail", "follow"];
const MATCHER_KEYS: &[&str] = &[
    "equals", "one_of", "contains", "matches", "exists", "count", "length", "not", "<", "<=", ">",
    ">=", "==", "!=", "lt", "le", "gt", "ge", "eq", "ne",
];

/// Reads a check step (one of [`CHECK_ACTIONS`]).
pub(crate) fn read(
    cx: &mut Cx,
    action: &str,
    m: &MarkedMappingNode,
    what: &str,
    common: &[&str],
) -> Option<CheckSpec> {
    let mut allowed: Vec<&str> = common.to_vec();
    allowed.push(action);
    allowed.extend_from_slice(CHECK_KEYS);
    if action == "http" {
        allowed.extend_from_slice(HTTP_STEP_KEYS);
    }
    cx.keys(m, what, &allowed);
    let node = m.get_node(action)?;
    let target = match action {
        "http" => read_http(cx, node, what).map(|h| CheckTarget::Http(Box::new(h))),
        "command" => cx
            .scalar(node, &format!("`command` in {what}"))
            .and_then(|s| template(cx, s))
            .map(CheckTarget::Command),
        "tcp" => cx
            .scalar(node, &format!("`tcp` in {what} (HOST:PORT)"))
            .and_then(|s| template(cx, s))
            .map(CheckTarget::Tcp),
        "log" => read_log(cx, node, what).map(CheckTarget::Log),
        "file" => read_files(cx, node, what).map(CheckTarget::File),
        "prometheus" => {
            read_prometheus(cx, node, what).map(|p| CheckTarget::Prometheus(Box::new(p)))
        }
        _ => None,
    };

    let kind = action;
    let mut expect = match m.get_node("expect") {
        Some(n) => read_expect(cx, n, kind, "expect"),
        None => Vec::new(),
    };
    add_implicit(cx, kind, m, &mut expect);
    let until = match m.get_node("until") {
        Some(n) => read_expect(cx, n, kind, "until"),
        None => Vec::new(),
    };
    if kind == "log" && !expect.iter().any(|a| !is_implicit(a)) {
        cx.error_help(
            format!("{what} is a log check with nothing to look for"),
            cx.span(m.get_node("log")?),
            "add `expect: { absent: \"(?i)error|critical\" }` or `expect: { present: [...] }`",
        );
    }
    let captures = match m.get_node("capture") {
        Some(n) => read_captures(cx, n, kind),
        None => Vec::new(),
    };
    let retry = m.get_node("retry").and_then(|n| read_retry(cx, n, what));
    if let Some(n) = m.get_node("retry")
        && m.get_node("retries").is_some()
    {
        cx.error_help(
            format!("{what} has both `retry` and `retries`"),
            cx.span(n),
            "keep `retry: { attempts, interval }`; `retries` is the shorthand of `run` steps",
        );
    }
    if let Some(n) = m.get_node("until")
        && m.get_node("retries").is_none()
        && m.get_node("retry").is_none()
    {
        cx.error_help(
            format!("{what} has `until` but no `retry`"),
            cx.span(n),
            "`until` polls: say how often and how long, e.g. `retry: { attempts: 30, interval: 1s }`",
        );
    }
    let repeat = read_repeat(cx, m, what);
    if let Some(r) = &repeat {
        let span = cx.span(m.get_node("repeat").unwrap_or(m.get_node(action)?));
        if r.count > 1 {
            for (key, why) in [
                ("capture", "captures need a single response"),
                ("retry", "each of the requests is checked once"),
                ("until", "each of the requests is checked once"),
            ] {
                if m.get_node(key).is_some() {
                    cx.error_help(
                        format!("{what} has both `repeat` and `{key}`"),
                        span.clone(),
                        format!("{why}; split the step in two"),
                    );
                }
            }
            if let Some(CheckTarget::Http(h)) = &target
                && h.save.is_some()
            {
                cx.error_help(
                    format!("{what} has both `repeat` and `save`"),
                    span,
                    "every response would overwrite the same file; save in a separate step",
                );
            }
        }
    }
    Some(CheckSpec {
        target: target?,
        expect,
        until,
        captures,
        retry,
        repeat,
    })
}

fn is_implicit(a: &Assertion) -> bool {
    matches!(a, Assertion::Value { implicit: true, .. })
}

/// The defaults: an `http` check expects a 2xx status, a `command` exit code 0, a `tcp`
/// port open, unless the plan says otherwise.
fn add_implicit(cx: &mut Cx, kind: &str, m: &MarkedMappingNode, expect: &mut Vec<Assertion>) {
    let has = |expect: &Vec<Assertion>, f: &dyn Fn(&Subject) -> bool| {
        expect
            .iter()
            .any(|a| matches!(a, Assertion::Value { subject, .. } if f(subject)))
    };
    let Some(action) = m.get_node(kind) else {
        return;
    };
    let span = cx.span(action);
    let lit = |text: &str| Spanned {
        value: Template::literal(text),
        span: span.clone(),
    };
    let (subject, matcher) = match kind {
        "http" if !has(expect, &|s| matches!(s, Subject::Status)) => {
            (Subject::Status, Matcher::StatusClass(2))
        }
        "command" if !has(expect, &|s| matches!(s, Subject::ExitCode)) => {
            (Subject::ExitCode, Matcher::Equals(lit("0")))
        }
        "tcp" if !has(expect, &|s| matches!(s, Subject::Open)) => {
            (Subject::Open, Matcher::Equals(lit("true")))
        }
        // No series is no data: never a silent pass.
        "prometheus" if !has(expect, &|s| matches!(s, Subject::Series)) => {
            (Subject::Series, Matcher::Compare(CmpOp::Ge, lit("1")))
        }
        _ => return,
    };
    expect.insert(
        0,
        Assertion::Value {
            span: span.clone(),
            subject,
            matcher,
            implicit: true,
        },
    );
}

fn read_http(cx: &mut Cx, n: &Node, what: &str) -> Option<HttpRequest> {
    let hwhat = format!("`http` in {what}");
    // `http: URL` is a GET.
    if let Node::Scalar(_) = n {
        let s = cx.scalar(n, &hwhat)?;
        let url_text = s.value.clone();
        let url = template(cx, s)?;
        return Some(HttpRequest {
            method: "GET".into(),
            url,
            url_text,
            headers: Vec::new(),
            query: Vec::new(),
            auth: None,
            body: None,
            timeout: None,
            follow_redirects: false,
            insecure: false,
            ca: None,
            save: None,
            max_body: DEFAULT_MAX_BODY,
        });
    }
    let m = cx.mapping(n, &hwhat)?;
    cx.keys(m, &hwhat, HTTP_KEYS);
    let method = match cx.string(m, "method", &hwhat) {
        Some(s) => {
            let up = s.value.trim().to_ascii_uppercase();
            if up.is_empty() || !up.chars().all(|c| c.is_ascii_alphabetic()) {
                cx.error_help(
                    format!("`{}` is not an HTTP method", s.value),
                    s.span,
                    "use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
                );
            }
            up
        }
        None => "GET".into(),
    };
    let url_raw = cx.string(m, "url", &hwhat);
    if url_raw.is_none() && m.get_node("url").is_none() {
        cx.error_help(
            format!("{hwhat} has no `url`"),
            cx.span(n),
            "add `url: \"${{ services.web.url }}/health\"`",
        );
    }
    let url_text = url_raw
        .as_ref()
        .map(|u| u.value.clone())
        .unwrap_or_default();
    let url = url_raw.and_then(|u| template(cx, u));
    let headers = ordered_templates(cx, m, "headers", &hwhat);
    let query = ordered_templates(cx, m, "query", &hwhat);
    let auth = m.get_node("auth").and_then(|a| read_auth(cx, a, &hwhat));

    let bodies: Vec<&str> = ["json", "form", "multipart", "body"]
        .into_iter()
        .filter(|k| m.get_node(k).is_some())
        .collect();
    if bodies.len() > 1 {
        cx.error_help(
            format!("{hwhat} has more than one body: {}", bodies.join(", ")),
            cx.span(n),
            "keep one of `json`, `form`, `multipart` or `body`",
        );
    }
    let body = match bodies.first().copied() {
        Some("json") => Some(RequestBody::Json(read_json_template(
            cx,
            m.get_node("json")?,
        )?)),
        Some("form") => Some(RequestBody::Form(ordered_templates(cx, m, "form", &hwhat))),
        Some("multipart") => read_multipart(cx, m.get_node("multipart")?, &hwhat),
        Some("body") => read_payload(cx, m.get_node("body")?, &format!("`body` in {hwhat}"))
            .map(RequestBody::Raw),
        _ => None,
    };
    let mut insecure = false;
    let mut ca = None;
    if let Some(tn) = m.get_node("tls")
        && let Some(tm) = cx.mapping(tn, &format!("`tls` in {hwhat}"))
    {
        cx.keys(tm, "`tls`", &["insecure", "ca"]);
        insecure = cx.bool(tm, "insecure", "`tls`").unwrap_or(false);
        ca = template_field(cx, tm, "ca", "`tls`");
    }
    let max_body = match cx.string(m, "max_body", &hwhat) {
        Some(s) => match parse_size(&s.value) {
            Ok(v) => v,
            Err(e) => {
                cx.error(format!("`max_body`: {e}"), s.span);
                DEFAULT_MAX_BODY
            }
        },
        None => DEFAULT_MAX_BODY,
    };
    Some(HttpRequest {
        method,
        url: url?,
        url_text,
        headers,
        query,
        auth,
        body,
        timeout: cx.duration(m, "timeout", &hwhat).map(|d| d.value),
        follow_redirects: cx.bool(m, "follow_redirects", &hwhat).unwrap_or(false),
        insecure,
        ca,
        save: template_field(cx, m, "save", &hwhat),
        max_body,
    })
}

/// `prometheus: QUERY` (the server from `url` is then required) or
/// `prometheus: { url, query, range, step, headers, auth, timeout }`.
fn read_prometheus(cx: &mut Cx, n: &Node, what: &str) -> Option<PromQuery> {
    let pwhat = format!("`prometheus` in {what}");
    let m = cx.mapping(n, &pwhat)?;
    cx.keys(m, &pwhat, PROM_KEYS);
    let url = template_field(cx, m, "url", &pwhat);
    if m.get_node("url").is_none() {
        cx.error_help(
            format!("{pwhat} has no `url`"),
            cx.span(n),
            "add the server's address, e.g. `url: \"${{ vars.prometheus }}\"` or `url: http://127.0.0.1:9090`",
        );
    }
    let query_raw = cx.string(m, "query", &pwhat);
    if query_raw.is_none() && m.get_node("query").is_none() {
        cx.error_help(
            format!("{pwhat} has no `query`"),
            cx.span(n),
            "add a PromQL query, e.g. `query: sum(rate(http_requests_total{status=\"5xx\"}[1m]))`",
        );
    }
    let query_text = query_raw
        .as_ref()
        .map(|q| q.value.clone())
        .unwrap_or_default();
    if let Some(q) = &query_raw
        && q.value.trim().is_empty()
    {
        cx.error_help(
            format!("{pwhat} has an empty `query`"),
            q.span.clone(),
            "write a PromQL query",
        );
    }
    let query = query_raw.and_then(|q| template(cx, q));
    let range = cx.duration(m, "range", &pwhat).map(|d| d.value);
    let step = cx.duration(m, "step", &pwhat);
    if let Some(s) = &step {
        if range.is_none() {
            cx.error_help(
                format!("{pwhat} has `step` but no `range`"),
                s.span.clone(),
                "`step` is the resolution of a range query: add `range: 5m`, or remove `step`",
            );
        } else if s.value.is_zero() {
            cx.error(
                format!("`step` in {pwhat} must be more than 0"),
                s.span.clone(),
            );
        }
    }
    if let (Some(r), Some(s)) = (range, &step)
        && !s.value.is_zero()
        && r.as_secs_f64() / s.value.as_secs_f64() > 11_000.0
    {
        cx.error_help(
            format!("{pwhat} asks for more than 11,000 points per series"),
            s.span.clone(),
            "Prometheus refuses such range queries: raise `step` or shorten `range`",
        );
    }
    let headers = ordered_templates(cx, m, "headers", &pwhat);
    let auth = m.get_node("auth").and_then(|a| read_auth(cx, a, &pwhat));
    Some(PromQuery {
        url: url?,
        query: query?,
        query_text,
        range,
        step: step.map(|s| s.value),
        headers,
        auth,
        timeout: cx.duration(m, "timeout", &pwhat).map(|d| d.value),
    })
}

/// A mapping of names to templates, in the order written.
fn ordered_templates(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    key: &str,
    what: &str,
) -> Vec<(String, Spanned<Template>)> {
    let mut out = Vec::new();
    let Some(n) = m.get_node(key) else {
        return out;
    };
    let Some(map) = cx.mapping(n, &format!("`{key}` in {what}")) else {
        return out;
    };
    for (k, v) in map.iter() {
        if let Some(t) = cx
            .scalar(v, &format!("`{}` in `{key}`", k.as_str()))
            .and_then(|s| template(cx, s))
        {
            out.push((k.as_str().to_string(), t));
        }
    }
    out
}

fn read_auth(cx: &mut Cx, n: &Node, what: &str) -> Option<Auth> {
    let awhat = format!("`auth` in {what}");
    let m = cx.mapping(n, &awhat)?;
    cx.keys(m, &awhat, &["bearer", "basic"]);
    match (m.get_node("bearer"), m.get_node("basic")) {
        (Some(_), None) => template_field(cx, m, "bearer", &awhat).map(Auth::Bearer),
        (None, Some(b)) => {
            let bm = cx.mapping(b, "`basic` in `auth`")?;
            cx.keys(bm, "`basic` in `auth`", &["user", "password"]);
            let user = template_field(cx, bm, "user", "`basic`");
            let password = template_field(cx, bm, "password", "`basic`");
            if user.is_none() && bm.get_node("user").is_none() {
                cx.error_help(
                    "`basic` in `auth` has no `user`",
                    cx.span(b),
                    "write `basic: { user: admin, password: \"${{ secrets.ADMIN_PASSWORD }}\" }`",
                );
            }
            Some(Auth::Basic {
                user: user?,
                password: password.unwrap_or_else(|| Spanned {
                    value: Template::default(),
                    span: cx.span(b),
                }),
            })
        }
        _ => {
            cx.error_help(
                format!("{awhat} must have exactly one of `bearer` or `basic`"),
                cx.span(n),
                "write `auth: { bearer: \"${{ secrets.TOKEN }}\" }`",
            );
            None
        }
    }
}

fn read_multipart(cx: &mut Cx, n: &Node, what: &str) -> Option<RequestBody> {
    let mwhat = format!("`multipart` in {what}");
    let m = cx.mapping(n, &mwhat)?;
    let mut parts = Vec::new();
    for (k, v) in m.iter() {
        let pwhat = format!("part `{}` of {mwhat}", k.as_str());
        let (content, filename, content_type) = match v {
            Node::Mapping(pm) => {
                cx.keys(
                    pm,
                    &pwhat,
                    &[
                        "text",
                        "file",
                        "random_bytes",
                        "seed",
                        "filename",
                        "content_type",
                    ],
                );
                let content = read_payload(cx, v, &pwhat);
                (
                    content,
                    template_field(cx, pm, "filename", &pwhat),
                    template_field(cx, pm, "content_type", &pwhat),
                )
            }
            _ => (
                cx.scalar(v, &pwhat)
                    .and_then(|s| template(cx, s))
                    .map(Payload::Text),
                None,
                None,
            ),
        };
        if let Some(content) = content {
            parts.push(MultipartPart {
                name: k.as_str().to_string(),
                content,
                filename,
                content_type,
            });
        }
    }
    Some(RequestBody::Multipart(parts))
}

/// `"text"`, `{ text: ... }`, `{ file: PATH }` or `{ random_bytes: SIZE, seed: N }`.
fn read_payload(cx: &mut Cx, n: &Node, what: &str) -> Option<Payload> {
    let m = match n {
        Node::Scalar(_) => {
            return cx
                .scalar(n, what)
                .and_then(|s| template(cx, s))
                .map(Payload::Text);
        }
        other => cx.mapping(other, what)?,
    };
    let kinds: Vec<&str> = ["text", "file", "random_bytes"]
        .into_iter()
        .filter(|k| m.get_node(k).is_some())
        .collect();
    if kinds.len() != 1 {
        cx.error_help(
            format!("{what} needs exactly one of `text`, `file` or `random_bytes`"),
            cx.span(n),
            "e.g. `{ random_bytes: 10MiB, seed: 7 }` or `{ file: test.bin }`",
        );
        return None;
    }
    if kinds[0] != "random_bytes"
        && let Some(s) = m.get_node("seed")
    {
        cx.error_help(
            format!("`seed` in {what} only goes with `random_bytes`"),
            cx.span(s),
            "remove it",
        );
    }
    match kinds[0] {
        "text" => template_field(cx, m, "text", what).map(Payload::Text),
        "file" => template_field(cx, m, "file", what).map(Payload::File),
        _ => {
            let s = cx.string(m, "random_bytes", what)?;
            let size = match parse_size(&s.value) {
                Ok(v) => v,
                Err(e) => {
                    cx.error(format!("`random_bytes`: {e}"), s.span);
                    return None;
                }
            };
            let seed = cx.uint(m, "seed", what);
            Some(Payload::Random { size, seed })
        }
    }
}

fn read_json_template(cx: &mut Cx, n: &Node) -> Option<JsonTemplate> {
    Some(match n {
        Node::Scalar(s) => {
            let text = s.as_str();
            // A quoted (or block) scalar is a string, whatever it looks like: `"1"` stays
            // "1". The loader marks only plain scalars as coercible.
            if s.may_coerce() {
                if let Some(b) = s.as_bool() {
                    return Some(JsonTemplate::Bool(b));
                }
                if matches!(text, "null" | "~") {
                    return Some(JsonTemplate::Null);
                }
                if let Ok(num) = serde_json::from_str::<serde_json::Number>(text) {
                    return Some(JsonTemplate::Number(num));
                }
            }
            let sp = cx.scalar(n, "a JSON value")?;
            JsonTemplate::String(template(cx, sp)?)
        }
        Node::Sequence(seq) => JsonTemplate::Array(
            seq.iter()
                .filter_map(|item| read_json_template(cx, item))
                .collect(),
        ),
        Node::Mapping(map) => JsonTemplate::Object(
            map.iter()
                .filter_map(|(k, v)| read_json_template(cx, v).map(|t| (k.as_str().to_string(), t)))
                .collect(),
        ),
    })
}

fn read_log(cx: &mut Cx, n: &Node, what: &str) -> Option<LogSource> {
    let lwhat = format!("`log` in {what}");
    let m = cx.mapping(n, &lwhat)?;
    cx.keys(m, &lwhat, LOG_KEYS);
    let from = match (m.get_node("file"), m.get_node("command")) {
        (Some(_), None) => LogFrom::File(template_field(cx, m, "file", &lwhat)?),
        (None, Some(_)) => LogFrom::Command(template_field(cx, m, "command", &lwhat)?),
        _ => {
            cx.error_help(
                format!("{lwhat} needs exactly one of `file` or `command`"),
                cx.span(n),
                "e.g. `log: { file: logs/audit.log, tail: 100 }`",
            );
            return None;
        }
    };
    let tail = cx.uint(m, "tail", &lwhat).map(|t| t.max(1) as usize);
    Some(LogSource {
        from,
        tail,
        follow: cx.duration(m, "follow", &lwhat).map(|d| d.value),
    })
}

fn read_files(cx: &mut Cx, n: &Node, what: &str) -> Option<Vec<Spanned<Template>>> {
    let items = one_or_many(n);
    let mut out = Vec::new();
    for item in items {
        if let Some(t) = cx
            .scalar(item, &format!("a path in `file` of {what}"))
            .and_then(|s| template(cx, s))
        {
            out.push(t);
        }
    }
    if out.is_empty() {
        cx.error_help(
            format!("`file` in {what} names no file"),
            cx.span(n),
            "give a path, or a list of paths to read joined in order",
        );
        return None;
    }
    Some(out)
}

fn read_retry(cx: &mut Cx, n: &Node, what: &str) -> Option<RetrySpec> {
    let rwhat = format!("`retry` in {what}");
    // `retry: 5` is five attempts a second apart.
    if let Node::Scalar(s) = n {
        return match s.as_str().trim().parse::<u64>() {
            Ok(a) if a >= 1 => Some(RetrySpec {
                attempts: max_attempts(cx, a, &rwhat, cx.span(n)),
                interval: Duration::from_secs(1),
            }),
            _ => {
                cx.error_help(
                    format!("{rwhat} must be a number of attempts or a mapping"),
                    cx.span(n),
                    "e.g. `retry: { attempts: 10, interval: 500ms }`",
                );
                None
            }
        };
    }
    let m = cx.mapping(n, &rwhat)?;
    cx.keys(m, &rwhat, &["attempts", "interval"]);
    let attempts = cx.uint(m, "attempts", &rwhat);
    if attempts.is_none() && m.get_node("attempts").is_none() {
        cx.error_help(
            format!("{rwhat} has no `attempts`"),
            cx.span(n),
            "e.g. `retry: { attempts: 10, interval: 500ms }`",
        );
    }
    if attempts == Some(0) {
        cx.error("`attempts` must be at least 1", cx.span(n));
    }
    let attempts = attempts?;
    let span = cx.span(m.get_node("attempts").unwrap_or(n));
    Some(RetrySpec {
        attempts: max_attempts(cx, attempts, &rwhat, span),
        interval: cx
            .duration(m, "interval", &rwhat)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(1)),
    })
}

/// The most attempts a `retry` may make.
const MAX_ATTEMPTS: u64 = 100_000;
/// The most requests a `repeat` may send, and the most it may have in flight at once.
const MAX_REPEAT: u64 = 10_000_000;
const MAX_CONCURRENCY: u64 = 4096;

/// `attempts`, at least 1; more than [`MAX_ATTEMPTS`] is an error.
fn max_attempts(cx: &mut Cx, attempts: u64, rwhat: &str, span: Span) -> u32 {
    if attempts > MAX_ATTEMPTS {
        cx.error_help(
            format!("`attempts` in {rwhat} is {attempts}; at most {MAX_ATTEMPTS}"),
            span,
            "poll less often: a longer `interval` needs fewer attempts",
        );
    }
    attempts.clamp(1, MAX_ATTEMPTS) as u32
}

fn read_repeat(cx: &mut Cx, m: &MarkedMappingNode, what: &str) -> Option<RepeatSpec> {
    let count = cx.uint(m, "repeat", what);
    let concurrency = cx.uint(m, "concurrency", what);
    if let (None, Some(_)) = (count, concurrency)
        && m.get_node("repeat").is_none()
    {
        cx.error_help(
            format!("{what} has `concurrency` without `repeat`"),
            cx.span(m.get_node("concurrency")?),
            "`concurrency` says how many of the `repeat` requests are in flight at once",
        );
    }
    let count = count?;
    if count == 0 {
        cx.error(
            "`repeat` must be at least 1",
            cx.span(m.get_node("repeat")?),
        );
    }
    if concurrency == Some(0) {
        cx.error(
            "`concurrency` must be at least 1",
            cx.span(m.get_node("concurrency")?),
        );
    }
    if count > MAX_REPEAT {
        cx.error_help(
            format!("`repeat` in {what} is {count}; at most {MAX_REPEAT}"),
            cx.span(m.get_node("repeat")?),
            "for a longer run, use a `load` step (see docs/load.md)",
        );
    }
    if let Some(c) = concurrency.filter(|c| *c > MAX_CONCURRENCY) {
        cx.error_help(
            format!("`concurrency` in {what} is {c}; at most {MAX_CONCURRENCY}"),
            cx.span(m.get_node("concurrency")?),
            "for more requests in flight, use a `load` step (see docs/load.md)",
        );
    }
    Some(RepeatSpec {
        count: count.clamp(1, MAX_REPEAT) as u32,
        concurrency: concurrency.unwrap_or(1).clamp(1, MAX_CONCURRENCY) as u32,
    })
}

/// The keys of `expect` (and `until`) each check kind understands.
fn expect_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "http" => &[
            "status", "headers", "json", "body", "body_len", "sha256", "duration",
        ],
        "command" => &[
            "exit_code",
            "stdout",
            "stderr",
            "json",
            "sha256",
            "duration",
        ],
        "tcp" => &["open", "duration"],
        "log" => &["absent", "present"],
        "file" => &["size", "sha256", "body", "json"],
        "prometheus" => &["value", "series", "labels"],
        _ => &[],
    }
}

fn read_expect(cx: &mut Cx, n: &Node, kind: &str, key: &str) -> Vec<Assertion> {
    let what = format!("`{key}` of a {kind} check");
    let mut out = Vec::new();
    // `expect: "< 0.01"`: a condition on every value a query returned.
    if kind == "prometheus" && matches!(n, Node::Scalar(_)) {
        let span = cx.span(n);
        for matcher in read_matcher(cx, n, &Subject::Value, &what) {
            out.push(Assertion::Value {
                span: span.clone(),
                subject: Subject::Value,
                matcher,
                implicit: false,
            });
        }
        return out;
    }
    let Some(m) = cx.mapping(n, &what) else {
        return out;
    };
    cx.keys(m, &what, expect_keys(kind));
    for (k, v) in m.iter() {
        let name = k.as_str();
        let span = cx.key_span(k);
        let mut push = |cx: &mut Cx, subject: Subject, node: &Node| {
            for matcher in read_matcher(cx, node, &subject, &format!("`{name}` in {what}")) {
                out.push(Assertion::Value {
                    span: span.clone(),
                    subject: subject.clone(),
                    matcher,
                    implicit: false,
                });
            }
        };
        match name {
            "status" => push(cx, Subject::Status, v),
            "body" | "stdout" => push(cx, Subject::Body, v),
            "body_len" | "size" => push(cx, Subject::BodyLen, v),
            "sha256" => push(cx, Subject::Sha256, v),
            "duration" => push(cx, Subject::Duration, v),
            "exit_code" => push(cx, Subject::ExitCode, v),
            "stderr" => push(cx, Subject::Stderr, v),
            "open" => push(cx, Subject::Open, v),
            "value" => push(cx, Subject::Value, v),
            "series" => push(cx, Subject::Series, v),
            "labels" => {
                let Some(lm) = cx.mapping(v, &format!("`labels` in {what}")) else {
                    continue;
                };
                for (lk, lv) in lm.iter() {
                    let subject = Subject::Label(lk.as_str().to_string());
                    let lspan = cx.key_span(lk);
                    for matcher in
                        read_matcher(cx, lv, &subject, &format!("label `{}`", lk.as_str()))
                    {
                        out.push(Assertion::Value {
                            span: lspan.clone(),
                            subject: subject.clone(),
                            matcher,
                            implicit: false,
                        });
                    }
                }
            }
            "headers" => {
                let Some(hm) = cx.mapping(v, &format!("`headers` in {what}")) else {
                    continue;
                };
                for (hk, hv) in hm.iter() {
                    let subject = Subject::Header(hk.as_str().to_ascii_lowercase());
                    let hspan = cx.key_span(hk);
                    for matcher in
                        read_matcher(cx, hv, &subject, &format!("header `{}`", hk.as_str()))
                    {
                        out.push(Assertion::Value {
                            span: hspan.clone(),
                            subject: subject.clone(),
                            matcher,
                            implicit: false,
                        });
                    }
                }
            }
            "json" => {
                let Some(jm) = cx.mapping(v, &format!("`json` in {what}")) else {
                    continue;
                };
                for (jk, jv) in jm.iter() {
                    let Some(path) = json_path(cx, jk.as_str(), cx.key_span(jk)) else {
                        continue;
                    };
                    let jspan = cx.key_span(jk);
                    let subject = Subject::Json(path);
                    for matcher in read_matcher(cx, jv, &subject, &format!("`{}`", jk.as_str())) {
                        out.push(Assertion::Value {
                            span: jspan.clone(),
                            subject: subject.clone(),
                            matcher,
                            implicit: false,
                        });
                    }
                }
            }
            "absent" => {
                let items = one_or_many(v);
                for item in items {
                    if let Some(s) = cx.scalar(item, "a pattern in `absent`") {
                        let ispan = s.span.clone();
                        if let Some(pattern) = regex_spec(cx, s) {
                            out.push(Assertion::LogAbsent {
                                span: ispan,
                                pattern,
                            });
                        }
                    }
                }
            }
            "present" => {
                let items = one_or_many(v);
                for item in items {
                    let ispan = cx.span(item);
                    if let Some(entry) = read_log_entry(cx, item) {
                        out.push(Assertion::LogPresent { span: ispan, entry });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `"regex"`, `{ matches: regex }` or `{ json: { field: matcher, ... } }`.
fn read_log_entry(cx: &mut Cx, n: &Node) -> Option<LogEntry> {
    if let Node::Scalar(_) = n {
        let s = cx.scalar(n, "an entry in `present`")?;
        return regex_spec(cx, s).map(LogEntry::Matches);
    }
    let m = cx.mapping(n, "an entry in `present`")?;
    cx.keys(m, "an entry in `present`", &["matches", "json"]);
    match (m.get_node("matches"), m.get_node("json")) {
        (Some(_), None) => {
            let s = cx.string(m, "matches", "an entry in `present`")?;
            regex_spec(cx, s).map(LogEntry::Matches)
        }
        (None, Some(j)) => {
            let jm = cx.mapping(j, "`json` in an entry of `present`")?;
            let mut fields = Vec::new();
            for (k, v) in jm.iter() {
                // A plain key names a top-level field; `$...` is a JSONPath.
                let text = if k.as_str().starts_with('$') {
                    k.as_str().to_string()
                } else {
                    format!(
                        "$['{}']",
                        k.as_str().replace('\\', "\\\\").replace('\'', "\\'")
                    )
                };
                let Some(path) = json_path(cx, &text, cx.key_span(k)) else {
                    continue;
                };
                let subject = Subject::Json(path.clone());
                let matchers = read_matcher(cx, v, &subject, &format!("field `{}`", k.as_str()));
                fields.push((path, matchers));
            }
            Some(LogEntry::Json(fields))
        }
        _ => {
            cx.error_help(
                "an entry in `present` needs exactly one of `matches` or `json`",
                cx.span(n),
                "e.g. `- json: { event: blob_download, actor: admin }`",
            );
            None
        }
    }
}

/// Reads a matcher: a scalar (equals, or a status class, or `< 2s` for numbers), a list
/// (one of), or a mapping of matcher keys (each one an assertion).
fn read_matcher(cx: &mut Cx, n: &Node, subject: &Subject, what: &str) -> Vec<Matcher> {
    match n {
        Node::Scalar(_) => read_scalar_matcher(cx, n, subject, what)
            .into_iter()
            .collect(),
        Node::Sequence(seq) => {
            let mut items = Vec::new();
            for i in seq.iter() {
                if let Some(s) = cx.scalar(i, &format!("an item of {what}")) {
                    check_operand(cx, &s, subject);
                    items.extend(template(cx, s));
                }
            }
            vec![Matcher::OneOf(items)]
        }
        Node::Mapping(m) => {
            let mut out = Vec::new();
            for (k, v) in m.iter() {
                let key = k.as_str();
                let kspan = cx.key_span(k);
                if !MATCHER_KEYS.contains(&key) {
                    let help = match did_you_mean(key, MATCHER_KEYS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("write one of: {}", MATCHER_KEYS.join(", ")),
                    };
                    cx.error_help(format!("unknown matcher `{key}` in {what}"), kspan, help);
                    continue;
                }
                let sub_what = format!("`{key}` in {what}");
                let matcher = match key {
                    "equals" => operand(cx, v, subject, &sub_what).map(Matcher::Equals),
                    "contains" => cx
                        .scalar(v, &sub_what)
                        .and_then(|s| template(cx, s))
                        .map(Matcher::Contains),
                    "matches" => cx
                        .scalar(v, &sub_what)
                        .and_then(|s| regex_spec(cx, s))
                        .map(Matcher::Matches),
                    "exists" => match v.as_scalar().and_then(scalar_bool) {
                        Some(b) => Some(Matcher::Exists(b)),
                        None => {
                            cx.error_help(
                                format!("{sub_what} must be true or false"),
                                cx.span(v),
                                "write `exists: true`",
                            );
                            None
                        }
                    },
                    "one_of" => match read_matcher(cx, v, subject, &sub_what).pop() {
                        Some(m @ Matcher::OneOf(_)) => Some(m),
                        _ => {
                            cx.error_help(
                                format!("{sub_what} must be a list"),
                                cx.span(v),
                                "write the values it may take, e.g. `one_of: [200, 204]`",
                            );
                            None
                        }
                    },
                    "count" | "length" => {
                        if key == "count" && !matches!(subject, Subject::Json(_)) {
                            cx.error_help(
                                format!(
                                    "`count` applies to JSONPaths, not to {}",
                                    subject.label("")
                                ),
                                kspan.clone(),
                                "use `length` for the length of a value",
                            );
                        }
                        let inner = read_matcher(cx, v, &Subject::ExitCode, &sub_what);
                        match inner.len() {
                            1 => {
                                let m = Box::new(
                                    inner.into_iter().next().unwrap_or(Matcher::Exists(true)),
                                );
                                Some(if key == "count" {
                                    Matcher::Count(m)
                                } else {
                                    Matcher::Length(m)
                                })
                            }
                            _ => {
                                cx.error_help(
                                    format!("{sub_what} takes one number or one comparison"),
                                    cx.span(v),
                                    format!("e.g. `{key}: 3` or `{key}: {{ \">=\": 1 }}`"),
                                );
                                None
                            }
                        }
                    }
                    "not" => {
                        let inner = read_matcher(cx, v, subject, &sub_what);
                        if inner.len() == 1 {
                            inner.into_iter().next().map(|m| Matcher::Not(Box::new(m)))
                        } else {
                            if !inner.is_empty() {
                                cx.error_help(
                                    format!("{sub_what} takes one matcher"),
                                    cx.span(v),
                                    "write one `not` per matcher",
                                );
                            }
                            None
                        }
                    }
                    op => {
                        let cmp = CmpOp::from_key(op).unwrap_or(CmpOp::Eq);
                        operand(cx, v, subject, &sub_what).map(|t| Matcher::Compare(cmp, t))
                    }
                };
                out.extend(matcher);
            }
            if m.is_empty() {
                cx.error_help(
                    format!("{what} has no matcher"),
                    cx.span(n),
                    "e.g. `{ contains: ok }`",
                );
            }
            out
        }
    }
}

fn read_scalar_matcher(cx: &mut Cx, n: &Node, subject: &Subject, what: &str) -> Option<Matcher> {
    let s = cx.scalar(n, what)?;
    let text = s.value.trim().to_string();
    if matches!(subject, Subject::Status)
        && text.len() == 3
        && text.ends_with("xx")
        && let Some(d) = text.chars().next().and_then(|c| c.to_digit(10))
    {
        if !(1..=5).contains(&d) {
            cx.error_help(
                format!("`{text}` is not a status class"),
                s.span,
                "use 1xx, 2xx, 3xx, 4xx or 5xx",
            );
            return None;
        }
        return Some(Matcher::StatusClass(d as u16));
    }
    // `< 2s`, `>= 1MiB`, `!= 0`: a comparison, for values that are numbers.
    if subject.is_numeric() {
        for op in ["<=", ">=", "==", "!=", "<", ">"] {
            if let Some(rest) = text.strip_prefix(op) {
                let operand_text = Spanned {
                    value: rest.trim().to_string(),
                    span: s.span.clone(),
                };
                check_operand(cx, &operand_text, subject);
                let cmp = CmpOp::from_key(op).unwrap_or(CmpOp::Eq);
                return template(cx, operand_text).map(|t| Matcher::Compare(cmp, t));
            }
        }
    }
    if matches!(subject, Subject::Open) && s.value != "true" && s.value != "false" {
        cx.error_help(
            format!("`open` must be true or false, found `{}`", s.value),
            s.span,
            "`open: false` checks that nothing listens on the port",
        );
        return None;
    }
    check_operand(cx, &s, subject);
    template(cx, s).map(Matcher::Equals)
}

fn operand(cx: &mut Cx, n: &Node, subject: &Subject, what: &str) -> Option<Spanned<Template>> {
    let s = cx.scalar(n, what)?;
    check_operand(cx, &s, subject);
    template(cx, s)
}

/// A literal operand of a numeric subject must read as one (templates are checked later).
fn check_operand(cx: &mut Cx, s: &Spanned<String>, subject: &Subject) {
    if !subject.is_numeric() || s.value.contains("${{") {
        return;
    }
    if let Err(e) = subject.unit().parse(&s.value) {
        let help = match subject.unit() {
            Unit::Millis => "write a duration such as `500ms` or `2s`",
            Unit::Bytes => "write a size such as `5242880`, `5MiB` or `10kB`",
            Unit::Number => "write a number",
        };
        cx.error_help(
            format!("in `{}`: {e}", subject.label("")),
            s.span.clone(),
            help,
        );
    }
    if matches!(subject, Subject::Status)
        && let Ok(code) = s.value.trim().parse::<u16>()
        && !(100..600).contains(&code)
    {
        cx.error_help(
            format!("`{code}` is not an HTTP status"),
            s.span.clone(),
            "statuses go from 100 to 599; `2xx` means any success",
        );
    }
}

fn read_captures(cx: &mut Cx, n: &Node, kind: &str) -> Vec<Capture> {
    let mut out = Vec::new();
    let Some(m) = cx.mapping(n, "`capture`") else {
        return out;
    };
    if matches!(kind, "tcp" | "log") {
        cx.error_help(
            format!("a {kind} check has nothing to capture"),
            cx.span(n),
            "captures take values from http, command and file checks",
        );
        return out;
    }
    for (k, v) in m.iter() {
        let name = k.as_str();
        let span = cx.key_span(k);
        let cwhat = format!("capture `{name}`");
        if !is_name(name) {
            cx.error_help(
                format!("`{name}` is not a valid output name"),
                span.clone(),
                "use letters, digits, `-` and `_`",
            );
        }
        if let Node::Scalar(s) = v {
            if s.as_str().trim_start().starts_with('$')
                && let Some(p) = json_path(cx, s.as_str(), cx.span(v))
            {
                out.push(Capture {
                    name: name.to_string(),
                    span,
                    source: CaptureSource::Json(p),
                    regex: None,
                    secret: false,
                });
            } else if !s.as_str().trim_start().starts_with('$') {
                cx.error_help(
                    format!("{cwhat}: `{}` is not a JSONPath", s.as_str()),
                    cx.span(v),
                    "write a JSONPath (`$.blob_id`) or a mapping: `{ header: etag }`, `{ regex: \"id=(\\\\w+)\" }`, `{ sha256: body }`",
                );
            }
            continue;
        }
        let Some(cm) = cx.mapping(v, &cwhat) else {
            continue;
        };
        let allowed: &[&str] = match kind {
            "http" => &[
                "json", "header", "body", "status", "sha256", "regex", "secret",
            ],
            "command" => &["json", "stdout", "stderr", "sha256", "regex", "secret"],
            _ => &["json", "body", "sha256", "regex", "secret"],
        };
        cx.keys(cm, &cwhat, allowed);
        let regex = cx
            .string(cm, "regex", &cwhat)
            .and_then(|s| regex_spec(cx, s));
        let secret = cx.bool(cm, "secret", &cwhat).unwrap_or(false);
        let sources: Vec<&str> = [
            "json", "header", "body", "stdout", "stderr", "status", "sha256",
        ]
        .into_iter()
        .filter(|s| cm.get_node(s).is_some() && allowed.contains(s))
        .collect();
        let source = match sources.as_slice() {
            [] if regex.is_some() => Some(CaptureSource::Body),
            ["json"] => cx
                .string(cm, "json", &cwhat)
                .and_then(|s| json_path(cx, &s.value, s.span.clone()))
                .map(CaptureSource::Json),
            ["header"] => cx
                .string(cm, "header", &cwhat)
                .map(|h| CaptureSource::Header(h.value.to_ascii_lowercase())),
            ["body"] | ["stdout"] => Some(CaptureSource::Body),
            ["stderr"] => Some(CaptureSource::Stderr),
            ["status"] => Some(CaptureSource::Status),
            ["sha256"] => {
                let s = cx.string(cm, "sha256", &cwhat);
                match s.as_ref().map(|s| s.value.as_str()) {
                    Some("body") | Some("true") => Some(CaptureSource::BodySha256),
                    Some("sent") if kind == "http" => Some(CaptureSource::SentSha256),
                    _ => {
                        let span = s.map(|s| s.span).unwrap_or_else(|| span.clone());
                        cx.error_help(
                            format!("`sha256` in {cwhat} must be `body`{}", if kind == "http" { " or `sent`" } else { "" }),
                            span,
                            "`body`: the hash of what was received; `sent`: of the file or generated bytes uploaded",
                        );
                        None
                    }
                }
            }
            [] => {
                cx.error_help(
                    format!("{cwhat} says nothing about where the value comes from"),
                    cx.span(v),
                    "add one of `json`, `header`, `regex` or `sha256`",
                );
                None
            }
            many => {
                cx.error_help(
                    format!("{cwhat} has several sources: {}", many.join(", ")),
                    cx.span(v),
                    "keep one (a `regex` may refine it)",
                );
                None
            }
        };
        if let Some(source) = source {
            out.push(Capture {
                name: name.to_string(),
                span,
                source,
                regex,
                secret,
            });
        }
    }
    out
}

/// A JSONPath, compiled now when it holds no template; an error points into the path.
fn json_path(cx: &mut Cx, text: &str, span: Span) -> Option<JsonPathSpec> {
    let t = template(
        cx,
        Spanned {
            value: text.to_string(),
            span: span.clone(),
        },
    )?;
    let compiled = if t.value.is_literal() {
        match serde_json_path::JsonPath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                let mut at = span.clone();
                if !text.contains('\n') {
                    at.pos.col += quote_shift(&span.source, &span) + e.position().min(text.len());
                    at.width = 1;
                }
                cx.error_help(
                    format!("invalid JSONPath `{text}`: {}", e.message()),
                    at,
                    "write an RFC 9535 JSONPath such as `$.version`, `$.files[0].blob_id` or `$.files[*].size`",
                );
                return None;
            }
        }
    } else {
        None
    };
    Some(JsonPathSpec {
        text: t,
        text_raw: text.to_string(),
        compiled,
    })
}

/// A regex, compiled now when it holds no template; an error points at the bad character.
fn regex_spec(cx: &mut Cx, s: Spanned<String>) -> Option<RegexSpec> {
    let raw = s.value.clone();
    let span = s.span.clone();
    let t = template(cx, s)?;
    let compiled = if t.value.is_literal() {
        match regex::Regex::new(&raw) {
            Ok(r) => Some(r),
            Err(e) => {
                let (offset, message) = regex_error(&e);
                let mut at = span.clone();
                if let Some(o) = offset.filter(|_| !raw.contains('\n')) {
                    at.pos.col += quote_shift(&span.source, &span) + o;
                    at.width = 1;
                }
                cx.error_help(
                    format!("invalid regex `{raw}`: {message}"),
                    at,
                    "the syntax is Rust's `regex` crate; escape `(`, `[`, `.`, `*`, `+` and `?` with `\\` to match them literally",
                );
                return None;
            }
        }
    } else {
        None
    };
    Some(RegexSpec {
        text: t,
        raw,
        compiled,
    })
}

/// The character offset and the message of a regex syntax error. The crate renders the
/// pattern, a line of carets under the bad part, then `error: ...`.
pub fn regex_error(e: &regex::Error) -> (Option<usize>, String) {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let message = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.as_str())
        .to_string();
    let offset = lines
        .iter()
        .find(|l| l.trim_start().starts_with('^'))
        .and_then(|l| l.find('^'))
        .map(|i| i.saturating_sub(4));
    (offset, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_errors_point_at_the_problem() {
        // Built at run time: clippy rejects an invalid literal regex, rightly.
        let pattern = ["ab", "(c"].concat();
        let e = regex::Regex::new(&pattern).unwrap_err();
        let (offset, msg) = regex_error(&e);
        assert_eq!(offset, Some(2), "{e}");
        assert!(msg.contains("unclosed group"), "{msg}");
    }

    #[test]
    fn limits_are_errors_that_name_them() {
        let text = r#"project: demo
environments: { staging: {} }
stages:
  s:
    - http: "http://127.0.0.1:1/"
      retry: { attempts: 100001, interval: 1s }
    - http: "http://127.0.0.1:1/"
      retry: 200000
    - http: "http://127.0.0.1:1/"
      repeat: 10000001
      concurrency: 5000
    - http: "http://127.0.0.1:1/"
      expect: { status: { one_of: 200 } }
"#;
        let errors = crate::load_str(std::path::Path::new("stagegate.yml"), text).unwrap_err();
        let found: Vec<(&str, bool)> = errors
            .errors()
            .map(|d| (d.message.as_str(), d.help.is_some()))
            .collect();
        for (message, at) in [
            (
                "`attempts` in `retry` in step 1 of stage `s` is 100001; at most 100000",
                6,
            ),
            (
                "`attempts` in `retry` in step 2 of stage `s` is 200000; at most 100000",
                8,
            ),
            (
                "`repeat` in step 3 of stage `s` is 10000001; at most 10000000",
                10,
            ),
            (
                "`concurrency` in step 3 of stage `s` is 5000; at most 4096",
                11,
            ),
            (
                "`one_of` in `status` in `expect` of a http check must be a list",
                13,
            ),
        ] {
            let d = errors
                .errors()
                .find(|d| d.message == message)
                .unwrap_or_else(|| panic!("{message} not in {found:?}"));
            assert!(d.help.is_some(), "{message}");
            assert_eq!(d.span.as_ref().map(|s| s.pos.line), Some(at), "{message}");
        }
    }

    #[test]
    fn a_quoted_json_scalar_stays_a_string_and_a_quoted_flag_reads_as_one() {
        let text = r#"project: demo
environments: { staging: {} }
stages:
  s:
    - continue_on_error: "true"
      http:
        method: POST
        url: "http://127.0.0.1:1/"
        json: { a: 1, b: "1", c: true, d: 'true', e: null, f: "null", g: |
            2
          }
"#;
        let (plan, _) = crate::load_str(std::path::Path::new("stagegate.yml"), text).unwrap();
        let (_, step) = plan.steps().next().unwrap();
        // A flag reads the same quoted or not.
        assert!(step.continue_on_error);
        let crate::StepKind::Check(c) = &step.kind else {
            panic!("{:?}", step.kind)
        };
        let CheckTarget::Http(h) = &c.target else {
            panic!()
        };
        let Some(RequestBody::Json(JsonTemplate::Object(fields))) = &h.body else {
            panic!("{:?}", h.body)
        };
        let kinds: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    JsonTemplate::Null => "null",
                    JsonTemplate::Bool(_) => "bool",
                    JsonTemplate::Number(_) => "number",
                    JsonTemplate::String(_) => "string",
                    _ => "other",
                };
                (k.as_str(), kind)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", "number"),
                ("b", "string"),
                ("c", "bool"),
                ("d", "string"),
                ("e", "null"),
                ("f", "string"),
                ("g", "string"),
            ]
        );
    }
}
