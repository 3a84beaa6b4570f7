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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::header::{COOKIE, HeaderValue};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::LoadError;
use crate::check::ResponseView;
use crate::conn::{Body, Conn, Connector};
use crate::cookies::CookieJar;
use crate::identity::{Identities, Identity};
use crate::isolation::IsolationRule;
use crate::profile::{Arrivals, LoadProfile, Model, Segment, Stop, Timeline};
use crate::report::{GeneratorHealth, LoadReport, NamedSummary, Summary, buckets};
use crate::request::{PreparedRequest, Scenario};
use crate::slo::AbortRule;
use crate::stats::{ErrorClass, IsolationExample, RunStats, Stats, histogram_bytes};

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

/// What every thread shares.
struct Shared {
    scenario: Scenario,
    connector: Connector,
    prepared: Vec<Arc<Vec<PreparedRequest>>>,
    identities: Identities,
    cookies: bool,
    isolation: Vec<Arc<dyn IsolationRule>>,
    keep_body: bool,
    body_limit: usize,
    timeout: Duration,
    measure_from: Instant,
    /// When a time-bound measured phase ends.
    end: Option<Instant>,
    requests_limit: Option<u64>,
    tickets: AtomicU64,
    /// Closed model with a ramp: the number of active users over time.
    vu_ramp: Option<Timeline>,
    stop: CancellationToken,
    threads: usize,
}

impl Shared {
    fn identity(&self, vu: usize) -> (Arc<Identity>, Arc<Vec<PreparedRequest>>) {
        let id = self.identities.for_vu(vu);
        let prepared = if self.prepared.is_empty() {
            Arc::new(Vec::new())
        } else {
            self.prepared[vu % self.prepared.len()].clone()
        };
        (id, prepared)
    }
}

/// What a thread sends the coordinator.
enum Msg {
    Interval(Box<Interval>),
    Done { cpu: Duration },
}

#[derive(Default)]
struct Interval {
    stats: RunStats,
    warmup_requests: u64,
    lag: Option<Histogram<u64>>,
    waited: u64,
    unsent: u64,
    connections: u64,
}

/// A thread's counts since its last report.
struct Local {
    interval: Interval,
    requests: usize,
}

impl Local {
    fn new(requests: usize, open: bool) -> Self {
        let mut l = Self {
            interval: Interval::default(),
            requests,
        };
        l.reset(open);
        l
    }

    fn reset(&mut self, open: bool) -> Interval {
        let fresh = Interval {
            stats: RunStats::new(self.requests),
            lag: open.then(lag_histogram),
            ..Default::default()
        };
        std::mem::replace(&mut self.interval, fresh)
    }

    /// Applies `f` to the run's counts and the request's own.
    #[inline]
    fn record(&mut self, request: usize, f: impl Fn(&mut Stats)) {
        f(&mut self.interval.stats.total);
        if let Some(s) = self.interval.stats.per_request.get_mut(request) {
            f(s);
        }
    }
}

