//! What each iteration sends: a [`Scenario`] of [`RequestSpec`]s to one origin, and the
//! setup requests each virtual user sends once before its first iteration.
//!
//! Paths, headers and bodies may name the virtual user's variables as `${{ vu.NAME }}`: a
//! column of its identity (see [`crate::Identities`]) or a value an earlier request captured
//! ([`RequestSpec::capture`]). They are filled in once per user, when the user starts, into
//! a [`PreparedRequest`]: the hot path only clones it. A capture fills in again only the
//! requests that name its variable, in that user's own copy.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use crate::LoadError;
use crate::check::{ResponseCapture, ResponseCheck};
use crate::identity::Identity;

/// Where requests go: every request of a run goes to this one origin, over connections
/// kept per virtual user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Splits `http://host:port/path?q` into its origin and the rest (`/path?q`, templated).
pub fn split_url(url: &str) -> Result<(Origin, String), LoadError> {
    let bad = |reason: &str| LoadError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(bad(
            "it must start with http:// or https:// (for example http://127.0.0.1:8080/health)",
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(bad(
            "user:password@ in URLs is not supported: send an Authorization header with -H",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs a closing `]`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("unexpected text after the IPv6 address")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad(&format!("`{p}` is not a port number")))?,
        None if tls => 443,
        None => 80,
    };
    let path = path.split('#').next().unwrap_or("");
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((Origin { tls, host, port }, path))
}

/// Reads an HTTP method (`get` is `GET`).
pub fn parse_method(text: &str) -> Result<Method, LoadError> {
    let upper = text.trim().to_ascii_uppercase();
    if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(LoadError::InvalidMethod(text.to_string()));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| LoadError::InvalidMethod(text.to_string()))
}

/// Whether `${{ vu.NAME }}` can name it: letters, digits, `_` and `-`.
pub(crate) fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Text with `${{ vu.NAME }}` placeholders. `${{ vu.NAME | json }}` inserts the value
/// escaped for a JSON string, `${{ vu.NAME | form }}` form-encoded (for a query string or a
/// form body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VuTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String, Escape),
}

/// How a value is written where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Json,
    Form,
}

impl Escape {
    fn write(self, value: &str, out: &mut String) {
        match self {
            Escape::None => out.push_str(value),
            Escape::Json => {
                // serde_json writes a string with its quotes; keep what is between them.
                let quoted = serde_json::to_string(value).unwrap_or_default();
                out.push_str(&quoted[1..quoted.len().saturating_sub(1).max(1)]);
            }
            // application/x-www-form-urlencoded: `*-._` and alphanumerics as they are, a
            // space as `+`, any other byte as `%XX`.
            Escape::Form => out.extend(url::form_urlencoded::byte_serialize(value.as_bytes())),
        }
    }
}

impl VuTemplate {
    pub fn parse(text: &str) -> Result<Self, LoadError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("${{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 3..];
            let close = after.find("}}").ok_or_else(|| LoadError::Template {
                text: text.to_string(),
                reason: "`${{` is not closed with `}}`".into(),
            })?;
            let expr = after[..close].trim();
            let (expr, escape) = match expr.split_once('|') {
                None => (expr, Escape::None),
                Some((e, filter)) => match filter.trim() {
                    "json" => (e.trim(), Escape::Json),
                    "form" => (e.trim(), Escape::Form),
                    other => {
                        return Err(LoadError::Template {
                            text: text.to_string(),
                            reason: format!(
                                "`{other}` is not a filter: write `| json` or `| form`"
                            ),
                        });
                    }
                },
            };
            let name = expr.strip_prefix("vu.").ok_or_else(|| LoadError::Template {
                text: text.to_string(),
                reason: format!(
                    "`{expr}` cannot be used here: only a virtual user's variables, as `${{{{ vu.NAME }}}}`"
                ),
            })?;
            if !is_var_name(name) {
                return Err(LoadError::Template {
                    text: text.to_string(),
                    reason: format!("`{expr}` is not a variable name"),
                });
            }
            parts.push(Part::Var(name.to_string(), escape));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The variables it names.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, _) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    pub fn render(&self, id: &Identity) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v, e) => e.write(id.get(v).unwrap_or_default(), &mut out),
            }
        }
        out
    }
}

