//! `watch:` steps: a bake window in which measurements are taken at an interval and each
//! sample is judged pass, fail or inconclusive (or no data, or an error of the source).
//!
//! ```yaml
//! - name: bake
//!   watch:
//!     for: 10m
//!     every: 30s
//!     failure_limit: 0
//!     measure:
//!       - name: error rate
//!         prometheus: { url: "${{ vars.prometheus }}", query: "sum(rate(...[1m]))" }
//!         pass: "< 0.01"
//!         fail: "> 0.05"
//!         sustained: 5m
//!       - name: health
//!         http: "${{ services.web.url }}/health"
//! ```
//!
//! A measurement is any check kind (`http`, `command`, `tcp`, `log`, `file`, `prometheus`).
//! A `prometheus` measurement is judged by `pass` and/or `fail` conditions on its values;
//! the others by their `expect` (a sample passes when every assertion holds).

use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};

use crate::check::{CHECK_ACTIONS, CheckSpec, CmpOp};
use crate::diagnostic::Span;
use crate::model::StepKind;
use crate::template::Template;
use crate::yaml::{Cx, Spanned, fmt_duration};

const WATCH_KEYS: &[&str] = &[
    "for",
    "every",
    "measure",
    "failure_limit",
    "inconclusive_limit",
    "consecutive_error_limit",
    "no_data",
];
/// Keys a measurement has besides its check action and that check's keys.
const MEASURE_KEYS: &[&str] = &[
    "name",
    "pass",
    "fail",
    "sustained",
    "no_data",
    "reduce",
    "baseline",
    "compare",
    "no_baseline",
];
const BASELINE_KEYS: &[&str] = &["from", "window"];
const COMPARE_KEYS: &[&str] = &["direction", "alpha", "effect"];
/// At most this many measurements per watch.
pub const MAX_MEASUREMENTS: usize = 100;
/// The shortest interval between samples.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub span: Span,
    /// The window: how long the bake lasts.
    pub duration: Duration,
    /// How often every measurement is sampled.
    pub every: Duration,
    /// Failed samples allowed per measurement; one more fails the watch (default 0).
    pub failure_limit: u32,
    /// Inconclusive samples allowed per measurement; one more makes it inconclusive (0).
    pub inconclusive_limit: u32,
    /// Source errors in a row allowed per measurement; one more fails the watch (4).
    pub consecutive_error_limit: u32,
    /// What a sample with no data counts as, unless the measurement says otherwise.
    pub no_data: NoData,
    pub measurements: Vec<Measurement>,
}

#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub span: Span,
    pub source: CheckSpec,
    /// `prometheus` only: the value passes when this holds.
    pub pass: Option<Spanned<Condition>>,
    /// `prometheus` only: the value fails when this holds.
    pub fail: Option<Spanned<Condition>>,
    /// A failing sample counts only once the failure has lasted this long.
    pub sustained: Option<Duration>,
    pub no_data: Option<NoData>,
    /// `prometheus` range queries: how the points of a series become one value.
    pub reduce: Reduce,
    /// What `vs baseline` conditions and `compare` measure against.
    pub baseline: Option<BaselineSpec>,
    /// A Mann-Whitney comparison of the bake's samples with the baseline's, at the end.
    pub compare: Option<CompareSpec>,
    /// What a sample (or `compare`) counts as when there is no baseline (the first
    /// deploy): like `no_data`, inconclusive unless said otherwise.
    pub no_baseline: NoData,
}

/// Where a measurement's baseline comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineFrom {
    /// The same query over a window just before the deploy (the previous release).
    Before,
    /// This measurement's samples in the last passing deployment of the environment.
    LastPass,
}

impl BaselineFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineFrom::Before => "before",
            BaselineFrom::LastPass => "last_pass",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BaselineSpec {
    pub from: BaselineFrom,
    /// `before`: how far back the range query reaches (default: the watch's window, at
    /// most 1h).
    pub window: Option<Duration>,
}

/// Which way is worse, for `compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Increase,
    Decrease,
    Either,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Increase => "increase",
            Direction::Decrease => "decrease",
            Direction::Either => "either",
        }
    }
}

/// `compare: { direction, alpha, effect }`.
#[derive(Debug, Clone)]
pub struct CompareSpec {
    pub direction: Direction,
    /// Significance level (default 0.05).
    pub alpha: f64,
    /// The smallest change that fails, as a fraction: 0.1 is 10% (the default).
    pub effect: f64,
}

