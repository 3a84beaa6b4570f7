//! `watch` steps: the bake window.
//!
//! Every `every`, each measurement is sampled once (all of them at the same time) and the
//! sample is judged:
//!
//! - **pass**: the `pass` condition holds (or, with only `fail`, the `fail` one does not),
//!   or, for a check kind, every assertion of its `expect` holds;
//! - **fail**: the `fail` condition holds (or, with only `pass`, the `pass` one does not),
//!   or a check's assertion fails. With `sustained`, a failing sample counts only once the
//!   failure has lasted that long; until then it is *breaching*;
//! - **inconclusive**: both `pass` and `fail` are given and neither holds;
//! - **no data**: the query returned no series, or only NaN: counted as `no_data` says
//!   (inconclusive by default), never a silent pass;
//! - **error**: the source itself failed (Prometheus unreachable or refusing the query).
//!
//! One failure more than `failure_limit` fails the watch at once (the deploy rolls back),
//! as do more than `consecutive_error_limit` errors in a row; one inconclusive sample more
//! than `inconclusive_limit` makes it inconclusive at once. Otherwise the verdict comes when
//! the window ends. An inconclusive watch waits for a person's decision
//! (`stagegate decide`) when the run was told to, and otherwise ends the run as awaiting a
//! decision, the new release left running.
//!
//! Each sample is an [`Event::Measurement`] (stored with the run's events); the step's
//! details hold every measurement's tally and the reason for the verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stagegate_plan::check::CmpOp;
use stagegate_plan::watch::{Measurement, NoData, WatchSpec};
use stagegate_plan::yaml::fmt_duration;

use crate::check::expect::fmt_value;
use crate::check::{Probe, ProbeSample};
use crate::details::StepDetails;
use crate::event::{Event, Millis, RoundSample, StepStatus, now_ms};
use crate::step::{StepCtx, StepOutcome};

/// A person's decision on an inconclusive watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub pass: bool,
    pub actor: String,
    pub reason: String,
    pub at: Millis,
}

/// Where decisions come from (the state store, written by `stagegate decide`).
pub trait DecisionSource: Send + Sync {
    fn poll<'a>(
        &'a self,
        deployment_id: i64,
        step_id: &'a str,
    ) -> crate::driver::DriverFuture<'a, Option<Decision>>;
}

/// Whether and where an inconclusive watch waits for a decision.
#[derive(Clone, Default)]
pub struct Decisions {
    pub source: Option<Arc<dyn DecisionSource>>,
    /// Wait for the decision in this run (`--wait-decision`); without it the run ends as
    /// awaiting a decision.
    pub wait: bool,
    /// Give up waiting after this long: the watch then fails.
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("source", &self.source.is_some())
            .field("wait", &self.wait)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A measurement's baseline: the values it is compared with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// `before` or `last_pass`.
    pub from: String,
    /// Where the values come from, in words: `the same query over the 10m before the
    /// deploy`, `deployment #12's bake`.
    pub source: String,
    pub values: Vec<f64>,
}

impl Baseline {
    /// The value relative conditions are computed from: the median of the values.
    pub fn median(&self) -> Option<f64> {
        crate::stats::summarize(&self.values).map(|s| s.median)
    }
}

/// The longest `baseline: before` window when none is given: the watch's, at most this.
const MAX_BEFORE_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many points per baseline range query (Prometheus refuses more than 11,000).
const MAX_BEFORE_POINTS: u64 = 10_000;

