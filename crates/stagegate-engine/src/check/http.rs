//! `http` checks: build the request from the plan, send it, stream the answer through a
//! [`BodySink`], and, for `repeat`, send it many times with bounded concurrency.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use stagegate_plan::Scope;
use stagegate_plan::check::{Auth, HttpRequest, JsonTemplate, Payload, RequestBody};
use tokio_util::sync::CancellationToken;

use super::body::{BodyNeeds, BodySink};
use super::expect::{Expectation, Observation};
use super::payload::{FormPart, Segment, SentHash, StreamedBody, multipart};

/// The request timeout when neither the request nor the step sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A request with every template rendered, ready to send (again and again).
#[derive(Debug)]
pub struct Prepared {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    send: Sendable,
    pub timeout: Duration,
    pub save: Option<PathBuf>,
    pub needs: BodyNeeds,
    pub hash_sent: bool,
    /// `GET http://…`, for messages.
    pub target: String,
    /// Seeds chosen for `random_bytes` without one, to record.
    pub seeds: Vec<u64>,
    client: reqwest::Client,
}

/// The request body as the plan gives it.
enum PreparedBody {
    None,
    Bytes(Vec<u8>),
    Stream(StreamedBody),
}

/// What each send starts from.
#[derive(Debug)]
enum Sendable {
    /// The whole request, built once: a clone shares its body's bytes instead of copying them.
    Built(Box<reqwest::Request>),
    /// A streamed body (files, random bytes, multipart) is made anew for each send.
    Stream(StreamedBody),
}

/// Clients are shared by checks with the same TLS and redirect settings, so connections
/// are reused across steps.
pub(crate) fn client(
    insecure: bool,
    ca: Option<&Path>,
    follow: bool,
) -> Result<reqwest::Client, String> {
    type Key = (bool, Option<PathBuf>, bool);
    static CLIENTS: OnceLock<Mutex<HashMap<Key, reqwest::Client>>> = OnceLock::new();
    let key = (insecure, ca.map(Path::to_path_buf), follow);
    let cache = CLIENTS.get_or_init(Default::default);
    if let Some(c) = cache.lock().map_err(|e| e.to_string())?.get(&key) {
        return Ok(c.clone());
    }
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(if follow {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .tls_danger_accept_invalid_certs(insecure);
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the CA file {}: {e}; `tls.ca` is a PEM file relative to the plan",
                path.display()
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "the CA file {} is not PEM certificates: {e}",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!(
                "the CA file {} holds no certificate",
                path.display()
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    let c = b
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))?;
    cache
        .lock()
        .map_err(|e| e.to_string())?
        .insert(key, c.clone());
    Ok(c)
}

/// An error and its causes on one line: `error sending request: connection refused`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

fn render(scope: &Scope, t: &stagegate_plan::Template, what: &str) -> Result<String, String> {
    scope.render(t).map_err(|e| format!("{what}: {e}"))
}

pub(crate) fn json_value(scope: &Scope, j: &JsonTemplate) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match j {
        JsonTemplate::Null => Value::Null,
        JsonTemplate::Bool(b) => Value::Bool(*b),
        JsonTemplate::Number(n) => Value::Number(n.clone()),
        JsonTemplate::String(t) => Value::String(render(scope, &t.value, "json body")?),
        JsonTemplate::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| json_value(scope, i))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), json_value(scope, v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 32)
}

/// A payload as a stream segment and its length.
fn segment(
    p: &Payload,
    scope: &Scope,
    dir: &Path,
    seeds: &mut Vec<u64>,
) -> Result<(Segment, u64), String> {
    Ok(match p {
        Payload::Text(t) => {
            let b = render(scope, &t.value, "body")?.into_bytes();
            let n = b.len() as u64;
            (Segment::Bytes(b), n)
        }
        Payload::File(f) => {
            let path = dir.join(render(scope, &f.value, "file")?);
            let len = std::fs::metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .len();
            (Segment::File(path, len), len)
        }
        Payload::Random { size, seed } => {
            let seed = seed.unwrap_or_else(|| {
                let s = random_seed();
                seeds.push(s);
                s
            });
            (Segment::Random { size: *size, seed }, *size)
        }
    })
}

