//! Check steps: `http`, `command`, `tcp`, `log` and `file`.
//!
//! [`run`] renders the check's templates once, then observes (sends the request, runs the
//! command, connects, reads the log or the files) as many times as `retry` allows, until
//! `until` holds and every assertion passes. Each attempt yields an [`Observation`]; every
//! assertion is evaluated on it, and the step's outcome carries them all in
//! `details.assertions` as [`AssertionResult`]s (name, expected, actual, passed), which the
//! reports and `stagegate show` render. Captures become step outputs; secret ones are
//! masked from then on.
//!
//! Bodies are streamed ([`body`]): nothing is buffered beyond what assertions read.
//! `repeat` sends one request many times with bounded concurrency ([`http::repeat`]).

pub(crate) mod body;
mod command;
pub(crate) mod expect;
/// How a value is shown in messages and reports: whole numbers without a fraction, others
/// to at most six places.
pub use expect::fmt_value;
mod file;
pub(crate) mod http;
mod log;
mod payload;
pub mod prom;
mod tcp;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use stagegate_plan::check::{Assertion, CaptureSource, CheckSpec, CheckTarget, Subject};

use crate::details::{CaptureNote, CheckDetails, ObservedSummary, RepeatTotals, StepDetails};
use crate::event::{Event, StepStatus};
use crate::poll::{Attempt, GaveUp, PollPolicy, poll};
use crate::step::{StepCtx, StepOutcome};

pub(crate) use http::{chain, json_value as json_body};

use body::{BodyNeeds, PREVIEW_BYTES, human_bytes};
use expect::{Expectation, Observation, Take};

/// One assertion as recorded: what was expected, what was found, whether it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionResult {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub passed: bool,
}

impl AssertionResult {
    /// `json $.version: expected == 1.3.0, actual "1.3.0-wrong"`.
    pub fn line(&self) -> String {
        format!(
            "{}: expected {}, actual {}",
            self.name, self.expected, self.actual
        )
    }
}

/// What one attempt found.
struct Tried {
    obs: Option<Observation>,
    /// The check could not observe at all (connection refused, no such file).
    error: Option<String>,
    timed_out: bool,
    until: Vec<AssertionResult>,
    results: Vec<AssertionResult>,
    outputs: BTreeMap<String, String>,
    secret: Vec<String>,
    mask: stagegate_plan::Scrubber,
}

impl Tried {
    fn failed(&self) -> impl Iterator<Item = &AssertionResult> {
        self.results.iter().filter(|r| !r.passed)
    }