fn lag_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds")
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
        if self.scenario.uses_vars() {
            if identities.is_empty() {
                return Err(LoadError::Template {
                    text: self.scenario.missing_vars(&[]).join(", "),
                    reason: "requests use `vu.*` variables but no identities were given: give a CSV or JSON file of users".into(),
                });
            }
            let missing = self.scenario.missing_vars(&identities.columns);
            if !missing.is_empty() {
                return Err(LoadError::Template {
                    text: missing.join(", "),
                    reason: format!(
                        "requests use variables the identities do not have (their columns: {})",
                        identities.columns.join(", ")
                    ),
                });
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
                .requests
                .iter()
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
        let keep_body = !self.isolation.is_empty() || self.scenario.needs_body();
        let stop = cancel.child_token();
        let shared = Arc::new(Shared {
            scenario: self.scenario.clone(),
            connector,
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

        let requests = self.scenario.requests.len();
        let mut total = RunStats::new(requests);
        let mut pending = Stats::new();
        let mut warmup_requests = 0u64;
        let mut lag = open.then(lag_histogram);
        let (mut waited, mut unsent, mut connections) = (0u64, 0u64, 0u64);
        let mut cpu = Duration::ZERO;
        let mut done = 0;
        let mut aborted: Option<String> = None;
        let mut said_warm = self.profile.warmup.is_zero();
        let windowed = self.abort.iter().any(|a| a.window.is_some());
        let mut window: VecDeque<(Instant, Stats)> = VecDeque::new();
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
                        if windowed {
                            window.push_back((now, slice.coarse()));
                        }
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
                    let n = Arrivals::new(self.profile.timeline()).count() as f64;
                    Some(if d.is_zero() {
                        0.0
                    } else {
                        n / d.as_secs_f64()
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
                    .requests
                    .iter()
                    .zip(&total.per_request)
                    .map(|(r, s)| NamedSummary {
                        name: r.name.clone(),
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
        window: &VecDeque<(Instant, Stats)>,
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
                    let mut s = Stats::coarse_new();
                    for (_, slice) in window.iter().filter(|(t, _)| now.duration_since(*t) < w) {
                        s.add(slice);
                    }
                    Summary::from_stats(&s, w.as_secs_f64())
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

/// A thread's share of the load.
enum ThreadJob {
    /// Closed model: these virtual users.
    Users(Vec<usize>),
    /// Open model: a share of the rate and of `max_in_flight`.
    Arrivals {
        warmup: Timeline,
        measured: Timeline,
        offset: f64,
        max_in_flight: usize,
        thread: usize,
    },
}

fn thread_job(profile: &LoadProfile, t: usize, threads: usize) -> ThreadJob {
    match &profile.model {
        Model::Closed { .. } => {
            let n = profile.max_connections();
            ThreadJob::Users((t..n).step_by(threads).collect())
        }
        Model::Open {
            rate,
            max_in_flight,
            ..
        } => {
            let share = 1.0 / threads as f64;
            ThreadJob::Arrivals {
                warmup: Timeline {
                    segments: vec![Segment {
                        from: rate * share,
                        to: rate * share,
                        duration: profile.warmup,
                    }],
                },
                measured: profile.timeline().scaled(share),
                offset: t as f64 / threads as f64,
                max_in_flight: (max_in_flight / threads + usize::from(t < max_in_flight % threads))
                    .max(1),
                thread: t,
            }
        }
    }
}

fn thread_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let us = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            us(u.user_time()) + us(u.system_time())
        })
        .unwrap_or_default()
}

fn thread_main(
    shared: Arc<Shared>,
    job: ThreadJob,
    tx: mpsc::UnboundedSender<Msg>,
    interval: Duration,
) {
    let cpu0 = thread_cpu();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => {
            let _ = tx.send(Msg::Done {
                cpu: Duration::ZERO,
            });
            return;
        }
    };
    let open = matches!(job, ThreadJob::Arrivals { .. });
    let local = Rc::new(RefCell::new(Local::new(
        shared.scenario.requests.len(),
        open,
    )));
    let set = tokio::task::LocalSet::new();
    set.block_on(&rt, async {
        let finished = Rc::new(Cell::new(false));
        let ticker = {
            let (local, tx, finished) = (local.clone(), tx.clone(), finished.clone());
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                while !finished.get() {
                    tick.tick().await;
                    let i = local.borrow_mut().reset(open);
                    let _ = tx.send(Msg::Interval(Box::new(i)));
                }
            })
        };
        match job {
            ThreadJob::Users(vus) => {
                let mut set = tokio::task::JoinSet::new();
                for vu in vus {
                    set.spawn_local(closed_user(shared.clone(), local.clone(), vu));
                }
                while set.join_next().await.is_some() {}
            }
            ThreadJob::Arrivals {
                warmup,
                measured,
                offset,
                max_in_flight,
                thread,
            } => {
                dispatch(
                    shared.clone(),
                    local.clone(),
                    warmup,
                    measured,
                    offset,
                    max_in_flight,
                    thread,
                )
                .await;
            }
        }
        finished.set(true);
        ticker.abort();
    });
    let last = local.borrow_mut().reset(open);
    let _ = tx.send(Msg::Interval(Box::new(last)));
    let _ = tx.send(Msg::Done {
        cpu: thread_cpu().saturating_sub(cpu0),
    });
}

/// A virtual user of the closed model: its scenario, again and again.
async fn closed_user(sh: Arc<Shared>, local: Rc<RefCell<Local>>, vu: usize) {
    let mut user = User::new(&sh, vu);
    let mut pause = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        if sh.stop.is_cancelled() {
            break;
        }
        let now = Instant::now();
        if sh.end.is_some_and(|end| now >= end) {
            break;
        }
        let measured = now >= sh.measure_from;
        if measured && let Some(ramp) = &sh.vu_ramp {
            let active = (ramp.level_at(now - sh.measure_from) + 0.5).floor() as usize;
            if vu >= active {
                pause.as_mut().reset(tokio::time::Instant::from_std(
                    now + Duration::from_millis(10),
                ));
                pause.as_mut().await;
                continue;
            }
        }
        if measured
            && let Some(limit) = sh.requests_limit
            && sh.tickets.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        if !user.iteration(&sh, &local, None, measured).await {
            // Could not connect: do not spin on a refused port.
            pause.as_mut().reset(tokio::time::Instant::from_std(
                Instant::now() + CONNECT_BACKOFF,
            ));
            pause.as_mut().await;
        }
    }
}

/// Wait after a failed connection attempt before the user tries again.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// A request the open model's dispatcher released.
#[derive(Clone, Copy)]
struct Ticket {
    /// When it was released (its intended time, or later when the generator was late).
    start: Instant,
    measured: bool,
}

/// The open model's per-thread state: released requests and idle workers.
struct Pool {
    queue: RefCell<VecDeque<Ticket>>,
    idle: RefCell<Vec<Rc<Notify>>>,
    done: Cell<bool>,
}

async fn dispatch(
    sh: Arc<Shared>,
    local: Rc<RefCell<Local>>,
    warmup: Timeline,
    measured: Timeline,
    offset: f64,
    max_in_flight: usize,
    thread: usize,
) {
    let pool = Rc::new(Pool {
        queue: RefCell::new(VecDeque::new()),
        idle: RefCell::new(Vec::new()),
        done: Cell::new(false),
    });
    let mut workers = tokio::task::JoinSet::new();
    let mut spawned = 0usize;
    let t0 = sh.measure_from - warmup.segments[0].duration;
    let phases = [
        (t0, Arrivals::new(warmup).starting_at(offset)),
        (sh.measure_from, Arrivals::new(measured).starting_at(offset)),
    ];
    let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    'phases: for (phase_start, arrivals) in phases {
        for at in arrivals {
            let due = phase_start + at;
            if Instant::now() < due {
                sleep.as_mut().reset(tokio::time::Instant::from_std(due));
                tokio::select! {
                    _ = sleep.as_mut() => {}
                    _ = sh.stop.cancelled() => break 'phases,
                }
            } else if sh.stop.is_cancelled() {
                break 'phases;
            }
            let now = Instant::now();
            let measured = due >= sh.measure_from;
            let ticket = Ticket {
                start: now,
                measured,
            };
            let idle = pool.idle.borrow_mut().pop();
            match idle {
                Some(worker) => {
                    if measured {
                        record_lag(&local, now - due);
                    }
                    pool.queue.borrow_mut().push_back(ticket);
                    worker.notify_one();
                }
                None if spawned < max_in_flight => {
                    if measured {
                        record_lag(&local, now - due);
                    }
                    let vu = thread + spawned * sh.threads;
                    spawned += 1;
                    workers.spawn_local(open_worker(
                        sh.clone(),
                        local.clone(),
                        pool.clone(),
                        vu,
                        ticket,
                    ));
                }
                None => {
                    if measured {
                        local.borrow_mut().interval.waited += 1;
                    }
                    pool.queue.borrow_mut().push_back(ticket);
                }
            }
        }
    }
    pool.done.set(true);
    for w in pool.idle.borrow_mut().drain(..) {
        w.notify_one();
    }
    while workers.join_next().await.is_some() {}
    let left = pool
        .queue
        .borrow_mut()
        .drain(..)
        .filter(|t| t.measured)
        .count();
    local.borrow_mut().interval.unsent += left as u64;
}

