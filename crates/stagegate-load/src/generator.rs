//! The generator: threads, each with its own single-threaded runtime and its own
//! connections, reporting counts to a coordinator that runs in the caller's task.
//!
//! ```text
//!  caller ── LoadTest::run ──► coordinator ◄── interval counts ── thread 1: workers + ticker
//!                                 │        ◄── interval counts ── thread 2: ...
//!                                 ├─► LoadEvent::Progress (callback)
//!                                 └─► abort rules ─► stop token ─► workers stop
//! ```
//!
//! Closed model: each virtual user is a worker with one connection, sending its scenario
//! again as soon as it is answered. Open model: a dispatcher per thread releases requests
//! at their intended times to idle workers, starting workers (connections) as needed up to
//! the thread's share of `max_in_flight`; a request due while every worker is busy waits
//! in a queue, and the wait counts in its latency (coordinated omission is not hidden).
//!
//! This module is the public face and the coordinator; the threads are in `worker`, and a
//! virtual user's requests in `user`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::header::HeaderValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::LoadError;
use crate::conn::Connector;
use crate::identity::{Identities, Identity};
use crate::isolation::{IsolationRule, NoForeignValues};
use crate::profile::{LoadProfile, Model, Stop};
use crate::report::{GeneratorHealth, LoadReport, NamedSummary, Summary, buckets};
use crate::request::Scenario;
use crate::slo::AbortRule;
use crate::stats::{RunStats, Stats, histogram_bytes};
use crate::worker::{Msg, Shared, lag_histogram, thread_job, thread_main};

/// A load test, ready to run.
pub struct LoadTest {
    pub scenario: Scenario,
    pub profile: LoadProfile,
    /// Variables of each virtual user (`${{ vu.NAME }}`); user `i` takes row `i`.
    pub identities: Option<Identities>,
    /// Give each virtual user a cookie jar.
    pub cookies: bool,
    /// Rules on what a user must never see; violations are counted with an example.
    pub isolation: Vec<Arc<dyn IsolationRule>>,
    /// Rules that stop the run early.
    pub abort: Vec<AbortRule>,
    /// How often progress is reported and abort rules are checked.
    pub progress_interval: Duration,
    /// Bytes of a body kept for checks and isolation rules (the rest is counted, not kept).
    pub body_limit: usize,
}

impl LoadTest {
    pub fn new(scenario: Scenario, profile: LoadProfile) -> Self {
        Self {
            scenario,
            profile,
            identities: None,
            cookies: false,
            isolation: Vec::new(),
            abort: Vec::new(),
            progress_interval: Duration::from_secs(1),
            body_limit: 1 << 20,
        }
    }

    /// Gives the virtual users their identities (user `i` takes row `i`) and, for each
    /// field of `isolation`, a [`NoForeignValues`] rule: no user may see another user's
    /// value of that column. Each field must be a column of the users, with a value for at
    /// least one of them; when one is not, the error names it and the columns, and the test
    /// is left as it was. Rules already in [`LoadTest::isolation`] stay.
    pub fn set_users(&mut self, ids: Identities, isolation: &[String]) -> Result<(), LoadError> {
        let rules = isolation
            .iter()
            .map(|field| isolation_rule(&ids, field))
            .collect::<Result<Vec<_>, _>>()?;
        self.isolation.extend(rules);
        self.identities = Some(ids);
        Ok(())
    }
}

/// The rule that no user sees another's value of the column `field`.
fn isolation_rule(ids: &Identities, field: &str) -> Result<Arc<dyn IsolationRule>, LoadError> {
    let err = |reason: String| LoadError::Isolation {
        field: field.to_string(),
        reason,
    };
    let source = ids.source().map(|p| p.display().to_string());
    if !ids.columns.iter().any(|c| c == field) {
        let columns = ids.columns.join(", ");
        return Err(err(match &source {
            Some(s) => format!(
                "{s} has no column `{field}` (its columns: {columns}): isolate on one of its columns, or add a `{field}` column to it"
            ),
            None => format!(
                "the users have no column `{field}` (their columns: {columns}): isolate on one of their columns, or give them a `{field}` column"
            ),
        }));
    }
    let rule = NoForeignValues::new(field, ids).ok_or_else(|| {
        err(match &source {
            Some(s) => format!(
                "no user in {s} has a value for `{field}`: give the users their `{field}` values, or isolate on another column"
            ),
            None => format!(
                "no user has a value for `{field}`: give the users their `{field}` values, or isolate on another column"
            ),
        })
    })?;
    Ok(Arc::new(rule))
}

