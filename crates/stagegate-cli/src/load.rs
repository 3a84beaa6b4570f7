//! `stagegate load URL`: the load generator on one URL, with hey's and oha's flags.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use stagegate_engine::exit;
use stagegate_load::{
    AbortRule, Identities, LoadEvent, LoadProfile, LoadReport, LoadTest, Model, RampStage,
    Scenario, StatusIn, Stop, Threshold, parse_method, slo,
};
use tokio_util::sync::CancellationToken;

use crate::cli::LoadArgs;
use crate::context::{CmdResult, Failure};

/// hey's default request count when neither -n nor -z is given.
const DEFAULT_REQUESTS: u64 = 200;
const DEFAULT_USERS: usize = 50;
const DEFAULT_MAX_IN_FLIGHT: usize = 1000;

fn invalid(e: impl std::fmt::Display) -> Failure {
    Failure::invalid(format!("error: {e}"))
}

/// A profile error names the plan's keys (`vus`, `requests`); say the flags instead.
fn in_flags(message: &str, open: bool) -> String {
    let users = if open {
        "`-c` (requests in flight)"
    } else {
        "`-c` (users)"
    };
    [
        ("`vus`", users),
        ("`max_in_flight`", "`-c` (requests in flight)"),
        ("`requests`", "`-n`"),
        ("`duration`", "`-z`"),
        ("`rate`", "`-q`"),
        ("`timeout`", "`-t`"),
        ("`threads`", "`--threads`"),
    ]
    .iter()
    .fold(message.to_string(), |m, (key, flag)| m.replace(key, flag))
}

/// Turns the flags into a load test, thresholds, abort rules and a baseline.
fn build(a: &LoadArgs) -> Result<(LoadTest, Vec<Threshold>, Option<LoadReport>), Failure> {
    let method = parse_method(&a.method).map_err(invalid)?;
    let mut scenario = Scenario::single(method, &a.url).map_err(invalid)?;
    let mut req = scenario.requests.remove(0);
    for h in &a.headers {
        req = req.header_line(h).map_err(invalid)?;
    }
    if let Some(t) = &a.content_type {
        // -T wins over a Content-Type given with -H, as with hey.
        req.headers
            .retain(|(name, _)| !name.as_str().eq_ignore_ascii_case("content-type"));
        req = req
            .header_line(&format!("Content-Type: {t}"))
            .map_err(invalid)?;
    }
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(p)) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| invalid(format!("cannot read the body file {}: {e}", p.display())))?,
        ),
        (None, None) => None,
    };
    if let Some(b) = body {
        req = req.body(&b).map_err(invalid)?;
    }
    if !a.expect_status.is_empty() {
        req = req.check(Arc::new(StatusIn::new(a.expect_status.clone())));
    }
    scenario.requests.push(req);

    let ramp: Vec<RampStage> = a
        .ramp
        .iter()
        .map(|(target, duration)| RampStage {
            target: *target,
            duration: *duration,
        })
        .collect();
    let mut profile = match a.rate {
        Some(rate) => {
            let duration = match (a.duration, a.requests) {
                (Some(d), _) => d,
                (None, Some(n)) if rate > 0.0 => Duration::from_secs_f64(n as f64 / rate),
                (None, _) if !ramp.is_empty() => Duration::ZERO,
                (None, None) if rate > 0.0 => {
                    Duration::from_secs_f64(DEFAULT_REQUESTS as f64 / rate)
                }
                _ => Duration::ZERO,
            };
            LoadProfile::open(
                rate,
                duration,
                a.concurrency.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            )
        }
        None => {
            let stop = match (a.duration, a.requests) {
                (Some(d), _) => Stop::Duration(d),
                (None, Some(n)) => Stop::Requests(n),
                (None, None) if !ramp.is_empty() => Stop::Duration(Duration::ZERO),
                (None, None) => Stop::Requests(DEFAULT_REQUESTS),
            };
            let vus = a
                .concurrency
                .unwrap_or(if ramp.is_empty() { DEFAULT_USERS } else { 0 });
            LoadProfile::closed(vus, stop)
        }
    };
    match &mut profile.model {
        Model::Closed { ramp: r, .. } | Model::Open { ramp: r, .. } => *r = ramp,
    }
    profile.warmup = a.warmup.unwrap_or_default();
    profile.timeout = a.timeout;
    profile.threads = a.threads;
    if let Model::Closed {
        vus,
        stop: Stop::Requests(n),
        ..
    } = &mut profile.model
    {
        // hey's rule: no more users than requests.
        *vus = (*vus).min(*n as usize);
    }
    profile
        .validate()
        .map_err(|e| invalid(in_flags(&e.to_string(), a.rate.is_some())))?;

    let mut test = LoadTest::new(scenario, profile);
    if let Some(path) = &a.users {
        let ids = Identities::from_path(path).map_err(invalid)?;
        test.set_users(ids, &a.isolation).map_err(|e| match e {
            stagegate_load::LoadError::Isolation { field, reason } => {
                invalid(format!("--isolation {field}: {reason}"))
            }
            other => invalid(other),
        })?;
    }
    test.cookies = a.cookies;
    test.abort = a
        .abort
        .iter()
        .map(|t| AbortRule::parse(t).map_err(|e| invalid(format!("--abort: {e}"))))
        .collect::<Result<_, _>>()?;
    let thresholds = a
        .slo
        .iter()
        .map(|t| Threshold::parse(t).map_err(|e| invalid(format!("--slo: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let baseline = match &a.compare {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| invalid(format!("cannot read --compare {}: {e}", p.display())))?;
            Some(serde_json::from_str::<LoadReport>(&text).map_err(|e| {
                invalid(format!(
                    "--compare {}: not a `stagegate load --json` report: {e}",
                    p.display()
                ))
            })?)
        }
        None => None,
    };
    Ok((test, thresholds, baseline))
}

pub async fn load(a: &LoadArgs) -> CmdResult {
    let (test, thresholds, baseline) = build(a)?;
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let live = std::io::stderr().is_terminal();
    let mut drawn = false;
    let result = test
        .run(cancel.clone(), |e| {
            if live {
                drawn |= draw(e);
            }
        })
        .await;
    if drawn {
        eprint!("\r\x1b[2K");
    }
    let mut report = result.map_err(|e| match e {
        stagegate_load::LoadError::Start(_) => Failure::internal(format!("error: {e}")),
        _ => invalid(e),
    })?;
    slo::evaluate_all(&mut report, &thresholds, baseline.as_ref());

    let mut out = std::io::stdout().lock();
    let written = if a.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|j| writeln!(out, "{j}"))
    } else {
        write!(out, "{}", report.to_text())
    };
    if let Err(e) = written.and_then(|_| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(Failure::internal(format!(
            "error: cannot write the report: {e}"
        )));
    }
    Ok(if report.cancelled {
        exit::INTERRUPTED
    } else if report.passed() {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}

/// One line of live progress on stderr. Returns whether it drew anything.
fn draw(e: &LoadEvent) -> bool {
    let Some(line) = stagegate_engine::load::progress_line(e) else {
        return false;
    };
    if let LoadEvent::Aborted { .. } = e {
        eprintln!("\r\x1b[2K{line}");
        return false;
    }
    eprint!("\r\x1b[2K{line}");
    let _ = std::io::stderr().flush();
    true
}
