//! A virtual user: its identity, its prepared requests, its cookie jar and its connection,
//! and one iteration of the scenario: send each request, read the answer, run the checks and
//! isolation rules, and count it all.

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
    identity: Arc<Identity>,
    prepared: Arc<Vec<PreparedRequest>>,
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
    Broken(String),
}

impl User {
    pub(crate) fn new(sh: &Shared, vu: usize) -> Self {
        let (identity, prepared) = sh.identity(vu);
        Self {
            vu,
            identity,
            prepared,
            jar: sh.cookies.then(CookieJar::new),
            conn: None,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            body: Vec::new(),
        }
    }

    /// Sends the scenario's requests in order. The first request's latency counts from
    /// `due` when given (open model). Returns false when no connection could be made.
    pub(crate) async fn iteration(
        &mut self,
        sh: &Shared,
        local: &Rc<RefCell<Local>>,
        due: Option<Instant>,
        measured: bool,
    ) -> bool {
        for (j, req) in self.prepared.clone().iter().enumerate() {
            let start = match (j, due) {
                (0, Some(d)) => d,
                _ => Instant::now(),
            };
            let name = &sh.scenario.requests[j].name;
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
                                local.borrow_mut().record(j, |s| {
                                    s.requests += 1;
                                    s.failed += 1;
                                    s.record_error(ErrorClass::Connect, || e.clone());
                                });
                            } else {
                                local.borrow_mut().interval.warmup_requests += 1;
                            }
                            return false;
                        }
                    }
                }
                let request = self.build(req);
                let sent_bytes = req.body.len() as u64;
                let keep = if sh.keep_body { sh.body_limit } else { 0 };
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
                    Some(Exchange::NotSent) => {
                        break Err((
                            ErrorClass::Transport,
                            "the connection closed before the request was sent".to_string(),
                            None,
                        ));
                    }
                    Some(Exchange::Broken(e)) => {
                        self.conn = None;
                        break Err((ErrorClass::Transport, e, None));
                    }
                    None => {
                        self.conn = None;
                        break Err((
                            ErrorClass::Timeout,
                            format!("no answer within {:?}", sh.timeout),
                            Some(sh.timeout),
                        ));
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
            if !measured {
                local.borrow_mut().interval.warmup_requests += 1;
                if let (Ok((_, headers, _, _)), Some(jar)) = (&outcome, self.jar.as_mut()) {
                    jar.store(headers);
                }
                continue;
            }
            match outcome {
                Err((class, message, timed_out)) => {
                    local.borrow_mut().record(j, |s| {
                        s.requests += 1;
                        s.failed += 1;
                        if let Some(t) = timed_out {
                            s.record_latency(t.max(latency));
                        }
                        s.record_error(class, || message.clone());
                    });
                }
                Ok((status, headers, bytes, sent)) => {
                    let spec = &sh.scenario.requests[j];
                    let view = ResponseView {
                        request: name,
                        status,
                        headers: &headers,
                        body: &self.body,
                    };
                    let mut failed_check: Option<String> = None;
                    let (mut passed, mut failed) = (0u64, 0u64);
                    for c in &spec.checks {
                        match c.check(&self.identity, &view) {
                            Ok(()) => passed += 1,
                            Err(m) => {
                                failed += 1;
                                if failed_check.is_none() {
                                    failed_check = Some(format!("{}: {m}", c.name()));
                                }
                            }
                        }
                    }
                    let violation = sh
                        .isolation
                        .iter()
                        .find_map(|r| r.violation(&self.identity, &view));
                    let class = if status >= 500 {
                        Some(ErrorClass::Status5xx)
                    } else if failed > 0 {
                        Some(ErrorClass::Assertion)
                    } else {
                        None
                    };
                    let (vu, index) = (self.vu, self.identity.index);
                    local.borrow_mut().record(j, |s| {
                        s.requests += 1;
                        s.record_latency(latency);
                        s.record_status(status);
                        s.bytes_received += bytes;
                        s.bytes_sent += sent;
                        s.checks_passed += passed;
                        s.checks_failed += failed;
                        if let Some(m) = &failed_check
                            && s.check_example.is_none()
                        {
                            s.check_example = Some(m.clone());
                        }
                        if let Some(class) = class {
                            s.failed += 1;
                            s.record_error(class, || match (class, &failed_check) {
                                (ErrorClass::Assertion, Some(m)) => m.clone(),
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
                    if let Some(jar) = self.jar.as_mut() {
                        jar.store(&headers);
                    }
                }
            }
        }
        true
    }

    fn build(&self, req: &PreparedRequest) -> Request<Body> {
        let mut r = Request::new(Full::new(req.body.clone()));
        *r.method_mut() = req.method.clone();
        *r.uri_mut() = req.uri.clone();
        *r.headers_mut() = req.headers.clone();
        if let Some(c) = self.jar.as_ref().and_then(|j| j.header()) {
            r.headers_mut().insert(COOKIE, c.clone());
        }
        r
    }
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
        Err(e) => return Exchange::Broken(describe(&e)),
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
            Err(e) => return Exchange::Broken(describe(&e)),
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
