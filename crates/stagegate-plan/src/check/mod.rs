//! Check steps: `http`, `command`, `tcp`, `log`, `file` and `prometheus`, with their assertions (`expect`),
//! polling (`retry`, `until`), repetition (`repeat`, `concurrency`) and captures.
//!
//! Every check kind shares one vocabulary: an [`Assertion`] pairs a [`Subject`] (the status,
//! a header, a JSONPath, the body, its length or sha256, the duration, an exit code...) with a
//! [`Matcher`] (equals, one of, a status class, contains, matches, exists, count, length, a
//! comparison, or `not` of any of these). Values are templates, so an expectation may use
//! `${{ release.version }}` or an earlier step's output. JSONPaths and regexes written
//! without templates are compiled here, so a bad one is a validation error at its place in
//! the plan; those with templates are compiled when the check runs.

//!
//! - [`read`](self::read): reading check steps from the plan, every error collected;
//! - [`describe`]: templates, default names and the lines of `stagegate plan`.

mod describe;
mod read;

use std::time::Duration;

use crate::diagnostic::Span;
use crate::template::Template;
use crate::yaml::{Spanned, parse_duration};

pub use describe::{describe_assertion, describe_entry, describe_matcher};
pub(crate) use read::read;
pub use read::regex_error;

/// The action keys of check steps.
pub const CHECK_ACTIONS: &[&str] = &["http", "command", "tcp", "log", "file", "prometheus"];

/// How much of a body is kept in memory for text assertions, by default.
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;

/// A check step: what to look at, what must hold, what to keep.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub target: CheckTarget,
    /// Every assertion, in plan order (defaults such as `status: 2xx` included).
    pub expect: Vec<Assertion>,
    /// Polling: try again until these hold (then `expect` is evaluated once).
    pub until: Vec<Assertion>,
    pub captures: Vec<Capture>,
    pub retry: Option<RetrySpec>,
    /// `http` only: send the request this many times, `concurrency` at a time.
    pub repeat: Option<RepeatSpec>,
}

impl CheckSpec {
    /// `http`, `command`, `tcp`, `log`, `file` or `prometheus`.
    pub fn kind(&self) -> &'static str {
        match &self.target {
            CheckTarget::Http(_) => "http",
            CheckTarget::Command(_) => "command",
            CheckTarget::Tcp(_) => "tcp",
            CheckTarget::Log(_) => "log",
            CheckTarget::File(_) => "file",
            CheckTarget::Prometheus(_) => "prometheus",
        }
    }
}

#[derive(Debug, Clone)]
pub enum CheckTarget {
    Http(Box<HttpRequest>),
    /// A shell command (`sh -c`) run in the plan directory (or the step's `cwd`).
    Command(Spanned<Template>),
    /// `HOST:PORT` that must accept (or refuse) a TCP connection.
    Tcp(Spanned<Template>),
    Log(LogSource),
    /// Files read in order as one stream (downloads joined for a hash check).
    File(Vec<Spanned<Template>>),
    /// A PromQL query against a Prometheus server's HTTP API.
    Prometheus(Box<PromQuery>),
}

/// A query against the Prometheus HTTP API: `/api/v1/query` (instant) or
/// `/api/v1/query_range` (over the last `range`, every `step`).
#[derive(Debug, Clone)]
pub struct PromQuery {
    /// The server's base URL (`http://127.0.0.1:9090`).
    pub url: Spanned<Template>,
    pub query: Spanned<Template>,
    /// The query as written, for names and previews.
    pub query_text: String,
    /// A range query over the last `range` (instant when unset).
    pub range: Option<Duration>,
    /// The resolution of a range query; `range / 60`, at least 1s, when unset.
    pub step: Option<Duration>,
    pub headers: Vec<(String, Spanned<Template>)>,
    pub auth: Option<Auth>,
    /// Per query; 10s when unset.
    pub timeout: Option<Duration>,
}

impl PromQuery {
    /// The resolution of a range query.
    pub fn step_or_default(&self) -> Duration {
        self.step.unwrap_or_else(|| {
            let r = self.range.unwrap_or_default() / 60;
            r.max(Duration::from_secs(1))
        })
    }
}

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: Spanned<Template>,
    /// The URL as written, for names and previews.
    pub url_text: String,
    pub headers: Vec<(String, Spanned<Template>)>,
    pub query: Vec<(String, Spanned<Template>)>,
    pub auth: Option<Auth>,
    pub body: Option<RequestBody>,
    /// Per request; the step's `timeout` (or 30s) when unset.
    pub timeout: Option<Duration>,
    /// Follow redirects (up to 10). Off by default, like curl: a 302 is an answer.
    pub follow_redirects: bool,
    /// Accept any certificate (`curl -k`).
    pub insecure: bool,
    /// A PEM file of extra trusted certificates, relative to the plan.
    pub ca: Option<Spanned<Template>>,
    /// Save the body to this file (relative to the plan), streamed.
    pub save: Option<Spanned<Template>>,
    /// How much of the body is kept in memory for text assertions and captures.
    pub max_body: u64,
}

