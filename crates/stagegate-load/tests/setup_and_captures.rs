//! Setup requests and captures against the loopback server's token and item routes. The
//! server keeps what it saw (logins per user, tokens issued and accepted, items created and
//! fetched), so the counts asserted here are the server's as well as the report's.

mod server;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use stagegate_load::{
    Identities, Identity, JsonField, LoadProfile, LoadReport, LoadTest, RequestSpec,
    ResponseCapture, ResponseView, Scenario, StatusIn, Stop, Threshold, Verdict, split_url,
};
use tokio_util::sync::CancellationToken;

use server::{Behaviour, TestServer};

/// Captures the same value whatever the response.
struct Constant(&'static str, &'static str);

impl ResponseCapture for Constant {
    fn var(&self) -> &str {
        self.0
    }

    fn needs_body(&self) -> bool {
        false
    }

    fn capture(&self, _user: &Identity, _r: &ResponseView<'_>) -> Result<String, String> {
        Ok(self.1.to_string())
    }
}

fn names(n: usize) -> Identities {
    let mut csv = String::from("name\n");
    for i in 1..=n {
        csv.push_str(&format!("user-{i}\n"));
    }
    Identities::from_csv(&csv).unwrap()
}

fn ok() -> Arc<StatusIn> {
    Arc::new(StatusIn::new(vec![200]))
}

/// `POST /auth/login` as the user named in the identity, capturing `token`.
fn login() -> RequestSpec {
    RequestSpec::new("login", Method::POST, "/auth/login")
        .unwrap()
        .body(r#"{"user":"${{ vu.name }}"}"#)
        .unwrap()
        .check(ok())
        .capture(Arc::new(JsonField::new("token", "token")))
}

/// `GET /auth/me` with the captured token; the server answers 401 unless the token was
/// issued to the caller.
fn me() -> RequestSpec {
    RequestSpec::new("me", Method::GET, "/auth/me")
        .unwrap()
        .header_line("X-User: ${{ vu.name }}")
        .unwrap()
        .header_line("Authorization: Bearer ${{ vu.token }}")
        .unwrap()
        .check(ok())
}

fn scenario(s: &TestServer, requests: Vec<RequestSpec>, setup: Vec<RequestSpec>) -> Scenario {
    Scenario {
        origin: split_url(&s.url("/")).unwrap().0,
        requests,
        setup,
    }
}

fn closed(scenario: Scenario, vus: usize, iterations: u64) -> LoadTest {
    LoadTest::new(
        scenario,
        LoadProfile::closed(vus, Stop::Requests(iterations)),
    )
}

async fn run(t: LoadTest) -> LoadReport {
    t.run(CancellationToken::new(), |_| {}).await.expect("runs")
}

fn named<'a>(r: &'a LoadReport, name: &str) -> &'a stagegate_load::Summary {
    r.summary_for(Some(name))
        .unwrap_or_else(|| panic!("no summary for `{name}`: {:?}", r.requests))
}

#[tokio::test]
async fn a_setup_login_gives_each_user_its_own_token() {
    let s = server::start(Behaviour::default());
    let mut t = closed(scenario(&s, vec![me()], vec![login()]), 4, 200);
    t.identities = Some(names(4));
    let r = run(t).await;
    assert_eq!(r.summary.failed, 0, "{:?}", r.summary.error_examples);
    assert_eq!(
        r.summary.requests, 204,
        "200 iterations and one login per user"
    );
    assert_eq!(r.requests.len(), 2);
    assert_eq!(
        (r.requests[0].name.as_str(), r.requests[0].setup),
        ("me", false)
    );
    assert_eq!(
        (r.requests[1].name.as_str(), r.requests[1].setup),
        ("login", true)
    );
    assert_eq!(named(&r, "me").requests, 200);
    assert_eq!(named(&r, "login").requests, 4);
    assert_eq!(named(&r, "login").checks_passed, 4);
    for i in 1..=4 {
        assert_eq!(s.logins(&format!("user-{i}")), 1, "user-{i} logged in once");
    }
    let l = &s.ledger;
    assert_eq!(l.authorized.load(Ordering::SeqCst), 200);
    assert_eq!(l.refused.load(Ordering::SeqCst), 0);
    assert_eq!(
        l.tokens_used.lock().unwrap().len(),
        4,
        "every user sent the token it was given, and only that one"
    );
    assert_eq!(s.hits(), 204);
}

