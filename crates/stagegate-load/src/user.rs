//! A virtual user: its identity, its prepared requests, its cookie jar and its connection,
//! and one iteration of the scenario: its setup requests first while it is not ready, then
//! each request: send it, read the answer, run the checks, isolation rules and captures, and
//! count it all.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::COOKIE;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

use crate::check::ResponseView;
use crate::conn::{Body, Conn};
use crate::cookies::CookieJar;
use crate::identity::Identity;
use crate::request::PreparedRequest;
use crate::stats::{ErrorClass, IsolationExample};
use crate::worker::{Local, Shared};

/// A virtual user: identity, prepared requests, cookie jar and connection.
pub(crate) struct User {
    vu: usize,
    /// Shared with the users of the same identity row until a capture gives this user its
    /// own copy.
    identity: Arc<Identity>,
    /// The requests of [`crate::request::Scenario::all`] filled in with the identity; the
    /// user's own copy once a capture changed one.
    prepared: Arc<Vec<PreparedRequest>>,
    /// Whether the setup requests have all succeeded (from the start when there are none).
    ready: bool,
    jar: Option<CookieJar>,
    conn: Option<Conn>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    body: Vec<u8>,
}

/// How one exchange on a connection ended.
enum Exchange {
    Answered {
        status: u16,
        headers: HeaderMap,
        bytes: u64,
    },
    /// The connection was closed before the request went out: try a new one.
    NotSent,
    Broken(hyper::Error),
}

/// Why a request got no answer. Its message is written only when it is the first of its
/// class to be kept.
enum Failure {
    /// The connection closed before the request was sent, on a fresh connection.
    NotSent,
    Broken(hyper::Error),
    Timeout(Duration),
}

impl Failure {
    fn class(&self) -> ErrorClass {
        match self {
            Failure::NotSent | Failure::Broken(_) => ErrorClass::Transport,
            Failure::Timeout(_) => ErrorClass::Timeout,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::NotSent => "the connection closed before the request was sent".to_string(),
            Failure::Broken(e) => describe(e),
            Failure::Timeout(t) => format!("no answer within {t:?}"),
        }
    }
}

/// What the iteration does after a request.
enum Next {
    /// Send the next request.
    Go,
    /// End the iteration here: a setup request failed, or a request whose captures the
    /// following requests need.
    Stop,
    /// No connection could be made: end the iteration and back off.
    NoConnection,
}

/// Why an answered request is an `assertion` error: its first failed check (the check's
/// name and what it found) or its failed capture (the variable and why). Written out only
/// when it is the example kept.
enum Assertion<'a> {
    Check(&'a str, String),
    Capture(&'a str, String),
}

impl Assertion<'_> {
    fn message(&self) -> String {
        match self {
            Assertion::Check(name, m) => format!("{name}: {m}"),
            Assertion::Capture(var, m) => format!("capture `{var}`: {m}"),
        }
    }
}

impl User {
    pub(crate) fn new(sh: &Shared, vu: usize) -> Self {
        let (identity, prepared) = sh.identity(vu);
        Self {
            vu,
            identity,
            prepared,
            ready: sh.scenario.setup.is_empty(),
            jar: sh.cookies.then(CookieJar::new),
            conn: None,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            body: Vec::new(),
        }
    }

    /// Sends the setup requests when the user is not ready yet, then the scenario's
    /// requests, in order. The first request's latency counts from `due` when given (open
    /// model). Returns false when no connection could be made.
    pub(crate) async fn iteration(
        &mut self,
        sh: &Shared,
        local: &Rc<RefCell<Local>>,
        mut due: Option<Instant>,
        measured: bool,
    ) -> bool {
        let n = sh.scenario.requests.len();
        if !self.ready {
            for slot in n..sh.scenario.slots() {
                match self.request(sh, local, slot, due.take(), measured).await {
                    Next::Go => {}
                    // Not ready: the setup runs again at the next iteration.
                    Next::Stop => return true,
                    Next::NoConnection => return false,
                }
            }
            self.ready = true;
        }
        for slot in 0..n {
            match self.request(sh, local, slot, due.take(), measured).await {
                Next::Go => {}
                Next::Stop => break,
                Next::NoConnection => return false,
            }
        }
        true
    }

