//! `stagegate serve`: an HTTP API and a web page over the state store, served by the same
//! binary.
//!
//! - `GET /healthz` is the only thing answered without authentication.
//! - Everything else needs a token (`Authorization: Bearer sgt_...`, see [`tokens`]) or a
//!   page session (a cookie set by `POST /login` with a token; `HttpOnly`,
//!   `SameSite=Strict`). A page session's changes need its CSRF token in `X-CSRF-Token`, and
//!   a request from another origin is refused.
//! - Approvals go through the same rules as `stagegate approve`, with the token's subject
//!   as the approver.
//! - `POST /api/webhooks/github` takes GitHub's `push` and `release` events, signed with
//!   `X-Hub-Signature-256` (HMAC-SHA256, compared in constant time), each delivery id once,
//!   and runs what the plan's `triggers` say as a child `stagegate` process.
//! - `GET /api/deployments/{id}/events` streams a run's events (server-sent events); one
//!   poller per deployment feeds every viewer.

mod charts;
pub mod tokens;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::Sha256;
use stagegate_store::{Outcome, Store, Verdict};

use crate::cli::{Cli, ServeArgs, TokenAction};
use crate::context::{CmdResult, Failure, actor, load_plan, open_store, plan_path, state_dir};
use tokens::TokenRecord;

/// The largest request body taken (a GitHub payload is far smaller).
const MAX_BODY: usize = 1 << 20;
/// How many webhook delivery ids are remembered, to refuse a replay.
const DELIVERIES_KEPT: usize = 10_000;

struct App {
    /// The plan file: read again for every approval, so a changed plan is seen.
    plan_file: PathBuf,
    /// The `--state` the server was started with, passed on to the runs it starts.
    state_flag: Option<PathBuf>,
    store: Store,
    tokens_file: PathBuf,
    logs_dir: PathBuf,
    deliveries_file: PathBuf,
    github_secret: Option<String>,
    exe: PathBuf,
    sessions: Mutex<HashMap<String, PageSession>>,
    deliveries: Mutex<VecDeque<String>>,
    feeds: Mutex<HashMap<i64, tokio::sync::broadcast::Sender<Arc<Value>>>>,
    requests: Mutex<BTreeMap<String, u64>>,
}

#[derive(Clone)]
struct PageSession {
    token: TokenRecord,
    csrf: String,
    expires: std::time::Instant,
}

/// Who a request comes from.
struct Caller {
    token: TokenRecord,
    /// A page session (its changes need the CSRF token), not a bearer token.
    page: Option<String>,
}

type Reply = Result<Response, (StatusCode, String)>;

fn err(code: StatusCode, msg: impl Into<String>) -> (StatusCode, String) {
    (code, msg.into())
}

