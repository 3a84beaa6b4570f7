//! `curl` command lines as `http` checks (docs/checks.md), and the "Expected" notes a
//! runbook writes beside them as the check's `expect`.

use std::sync::LazyLock;

use regex::Regex;

use crate::yaml;

/// An `http` check read from a curl command. Strings are template text: the runbook's own
/// `${{` is escaped and shell variables (`$TOKEN`) became `${{ env.TOKEN }}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpCheck {
    pub method: Option<String>,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
    pub save: Option<String>,
    pub insecure: bool,
    pub follow_redirects: bool,
    pub basic: Option<(String, String)>,
    pub timeout: Option<String>,
    pub expect: Expect,
    /// Whether curl had `-f`: it fails on an HTTP error, as the check does by default.
    pub fail: bool,
    /// What could not be translated, for TODO comments.
    pub todos: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Text(String),
    File(String),
    Multipart(Vec<(String, Part)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    File(String),
}

/// A check's `expect`: a status and JSON fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub status: Option<u16>,
    pub json: Vec<(String, serde_json::Value)>,
}

impl Expect {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.json.is_empty()
    }
}

static VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)").unwrap()
});
static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<[A-Za-z][A-Za-z0-9_-]*>").unwrap());

/// Template text for a value from the runbook: its `${{` escaped, `$NAME` read from the
/// environment stagegate runs in, as the shell would have.
pub fn to_template(raw: &str) -> String {
    let escaped = yaml::escape_template(raw);
    VAR.replace_all(&escaped, |c: &regex::Captures| {
        let name = c.get(1).or(c.get(2)).map(|m| m.as_str()).unwrap_or("");
        format!("${{{{ env.{name} }}}}")
    })
    .into_owned()
}

/// The curl command's words (`curl` first) as a check, or `None` when it has no URL.
pub fn parse(words: &[String]) -> Option<HttpCheck> {
    let mut c = HttpCheck::default();
    let mut url = None;
    let mut data: Vec<String> = Vec::new();
    let mut parts: Vec<(String, Part)> = Vec::new();
    let mut head = false;
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        // A cluster of flags without values: `-fsS`, `-sk`.
        if w.len() > 2
            && !w.starts_with("--")
            && w.starts_with('-')
            && w[1..].chars().all(|f| CLUSTER.contains(f))
        {
            for f in w[1..].chars() {
                match f {
                    'f' => c.fail = true,
                    'k' => c.insecure = true,
                    'L' => c.follow_redirects = true,
                    'I' => head = true,
                    _ => {}
                }
            }
            continue;
        }
        let (flag, inline) = split_flag(w);
        let value = |i: &mut usize| -> Option<String> {
            if let Some(v) = &inline {
                return Some(v.clone());
            }
            let v = words.get(*i).cloned();
            *i += 1;
            v
        };
        match flag.as_str() {
            "-X" | "--request" => c.method = value(&mut i).map(|m| m.to_uppercase()),
            "-H" | "--header" => {
                if let Some(h) = value(&mut i)
                    && let Some((k, v)) = h.split_once(':')
                {
                    c.headers
                        .push((k.trim().to_string(), to_template(v.trim())));
                }
            }
            "-d" | "--data" | "--data-raw" | "--data-binary" | "--json" => {
                if flag == "--json" {
                    c.headers
                        .push(("Content-Type".into(), "application/json".into()));
                }
                data.extend(value(&mut i));
            }
            "-F" | "--form" => {
                if let Some(f) = value(&mut i) {
                    let (k, v) = f.split_once('=').unwrap_or((&f, ""));
                    let part = match v.strip_prefix('@') {
                        Some(file) => {
                            Part::File(to_template(file.split(';').next().unwrap_or(file)))
                        }
                        None => Part::Text(to_template(v)),
                    };
                    parts.push((k.to_string(), part));
                }
            }
            "-o" | "--output" => c.save = value(&mut i).map(|s| to_template(&s)),
            "-u" | "--user" => {
                if let Some(u) = value(&mut i) {
                    let (user, pw) = u.split_once(':').unwrap_or((&u, ""));
                    c.basic = Some((to_template(user), to_template(pw)));
                }
            }
            "-m" | "--max-time" => c.timeout = value(&mut i).map(|s| format!("{s}s")),
            "-f" | "--fail" | "--fail-with-body" => c.fail = true,
            "-k" | "--insecure" => c.insecure = true,
            "-L" | "--location" => c.follow_redirects = true,
            "-I" | "--head" => head = true,
            "-s" | "--silent" | "-S" | "--show-error" | "-v" | "--verbose" | "-i" | "--include"
            | "--compressed" | "-#" => {}
            f if f.starts_with('-') => {
                c.todos.push(format!("curl option `{f}` is not translated"));
            }
            _ => {
                if url.is_none() {
                    url = Some(w.clone());
                } else {
                    c.todos
                        .push(format!("a second URL `{w}` is not translated"));
                }
            }
        }
    }
    let url = url?;
    for p in PLACEHOLDER.find_iter(&url) {
        c.todos.push(format!(
            "the URL's placeholder `{}` needs a value: a var, or a capture of an earlier step",
            p.as_str()
        ));
    }
    c.url = to_template(&url);
    if !parts.is_empty() {
        c.body = Some(Body::Multipart(parts));
        if !data.is_empty() {
            c.todos
                .push("curl sends both -d and -F; only -F is kept".into());
        }
    } else if let Some(d) = data.first() {
        c.body = Some(match d.strip_prefix('@') {
            Some(file) => Body::File(to_template(file)),
            None => Body::Text(to_template(&data.join("&"))),
        });
    }
    if c.method.is_none() {
        if head {
            c.method = Some("HEAD".into());
        } else if c.body.is_some() {
            c.method = Some("POST".into());
        }
    }
    Some(c)
}

