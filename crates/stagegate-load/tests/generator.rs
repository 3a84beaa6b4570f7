//! The generator against real HTTP servers on loopback. These tests assert behaviour
//! (counts, classes, verdicts), never how fast anything was.

mod server;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use stagegate_load::stats::{Stats, histogram_bytes};
use stagegate_load::{
    AbortRule, Identities, LoadEvent, LoadProfile, LoadTest, Model, RampStage, RequestSpec,
    Scenario, StatusIn, Stop,
};
use tokio_util::sync::CancellationToken;

use server::Behaviour;

fn closed(url: &str, vus: usize, n: u64) -> LoadTest {
    LoadTest::new(
        Scenario::single(Method::GET, url).unwrap(),
        LoadProfile::closed(vus, Stop::Requests(n)),
    )
}

async fn run(t: LoadTest) -> stagegate_load::LoadReport {
    t.run(CancellationToken::new(), |_| {}).await.expect("runs")
}

#[tokio::test]
async fn closed_model_sends_exactly_n_requests() {
    let s = server::start(Behaviour::default());
    let r = run(closed(&s.url("/"), 10, 1000)).await;
    assert_eq!(r.summary.requests, 1000);
    assert_eq!(r.summary.status.get(&200), Some(&1000));
    assert_eq!(
        s.hits(),
        1000,
        "the server saw exactly the requests counted"
    );
    assert_eq!(r.summary.failed, 0);
    assert_eq!(r.summary.bytes_received, 3000);
    assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 1000);
    assert!(r.generator.connections >= 1 && r.generator.connections <= 10);
    assert_eq!(r.model, "closed");
}

#[tokio::test]
async fn warmup_requests_are_sent_but_not_counted() {
    let s = server::start(Behaviour::default());
    let mut t = closed(&s.url("/"), 4, 200);
    t.profile.warmup = Duration::from_millis(200);
    let r = run(t).await;
    assert_eq!(r.summary.requests, 200);
    assert!(r.warmup_requests > 0);
    assert_eq!(s.hits(), 200 + r.warmup_requests);
}

#[tokio::test]
async fn server_errors_are_counted_as_5xx() {
    let s = server::start(Behaviour::default());
    let r = run(closed(&s.url("/status/503"), 4, 40)).await;
    assert_eq!(r.summary.requests, 40);
    assert_eq!(r.summary.errors.status_5xx, 40);
    assert_eq!(r.summary.status.get(&503), Some(&40));
    assert_eq!(r.summary.error_rate, 1.0);
    assert_eq!(
        r.summary.error_examples.get("5xx").map(String::as_str),
        Some("status 503 from `GET /status/503`")
    );
    // 4xx is an answer, not an error, unless a check says so.
    let r = run(closed(&s.url("/status/404"), 2, 10)).await;
    assert_eq!(r.summary.failed, 0);
}

/// `localhost` may resolve to `::1` before `127.0.0.1`: the generator tries each address
/// until one answers (the server listens on `127.0.0.1` only).
#[tokio::test]
async fn a_host_name_reaches_the_server_on_whichever_address_it_listens() {
    let s = server::start(Behaviour::default());
    let r = run(closed(
        &format!("http://localhost:{}/", s.addr.port()),
        2,
        20,
    ))
    .await;
    assert_eq!(r.summary.requests, 20);
    assert_eq!(r.summary.failed, 0, "{:?}", r.summary.error_examples);
    assert_eq!(r.summary.status.get(&200), Some(&20));
    assert_eq!(s.hits(), 20);
}

#[tokio::test]
async fn a_refused_port_gives_connect_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = run(closed(&format!("http://127.0.0.1:{port}/"), 2, 20)).await;
    assert_eq!(r.summary.requests, 20);
    assert_eq!(r.summary.errors.connect, 20);
    assert!(
        r.summary.error_examples["connect"].contains("refused"),
        "{:?}",
        r.summary.error_examples
    );
    assert!(r.summary.status.is_empty());
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let s = server::start(Behaviour::default());
    let mut t = closed(&s.url("/hang"), 2, 4);
    t.profile.timeout = Duration::from_millis(100);
    let r = run(t).await;
    assert_eq!(r.summary.errors.timeout, 4);
    assert_eq!(r.summary.failed, 4);
    // A timed-out request is recorded at no less than the timeout.
    assert!(r.summary.latency.min_ms >= 100.0, "{:?}", r.summary.latency);
}

#[tokio::test]
async fn failed_checks_are_assertion_errors() {
    let s = server::start(Behaviour::default());
    let mut t = closed(&s.url("/alternate"), 1, 100);
    t.scenario.requests[0]
        .checks
        .push(Arc::new(StatusIn::new(vec![200])));
    let r = run(t).await;
    assert_eq!(r.summary.checks_passed, 50);
    assert_eq!(r.summary.checks_failed, 50);
    assert_eq!(r.summary.errors.assertion, 50);
    assert_eq!(r.summary.checks_rate, 0.5);
    assert!(
        r.summary
            .check_example
            .as_deref()
            .unwrap()
            .contains("expected status in [200], got status 404")
    );
}