impl Prepared {
    /// Renders the request. `dir` is where relative paths start (the plan's directory).
    pub fn new(
        h: &HttpRequest,
        scope: &Scope,
        dir: &Path,
        step_timeout: Option<Duration>,
        needs: BodyNeeds,
        hash_sent: bool,
    ) -> Result<Self, String> {
        let url_text = render(scope, &h.url.value, "url")?;
        let mut url = reqwest::Url::parse(&url_text).map_err(|e| {
            format!("`{url_text}` is not a URL ({e}); write it whole, e.g. `http://127.0.0.1:8000/health`")
        })?;
        if !h.query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &h.query {
                q.append_pair(k, &render(scope, &v.value, &format!("query `{k}`"))?);
            }
        }
        let method = reqwest::Method::from_bytes(h.method.as_bytes())
            .map_err(|_| format!("`{}` is not an HTTP method", h.method))?;
        let mut headers = HeaderMap::new();
        let mut seeds = Vec::new();
        let body = match &h.body {
            None => PreparedBody::None,
            Some(RequestBody::Json(j)) => {
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                PreparedBody::Bytes(json_value(scope, j)?.to_string().into_bytes())
            }
            Some(RequestBody::Form(fields)) => {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in fields {
                    ser.append_pair(k, &render(scope, &v.value, &format!("form `{k}`"))?);
                }
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                PreparedBody::Bytes(ser.finish().into_bytes())
            }
            Some(RequestBody::Multipart(parts)) => {
                let mut form = Vec::new();
                for p in parts {
                    let (content, content_len) = segment(&p.content, scope, dir, &mut seeds)?;
                    let filename = match (&p.filename, &p.content) {
                        (Some(f), _) => Some(render(scope, &f.value, "filename")?),
                        (None, Payload::File(f)) => Path::new(&render(scope, &f.value, "file")?)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned()),
                        (None, Payload::Random { .. }) => Some(format!("{}.bin", p.name)),
                        (None, Payload::Text(_)) => None,
                    };
                    let content_type = match &p.content_type {
                        Some(c) => Some(render(scope, &c.value, "content_type")?),
                        None if p.content.is_file_like() => {
                            Some("application/octet-stream".to_string())
                        }
                        None => None,
                    };
                    form.push(FormPart {
                        name: p.name.clone(),
                        filename,
                        content_type,
                        content,
                        content_len,
                    });
                }
                let boundary = format!("stagegate-{:016x}", random_seed());
                let (body, content_type) = multipart(form, &boundary);
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_str(&content_type).map_err(|e| e.to_string())?,
                );
                PreparedBody::Stream(body)
            }
            Some(RequestBody::Raw(p)) => match segment(p, scope, dir, &mut seeds)? {
                (Segment::Bytes(b), _) => PreparedBody::Bytes(b),
                (seg, len) => PreparedBody::Stream(StreamedBody {
                    segments: vec![seg],
                    len,
                }),
            },
        };
        if let PreparedBody::Stream(s) = &body {
            headers.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(s.len));
        }
        if let Some(auth) = &h.auth {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                header_value(&auth_header(scope, auth)?, "Authorization")?,
            );
        }
        // Headers written in the plan win over the ones derived above.
        for (k, v) in &h.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a valid header name"))?;
            let value = render(scope, &v.value, &format!("header `{k}`"))?;
            headers.insert(name, header_value(&value, k)?);
        }
        let ca = match &h.ca {
            Some(c) => Some(dir.join(render(scope, &c.value, "tls.ca")?)),
            None => None,
        };
        let save = match &h.save {
            Some(s) => Some(dir.join(render(scope, &s.value, "save")?)),
            None => None,
        };
        let mut shown_url = url.clone();
        if shown_url.password().is_some() {
            let _ = shown_url.set_password(Some("***"));
        }
        let client = client(h.insecure, ca.as_deref(), h.follow_redirects)?;
        let built = |body: Option<Vec<u8>>| {
            let mut rb = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = body {
                rb = rb.body(b);
            }
            rb.build()
                .map(|r| Sendable::Built(Box::new(r)))
                .map_err(|e| format!("cannot build the request: {}", chain(&e)))
        };
        let send = match body {
            PreparedBody::None => built(None)?,
            PreparedBody::Bytes(b) => built(Some(b))?,
            PreparedBody::Stream(s) => Sendable::Stream(s),
        };
        Ok(Self {
            target: format!("{method} {shown_url}"),
            client,
            method,
            url,
            headers,
            send,
            timeout: h.timeout.or(step_timeout).unwrap_or(DEFAULT_TIMEOUT),
            save,
            needs,
            hash_sent,
            seeds,
        })
    }

    /// Sends the request once and reads the whole answer, within the request's timeout.
    pub async fn exchange(&self, cancel: &CancellationToken) -> Result<Observation, String> {
        let started = Instant::now();
        let sent: SentHash = Arc::default();
        let request = match &self.send {
            // Never `None`: only streamed bodies cannot be cloned.
            Sendable::Built(r) => r
                .try_clone()
                .ok_or_else(|| format!("cannot send {} again", self.target))?,
            Sendable::Stream(s) => self
                .client
                .request(self.method.clone(), self.url.clone())
                .headers(self.headers.clone())
                .body(s.clone().into_body(self.hash_sent, sent.clone()))
                .build()
                .map_err(|e| self.describe(&e))?,
        };
        let work = async {
            let mut resp = self
                .client
                .execute(request)
                .await
                .map_err(|e| self.describe(&e))?;
            let status = resp.status().as_u16();
            let headers = super::expect::joined_headers(resp.headers());
            let mut sink = BodySink::new(self.needs);
            if let Some(path) = &self.save {
                sink.save_to(path).await?;
            }
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("reading the body of the answer failed: {}", chain(&e)))?
            {
                sink.push(&chunk).await?;
            }
            let body = sink.finish().await?;
            Ok::<_, String>(Observation {
                status: Some(status),
                headers,
                body: Some(body),
                duration: started.elapsed(),
                sent_sha256: sent.lock().ok().and_then(|s| s.clone()),
                ..Default::default()
            })
        };
        tokio::select! {
            r = tokio::time::timeout(self.timeout, work) => match r {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "no complete answer within {} (the check's timeout; set `timeout` under `http` to change it)",
                    fmt_duration(self.timeout)
                )),
            },
            () = cancel.cancelled() => Err("cancelled".into()),
        }
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        let detail = chain(e);
        if e.is_connect() {
            format!("cannot connect: {detail}")
        } else if e.is_timeout() {
            format!(
                "no answer within {} (the check's timeout)",
                fmt_duration(self.timeout)
            )
        } else {
            format!("the request failed: {detail}")
        }
    }
}