/// Flags that take no value and may be written together.
const CLUSTER: &str = "fsSkLIiv";

/// `-XPOST` is `-X POST`, `--header=X` is `--header X`.
fn split_flag(w: &str) -> (String, Option<String>) {
    if let Some(long) = w.strip_prefix("--") {
        return match long.split_once('=') {
            Some((k, v)) => (format!("--{k}"), Some(v.to_string())),
            None => (w.to_string(), None),
        };
    }
    if w.len() > 2 && w.starts_with('-') {
        let bytes: Vec<char> = w.chars().skip(1).collect();
        return (format!("-{}", bytes[0]), Some(bytes[1..].iter().collect()));
    }
    (w.to_string(), None)
}

static STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:HTTP[ /]?(?:1\.1 |2 )?([1-5]\d\d)\b|\b([1-5]\d\d)\s+(?:OK|Created|Accepted|No Content|Found|redirect|Moved|Not Found|Unauthorized|Forbidden|Bad Request|Partial)|^\s*\(?([1-5]\d\d)\)?\s*$|\(([1-5]\d\d)(?: [A-Za-z ]+)?\))").unwrap()
});

/// An "Expected" note: `HTTP 404, {"detail": "Blob not found"}`, `302 redirect to ...`,
/// `response (200 OK):`. Returns what it says, or nothing.
pub fn parse_expected(text: &str) -> Expect {
    let mut e = Expect::default();
    if let Some(c) = STATUS.captures(text) {
        e.status = (1..=4)
            .find_map(|i| c.get(i))
            .and_then(|m| m.as_str().parse().ok());
    }
    if let Some(start) = text.find('{')
        && let Some(end) = text.rfind('}')
        && end > start
    {
        e.json = json_fields(&text[start..=end]);
    }
    e
}

/// The scalar fields of an example JSON answer, as JSONPath to value. Values that differ on
/// every call (timestamps) are left out: an example's clock is not an expectation.
pub fn json_fields(text: &str) -> Vec<(String, serde_json::Value)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    flatten("$", &v, &mut out);
    out
}

fn flatten(path: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    format!("{path}.{k}")
                } else {
                    format!("{path}['{}']", k.replace('\'', "\\'"))
                };
                flatten(&p, v, out);
            }
        }
        serde_json::Value::Array(_) => {}
        serde_json::Value::String(s) if looks_like_time(s) => {}
        other => out.push((path.to_string(), other.clone())),
    }
}

fn looks_like_time(s: &str) -> bool {
    static TIME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2})?").unwrap());
    TIME.is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::words;

    fn check(cmd: &str) -> HttpCheck {
        parse(&words(cmd)).expect("a check")
    }

    #[test]
    fn method_headers_body_and_save() {
        let c = check(
            "curl -X POST http://g:3000/api/dashboards/db \\\n  -H \"Content-Type: application/json\" \\\n  -H \"Authorization: Bearer $TOKEN\" \\\n  -d @dashboards/api.json -o out.json",
        );
        assert_eq!(c.method.as_deref(), Some("POST"));
        assert_eq!(c.url, "http://g:3000/api/dashboards/db");
        assert_eq!(
            c.headers[1],
            ("Authorization".into(), "Bearer ${{ env.TOKEN }}".into())
        );
        assert_eq!(c.body, Some(Body::File("dashboards/api.json".into())));
        assert_eq!(c.save.as_deref(), Some("out.json"));
    }

    #[test]
    fn multipart_range_flags_and_placeholders() {
        let c = check(
            "curl -fsSk -F \"file=@test.bin\" https://h/x/<blob_id>/s -H \"Range: bytes=0-9\"",
        );
        assert!(c.fail && c.insecure);
        assert_eq!(c.method.as_deref(), Some("POST"));
        assert_eq!(
            c.body,
            Some(Body::Multipart(vec![(
                "file".into(),
                Part::File("test.bin".into())
            )]))
        );
        assert_eq!(c.headers, [("Range".into(), "bytes=0-9".into())]);
        assert!(c.todos[0].contains("<blob_id>"), "{:?}", c.todos);
        let d = check("curl -d '{\"a\": 1}' --bogus http://h/");
        assert_eq!(d.method.as_deref(), Some("POST"));
        assert_eq!(d.body, Some(Body::Text("{\"a\": 1}".into())));
        assert!(d.todos[0].contains("--bogus"));
        assert!(parse(&words("curl -s")).is_none());
    }

    #[test]
    fn a_template_in_a_url_stays_text() {
        let c = check("curl 'http://h/${{ secrets.X }}'");
        assert_eq!(c.url, "http://h/${{ '${{' }} secrets.X }}");
    }

    #[test]
    fn expectations() {
        let e = parse_expected(r#"Expected: HTTP 404, {"detail": "Blob not found"}"#);
        assert_eq!(e.status, Some(404));
        assert_eq!(
            e.json,
            [("$.detail".into(), serde_json::json!("Blob not found"))]
        );
        assert_eq!(
            parse_expected("Expected: 302 redirect to Google OAuth").status,
            Some(302)
        );
        assert_eq!(
            parse_expected("Expected response (200 OK):").status,
            Some(200)
        );
        assert_eq!(parse_expected("Expected: 100% pass rate").status, None);
        let f = json_fields(
            r#"{"status": "healthy", "timestamp": "2024-02-17T12:00:00Z", "components": {"db": "ok"}, "n": 3}"#,
        );
        assert_eq!(
            f,
            [
                ("$.components.db".to_string(), serde_json::json!("ok")),
                ("$.n".to_string(), serde_json::json!(3)),
                ("$.status".to_string(), serde_json::json!("healthy")),
            ]
        );
    }
}