#[test]
fn ten_million_latencies_fit_in_a_fixed_histogram() {
    let mut s = Stats::new();
    let before = histogram_bytes(&s.latency);
    for i in 0..10_000_000u64 {
        // Spread over 1 µs .. ~100 s so every bucket range is touched.
        s.record_latency(Duration::from_micros(1 + (i * 7919) % 100_000_000));
    }
    assert_eq!(s.latency.len(), 10_000_000);
    let after = histogram_bytes(&s.latency);
    assert_eq!(before, after, "the histogram does not grow with the count");
    assert!(after < 50 * 1024 * 1024 / 100, "{after} bytes");
}

/// The open model counts latency from each request's intended send time: a server that
/// stalls for a second shows it in p99. The closed model, where only the few requests in
/// flight see the stall, hides it.
#[tokio::test]
async fn open_model_does_not_hide_a_stall() {
    let stall = Duration::from_secs(1);
    let stalling = || {
        server::start(Behaviour {
            stall: Some(stall),
            stall_at: 1,
            ..Default::default()
        })
    };
    let s = stalling();
    let mut profile = LoadProfile::open(500.0, Duration::from_secs(2), 100);
    profile.threads = Some(1);
    let t = LoadTest::new(Scenario::single(Method::GET, &s.url("/")).unwrap(), profile);
    let r = run(t).await;
    assert_eq!(r.model, "open");
    assert!(r.latency_from_intended_time);
    assert_eq!(r.summary.requests, 1000, "every scheduled request was sent");
    // A request due t seconds into the stall waits 1 - t: the top 1% (10 requests, due in
    // the first 20 ms) waited at least 0.98 s.
    let p99 = r.summary.latency.p99_ms;
    assert!(p99 >= 0.9 * stall.as_millis() as f64, "p99 {p99} ms");
    assert!(r.summary.latency.max_ms >= 0.98 * stall.as_millis() as f64);
    assert!(
        r.generator.waited_for_connection > 0,
        "{:?}",
        r.generator.notes
    );

    let s = stalling();
    let mut t = closed(&s.url("/"), 4, 2000);
    t.profile.threads = Some(1);
    let r = run(t).await;
    // Only the 4 requests in flight saw the stall: 0.2% of them. (The bound on p99 is
    // loose on purpose: a busy machine can slow every request, and this test is about the
    // mechanism, not speed.)
    assert!(r.summary.latency.max_ms >= 0.9 * stall.as_millis() as f64);
    assert!(
        r.summary.latency.p99_ms < 10_000.0,
        "closed p99 {}",
        r.summary.latency.p99_ms
    );
}

#[tokio::test]
async fn open_model_ramp_sends_the_scheduled_requests() {
    let s = server::start(Behaviour::default());
    let mut profile = LoadProfile::open(0.0, Duration::ZERO, 50);
    profile.threads = Some(1);
    if let Model::Open { ramp, .. } = &mut profile.model {
        ramp.push(RampStage {
            target: 200.0,
            duration: Duration::from_secs(1),
        });
    }
    let t = LoadTest::new(Scenario::single(Method::GET, &s.url("/")).unwrap(), profile);
    let r = run(t).await;
    // The area under 0 → 200/s over 1 s.
    assert!(
        (99..=101).contains(&r.summary.requests),
        "{}",
        r.summary.requests
    );
    assert_eq!(s.hits(), r.summary.requests);
}

#[tokio::test]
async fn closed_ramp_stops_at_the_ramps_end() {
    let s = server::start(Behaviour {
        delay: Duration::from_millis(5),
        ..Default::default()
    });
    let mut profile = LoadProfile::closed(1, Stop::Duration(Duration::ZERO));
    if let Model::Closed { ramp, .. } = &mut profile.model {
        ramp.push(RampStage {
            target: 4.0,
            duration: Duration::from_millis(300),
        });
    }
    let t = LoadTest::new(Scenario::single(Method::GET, &s.url("/")).unwrap(), profile);
    // A run that never stops fails here instead of hanging.
    let r = tokio::time::timeout(Duration::from_secs(30), run(t))
        .await
        .expect("the run stops at the ramp's end");
    assert!(r.summary.requests > 0);
    assert_eq!(r.concurrency, 4);
    assert!(
        r.duration_s >= 0.3,
        "the run lasted the ramp's 300 ms: {} s",
        r.duration_s
    );
    assert_eq!(s.hits(), r.summary.requests);
}

fn users(n: usize) -> Identities {
    let mut csv = String::from("id\n");
    for i in 1..=n {
        csv.push_str(&format!("user-{i}\n"));
    }
    Identities::from_csv(&csv).unwrap()
}