/// Captures every `baseline: before` of the plan's watch steps: the same query as a range
/// query over the window before now (the previous release, since nothing has changed yet).
/// What fails is recorded as the reason there is no baseline, and said as a warning.
pub async fn capture_before(
    plan: &stagegate_plan::Plan,
    scope: &stagegate_plan::Scope,
    inputs: &mut crate::step::RunInputs,
    events: &crate::event::Events,
) {
    use stagegate_plan::watch::BaselineFrom;
    let scrubber = scope.scrubber();
    for (_, step) in plan.steps() {
        let stagegate_plan::StepKind::Watch(spec) = &step.kind else {
            continue;
        };
        for m in &spec.measurements {
            let Some(b) = m
                .baseline
                .as_ref()
                .filter(|b| b.from == BaselineFrom::Before)
            else {
                continue;
            };
            let stagegate_plan::check::CheckTarget::Prometheus(q) = &m.source.target else {
                continue;
            };
            let window = b
                .window
                .unwrap_or_else(|| spec.duration.min(MAX_BEFORE_WINDOW));
            let step_len = spec
                .every
                .max(Duration::from_millis(
                    (window.as_millis() as u64 / MAX_BEFORE_POINTS).max(1),
                ))
                .max(Duration::from_secs(1));
            let got = match crate::check::prom::Prepared::new(q, scope, None) {
                Err(e) => Err(format!("the query cannot be sent before the deploy: {e}")),
                Ok(p) => {
                    let p = p.over(window, step_len);
                    match p.observe().await {
                        Ok(obs) => {
                            let values: Vec<f64> = obs
                                .series
                                .iter()
                                .flat_map(|s| s.points.iter().map(|p| p.1))
                                .filter(|v| v.is_finite())
                                .collect();
                            if values.is_empty() {
                                Err(format!(
                                    "the query returned no data over the {} before the deploy",
                                    fmt_duration(window)
                                ))
                            } else {
                                Ok(Baseline {
                                    from: "before".into(),
                                    source: format!(
                                        "the same query over the {} before the deploy, a point every {}",
                                        fmt_duration(window),
                                        fmt_duration(step_len)
                                    ),
                                    values,
                                })
                            }
                        }
                        Err(
                            crate::check::Observed::Failed(e) | crate::check::Observed::TimedOut(e),
                        ) => Err(format!("capturing it before the deploy failed: {e}")),
                    }
                }
            };
            if let Err(e) = &got {
                events.emit(Event::Warning {
                    message: scrubber.scrub(&format!(
                        "step `{}`, measurement `{}`: no baseline: {e}",
                        step.id, m.name
                    )),
                });
            }
            inputs
                .watch_baselines
                .insert((step.id.clone(), m.name.clone()), got);
        }
    }
}

/// The verdict of a watch or of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The source failed too many times in a row.
    Error,
    Inconclusive,
    /// Interrupted before the window ended.
    Cancelled,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Cancelled => "cancelled",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Inconclusive => 1,
            Verdict::Cancelled => 2,
            Verdict::Error => 3,
            Verdict::Fail => 4,
        }
    }
}

/// How one sample was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleState {
    Pass,
    Fail,
    /// The failure condition holds but has not lasted `sustained` yet.
    Breaching,
    Inconclusive,
    NoData,
    Error,
}

impl SampleState {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleState::Pass => "pass",
            SampleState::Fail => "fail",
            SampleState::Breaching => "breaching",
            SampleState::Inconclusive => "inconclusive",
            SampleState::NoData => "no_data",
            SampleState::Error => "error",
        }
    }
}

/// A watch step's record: `{"watch": {...}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchDetails {
    pub watch: WatchSummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchSummary {
    /// `pass`, `fail`, `error`, `inconclusive` or `cancelled`.
    pub verdict: String,
    /// Why, in one sentence or a few.
    pub reason: String,
    pub window_ms: u64,
    pub every_ms: u64,
    pub elapsed_ms: u64,
    /// Sampling rounds taken.
    pub rounds: u32,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    pub consecutive_error_limit: u32,
    pub measurements: Vec<MeasurementSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MeasurementSummary {
    pub name: String,
    /// `prometheus`, `http`, `command`, ...
    pub kind: String,
    /// What was measured, as sent: the PromQL query and server, or the check's target.
    pub target: String,
    /// The conditions, as written: `pass < 0.01; fail > 0.05 sustained 10s`.
    pub condition: String,
    pub samples: u32,
    pub passed: u32,
    pub failed: u32,
    pub breaching: u32,
    pub inconclusive: u32,
    pub no_data: u32,
    pub errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    pub verdict: String,
    /// The sample that decided, or why the measurement passed.
    pub reason: String,
    /// What `vs baseline` conditions and `compare` measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSummary>,
    /// The Mann-Whitney comparison with the baseline, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaselineSummary {
    /// `before` or `last_pass`.
    pub from: String,
    /// Where its values came from, or why there are none.
    pub source: String,
    pub samples: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
}

/// A measurement with its prepared probe and running tally.
struct Tally<'a> {
    m: &'a Measurement,
    probe: Probe,
    pass: Option<(CmpOp, f64)>,
    fail: Option<(CmpOp, f64)>,
    no_data: NoData,
    sum: MeasurementSummary,
    consecutive_errors: u32,
    breach_since: Option<Instant>,
    verdict: Option<Verdict>,
    /// The baseline, when the measurement has one and it was found.
    baseline: Option<Baseline>,
    /// Why a measurement that needs a baseline has none.
    no_baseline: Option<String>,
    /// Every value sampled, for `compare`.
    values: Vec<f64>,
    /// How long one sample may take.
    budget: Duration,
}