impl Measurement {
    /// `prometheus` or the check kind.
    pub fn kind(&self) -> &'static str {
        self.source.kind()
    }
}

/// What a sample without data (an empty result, NaN) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    Inconclusive,
    Fail,
    Pass,
}

impl NoData {
    pub fn as_str(self) -> &'static str {
        match self {
            NoData::Inconclusive => "inconclusive",
            NoData::Fail => "fail",
            NoData::Pass => "pass",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Last,
    Min,
    Max,
    Avg,
}

impl Reduce {
    pub fn as_str(self) -> &'static str {
        match self {
            Reduce::Last => "last",
            Reduce::Min => "min",
            Reduce::Max => "max",
            Reduce::Avg => "avg",
        }
    }

    pub fn apply(self, values: &[f64]) -> Option<f64> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if finite.is_empty() {
            return None;
        }
        Some(match self {
            Reduce::Last => finite[finite.len() - 1],
            Reduce::Min => finite.iter().copied().fold(f64::INFINITY, f64::min),
            Reduce::Max => finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Reduce::Avg => finite.iter().sum::<f64>() / finite.len() as f64,
        })
    }
}

/// `< 0.01`, `>= 1`, `!= ${{ vars.expected }}`, or relative to the baseline:
/// `<= +10% vs baseline` (the operand is then the percentage, `10`).
#[derive(Debug, Clone)]
pub struct Condition {
    pub op: CmpOp,
    pub operand: Template,
    /// As written.
    pub text: String,
    /// `vs baseline`: the operand is a change in percent of the baseline's value.
    pub relative: bool,
}

impl Condition {
    /// The operator and operand; a relative condition's operand is its signed percentage.
    pub fn parse(text: &str) -> Result<(CmpOp, String, bool), String> {
        let t = text.trim();
        if let Some(head) = t.strip_suffix("vs baseline") {
            let head = head.trim();
            let (op, rest, _) = Self::parse_op(head, true)?;
            let pct = rest
                .strip_suffix('%')
                .ok_or_else(|| format!("`{rest}` is not a change in percent, e.g. `+10%`"))?;
            let v: f64 = pct
                .trim()
                .trim_start_matches('+')
                .parse()
                .map_err(|_| format!("`{rest}` is not a change in percent, e.g. `+10%`"))?;
            return Ok((op, v.to_string(), true));
        }
        Self::parse_op(t, false)
    }

    fn parse_op(t: &str, relative: bool) -> Result<(CmpOp, String, bool), String> {
        for op in ["<=", ">=", "==", "!=", "<", ">"] {
            if let Some(rest) = t.strip_prefix(op) {
                let rest = rest.trim();
                if rest.is_empty() {
                    return Err(format!("`{t}` has no value after `{op}`"));
                }
                let op = match op {
                    "<=" => CmpOp::Le,
                    ">=" => CmpOp::Ge,
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    _ => CmpOp::Gt,
                };
                if !relative && !rest.contains("${{") && rest.parse::<f64>().is_err() {
                    return Err(format!(
                        "`{rest}` is not a number (a Prometheus value is a plain number: seconds, ratios, counts)"
                    ));
                }
                return Ok((op, rest.to_string(), relative));
            }
        }
        Err(format!("`{t}` is not a condition"))
    }
}

impl WatchSpec {
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        self.measurements
            .iter()
            .flat_map(|m| m.source.templates())
            .collect()
    }

    pub fn default_name(&self) -> String {
        format!(
            "watch {} measurement{} for {}",
            self.measurements.len(),
            if self.measurements.len() == 1 {
                ""
            } else {
                "s"
            },
            fmt_duration(self.duration)
        )
    }

    /// Lines for `stagegate plan`.
    pub fn describe(&self, render: &dyn Fn(&Template) -> String) -> Vec<String> {
        let mut lines = vec![format!(
            "watch for {}, every {} (failure limit {}, inconclusive limit {}, {} source errors in a row, no data is {})",
            fmt_duration(self.duration),
            fmt_duration(self.every),
            self.failure_limit,
            self.inconclusive_limit,
            self.consecutive_error_limit,
            self.no_data.as_str()
        )];
        for m in &self.measurements {
            let mut l = format!("  {}:", m.name);
            if let Some(d) = m.source.describe(render).first() {
                l.push(' ');
                l.push_str(d.trim());
            }
            if let Some(p) = &m.pass {
                l.push_str(&format!("; pass {}", p.value.text));
            }
            if let Some(f) = &m.fail {
                l.push_str(&format!("; fail {}", f.value.text));
            }
            if let Some(s) = m.sustained {
                l.push_str(&format!(" for {}", fmt_duration(s)));
            }
            if let Some(b) = &m.baseline {
                l.push_str(&format!("; baseline {}", b.from.as_str()));
            }
            if let Some(c) = &m.compare {
                l.push_str(&format!(
                    "; compare (Mann-Whitney, {} is worse, alpha {}, effect {}%)",
                    c.direction.as_str(),
                    c.alpha,
                    c.effect * 100.0
                ));
            }
            lines.push(l);
        }
        lines
    }
}