fn json_error((code, msg): (StatusCode, String)) -> Response {
    (code, axum::Json(json!({ "error": msg }))).into_response()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl App {
    fn count(&self, route: &str) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry(route.to_string())
            .or_default() += 1;
    }

    /// The caller, if the request carries a valid token or page session.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, (StatusCode, String)> {
        if let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let token = auth.strip_prefix("Bearer ").unwrap_or("").trim();
            let list = tokens::load(&self.tokens_file)
                .map_err(|f| err(StatusCode::INTERNAL_SERVER_ERROR, f.message))?;
            return match tokens::verify(&list, token) {
                Some(t) => Ok(Caller {
                    token: t.clone(),
                    page: None,
                }),
                None => Err(err(
                    StatusCode::UNAUTHORIZED,
                    "the token is not valid (revoked, mistyped, or from another server)",
                )),
            };
        }
        if let Some(id) = cookie(headers, "sg_session") {
            let mut sessions = self.sessions.lock().unwrap();
            sessions.retain(|_, s| s.expires > std::time::Instant::now());
            if let Some(s) = sessions.get(&id) {
                // A revoked token ends its sessions too.
                let list = tokens::load(&self.tokens_file)
                    .map_err(|f| err(StatusCode::INTERNAL_SERVER_ERROR, f.message))?;
                if list.iter().any(|t| t.sha256 == s.token.sha256) {
                    return Ok(Caller {
                        token: s.token.clone(),
                        page: Some(s.csrf.clone()),
                    });
                }
            }
        }
        Err(err(
            StatusCode::UNAUTHORIZED,
            "log in (POST /login with a token) or send `Authorization: Bearer TOKEN`",
        ))
    }

    /// The caller, allowed `scope`; for a change from the page, with its CSRF token and from
    /// this origin.
    fn allowed(
        &self,
        headers: &HeaderMap,
        scope: &str,
        change: bool,
    ) -> Result<Caller, (StatusCode, String)> {
        let c = self.caller(headers)?;
        if !c.token.allows(scope) {
            return Err(err(
                StatusCode::FORBIDDEN,
                format!(
                    "token `{}` has no `{scope}` scope (it has: {})",
                    c.token.name,
                    c.token.scopes.join(", ")
                ),
            ));
        }
        if change && let Some(csrf) = &c.page {
            same_origin(headers)?;
            let sent = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !tokens::same(sent.as_bytes(), csrf.as_bytes()) {
                return Err(err(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token"));
            }
        }
        Ok(c)
    }
}

/// A request whose `Origin` names another site is refused.
fn same_origin(headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    if bare == host {
        Ok(())
    } else {
        Err(err(
            StatusCode::FORBIDDEN,
            format!("cross-origin request from {origin} refused"),
        ))
    }
}

fn query(raw: &Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub async fn serve(cli: &Cli, args: &ServeArgs) -> CmdResult {
    let plan = load_plan(cli)?;
    let store = open_store(cli, &plan).await?;
    let dir = state_dir(cli, &plan);
    let github_secret = match &args.github_secret_env {
        Some(name) => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                return Err(Failure::invalid(format!(
                    "error: --github-secret-env names `{name}`, which is not set\n  = help: export {name}=... (the secret of the GitHub webhook) before `stagegate serve`"
                )));
            }
        },
        None => None,
    };
    let deliveries_file = dir.join("github-deliveries");
    let seen: VecDeque<String> = std::fs::read_to_string(&deliveries_file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let plan_file = std::path::absolute(plan_path(cli)).unwrap_or_else(|_| plan_path(cli));
    let app = Arc::new(App {
        plan_file,
        state_flag: cli.state.clone(),
        store,
        tokens_file: tokens::file_of(&dir),
        logs_dir: dir.join("logs"),
        deliveries_file,
        github_secret,
        exe: std::env::current_exe().map_err(|e| Failure::internal(format!("error: {e}")))?,
        sessions: Mutex::new(HashMap::new()),
        deliveries: Mutex::new(seen),
        feeds: Mutex::new(HashMap::new()),
        requests: Mutex::new(BTreeMap::new()),
    });
    if tokens::load(&app.tokens_file)?.is_empty() {
        eprintln!(
            "warning: no API tokens yet: nobody can use the server; `stagegate token create NAME --subject WHO --scope read,approve` makes one"
        );
    }
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/metrics", get(metrics))
        .route("/api/me", get(me))
        .route("/api/deployments", get(list))
        .route("/api/deployments/{id}", get(one))
        .route("/api/deployments/{id}/events", get(stream))
        .route("/api/requests", get(requests))
        .route("/api/approve", post(approve))
        .route("/api/reject", post(reject))
        .route("/api/decisions", get(decisions))
        .route("/api/decide", post(decide))
        .route("/api/deploy", post(deploy))
        .route("/api/webhooks/github", post(github))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| {
        Failure::invalid(format!(
            "error: cannot listen on {}: {e}\n  = help: pick another address with --listen, e.g. 127.0.0.1:8470",
            args.listen
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::internal(e.to_string()))?;
    eprintln!("stagegate serve: listening on http://{addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Failure::internal(format!("error: the server stopped: {e}")))?;
    Ok(stagegate_engine::exit::SUCCESS)
}

pub async fn token(cli: &Cli, action: &TokenAction) -> CmdResult {
    let plan = load_plan(cli)?;
    let file = tokens::file_of(&state_dir(cli, &plan));
    match action {
        TokenAction::Create {
            name,
            subject,
            scope,
        } => {
            let scopes: Vec<String> = scope
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if scopes.is_empty() {
                return Err(Failure::invalid(format!(
                    "error: say what the token may do: --scope with one or more of {}",
                    tokens::SCOPES.join(", ")
                )));
            }
            let t = tokens::create(&file, name, subject, &scopes, &actor(None))?;
            eprintln!(
                "token `{name}` for {subject} ({}); it is shown once, here, and kept only as a hash:",
                scopes.join(", ")
            );
            println!("{t}");
        }
        TokenAction::List => {
            let list = tokens::load(&file)?;
            if list.is_empty() {
                println!("no tokens");
            }
            for t in list {
                println!(
                    "{:<20} {:<16} {:<22} created {} by {}",
                    t.name,
                    t.subject,
                    t.scopes.join(","),
                    stagegate_report::format_time_ms(t.created_at),
                    t.created_by
                );
            }
        }
        TokenAction::Revoke { name } => {
            if !tokens::revoke(&file, name)? {
                return Err(Failure::invalid(format!(
                    "error: there is no token `{name}`; `stagegate token list` shows them"
                )));
            }
            println!("revoked token `{name}`; its sessions end with it");
        }
    }
    Ok(stagegate_engine::exit::SUCCESS)
}

async fn page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.count("/");
    let body = if app.caller(&headers).is_ok() {
        include_str!("page.html")
    } else {
        include_str!("login.html")
    };
    let mut r = Html(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn login(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    app.count("/login");
    if let Err(e) = same_origin(&headers) {
        return json_error(e);
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("token").map(String::as_str).unwrap_or("").trim();
    let list = match tokens::load(&app.tokens_file) {
        Ok(l) => l,
        Err(f) => return json_error(err(StatusCode::INTERNAL_SERVER_ERROR, f.message)),
    };
    let Some(t) = tokens::verify(&list, token) else {
        return (
            StatusCode::UNAUTHORIZED,
            Html("<p>That token is not valid. <a href=\"/\">Try again</a></p>"),
        )
            .into_response();
    };
    let (Ok(id), Ok(csrf)) = (tokens::random_hex(24), tokens::random_hex(24)) else {
        return json_error(err(StatusCode::INTERNAL_SERVER_ERROR, "no randomness"));
    };
    app.sessions.lock().unwrap().insert(
        id.clone(),
        PageSession {
            token: t.clone(),
            csrf,
            expires: std::time::Instant::now() + Duration::from_secs(12 * 3600),
        },
    );
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "sg_session={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200"
        ))
        .unwrap(),
    );
    r
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, "sg_session") {
        app.sessions.lock().unwrap().remove(&id);
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sg_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.count("/api/me");
    match app.caller(&headers) {
        Ok(c) => axum::Json(json!({
            "subject": c.token.subject,
            "token": c.token.name,
            "scopes": c.token.scopes,
            "csrf": c.page,
        }))
        .into_response(),
        Err(e) => json_error(e),
    }
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    app.count("/api/deployments");
    let r: Reply = async {
        app.allowed(&headers, "read", false)?;
        let q = query(&q);
        let per = q
            .get("limit")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(50)
            .clamp(1, 500);
        let page = q
            .get("page")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .clamp(0, 10_000);
        let env = q.get("env").filter(|e| !e.is_empty());
        // One more than a page, to know whether another follows.
        let mut rows = app
            .store
            .deployments_page(env.map(String::as_str), per + 1, per * page)
            .await
            .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let more = rows.len() as i64 > per;
        rows.truncate(per as usize);
        Ok(axum::Json(json!({ "deployments": rows, "page": page, "more": more })).into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}

async fn one(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    app.count("/api/deployments/{id}");
    let r: Reply = async {
        app.allowed(&headers, "read", false)?;
        let s = &app.store;
        let ise =
            |e: stagegate_store::StoreError| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        let Some(d) = s.deployment(id).await.map_err(ise)? else {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("there is no deployment #{id}"),
            ));
        };
        let steps = s.steps(id).await.map_err(ise)?;
        let events = s.events(id).await.map_err(ise)?;
        let approvals = s.approvals(id).await.map_err(ise)?;
        // The audit trail as stored (secrets were masked before anything was recorded);
        // `data` is the JSON text the chain hashes, parsed for the page.
        let audit: Vec<Value> = s
            .audit_log_of(id)
            .await
            .map_err(ise)?
            .into_iter()
            .map(|a| {
                json!({
                    "seq": a.seq,
                    "at": a.at,
                    "kind": a.kind,
                    "data": serde_json::from_str::<Value>(&a.data).unwrap_or(Value::Null),
                    "hash": a.hash,
                })
            })
            .collect();
        let charts = charts::of(&steps, &events);
        Ok(axum::Json(json!({
            "deployment": d,
            "steps": steps,
            "events": events,
            "approvals": approvals,
            "audit": audit,
            "charts": charts,
        }))
        .into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}

async fn requests(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.count("/api/requests");
    let r: Reply = async {
        app.allowed(&headers, "read", false)?;
        let plan = app.plan()?;
        let mut out = Vec::new();
        for env in plan.environment_names() {
            let open = crate::promote::describe_open(&app.store, &plan, env)
                .await
                .map_err(|f| err(StatusCode::INTERNAL_SERVER_ERROR, f.message))?;
            if let Some((req, text)) = open {
                let roles = plan
                    .environment(env)
                    .and_then(|e| e.protection.approvals.as_ref())
                    .map(|a| a.from.iter().map(|f| f.value.clone()).collect::<Vec<_>>())
                    .unwrap_or_default();
                out.push(
                    json!({ "environment": env, "request": req, "waits": text, "from": roles }),
                );
            }
        }
        Ok(axum::Json(json!({ "requests": out })).into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}

async fn verdict(app: Arc<App>, headers: HeaderMap, body: Bytes, v: Verdict) -> Response {
    app.count(if v == Verdict::Approved {
        "/api/approve"
    } else {
        "/api/reject"
    });
    let r: Reply = async {
        let c = app.allowed(&headers, "approve", true)?;
        let ask: crate::promote::VerdictAsk = serde_json::from_slice(&body).map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON {{\"env\": ..., \"role\": ..., \"comment\": ...}}: {e}"
                ),
            )
        })?;
        let plan = app.plan()?;
        match crate::promote::record_verdict(&plan, &app.store, &ask, &c.token.subject, v).await {
            Ok(said) => Ok(
                axum::Json(json!({ "ok": true, "said": said, "by": c.token.subject }))
                    .into_response(),
            ),
            Err(f) => {
                let code = match f.code {
                    stagegate_engine::exit::REFUSED => StatusCode::FORBIDDEN,
                    stagegate_engine::exit::INVALID => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                Err(err(
                    code,
                    f.message.trim_start_matches("error: ").to_string(),
                ))
            }
        }
    }
    .await;
    r.unwrap_or_else(json_error)
}

async fn approve(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    verdict(app, headers, body, Verdict::Approved).await
}

async fn reject(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    verdict(app, headers, body, Verdict::Rejected).await
}

/// Deployments whose inconclusive bake waits for a person (`stagegate decide`), newest first.
async fn decisions(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.count("/api/decisions");
    let r: Reply = async {
        app.allowed(&headers, "read", false)?;
        let plan = app.plan()?;
        let internal = |e: String| err(StatusCode::INTERNAL_SERVER_ERROR, e);
        let mut out = Vec::new();
        for env in plan.environment_names() {
            // A new deploy waits for a pending decision, so only the newest few can wait.
            let recent = app
                .store
                .deployments(Some(env), 20)
                .await
                .map_err(|e| internal(e.to_string()))?;
            for d in recent.iter().filter(|d| {
                d.kind == "deploy"
                    && matches!(d.outcome, Outcome::AwaitingDecision | Outcome::Running)
            }) {
                let steps = app.store.steps(d.id).await.map_err(|e| internal(e.to_string()))?;
                let waiting = crate::decide::waiting_steps(&app.store, d, &steps)
                    .await
                    .map_err(|f| internal(f.message))?;
                if waiting.is_empty() {
                    continue;
                }
                let steps: Vec<Value> = waiting
                    .iter()
                    .map(|id| {
                        let row = steps.iter().rev().find(|s| s.step_id == *id);
                        let w = row.map(|r| &r.details["watch"]);
                        json!({
                            "id": id,
                            "name": row.map(|r| r.name.as_str()).unwrap_or(id),
                            "verdict": w.and_then(|w| w["verdict"].as_str()).unwrap_or("inconclusive"),
                            "reason": w.and_then(|w| w["reason"].as_str()).unwrap_or(""),
                        })
                    })
                    .collect();
                out.push(json!({
                    "environment": env,
                    "deployment": d,
                    "waiting": if d.outcome == Outcome::Running { "a running deploy waits (--wait-decision)" } else { "the deploy ended awaiting a decision (exit 7)" },
                    "steps": steps,
                }));
            }
        }
        Ok(axum::Json(json!({ "decisions": out })).into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}

/// A person's decision on an inconclusive bake: `stagegate decide` run as the token's subject,
/// so the rules and the record are the CLI's. Answers when the decision has taken effect (a
/// `fail` on a finished deploy answers after its rollback).
async fn decide(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    app.count("/api/decide");
    let r: Reply = async {
        let c = app.allowed(&headers, "approve", true)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON {{\"deployment\": N, \"pass\": true|false, \"reason\": ...}}: {e}"),
            )
        })?;
        let bad = |m: &str| err(StatusCode::BAD_REQUEST, m.to_string());
        let id = v["deployment"].as_i64().filter(|n| *n > 0).ok_or_else(|| bad("`deployment` must be a deployment number"))?;
        let pass = v["pass"].as_bool().ok_or_else(|| bad("`pass` must be true (the release is good) or false (roll it back)"))?;
        let reason = v["reason"].as_str().unwrap_or("").trim();
        if reason.is_empty() {
            return Err(bad("`reason` is empty: say why, e.g. \"p95 is flat against the baseline\""));
        }
        if reason.chars().count() > 2000 || reason.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(bad("`reason` must be at most 2000 characters of text, without control characters"));
        }
        let mut args = vec![
            "decide".to_string(),
            id.to_string(),
            if pass { "--pass" } else { "--fail" }.to_string(),
            // One argument with `=`: a reason that starts with `-` stays a reason.
            format!("--reason={reason}"),
        ];
        if let Some(step) = v["step"].as_str() {
            args.push(format!("--step={}", arg_value("step", step)?));
        }
        let mut cmd = tokio::process::Command::from(app.command(&c.token.subject, &args));
        cmd.kill_on_drop(true);
        let run = tokio::time::timeout(Duration::from_secs(30 * 60), cmd.output());
        let out = run
            .await
            .map_err(|_| err(StatusCode::GATEWAY_TIMEOUT, "`stagegate decide` took over 30 minutes; `stagegate show` says where it is"))?
            .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start stagegate: {e}")))?;
        let code = out.status.code().unwrap_or(stagegate_engine::exit::INTERNAL);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        use stagegate_engine::exit;
        match code {
            exit::SUCCESS | exit::ROLLED_BACK | exit::ROLLBACK_FAILED => Ok(axum::Json(json!({
                "ok": code != exit::ROLLBACK_FAILED,
                "exit_code": code,
                "by": c.token.subject,
                "said": text.trim(),
            }))
            .into_response()),
            exit::INVALID | exit::LOCKED => Err(err(StatusCode::CONFLICT, text.trim().trim_start_matches("error: ").to_string())),
            _ => Err(err(StatusCode::INTERNAL_SERVER_ERROR, text.trim().to_string())),
        }
    }
    .await;
    r.unwrap_or_else(json_error)
}

/// A value that goes on a child's command line: no option lookalikes, no control bytes.
fn arg_value(what: &str, v: &str) -> Result<String, (StatusCode, String)> {
    let ok = !v.is_empty()
        && v.len() <= 200
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+/@:".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} `{}` is not a plain name (letters, digits and ._-+/@:)",
                v.chars().take(60).collect::<String>()
            ),
        ))
    }
}

impl App {
    /// The plan as it is on disk now (it may have changed since the server started).
    fn plan(&self) -> Result<stagegate_plan::Plan, (StatusCode, String)> {
        stagegate_plan::load_file(&self.plan_file)
            .map(|(plan, _)| plan)
            .map_err(|_| {
                err(
                    StatusCode::CONFLICT,
                    "the plan does not validate: run `stagegate validate`",
                )
            })
    }

    /// `stagegate ARGS` on this server's plan and store, as `who`, without a terminal.
    fn command(&self, who: &str, args: &[String]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.exe);
        c.arg("-f").arg(&self.plan_file);
        if let Some(s) = &self.state_flag {
            c.arg("--state").arg(s);
        }
        c.arg("--color").arg("never");
        c.args(args)
            .env("STAGEGATE_ACTOR", who)
            .env("CI", "true")
            .stdin(std::process::Stdio::null());
        c
    }

    /// Starts `stagegate ARGS` as a child, as `who`, its output in a log file; returns its pid
    /// and log.
    fn start_run(
        &self,
        who: &str,
        args: &[String],
        tag: &str,
    ) -> Result<(u32, String), (StatusCode, String)> {
        let _ = std::fs::create_dir_all(&self.logs_dir);
        let log = self.logs_dir.join(format!("serve-{tag}.log"));
        let out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&log)
        }
        .map_err(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", log.display()),
            )
        })?;
        let mut c = self.command(who, args);
        c.stdout(
            out.try_clone()
                .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        )
        .stderr(out);
        let child = c.spawn().map_err(|e| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start stagegate: {e}"),
            )
        })?;
        let pid = child.id();
        // Reap it when it ends, so no zombie is left.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok((pid, log.display().to_string()))
    }
}