/// One request of a scenario.
#[derive(Clone)]
pub struct RequestSpec {
    /// Names the request in per-request results and thresholds (`p95[login] < 300ms`).
    pub name: String,
    pub method: Method,
    /// The path and query, templated.
    pub path: VuTemplate,
    pub headers: Vec<(HeaderName, VuTemplate)>,
    pub body: Option<VuTemplate>,
    /// Evaluated on every response; a failed check makes the request an `assertion` error.
    pub checks: Vec<Arc<dyn ResponseCheck>>,
    /// Run, in order, after a response whose checks all passed and whose status is below
    /// 500: each puts a value into the user's variables for its later requests. A failed
    /// capture makes the request an `assertion` error and ends the user's iteration, and so
    /// does any failure of a request that has captures (they could not run, and the requests
    /// after it would send a stale or empty value).
    pub captures: Vec<Arc<dyn ResponseCapture>>,
}

impl std::fmt::Debug for RequestSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpec")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers.len())
            .field("checks", &self.checks.len())
            .field(
                "captures",
                &self.captures.iter().map(|c| c.var()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RequestSpec {
    pub fn new(name: impl Into<String>, method: Method, path: &str) -> Result<Self, LoadError> {
        Ok(Self {
            name: name.into(),
            method,
            path: VuTemplate::parse(path)?,
            headers: Vec::new(),
            body: None,
            checks: Vec::new(),
            captures: Vec::new(),
        })
    }

    /// Adds a header written as `Name: value`.
    pub fn header_line(mut self, line: &str) -> Result<Self, LoadError> {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| LoadError::InvalidHeader {
                text: line.to_string(),
                reason: "write it as `Name: value`".into(),
            })?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            LoadError::InvalidHeader {
                text: line.to_string(),
                reason: format!("`{}` is not a header name", name.trim()),
            }
        })?;
        self.headers
            .push((name, VuTemplate::parse(value.trim_start())?));
        Ok(self)
    }

    pub fn body(mut self, body: &str) -> Result<Self, LoadError> {
        self.body = Some(VuTemplate::parse(body)?);
        Ok(self)
    }

    pub fn check(mut self, check: Arc<dyn ResponseCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds a capture: a value of the response for the user's later requests, as
    /// `${{ vu.NAME }}` where `NAME` is the capture's [`ResponseCapture::var`].
    pub fn capture(mut self, capture: Arc<dyn ResponseCapture>) -> Self {
        self.captures.push(capture);
        self
    }

    /// Whether a check or a capture reads the body.
    pub(crate) fn needs_body(&self) -> bool {
        self.checks.iter().any(|c| c.needs_body()) || self.captures.iter().any(|c| c.needs_body())
    }

    /// Whether the path, a header or the body names the variable.
    pub(crate) fn uses_var(&self, name: &str) -> bool {
        self.vars().any(|v| v == name)
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.path
            .vars()
            .chain(self.headers.iter().flat_map(|(_, v)| v.vars()))
            .chain(self.body.iter().flat_map(|b| b.vars()))
    }

    /// Fills in the user's variables. Values that do not fit a URI or header are errors.
    pub(crate) fn prepare(
        &self,
        host: &HeaderValue,
        id: &Identity,
    ) -> Result<PreparedRequest, String> {
        let path = self.path.render(id);
        let uri: Uri = path
            .parse()
            .map_err(|e| format!("request `{}`: `{path}` is not a valid path: {e}", self.name))?;
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 2);
        headers.insert(http::header::HOST, host.clone());
        for (name, v) in &self.headers {
            let value = v.render(id);
            let value = HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "request `{}`: header `{name}` has a value that is not allowed in a header",
                    self.name
                )
            })?;
            if name == http::header::HOST {
                headers.insert(name.clone(), value);
            } else {
                headers.append(name.clone(), value);
            }
        }
        let body = self
            .body
            .as_ref()
            .map(|b| Bytes::from(b.render(id)))
            .unwrap_or_default();
        Ok(PreparedRequest {
            method: self.method.clone(),
            uri,
            headers,
            body,
        })
    }
}

