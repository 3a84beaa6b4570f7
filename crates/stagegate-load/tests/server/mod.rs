//! A small real HTTP/1.1 server on loopback for the load generator's tests, the CLI's tests
//! and the benchmark script (through `examples/target_server.rs`).
//!
//! Routes: `/echo` answers the method and the body; `/status/NNN` answers NNN; `/alternate` answers 200 and 404 in turn; `/hang`
//! never answers; `/login` sets `session=<X-User>`; `/me` answers `{"user":"..."}` with the
//! caller's `X-User` header or `session` cookie; anything else answers `ok`. Every answer
//! waits `delay` first, and once the `stall_at`-th request has arrived, every answer waits
//! until `stall` has passed since then. With `leak_every: n`, every n-th `/me` answer names
//! the previous caller instead (the bug an isolation rule catches).
//!
//! Token and item routes, whose effects are kept in the server's [`Ledger`]:
//! `POST /auth/login` with `{"user":"NAME"}` answers `{"token":"..."}`, a token of its own for
//! every login (500 instead for the first `login_failures` logins of each user in
//! `failing_logins`, after `login_delay`); `GET /auth/me` answers 200 `{"user":"NAME"}` when
//! `Authorization: Bearer TOKEN` carries a token issued to the caller's `X-User`, 401
//! otherwise; `POST /items` answers `{"id":"N"}`, a new id each time; `GET /items/N` answers
//! 200 for an id that was created, 404 otherwise.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub delay: Duration,
    pub stall: Option<Duration>,
    /// The request (1-based) whose arrival starts the stall.
    pub stall_at: u64,
    pub leak_every: Option<u64>,
    /// `/auth/login`: the first `login_failures` logins of these users answer 500.
    pub failing_logins: Vec<String>,
    pub login_failures: u64,
    /// `/auth/login` waits this long (after `delay`) before answering.
    pub login_delay: Duration,
}

/// What the server saw, for tests to count.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Requests per path (without the query).
    pub paths: Mutex<HashMap<String, u64>>,
    /// `/auth/login` requests per user, failed ones included.
    pub logins: Mutex<HashMap<String, u64>>,
    /// Every token issued, and the user it was issued to.
    pub tokens: Mutex<HashMap<String, String>>,
    /// `/auth/me` requests with a token of the caller's own.
    pub authorized: AtomicU64,
    /// `/auth/me` requests without a token, with an unknown one or another user's.
    pub refused: AtomicU64,
    /// The tokens `/auth/me` accepted.
    pub tokens_used: Mutex<HashSet<String>>,
    /// Items created by `POST /items`.
    pub created: AtomicU64,
    /// `GET /items/N` answers 200, per id.
    pub fetched: Mutex<HashMap<String, u64>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub ledger: Arc<Ledger>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests to `path` (without the query), or to paths under it when it ends with `/`.
    pub fn hits_on(&self, path: &str) -> u64 {
        let paths = self.ledger.paths.lock().unwrap();
        if path.ends_with('/') {
            paths
                .iter()
                .filter(|(p, _)| p.starts_with(path))
                .map(|(_, n)| n)
                .sum()
        } else {
            paths.get(path).copied().unwrap_or(0)
        }
    }

    /// `/auth/login` requests of `user`, failed ones included.
    pub fn logins(&self, user: &str) -> u64 {
        self.ledger
            .logins
            .lock()
            .unwrap()
            .get(user)
            .copied()
            .unwrap_or(0)
    }
}

struct State {
    b: Behaviour,
    hits: Arc<AtomicU64>,
    stall_until: Mutex<Option<Instant>>,
    me_count: AtomicU64,
    last_user: Mutex<String>,
    alternate: AtomicU64,
    ledger: Arc<Ledger>,
}

/// Starts a server on a free loopback port, on its own thread, for the life of the process.
pub fn start(b: Behaviour) -> TestServer {
    start_on("127.0.0.1:0", b)
}

pub fn start_on(addr: &str, b: Behaviour) -> TestServer {
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicU64::new(0));
    let ledger = Arc::new(Ledger::default());
    let state = Arc::new(State {
        b,
        hits: hits.clone(),
        stall_until: Mutex::new(None),
        me_count: AtomicU64::new(0),
        last_user: Mutex::new(String::new()),
        alternate: AtomicU64::new(0),
        ledger: ledger.clone(),
    });
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(listener, state));
    });
    TestServer { addr, hits, ledger }
}