fn record_lag(local: &Rc<RefCell<Local>>, late: Duration) {
    if let Some(l) = local.borrow_mut().interval.lag.as_mut() {
        l.saturating_record(((late.as_nanos() / 1000) as u64).max(1));
    }
}

async fn open_worker(
    sh: Arc<Shared>,
    local: Rc<RefCell<Local>>,
    pool: Rc<Pool>,
    vu: usize,
    first: Ticket,
) {
    let mut user = User::new(&sh, vu);
    let wake = Rc::new(Notify::new());
    // Requests still queued this long after the end are given up (counted as unsent).
    let give_up = sh.end.map(|e| e + sh.timeout);
    let mut next = Some(first);
    loop {
        let ticket = match next.take() {
            Some(t) => t,
            None => {
                let popped = pool.queue.borrow_mut().pop_front();
                match popped {
                    Some(t) => t,
                    None if pool.done.get() || sh.stop.is_cancelled() => break,
                    None => {
                        pool.idle.borrow_mut().push(wake.clone());
                        tokio::select! {
                            _ = wake.notified() => {}
                            _ = sh.stop.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
        };
        if sh.stop.is_cancelled() || give_up.is_some_and(|g| Instant::now() >= g) {
            let mut l = local.borrow_mut();
            l.interval.unsent += u64::from(ticket.measured);
            continue;
        }
        user.iteration(&sh, &local, Some(ticket.start), ticket.measured)
            .await;
    }
}

/// A virtual user: identity, prepared requests, cookie jar and connection.
struct User {
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
    fn new(sh: &Shared, vu: usize) -> Self {
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
    async fn iteration(
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