/// The requests of one iteration, in order, all to one origin.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub origin: Origin,
    pub requests: Vec<RequestSpec>,
    /// Requests each virtual user sends once, in order, before its first iteration (a login
    /// that yields a token or a cookie). They have checks, captures and the cookie jar like
    /// any request, and their own figures in the report (after the scenario's requests). When
    /// one fails (no answer, 5xx, a failed check or capture), the user's iteration ends there
    /// and it sends its setup again at its next iteration.
    pub setup: Vec<RequestSpec>,
}

impl Scenario {
    /// A scenario of one request to `url`.
    pub fn single(method: Method, url: &str) -> Result<Self, LoadError> {
        let (origin, path) = split_url(url)?;
        let name = format!("{method} {path}");
        Ok(Self {
            origin,
            requests: vec![RequestSpec::new(name, method, &path)?],
            setup: Vec::new(),
        })
    }

    /// The variables the requests use that neither `columns` nor a capture before them
    /// provides (a setup request's, or an earlier request's of the iteration), sorted.
    pub fn missing_vars(&self, columns: &[String]) -> Vec<String> {
        let mut captured: Vec<&str> = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        for r in self.setup.iter().chain(&self.requests) {
            for v in r.vars() {
                if !columns.iter().any(|c| c == v) && !captured.contains(&v) {
                    missing.push(v.to_string());
                }
            }
            captured.extend(r.captures.iter().map(|c| c.var()));
        }
        missing.sort();
        missing.dedup();
        missing
    }

    /// The name of a request (setup first) that captures `var`, if any.
    pub fn captured_by(&self, var: &str) -> Option<&str> {
        self.setup
            .iter()
            .chain(&self.requests)
            .find(|r| r.captures.iter().any(|c| c.var() == var))
            .map(|r| r.name.as_str())
    }

    pub fn uses_vars(&self) -> bool {
        self.setup
            .iter()
            .chain(&self.requests)
            .any(|r| r.vars().next().is_some())
    }

    /// Whether a check or a capture of any request, setup included, reads the body.
    #[cfg(test)]
    fn needs_body(&self) -> bool {
        self.setup
            .iter()
            .chain(&self.requests)
            .any(RequestSpec::needs_body)
    }

    /// Whether any request, setup included, captures a value.
    #[cfg(test)]
    fn has_captures(&self) -> bool {
        self.setup
            .iter()
            .chain(&self.requests)
            .any(|r| !r.captures.is_empty())
    }

    /// The scenario's requests, then the setup requests: the order of the prepared
    /// requests, of the per-request figures and of the report's `requests`.
    pub(crate) fn all(&self) -> impl Iterator<Item = &RequestSpec> {
        self.requests.iter().chain(&self.setup)
    }

    /// The request at `slot` of [`Scenario::all`].
    #[inline]
    pub(crate) fn slot(&self, slot: usize) -> &RequestSpec {
        match self.requests.get(slot) {
            Some(r) => r,
            None => &self.setup[slot - self.requests.len()],
        }
    }

    /// How many requests [`Scenario::all`] has.
    pub(crate) fn slots(&self) -> usize {
        self.requests.len() + self.setup.len()
    }
}