async fn deploy(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    app.count("/api/deploy");
    let r: Reply = async {
        let c = app.allowed(&headers, "deploy", true)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON: {e}"),
            )
        })?;
        let env = arg_value("env", v["env"].as_str().unwrap_or(""))?;
        let mut args = match v["from"].as_str() {
            Some(f) => vec!["promote".to_string(), arg_value("from", f)?, env.clone()],
            None => vec!["deploy".to_string(), env.clone()],
        };
        if let Some(ver) = v["version"].as_str() {
            args.push(format!("--release-version={}", arg_value("version", ver)?));
        }
        if let Some(sha) = v["sha"].as_str() {
            args.push(format!("--release-sha={}", arg_value("sha", sha)?));
        }
        let tag = format!(
            "{}-{}",
            stagegate_store::now_millis(),
            tokens::random_hex(4).unwrap_or_default()
        );
        let (pid, _) = app.start_run(&c.token.subject, &args, &tag)?;
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "started": args, "pid": pid, "as": c.token.subject })),
        )
            .into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}

/// Whether `sig` (`sha256=HEX`, GitHub's `X-Hub-Signature-256`) is the HMAC-SHA256 of `body`
/// under `secret`; compared in constant time.
fn signed(secret: &[u8], body: &[u8], sig: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Some(bytes) = sig
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

async fn github(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    app.count("/api/webhooks/github");
    let r: Reply = async {
        let Some(secret) = &app.github_secret else {
            return Err(err(
                StatusCode::NOT_FOUND,
                "the GitHub webhook is off: start `stagegate serve --github-secret-env NAME`",
            ));
        };
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        if !signed(secret.as_bytes(), &body, &h("x-hub-signature-256")) {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 is missing or does not match the body",
            ));
        }
        let delivery = h("x-github-delivery");
        if delivery.is_empty() || delivery.len() > 100 {
            return Err(err(StatusCode::BAD_REQUEST, "X-GitHub-Delivery is missing"));
        }
        {
            let mut seen = app.deliveries.lock().unwrap();
            if seen.iter().any(|d| *d == delivery) {
                return Err(err(
                    StatusCode::CONFLICT,
                    format!("delivery {delivery} was handled already (a replay)"),
                ));
            }
            seen.push_back(delivery.clone());
            while seen.len() > DELIVERIES_KEPT {
                seen.pop_front();
            }
            let text: String = seen.iter().map(|d| format!("{d}\n")).collect();
            let _ = std::fs::write(&app.deliveries_file, text);
        }
        let event = h("x-github-event");
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        })?;
        let sender = v["sender"]["login"].as_str().unwrap_or("unknown");
        let who = format!(
            "github:{}",
            arg_value("sender", sender).unwrap_or_else(|_| "unknown".into())
        );
        let (kind, git_ref, sha) = match event.as_str() {
            "ping" => return Ok(axum::Json(json!({ "pong": true })).into_response()),
            "push" => {
                let r = v["ref"].as_str().unwrap_or("");
                let Some(branch) = r.strip_prefix("refs/heads/") else {
                    return Ok(
                        axum::Json(json!({ "runs": [], "note": "not a branch push" }))
                            .into_response(),
                    );
                };
                (
                    stagegate_plan::trigger::TriggerEvent::Push,
                    branch.to_string(),
                    v["after"].as_str().map(str::to_string),
                )
            }
            "release" => {
                if v["action"] != "published" {
                    return Ok(axum::Json(
                        json!({ "runs": [], "note": "only published releases run" }),
                    )
                    .into_response());
                }
                (
                    stagegate_plan::trigger::TriggerEvent::Release,
                    v["release"]["tag_name"].as_str().unwrap_or("").to_string(),
                    None,
                )
            }
            other => {
                return Ok(axum::Json(
                    json!({ "runs": [], "note": format!("event `{other}` runs nothing") }),
                )
                .into_response());
            }
        };
        let git_ref = arg_value("ref", &git_ref)?;
        let plan = app.plan()?;
        let mut runs = Vec::new();
        for (i, t) in plan.triggers.iter().enumerate() {
            if !t.matches(kind, &git_ref) {
                continue;
            }
            let mut args = match &t.action {
                stagegate_plan::trigger::TriggerAction::Deploy(e) => {
                    vec!["deploy".to_string(), e.clone()]
                }
                stagegate_plan::trigger::TriggerAction::Promote { from, to } => {
                    vec!["promote".to_string(), from.clone(), to.clone()]
                }
            };
            if args[0] == "deploy" {
                match (&kind, &sha) {
                    (stagegate_plan::trigger::TriggerEvent::Push, Some(sha)) => {
                        let sha = arg_value("sha", sha)?;
                        args.push(format!("--release-version={}", &sha[..sha.len().min(7)]));
                        args.push(format!("--release-sha={sha}"));
                    }
                    _ => args.push(format!("--release-version={git_ref}")),
                }
            }
            let tag = format!("github-{}-{i}", arg_value("delivery", &delivery)?);
            let (pid, _) = app.start_run(&who, &args, &tag)?;
            runs.push(json!({ "trigger": i + 1, "command": args, "pid": pid }));
        }
        let code = if runs.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        Ok((code, axum::Json(json!({ "runs": runs, "as": who }))).into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}

