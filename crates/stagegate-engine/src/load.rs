//! Load steps: the plan's `load:` run by the built-in generator (`stagegate-load`), judged by
//! its SLO thresholds.
//!
//! The requests are HTTP check definitions: their templates are rendered once against the
//! run's scope (a virtual user's `${{ vu.NAME }}` is kept for the generator to fill in per
//! user), their `expect` assertions become [`ResponseCheck`]s evaluated on every response,
//! and their `capture`s become [`ResponseCapture`]s that store a value in the user's own
//! variables. Progress comes as [`Event::StepProgress`]; the report, with every threshold's
//! value, limit and verdict, goes in the step's details (`details.load`) with secrets
//! scrubbed. A failed threshold, an abort rule or an interrupted run fails the step, and so
//! the stage (and the deploy is rolled back).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderName;
use stagegate_load::report::fmt_ms;
use stagegate_load::{
    Identities, Identity, LoadEvent, LoadReport, LoadTest, RequestSpec, ResponseCapture,
    ResponseCheck, ResponseView, Scenario, VuTemplate, parse_method, slo, split_url,
};
use stagegate_plan::check::{Auth, CheckTarget, HttpRequest, Payload, RequestBody};
use stagegate_plan::{LoadRequest, LoadSpec, Ref};

use crate::check::body::Body;
use crate::check::expect::{Expectation, Observation, Take, joined_headers};
use crate::event::{Event, StepStatus};
use crate::step::{StepCtx, StepOutcome};

/// Runs a load step to its outcome.
pub async fn run(spec: &LoadSpec, ctx: &StepCtx<'_>) -> StepOutcome {
    let at = ctx.place();
    let test = match build(spec, ctx) {
        Ok(t) => t,
        Err(e) => {
            return StepOutcome::failed(format!("cannot prepare the load test ({at}): {e}"));
        }
    };
    let baseline = match ctx.inputs.baselines.get(&ctx.step.id) {
        None => None,
        Some(v) => match LoadReport::deserialize(v) {
            Ok(r) => Some(r),
            Err(e) => {
                ctx.events.emit(Event::Warning {
                    message: format!(
                        "step `{}`: the last passing run's report cannot be read ({e}), so `vs last_pass` thresholds are not judged",
                        ctx.step.id
                    ),
                });
                None
            }
        },
    };
    let thresholds: Vec<_> = spec.slo.iter().map(|t| t.value.clone()).collect();

    let cancel = ctx.cancel.child_token();
    // The step's own time limit stops the generator like an interrupt would.
    let timer = ctx.step.timeout.map(|t| {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(t).await;
            cancel.cancel();
        })
    });
    let started = Instant::now();
    let result = test
        .run(cancel.clone(), |e| {
            if let Some(line) = progress_line(e) {
                ctx.events.emit(Event::StepProgress {
                    step: ctx.step_ref.clone(),
                    message: line,
                    figures: matches!(e, LoadEvent::Progress(_)),
                });
            }
        })
        .await;
    if let Some(t) = timer {
        t.abort();
    }
    let timed_out = ctx.step.timeout.is_some_and(|t| started.elapsed() >= t);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            return StepOutcome::failed(format!("the load test could not run ({at}): {e}"));
        }
    };
    slo::evaluate_all(&mut report, &thresholds, baseline.as_ref());
    outcome(report, ctx, baseline.is_some(), timed_out)
}