/// Reads a `watch:` step.
pub(crate) fn read(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    common: &[&str],
) -> Option<StepKind> {
    let mut allowed: Vec<&str> = common.to_vec();
    allowed.push("watch");
    cx.keys(m, what, &allowed);
    for key in ["retries", "retry_delay"] {
        if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
            cx.error_help(
                format!("{what}: `{key}` does not apply to a watch step"),
                cx.key_span(k),
                "a watch samples on its own schedule: tune `failure_limit` and `consecutive_error_limit` instead",
            );
        }
    }
    let node = m.get_node("watch")?;
    let wwhat = format!("`watch` in {what}");
    let span = cx.span(node);
    let wm = cx.mapping(node, &wwhat)?;
    cx.keys(wm, &wwhat, WATCH_KEYS);
    let duration = cx.duration(wm, "for", &wwhat);
    if duration.is_none() && wm.get_node("for").is_none() {
        cx.error_help(
            format!("{wwhat} has no `for`"),
            span.clone(),
            "say how long the bake lasts, e.g. `for: 10m`",
        );
    }
    let every = cx.duration(wm, "every", &wwhat);
    let every_v = every
        .as_ref()
        .map(|e| e.value)
        .unwrap_or(Duration::from_secs(30));
    if let Some(e) = &every
        && e.value < MIN_EVERY
    {
        cx.error_help(
            format!("`every` in {wwhat} is shorter than 100ms"),
            e.span.clone(),
            "sample at most ten times a second, e.g. `every: 1s`",
        );
    }
    if let Some(d) = &duration
        && every_v > d.value
    {
        match &every {
            Some(e) => cx.error_help(
                format!(
                    "`every: {}` in {wwhat} is longer than the window `for: {}`",
                    fmt_duration(e.value),
                    fmt_duration(d.value)
                ),
                e.span.clone(),
                "the window would hold a single sample: make `every` shorter than `for`",
            ),
            None => cx.error_help(
                format!(
                    "the window `for: {}` in {wwhat} is shorter than the default `every: 30s`",
                    fmt_duration(d.value)
                ),
                d.span.clone(),
                "the window would hold a single sample: add a shorter `every`, e.g. `every: 1s`",
            ),
        }
    }
    let limit = |cx: &mut Cx, key: &str, default: u32| -> u32 {
        match cx.uint(wm, key, &wwhat) {
            Some(v) if v > 1_000_000 => {
                if let Some(n) = wm.get_node(key) {
                    cx.error(format!("`{key}` in {wwhat} is too large"), cx.span(n));
                }
                default
            }
            Some(v) => v as u32,
            None => default,
        }
    };
    let failure_limit = limit(cx, "failure_limit", 0);
    let inconclusive_limit = limit(cx, "inconclusive_limit", 0);
    let consecutive_error_limit = limit(cx, "consecutive_error_limit", 4);
    let no_data = read_no_data(cx, wm, &wwhat).unwrap_or(NoData::Inconclusive);

    let mut measurements = Vec::new();
    match wm.get_node("measure") {
        None => cx.error_help(
            format!("{wwhat} has nothing to measure"),
            span.clone(),
            "add `measure:` with at least one measurement, e.g. `- prometheus: { url, query }` with `pass: \"< 0.01\"`",
        ),
        Some(Node::Sequence(seq)) => {
            if seq.is_empty() {
                cx.error(format!("`measure` in {wwhat} is empty"), cx.span(node));
            }
            if seq.len() > MAX_MEASUREMENTS {
                cx.error_help(
                    format!(
                        "`measure` in {wwhat} has {} measurements; at most {MAX_MEASUREMENTS}",
                        seq.len()
                    ),
                    cx.span(node),
                    "split the bake into several watch steps",
                );
            }
            for (i, item) in seq.iter().enumerate().take(MAX_MEASUREMENTS) {
                if let Some(meas) =
                    read_measurement(cx, item, i, &wwhat, duration.as_ref(), every_v)
                {
                    if measurements
                        .iter()
                        .any(|x: &Measurement| x.name == meas.name)
                    {
                        cx.error_help(
                            format!("two measurements of {wwhat} are named `{}`", meas.name),
                            meas.span.clone(),
                            "give each measurement its own `name`: samples are stored per name",
                        );
                    }
                    measurements.push(meas);
                }
            }
        }
        Some(other) => cx.error_help(
            format!("`measure` in {wwhat} must be a list"),
            cx.span(other),
            "write `measure:` followed by `- name: ...` items",
        ),
    }
    Some(StepKind::Watch(Box::new(WatchSpec {
        span,
        duration: duration?.value,
        every: every_v,
        failure_limit,
        inconclusive_limit,
        consecutive_error_limit,
        no_data,
        measurements,
    })))
}