    /// One line per problem, for errors and retries.
    fn summary(&self, target: &str) -> String {
        if let Some(e) = &self.error {
            return format!("{target}: {e}");
        }
        let until_failed: Vec<&AssertionResult> = self.until.iter().filter(|r| !r.passed).collect();
        if !until_failed.is_empty() {
            return format!(
                "`until` does not hold yet: {}",
                until_failed
                    .iter()
                    .map(|r| r.line())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let failed: Vec<&AssertionResult> = self.failed().collect();
        let lines: Vec<String> = failed.iter().map(|r| r.line()).collect();
        format!(
            "{} of {} assertion{} failed: {}",
            failed.len(),
            self.results.len(),
            if self.results.len() == 1 { "" } else { "s" },
            lines.join("; ")
        )
    }
}

/// What a check kind needs from what it receives.
fn needs(spec: &CheckSpec, max_body: u64) -> (BodyNeeds, bool) {
    let mut sha256 = false;
    let mut text = false;
    let mut see = |s: &Subject| match s {
        Subject::Sha256 => sha256 = true,
        Subject::Body | Subject::Json(_) => text = true,
        _ => {}
    };
    for a in spec.expect.iter().chain(&spec.until) {
        if let Assertion::Value { subject, .. } = a {
            see(subject);
        }
    }
    let mut hash_sent = false;
    for c in &spec.captures {
        match c.source {
            CaptureSource::BodySha256 => sha256 = true,
            CaptureSource::SentSha256 => hash_sent = true,
            CaptureSource::Json(_) | CaptureSource::Body => text = true,
            _ => {}
        }
    }
    (
        BodyNeeds {
            sha256,
            keep: if text { max_body } else { PREVIEW_BYTES },
        },
        hash_sent,
    )
}

/// Runs a check step to its outcome. Never panics on a failed check.
pub async fn run(spec: &CheckSpec, ctx: &StepCtx<'_>) -> StepOutcome {
    let kind = spec.kind();
    let started = Instant::now();
    let deadline = ctx.step.timeout.map(|t| started + t);

    // Templates first: a missing value fails the step before anything is sent.
    let prepared = (|| {
        let expect = spec
            .expect
            .iter()
            .map(|a| Expectation::render(a, ctx.scope, kind))
            .collect::<Result<Vec<_>, _>>()?;
        let until = spec
            .until
            .iter()
            .map(|a| Expectation::render(a, ctx.scope, kind))
            .collect::<Result<Vec<_>, _>>()?;
        let takes = spec
            .captures
            .iter()
            .map(|c| Take::render(c, ctx.scope))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, String>((expect, until, takes))
    })();
    // Where the step is written, for errors the plan can fix.
    let at = ctx.place();
    let (expect, until, takes) = match prepared {
        Ok(p) => p,
        Err(e) => return StepOutcome::failed(format!("cannot prepare the check ({at}): {e}")),
    };
    let max_body = match &spec.target {
        CheckTarget::Http(h) => h.max_body,
        _ => stagegate_plan::check::DEFAULT_MAX_BODY,
    };
    let (needs, hash_sent) = needs(spec, max_body);
    let observer = match Observer::new(spec, ctx, needs, hash_sent) {
        Ok(o) => o,
        Err(e) => return StepOutcome::failed(format!("cannot prepare the check ({at}): {e}")),
    };
    let target = observer.target();

    if let (CheckTarget::Http(_), Some(r), Observer::Http(p)) =
        (&spec.target, spec.repeat, &observer)
    {
        return run_repeat(p, expect, r, ctx, &target, started).await;
    }

    let policy = PollPolicy {
        attempts: Some(
            spec.retry
                .map(|r| r.attempts)
                .unwrap_or(ctx.step.retries + 1),
        ),
        interval: spec
            .retry
            .map(|r| r.interval)
            .unwrap_or(ctx.step.retry_delay),
        deadline: ctx.step.timeout,
    };
    let attempts_max = policy.attempts.unwrap_or(1);
    let result = poll(
        &policy,
        ctx.cancel,
        |_| {
            let (observer, expect, until, takes) = (&observer, &expect, &until, &takes);
            async move {
                let tried = attempt(observer, ctx, expect, until, takes, deadline).await;
                let until_ok = tried.until.iter().all(|r| r.passed);
                let all_ok = tried.error.is_none() && until_ok && tried.failed().next().is_none();
                if all_ok {
                    Attempt::Done(tried)
                } else if tried.timed_out
                    || (!until.is_empty() && until_ok && tried.error.is_none())
                {
                    // The `until` condition held: the expectations are what they are.
                    Attempt::Stop(tried)
                } else {
                    Attempt::Again(tried)
                }
            }
        },
        |n, tried: &Tried| {
            ctx.events.emit(Event::StepRetrying {
                step: ctx.step_ref.clone(),
                attempt: n,
                attempts: attempts_max,
                error: tried.mask.scrub(&tried.summary(&target)),
            });
        },
    )
    .await;

    let (tried, attempts, status, gave_up) = match result {
        Ok(p) => (p.value, p.attempts, StepStatus::Passed, None),
        Err(g) => {
            let attempts = g.attempts();
            let cancelled = matches!(g, GaveUp::Cancelled { .. }) || ctx.cancel.is_cancelled();
            let exhausted = matches!(g, GaveUp::Exhausted { .. });
            // Polling stopped before its attempts were spent: the step's timeout ended it.
            let out_of_time = exhausted && attempts < attempts_max
                || deadline.is_some_and(|d| Instant::now() >= d);
            match g.into_last() {
                Some(t) => {
                    let status = if cancelled {
                        StepStatus::Cancelled
                    } else if t.timed_out || out_of_time {
                        StepStatus::TimedOut
                    } else {
                        StepStatus::Failed
                    };
                    (t, attempts, status, Some(exhausted))
                }
                None => return StepOutcome::new(StepStatus::Cancelled),
            }
        }
    };
    finish(
        spec, ctx, &observer, tried, attempts, status, gave_up, &target, started,
    )
}

/// Builds the step's outcome from the last attempt and writes the step's log.
#[allow(clippy::too_many_arguments)]
fn finish(
    spec: &CheckSpec,
    ctx: &StepCtx<'_>,
    observer: &Observer,
    tried: Tried,
    attempts: u32,
    status: StepStatus,
    exhausted: Option<bool>,
    target: &str,
    started: Instant,
) -> StepOutcome {
    let mut log = vec![format!("> {target}")];
    if let Some(o) = &tried.obs {
        log.extend(observed_lines(o, spec.kind()));
    }
    if let Some(e) = &tried.error {
        log.push(format!("! {e}"));
    }
    // The tail is what was seen; the assertions are in the details.
    let tail = log
        .iter()
        .map(|l| tried.mask.scrub(l))
        .collect::<Vec<_>>()
        .join("\n");
    for r in tried.until.iter().chain(&tried.results) {
        log.push(format!(
            "{} {}",
            if r.passed { "ok  " } else { "FAIL" },
            r.line()
        ));
    }
    let error = if status == StepStatus::Passed {
        None
    } else if status == StepStatus::TimedOut {
        Some(format!(
            "the check did not finish within its timeout of {}: {}",
            http::fmt_duration(ctx.step.timeout.unwrap_or_default()),
            tried.summary(target)
        ))
    } else {
        let mut e = tried.summary(target);
        if attempts > 1 && exhausted == Some(true) {
            e = format!("after {attempts} attempts, {e}");
        }
        Some(e)
    };
    // The log holds what the secret captures of this very step revealed: mask them too.
    if let Ok(mut f) = crate::process::append_private(&ctx.log) {
        for l in &log {
            let _ = writeln!(f, "{}", tried.mask.scrub(l));
        }
    }

    let details = CheckDetails {
        check: spec.kind().to_string(),
        target: target.to_string(),
        attempts: Some(attempts),
        duration_ms: started.elapsed().as_millis() as u64,
        assertions: tried.results.clone(),
        until: tried.until.clone(),
        observed: tried.obs.as_ref().map(observed),
        captures: spec
            .captures
            .iter()
            .map(|c| CaptureNote {
                name: c.name.clone(),
                from: c.source.describe(),
                secret: c.secret,
            })
            .collect(),
        random_seeds: match observer {
            Observer::Http(p) => p.seeds.clone(),
            _ => Vec::new(),
        },
        repeat: None,
    };
    let mut out = StepOutcome::new(status);
    out.attempts = attempts;
    out.exit_code = tried.obs.as_ref().and_then(|o| o.exit_code);
    out.tail = tail;
    out.error = error.map(|e| tried.mask.scrub(&e));
    // Outputs of a failed check are not kept for later steps (the executor keeps those of
    // passing steps only), but its secret ones must still join the scrubber.
    out.outputs = tried.outputs;
    out.secret_outputs = tried.secret;
    out.details = StepDetails::Check(Box::new(details));
    out
}

fn observed_lines(o: &Observation, kind: &str) -> Vec<String> {
    let mut lines = Vec::new();
    match kind {
        "http" => {
            let mut l = format!("< {}", o.status.map(|s| s.to_string()).unwrap_or_default());
            if let Some(b) = &o.body {
                l.push_str(&format!(
                    " ({} in {})",
                    human_bytes(b.len),
                    http::fmt_duration(o.duration)
                ));
                if let Some(p) = &b.saved {
                    l.push_str(&format!(", saved to {}", p.display()));
                }
            }
            lines.push(l);
            if let Some(b) = &o.body
                && b.len > 0
            {
                lines.push(format!("< {}", b.preview()));
            }
        }
        "command" => {
            if let Some(b) = &o.body
                && b.len > 0
            {
                lines.push(format!("stdout: {}", b.preview()));
            }
            if let Some(b) = &o.stderr
                && b.len > 0
            {
                lines.push(format!("stderr: {}", b.preview()));
            }
            lines.push(match o.exit_code {
                Some(c) => format!("exit code {c} after {}", http::fmt_duration(o.duration)),
                None => o.exit_note.clone().unwrap_or_default(),
            });
        }
        "tcp" => lines.push(format!(
            "{} after {}",
            if o.open == Some(true) {
                "open"
            } else {
                "closed"
            },
            http::fmt_duration(o.duration)
        )),
        "log" => lines.push(format!("scanned {} lines", o.lines.len())),
        "prometheus" => {
            lines.push(format!(
                "{} series in {}",
                o.series.len(),
                http::fmt_duration(o.duration)
            ));
            for s in o.series.iter().take(10) {
                let values: Vec<String> = s
                    .points
                    .iter()
                    .rev()
                    .take(5)
                    .map(|p| expect::fmt_value(p.1))
                    .collect();
                lines.push(format!("  {} {}", s.label_text(), values.join(" ")));
            }
        }
        "file" => {
            if let Some(b) = &o.body {
                lines.push(format!("read {}", human_bytes(b.len)));
            }
        }
        _ => {}
    }
    lines
}

fn observed(o: &Observation) -> ObservedSummary {
    ObservedSummary {
        duration_ms: o.duration.as_millis() as u64,
        status: o.status,
        bytes: o.body.as_ref().map(|b| b.len),
        sha256: o.body.as_ref().and_then(|b| b.sha256.clone()),
        saved: o
            .body
            .as_ref()
            .and_then(|b| b.saved.as_ref())
            .map(|p| p.display().to_string()),
        sent_sha256: o.sent_sha256.clone(),
        exit_code: o.exit_code,
        open: o.open,
        lines: (!o.lines.is_empty()).then_some(o.lines.len() as u64),
    }
}

/// One attempt: observe, capture, evaluate.
async fn attempt(
    observer: &Observer,
    ctx: &StepCtx<'_>,
    expect: &[Expectation],
    until: &[Expectation],
    takes: &[Take],
    deadline: Option<Instant>,
) -> Tried {
    let word = observer.word();
    let mut mask = ctx.scrubber.clone();
    let mut tried = Tried {
        obs: None,
        error: None,
        timed_out: false,
        until: Vec::new(),
        results: Vec::new(),
        outputs: BTreeMap::new(),
        secret: Vec::new(),
        mask: mask.clone(),
    };
    let mut obs = match observer.observe(ctx, deadline).await {
        Ok(o) => o,
        Err(Observed::Failed(e)) => {
            tried.error = Some(e);
            return tried;
        }
        Err(Observed::TimedOut(e)) => {
            tried.error = Some(e);
            tried.timed_out = true;
            return tried;
        }
    };
    let mut capture_failures = Vec::new();
    for t in takes {
        match t.take(&obs, word) {
            Ok(v) => {
                if t.secret {
                    mask.add(&v);
                    tried.secret.push(t.name.clone());
                }
                tried.outputs.insert(t.name.clone(), v);
            }
            Err(e) => capture_failures.push(AssertionResult {
                name: format!("capture {}", t.name),
                expected: format!("a value from {}", t.from),
                actual: e,
                passed: false,
            }),
        }
    }
    obs.set_mask(mask.clone());
    tried.until = until.iter().map(|e| e.evaluate(&obs, word)).collect();
    tried.results = expect.iter().map(|e| e.evaluate(&obs, word)).collect();
    tried
        .results
        .extend(capture_failures.into_iter().map(|mut f| {
            f.actual = mask.scrub(&f.actual);
            f
        }));
    tried.mask = mask;
    tried.obs = Some(obs);
    tried
}

/// Why an attempt saw nothing.
pub enum Observed {
    Failed(String),
    /// The step's timeout passed while observing.
    TimedOut(String),
}

/// The prepared side of each check kind.
enum Observer {
    Http(Arc<http::Prepared>),
    Command(command::Prepared),
    Tcp(String),
    Log(log::Prepared),
    File(file::Prepared),
    Prometheus(prom::Prepared),
}

impl Observer {
    fn new(
        spec: &CheckSpec,
        ctx: &StepCtx<'_>,
        needs: BodyNeeds,
        hash_sent: bool,
    ) -> Result<Self, String> {
        let dir = ctx.plan.dir.as_path();
        Ok(match &spec.target {
            CheckTarget::Http(h) => Observer::Http(Arc::new(http::Prepared::new(
                h,
                ctx.scope,
                dir,
                ctx.step.timeout,
                needs,
                hash_sent,
            )?)),
            CheckTarget::Command(script) => {
                Observer::Command(command::Prepared::new(ctx, &script.value, needs)?)
            }
            CheckTarget::Tcp(addr) => Observer::Tcp(
                ctx.scope
                    .render(&addr.value)
                    .map_err(|e| format!("tcp address: {e}"))?,
            ),
            CheckTarget::Log(l) => Observer::Log(log::Prepared::new(ctx, l)?),
            CheckTarget::File(files) => Observer::File(file::Prepared::new(ctx, files, needs)?),
            CheckTarget::Prometheus(q) => {
                Observer::Prometheus(prom::Prepared::new(q, ctx.scope, ctx.step.timeout)?)
            }
        })
    }

    /// What assertions call what the check received: a command's `stdout`, else `body`.
    fn word(&self) -> &'static str {
        match self {
            Observer::Command(_) => "stdout",
            _ => "body",
        }
    }

    /// What the check looks at, for messages: `GET http://…`, `$ cmd`, `tcp host:port`.
    fn target(&self) -> String {
        match self {
            Observer::Http(p) => p.target.clone(),
            Observer::Command(c) => format!("$ {}", expect::short(&Default::default(), &c.script)),
            Observer::Tcp(a) => format!("tcp {a}"),
            Observer::Log(l) => l.target(),
            Observer::File(f) => f.target(),
            Observer::Prometheus(p) => p.target(),
        }
    }

    async fn observe(
        &self,
        ctx: &StepCtx<'_>,
        deadline: Option<Instant>,
    ) -> Result<Observation, Observed> {
        match self {
            Observer::Http(p) => {
                within(deadline, async {
                    p.exchange(ctx.cancel).await.map_err(Observed::Failed)
                })
                .await
            }
            Observer::Command(c) => c.run(ctx, deadline).await,
            Observer::Tcp(addr) => within(deadline, tcp::connect(addr, deadline)).await,
            Observer::Log(l) => l.read(ctx, deadline).await,
            Observer::File(f) => {
                within(deadline, async { f.read().await.map_err(Observed::Failed) }).await
            }
            Observer::Prometheus(p) => within(deadline, p.observe()).await,
        }
    }
}

/// Runs `fut` until the step's deadline, if there is one.
async fn within<F>(deadline: Option<Instant>, fut: F) -> Result<Observation, Observed>
where
    F: std::future::Future<Output = Result<Observation, Observed>>,
{
    match deadline {
        None => fut.await,
        Some(d) => match tokio::time::timeout_at(d.into(), fut).await {
            Ok(r) => r,
            Err(_) => Err(Observed::TimedOut(
                "no answer within the time allowed (the step's `timeout`; in a bake, until the next round)".into(),
            )),
        },
    }
}

/// `repeat`: the same request many times; each answer is evaluated, the step passes when
/// every one passes. Assertions are reported once each, with how many answers failed them.
async fn run_repeat(
    prepared: &Arc<http::Prepared>,
    expect: Vec<Expectation>,
    r: stagegate_plan::check::RepeatSpec,
    ctx: &StepCtx<'_>,
    target: &str,
    started: Instant,
) -> StepOutcome {
    let names: Vec<(String, String)> = expect
        .iter()
        .map(|e| match e {
            Expectation::Value { name, expected, .. }
            | Expectation::LogAbsent { name, expected, .. }
            | Expectation::LogPresent { name, expected, .. } => (name.clone(), expected.clone()),
        })
        .collect();
    let work = http::repeat(
        prepared.clone(),
        Arc::new(expect),
        r.count,
        r.concurrency,
        Arc::new(ctx.scrubber.clone()),
        ctx.cancel.child_token(),
    );
    let tally = match ctx.step.timeout {
        Some(t) => tokio::time::timeout(t, work).await.ok(),
        None => Some(work.await),
    };
    let Some(t) = tally else {
        return StepOutcome {
            status: StepStatus::TimedOut,
            ..StepOutcome::failed(format!(
                "{target}: {} requests did not finish within the step's timeout of {}; raise the step's `timeout` or lower `repeat` (or `concurrency`, if the service slows down when many requests come at once)",
                r.count,
                http::fmt_duration(ctx.step.timeout.unwrap_or_default())
            ))
        };
    };
    let results: Vec<AssertionResult> = names
        .into_iter()
        .zip(&t.failures)
        .map(|((name, expected), (failed, first))| AssertionResult {
            name,
            expected,
            actual: match first {
                None => format!("held for all {} answers", t.answered),
                Some(a) => format!(
                    "failed for {failed} of {} answers; the first: {a}",
                    t.answered
                ),
            },
            passed: *failed == 0 && t.answered > 0,
        })
        .collect();
    let secs = t.elapsed.as_secs_f64().max(1e-9);
    let rate = t.sent as f64 / secs;
    let details = CheckDetails {
        check: "http".into(),
        target: target.to_string(),
        assertions: results.clone(),
        repeat: Some(RepeatTotals {
            count: r.count as u64,
            concurrency: r.concurrency as u64,
            sent: t.sent as u64,
            answered: t.answered as u64,
            passed: t.passed as u64,
            errors: t.errors as u64,
            duration_ms: t.elapsed.as_millis() as u64,
            checks_per_second: (rate * 10.0).round() / 10.0,
        }),
        duration_ms: started.elapsed().as_millis() as u64,
        ..CheckDetails::default()
    };
    let summary = format!(
        "> {target} × {} ({} at a time)\n{} of {} answers passed every assertion; {} errors; {:.0} checks/s",
        r.count, r.concurrency, t.passed, t.sent, t.errors, rate
    );
    let cancelled = ctx.cancel.is_cancelled();
    let ok = t.passed == r.count && t.errors == 0 && !cancelled;
    if let Ok(mut f) = crate::process::append_private(&ctx.log) {
        let _ = writeln!(f, "{}", ctx.scrubber.scrub(&summary));
        for r in &results {
            let _ = writeln!(
                f,
                "{} {}",
                if r.passed { "ok  " } else { "FAIL" },
                ctx.scrubber.scrub(&r.line())
            );
        }
    }
    let mut out = StepOutcome::new(if ok {
        StepStatus::Passed
    } else if cancelled {
        StepStatus::Cancelled
    } else {
        StepStatus::Failed
    });
    out.tail = summary;
    if !ok {
        let mut lines: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.line())
            .collect();
        if let Some(e) = &t.first_error {
            lines.insert(0, format!("{} requests failed; the first: {e}", t.errors));
        }
        out.error = Some(format!(
            "{} of {} answers failed: {}",
            t.sent - t.passed,
            r.count,
            lines.join("; ")
        ));
    }
    out.details = StepDetails::Check(Box::new(details));
    out
}

