//! `gate: secrets`: required names, forbidden names and value shapes, and drift between
//! environments. Values are read from the sources and never shown: a finding names the
//! secret, where it came from and a short fingerprint of its value.

use std::collections::{BTreeMap, BTreeSet};

use stagegate_plan::dotenv::read_dotenv;
use stagegate_plan::gate::{SecretSource, SecretsGate};
use stagegate_plan::{Plan, Secret};

use super::exec::capture;
use super::{Check, Findings};
use crate::process::{Exit, last_lines};
use crate::step::StepCtx;

/// Names and values read from one source.
struct Source {
    label: String,
    values: BTreeMap<String, Secret>,
}

pub(crate) async fn evaluate(g: &SecretsGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let mut sources = Vec::new();
    let from: Vec<SecretSource> = if g.from.is_empty() {
        let mut d = vec![SecretSource::Environment];
        if let Some(p) = super::environment_dotenv(ctx.plan, &ctx.scope.environment)
            && p.exists()
        {
            d.push(SecretSource::Dotenv(stagegate_plan::Spanned {
                value: stagegate_plan::Template::literal(&p.display().to_string()),
                span: ctx.step.span.clone(),
            }));
        }
        d
    } else {
        g.from.clone()
    };
    for src in &from {
        match read_source(src, ctx).await {
            Ok(s) => sources.push(s),
            Err((label, e)) => f.checks.push(Check::fail(format!("source {label}"), e)),
        }
    }
    let looked_in = sources
        .iter()
        .map(|s| s.label.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // The first source that has a non-empty value wins, as for the plan's secrets.
    let find = |name: &str| -> Option<(&Secret, &str)> {
        sources.iter().find_map(|s| {
            s.values
                .get(name)
                .filter(|v| !v.expose().is_empty())
                .map(|v| (v, s.label.as_str()))
        })
    };
    let mut help = Vec::new();
    let looked_at = |name: &str| g.only.is_empty() || g.only.iter().any(|p| p.value.matches(name));

    if !g.require.is_empty() {
        let mut findings = Vec::new();
        let mut missing = Vec::new();
        for name in &g.require {
            match find(&name.value) {
                Some((v, from)) => findings.push(format!(
                    "{} is set ({}, from {from})",
                    name.value,
                    v.fingerprint()
                )),
                None => {
                    findings.push(format!("{} is missing", name.value));
                    missing.push(name.value.as_str());
                }
            }
        }
        if missing.is_empty() {
            f.checks.push(
                Check::pass(
                    "require",
                    format!("{} required secret(s) are set", g.require.len()),
                )
                .with_findings(findings),
            );
        } else {
            f.checks.push(
                Check::fail(
                    "require",
                    format!(
                        "required secret(s) missing: {} (looked in: {looked_in})",
                        missing.join(", ")
                    ),
                )
                .with_findings(findings),
            );
            help.push(format!(
                "set {} in the environment's secrets",
                missing.join(", ")
            ));
        }
    }

    if !g.forbid.is_empty() {
        let patterns = g
            .forbid
            .iter()
            .map(|p| p.value.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut findings = Vec::new();
        let mut names = BTreeSet::new();
        for s in &sources {
            for (name, v) in &s.values {
                if v.expose().is_empty() || !looked_at(name) {
                    continue;
                }
                if let Some(p) = g.forbid.iter().find(|p| p.value.matches(name)) {
                    names.insert(name.clone());
                    findings.push(format!(
                        "{name} ({}, from {}) matches forbidden {}",
                        v.fingerprint(),
                        s.label,
                        p.value
                    ));
                }
            }
        }
        if findings.is_empty() {
            f.checks.push(Check::pass(
                "forbid",
                format!("no secret named like {patterns} is set"),
            ));
        } else {
            let names: Vec<String> = names.into_iter().collect();
            f.checks.push(
                Check::fail(
                    "forbid",
                    format!(
                        "forbidden secret(s) set in {}: {}",
                        ctx.scope.environment,
                        names.join(", ")
                    ),
                )
                .with_findings(findings),
            );
            help.push(format!(
                "remove {} from {}'s secrets",
                names.join(", "),
                ctx.scope.environment
            ));
        }
    }

    if !g.forbid_values.is_empty() {
        let labels = g
            .forbid_values
            .iter()
            .map(|v| v.label.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut findings = Vec::new();
        let mut names = BTreeSet::new();
        let mut checked = 0;
        for s in &sources {
            for (name, v) in &s.values {
                if v.expose().is_empty() || !looked_at(name) {
                    continue;
                }
                checked += 1;
                if let Some(shape) = g
                    .forbid_values
                    .iter()
                    .find(|x| x.regex.is_match(v.expose()))
                {
                    names.insert(name.clone());
                    findings.push(format!(
                        "{name} ({}, from {}) looks like {}",
                        v.fingerprint(),
                        s.label,
                        shape.label
                    ));
                }
            }
        }
        if findings.is_empty() {
            f.checks.push(Check::pass(
                "forbid_values",
                format!("none of {checked} value(s) looks like {labels}"),
            ));
        } else {
            let names: Vec<String> = names.into_iter().collect();
            f.checks.push(
                Check::fail(
                    "forbid_values",
                    format!("forbidden value(s) in {}", names.join(", ")),
                )
                .with_findings(findings),
            );
            help.push(format!(
                "replace the value(s) of {} with {}'s own credentials",
                names.join(", "),
                ctx.scope.environment
            ));
        }
    }

    if let Some(d) = &g.drift {
        let here = &ctx.scope.environment;
        let ignored = |n: &str| d.ignore.iter().any(|p| p.value.matches(n));
        let mine = declared(ctx.plan, here);
        let mut findings = Vec::new();
        for other in &d.with {
            let theirs = declared(ctx.plan, &other.value);
            for n in mine.difference(&theirs).filter(|n| !ignored(n)) {
                findings.push(format!(
                    "{n} is declared for {here} but not for {}",
                    other.value
                ));
            }
            for n in theirs.difference(&mine).filter(|n| !ignored(n)) {
                findings.push(format!(
                    "{n} is declared for {} but not for {here}",
                    other.value
                ));
            }
        }
        let with = d
            .with
            .iter()
            .map(|w| w.value.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if findings.is_empty() {
            f.checks.push(Check::pass(
                "drift",
                format!(
                    "{here} declares the same {} secret name(s) as {with}",
                    mine.iter().filter(|n| !ignored(n)).count()
                ),
            ));
        } else {
            f.checks.push(
                Check::fail(
                    "drift",
                    format!("secret names differ between {here} and {with}"),
                )
                .with_findings(findings),
            );
            help.push("declare the same names under each environment's `secrets` (or list the expected differences in `drift.ignore`)".into());
        }
    }
    if !help.is_empty() {
        f.help = Some(help.join("; "));
    }
    f
}

/// Secret names declared for an environment: the plan's and the environment's own.
fn declared(plan: &Plan, environment: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = plan.secrets.names().map(String::from).collect();
    if let Some(e) = plan.environment(environment) {
        names.extend(e.secrets.names().map(String::from));
    }
    names
}

async fn read_source(src: &SecretSource, ctx: &StepCtx<'_>) -> Result<Source, (String, String)> {
    match src {
        SecretSource::Environment => Ok(Source {
            label: "environment".into(),
            values: ctx
                .scope
                .process_env
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
        }),
        SecretSource::Dotenv(t) => {
            let rendered = ctx
                .scope
                .render(&t.value)
                .map_err(|e| ("dotenv".to_string(), e.to_string()))?;
            let path = ctx.plan.dir.join(&rendered);
            let label = super::show_path(ctx.plan, &path);
            let entries = read_dotenv(&path).map_err(|e| (label.clone(), e))?;
            Ok(Source {
                label,
                values: entries
                    .into_iter()
                    .map(|e| (e.key, Secret::new(e.value)))
                    .collect(),
            })
        }
        SecretSource::Command { run, json } => {
            let shell = ctx
                .scope
                .render_shell(&run.value)
                .map_err(|e| ("command".to_string(), e.to_string()))?;
            let script = shell.script;
            let first = script
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            let label = format!("`{first}…`");
            let mut env = ctx.command_env().map_err(|e| (label.clone(), e))?;
            env.extend(shell.env);
            let cwd = ctx.command_cwd().map_err(|e| (label.clone(), e))?;
            let out = capture(&script, &cwd, &env, ctx.step.timeout, ctx.cancel).await;
            if out.exit != Exit::Code(0) {
                // Whatever the command printed may hold secrets: show only its error stream,
                // scrubbed of anything its output contained.
                let mut scrub = ctx.scrubber.clone();
                for v in parse_values(&out.stdout, json.as_ref().map(|j| &j.value))
                    .unwrap_or_default()
                    .values()
                {
                    scrub.add(v.expose());
                }
                let err = scrub.scrub(&last_lines(&out.stderr, 5));
                return Err((
                    label,
                    format!(
                        "the source command {}{}",
                        out.exit.describe(ctx.step.timeout),
                        if err.is_empty() {
                            String::new()
                        } else {
                            format!(": {err}")
                        }
                    ),
                ));
            }
            let values = parse_values(&out.stdout, json.as_ref().map(|j| &j.value))
                .map_err(|e| (label.clone(), e))?;
            Ok(Source { label, values })
        }
    }
}

/// A JSON object of names to values (at `json` when given), else `NAME=value` lines.
fn parse_values(
    text: &str,
    json: Option<&serde_json_path::JsonPath>,
) -> Result<BTreeMap<String, Secret>, String> {
    let as_object = |v: &serde_json::Value| -> Option<BTreeMap<String, Secret>> {
        let o = v.as_object()?;
        Some(
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), Secret::new(s))
                })
                .collect(),
        )
    };
    let parsed: Option<serde_json::Value> = serde_json::from_str(text.trim()).ok();
    match (json, parsed) {
        (Some(path), Some(v)) => {
            let nodes = path.query(&v).all();
            let found = nodes
                .first()
                .ok_or_else(|| format!("the output has nothing at {path}"))?;
            as_object(found).ok_or_else(|| format!("the value at {path} is not a JSON object"))
        }
        (Some(_), None) => Err("the output is not JSON".into()),
        (None, Some(v)) if v.is_object() => as_object(&v).ok_or_else(String::new),
        (None, _) => stagegate_plan::dotenv::parse_dotenv(text)
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|e| (e.key, Secret::new(e.value)))
                    .collect()
            })
            .map_err(|(line, e)| {
                format!(
                    "the output is neither a JSON object nor NAME=value lines (line {line}: {e})"
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_objects_and_dotenv_lines() {
        let v = parse_values(r#"{"A": "1", "B": true}"#, None).unwrap();
        assert_eq!(v["A"].expose(), "1");
        assert_eq!(v["B"].expose(), "true");
        let q = serde_json_path::JsonPath::parse("$.data.data").unwrap();
        let v = parse_values(r#"{"data": {"data": {"K": "v"}}}"#, Some(&q)).unwrap();
        assert_eq!(v["K"].expose(), "v");
        let v = parse_values("X=1\nexport Y=two\n", None).unwrap();
        assert_eq!(v["Y"].expose(), "two");
        assert!(parse_values("not json", Some(&q)).is_err());
        assert!(parse_values("{\"data\": 1}", Some(&q)).is_err());
    }
}