fn read_no_data(cx: &mut Cx, m: &MarkedMappingNode, what: &str) -> Option<NoData> {
    read_no_data_key(cx, m, "no_data", what)
}

fn read_no_data_key(cx: &mut Cx, m: &MarkedMappingNode, key: &str, what: &str) -> Option<NoData> {
    let s = cx.string(m, key, what)?;
    match s.value.as_str() {
        "inconclusive" => Some(NoData::Inconclusive),
        "fail" => Some(NoData::Fail),
        "pass" => Some(NoData::Pass),
        other => {
            cx.error_help(
                format!("`{key}: {other}` in {what} is not known"),
                s.span,
                format!("write `{key}: inconclusive` (the default), `fail` or `pass`"),
            );
            None
        }
    }
}

fn read_measurement(
    cx: &mut Cx,
    item: &Node,
    i: usize,
    wwhat: &str,
    window: Option<&Spanned<Duration>>,
    every: Duration,
) -> Option<Measurement> {
    let mwhat = format!("measurement {} of {wwhat}", i + 1);
    let m = cx.mapping(item, &mwhat)?;
    let actions: Vec<&str> = CHECK_ACTIONS
        .iter()
        .copied()
        .filter(|a| m.get_node(a).is_some())
        .collect();
    let action = match actions.as_slice() {
        [a] => *a,
        [] => {
            cx.error_help(
                format!("{mwhat} has no source"),
                cx.span(item),
                format!("add one of: {}", CHECK_ACTIONS.join(", ")),
            );
            return None;
        }
        more => {
            cx.error_help(
                format!("{mwhat} has more than one source: {}", more.join(", ")),
                cx.span(item),
                "one measurement takes one source; make two measurements",
            );
            return None;
        }
    };
    let source = crate::check::read(cx, action, m, &mwhat, MEASURE_KEYS)?;
    for key in ["capture", "retry", "until", "repeat", "concurrency"] {
        if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
            cx.error_help(
                format!("{mwhat}: `{key}` does not apply to a measurement"),
                cx.key_span(k),
                "each sample is taken once per interval; use a check step for captures and polling",
            );
        }
    }
    let cond = |cx: &mut Cx, key: &str| -> Option<Spanned<Condition>> {
        let s = cx.string(m, key, &mwhat)?;
        match Condition::parse(&s.value) {
            Ok((op, operand, relative)) => {
                let t = crate::build::template(
                    cx,
                    Spanned {
                        value: operand,
                        span: s.span.clone(),
                    },
                )?;
                Some(Spanned {
                    value: Condition {
                        op,
                        operand: t.value,
                        text: s.value.trim().to_string(),
                        relative,
                    },
                    span: s.span,
                })
            }
            Err(e) => {
                cx.error_help(
                    format!("`{key}` in {mwhat}: {e}"),
                    s.span,
                    "write a comparison such as `< 0.01`, `>= 1`, `== 0` or `<= +10% vs baseline`",
                );
                None
            }
        }
    };
    let pass = cond(cx, "pass");
    let fail = cond(cx, "fail");
    let is_prom = action == "prometheus";
    if is_prom {
        if pass.is_none()
            && fail.is_none()
            && m.get_node("expect").is_none()
            && m.get_node("compare").is_none()
        {
            cx.error_help(
                format!("{mwhat} has no condition"),
                cx.span(item),
                "add `pass: \"< 0.01\"` (fails otherwise), `fail: \"> 0.05\"` (passes otherwise), both (neither holding is inconclusive), or `compare` with a `baseline`",
            );
        }
        if (pass.is_some() || fail.is_some())
            && let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == "expect")
        {
            cx.error_help(
                format!("{mwhat} has both `expect` and `pass`/`fail`"),
                cx.key_span(k),
                "keep `pass`/`fail` (they allow an inconclusive middle), or `expect` alone",
            );
        }
    } else {
        for key in ["pass", "fail", "reduce"] {
            if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
                cx.error_help(
                    format!("{mwhat}: `{key}` applies to `prometheus` measurements"),
                    cx.key_span(k),
                    format!(
                        "a `{action}` measurement passes when its `expect` holds and fails otherwise"
                    ),
                );
            }
        }
    }
    let sustained = cx.duration(m, "sustained", &mwhat);
    // The first sample comes as the window opens and the last one `every` before it
    // closes: a breach can last at most `for - every`.
    if let (Some(s), Some(w)) = (&sustained, window)
        && s.value + every > w.value
    {
        cx.error_help(
            format!(
                "`sustained: {}` in {mwhat} can never be reached in the window `for: {}` sampled `every: {}`",
                fmt_duration(s.value),
                fmt_duration(w.value),
                fmt_duration(every)
            ),
            s.span.clone(),
            format!(
                "a breach lasts at most `for` minus `every` ({}): shorten `sustained` or lengthen `for`",
                fmt_duration(w.value.saturating_sub(every))
            ),
        );
    }
    let reduce = match cx.string(m, "reduce", &mwhat) {
        None => Reduce::Last,
        Some(s) => match s.value.as_str() {
            "last" => Reduce::Last,
            "min" => Reduce::Min,
            "max" => Reduce::Max,
            "avg" | "mean" => Reduce::Avg,
            other => {
                cx.error_help(
                    format!("`reduce: {other}` in {mwhat} is not known"),
                    s.span,
                    "write `last` (the default), `min`, `max` or `avg`",
                );
                Reduce::Last
            }
        },
    };
    let baseline = read_baseline(cx, m, &mwhat);
    let compare = read_compare(cx, m, &mwhat);
    if is_prom && baseline.is_none() {
        for (key, c) in [("pass", &pass), ("fail", &fail)] {
            if let Some(c) = c.as_ref().filter(|c| c.value.relative) {
                cx.error_help(
                    format!("`{key}: {}` in {mwhat} compares with a baseline, but there is none", c.value.text),
                    c.span.clone(),
                    "add `baseline: before` (the same query just before the deploy) or `baseline: last_pass` (the last passing deployment's samples)",
                );
            }
        }
        if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == "no_baseline") {
            cx.error_help(
                format!("`no_baseline` in {mwhat} applies only with a `baseline`"),
                cx.key_span(k),
                "add `baseline: before` or `baseline: last_pass`, or remove `no_baseline`",
            );
        }
        if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == "compare") {
            cx.error_help(
                format!("`compare` in {mwhat} needs a `baseline`"),
                cx.key_span(k),
                "add `baseline: before` or `baseline: last_pass`: the samples the bake's are compared with",
            );
        }
    }
    if !is_prom {
        for key in ["baseline", "compare", "no_baseline"] {
            if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
                cx.error_help(
                    format!("{mwhat}: `{key}` applies to `prometheus` measurements"),
                    cx.key_span(k),
                    "a baseline is a number: measure it with a `prometheus` query",
                );
            }
        }
    }
    let name = match cx.string(m, "name", &mwhat) {
        Some(n) => n.value,
        None => source.default_name(),
    };
    Some(Measurement {
        name,
        span: cx.span(item),
        source,
        pass,
        fail,
        sustained: sustained.map(|s| s.value),
        no_data: read_no_data(cx, m, &mwhat),
        reduce,
        no_baseline: match m.get_node("no_baseline") {
            Some(_) => {
                read_no_data_key(cx, m, "no_baseline", &mwhat).unwrap_or(NoData::Inconclusive)
            }
            None => NoData::Inconclusive,
        },
        baseline: if is_prom { baseline } else { None },
        compare: if is_prom { compare } else { None },
    })
}