/// A check prepared once and observed many times: a measurement of a `watch` step.
pub(crate) struct Probe {
    observer: Observer,
    expect: Vec<Expectation>,
    /// What it looks at, in words (`GET http://…/health`, `prometheus Q at URL`).
    pub target: String,
}

/// What one observation of a [`Probe`] found.
pub(crate) struct ProbeSample {
    /// The check could not observe at all.
    pub error: Option<String>,
    pub results: Vec<AssertionResult>,
    pub obs: Option<Observation>,
}

impl ProbeSample {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.results.iter().all(|r| r.passed)
    }

    /// The failed assertions (or the error), in one line.
    pub fn problem(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        self.results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.line())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Probe {
    pub fn new(spec: &CheckSpec, ctx: &StepCtx<'_>) -> Result<Self, String> {
        let kind = spec.kind();
        let expect = spec
            .expect
            .iter()
            .map(|a| Expectation::render(a, ctx.scope, kind))
            .collect::<Result<Vec<_>, _>>()?;
        let max_body = match &spec.target {
            CheckTarget::Http(h) => h.max_body,
            _ => stagegate_plan::check::DEFAULT_MAX_BODY,
        };
        let (needs, hash_sent) = needs(spec, max_body);
        let observer = Observer::new(spec, ctx, needs, hash_sent)?;
        let target = observer.target();
        Ok(Probe {
            observer,
            expect,
            target,
        })
    }

    /// The PromQL as sent, for a `prometheus` probe.
    pub fn query(&self) -> Option<&str> {
        match &self.observer {
            Observer::Prometheus(p) => Some(&p.query),
            _ => None,
        }
    }

    /// Observes once, by `deadline`, and evaluates the expectations.
    pub async fn sample(&self, ctx: &StepCtx<'_>, deadline: Instant) -> ProbeSample {
        let t = attempt(&self.observer, ctx, &self.expect, &[], &[], Some(deadline)).await;
        ProbeSample {
            error: t.error,
            results: t.results,
            obs: t.obs,
        }
    }
}