#[tokio::test]
async fn a_failed_capture_is_an_assertion_error_and_ends_the_iteration() {
    let s = server::start(Behaviour::default());
    let requests = vec![
        RequestSpec::new("who", Method::GET, "/me")
            .unwrap()
            .capture(Arc::new(JsonField::new("order", "order_id"))),
        RequestSpec::new("order", Method::GET, "/items/${{ vu.order }}").unwrap(),
    ];
    // No identities: the variable comes from the capture only.
    let r = run(closed(scenario(&s, requests, Vec::new()), 2, 50)).await;
    assert_eq!(r.summary.requests, 50);
    assert_eq!(r.summary.failed, 50);
    assert_eq!(r.summary.errors.assertion, 50);
    assert_eq!(
        r.summary
            .error_examples
            .get("assertion")
            .map(String::as_str),
        Some("capture `order`: the body has no field `order_id`")
    );
    assert_eq!(r.summary.checks_failed, 0, "a capture is not a check");
    assert_eq!(r.summary.check_example, None);
    assert_eq!(named(&r, "who").errors.assertion, 50);
    assert_eq!(named(&r, "order").requests, 0);
    assert_eq!(s.hits_on("/me"), 50, "every iteration started normally");
    assert_eq!(
        s.hits_on("/items/"),
        0,
        "no iteration went past the failed capture"
    );
    assert_eq!(s.hits(), 50);
}

#[tokio::test]
async fn a_request_whose_captures_cannot_run_ends_the_iteration() {
    let s = server::start(Behaviour::default());
    let capture = || Arc::new(JsonField::new("id", "id"));
    let next = || RequestSpec::new("next", Method::GET, "/items/${{ vu.id }}").unwrap();
    // A failed check: the capture does not run, the check's message is the example.
    let requests = vec![
        RequestSpec::new("gone", Method::GET, "/status/404")
            .unwrap()
            .check(ok())
            .capture(capture()),
        next(),
    ];
    let r = run(closed(scenario(&s, requests, Vec::new()), 1, 10)).await;
    assert_eq!(r.summary.requests, 10);
    assert_eq!(r.summary.errors.assertion, 10);
    assert_eq!(r.summary.checks_failed, 10);
    let example = r.summary.error_examples["assertion"].as_str();
    assert!(
        example.starts_with("status in [200]: expected"),
        "{example}"
    );
    // A 5xx.
    let requests = vec![
        RequestSpec::new("broken", Method::GET, "/status/503")
            .unwrap()
            .capture(capture()),
        next(),
    ];
    let r = run(closed(scenario(&s, requests, Vec::new()), 1, 10)).await;
    assert_eq!(r.summary.requests, 10);
    assert_eq!(r.summary.errors.status_5xx, 10);
    assert_eq!(r.summary.errors.assertion, 0);
    assert_eq!(s.hits_on("/items/"), 0);
    assert_eq!(s.hits(), 20);
}

#[tokio::test]
async fn a_captured_value_that_cannot_be_sent_is_a_failed_capture() {
    let s = server::start(Behaviour::default());
    let requests = vec![
        RequestSpec::new("first", Method::GET, "/")
            .unwrap()
            .capture(Arc::new(Constant("token", "a\nb"))),
        RequestSpec::new("second", Method::GET, "/")
            .unwrap()
            .header_line("Authorization: Bearer ${{ vu.token }}")
            .unwrap(),
    ];
    let r = run(closed(scenario(&s, requests, Vec::new()), 1, 5)).await;
    assert_eq!(r.summary.errors.assertion, 5);
    assert_eq!(
        r.summary.error_examples["assertion"],
        "capture `token`: the value cannot be sent: request `second`: header `authorization` has a value that is not allowed in a header"
    );
    assert_eq!(s.hits(), 5, "the second request was never sent");
}