#[derive(Debug, Clone)]
pub enum Auth {
    Bearer(Spanned<Template>),
    Basic {
        user: Spanned<Template>,
        password: Spanned<Template>,
    },
}

#[derive(Debug, Clone)]
pub enum RequestBody {
    Json(JsonTemplate),
    Form(Vec<(String, Spanned<Template>)>),
    Multipart(Vec<MultipartPart>),
    Raw(Payload),
}

#[derive(Debug, Clone)]
pub struct MultipartPart {
    pub name: String,
    pub content: Payload,
    pub filename: Option<Spanned<Template>>,
    pub content_type: Option<Spanned<Template>>,
}

/// Bytes to send: text, a file's content, or generated random bytes.
#[derive(Debug, Clone)]
pub enum Payload {
    Text(Spanned<Template>),
    File(Spanned<Template>),
    /// Pseudo-random bytes from a seed: the same seed gives the same bytes. Without a seed,
    /// one is chosen per run and recorded.
    Random {
        size: u64,
        seed: Option<u64>,
    },
}

impl Payload {
    /// Whether the content is a file or generated (sent as a file part in multipart).
    pub fn is_file_like(&self) -> bool {
        !matches!(self, Payload::Text(_))
    }
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Spanned<Template>),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

#[derive(Debug, Clone)]
pub struct LogSource {
    pub from: LogFrom,
    /// Only the last N lines (like `tail -N`).
    pub tail: Option<usize>,
    /// Keep reading what is appended for this long.
    pub follow: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum LogFrom {
    File(Spanned<Template>),
    Command(Spanned<Template>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySpec {
    pub attempts: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatSpec {
    pub count: u32,
    pub concurrency: u32,
}

/// One thing that must hold.
#[derive(Debug, Clone)]
pub enum Assertion {
    Value {
        span: Span,
        subject: Subject,
        matcher: Matcher,
        /// Added by stagegate (`status: 2xx`, `exit_code: 0`), not written in the plan.
        implicit: bool,
    },
    /// No line of the log matches the pattern.
    LogAbsent { span: Span, pattern: RegexSpec },
    /// Some line of the log matches the entry.
    LogPresent { span: Span, entry: LogEntry },
}

#[derive(Debug, Clone)]
pub enum LogEntry {
    Matches(RegexSpec),
    /// A JSON line whose fields all match.
    Json(Vec<(JsonPathSpec, Vec<Matcher>)>),
}

/// What an assertion looks at.
#[derive(Debug, Clone)]
pub enum Subject {
    Status,
    /// A response header, by lowercase name (several values are joined with `, `).
    Header(String),
    Json(JsonPathSpec),
    /// The response body, a command's stdout, or the files' content.
    Body,
    /// Its length in bytes.
    BodyLen,
    /// Its sha256, lowercase hex.
    Sha256,
    Duration,
    ExitCode,
    Stderr,
    /// Whether the TCP port accepted the connection.
    Open,
    /// Every value of every series a Prometheus query returned.
    Value,
    /// The number of series a Prometheus query returned.
    Series,
    /// A label of every series a Prometheus query returned.
    Label(String),
}

impl Subject {
    /// The name in reports: `status`, `header content-type`, `json $.version`, ...
    pub fn label(&self, kind: &str) -> String {
        match self {
            Subject::Status => "status".into(),
            Subject::Header(h) => format!("header {h}"),
            Subject::Json(p) => format!("json {}", p.text_raw),
            Subject::Body if kind == "command" => "stdout".into(),
            Subject::Body => "body".into(),
            Subject::BodyLen if kind == "file" => "size".into(),
            Subject::BodyLen => "body_len".into(),
            Subject::Sha256 => "sha256".into(),
            Subject::Duration => "duration".into(),
            Subject::ExitCode => "exit_code".into(),
            Subject::Stderr => "stderr".into(),
            Subject::Open => "open".into(),
            Subject::Value => "value".into(),
            Subject::Series => "series".into(),
            Subject::Label(l) => format!("label {l}"),
        }
    }

    /// How literal operands of comparisons are read: numbers, sizes or durations.
    pub fn unit(&self) -> Unit {
        match self {
            Subject::Status | Subject::ExitCode => Unit::Number,
            Subject::BodyLen => Unit::Bytes,
            Subject::Duration => Unit::Millis,
            _ => Unit::Number,
        }
    }

    /// Whether the value is a number (equality compares numbers, not text).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            Subject::Status
                | Subject::ExitCode
                | Subject::BodyLen
                | Subject::Duration
                | Subject::Value
                | Subject::Series
        )
    }
}

/// How an operand is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Number,
    /// `10MiB`, `5kB`, `1024`.
    Bytes,
    /// `500ms`, `2s` (a bare number is milliseconds).
    Millis,
}

impl Unit {
    /// Reads an operand in this unit.
    pub fn parse(self, text: &str) -> Result<f64, String> {
        let t = text.trim();
        match self {
            Unit::Number => t
                .parse::<f64>()
                .map_err(|_| format!("`{t}` is not a number")),
            Unit::Bytes => parse_size(t).map(|b| b as f64),
            Unit::Millis => match t.parse::<f64>() {
                Ok(ms) => Ok(ms),
                Err(_) => parse_duration(t).map(|d| d.as_secs_f64() * 1000.0),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }

    fn from_key(k: &str) -> Option<Self> {
        Some(match k {
            "<" | "lt" => CmpOp::Lt,
            "<=" | "le" => CmpOp::Le,
            ">" | "gt" => CmpOp::Gt,
            ">=" | "ge" => CmpOp::Ge,
            "==" | "eq" => CmpOp::Eq,
            "!=" | "ne" => CmpOp::Ne,
            _ => return None,
        })
    }
}

/// How a value must look.
#[derive(Debug, Clone)]
pub enum Matcher {
    Equals(Spanned<Template>),
    OneOf(Vec<Spanned<Template>>),
    /// `2xx`: the status divided by 100.
    StatusClass(u16),
    /// A substring of text, an element of an array, a key of an object.
    Contains(Spanned<Template>),
    Matches(RegexSpec),
    Exists(bool),
    /// The number of nodes a JSONPath selects.
    Count(Box<Matcher>),
    /// The length of a string (characters), an array or an object.
    Length(Box<Matcher>),
    Compare(CmpOp, Spanned<Template>),
    Not(Box<Matcher>),
}

/// A regex, compiled when written without templates.
#[derive(Debug, Clone)]
pub struct RegexSpec {
    pub text: Spanned<Template>,
    pub raw: String,
    pub compiled: Option<regex::Regex>,
}

/// A JSONPath (RFC 9535), compiled when written without templates.
#[derive(Debug, Clone)]
pub struct JsonPathSpec {
    pub text: Spanned<Template>,
    pub text_raw: String,
    pub compiled: Option<serde_json_path::JsonPath>,
}

/// A value taken from what a check saw, kept as a step output.
#[derive(Debug, Clone)]
pub struct Capture {
    pub name: String,
    pub span: Span,
    pub source: CaptureSource,
    /// Applied to the source's text: the first group, or the whole match without groups.
    pub regex: Option<RegexSpec>,
    /// Masked everywhere from now on, like a secret.
    pub secret: bool,
}

#[derive(Debug, Clone)]
pub enum CaptureSource {
    Json(JsonPathSpec),
    Header(String),
    /// The body (or stdout) as text.
    Body,
    Stderr,
    Status,
    /// The sha256 of the body received.
    BodySha256,
    /// The sha256 of the file or generated payload sent.
    SentSha256,
}

impl CaptureSource {
    pub fn describe(&self) -> String {
        match self {
            CaptureSource::Json(p) => format!("json {}", p.text_raw),
            CaptureSource::Header(h) => format!("header {h}"),
            CaptureSource::Body => "body".into(),
            CaptureSource::Stderr => "stderr".into(),
            CaptureSource::Status => "status".into(),
            CaptureSource::BodySha256 => "sha256 of the body".into(),
            CaptureSource::SentSha256 => "sha256 of what was sent".into(),
        }
    }
}

/// Parses `10MiB`, `5MB`, `512KiB`, `1GiB`, `100kB`, `2048` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a size; write e.g. `10MiB`, `512KiB` or `2048`"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" | "b" => 1.0,
        "kB" | "KB" | "k" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "KiB" | "Ki" => 1024.0,
        "MiB" | "Mi" => 1024.0 * 1024.0,
        "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "`{t}` has an unknown size unit `{other}`; use B, kB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    Ok((value * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("2048").unwrap(), 2048);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(Unit::Millis.parse("2s").unwrap(), 2000.0);
        assert_eq!(Unit::Millis.parse("250").unwrap(), 250.0);
        assert_eq!(Unit::Bytes.parse("1KiB").unwrap(), 1024.0);
        assert!(Unit::Number.parse("x").is_err());
    }
}
