//! `staging-demo`: a staging service for stagegate's examples, tests and benchmarks.
//!
//! It serves the APIs the seed runbooks check by hand:
//!
//! - seed 000 (secure blob streaming): `GET /health` (`{"status":"ok","version":…}`),
//!   `GET /metrics` (Prometheus text, below), `POST /auth/token` (basic auth, answers a JWT),
//!   `POST /secure/files/upload` (multipart field `file`, 201 with `blob_id`, `size` and
//!   `sha256`), `GET /secure/files` (the list), `GET /secure/files/{id}/stream` (200, or 206
//!   for a `Range`, 416 when unsatisfiable), with the seed's 401 and 404 bodies, and a JSON
//!   audit log (one object per line: `ts`, `event`, `actor`, `blob_id`, `ip`, `status`, `bytes`);
//! - seed 003 (paper-trading smoke tests): `GET /api/v1/config` (`dry_run` and `alpaca_paper`
//!   from `DRY_RUN` and `ALPACA_PAPER`) and `GET /api/v1/orchestration/status` (asks the
//!   services in `DEMO_DEPENDENCIES` for their health);
//! - seed 002 (a load test of users who each log in and read their own data): 200 fixed users
//!   `u001`..`u200`, email `u017@demo.test`, password `pass-u017`, each with three threads
//!   `t-u017-1`..`t-u017-3`:
//!   - `POST /api/session` with `{"email":…,"password":…}`: 200
//!     `{"token":…,"user_id":"u017"}` and `Set-Cookie: sid=<token>; Path=/; HttpOnly`, a new
//!     random token per login; 401 `{"error":"invalid credentials"}` for wrong or missing
//!     ones; 400 `{"error":…}` for a body that is not such a JSON object (bodies of the
//!     `/api/*` routes are read up to 64 KiB; 413 beyond);
//!   - `GET /api/threads`, with `Authorization: Bearer <token>` or the `sid` cookie: 200
//!     `{"user_id":"u017","email":"u017@demo.test","threads":[{"id","owner","title"},…]}`;
//!   - `POST /api/threads` with `{"title":…}`: 201 `{"id":"t-u017-4","owner":"u017","title":…}`;
//!   - `GET /api/threads/{id}`: 200 the thread when it is the caller's, else 404
//!     `{"error":"not found"}`;
//!
//!   without a known token they answer 401 `{"error":"unauthorized"}`. The new endpoints
//!   answer `{"error":…}` where the seed 000 ones answer `{"detail":…}`.
//!
//! `GET /metrics` exports `erp_hub_up` (gauge, 1; 0 while `flap` has health down),
//! `demo_build_info{service,version}` (gauge, 1), `http_requests_total{status="2xx"}` (counter
//! of every answer by status class, scrapes included), `http_request_duration_seconds{status}`
//! (histogram of the time to the response head by status class, every answer but those of
//! `/metrics`; buckets 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 and +Inf),
//! `file_downloads_total{status="success"}`, `file_download_bytes_total`,
//! `admin_operations_total{operation}` (counters) and `process_start_time_seconds` (gauge,
//! Unix seconds).
//!
//! Settings (environment): `PORT` (8000), `DEMO_VERSION`, `DEMO_SERVICE` (the name in
//! `/health`), `DEMO_JWT_SECRET` (random when unset), `DEMO_ADMIN_USER` (`admin`),
//! `DEMO_ADMIN_PASSWORD` (login is off without it), `DEMO_DATA_DIR` (`data`),
//! `DEMO_AUDIT_LOG` (`logs/audit.log`), `DEMO_DEPENDENCIES` (`name=url,…`), and the faults'
//! timings in whole milliseconds: `DEMO_SLOW_MS` (400), `DEMO_FLAP_MS` (1000, at least 1),
//! `DEMO_ERRORS_AFTER_MS` (3000), `DEMO_METRICS_STOP_MS` (3000).
//!
//! Fault switches for tests, `DEMO_FAULT=a,b`: `wrong-version` (health reports another
//! version), `ignore-range` (always 200 with the whole blob), `corrupt-byte` (flips the middle
//! byte of every download), `log-error` (logs an ERROR line at start), `leak-threads`
//! (`GET /api/threads` keeps its last answer in one slot shared by all users and, on every
//! tenth request, answers that instead of the caller's own: under concurrency users see each
//! other's data), `slow` (every `/api/*` route waits `DEMO_SLOW_MS` before answering), and
//! three that switch on a schedule, timed from the start of the service:
//!
//! - `flap`: `GET /health` is healthy for `DEMO_FLAP_MS`, then answers 503
//!   `{"status":"unhealthy",…}` for as long, and so on; `erp_hub_up` is 0 while unhealthy;
//! - `errors-after`: from `DEMO_ERRORS_AFTER_MS` on, `GET /` and every `/api/*` route answer
//!   500 `{"error":"injected failure"}` (5xx in `http_requests_total` and the histogram);
//!   alone, it makes a service that turns bad under traffic;
//! - `metrics-stop-after`: from `DEMO_METRICS_STOP_MS` on, `GET /metrics` answers 503, so
//!   Prometheus marks the target down (`up` 0) and its series go stale (queries of them
//!   answer empty vectors).
//!
//! `staging-demo token --secret S [--sub NAME] [--ttl SECONDS]` prints a token.