/// The step's outcome from the report: status, error, outputs and details.
fn outcome(
    report: LoadReport,
    ctx: &StepCtx<'_>,
    had_baseline: bool,
    timed_out: bool,
) -> StepOutcome {
    // The log file is written here; everything returned is scrubbed by the executor.
    let text = ctx.scrubber.scrub(&report.to_text());
    if let Err(e) = crate::process::write_private(&ctx.log, text.as_bytes()) {
        ctx.events.emit(Event::Warning {
            message: format!("cannot write the step log {}: {e}", ctx.log.display()),
        });
    }
    let s = &report.summary;
    let mut outputs = BTreeMap::new();
    outputs.insert("requests".to_string(), s.requests.to_string());
    outputs.insert("rps".to_string(), format!("{:.1}", s.rps));
    outputs.insert("p50_ms".to_string(), format!("{:.2}", s.latency.p50_ms));
    outputs.insert("p95_ms".to_string(), format!("{:.2}", s.latency.p95_ms));
    outputs.insert("p99_ms".to_string(), format!("{:.2}", s.latency.p99_ms));
    outputs.insert("error_rate".to_string(), format!("{:.4}", s.error_rate));

    let passed = report.passed();
    let failed: Vec<String> = report
        .thresholds
        .iter()
        .filter(|t| !t.passed())
        .map(|t| format!("{}: {}", t.text, t.message))
        .collect();
    let mut error = None;
    let mut status = StepStatus::Passed;
    if report.cancelled {
        status = if timed_out {
            StepStatus::TimedOut
        } else {
            StepStatus::Cancelled
        };
        error = Some(if timed_out {
            "the load test ran out of the step's `timeout`".to_string()
        } else {
            "the load test was interrupted".to_string()
        });
    } else if let Some(reason) = &report.aborted {
        status = StepStatus::Failed;
        error = Some(format!("the load test was aborted: {reason}"));
    } else if !passed {
        status = StepStatus::Failed;
        let mut e = format!(
            "{} of {} SLO threshold{} failed: {}",
            failed.len(),
            report.thresholds.len(),
            if report.thresholds.len() == 1 {
                ""
            } else {
                "s"
            },
            failed.join("; ")
        );
        if let Some(x) = &s.isolation_example {
            e.push_str(&format!("; isolation: {}", x.detail));
        } else if let Some(c) = &s.check_example {
            e.push_str(&format!("; failed check example: {c}"));
        }
        error = Some(e);
    }
    if let Some(e) = error.as_mut()
        && !report.generator.valid
    {
        e.push_str(
            " (the generator itself fell behind or ran out of CPU: its figures are not valid, see the report)",
        );
    }
    if passed && !report.generator.valid {
        ctx.events.emit(Event::Warning {
            message: format!(
                "step `{}`: the load generator fell behind or ran out of CPU, so its figures are not valid: {}",
                ctx.step.id,
                report.generator.notes.join("; ")
            ),
        });
    }
    let tail = crate::process::last_lines(&text, 40);
    StepOutcome {
        status,
        exit_code: None,
        attempts: 1,
        tail,
        error,
        outputs,
        secret_outputs: Vec::new(),
        details: crate::details::StepDetails::Load(Box::new(crate::details::LoadDetails {
            load: report,
            baseline: had_baseline,
        })),
    }
}

/// One line of live progress, or `None` for events that need no line.
pub fn progress_line(e: &LoadEvent) -> Option<String> {
    Some(match e {
        LoadEvent::Started {
            model,
            threads,
            concurrency,
            warmup,
        } => format!(
            "starting: {model} model, {concurrency} {}, {threads} thread{}{}",
            if *model == "open" {
                "in flight at most"
            } else {
                "users"
            },
            if *threads == 1 { "" } else { "s" },
            if warmup.is_zero() {
                String::new()
            } else {
                format!(", warm-up {:.1}s", warmup.as_secs_f64())
            }
        ),
        LoadEvent::WarmupFinished { requests } => {
            format!("warm-up done ({requests} requests not counted)")
        }
        LoadEvent::Progress(p) => format!(
            "{} {:>6.1}s  {:>10} requests  {:>9.1} req/s  p95 {}  errors {}{}",
            if p.warmup { "warm-up" } else { "running" },
            p.elapsed.as_secs_f64(),
            p.requests,
            p.rps,
            p.p95_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
            p.errors,
            p.error_rate
                .map(|r| format!(" ({:.2}% now)", r * 100.0))
                .unwrap_or_default()
        ),
        LoadEvent::Aborted { reason } => format!("aborting: {reason}"),
    })
}