fn baseline_from(cx: &mut Cx, s: Spanned<String>, what: &str) -> Option<BaselineFrom> {
    match s.value.as_str() {
        "before" => Some(BaselineFrom::Before),
        "last_pass" => Some(BaselineFrom::LastPass),
        other => {
            cx.error_help(
                format!("`baseline: {other}` in {what} is not known"),
                s.span,
                "write `before` (the same query just before the deploy) or `last_pass` (the last passing deployment's samples)",
            );
            None
        }
    }
}

/// `baseline: before | last_pass` or `baseline: { from, window }`.
fn read_baseline(cx: &mut Cx, m: &MarkedMappingNode, what: &str) -> Option<BaselineSpec> {
    let node = m.get_node("baseline")?;
    let bwhat = format!("`baseline` in {what}");
    if let Node::Mapping(bm) = node {
        cx.keys(bm, &bwhat, BASELINE_KEYS);
        let from = match cx.string(bm, "from", &bwhat) {
            Some(s) => baseline_from(cx, s, &bwhat)?,
            None => {
                cx.error_help(
                    format!("{bwhat} has no `from`"),
                    cx.span(node),
                    "write `from: before` or `from: last_pass`",
                );
                return None;
            }
        };
        let window = cx.duration(bm, "window", &bwhat);
        if let Some(w) = &window
            && from == BaselineFrom::LastPass
        {
            cx.error_help(
                format!("`window` in {bwhat} applies to `from: before`"),
                w.span.clone(),
                "`last_pass` takes every sample of that deployment's bake",
            );
        }
        return Some(BaselineSpec {
            from,
            window: window.map(|w| w.value),
        });
    }
    let s = cx.string(m, "baseline", what)?;
    let from = baseline_from(cx, s, what)?;
    Some(BaselineSpec { from, window: None })
}