/// Runs a watch step to its verdict.
pub async fn run(spec: &WatchSpec, ctx: &StepCtx<'_>) -> StepOutcome {
    let started = Instant::now();
    let at = ctx.place();
    let mut tallies = Vec::with_capacity(spec.measurements.len());
    for m in &spec.measurements {
        match prepare(spec, m, ctx) {
            Ok(t) => tallies.push(t),
            Err(e) => {
                return StepOutcome::failed(format!(
                    "cannot prepare measurement `{}` ({at}): {e}",
                    m.name
                ));
            }
        }
    }
    let end = started + spec.duration;
    let mut ticker = tokio::time::interval(spec.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u32;
    let mut cancelled = false;
    ctx.events.emit(Event::StepProgress {
        step: ctx.step_ref.clone(),
        message: format!(
            "watching {} measurement{} for {}, every {}",
            tallies.len(),
            if tallies.len() == 1 { "" } else { "s" },
            fmt_duration(spec.duration),
            fmt_duration(spec.every)
        ),
        figures: false,
    });
    'window: loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // The window ends on time even when `for` is not a multiple of `every`.
            _ = tokio::time::sleep_until(end.into()), if rounds > 0 => break 'window,
            _ = ctx.cancel.cancelled() => { cancelled = true; break 'window; }
        }
        let now = Instant::now();
        if now >= end && rounds > 0 {
            break;
        }
        rounds += 1;
        // A sample may take until the next round (at least a second), or its query's own
        // `timeout` when that is longer.
        let samples = tokio::select! {
            s = futures_util::future::join_all(
                tallies.iter().map(|t| t.probe.sample(ctx, now + t.budget)),
            ) => s,
            _ = ctx.cancel.cancelled() => { cancelled = true; break 'window; }
        };
        let now = Instant::now();
        let mut line = Vec::new();
        let mut round = Vec::with_capacity(tallies.len());
        for (t, s) in tallies.iter_mut().zip(samples) {
            let (state, value, detail) = judge(t, &s, now);
            t.count(spec, state, value, &detail, now);
            round.push(RoundSample {
                state,
                value: value.filter(|v| v.is_finite()),
                detail: (state != SampleState::Pass).then(|| ctx.scrubber.scrub(&detail)),
            });
            ctx.events.emit(Event::Measurement {
                step: ctx.step_ref.clone(),
                name: t.m.name.clone(),
                round: rounds,
                state,
                value: value.filter(|v| v.is_finite()),
                detail: ctx.scrubber.scrub(&detail),
                at: now_ms(),
            });
            line.push(format!(
                "{} {}{}",
                t.m.name,
                value
                    .map(fmt_value)
                    .unwrap_or_else(|| if state == SampleState::Pass {
                        "ok".into()
                    } else {
                        String::new()
                    }),
                match state {
                    SampleState::Pass => String::new(),
                    s => format!(" ({})", s.as_str()),
                }
            ));
        }
        ctx.events.emit(Event::MeasurementRound {
            step_id: ctx.step_ref.id.clone(),
            round: rounds,
            at: now_ms(),
            samples: round,
        });
        let left = end.saturating_duration_since(now);
        let failures: u32 = tallies.iter().map(|t| t.sum.failed).sum();
        ctx.events.emit(Event::StepProgress {
            step: ctx.step_ref.clone(),
            message: ctx.scrubber.scrub(&format!(
                "{} left: {}; failures {failures}",
                fmt_duration(Duration::from_secs(left.as_secs())),
                line.join(", ")
            )),
            figures: true,
        });
        if tallies.iter().any(|t| t.verdict.is_some()) {
            break;
        }
        if now >= end {
            break;
        }
    }
    // The window ended (or a measurement decided early): the rest are judged on what they saw.
    for t in &mut tallies {
        if !cancelled && t.verdict.is_none() {
            compare(t);
        }
        if t.verdict.is_none() {
            let v = if cancelled {
                Verdict::Cancelled
            } else if t.sum.samples == 0 {
                t.sum.reason = "no sample was taken".into();
                Verdict::Inconclusive
            } else if let Some(since) = t.breach_since {
                // Still failing when the window closed, for less than `sustained`.
                t.sum.reason = format!(
                    "still failing when the window ended, for {} of the {} that would count",
                    fmt_duration(Duration::from_secs(since.elapsed().as_secs())),
                    fmt_duration(t.m.sustained.unwrap_or_default())
                );
                Verdict::Inconclusive
            } else if t.consecutive_errors > 0 {
                // The source was failing when the window closed: nothing says it passes now.
                t.sum.reason = format!(
                    "its source failed for the last {} sample{} of the window (limit {} in a row): it cannot be judged",
                    t.consecutive_errors,
                    if t.consecutive_errors == 1 { "" } else { "s" },
                    spec.consecutive_error_limit
                );
                Verdict::Inconclusive
            } else if t.sum.passed == 0 {
                t.sum.reason = format!(
                    "none of its {} samples passed ({} errors, {} breaching, {} inconclusive, {} no data)",
                    t.sum.samples, t.sum.errors, t.sum.breaching, t.sum.inconclusive, t.sum.no_data
                );
                Verdict::Inconclusive
            } else {
                if t.sum.reason.is_empty() {
                    t.sum.reason = format!(
                        "{} of {} samples passed within the limits",
                        t.sum.passed, t.sum.samples
                    );
                }
                Verdict::Pass
            };
            t.verdict = Some(v);
        }
    }
    let verdict = tallies
        .iter()
        .filter_map(|t| t.verdict)
        .max_by_key(|v| v.rank())
        .unwrap_or(Verdict::Pass);
    let deciding: Vec<String> = tallies
        .iter()
        .filter(|t| t.verdict == Some(verdict) && verdict != Verdict::Pass)
        .map(|t| format!("`{}`: {}", t.m.name, t.sum.reason))
        .collect();
    let window = format!(
        "{} of a {} window, {rounds} round{} every {}",
        fmt_duration(Duration::from_millis(
            started.elapsed().as_millis() as u64 / 1000 * 1000
        )),
        fmt_duration(spec.duration),
        if rounds == 1 { "" } else { "s" },
        fmt_duration(spec.every)
    );
    let reason = match verdict {
        Verdict::Pass => format!("every measurement passed ({window})"),
        Verdict::Fail => format!("failed after {window}: {}", deciding.join("; ")),
        Verdict::Error => format!(
            "the measurement source failed too often after {window}: {}",
            deciding.join("; ")
        ),
        Verdict::Inconclusive => format!("inconclusive after {window}: {}", deciding.join("; ")),
        Verdict::Cancelled => format!("interrupted after {window}"),
    };
    let mut summary = WatchSummary {
        verdict: verdict.as_str().into(),
        reason: ctx.scrubber.scrub(&reason),
        window_ms: spec.duration.as_millis() as u64,
        every_ms: spec.every.as_millis() as u64,
        elapsed_ms: started.elapsed().as_millis() as u64,
        rounds,
        failure_limit: spec.failure_limit,
        inconclusive_limit: spec.inconclusive_limit,
        consecutive_error_limit: spec.consecutive_error_limit,
        measurements: tallies
            .into_iter()
            .map(|mut t| {
                t.sum.verdict = t.verdict.unwrap_or(Verdict::Pass).as_str().into();
                t.sum.reason = ctx.scrubber.scrub(&t.sum.reason);
                t.sum.target = ctx.scrubber.scrub(&t.sum.target);
                t.sum
            })
            .collect(),
        decision: None,
    };
    let mut status = match verdict {
        Verdict::Pass => StepStatus::Passed,
        Verdict::Cancelled => StepStatus::Cancelled,
        _ => StepStatus::Failed,
    };
    let mut error = (verdict != Verdict::Pass).then(|| summary.reason.clone());
    if verdict == Verdict::Inconclusive
        && let Some(source) = ctx.inputs.decisions.source.as_ref()
        && ctx.inputs.decisions.wait
    {
        match wait_for_decision(source.as_ref(), ctx, &summary.reason).await {
            Waited::Decided(d) => {
                status = if d.pass {
                    StepStatus::Passed
                } else {
                    StepStatus::Failed
                };
                error = (!d.pass).then(|| {
                    format!(
                        "{}; {} decided it failed: {}",
                        summary.reason,
                        d.actor,
                        ctx.scrubber.scrub(&d.reason)
                    )
                });
                summary.decision = Some(Decision {
                    reason: ctx.scrubber.scrub(&d.reason),
                    ..d
                });
            }
            Waited::Cancelled => {
                status = StepStatus::Cancelled;
                error = Some(format!(
                    "{}; interrupted while waiting for a decision",
                    summary.reason
                ));
            }
            Waited::TimedOut(t) => {
                // Nobody decided: it counts as failed, and the deploy rolls back.
                summary.verdict = Verdict::Fail.as_str().into();
                error = Some(format!(
                    "{}; nobody decided within {}, so it counts as failed",
                    summary.reason,
                    fmt_duration(t)
                ));
            }
        }
    }
    let tail = summary
        .measurements
        .iter()
        .map(|m| {
            format!(
                "{} [{}]: {} samples, {} passed, {} failed, {} inconclusive, {} no data, {} errors; last {}",
                m.name,
                m.verdict,
                m.samples,
                m.passed,
                m.failed,
                m.inconclusive,
                m.no_data,
                m.errors,
                m.last.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    if let Ok(mut f) = crate::process::append_private(&ctx.log) {
        use std::io::Write as _;
        let _ = writeln!(f, "{}\n{}", summary.reason, ctx.scrubber.scrub(&tail));
    }
    let mut out = StepOutcome::new(status);
    out.attempts = rounds.max(1);
    out.tail = ctx.scrubber.scrub(&tail);
    out.error = error;
    out.details = StepDetails::Watch(Box::new(WatchDetails { watch: summary }));
    out
}

enum Waited {
    Decided(Decision),
    Cancelled,
    TimedOut(Duration),
}

async fn wait_for_decision(source: &dyn DecisionSource, ctx: &StepCtx<'_>, reason: &str) -> Waited {
    ctx.events.emit(Event::DecisionPending {
        deployment_id: ctx.deployment_id,
        step: ctx.step_ref.clone(),
        reason: reason.to_string(),
    });
    let started = Instant::now();
    loop {
        if let Some(d) = source.poll(ctx.deployment_id, &ctx.step_ref.id).await {
            ctx.events.emit(Event::Decided {
                step: ctx.step_ref.clone(),
                pass: d.pass,
                actor: d.actor.clone(),
                reason: ctx.scrubber.scrub(&d.reason),
            });
            return Waited::Decided(d);
        }
        if let Some(t) = ctx.inputs.decisions.timeout
            && started.elapsed() >= t
        {
            return Waited::TimedOut(t);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = ctx.cancel.cancelled() => return Waited::Cancelled,
        }
    }
}

fn prepare<'a>(
    spec: &WatchSpec,
    m: &'a Measurement,
    ctx: &StepCtx<'_>,
) -> Result<Tally<'a>, String> {
    let probe = Probe::new(&m.source, ctx)?;
    let needs_baseline = m.baseline.is_some();
    let (baseline, no_baseline) = if needs_baseline {
        match ctx
            .inputs
            .watch_baselines
            .get(&(ctx.step.id.clone(), m.name.clone()))
        {
            Some(Ok(b)) if b.median().is_some() => (Some(b.clone()), None),
            Some(Ok(_)) => (None, Some("the baseline has no values".to_string())),
            Some(Err(e)) => (None, Some(e.clone())),
            None => (None, Some("no baseline was captured for it".to_string())),
        }
    } else {
        (None, None)
    };
    let median = baseline.as_ref().and_then(Baseline::median);
    let operand =
        |c: &stagegate_plan::watch::Condition, key: &str| -> Result<(CmpOp, f64), String> {
            let text = ctx
                .scope
                .render(&c.operand)
                .map_err(|e| format!("`{key}`: {e}"))?;
            let v = text
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("`{key}`: `{text}` is not a number"))?;
            if c.relative {
                // `+10% vs baseline`: the baseline's median, 10% higher. Without a baseline
                // the condition is not judged (each sample counts as no data).
                return Ok((c.op, median.map_or(f64::NAN, |b| b * (1.0 + v / 100.0))));
            }
            Ok((c.op, v))
        };
    let pass = m
        .pass
        .as_ref()
        .map(|c| operand(&c.value, "pass"))
        .transpose()?;
    let fail = m
        .fail
        .as_ref()
        .map(|c| operand(&c.value, "fail"))
        .transpose()?;
    let mut condition = Vec::new();
    if let Some(p) = &m.pass {
        condition.push(format!("pass {}", p.value.text));
    }
    if let Some(f) = &m.fail {
        condition.push(format!("fail {}", f.value.text));
    }
    if pass.is_none() && fail.is_none() {
        let c: Vec<String> = m
            .source
            .expect
            .iter()
            .map(|a| {
                stagegate_plan::check::describe_assertion(a, m.kind(), &|t| {
                    ctx.scope.render(t).unwrap_or_else(|e| format!("<{e}>"))
                })
            })
            .collect();
        condition.push(format!("expect {}", c.join(", ")));
    }
    if let Some(s) = m.sustained {
        condition.push(format!("failing for {} before it counts", fmt_duration(s)));
    }
    if m.baseline.is_some() {
        condition.push(format!("no baseline is {}", m.no_baseline.as_str()));
    }
    if let Some(c) = &m.compare {
        condition.push(format!(
            "compared with the baseline (Mann-Whitney): {} is worse, alpha {}, effect at least {}%",
            c.direction.as_str(),
            c.alpha,
            fmt_value(c.effect * 100.0)
        ));
    }
    let no_data = m.no_data.unwrap_or(spec.no_data);
    if m.kind() == "prometheus" {
        condition.push(format!("no data is {}", no_data.as_str()));
    }
    let target = match probe.query() {
        Some(_) => probe.target.clone(),
        None => probe.target.clone(),
    };
    Ok(Tally {
        m,
        pass,
        fail,
        no_data,
        sum: MeasurementSummary {
            name: m.name.clone(),
            kind: m.kind().into(),
            target,
            condition: condition.join("; "),
            baseline: m.baseline.as_ref().map(|b| BaselineSummary {
                from: b.from.as_str().into(),
                source: match (&baseline, &no_baseline) {
                    (Some(b), _) => b.source.clone(),
                    (None, Some(why)) => format!("none: {why}"),
                    (None, None) => "none".into(),
                },
                samples: baseline.as_ref().map_or(0, |b| b.values.len()),
                median,
            }),
            ..MeasurementSummary::default()
        },
        probe,
        consecutive_errors: 0,
        breach_since: None,
        verdict: None,
        baseline,
        no_baseline,
        values: Vec::new(),
        budget: {
            let own = match &m.source.target {
                stagegate_plan::check::CheckTarget::Prometheus(q) => q.timeout,
                _ => None,
            };
            spec.every
                .max(Duration::from_secs(1))
                .max(own.unwrap_or_default())
        },
    })
}

/// Judges one sample: its state, its value (prometheus), and a line saying why.
fn judge(t: &mut Tally<'_>, s: &ProbeSample, now: Instant) -> (SampleState, Option<f64>, String) {
    let prom = t.m.kind() == "prometheus";
    if !prom {
        let failing = !s.passed();
        let state = sustain(t, failing, now);
        let detail = if failing {
            s.problem()
        } else {
            "every assertion held".into()
        };
        return (state, None, detail);
    }
    if let Some(e) = &s.error {
        return (SampleState::Error, None, e.clone());
    }
    let obs = match &s.obs {
        Some(o) => o,
        None => return (SampleState::Error, None, "no answer".into()),
    };
    // One value per series; NaN-only series have none.
    let values: Vec<(String, f64)> = obs
        .series
        .iter()
        .filter_map(|se| {
            let pts: Vec<f64> = se.points.iter().map(|p| p.1).collect();
            t.m.reduce.apply(&pts).map(|v| (se.label_text(), v))
        })
        .collect();
    if values.is_empty() {
        let why = if obs.series.is_empty() {
            "no data: the query returned no series".to_string()
        } else {
            format!("no data: {} series, every value NaN", obs.series.len())
        };
        let state = match t.no_data {
            NoData::Pass => SampleState::Pass,
            NoData::Fail => sustain(t, true, now),
            NoData::Inconclusive => SampleState::NoData,
        };
        return (state, None, why);
    }
    if let Some(v) = values.iter().map(|v| v.1).reduce(f64::max) {
        t.values.push(v);
    }
    let relative = t.m.pass.iter().chain(&t.m.fail).any(|c| c.value.relative);
    if relative && let Some(why) = &t.no_baseline {
        let v = values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        let why = format!("no baseline to compare {} with: {why}", fmt_value(v));
        let state = match t.m.no_baseline {
            NoData::Pass => SampleState::Pass,
            NoData::Fail => sustain(t, true, now),
            NoData::Inconclusive => SampleState::NoData,
        };
        return (state, Some(v), why);
    }
    if t.pass.is_none() && t.fail.is_none() {
        // `expect` on a prometheus measurement.
        let failing = !s.passed();
        let state = sustain(t, failing, now);
        let v = values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        let detail = if failing {
            s.problem()
        } else {
            "every assertion held".into()
        };
        return (state, Some(v), detail);
    }
    // Fail when any series meets the failure condition; pass when every series meets the
    // pass condition.
    let fails = |v: f64| match (t.pass, t.fail) {
        (_, Some((op, x))) => op.holds(v, x),
        (Some((op, x)), None) => !op.holds(v, x),
        (None, None) => false,
    };
    let passes = |v: f64| match (t.pass, t.fail) {
        (Some((op, x)), _) => op.holds(v, x),
        (None, Some((op, x))) => !op.holds(v, x),
        (None, None) => true,
    };
    let bad = values.iter().find(|(_, v)| fails(*v));
    let series = |l: &str| {
        if values.len() > 1 {
            format!(" for {l}")
        } else {
            String::new()
        }
    };
    if let Some((labels, v)) = bad {
        let cond = match t.fail {
            Some((op, x)) => format!("{} {}", op.symbol(), fmt_value(x)),
            None => match t.pass {
                Some((op, x)) => format!("not {} {}", op.symbol(), fmt_value(x)),
                None => String::new(),
            },
        };
        let state = sustain(t, true, now);
        return (
            state,
            Some(*v),
            format!("{}{} is {cond}", fmt_value(*v), series(labels)),
        );
    }
    t.breach_since = None;
    let worst = values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
    if values.iter().all(|(_, v)| passes(*v)) {
        (
            SampleState::Pass,
            Some(worst),
            format!("{} holds", fmt_value(worst)),
        )
    } else {
        let (labels, v) = values
            .iter()
            .find(|(_, v)| !passes(*v))
            .cloned()
            .unwrap_or_default();
        (
            SampleState::Inconclusive,
            Some(v),
            format!(
                "{}{} meets neither the pass nor the fail condition",
                fmt_value(v),
                series(&labels)
            ),
        )
    }
}

/// `compare`: the bake's values against the baseline's, at the end of the window.
fn compare(t: &mut Tally<'_>) {
    let Some(spec) = &t.m.compare else {
        return;
    };
    let Some(b) = &t.baseline else {
        let why = t.no_baseline.clone().unwrap_or_default();
        t.sum.comparison = Some(format!("not compared: no baseline ({why})"));
        t.sum.reason = format!("no baseline to compare the bake's samples with: {why}");
        t.verdict = Some(match t.m.no_baseline {
            NoData::Pass => Verdict::Pass,
            NoData::Fail => Verdict::Fail,
            NoData::Inconclusive => Verdict::Inconclusive,
        });
        return;
    };
    let direction = match spec.direction {
        stagegate_plan::watch::Direction::Increase => crate::stats::Direction::Increase,
        stagegate_plan::watch::Direction::Decrease => crate::stats::Direction::Decrease,
        stagegate_plan::watch::Direction::Either => crate::stats::Direction::Either,
    };
    let j = crate::stats::judge(
        &t.values,
        &b.values,
        direction,
        spec.alpha,
        1.0 + spec.effect,
    );
    let line = format!("against {}: {}", b.source, j.reason);
    t.sum.comparison = Some(line.clone());
    match j.verdict {
        crate::stats::Verdict::Pass => {}
        crate::stats::Verdict::Fail => {
            t.sum.reason = format!("compared with the baseline (Mann-Whitney) {line}");
            t.verdict = Some(Verdict::Fail);
        }
        crate::stats::Verdict::Inconclusive => {
            t.sum.reason = format!("compared with the baseline (Mann-Whitney) {line}");
            t.verdict = Some(Verdict::Inconclusive);
        }
    }
}

/// A failing sample counts as a failure only once failing has lasted `sustained`.
fn sustain(t: &mut Tally<'_>, failing: bool, now: Instant) -> SampleState {
    if !failing {
        t.breach_since = None;
        return SampleState::Pass;
    }
    let Some(need) = t.m.sustained else {
        return SampleState::Fail;
    };
    let since = *t.breach_since.get_or_insert(now);
    if now.duration_since(since) >= need {
        SampleState::Fail
    } else {
        SampleState::Breaching
    }
}

impl Tally<'_> {
    fn count(
        &mut self,
        spec: &WatchSpec,
        state: SampleState,
        value: Option<f64>,
        detail: &str,
        now: Instant,
    ) {
        let s = &mut self.sum;
        s.samples += 1;
        if let Some(v) = value.filter(|v| v.is_finite()) {
            s.last = Some(fmt_value(v));
            s.min = Some(s.min.map_or(v, |m| m.min(v)));
            s.max = Some(s.max.map_or(v, |m| m.max(v)));
        } else if state != SampleState::Pass {
            s.last = Some(state.as_str().into());
        }
        if state == SampleState::Error {
            self.consecutive_errors += 1;
        } else {
            self.consecutive_errors = 0;
        }
        let sample = s.samples;
        match state {
            SampleState::Pass => s.passed += 1,
            SampleState::Fail => {
                s.failed += 1;
                if s.failed > spec.failure_limit && self.verdict.is_none() {
                    let lasted = match (self.m.sustained, self.breach_since) {
                        (Some(_), Some(since)) => format!(
                            ", failing for {}",
                            fmt_duration(Duration::from_secs(now.duration_since(since).as_secs()))
                        ),
                        _ => String::new(),
                    };
                    s.reason = format!(
                        "sample {sample}: {detail}{lasted} ({} failure{}, limit {}; {})",
                        s.failed,
                        if s.failed == 1 { "" } else { "s" },
                        spec.failure_limit,
                        s.condition
                    );
                    self.verdict = Some(Verdict::Fail);
                }
            }
            SampleState::Breaching => s.breaching += 1,
            SampleState::Inconclusive | SampleState::NoData => {
                if state == SampleState::NoData {
                    s.no_data += 1;
                } else {
                    s.inconclusive += 1;
                }
                let n = s.inconclusive + s.no_data;
                if n > spec.inconclusive_limit && self.verdict.is_none() {
                    s.reason = format!(
                        "sample {sample}: {detail} ({n} inconclusive, limit {}; {})",
                        spec.inconclusive_limit, s.condition
                    );
                    self.verdict = Some(Verdict::Inconclusive);
                }
            }
            SampleState::Error => {
                s.errors += 1;
                if self.consecutive_errors > spec.consecutive_error_limit && self.verdict.is_none()
                {
                    s.reason = format!(
                        "{} errors in a row (limit {}), the last: {detail}",
                        self.consecutive_errors, spec.consecutive_error_limit
                    );
                    self.verdict = Some(Verdict::Error);
                }
            }
        }
    }
}