/// The value of the `Authorization` header for `auth`: `Bearer TOKEN`, or `Basic` and the
/// base64 of `user:password`.
pub(crate) fn auth_header(scope: &Scope, auth: &Auth) -> Result<String, String> {
    Ok(match auth {
        Auth::Bearer(t) => format!("Bearer {}", render(scope, &t.value, "bearer token")?),
        Auth::Basic { user, password } => {
            let pair = format!(
                "{}:{}",
                render(scope, &user.value, "basic user")?,
                render(scope, &password.value, "basic password")?
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        }
    })
}

fn header_value(v: &str, name: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v).map_err(|_| {
        format!("the value of header `{name}` has characters a header cannot carry (a line break?)")
    })
}

pub fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The tally of a repeated request.
#[derive(Debug, Clone)]
pub struct Tally {
    pub sent: u32,
    pub answered: u32,
    /// Requests whose every assertion held.
    pub passed: u32,
    /// Per assertion: how many times it failed, and the first failure's actual value.
    pub failures: Vec<(u32, Option<String>)>,
    pub errors: u32,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Sends the request `count` times, `concurrency` at a time, evaluating every answer.
/// Workers pull the next request number from a shared counter (bounded fan-out without
/// one task per request).
pub async fn repeat(
    prepared: Arc<Prepared>,
    expect: Arc<Vec<Expectation>>,
    count: u32,
    concurrency: u32,
    mask: Arc<stagegate_plan::Scrubber>,
    cancel: CancellationToken,
) -> Tally {
    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (prepared, expect, next, mask, cancel) = (
            prepared.clone(),
            expect.clone(),
            next.clone(),
            mask.clone(),
            cancel.clone(),
        );
        workers.spawn(async move {
            let mut t = Tally {
                sent: 0,
                answered: 0,
                passed: 0,
                failures: vec![(0, None); expect.len()],
                errors: 0,
                first_error: None,
                elapsed: Duration::ZERO,
            };
            while next.fetch_add(1, Ordering::Relaxed) < count && !cancel.is_cancelled() {
                t.sent += 1;
                match prepared.exchange(&cancel).await {
                    Ok(mut obs) => {
                        t.answered += 1;
                        obs.share_mask(mask.clone());
                        let mut all = true;
                        for (i, e) in expect.iter().enumerate() {
                            let r = e.evaluate(&obs, "body");
                            if !r.passed {
                                all = false;
                                t.failures[i].0 += 1;
                                t.failures[i].1.get_or_insert(r.actual);
                            }
                        }
                        if all {
                            t.passed += 1;
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                    }
                }
            }
            t
        });
    }
    let mut total = Tally {
        sent: 0,
        answered: 0,
        passed: 0,
        failures: vec![(0, None); expect.len()],
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = workers.join_next().await {
        let Ok(t) = joined else {
            total.errors += 1;
            continue;
        };
        total.sent += t.sent;
        total.answered += t.answered;
        total.passed += t.passed;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        for (i, (n, first)) in t.failures.into_iter().enumerate() {
            total.failures[i].0 += n;
            if total.failures[i].1.is_none() {
                total.failures[i].1 = first;
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}
