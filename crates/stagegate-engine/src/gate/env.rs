//! `gate: env`: settings that must have a value (`DRY_RUN: "true"`), read from the process
//! environment, a dotenv file, or a running service's configuration endpoint (a GET that
//! answers JSON; the keys of `expect` are then JSONPaths).
//!
//! This is not a general HTTP check: one GET, a JSON body, equality on values.

use std::collections::BTreeMap;
use std::time::Duration;

use stagegate_plan::Secret;
use stagegate_plan::dotenv::read_dotenv;
use stagegate_plan::gate::{EnvGate, EnvSource};

use super::{Check, Findings};
use crate::step::StepCtx;

/// How long the GET may take when the step has no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

enum Values {
    Names(BTreeMap<String, String>),
    Json(serde_json::Value),
}

pub(crate) async fn evaluate(g: &EnvGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let (values, label) = match load(&g.from, ctx).await {
        Ok(v) => v,
        Err((label, e)) => {
            f.checks.push(Check::fail(label, e));
            return f;
        }
    };
    let mut wrong = Vec::new();
    for x in &g.expect {
        let want = match ctx.scope.render(&x.equals.value) {
            Ok(w) => w,
            Err(e) => {
                f.checks.push(Check::fail(
                    &x.key.value,
                    format!("cannot render the expected value: {e}"),
                ));
                continue;
            }
        };
        let found: Option<String> = match (&values, &x.query) {
            (Values::Names(m), _) => m.get(&x.key.value).cloned(),
            (Values::Json(v), Some(q)) => q.query(v).all().first().map(|n| match n {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            (Values::Json(_), None) => None,
        };
        // A secret's value is shown as its fingerprint, never as itself.
        let secret = ctx.scope.secrets.contains_key(&x.key.value);
        let show = |v: &str| {
            if secret {
                Secret::new(v).fingerprint()
            } else {
                format!("`{v}`")
            }
        };
        let check = match found {
            Some(v) if v == want => Check::pass(
                &x.key.value,
                format!("{} is {} in {label}", x.key.value, show(&v)),
            ),
            Some(v) => {
                wrong.push(x.key.value.clone());
                Check::fail(
                    &x.key.value,
                    format!(
                        "{} is {} in {label}, expected {}",
                        x.key.value,
                        show(&v),
                        show(&want)
                    ),
                )
            }
            None => {
                wrong.push(x.key.value.clone());
                Check::fail(
                    &x.key.value,
                    format!(
                        "{} is not set in {label}, expected {}",
                        x.key.value,
                        show(&want)
                    ),
                )
            }
        };
        f.checks.push(check);
    }
    if !wrong.is_empty() {
        f.help = Some(format!("set {} as expected in {label}", wrong.join(", ")));
    }
    f
}

async fn load(from: &EnvSource, ctx: &StepCtx<'_>) -> Result<(Values, String), (String, String)> {
    match from {
        EnvSource::Environment => Ok((
            Values::Names(ctx.scope.process_env.clone().into_iter().collect()),
            "the process environment".into(),
        )),
        EnvSource::Dotenv(t) => {
            let rendered = ctx
                .scope
                .render(&t.value)
                .map_err(|e| ("dotenv".to_string(), e.to_string()))?;
            let path = ctx.plan.dir.join(rendered);
            let label = super::show_path(ctx.plan, &path);
            let entries = read_dotenv(&path).map_err(|e| (label.clone(), e))?;
            Ok((
                Values::Names(entries.into_iter().map(|e| (e.key, e.value)).collect()),
                label,
            ))
        }
        EnvSource::Url { url, headers } => {
            let url = ctx
                .scope
                .render(&url.value)
                .map_err(|e| ("url".to_string(), e.to_string()))?;
            let label = url.clone();
            let client = crate::health::http_client();
            let mut req = client
                .get(&url)
                .timeout(ctx.step.timeout.unwrap_or(DEFAULT_TIMEOUT))
                .header("accept", "application/json");
            for (k, t) in headers {
                let v = ctx
                    .scope
                    .render(&t.value)
                    .map_err(|e| (label.clone(), format!("header `{k}`: {e}")))?;
                req = req.header(k.as_str(), v);
            }
            let resp = req.send().await.map_err(|e| {
                (
                    "GET".to_string(),
                    format!("cannot get {url}: {}", crate::check::chain(&e)),
                )
            })?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let hint = match status.as_u16() {
                    401 | 403 => "it wants credentials: add them under `from: { headers: ... }`",
                    404 => {
                        "check the path in `from: { url }`: it must be the service's configuration endpoint"
                    }
                    _ => {
                        "check that the service is up and healthy, or give the step `retries` to wait for it"
                    }
                };
                return Err((
                    "GET".to_string(),
                    format!(
                        "GET {url} answered {status}: {}; {hint}",
                        preview(ctx, &body)
                    ),
                ));
            }
            let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                (
                    "GET".to_string(),
                    format!(
                        "GET {url} did not answer JSON: {e}; it answered {}; `from: {{ url }}` must be an endpoint that returns the settings as a JSON document",
                        preview(ctx, &body)
                    ),
                )
            })?;
            Ok((Values::Json(json), label))
        }
    }
}

/// The start of a body, on one line, secrets masked: what an error shows of an answer.
fn preview(ctx: &StepCtx<'_>, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        "an empty body".into()
    } else {
        format!("`{}`", crate::check::expect::short(ctx.scrubber, body))
    }
}
