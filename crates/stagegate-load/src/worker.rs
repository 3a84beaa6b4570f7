//! The generator's threads: each runs a single-threaded runtime with its virtual users (closed
//! model) or a dispatcher that releases requests at their intended times to idle workers,
//! starting workers as needed up to its share of `max_in_flight` (open model). Counts go to
//! the coordinator every progress interval.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::header::HeaderValue;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::conn::Connector;
use crate::identity::{Identities, Identity};
use crate::isolation::IsolationRule;
use crate::profile::{Arrivals, LoadProfile, Model, Segment, Timeline};
use crate::request::{PreparedRequest, Scenario};
use crate::stats::{RunStats, Stats};
use crate::user::User;

/// What every thread shares.
pub(crate) struct Shared {
    pub(crate) scenario: Scenario,
    pub(crate) connector: Connector,
    /// The `Host` header, for requests filled in again after a capture.
    pub(crate) host: HeaderValue,
    /// Per identity row: the requests of [`Scenario::all`], filled in.
    pub(crate) prepared: Vec<Arc<Vec<PreparedRequest>>>,
    pub(crate) identities: Identities,
    pub(crate) cookies: bool,
    pub(crate) isolation: Vec<Arc<dyn IsolationRule>>,
    /// Per request of [`Scenario::all`]: whether its body is kept for a check, a capture
    /// or an isolation rule.
    pub(crate) keep_body: Vec<bool>,
    pub(crate) body_limit: usize,
    pub(crate) timeout: Duration,
    pub(crate) measure_from: Instant,
    /// When a time-bound measured phase ends.
    pub(crate) end: Option<Instant>,
    pub(crate) requests_limit: Option<u64>,
    pub(crate) tickets: AtomicU64,
    /// Closed model with a ramp: the number of active users over time.
    pub(crate) vu_ramp: Option<Timeline>,
    pub(crate) stop: CancellationToken,
    pub(crate) threads: usize,
}

impl Shared {
    pub(crate) fn identity(&self, vu: usize) -> (Arc<Identity>, Arc<Vec<PreparedRequest>>) {
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
pub(crate) enum Msg {
    Interval(Box<Interval>),
    Done { cpu: Duration },
}

#[derive(Default)]
pub(crate) struct Interval {
    pub(crate) stats: RunStats,
    pub(crate) warmup_requests: u64,
    pub(crate) lag: Option<Histogram<u64>>,
    pub(crate) waited: u64,
    pub(crate) unsent: u64,
    pub(crate) connections: u64,
}

/// A thread's counts since its last report.
pub(crate) struct Local {
    pub(crate) interval: Interval,
    pub(crate) requests: usize,
}

impl Local {
    pub(crate) fn new(requests: usize, open: bool) -> Self {
        let mut l = Self {
            interval: Interval::default(),
            requests,
        };
        l.reset(open);
        l
    }

    pub(crate) fn reset(&mut self, open: bool) -> Interval {
        let fresh = Interval {
            stats: RunStats::new(self.requests),
            lag: open.then(lag_histogram),
            ..Default::default()
        };
        std::mem::replace(&mut self.interval, fresh)
    }

    /// Applies `f` to the run's counts and the request's own.
    #[inline]
    pub(crate) fn record(&mut self, request: usize, f: impl Fn(&mut Stats)) {
        f(&mut self.interval.stats.total);
        if let Some(s) = self.interval.stats.per_request.get_mut(request) {
            f(s);
        }
    }
}

pub(crate) fn lag_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds")
}
/// A thread's share of the load.
pub(crate) enum ThreadJob {
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

pub(crate) fn thread_job(profile: &LoadProfile, t: usize, threads: usize) -> ThreadJob {
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

pub(crate) fn thread_main(
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
    let local = Rc::new(RefCell::new(Local::new(shared.scenario.slots(), open)));
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
