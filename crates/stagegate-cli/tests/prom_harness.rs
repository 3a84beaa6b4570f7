//! The real-Prometheus harness (`tests/prom`) against the real staging-demo service: what
//! the demo's scheduled faults do is what Prometheus sees. Needs Debian's `prometheus`
//! package; without it these tests fail and say so.

mod common;
mod prom;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prom::{Prometheus, get};

/// The staging demo on `port`, in its own temporary directory, killed on drop.
struct Demo {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Starts it with `DEMO_FAULT=fault` and `env`; returns once `/health` has answered 200
    /// (the only request it has had then).
    fn start(bin: &Path, port: u16, fault: &str, env: &[(&str, &str)]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
        let child = Command::new(bin)
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("DEMO_FAULT", fault)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("staging-demo starts");
        let mut demo = Demo { child, port, dir };
        let start = Instant::now();
        loop {
            if let Some((status, body)) = get(&demo.url("/health")) {
                assert_eq!(status, 200, "{body}");
                return demo;
            }
            if let Ok(Some(exit)) = demo.child.try_wait() {
                panic!("staging-demo exited ({exit}):\n{}", demo.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "staging-demo did not answer on port {port} within 10 s:\n{}",
                demo.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("demo.log")).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping a free port, and that port: start the demo on it afterwards, so its
/// scheduled faults run while Prometheus is already scraping.
fn prometheus_for_a_demo() -> (Prometheus, u16) {
    let port = prom::free_port();
    (Prometheus::start(&[format!("127.0.0.1:{port}")]), port)
}

/// The single value of an instant query's one series.
fn value(prom: &Prometheus, query: &str) -> f64 {
    let result = prom.query(query).expect("Prometheus answers");
    assert_eq!(result.len(), 1, "{query}: {result:?}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn prometheus_sees_the_5xx_answers_and_latencies_of_errors_after() {
    let bin = common::staging_demo_bin();
    let (prom, port) = prometheus_for_a_demo();
    assert!(
        prom.wait_for_series(r#"up{job="self"} == 1"#, Duration::from_secs(1)),
        "Prometheus does not scrape itself\n{}",
        prom.log()
    );
    let demo = Demo::start(
        &bin,
        port,
        "errors-after",
        &[("DEMO_ERRORS_AFTER_MS", "1500")],
    );

    // ~4 s of traffic: 200s for the first 1.5 s, 500s from then on.
    let mut statuses = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let (status, body) = get(&demo.url("/api/v1/config")).expect("the demo answers");
        match status {
            200 => assert!(body.contains("\"dry_run\""), "{body}"),
            500 => assert_eq!(body, r#"{"error":"injected failure"}"#),
            other => panic!("unexpected {other}: {body}"),
        }
        statuses.push(status);
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = statuses.iter().take_while(|s| **s == 200).count();
    let failed = statuses.len() - ok;
    assert!(
        ok >= 3 && failed >= 10 && statuses[ok..].iter().all(|s| *s == 500),
        "expected 200s, then only 500s: {statuses:?}"
    );

    // What Prometheus scraped: all of them, by status class; the histogram counts every
    // answer but the scrapes (the 2xx ones: the first /health and the 200s above).
    let wait = Duration::from_secs(10);
    for query in [
        r#"http_requests_total{status="5xx"}"#.to_string(),
        "http_request_duration_seconds_count".to_string(),
        format!(r#"http_requests_total{{job="demo",status="5xx"}} == {failed}"#),
        format!(r#"http_request_duration_seconds_count{{job="demo",status="5xx"}} == {failed}"#),
        format!(
            r#"http_request_duration_seconds_count{{job="demo",status="2xx"}} == {}"#,
            ok + 1
        ),
    ] {
        assert!(
            prom.wait_for_series(&query, wait),
            "no series for {query} within {wait:?}; now: {:?}\n--- demo ---\n{}\n--- prometheus ---\n{}",
            prom.query(r#"{job="demo", __name__=~"http_.*(total|count)"}"#),
            demo.log(),
            prom.log()
        );
    }
    // The scrapes themselves are counted, but not timed.
    assert!(
        value(&prom, r#"http_requests_total{job="demo",status="2xx"}"#) > (ok + 1) as f64,
        "the scrapes are not in http_requests_total"
    );
    assert_eq!(
        value(
            &prom,
            r#"http_request_duration_seconds_bucket{job="demo",status="5xx",le="+Inf"}"#
        ),
        failed as f64
    );
    assert!(
        !prom
            .query(r#"http_request_duration_seconds_sum{job="demo"}"#)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn metrics_stop_after_takes_the_target_down_and_its_series_stale() {
    let bin = common::staging_demo_bin();
    let (mut prom, port) = prometheus_for_a_demo();
    let demo = Demo::start(
        &bin,
        port,
        "metrics-stop-after",
        &[("DEMO_METRICS_STOP_MS", "3000")],
    );
    let wait = Duration::from_secs(8);
    for query in [r#"up{job="demo"} == 1"#, r#"erp_hub_up{job="demo"} == 1"#] {
        assert!(
            prom.wait_for_series(query, wait),
            "no {query} within {wait:?}\n{}",
            prom.log()
        );
    }
    assert!(
        prom.wait_for_series(r#"up{job="demo"} == 0"#, wait),
        "the target stayed up: {:?}\n--- demo ---\n{}",
        prom.query(r#"up{job="demo"}"#),
        demo.log()
    );
    let (status, _) = get(&demo.url("/metrics")).expect("the demo answers");
    assert_eq!(status, 503);
    assert_eq!(get(&demo.url("/health")).map(|a| a.0), Some(200));
    // The failed scrape marked the target's series stale: "no data", not the last value.
    let stale = Instant::now() + Duration::from_secs(3);
    while !prom.query(r#"erp_hub_up{job="demo"}"#).unwrap().is_empty() {
        assert!(
            Instant::now() < stale,
            "erp_hub_up is not stale: {:?}",
            prom.query(r#"erp_hub_up{job="demo"}"#)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The harness's stop: Prometheus no longer answers, and stopping again is harmless.
    prom.stop();
    assert!(get(&format!("{}/-/ready", prom.url)).is_none());
    assert!(prom.query("up").is_none());
    prom.stop();
}
