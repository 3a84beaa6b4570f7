//! A small real HTTP/1.1 server on loopback for the load generator's tests, the CLI's tests
//! and the benchmark script (through `examples/target_server.rs`).
//!
//! Routes: `/echo` answers the method and the body; `/status/NNN` answers NNN; `/alternate` answers 200 and 404 in turn; `/hang`
//! never answers; `/login` sets `session=<X-User>`; `/me` answers `{"user":"..."}` with the
//! caller's `X-User` header or `session` cookie; anything else answers `ok`. Every answer
//! waits `delay` first, and once the `stall_at`-th request has arrived, every answer waits
//! until `stall` has passed since then. With `leak_every: n`, every n-th `/me` answer names
//! the previous caller instead (the bug an isolation rule catches).

#![allow(dead_code)]

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
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

struct State {
    b: Behaviour,
    hits: Arc<AtomicU64>,
    stall_until: Mutex<Option<Instant>>,
    me_count: AtomicU64,
    last_user: Mutex<String>,
    alternate: AtomicU64,
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
    let state = Arc::new(State {
        b,
        hits: hits.clone(),
        stall_until: Mutex::new(None),
        me_count: AtomicU64::new(0),
        last_user: Mutex::new(String::new()),
        alternate: AtomicU64::new(0),
    });
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(listener, state));
    });
    TestServer { addr, hits }
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