mod jwt;
mod users;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    wrong_version: bool,
    ignore_range: bool,
    corrupt_byte: bool,
    log_error: bool,
    leak_threads: bool,
    slow: bool,
    flap: bool,
    errors_after: bool,
    metrics_stop_after: bool,
}

impl Faults {
    fn parse(text: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "wrong-version" => f.wrong_version = true,
                "ignore-range" => f.ignore_range = true,
                "corrupt-byte" => f.corrupt_byte = true,
                "log-error" => f.log_error = true,
                "leak-threads" => f.leak_threads = true,
                "slow" => f.slow = true,
                "flap" => f.flap = true,
                "errors-after" => f.errors_after = true,
                "metrics-stop-after" => f.metrics_stop_after = true,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` in DEMO_FAULT; known: wrong-version, ignore-range, corrupt-byte, log-error, leak-threads, slow, flap, errors-after, metrics-stop-after"
                    ));
                }
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Clone)]
struct Blob {
    id: String,
    filename: String,
    size: u64,
    sha256: String,
}

/// The upper bounds, in seconds, of `http_request_duration_seconds`'s buckets (+Inf aside).
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A Prometheus histogram: how many observations fell in each bucket (not cumulative; the
/// ones above the last bound only in `count`), their sum and count.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// The `_bucket` (cumulative, `le` last), `_sum` and `_count` lines of series `name` with
    /// the labels `labels` (`status="2xx"`).
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut below = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(self.buckets) {
            below += n;
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {below}\n"));
        }
        out.push_str(&format!(
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}\n",
            self.count, self.sum, self.count
        ));
    }
}

#[derive(Default)]
struct Metrics {
    requests: Mutex<BTreeMap<String, u64>>,
    /// `http_request_duration_seconds` by status class.
    latency: Mutex<BTreeMap<String, Histogram>>,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    uploads: AtomicU64,
    lists: AtomicU64,
}

struct App {
    version: String,
    service: String,
    environment: String,
    jwt_secret: Vec<u8>,
    admin_user: String,
    admin_password: Option<String>,
    data_dir: PathBuf,
    audit: Mutex<Option<std::fs::File>>,
    faults: Faults,
    metrics: Metrics,
    blobs: Mutex<Vec<Blob>>,
    dry_run: bool,
    alpaca_paper: bool,
    dependencies: Vec<(String, String)>,
    next_id: AtomicU64,
    /// The `slow` fault's delay, `None` without the fault.
    slow: Option<Duration>,
    /// When the service started: the scheduled faults count from here.
    started: Instant,
    /// The same, in Unix seconds, for `process_start_time_seconds`.
    started_unix: f64,
    /// The `flap` fault's half-period, `None` without the fault.
    flap: Option<Duration>,
    /// When the `errors-after` fault starts failing, `None` without the fault.
    errors_after: Option<Duration>,
    /// When the `metrics-stop-after` fault stops `/metrics`, `None` without the fault.
    metrics_stop: Option<Duration>,
    sessions: users::Sessions,
    threads: users::Threads,
    /// The `leak-threads` fault's shared slot.
    last_threads: users::LastResponse,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A setting in whole milliseconds (`value`, the variable `name`'s), `default` when unset.
fn millis(name: &str, value: Option<&str>, default: u64) -> Result<Duration, String> {
    match value.map(|v| v.trim().parse::<u64>()) {
        None => Ok(Duration::from_millis(default)),
        Some(Ok(ms)) => Ok(Duration::from_millis(ms)),
        Some(Err(_)) => Err(format!("{name} must be a whole number of milliseconds")),
    }
}

/// Whether the `flap` fault has health up `elapsed` after the start: up for the first
/// `period`, down for the next, and so on.
fn flap_healthy(elapsed: Duration, period: Duration) -> bool {
    (elapsed.as_millis() / period.as_millis().max(1)).is_multiple_of(2)
}

/// Whether a fault switched on at `at` (`None`: never) is on `elapsed` after the start.
fn switched_on(elapsed: Duration, at: Option<Duration>) -> bool {
    at.is_some_and(|at| elapsed >= at)
}

fn flag(name: &str) -> bool {
    env(name).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("token") {
        std::process::exit(token_command(&args[2..]));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    std::process::exit(runtime.block_on(serve()));
}

fn token_command(args: &[String]) -> i32 {
    let mut secret = env("DEMO_JWT_SECRET");
    let mut sub = "admin".to_string();
    let mut ttl = 3600;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--secret", Some(v)) => secret = Some(v.clone()),
            ("--sub", Some(v)) => sub = v.clone(),
            ("--ttl", Some(v)) => ttl = v.parse().unwrap_or(3600),
            _ => {
                eprintln!("usage: staging-demo token --secret SECRET [--sub NAME] [--ttl SECONDS]");
                return 2;
            }
        }
    }
    let Some(secret) = secret else {
        eprintln!("staging-demo token: give --secret or set DEMO_JWT_SECRET");
        return 2;
    };
    println!("{}", jwt::sign(secret.as_bytes(), &sub, "admin", ttl));
    0
}

async fn serve() -> i32 {
    let faults = match Faults::parse(&env("DEMO_FAULT").unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("staging-demo: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let timings = [
        ("DEMO_SLOW_MS", 400),
        ("DEMO_FLAP_MS", 1000),
        ("DEMO_ERRORS_AFTER_MS", 3000),
        ("DEMO_METRICS_STOP_MS", 3000),
    ]
    .map(|(name, default)| millis(name, env(name).as_deref(), default));
    let [slow, flap, errors_after, metrics_stop] = match timings {
        [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
        other => {
            for e in other.into_iter().filter_map(Result::err) {
                eprintln!("staging-demo: {e}");
            }
            return 2;
        }
    };
    if flap.is_zero() {
        eprintln!("staging-demo: DEMO_FLAP_MS must be at least 1 millisecond");
        return 2;
    }
    let port = env("PORT").unwrap_or_else(|| "8000".into());
    let data_dir = PathBuf::from(env("DEMO_DATA_DIR").unwrap_or_else(|| "data".into()));
    let audit_path =
        PathBuf::from(env("DEMO_AUDIT_LOG").unwrap_or_else(|| "logs/audit.log".into()));
    for dir in [Some(data_dir.as_path()), audit_path.parent()]
        .into_iter()
        .flatten()
        .filter(|d| !d.as_os_str().is_empty())
    {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("staging-demo: cannot create {}: {e}", dir.display());
            return 1;
        }
    }
    let audit = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&audit_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "staging-demo: cannot open the audit log {}: {e}",
                audit_path.display()
            );
            return 1;
        }
    };
    let jwt_secret = env("DEMO_JWT_SECRET")
        .map(String::into_bytes)
        .unwrap_or_else(|| {
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            Sha256::digest(seed.as_bytes()).to_vec()
        });
    let dependencies = env("DEMO_DEPENDENCIES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|d| d.split_once('='))
        .map(|(n, u)| {
            (
                n.trim().to_string(),
                u.trim().trim_end_matches('/').to_string(),
            )
        })
        .collect();
    let app = Arc::new(App {
        version: env("DEMO_VERSION").unwrap_or_else(|| "0.0.0".into()),
        service: env("DEMO_SERVICE").unwrap_or_else(|| "erp-hub".into()),
        environment: env("ENVIRONMENT")
            .or_else(|| env("STAGEGATE_ENVIRONMENT"))
            .unwrap_or_else(|| "unknown".into()),
        jwt_secret,
        admin_user: env("DEMO_ADMIN_USER").unwrap_or_else(|| "admin".into()),
        admin_password: env("DEMO_ADMIN_PASSWORD"),
        data_dir,
        audit: Mutex::new(Some(audit)),
        faults,
        metrics: Metrics::default(),
        blobs: Mutex::new(Vec::new()),
        dry_run: flag("DRY_RUN"),
        alpaca_paper: flag("ALPACA_PAPER"),
        dependencies,
        next_id: AtomicU64::new(1),
        slow: faults.slow.then_some(slow),
        started,
        started_unix,
        flap: faults.flap.then_some(flap),
        errors_after: faults.errors_after.then_some(errors_after),
        metrics_stop: faults.metrics_stop_after.then_some(metrics_stop),
        sessions: users::Sessions::new(),
        threads: users::Threads::new(),
        last_threads: users::LastResponse::default(),
    });
    let listener = match tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("staging-demo: cannot listen on 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    // PORT=0 picks a free port: say which one.
    let bound = listener
        .local_addr()
        .map(|a| a.port().to_string())
        .unwrap_or(port);
    println!(
        "INFO {} {} listening on 127.0.0.1:{bound} (faults: {})",
        app.service,
        app.version,
        env("DEMO_FAULT").unwrap_or_else(|| "none".into())
    );
    if app.faults.log_error {
        println!("ERROR order router: connection to the broker was lost (DEMO_FAULT=log-error)");
    }
    let _ = std::io::stdout().flush();
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let served = axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("staging-demo: server error: {e}");
            1
        }
    }
}

/// The largest JSON body the `/api/*` routes read.
const API_BODY_LIMIT: usize = 64 * 1024;

fn router(app: Arc<App>) -> Router {
    // The `slow` fault delays exactly these routes; `errors-after` fails them (after the
    // delay) and `/`.
    let api = Router::new()
        .route("/api/v1/config", get(config))
        .route("/api/v1/orchestration/status", get(orchestration))
        .route("/api/session", post(session))
        .route("/api/threads", get(list_threads).post(create_thread))
        .route("/api/threads/{id}", get(get_thread))
        .route_layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(app.clone(), inject_errors))
        .route_layer(middleware::from_fn_with_state(app.clone(), slow));
    Router::new()
        .route(
            "/",
            get(root).route_layer(middleware::from_fn_with_state(app.clone(), inject_errors)),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/auth/token", post(login))
        .route("/secure/files", get(list))
        .route("/secure/files/upload", post(upload))
        .route("/secure/files/{id}/stream", get(stream))
        .merge(api)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

/// Counts answers by status class for `/metrics`, and times them (but the scrapes); logs
/// errors, as a real service would.
async fn count_requests(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    let seconds = start.elapsed().as_secs_f64();
    let class = format!("{}xx", resp.status().as_u16() / 100);
    if path != "/metrics" {
        app.metrics
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(class.clone())
            .or_default()
            .observe(seconds);
    }
    *app.metrics
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(class)
        .or_default() += 1;
    if resp.status().is_server_error() {
        println!("ERROR {method} {path} -> {}", resp.status().as_u16());
    }
    resp
}

/// The `slow` fault: wait before answering.
async fn slow(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(delay) = app.slow {
        tokio::time::sleep(delay).await;
    }
    next.run(req).await
}

/// The `errors-after` fault: once its time has come, fail.
async fn inject_errors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if switched_on(app.started.elapsed(), app.errors_after) {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    next.run(req).await
}

impl App {
    /// Whether health is up (always, but while the `flap` fault has it down).
    fn healthy(&self) -> bool {
        self.flap
            .is_none_or(|period| flap_healthy(self.started.elapsed(), period))
    }
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "detail": text }))).into_response()
}

async fn root(State(app): State<Arc<App>>) -> String {
    format!("hello from {} {}\n", app.service, app.version)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let version = if app.faults.wrong_version {
        format!("{}-wrong", app.version)
    } else {
        app.version.clone()
    };
    if app.healthy() {
        axum::Json(json!({ "status": "ok", "version": version, "service": app.service }))
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({ "status": "unhealthy", "version": version, "service": app.service }),
            ),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    if switched_on(app.started.elapsed(), app.metrics_stop) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics stopped (DEMO_FAULT=metrics-stop-after)\n",
        )
            .into_response();
    }
    let m = &app.metrics;
    let mut out = String::new();
    out.push_str(&format!(
        "# HELP erp_hub_up Whether the service is up.\n# TYPE erp_hub_up gauge\nerp_hub_up {}\n",
        u8::from(app.healthy())
    ));
    out.push_str(&format!(
        "# HELP demo_build_info The running version.\n# TYPE demo_build_info gauge\ndemo_build_info{{service=\"{}\",version=\"{}\"}} 1\n",
        app.service, app.version
    ));
    out.push_str(
        "# HELP http_requests_total Answers by status class.\n# TYPE http_requests_total counter\n",
    );
    for (class, n) in m.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        out.push_str(&format!("http_requests_total{{status=\"{class}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP http_request_duration_seconds Time to the response head, by status class, but of /metrics.\n# TYPE http_request_duration_seconds histogram\n",
    );
    for (class, h) in m.latency.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        h.render(
            "http_request_duration_seconds",
            &format!("status=\"{class}\""),
            &mut out,
        );
    }
    out.push_str(&format!(
        "# HELP file_downloads_total Downloads served.\n# TYPE file_downloads_total counter\nfile_downloads_total{{status=\"success\"}} {}\n",
        m.downloads.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP file_download_bytes_total Bytes served by downloads.\n# TYPE file_download_bytes_total counter\nfile_download_bytes_total {}\n",
        m.download_bytes.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP admin_operations_total Administrative operations.\n# TYPE admin_operations_total counter\nadmin_operations_total{{operation=\"upload\"}} {}\nadmin_operations_total{{operation=\"list\"}} {}\n",
        m.uploads.load(Ordering::Relaxed),
        m.lists.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "# HELP process_start_time_seconds When the service started, in Unix seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.3}\n",
        app.started_unix
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

impl App {
    fn audit(&self, entry: Value) {
        let mut line = entry.to_string();
        line.push('\n');
        if let Some(f) = self
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// The caller's identity from `Authorization: Bearer …`, or the seed's 401 answers.
    fn authenticate(&self, headers: &HeaderMap) -> Result<jwt::Claims, Box<Response>> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Box::new(unauthorized("Not authenticated")));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Box::new(unauthorized("Invalid token")))?;
        jwt::verify(&self.jwt_secret, token.trim())
            .map_err(|_| Box::new(unauthorized("Invalid token")))
    }

    fn blob(&self, id: &str) -> Option<Blob> {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|b| b.id == id)
            .cloned()
    }
}

fn unauthorized(text: &str) -> Response {
    let mut r = detail(StatusCode::UNAUTHORIZED, text);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

async fn login(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(password) = &app.admin_password else {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Login is disabled: set DEMO_ADMIN_PASSWORD",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    match given.as_deref().and_then(|s| s.split_once(':')) {
        Some((user, pass)) if user == app.admin_user && pass == password => {
            let token = jwt::sign(&app.jwt_secret, user, "admin", 3600);
            axum::Json(json!({ "access_token": token, "token_type": "bearer", "expires_in": 3600 }))
                .into_response()
        }
        Some(_) => unauthorized("Invalid credentials"),
        None => unauthorized("Not authenticated"),
    }
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = app.authenticate(&headers) {
        return *r;
    }
    app.metrics.lists.fetch_add(1, Ordering::Relaxed);
    let files: Vec<Value> = app
        .blobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(Blob::to_json)
        .collect();
    axum::Json(json!({ "count": files.len(), "files": files })).into_response()
}

impl Blob {
    fn to_json(&self) -> Value {
        json!({ "blob_id": self.id, "filename": self.filename, "size": self.size, "sha256": self.sha256 })
    }
}

async fn upload(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let claims = match app.authenticate(&headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return detail(
                    StatusCode::BAD_REQUEST,
                    "No file: send a multipart field named `file`",
                );
            }
            Err(e) => return detail(StatusCode::BAD_REQUEST, &format!("Bad multipart body: {e}")),
        };
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("upload.bin").to_string();
        let n = app.next_id.fetch_add(1, Ordering::Relaxed);
        let id =
            hex::encode(&Sha256::digest(format!("{n}-{:?}", std::time::SystemTime::now()))[..8]);
        let path = app.data_dir.join(&id);
        let mut file = match tokio::fs::File::create(&path).await {
            Ok(f) => f,
            Err(e) => {
                return detail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("Cannot store the blob: {e}"),
                );
            }
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    if let Err(e) = file.write_all(&chunk).await {
                        return detail(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!("Cannot store the blob: {e}"),
                        );
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return detail(StatusCode::BAD_REQUEST, &format!("Upload interrupted: {e}"));
                }
            }
        }
        let _ = file.flush().await;
        let blob = Blob {
            id: id.clone(),
            filename,
            size,
            sha256: hex::encode(hasher.finalize()),
        };
        app.metrics.uploads.fetch_add(1, Ordering::Relaxed);
        app.audit(json!({
            "ts": now_rfc3339(), "event": "blob_upload", "actor": claims.sub, "role": claims.role,
            "blob_id": id, "ip": peer.ip().to_string(), "status": "success", "bytes": size,
        }));
        let body = blob.to_json();
        app.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(blob);
        return (StatusCode::CREATED, axum::Json(body)).into_response();
    }
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a blob of `size` bytes: `Ok(None)` for a
/// header to ignore (absent, malformed, several ranges), `Err` when unsatisfiable.
fn parse_range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(size.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => {
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= size {
        return Err(());
    }
    Ok(Some(range))
}

async fn stream(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let claims = match app.authenticate(&headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(blob) = app.blob(&id) else {
        return detail(StatusCode::NOT_FOUND, "Blob not found");
    };
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = if app.faults.ignore_range {
        Ok(None)
    } else {
        parse_range(range_header, blob.size)
    };
    let (status, start, end) = match range {
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Ok(None) => (StatusCode::OK, 0, blob.size.saturating_sub(1)),
        Err(()) => {
            let mut r = detail(StatusCode::RANGE_NOT_SATISFIABLE, "Range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", blob.size)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let len = if blob.size == 0 { 0 } else { end - start + 1 };
    let mut file = match tokio::fs::File::open(app.data_dir.join(&blob.id)).await {
        Ok(f) => f,
        Err(e) => {
            return detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Blob unreadable: {e}"),
            );
        }
    };
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "Blob unreadable");
    }
    // The corrupt-byte fault flips the blob's middle byte wherever a download covers it.
    let flip_at = app.faults.corrupt_byte.then_some(blob.size / 2);
    let mut pos = start;
    let body = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024).map(
        move |chunk: std::io::Result<Bytes>| {
            let chunk = chunk?;
            let at = pos;
            pos += chunk.len() as u64;
            match flip_at {
                Some(f) if (at..pos).contains(&f) => {
                    let mut v = chunk.to_vec();
                    v[(f - at) as usize] ^= 0xff;
                    Ok::<_, std::io::Error>(Bytes::from(v))
                }
                _ => Ok(chunk),
            }
        },
    );
    app.metrics.downloads.fetch_add(1, Ordering::Relaxed);
    app.metrics.download_bytes.fetch_add(len, Ordering::Relaxed);
    app.audit(json!({
        "ts": now_rfc3339(), "event": "blob_download", "actor": claims.sub, "blob_id": blob.id,
        "ip": peer.ip().to_string(), "status": "success", "bytes": len,
        "range": range_header,
    }));
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // The ignore-range fault still advertises ranges: the bug is in honoring them.
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", blob.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", blob.sha256)) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// The seed 002 endpoints' error answer, `{"error": …}`.
fn api_error(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "error": text }))).into_response()
}

fn api_unauthorized() -> Response {
    let mut r = api_error(StatusCode::UNAUTHORIZED, "unauthorized");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The string fields `names` of a request body that must be a JSON object shaped like
/// `shape`: each `None` when absent or null; a 400 answer (413 when too large) otherwise.
fn json_strings<const N: usize>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
    names: [&str; N],
) -> Result<[Option<String>; N], Box<Response>> {
    let bad = |text: String| Box::new(api_error(StatusCode::BAD_REQUEST, &text));
    let body = body.map_err(|e| {
        Box::new(api_error(
            e.status(),
            &format!("cannot read the body: {}", e.body_text()),
        ))
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!("the body is empty; expected {shape}")));
    }
    let mut fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return Err(bad(format!("expected a JSON object {shape}"))),
        Err(e) => return Err(bad(format!("the body is not JSON ({e}); expected {shape}"))),
    };
    let mut out = [const { None }; N];
    for (slot, name) in out.iter_mut().zip(names) {
        match fields.remove(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => *slot = Some(s),
            Some(_) => return Err(bad(format!("`{name}` must be a string; expected {shape}"))),
        }
    }
    Ok(out)
}

impl App {
    /// The user a request's session token (bearer or `sid` cookie) belongs to.
    fn session_user(&self, headers: &HeaderMap) -> Option<u32> {
        users::request_token(headers).and_then(|t| self.sessions.user(t))
    }
}

/// `POST /api/session`: log a demo user in.
async fn session(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    const SHAPE: &str = r#"{"email": "...", "password": "..."}"#;
    let user = match json_strings(body, SHAPE, ["email", "password"]) {
        Ok([Some(email), Some(password)]) => users::check_credentials(&email, &password),
        Ok(_) => None,
        Err(r) => return *r,
    };
    let Some(n) = user else {
        return api_error(StatusCode::UNAUTHORIZED, "invalid credentials");
    };
    let token = app.sessions.login(n);
    let cookie = HeaderValue::from_str(&format!("sid={token}; Path=/; HttpOnly"));
    let mut r = axum::Json(json!({ "token": token, "user_id": users::user_id(n) })).into_response();
    if let Ok(v) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /api/threads`: the caller's threads (with `leak-threads`, sometimes someone else's).
async fn list_threads(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(n) = app.session_user(&headers) else {
        return api_unauthorized();
    };
    let build = || {
        let threads: Vec<Value> = app
            .threads
            .list(n)
            .iter()
            .map(users::Thread::to_json)
            .collect();
        json!({ "user_id": users::user_id(n), "email": users::email(n), "threads": threads })
    };
    let body = if app.faults.leak_threads {
        app.last_threads.answer(build)
    } else {
        build()
    };
    axum::Json(body).into_response()
}

/// The longest thread title, in characters.
const TITLE_MAX: usize = 200;

/// `POST /api/threads`: a new thread of the caller's.
async fn create_thread(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const SHAPE: &str = r#"{"title": "..."}"#;
    let Some(n) = app.session_user(&headers) else {
        return api_unauthorized();
    };
    let title = match json_strings(body, SHAPE, ["title"]) {
        Ok([Some(t)]) if !t.trim().is_empty() => t.trim().to_string(),
        Ok(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("`title` is missing or empty; expected {SHAPE}"),
            );
        }
        Err(r) => return *r,
    };
    if title.chars().count() > TITLE_MAX {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("`title` is longer than {TITLE_MAX} characters"),
        );
    }
    let thread = app.threads.create(n, &title);
    (StatusCode::CREATED, axum::Json(thread.to_json())).into_response()
}

/// `GET /api/threads/{id}`: one of the caller's threads; anyone else's is not found.
async fn get_thread(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(n) = app.session_user(&headers) else {
        return api_unauthorized();
    };
    match app.threads.get(n, &id) {
        Some(thread) => axum::Json(thread.to_json()).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn config(State(app): State<Arc<App>>) -> axum::Json<Value> {
    axum::Json(json!({
        "service": app.service,
        "environment": app.environment,
        "dry_run": app.dry_run,
        "alpaca_paper": app.alpaca_paper,
    }))
}

/// Asks each dependency for `/health` with a plain HTTP/1.1 GET.
async fn orchestration(State(app): State<Arc<App>>) -> Response {
    let mut deps = Vec::new();
    let mut all_ok = true;
    for (name, url) in &app.dependencies {
        let status = probe(&format!("{url}/health")).await;
        let healthy = status == Some(200);
        all_ok &= healthy;
        deps.push(json!({ "name": name, "url": url, "healthy": healthy, "status": status }));
    }
    let code = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(
            json!({ "status": if all_ok { "ok" } else { "degraded" }, "dependencies": deps }),
        ),
    )
        .into_response()
}

async fn probe(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h.to_string(), format!("/{p}")))
        .unwrap_or((rest.to_string(), "/".into()));
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(&host).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Faults, Histogram, flap_healthy, millis, parse_range, switched_on};

    #[test]
    fn faults() {
        let f = Faults::parse("leak-threads, slow").unwrap();
        assert!(f.leak_threads && f.slow && !f.wrong_version);
        let f = Faults::parse("").unwrap();
        assert!(!f.leak_threads && !f.slow);
        let e = Faults::parse("slow,leak").unwrap_err();
        assert!(
            e.contains("`leak`") && e.contains("leak-threads, slow"),
            "{e}"
        );
        let f = Faults::parse("flap,errors-after,metrics-stop-after").unwrap();
        assert!(f.flap && f.errors_after && f.metrics_stop_after && !f.slow);
        let e = Faults::parse("errors").unwrap_err();
        assert!(
            e.contains("slow, flap, errors-after, metrics-stop-after"),
            "{e}"
        );
    }

    #[test]
    fn millisecond_settings() {
        let ms = Duration::from_millis;
        assert_eq!(millis("DEMO_FLAP_MS", None, 1000), Ok(ms(1000)));
        assert_eq!(millis("DEMO_FLAP_MS", Some(" 250 "), 1000), Ok(ms(250)));
        assert_eq!(millis("DEMO_FLAP_MS", Some("0"), 1000), Ok(ms(0)));
        assert_eq!(
            millis("DEMO_ERRORS_AFTER_MS", Some("1.5s"), 3000),
            Err("DEMO_ERRORS_AFTER_MS must be a whole number of milliseconds".to_string())
        );
    }

    #[test]
    fn flap_starts_healthy_and_alternates_every_period() {
        let ms = Duration::from_millis;
        let period = ms(1000);
        for (at, healthy) in [
            (0, true),
            (999, true),
            (1000, false),
            (1999, false),
            (2000, true),
            (3500, false),
            (10_000, true),
        ] {
            assert_eq!(flap_healthy(ms(at), period), healthy, "at {at} ms");
        }
        // A tiny period still alternates, and a zero one (refused at start) does not panic.
        assert!(flap_healthy(ms(0), ms(1)) && !flap_healthy(ms(1), ms(1)));
        assert!(!flap_healthy(ms(1), ms(0)));
    }

    #[test]
    fn scheduled_faults_switch_on_at_their_time_and_stay_on() {
        let ms = Duration::from_millis;
        assert!(!switched_on(ms(0), Some(ms(3000))));
        assert!(!switched_on(ms(2999), Some(ms(3000))));
        assert!(switched_on(ms(3000), Some(ms(3000))));
        assert!(switched_on(ms(60_000), Some(ms(3000))));
        assert!(switched_on(ms(0), Some(ms(0))));
        // Without the fault, never.
        assert!(!switched_on(ms(60_000), None));
    }

    #[test]
    fn histogram_lines_are_cumulative_with_inf_sum_and_count() {
        let mut h = Histogram::default();
        for s in [0.001, 0.005, 0.02, 0.3, 7.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render("d", "status=\"2xx\"", &mut out);
        let want = [
            r#"d_bucket{status="2xx",le="0.005"} 2"#,
            r#"d_bucket{status="2xx",le="0.01"} 2"#,
            r#"d_bucket{status="2xx",le="0.025"} 3"#,
            r#"d_bucket{status="2xx",le="0.05"} 3"#,
            r#"d_bucket{status="2xx",le="0.1"} 3"#,
            r#"d_bucket{status="2xx",le="0.25"} 3"#,
            r#"d_bucket{status="2xx",le="0.5"} 4"#,
            r#"d_bucket{status="2xx",le="1"} 4"#,
            r#"d_bucket{status="2xx",le="2.5"} 4"#,
            r#"d_bucket{status="2xx",le="5"} 4"#,
            r#"d_bucket{status="2xx",le="+Inf"} 5"#,
        ];
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..want.len()], want, "{out}");
        assert_eq!(lines.len(), want.len() + 2, "{out}");
        let sum: f64 = lines[want.len()]
            .strip_prefix(r#"d_sum{status="2xx"} "#)
            .expect(&out)
            .parse()
            .unwrap();
        assert!((sum - 7.326).abs() < 1e-9, "{sum}");
        assert_eq!(lines[want.len() + 1], r#"d_count{status="2xx"} 5"#);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(None, 100), Ok(None));
    }
}