/// What happens while a load test runs, for live progress.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadEvent {
    Started {
        model: &'static str,
        threads: usize,
        /// Virtual users (closed) or the most requests in flight (open).
        concurrency: usize,
        warmup: Duration,
    },
    WarmupFinished {
        requests: u64,
    },
    Progress(Progress),
    /// An abort rule tripped: the run stops.
    Aborted {
        reason: String,
    },
}

/// The figures of the last progress interval, and totals so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Since the measured phase began (zero during warm-up).
    pub elapsed: Duration,
    pub warmup: bool,
    /// Measured requests so far.
    pub requests: u64,
    pub errors: u64,
    /// Over the last interval.
    pub rps: f64,
    pub p95_ms: Option<f64>,
    pub error_rate: Option<f64>,
}
impl LoadTest {
    /// Runs the test. Progress goes to `on_event`; `cancel` stops it early (what ran is
    /// reported, with `cancelled` set).
    pub async fn run(
        self,
        cancel: CancellationToken,
        mut on_event: impl FnMut(&LoadEvent),
    ) -> Result<LoadReport, LoadError> {
        self.profile.validate()?;
        if self.scenario.requests.is_empty() {
            return Err(LoadError::Profile("the scenario has no request".into()));
        }
        let identities = self.identities.clone().unwrap_or_default();
        if let Some(r) = self
            .scenario
            .setup
            .iter()
            .find(|s| self.scenario.requests.iter().any(|r| r.name == s.name))
        {
            return Err(LoadError::Profile(format!(
                "the setup request `{}` has the name of a request of the scenario: give it another name, so that its figures and thresholds such as `p95[{}]` are its own",
                r.name, r.name
            )));
        }
        for r in self.scenario.setup.iter().chain(&self.scenario.requests) {
            for c in &r.captures {
                let var = c.var();
                if !crate::request::is_var_name(var) {
                    return Err(LoadError::Template {
                        text: var.to_string(),
                        reason: format!(
                            "request `{}` captures into `{var}`, which is not a variable name: use letters, digits, `_` and `-`",
                            r.name
                        ),
                    });
                }
            }
        }
        if self.scenario.uses_vars() {
            let missing = self.scenario.missing_vars(&identities.columns);
            if !missing.is_empty() {
                return Err(missing_vars_error(&self.scenario, &identities, missing));
            }
        }
        let origin = &self.scenario.origin;
        let host =
            HeaderValue::from_str(&origin.authority()).map_err(|_| LoadError::InvalidUrl {
                url: origin.host.clone(),
                reason: "the host is not valid in a Host header".into(),
            })?;
        // Fill every identity into the requests now, so a bad value fails before the run.
        let rows: Vec<Arc<Identity>> = if identities.is_empty() {
            vec![Arc::new(Identity::anonymous(0))]
        } else {
            (0..identities.len())
                .map(|i| identities.for_vu(i))
                .collect()
        };
        let mut prepared = Vec::with_capacity(rows.len());
        for id in &rows {
            let reqs = self
                .scenario
                .all()
                .map(|r| r.prepare(&host, id))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| LoadError::Template {
                    text: format!("identity {}", id.index + 1),
                    reason,
                })?;
            prepared.push(Arc::new(reqs));
        }
        let connector = Connector::new(&origin.host, origin.port, origin.tls).await?;