async fn serve(listener: std::net::TcpListener, state: Arc<State>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    s: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = s.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(stall) = s.b.stall {
        let until = {
            let mut u = s.stall_until.lock().unwrap();
            if u.is_none() && n >= s.b.stall_at.max(1) {
                *u = Some(Instant::now() + stall);
            }
            *u
        };
        if let Some(until) = until
            && Instant::now() < until
        {
            tokio::time::sleep_until(until.into()).await;
        }
    }
    if !s.b.delay.is_zero() {
        tokio::time::sleep(s.b.delay).await;
    }
    let path = req.uri().path().to_string();
    *s.ledger
        .paths
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    if path.starts_with("/auth/") || path.starts_with("/items") {
        return Ok(ledger_route(&s, req, &path).await);
    }
    if path == "/echo" {
        use http_body_util::BodyExt;
        let method = req.method().to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut out = format!("{method} ").into_bytes();
        out.extend_from_slice(&body);
        return Ok(Response::new(Full::new(Bytes::from(out))));
    }
    let user = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|c| {
                    c.split(';')
                        .find_map(|kv| kv.trim().strip_prefix("session=").map(str::to_string))
                })
        })
        .unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    if let Some(code) = path.strip_prefix("/status/") {
        *resp.status_mut() = code
            .parse::<u16>()
            .ok()
            .and_then(|c| hyper::StatusCode::from_u16(c).ok())
            .unwrap_or(hyper::StatusCode::BAD_REQUEST);
    } else if path == "/alternate" {
        if s.alternate.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
        }
    } else if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    } else if path == "/login" {
        resp.headers_mut().insert(
            "set-cookie",
            format!("session={user}; Path=/; HttpOnly").parse().unwrap(),
        );
    } else if path == "/me" {
        let k = s.me_count.fetch_add(1, Ordering::SeqCst) + 1;
        let shown = {
            let mut last = s.last_user.lock().unwrap();
            let shown = match s.b.leak_every {
                Some(e) if k.is_multiple_of(e) && !last.is_empty() => last.clone(),
                _ => user.clone(),
            };
            *last = user.clone();
            shown
        };
        *resp.body_mut() = Full::new(Bytes::from(format!("{{\"user\":\"{shown}\"}}\n")));
    }
    Ok(resp)
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

/// The `/auth/*` and `/items*` routes.
async fn ledger_route(s: &State, req: Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let l = &s.ledger;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (x_user, authorization) = (header("x-user"), header("authorization"));
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match (method.as_str(), path) {
        ("POST", "/auth/login") => {
            if !s.b.login_delay.is_zero() {
                tokio::time::sleep(s.b.login_delay).await;
            }
            let user = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("user")?.as_str().map(str::to_string));
            let Some(user) = user else {
                return json(400, r#"{"error":"post {\"user\":\"NAME\"}"}"#.into());
            };
            let n = {
                let mut logins = l.logins.lock().unwrap();
                let n = logins.entry(user.clone()).or_default();
                *n += 1;
                *n
            };
            if s.b.failing_logins.contains(&user) && n <= s.b.login_failures {
                return json(500, r#"{"error":"try again"}"#.into());
            }
            let mut tokens = l.tokens.lock().unwrap();
            let token = format!("tok{}x{}", tokens.len() + 1, n * 7919 % 1000);
            tokens.insert(token.clone(), user.clone());
            json(200, format!(r#"{{"token":"{token}","user":"{user}"}}"#))
        }
        ("GET", "/auth/me") => {
            let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
            let owner = l.tokens.lock().unwrap().get(token).cloned();
            if owner.is_some_and(|o| !x_user.is_empty() && o == x_user) {
                l.authorized.fetch_add(1, Ordering::SeqCst);
                l.tokens_used.lock().unwrap().insert(token.to_string());
                json(200, format!(r#"{{"user":"{x_user}"}}"#))
            } else {
                l.refused.fetch_add(1, Ordering::SeqCst);
                json(401, r#"{"error":"not your token"}"#.into())
            }
        }
        ("POST", "/items") => {
            let id = l.created.fetch_add(1, Ordering::SeqCst) + 1;
            json(200, format!(r#"{{"id":"{id}"}}"#))
        }
        ("GET", p) if p.starts_with("/items/") => {
            let id = &p["/items/".len()..];
            let created = l.created.load(Ordering::SeqCst);
            if id.parse::<u64>().is_ok_and(|n| n >= 1 && n <= created) {
                *l.fetched.lock().unwrap().entry(id.to_string()).or_default() += 1;
                json(200, format!(r#"{{"id":"{id}"}}"#))
            } else {
                json(404, r#"{"error":"no such item"}"#.into())
            }
        }
        _ => json(404, r#"{"error":"no such route"}"#.into()),
    }
}