/// The load test the step describes, every template rendered.
fn build(spec: &LoadSpec, ctx: &StepCtx<'_>) -> Result<LoadTest, String> {
    let mut origin = None;
    let mut requests = Vec::new();
    for r in &spec.scenario {
        requests.push(request(ctx, r, &mut origin)?);
    }
    let mut setup = Vec::new();
    for r in &spec.setup {
        setup.push(request(ctx, r, &mut origin)?);
    }
    let (origin, _) = origin.ok_or("the load step has no request")?;
    let scenario = Scenario {
        origin,
        requests,
        setup,
    };
    let mut test = LoadTest::new(scenario, spec.profile.clone());
    test.cookies = spec.cookies;
    test.abort = spec.abort.iter().map(|a| a.value.clone()).collect();
    if let Some(u) = &spec.users {
        let rel = ctx
            .scope
            .render(&u.value)
            .map_err(|e| format!("users: {e}"))?;
        let path = ctx.plan.dir.join(&rel);
        let ids = Identities::from_path(&path).map_err(|e| e.to_string())?;
        let isolation: Vec<String> = spec.isolation.iter().map(|f| f.value.clone()).collect();
        test.set_users(ids, &isolation).map_err(|e| match e {
            // Named as the plan names it, relative to the plan.
            stagegate_load::LoadError::Isolation { field, reason } => format!(
                "isolation: `{field}`: {}",
                reason.replace(&path.display().to_string(), &rel)
            ),
            other => other.to_string(),
        })?;
    }
    Ok(test)
}

/// One request of the scenario, from its check definition.
fn request(
    ctx: &StepCtx<'_>,
    r: &LoadRequest,
    origin: &mut Option<(stagegate_load::request::Origin, String)>,
) -> Result<RequestSpec, String> {
    let check = LoadSpec::check_of(ctx.plan, r)
        .ok_or_else(|| format!("request `{}`: its check is not in the plan", r.name))?;
    let CheckTarget::Http(h) = &check.target else {
        return Err(format!("request `{}` is not an `http` check", r.name));
    };
    let scope = ctx.scope;
    let what = |w: &str| format!("request `{}`: {w}", r.name);
    let url = scope
        .render(&h.url.value)
        .map_err(|e| what(&e.to_string()))?;
    let (o, mut path) = split_url(&url).map_err(|e| what(&e.to_string()))?;
    match origin {
        None => *origin = Some((o, url.clone())),
        Some((first, first_url)) if *first != o => {
            return Err(what(&format!(
                "it goes to {url}, but the first request went to {first_url}: every request of a load step goes to one origin (scheme, host and port)"
            )));
        }
        Some(_) => {}
    }
    if !h.query.is_empty() {
        let mut q = Vec::new();
        for (k, v) in &h.query {
            let value = scope
                .render(&v.value)
                .map_err(|e| what(&format!("query `{k}`: {e}")))?;
            q.push(format!(
                "{}={}",
                encode_keeping_vu(k),
                encode_keeping_vu(&value)
            ));
        }
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&q.join("&"));
    }
    let method = parse_method(&h.method).map_err(|e| what(&e.to_string()))?;
    let mut spec =
        RequestSpec::new(r.name.clone(), method, &path).map_err(|e| what(&e.to_string()))?;
    let (content_type, body) = body(h, ctx).map_err(|e| what(&e))?;
    let mut header = |name: &str, value: String| -> Result<(), String> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| what(&format!("`{name}` is not a valid header name")))?;
        spec.headers.retain(|(k, _)| *k != n);
        spec.headers.push((
            n,
            VuTemplate::parse(&value).map_err(|e| what(&e.to_string()))?,
        ));
        Ok(())
    };
    if let Some(ct) = content_type {
        header("content-type", ct.to_string())?;
    }
    if let Some(auth) = &h.auth {
        if let Auth::Basic { user, password } = auth {
            let uses_vu = [user, password]
                .iter()
                .any(|t| t.value.refs().iter().any(|(r, _)| matches!(r, Ref::Vu(_))));
            if uses_vu {
                return Err(what(
                    "basic auth cannot use `vu.*` variables: write the header, `headers: { Authorization: \"Basic ...\" }`, or log in with a `setup` request",
                ));
            }
        }
        header(
            "authorization",
            crate::check::http::auth_header(scope, auth).map_err(|e| what(&e))?,
        )?;
    }
    for (k, v) in &h.headers {
        let value = scope
            .render(&v.value)
            .map_err(|e| what(&format!("header `{k}`: {e}")))?;
        header(k, value)?;
    }
    if let Some(b) = body {
        spec.body = Some(VuTemplate::parse(&b).map_err(|e| what(&e.to_string()))?);
    }
    for a in &check.expect {
        let e = Expectation::render(a, scope, "http").map_err(|e| {
            what(&if e.contains("vu.") {
                format!("{e} (a virtual user's variables can be compared with `equals`, `one_of` and `contains`, not in regexes, JSONPaths or numbers)")
            } else {
                e
            })
        })?;
        spec.checks.push(Arc::new(PlanCheck::new(e)));
    }
    for c in &check.captures {
        let t = Take::render(c, scope).map_err(|e| what(&e))?;
        spec.captures.push(Arc::new(PlanCapture {
            reads: Reads {
                headers: t.reads_headers(),
                body: t.reads_body(),
                sha256: t.reads_sha256(),
            },
            take: t,
        }));
    }
    Ok(spec)
}