/// `compare: { direction, alpha, effect }` (or `compare: true` for the defaults).
fn read_compare(cx: &mut Cx, m: &MarkedMappingNode, what: &str) -> Option<CompareSpec> {
    let node = m.get_node("compare")?;
    let cwhat = format!("`compare` in {what}");
    let mut spec = CompareSpec {
        direction: Direction::Increase,
        alpha: 0.05,
        effect: 0.10,
    };
    let cm = match node {
        Node::Mapping(cm) => cm,
        Node::Scalar(s) if s.as_str() == "true" => return Some(spec),
        other => {
            cx.error_help(
                format!("{cwhat} must be a mapping"),
                cx.span(other),
                "write e.g. `compare: { direction: increase, alpha: 0.05, effect: 10% }`",
            );
            return None;
        }
    };
    cx.keys(cm, &cwhat, COMPARE_KEYS);
    if let Some(d) = cx.string(cm, "direction", &cwhat) {
        spec.direction = match d.value.as_str() {
            "increase" => Direction::Increase,
            "decrease" => Direction::Decrease,
            "either" => Direction::Either,
            other => {
                cx.error_help(
                    format!("`direction: {other}` in {cwhat} is not known"),
                    d.span,
                    "write `increase` (higher is worse: latency, errors; the default), `decrease` or `either`",
                );
                Direction::Increase
            }
        };
    }
    if let Some(a) = cx.string(cm, "alpha", &cwhat) {
        match a.value.parse::<f64>() {
            Ok(v) if v > 0.0 && v < 1.0 => spec.alpha = v,
            _ => {
                cx.error_help(
                    format!("`alpha: {}` in {cwhat} is not a probability between 0 and 1", a.value),
                    a.span,
                    "write e.g. `alpha: 0.05` (the default): how unlikely a difference must be by chance",
                );
            }
        }
    }
    if let Some(e) = cx.string(cm, "effect", &cwhat) {
        let v = e
            .value
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
            .filter(|v| (0.0..=1000.0).contains(v));
        match v {
            Some(v) => spec.effect = v / 100.0,
            None => {
                cx.error_help(
                    format!("`effect: {}` in {cwhat} is not a percentage", e.value),
                    e.span,
                    "write e.g. `effect: 10%` (the default): the smallest change of the median that fails",
                );
            }
        }
    }
    Some(spec)
}