        let max_conns = self.profile.max_connections().max(1);
        let threads = self
            .profile
            .threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .clamp(1, max_conns);
        let t0 = Instant::now();
        let measure_from = t0 + self.profile.warmup;
        let end = self.profile.measured_duration().map(|d| measure_from + d);
        let requests_limit = match &self.profile.model {
            Model::Closed {
                stop: Stop::Requests(n),
                ramp,
                ..
            } if ramp.is_empty() => Some(*n),
            _ => None,
        };
        let vu_ramp = match &self.profile.model {
            Model::Closed { ramp, .. } if !ramp.is_empty() => Some(self.profile.timeline()),
            _ => None,
        };
        let keep_body = self
            .scenario
            .all()
            .map(|r| !self.isolation.is_empty() || r.needs_body())
            .collect();
        let stop = cancel.child_token();
        let shared = Arc::new(Shared {
            scenario: self.scenario.clone(),
            connector,
            host,
            prepared,
            identities: identities.clone(),
            cookies: self.cookies,
            isolation: self.isolation.clone(),
            keep_body,
            body_limit: self.body_limit,
            timeout: self.profile.timeout,
            measure_from,
            end,
            requests_limit,
            tickets: AtomicU64::new(0),
            vu_ramp,
            stop: stop.clone(),
            threads,
        });

        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let open = matches!(self.profile.model, Model::Open { .. });
        for t in 0..threads {
            let job = thread_job(&self.profile, t, threads);
            let shared = shared.clone();
            let tx = tx.clone();
            let interval = self.progress_interval;
            std::thread::Builder::new()
                .name(format!("stagegate-load-{t}"))
                .spawn(move || thread_main(shared, job, tx, interval))
                .map_err(|e| LoadError::Start(format!("cannot start a thread: {e}")))?;
        }
        drop(tx);
        // Stop the threads if this future is dropped.
        let _stop_on_drop = stop.clone().drop_guard();

        on_event(&LoadEvent::Started {
            model: self.profile.model.name(),
            threads,
            concurrency: max_conns,
            warmup: self.profile.warmup,
        });