    /// Sends the request at `slot` of the scenario's requests then setup requests, reads
    /// the answer, runs the checks, isolation rules and captures, and counts it all.
    async fn request(
        &mut self,
        sh: &Shared,
        local: &Rc<RefCell<Local>>,
        slot: usize,
        due: Option<Instant>,
        measured: bool,
    ) -> Next {
        let start = due.unwrap_or_else(Instant::now);
        let spec = sh.scenario.slot(slot);
        let name = &spec.name;
        // Whether a failure ends the iteration: a setup request's, or that of a request
        // whose captures the following requests need.
        let critical = slot >= sh.scenario.requests.len() || !spec.captures.is_empty();
        let mut fresh = false;
        let outcome = loop {
            if !self.conn.as_ref().is_some_and(Conn::usable) {
                self.conn = None;
                match sh.connector.connect().await {
                    Ok(c) => {
                        self.conn = Some(c);
                        fresh = true;
                        local.borrow_mut().interval.connections += 1;
                    }
                    Err(e) => {
                        if measured {
                            local.borrow_mut().record(slot, |s| {
                                s.requests += 1;
                                s.failed += 1;
                                s.record_error(ErrorClass::Connect, || e.to_string());
                            });
                        } else {
                            local.borrow_mut().interval.warmup_requests += 1;
                        }
                        return Next::NoConnection;
                    }
                }
            }
            let (request, sent_bytes) = self.build(slot);
            let keep = if sh.keep_body[slot] { sh.body_limit } else { 0 };
            self.body.clear();
            self.deadline
                .as_mut()
                .reset(tokio::time::Instant::from_std(Instant::now() + sh.timeout));
            let conn = self.conn.as_mut().expect("connected above");
            let body = &mut self.body;
            let result = conn
                .drive(self.deadline.as_mut(), async move |sender| {
                    exchange(sender, request, body, keep).await
                })
                .await;
            match result {
                Some(Exchange::NotSent) if !fresh => {
                    self.conn = None;
                    continue;
                }
                Some(Exchange::NotSent) => break Err(Failure::NotSent),
                Some(Exchange::Broken(e)) => {
                    self.conn = None;
                    break Err(Failure::Broken(e));
                }
                None => {
                    self.conn = None;
                    break Err(Failure::Timeout(sh.timeout));
                }
                Some(Exchange::Answered {
                    status,
                    headers,
                    bytes,
                }) => {
                    break Ok((status, headers, bytes, sent_bytes));
                }
            }
        };
        let latency = Instant::now().saturating_duration_since(start);
        let (status, headers, bytes, sent) = match outcome {
            Err(failure) => {
                if measured {
                    local.borrow_mut().record(slot, |s| {
                        s.requests += 1;
                        s.failed += 1;
                        if let Failure::Timeout(t) = failure {
                            s.record_latency(t.max(latency));
                        }
                        s.record_error(failure.class(), || failure.message());
                    });
                } else {
                    local.borrow_mut().interval.warmup_requests += 1;
                }
                return if critical { Next::Stop } else { Next::Go };
            }
            Ok(answer) => answer,
        };
        if !measured && !critical {
            local.borrow_mut().interval.warmup_requests += 1;
            if let Some(jar) = self.jar.as_mut() {
                jar.store(&headers);
            }
            return Next::Go;
        }
        let view = ResponseView {
            request: name,
            status,
            headers: &headers,
            body: &self.body,
        };
        // The first failed check's message, or the failed capture's.
        let mut assertion: Option<Assertion<'_>> = None;
        let (mut passed, mut failed) = (0u64, 0u64);
        for c in &spec.checks {
            match c.check(&self.identity, &view) {
                Ok(()) => passed += 1,
                Err(m) => {
                    failed += 1;
                    if assertion.is_none() {
                        assertion = Some(Assertion::Check(c.name(), m));
                    }
                }
            }
        }
        // Judged with the identity the request was sent with, before any capture changes it.
        let violation = if measured {
            sh.isolation
                .iter()
                .find_map(|r| r.violation(&self.identity, &view))
        } else {
            None
        };
        let mut class = if status >= 500 {
            Some(ErrorClass::Status5xx)
        } else if failed > 0 {
            Some(ErrorClass::Assertion)
        } else {
            None
        };
        if class.is_none() {
            for c in &spec.captures {
                let stored = match c.capture(&self.identity, &view) {
                    Ok(value) => store(sh, &mut self.identity, &mut self.prepared, c.var(), value),
                    Err(m) => Err(m),
                };
                if let Err(m) = stored {
                    assertion = Some(Assertion::Capture(c.var(), m));
                    class = Some(ErrorClass::Assertion);
                    break;
                }
            }
        }
        if measured {
            let (vu, index) = (self.vu, self.identity.index);
            local.borrow_mut().record(slot, |s| {
                s.requests += 1;
                s.record_latency(latency);
                s.record_status(status);
                s.bytes_received += bytes;
                s.bytes_sent += sent;
                s.checks_passed += passed;
                s.checks_failed += failed;
                if failed > 0
                    && let Some(m) = &assertion
                    && s.check_example.is_none()
                {
                    s.check_example = Some(m.message());
                }
                if let Some(class) = class {
                    s.failed += 1;
                    s.record_error(class, || match (class, &assertion) {
                        (ErrorClass::Assertion, Some(m)) => m.message(),
                        _ => format!("status {status} from `{name}`"),
                    });
                }
                if let Some(v) = &violation {
                    s.isolation_violations += 1;
                    if s.isolation_example.is_none() {
                        s.isolation_example = Some(IsolationExample {
                            vu,
                            identity: index,
                            request: name.clone(),
                            detail: v.clone(),
                        });
                    }
                }
            });
        } else {
            local.borrow_mut().interval.warmup_requests += 1;
        }
        if let Some(jar) = self.jar.as_mut() {
            jar.store(&headers);
        }
        if critical && class.is_some() {
            Next::Stop
        } else {
            Next::Go
        }
    }