fn isolation_test(url_base: &str, n: usize, requests: u64) -> LoadTest {
    let ids = users(n);
    let scenario = Scenario {
        origin: stagegate_load::split_url(url_base).unwrap().0,
        requests: vec![
            RequestSpec::new("login", Method::POST, "/login")
                .unwrap()
                .header_line("X-User: ${{ vu.id }}")
                .unwrap(),
            RequestSpec::new("me", Method::GET, "/me").unwrap(),
        ],
        setup: Vec::new(),
    };
    let mut t = LoadTest::new(scenario, LoadProfile::closed(n, Stop::Requests(requests)));
    t.cookies = true;
    t.set_users(ids, &["id".into()]).unwrap();
    t
}

#[tokio::test]
async fn each_user_has_its_own_identity_and_cookies() {
    let s = server::start(Behaviour::default());
    let r = run(isolation_test(&s.url(""), 20, 200)).await;
    assert_eq!(r.summary.requests, 400, "two requests per iteration");
    assert_eq!(
        r.summary.isolation_violations, 0,
        "{:?}",
        r.summary.isolation_example
    );
    assert_eq!(r.requests.len(), 2);
    assert_eq!(r.requests[1].name, "me");
    assert_eq!(r.requests[1].summary.requests, 200);
    assert_eq!(r.identities, Some(20));
}

#[tokio::test]
async fn a_leaking_service_is_caught_with_an_example() {
    let s = server::start(Behaviour {
        leak_every: Some(10),
        ..Default::default()
    });
    let r = run(isolation_test(&s.url(""), 20, 200)).await;
    assert!(r.summary.isolation_violations > 0);
    let ex = r.summary.isolation_example.as_ref().unwrap();
    assert_eq!(ex.request, "me");
    assert!(
        ex.detail.contains("which belongs to another user"),
        "{}",
        ex.detail
    );
    let t = stagegate_load::Threshold::parse("isolation_violations == 0").unwrap();
    assert!(!t.evaluate(&r, None).passed());
}

#[tokio::test]
async fn an_abort_rule_stops_the_run() {
    let s = server::start(Behaviour::default());
    let mut t = LoadTest::new(
        Scenario::single(Method::GET, &s.url("/status/500")).unwrap(),
        LoadProfile::closed(2, Stop::Duration(Duration::from_secs(60))),
    );
    t.progress_interval = Duration::from_millis(50);
    t.abort.push(AbortRule::parse("error_rate > 50%").unwrap());
    let mut events = Vec::new();
    let r = t
        .run(CancellationToken::new(), |e| events.push(e.clone()))
        .await
        .unwrap();
    let why = r.aborted.as_deref().expect("aborted");
    assert!(
        why.contains("`error_rate > 50%`: 100.00% > 50.00%"),
        "{why}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, LoadEvent::Aborted { .. }))
    );
    assert!(events.iter().any(|e| matches!(e, LoadEvent::Progress(_))));
    assert!(!r.passed());
    assert!(r.summary.errors.status_5xx > 0);
}

#[tokio::test]
async fn a_windowed_abort_rule_judges_the_last_window_once_it_is_full() {
    let s = server::start(Behaviour::default());
    let mut t = LoadTest::new(
        Scenario::single(Method::GET, &s.url("/status/502")).unwrap(),
        LoadProfile::closed(2, Stop::Duration(Duration::from_secs(60))),
    );
    t.progress_interval = Duration::from_millis(50);
    t.abort
        .push(AbortRule::parse("error_rate > 50% over 200ms").unwrap());
    let r = run(t).await;
    let why = r.aborted.as_deref().expect("aborted");
    assert!(
        why.contains("100.00% > 50.00% over the last 200ms"),
        "{why}"
    );
    assert!(r.duration_s >= 0.2, "judged only once the window was full");
}

#[tokio::test]
async fn cancelling_reports_what_ran() {
    let s = server::start(Behaviour::default());
    let t = LoadTest::new(
        Scenario::single(Method::GET, &s.url("/")).unwrap(),
        LoadProfile::closed(2, Stop::Duration(Duration::from_secs(60))),
    );
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let r = t.run(cancel, |_| {}).await.unwrap();
    assert!(r.cancelled);
    assert!(r.summary.requests > 0);
    assert_eq!(s.hits(), r.summary.requests);
}

#[tokio::test]
async fn missing_identity_columns_are_named_before_anything_runs() {
    let s = server::start(Behaviour::default());
    let mut t = closed(&s.url("/"), 1, 1);
    t.scenario.requests[0] = t.scenario.requests[0]
        .clone()
        .header_line("Authorization: Bearer ${{ vu.token }}")
        .unwrap();
    t.identities = Some(users(2));
    let e = t.run(CancellationToken::new(), |_| {}).await.unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("token") && e.contains("their columns: id"),
        "{e}"
    );
    assert_eq!(s.hits(), 0);
}