        let requests = self.scenario.slots();
        let mut total = RunStats::new(requests);
        let mut pending = Stats::new();
        let mut warmup_requests = 0u64;
        let mut lag = open.then(lag_histogram);
        let (mut waited, mut unsent, mut connections) = (0u64, 0u64, 0u64);
        let mut cpu = Duration::ZERO;
        let mut done = 0;
        let mut aborted: Option<String> = None;
        let mut said_warm = self.profile.warmup.is_zero();
        let mut window = AbortWindow::new(&self.abort);
        let mut ticker = tokio::time::interval(self.progress_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_tick = Instant::now();

        while done < threads {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Interval(i)) => {
                        total.add(&i.stats);
                        pending.add(&i.stats.total);
                        warmup_requests += i.warmup_requests;
                        if let (Some(l), Some(il)) = (lag.as_mut(), i.lag.as_ref()) {
                            let _ = l.add(il);
                        }
                        waited += i.waited;
                        unsent += i.unsent;
                        connections += i.connections;
                    }
                    Some(Msg::Done { cpu: c }) => {
                        cpu += c;
                        done += 1;
                    }
                    // Every thread is gone (one panicked): report what came.
                    None => break,
                },
                _ = ticker.tick() => {
                    let now = Instant::now();
                    let secs = now.duration_since(last_tick).as_secs_f64();
                    last_tick = now;
                    let warm = now < measure_from;
                    if !said_warm && !warm {
                        said_warm = true;
                        on_event(&LoadEvent::WarmupFinished { requests: warmup_requests });
                    }
                    let slice = std::mem::take(&mut pending);
                    on_event(&LoadEvent::Progress(Progress {
                        elapsed: now.saturating_duration_since(measure_from),
                        warmup: warm,
                        requests: total.total.requests,
                        errors: total.total.failed,
                        rps: if secs > 0.0 { slice.requests as f64 / secs } else { 0.0 },
                        p95_ms: (!slice.latency.is_empty())
                            .then(|| slice.latency.value_at_quantile(0.95) as f64 / 1000.0),
                        error_rate: slice.error_rate(),
                    }));
                    if aborted.is_none() && !warm {
                        window.push(now, &slice);
                        if let Some(reason) = self.check_abort(&total.total, &window, now, measure_from) {
                            on_event(&LoadEvent::Aborted { reason: reason.clone() });
                            aborted = Some(reason);
                            stop.cancel();
                        }
                    }
                }
            }
        }
        let finished = Instant::now();
        let wall = finished.duration_since(t0).as_secs_f64();
        let mut measured_secs = finished
            .saturating_duration_since(measure_from)
            .as_secs_f64();
        // A run that went its full length lasted at least that length: the last request of
        // an open-model run starts one interval before the end, not at it.
        if !cancel.is_cancelled()
            && aborted.is_none()
            && let Some(d) = self.profile.measured_duration()
        {
            measured_secs = measured_secs.max(d.as_secs_f64());
        }

        let mut report = LoadReport {
            model: self.profile.model.name().to_string(),
            url: format!(
                "{}://{}{}",
                if origin.tls { "https" } else { "http" },
                origin.authority(),
                self.scenario.requests[0]
                    .path
                    .render(&Identity::anonymous(0))
            ),
            concurrency: max_conns,
            target_rps: match &self.profile.model {
                Model::Open { .. } => {
                    let d = self.profile.measured_duration().unwrap_or_default();
                    Some(if d.is_zero() {
                        0.0
                    } else {
                        self.profile.timeline().area() / d.as_secs_f64()
                    })
                }
                Model::Closed { .. } => None,
            },
            duration_s: measured_secs,
            warmup_s: self.profile.warmup.as_secs_f64(),
            warmup_requests,
            latency_from_intended_time: open,
            summary: Summary::from_stats(&total.total, measured_secs),
            requests: if requests > 1 {
                self.scenario
                    .all()
                    .zip(&total.per_request)
                    .enumerate()
                    .map(|(i, (r, s))| NamedSummary {
                        name: r.name.clone(),
                        setup: i >= self.scenario.requests.len(),
                        summary: Summary::from_stats(s, measured_secs),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            histogram: buckets(&total.total.latency),
            histogram_bytes: histogram_bytes(&total.total.latency),
            generator: GeneratorHealth::default(),
            identities: self.identities.as_ref().map(|i| i.len()),
            aborted,
            cancelled: cancel.is_cancelled(),
            thresholds: Vec::new(),
            notes: Vec::new(),
        };
        report.generator = self.judge_generator(
            &report,
            threads,
            cpu,
            wall,
            lag.as_ref(),
            (waited, unsent, connections),
        );
        if done < threads {
            report.generator.valid = false;
            report.generator.notes.push(format!(
                "{} of {threads} generator threads stopped unexpectedly: the figures are incomplete",
                threads - done
            ));
        }
        if let Some(n) = self.identities.as_ref().map(|i| i.len())
            && n < max_conns
        {
            report.notes.push(format!(
                "{max_conns} virtual users share {n} identities: users with the same identity cannot show isolation from each other"
            ));
        }
        Ok(report)
    }

    fn check_abort(
        &self,
        total: &Stats,
        window: &AbortWindow,
        now: Instant,
        measure_from: Instant,
    ) -> Option<String> {
        let elapsed = now.saturating_duration_since(measure_from);
        for rule in &self.abort {
            let summary = match rule.window {
                None => Summary::from_stats(total, elapsed.as_secs_f64()),
                Some(w) => {
                    // Judge a window only once it is full.
                    if elapsed < w {
                        continue;
                    }
                    Summary::from_stats(&window.sum(now, w), w.as_secs_f64())
                }
            };
            if let Some(reason) = rule.tripped(&summary) {
                return Some(reason);
            }
        }
        None
    }

    fn judge_generator(
        &self,
        report: &LoadReport,
        threads: usize,
        cpu: Duration,
        wall: f64,
        lag: Option<&Histogram<u64>>,
        (waited, unsent, connections): (u64, u64, u64),
    ) -> GeneratorHealth {
        let cpu_s = cpu.as_secs_f64();
        let utilization = if wall > 0.0 {
            (cpu_s / (threads as f64 * wall)).min(1.0)
        } else {
            0.0
        };
        let mut notes = Vec::new();
        let cpu_saturated = utilization >= 0.9;
        if cpu_saturated {
            notes.push(format!(
                "the generator's threads were busy {:.0}% of the time: it ran out of CPU, so latency and throughput include its own queueing (give it more threads or cores)",
                utilization * 100.0
            ));
        }
        let (lag_p99, lag_max) = match lag.filter(|l| !l.is_empty()) {
            Some(l) => (
                Some(l.value_at_quantile(0.99) as f64 / 1000.0),
                Some(l.max() as f64 / 1000.0),
            ),
            None => (None, None),
        };
        let mut behind = lag_p99.is_some_and(|p| p > 10.0);
        if behind {
            notes.push(format!(
                "the generator fell behind its schedule: 1% of requests left more than {} late although a connection was free",
                crate::report::fmt_ms(lag_p99.unwrap_or_default())
            ));
        }
        if let Some(target) = report.target_rps
            && !report.cancelled
            && report.aborted.is_none()
            && waited == 0
            && unsent == 0
            && target > 0.0
            && report.summary.rps < 0.9 * target
            && report.summary.requests > 10
        {
            behind = true;
            notes.push(format!(
                "the generator sent {:.1} requests/s of the {target:.1} asked for, with connections to spare: it could not keep up",
                report.summary.rps
            ));
        }
        if waited > 0 {
            notes.push(format!(
                "{waited} requests were due while all {} connections were busy and waited for one: the server did not keep up with the rate; the wait is in their latency",
                report.concurrency
            ));
        }
        if unsent > 0 {
            notes.push(format!(
                "{unsent} requests were due but not sent before the run ended (the server was too slow): they are not in the figures"
            ));
        }
        GeneratorHealth {
            threads,
            cpu_seconds: cpu_s,
            cpu_utilization: utilization,
            schedule_lag_p99_ms: lag_p99,
            schedule_lag_max_ms: lag_max,
            waited_for_connection: waited,
            unsent,
            connections,
            cpu_saturated,
            behind_schedule: behind,
            valid: !cpu_saturated && !behind,
            notes,
        }
    }
}

/// Requests use variables that nothing provides, or that are captured only after their use.
fn missing_vars_error(
    scenario: &Scenario,
    identities: &Identities,
    missing: Vec<String>,
) -> LoadError {
    let (late, absent): (Vec<&String>, Vec<&String>) = missing
        .iter()
        .partition(|v| scenario.captured_by(v).is_some());
    let mut reasons = Vec::new();
    if !absent.is_empty() {
        let names = absent
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        reasons.push(if identities.is_empty() {
            format!(
                "requests use `vu.*` variables ({names}) but no identities were given and no request captures them: give a CSV or JSON file of users, or capture the values from an earlier response"
            )
        } else {
            format!(
                "requests use variables ({names}) that the identities do not have (their columns: {}) and no request captures: add the columns, or capture the values from an earlier response",
                identities.columns.join(", ")
            )
        });
    }
    if !late.is_empty() {
        let names = late
            .iter()
            .map(|v| {
                format!(
                    "`{v}` (captured by `{}`)",
                    scenario.captured_by(v).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        reasons.push(format!(
            "requests use variables before the request that captures them has run: {names}; capture them in an earlier request or in a setup request, which runs before the first iteration"
        ));
    }
    LoadError::Template {
        text: missing.join(", "),
        reason: reasons.join("; "),
    }
}

/// The recent progress slices that windowed abort rules judge (`error_rate > 5% over 10s`),
/// none older than the longest window: a long run keeps a bounded number of them.
struct AbortWindow {
    /// The longest window of the rules; `None` when no rule has one (nothing is kept).
    keep: Option<Duration>,
    slices: VecDeque<(Instant, Stats)>,
}

impl AbortWindow {
    fn new(rules: &[AbortRule]) -> Self {
        Self {
            keep: rules.iter().filter_map(|r| r.window).max(),
            slices: VecDeque::new(),
        }
    }

    /// Keeps the counts of the interval that ended at `now`, and drops the slices that no
    /// rule looks at any more.
    fn push(&mut self, now: Instant, slice: &Stats) {
        let Some(keep) = self.keep else {
            return;
        };
        self.slices.push_back((now, slice.coarse()));
        while self
            .slices
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= keep)
        {
            self.slices.pop_front();
        }
    }

    /// The counts of the intervals that ended within `w` before `now`.
    fn sum(&self, now: Instant, w: Duration) -> Stats {
        let mut s = Stats::coarse_new();
        for (_, slice) in self
            .slices
            .iter()
            .filter(|(t, _)| now.duration_since(*t) < w)
        {
            s.add(slice);
        }
        s
    }
}

impl Stats {
    /// An empty `Stats` with a two-digit histogram (1% precision, an eighth of the size),
    /// for the slices an abort rule's window keeps.
    fn coarse_new() -> Stats {
        Stats {
            latency: Histogram::new_with_bounds(1, crate::stats::LATENCY_MAX_US, 2)
                .expect("valid bounds"),
            ..Stats::new()
        }
    }

    fn coarse(&self) -> Stats {
        let mut s = Stats::coarse_new();
        s.add(self);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test() -> LoadTest {
        LoadTest::new(
            Scenario::single(http::Method::GET, "http://127.0.0.1:9/").unwrap(),
            LoadProfile::closed(1, Stop::Requests(1)),
        )
    }

    #[test]
    fn set_users_adds_a_rule_per_isolation_field() {
        let ids = Identities::from_csv("id,email\n1,a@x\n2,\n").unwrap();
        let mut t = test();
        t.set_users(ids, &["id".into(), "email".into()]).unwrap();
        assert_eq!(t.isolation.len(), 2);
        assert_eq!(t.identities.as_ref().map(Identities::len), Some(2));
        let mut t = test();
        t.set_users(Identities::from_csv("id\n1\n").unwrap(), &[])
            .unwrap();
        assert!(t.isolation.is_empty() && t.identities.is_some());
    }

    #[test]
    fn set_users_names_a_field_the_users_do_not_have() {
        let ids = || Identities::from_csv("id,email\n1,\n2,\n").unwrap();
        let mut t = test();
        let e = t
            .set_users(ids(), &["id".into(), "name".into()])
            .unwrap_err();
        assert!(
            matches!(&e, LoadError::Isolation { field, .. } if field == "name"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(
            e.contains("the users have no column `name` (their columns: id, email)"),
            "{e}"
        );
        assert!(e.contains("isolate on one of their columns"), "{e}");
        assert!(
            t.isolation.is_empty() && t.identities.is_none(),
            "nothing changes"
        );
        let e = t
            .set_users(ids(), &["email".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no user has a value for `email`"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "id,email\n1,\n").unwrap();
        let from_file = Identities::from_path(&path).unwrap();
        assert_eq!(from_file.source(), Some(path.as_path()));
        let e = t
            .set_users(from_file.clone(), &["name".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("users.csv has no column `name` (its columns: id, email)"),
            "{e}"
        );
        let e = t
            .set_users(from_file, &["email".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot check isolation on `email`: no user in ")
                && e.contains("users.csv has a value for `email`"),
            "{e}"
        );
    }

    #[test]
    fn the_abort_window_keeps_only_the_longest_rules_window() {
        let rules = [
            AbortRule::parse("error_rate > 5% over 1s").unwrap(),
            AbortRule::parse("p95 > 2s over 300ms").unwrap(),
            AbortRule::parse("p99 > 5s").unwrap(),
        ];
        let mut w = AbortWindow::new(&rules);
        assert_eq!(w.keep, Some(Duration::from_secs(1)));
        let t0 = Instant::now();
        let mut one = Stats::new();
        one.requests = 1;
        // A tick every 100 ms for a minute: ten of them are within the last second.
        for i in 0..600u64 {
            let now = t0 + Duration::from_millis(100 * i);
            w.push(now, &one);
            assert_eq!(w.slices.len(), (i as usize + 1).min(10), "tick {i}");
            assert!(
                w.slices
                    .iter()
                    .all(|(t, _)| now.duration_since(*t) < Duration::from_secs(1))
            );
            assert_eq!(
                w.sum(now, Duration::from_millis(300)).requests,
                (i + 1).min(3)
            );
            assert_eq!(w.sum(now, Duration::from_secs(1)).requests, (i + 1).min(10));
        }
    }

    #[test]
    fn without_a_windowed_rule_the_abort_window_keeps_nothing() {
        let mut w = AbortWindow::new(&[AbortRule::parse("error_rate > 5%").unwrap()]);
        assert_eq!(w.keep, None);
        w.push(Instant::now(), &Stats::new());
        assert!(w.slices.is_empty());
    }
}