    /// The request at `slot`, with the user's cookies, and the bytes of its body.
    fn build(&self, slot: usize) -> (Request<Body>, u64) {
        let req = &self.prepared[slot];
        let mut r = Request::new(Full::new(req.body.clone()));
        *r.method_mut() = req.method.clone();
        *r.uri_mut() = req.uri.clone();
        *r.headers_mut() = req.headers.clone();
        if let Some(c) = self.jar.as_ref().and_then(|j| j.header()) {
            r.headers_mut().insert(COOKIE, c.clone());
        }
        (r, req.body.len() as u64)
    }
}

/// Puts a captured value into the user's own variables and fills in again the user's
/// requests that name it. When one of them cannot take the value (it is not allowed in a
/// path or a header), nothing changes and the reason is returned.
fn store(
    sh: &Shared,
    identity: &mut Arc<Identity>,
    prepared: &mut Arc<Vec<PreparedRequest>>,
    var: &str,
    value: String,
) -> Result<(), String> {
    if identity.get(var) == Some(value.as_str()) {
        return Ok(());
    }
    let id = Arc::make_mut(identity);
    let old = id.set(var, value);
    let mut filled = Vec::new();
    for (slot, spec) in sh.scenario.all().enumerate() {
        if spec.uses_var(var) {
            match spec.prepare(&sh.host, id) {
                Ok(p) => filled.push((slot, p)),
                Err(e) => {
                    id.restore(var, old);
                    return Err(format!("the value cannot be sent: {e}"));
                }
            }
        }
    }
    if !filled.is_empty() {
        let requests = Arc::make_mut(prepared);
        for (slot, p) in filled {
            requests[slot] = p;
        }
    }
    Ok(())
}

/// Sends one request and reads the whole answer, keeping up to `keep` bytes of its body.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Body>,
    request: Request<Body>,
    body_out: &mut Vec<u8>,
    keep: usize,
) -> Exchange {
    if sender.ready().await.is_err() {
        return Exchange::NotSent;
    }
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => return Exchange::Broken(e),
    };
    let status = response.status().as_u16();
    let (parts, mut body) = response.into_parts();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    if body_out.len() < keep {
                        let room = keep - body_out.len();
                        body_out.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
            Err(e) => return Exchange::Broken(e),
        }
    }
    Exchange::Answered {
        status,
        headers: parts.headers,
        bytes,
    }
}

/// hyper's error and its causes, in one line.
fn describe(e: &hyper::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