/// The live feed of deployment `id`: one poller of the store for every viewer.
fn feed(app: &Arc<App>, id: i64) -> tokio::sync::broadcast::Receiver<Arc<Value>> {
    let mut feeds = app.feeds.lock().unwrap();
    if let Some(tx) = feeds.get(&id) {
        return tx.subscribe();
    }
    let (tx, rx) = tokio::sync::broadcast::channel(1024);
    feeds.insert(id, tx.clone());
    let app = app.clone();
    tokio::spawn(async move {
        let mut last = 0i64;
        loop {
            if let Ok(events) = app.store.events(id).await {
                let fresh: Vec<_> = events.into_iter().filter(|e| e.seq > last).collect();
                for e in fresh {
                    last = e.seq;
                    let _ = tx.send(Arc::new(serde_json::to_value(&e).unwrap_or_default()));
                }
            }
            let done = match app.store.deployment(id).await {
                Ok(Some(d)) => d.outcome != Outcome::Running,
                _ => true,
            };
            if done || tx.receiver_count() == 0 {
                // One last word so viewers know the run ended.
                let _ = tx.send(Arc::new(json!({ "end": true })));
                app.feeds.lock().unwrap().remove(&id);
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    rx
}

async fn stream(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    app.count("/api/deployments/{id}/events");
    if let Err(e) = app.allowed(&headers, "read", false) {
        return json_error(e);
    }
    match app.store.deployment(id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return json_error(err(
                StatusCode::NOT_FOUND,
                format!("there is no deployment #{id}"),
            ));
        }
        Err(e) => return json_error(err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
    let rx = feed(&app, id);
    // What happened before this viewer came, then what comes.
    let backlog = app.store.events(id).await.unwrap_or_default();
    let last = backlog.last().map_or(0, |e| e.seq);
    let backlog: VecDeque<Value> = backlog
        .into_iter()
        .map(|e| serde_json::to_value(&e).unwrap_or_default())
        .collect();
    let s = futures_util::stream::unfold(
        (backlog, rx, last, false),
        |(mut backlog, mut rx, mut last, ended)| async move {
            if ended {
                return None;
            }
            if let Some(v) = backlog.pop_front() {
                let ev = SseEvent::default().event("event").data(v.to_string());
                return Some((
                    Ok::<_, std::convert::Infallible>(ev),
                    (backlog, rx, last, false),
                ));
            }
            loop {
                match rx.recv().await {
                    Ok(v) if v["end"] == true => {
                        return Some((
                            Ok(SseEvent::default().event("end").data("{}")),
                            (backlog, rx, last, true),
                        ));
                    }
                    Ok(v) => {
                        let seq = v["seq"].as_i64().unwrap_or(0);
                        if seq <= last {
                            continue;
                        }
                        last = seq;
                        return Some((
                            Ok(SseEvent::default().event("event").data(v.to_string())),
                            (backlog, rx, last, false),
                        ));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => {
                        return Some((
                            Ok(SseEvent::default().event("end").data("{}")),
                            (backlog, rx, last, true),
                        ));
                    }
                }
            }
        },
    );
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.count("/metrics");
    let r: Reply = async {
        app.allowed(&headers, "read", false)?;
        let totals = app.store.deployment_totals().await.map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let mut out = String::new();
        out.push_str("# HELP stagegate_deployments_total Deployments recorded, by environment, kind and outcome.\n# TYPE stagegate_deployments_total gauge\n");
        for t in &totals {
            out.push_str(&format!("stagegate_deployments_total{{environment=\"{}\",kind=\"{}\",outcome=\"{}\"}} {}\n", esc(&t.environment), esc(&t.kind), esc(&t.outcome), t.count));
        }
        out.push_str("# HELP stagegate_deployment_seconds_total Time deployments took, by environment, kind and outcome.\n# TYPE stagegate_deployment_seconds_total gauge\n");
        for t in &totals {
            out.push_str(&format!("stagegate_deployment_seconds_total{{environment=\"{}\",kind=\"{}\",outcome=\"{}\"}} {:.3}\n", esc(&t.environment), esc(&t.kind), esc(&t.outcome), t.seconds_ms as f64 / 1000.0));
        }
        let steps = app.store.step_durations().await.map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        out.push_str("# HELP stagegate_step_duration_seconds How long finished steps took, by environment, kind, phase and status.\n# TYPE stagegate_step_duration_seconds histogram\n");
        for d in &steps {
            let labels = format!("environment=\"{}\",kind=\"{}\",phase=\"{}\",status=\"{}\"", esc(&d.environment), esc(&d.kind), esc(&d.phase), esc(&d.status));
            for (le, n) in stagegate_store::STEP_DURATION_BUCKETS_S.iter().zip(d.buckets) {
                out.push_str(&format!("stagegate_step_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"));
            }
            out.push_str(&format!("stagegate_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n", d.count));
            out.push_str(&format!("stagegate_step_duration_seconds_sum{{{labels}}} {:.3}\n", d.sum_ms as f64 / 1000.0));
            out.push_str(&format!("stagegate_step_duration_seconds_count{{{labels}}} {}\n", d.count));
        }
        out.push_str("# HELP stagegate_http_requests_total Requests this server answered, by route.\n# TYPE stagegate_http_requests_total counter\n");
        for (route, n) in app.requests.lock().unwrap().iter() {
            out.push_str(&format!("stagegate_http_requests_total{{route=\"{}\"}} {n}\n", esc(route)));
        }
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
    }
    .await;
    r.unwrap_or_else(json_error)
}