#[tokio::test]
async fn a_failed_setup_is_counted_and_tried_again_at_the_next_iteration() {
    let s = server::start(Behaviour {
        failing_logins: vec!["user-2".into()],
        login_failures: 2,
        ..Default::default()
    });
    let mut t = closed(scenario(&s, vec![me()], vec![login()]), 2, 100);
    t.identities = Some(names(2));
    let r = run(t).await;
    assert_eq!(s.logins("user-1"), 1);
    assert_eq!(
        s.logins("user-2"),
        3,
        "two failed logins, then one that worked"
    );
    let login = named(&r, "login");
    assert_eq!(login.requests, 4);
    assert_eq!(login.failed, 2);
    assert_eq!(login.errors.status_5xx, 2);
    assert_eq!(
        login.error_examples.get("5xx").map(String::as_str),
        Some("status 500 from `login`")
    );
    // The two iterations whose setup failed sent nothing else.
    let me = named(&r, "me");
    assert_eq!(me.requests, 98);
    assert_eq!(me.failed, 0, "{:?}", me.error_examples);
    assert_eq!(r.summary.requests, 102);
    assert_eq!(r.summary.failed, 2);
    assert_eq!(s.ledger.authorized.load(Ordering::SeqCst), 98);
    assert_eq!(s.ledger.refused.load(Ordering::SeqCst), 0);
    assert_eq!(s.hits(), 102);
}