/// The request body as text, and the content type it implies.
fn body(
    h: &HttpRequest,
    ctx: &StepCtx<'_>,
) -> Result<(Option<&'static str>, Option<String>), String> {
    let scope = ctx.scope;
    Ok(match &h.body {
        None => (None, None),
        Some(RequestBody::Json(j)) => (
            Some("application/json"),
            Some(with_filter(
                &crate::check::json_body(scope, j)?.to_string(),
                "json",
            )),
        ),
        Some(RequestBody::Form(fields)) => {
            let mut parts = Vec::new();
            for (k, v) in fields {
                let value = scope
                    .render(&v.value)
                    .map_err(|e| format!("form `{k}`: {e}"))?;
                parts.push(format!(
                    "{}={}",
                    encode_keeping_vu(k),
                    encode_keeping_vu(&value)
                ));
            }
            (
                Some("application/x-www-form-urlencoded"),
                Some(parts.join("&")),
            )
        }
        Some(RequestBody::Raw(Payload::Text(t))) => (None, Some(scope.render(&t.value)?)),
        Some(RequestBody::Raw(Payload::File(f))) => {
            let path = ctx.plan.dir.join(scope.render(&f.value)?);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the body file {}: {e}", path.display()))?;
            (None, Some(text))
        }
        Some(RequestBody::Raw(Payload::Random { .. }) | RequestBody::Multipart(_)) => {
            return Err(
                "multipart and random bodies cannot be load-tested; send `json`, `form` or a text `body`"
                    .into(),
            );
        }
    })
}