/// A request with the user's variables filled in.
#[derive(Debug, Clone)]
pub(crate) struct PreparedRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_origin_and_path() {
        let (o, p) = split_url("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!(
            o,
            Origin {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
        assert_eq!(p, "/a/b?x=1");
        let (o, p) = split_url("https://example.com").unwrap();
        assert_eq!((o.port, o.tls, p.as_str()), (443, true, "/"));
        assert_eq!(o.authority(), "example.com");
        let (o, _) = split_url("http://[::1]:9000/").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 9000));
        assert_eq!(o.authority(), "[::1]:9000");
        let e = split_url("ftp://x").unwrap_err().to_string();
        assert!(e.contains("must start with http://"), "{e}");
        let e = split_url("http://x:99999/").unwrap_err().to_string();
        assert!(e.contains("`99999` is not a port number"), "{e}");
    }

    #[test]
    fn templates_name_user_variables_only() {
        let t = VuTemplate::parse("/users/${{ vu.id }}/orders?t=${{vu.token}}").unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), ["id", "token"]);
        let id = Identity::new(0, [("id", "7"), ("token", "abc")]);
        assert_eq!(t.render(&id), "/users/7/orders?t=abc");
        let e = VuTemplate::parse("${{ secrets.X }}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only a virtual user's variables"), "{e}");
        let e = VuTemplate::parse("${{ vu.id").unwrap_err().to_string();
        assert!(e.contains("not closed"), "{e}");
    }

    #[test]
    fn filters_escape_values_for_json_strings_and_forms() {
        let id = Identity::new(0, [("name", "Ann \"A\" O'Neil\\x"), ("q", "a b&c=d/é")]);
        let t = VuTemplate::parse(r#"{"name":"${{ vu.name | json }}"}"#).unwrap();
        let body = t.render(&id);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["name"], "Ann \"A\" O'Neil\\x", "{body}");
        let t = VuTemplate::parse("/s?q=${{vu.q|form}}").unwrap();
        assert_eq!(t.render(&id), "/s?q=a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(t.vars().collect::<Vec<_>>(), ["q"]);
        let e = VuTemplate::parse("${{ vu.q | upper }}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`upper` is not a filter"), "{e}");
    }

    #[test]
    fn header_lines_need_a_colon() {
        let r = RequestSpec::new("r", Method::GET, "/").unwrap();
        let e = r.clone().header_line("Authorization Bearer x").unwrap_err();
        assert!(e.to_string().contains("`Name: value`"), "{e}");
        let r = r.header_line("X-Id: ${{ vu.id }}").unwrap();
        let s = Scenario {
            origin: split_url("http://h/").unwrap().0,
            requests: vec![r],
            setup: Vec::new(),
        };
        assert_eq!(s.missing_vars(&["name".into()]), ["id"]);
    }

    #[test]
    fn captured_variables_count_as_provided_only_after_their_capture() {
        use crate::check::JsonField;
        let req = |name: &str, path: &str| RequestSpec::new(name, Method::GET, path).unwrap();
        let token = Arc::new(JsonField::new("token", "token"));
        let item = Arc::new(JsonField::new("item", "id"));
        let mut s = Scenario {
            origin: split_url("http://h/").unwrap().0,
            requests: vec![
                req("create", "/items?u=${{ vu.user }}").capture(item),
                req("fetch", "/items/${{ vu.item }}")
                    .header_line("Authorization: Bearer ${{ vu.token }}")
                    .unwrap(),
            ],
            setup: vec![req("login", "/login/${{ vu.user }}").capture(token)],
        };
        assert_eq!(s.missing_vars(&["user".into()]), Vec::<String>::new());
        assert_eq!(s.missing_vars(&[]), ["user"]);
        assert!(s.has_captures() && s.needs_body() && s.uses_vars());
        // Used before the request that captures it.
        s.requests.swap(0, 1);
        assert_eq!(s.missing_vars(&["user".into()]), ["item"]);
        assert_eq!(s.captured_by("item"), Some("create"));
        assert_eq!(s.captured_by("nothing"), None);
        assert_eq!(s.slots(), 3);
        assert_eq!(s.slot(2).name, "login");
        assert!(s.slot(0).uses_var("item") && !s.slot(1).uses_var("item"));
    }
}