#[tokio::test]
async fn setup_requests_have_their_own_summary_and_thresholds() {
    let s = server::start(Behaviour {
        login_delay: Duration::from_millis(30),
        ..Default::default()
    });
    let mut t = closed(scenario(&s, vec![me()], vec![login()]), 2, 20);
    t.identities = Some(names(2));
    let r = run(t).await;
    assert_eq!(r.summary.failed, 0, "{:?}", r.summary.error_examples);
    let login = named(&r, "login");
    assert_eq!(login.requests, 2);
    assert!(login.latency.p95_ms >= 30.0, "{:?}", login.latency);
    let judge = |text: &str| Threshold::parse(text).unwrap().evaluate(&r, None);
    // A loose bound: it judges the setup request's own figures, not the machine's speed.
    assert_eq!(judge("p95[login] < 10s").verdict, Verdict::Pass);
    assert_eq!(judge("p95[login] < 20ms").verdict, Verdict::Fail);
    assert_eq!(judge("requests[login] == 2").verdict, Verdict::Pass);
    assert_eq!(judge("requests[me] == 20").verdict, Verdict::Pass);
    let missing = judge("p95[logout] < 1s");
    assert_eq!(missing.verdict, Verdict::NoData);
    assert!(
        missing.message.contains("it has: me, login"),
        "{}",
        missing.message
    );
    let text = r.to_text();
    assert!(text.contains("  login (setup): 2 requests"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["requests"][1]["setup"], true);
    assert!(json["requests"][0].get("setup").is_none());
}

#[tokio::test]
async fn a_value_captured_in_an_iteration_is_used_by_its_next_request() {
    let s = server::start(Behaviour::default());
    let requests = vec![
        RequestSpec::new("create", Method::POST, "/items")
            .unwrap()
            .body(r#"{"name":"thing"}"#)
            .unwrap()
            .check(ok())
            .capture(Arc::new(JsonField::new("item", "id"))),
        RequestSpec::new("fetch", Method::GET, "/items/${{ vu.item }}")
            .unwrap()
            .check(ok()),
    ];
    // No identities: each user starts from an empty identity and captures into it.
    let r = run(closed(scenario(&s, requests, Vec::new()), 3, 60)).await;
    assert_eq!(r.summary.failed, 0, "{:?}", r.summary.error_examples);
    assert_eq!(r.summary.requests, 120);
    assert_eq!(s.ledger.created.load(Ordering::SeqCst), 60);
    let fetched = s.ledger.fetched.lock().unwrap();
    assert_eq!(
        fetched.len(),
        60,
        "every fetch was of the item its own iteration created"
    );
    assert!(fetched.values().all(|n| *n == 1), "{fetched:?}");
}

#[tokio::test]
async fn setup_during_warmup_runs_but_is_not_counted() {
    let s = server::start(Behaviour::default());
    let mut t = closed(scenario(&s, vec![me()], vec![login()]), 2, 50);
    t.identities = Some(names(2));
    t.profile.warmup = Duration::from_millis(300);
    let r = run(t).await;
    assert_eq!(r.summary.failed, 0, "{:?}", r.summary.error_examples);
    assert_eq!(r.summary.requests, 50, "the logins were in the warm-up");
    assert_eq!(named(&r, "login").requests, 0);
    assert_eq!(named(&r, "me").requests, 50);
    assert_eq!((s.logins("user-1"), s.logins("user-2")), (1, 1));
    assert!(r.warmup_requests >= 2);
    assert_eq!(s.hits(), 50 + r.warmup_requests);
    assert_eq!(s.ledger.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_open_model_runs_each_workers_setup_once() {
    let s = server::start(Behaviour::default());
    let mut profile = LoadProfile::open(200.0, Duration::from_millis(500), 4);
    profile.threads = Some(2);
    let mut t = LoadTest::new(scenario(&s, vec![me()], vec![login()]), profile);
    t.identities = Some(names(4));
    let r = run(t).await;
    assert_eq!(r.summary.failed, 0, "{:?}", r.summary.error_examples);
    let logins = named(&r, "login").requests;
    assert!((1..=4).contains(&logins), "one login per worker: {logins}");
    let total: u64 = (1..=4).map(|i| s.logins(&format!("user-{i}"))).sum();
    assert_eq!(total, logins);
    assert!((1..=4).all(|i| s.logins(&format!("user-{i}")) <= 1));
    assert_eq!(
        s.ledger.authorized.load(Ordering::SeqCst),
        named(&r, "me").requests
    );
    assert_eq!(s.ledger.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn variables_nothing_provides_are_named_before_anything_runs() {
    let s = server::start(Behaviour::default());
    let error = |t: LoadTest| async move {
        t.run(CancellationToken::new(), |_| {})
            .await
            .unwrap_err()
            .to_string()
    };
    // Nothing captures `token` and there are no identities.
    let e = error(closed(scenario(&s, vec![me()], Vec::new()), 1, 1)).await;
    assert!(
        e.contains("`name`, `token`")
            && e.contains("no identities were given and no request captures them"),
        "{e}"
    );
    // Identities without `token`, and nothing captures it.
    let mut t = closed(scenario(&s, vec![me()], Vec::new()), 1, 1);
    t.identities = Some(names(1));
    let e = error(t).await;
    assert!(
        e.contains("`token`") && e.contains("their columns: name"),
        "{e}"
    );
    // Captured, but only after the request that uses it.
    let create = RequestSpec::new("create", Method::POST, "/items")
        .unwrap()
        .capture(Arc::new(JsonField::new("item", "id")));
    let fetch = RequestSpec::new("fetch", Method::GET, "/items/${{ vu.item }}").unwrap();
    let e = error(closed(scenario(&s, vec![fetch, create], Vec::new()), 1, 1)).await;
    assert!(
        e.contains("`item` (captured by `create`)") && e.contains("in a setup request"),
        "{e}"
    );
    // A setup request named like a request of the scenario.
    let mut t = closed(scenario(&s, vec![me()], vec![login()]), 1, 1);
    t.identities = Some(names(1));
    t.scenario.requests[0].name = "login".into();
    let e = error(t).await;
    assert!(
        e.contains("setup request `login` has the name of a request"),
        "{e}"
    );
    // A capture into a name `${{ vu.NAME }}` cannot use.
    let bad = RequestSpec::new("r", Method::GET, "/")
        .unwrap()
        .capture(Arc::new(JsonField::new("my token", "token")));
    let e = error(closed(scenario(&s, vec![bad], Vec::new()), 1, 1)).await;
    assert!(
        e.contains("`my token`, which is not a variable name"),
        "{e}"
    );
    assert_eq!(s.hits(), 0);
}