/// Adds a filter to every `${{ vu.NAME }}` placeholder (as the scope renders them), so the
/// generator escapes each user's value for where it goes: `json` in a JSON string, `form`
/// in a query string or form body.
fn with_filter(text: &str, filter: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${{ vu.") {
        out.push_str(&rest[..i]);
        match rest[i..].find(" }}") {
            Some(j) => {
                out.push_str(&rest[i..i + j]);
                out.push_str(&format!(" | {filter} }}}}"));
                rest = &rest[i + j + 3..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Form-encodes text; a user's value in it is form-encoded when it is filled in.
fn encode_keeping_vu(text: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        out.push_str(&enc(&rest[..i]));
        match rest[i..].find("}}") {
            Some(j) => {
                out.push_str(&with_filter(&rest[i..i + j + 2], "form"));
                rest = &rest[i + j + 2..];
            }
            None => {
                out.push_str(&enc(&rest[i..]));
                rest = "";
            }
        }
    }
    out.push_str(&enc(rest));
    out
}

/// What a response holds that a check or capture reads.
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    headers: bool,
    body: bool,
    sha256: bool,
}

/// What a check or capture sees of a response, as the check steps see it: only the parts it
/// reads are copied. Nothing is masked here: the report the examples go into is scrubbed as
/// a whole when the step is recorded.
fn observation(r: &ResponseView<'_>, reads: Reads) -> Observation {
    Observation {
        series: Vec::new(),
        status: Some(r.status),
        headers: if reads.headers {
            joined_headers(r.headers)
        } else {
            Vec::new()
        },
        body: reads
            .body
            .then(|| Body::from_bytes(r.body.to_vec(), reads.sha256)),
        ..Default::default()
    }
}

/// An assertion of a check definition, evaluated on every response.
struct PlanCheck {
    name: String,
    exp: Expectation,
    reads: Reads,
    /// The expected texts that hold a virtual user's variables, parsed once: filled in per
    /// user. Empty when the assertion does not compare with a user's variable.
    per_user: HashMap<String, VuTemplate>,
}

impl PlanCheck {
    fn new(exp: Expectation) -> Self {
        let (name, expected) = exp.label();
        // Every text the assertion compares with, once, to find the user's variables in it.
        let texts = std::cell::RefCell::new(Vec::new());
        exp.for_user(&|t| {
            texts.borrow_mut().push(t.to_string());
            t.to_string()
        });
        let per_user = texts
            .into_inner()
            .into_iter()
            .filter(|t| t.contains("${{ vu."))
            .filter_map(|t| VuTemplate::parse(&t).ok().map(|v| (t, v)))
            .collect();
        Self {
            name: format!("{name} {expected}"),
            reads: Reads {
                headers: exp.reads_headers(),
                body: exp.reads_body(),
                sha256: exp.reads_sha256(),
            },
            per_user,
            exp,
        }
    }
}

impl ResponseCheck for PlanCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn needs_body(&self) -> bool {
        self.reads.body
    }

    fn check(&self, user: &Identity, r: &ResponseView<'_>) -> Result<(), String> {
        let obs = observation(r, self.reads);
        let result = if self.per_user.is_empty() {
            self.exp.evaluate(&obs, "body")
        } else {
            let fill = |t: &str| match self.per_user.get(t) {
                Some(v) => v.render(user),
                None => t.to_string(),
            };
            self.exp.for_user(&fill).evaluate(&obs, "body")
        };
        if result.passed {
            Ok(())
        } else {
            Err(format!(
                "expected {}, actual {}",
                result.expected, result.actual
            ))
        }
    }
}

/// A capture of a check definition: the value goes into the user's variables.
struct PlanCapture {
    take: Take,
    reads: Reads,
}

impl ResponseCapture for PlanCapture {
    fn var(&self) -> &str {
        &self.take.name
    }

    fn needs_body(&self) -> bool {
        self.reads.body
    }

    fn capture(&self, _user: &Identity, r: &ResponseView<'_>) -> Result<String, String> {
        self.take.take(&observation(r, self.reads), "body")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::check::expect::{Rule, Target};

    /// `json $.user_id == ${{ vu.id }}` as a load check.
    fn own_id_check() -> PlanCheck {
        PlanCheck::new(Expectation::Value {
            name: "json $.user_id".into(),
            expected: "== ${{ vu.id }}".into(),
            target: Target::Json(serde_json_path::JsonPath::parse("$.user_id").unwrap()),
            rule: Rule::Equals("${{ vu.id }}".into()),
            numeric: false,
            sha: false,
        })
    }

    #[test]
    fn a_check_compares_with_each_users_own_value_and_never_shows_it() {
        let check = own_id_check();
        assert!(
            check.reads.body && !check.reads.headers,
            "{:?}",
            check.reads
        );
        let headers = http::HeaderMap::new();
        let view = |body: &'static [u8]| ResponseView {
            request: "me",
            status: 200,
            headers: &headers,
            body,
        };
        let ann = Identity::new(0, [("id", "u-ann-s3cret")]);
        let bob = Identity::new(1, [("id", "u-bob-s3cret")]);
        assert_eq!(
            check.check(&ann, &view(br#"{"user_id":"u-ann-s3cret"}"#)),
            Ok(())
        );
        let e = check
            .check(&bob, &view(br#"{"user_id":"u-ann-s3cret"}"#))
            .unwrap_err();
        assert!(e.contains("expected == ${{ vu.id }}"), "{e}");
        assert!(
            !e.contains("u-bob-s3cret"),
            "the user's own value is in {e}"
        );
    }

    #[test]
    fn form_encoding_keeps_user_variables() {
        assert_eq!(
            encode_keeping_vu("a b&${{ vu.id }}/x"),
            "a+b%26${{ vu.id | form }}%2Fx"
        );
        assert_eq!(
            with_filter(r#"{"a":"${{ vu.x }}-${{ vu.y }}","b":1}"#, "json"),
            r#"{"a":"${{ vu.x | json }}-${{ vu.y | json }}","b":1}"#
        );
        assert_eq!(encode_keeping_vu("${{ vu.x"), "%24%7B%7B+vu.x");
    }
}
