//! `gate: config`: lint configuration files (dotenv, YAML, JSON, TOML) for what must not be
//! in an environment: URLs to localhost, plain `http://`, `DEBUG=true`, any pattern.
//!
//! Files are read line by line, so every finding names `file:line` whatever the format.
//! Comment lines (`#`, and `//` in JSON) and trailing ` # comments` are skipped. A line is
//! never shown whole: a finding shows what matched, with any `user:password@` masked.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use stagegate_plan::gate::ConfigGate;
use stagegate_plan::glob::expand_files;

use super::{Check, Findings};
use crate::step::StepCtx;

/// How many findings one rule lists before it only counts.
const LIST_MAX: usize = 25;

/// scheme `://` [userinfo `@`] host [`:` port]
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b([a-z][a-z0-9+.-]*)://(?:[^\s/@"'<>]*@)?(\[[0-9a-f:.]+\]|[^\s/:?#"'<>,;)\]}]+)(?::\d+)?[^\s"'<>,;)\]}]*"#,
    )
    .expect("the URL pattern compiles")
});

/// `KEY=value`, `KEY: value`, `"KEY": value,`, `KEY = value`, `export KEY=value`.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*(?:export\s+)?["']?([A-Za-z_][A-Za-z0-9_.-]*)["']?\s*[:=]\s*(.*?)\s*,?\s*$"#)
        .expect("the key-value pattern compiles")
});

static USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"://[^\s/@]*@").expect("the userinfo pattern compiles"));

pub(crate) fn evaluate(g: &ConfigGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let mut files = Vec::new();
    for t in &g.files {
        match ctx.scope.render(&t.value) {
            Ok(p) => match expand_files(&ctx.plan.dir, &p) {
                Ok(found) => files.extend(found),
                Err(e) => f.checks.push(Check::fail("files", e)),
            },
            Err(e) => f.checks.push(Check::fail("files", e)),
        }
    }
    files.sort();
    files.dedup();
    let mut texts = Vec::new();
    for path in &files {
        match std::fs::read_to_string(path) {
            Ok(t) => texts.push((super::show_path(ctx.plan, path), t, is_json(path))),
            Err(e) => f.checks.push(Check::fail(
                "files",
                format!("cannot read {}: {e}", super::show_path(ctx.plan, path)),
            )),
        }
    }
    if !texts.is_empty() {
        f.checks.insert(
            0,
            Check::pass("files", format!("read {} file(s)", texts.len()))
                .with_findings(texts.iter().map(|(n, ..)| n.clone()).collect()),
        );
    }
    let names = if texts.len() == 1 {
        texts[0].0.clone()
    } else {
        format!("{} files", texts.len())
    };
    let lines = || {
        texts.iter().flat_map(|(name, text, json)| {
            text.lines().enumerate().filter_map(move |(i, raw)| {
                let line = strip_comment(raw, *json)?;
                Some((format!("{name}:{}", i + 1), line))
            })
        })
    };

    if !g.forbid_hosts.is_empty() {
        let hosts = g
            .forbid_hosts
            .iter()
            .map(|h| h.value.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let findings: Vec<String> = lines()
            .flat_map(|(at, line)| {
                URL.captures_iter(line)
                    .filter_map(|c| {
                        let host = c[2].trim_matches(['[', ']']).to_ascii_lowercase();
                        g.forbid_hosts
                            .iter()
                            .any(|h| h.value.matches(&host))
                            .then(|| format!("{at}: URL to {host}: {}", show_url(&c[0])))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        f.checks.push(rule(
            "forbid_hosts",
            findings,
            format!("no URL to {hosts} in {names}"),
            format!("a URL to {hosts}"),
        ));
    }

    if g.require_https {
        let findings: Vec<String> = lines()
            .flat_map(|(at, line)| {
                URL.captures_iter(line)
                    .filter(|c| c[1].eq_ignore_ascii_case("http"))
                    .map(|c| format!("{at}: plain http: {}", show_url(&c[0])))
                    .collect::<Vec<_>>()
            })
            .collect();
        f.checks.push(rule(
            "require_https",
            findings,
            format!("every URL in {names} uses https"),
            "a plain http:// URL where https:// is required".into(),
        ));
    }

    if !g.forbid_values.is_empty() {
        let findings: Vec<String> = lines()
            .filter_map(|(at, line)| {
                let c = KEY_VALUE.captures(line)?;
                let value = unquote(&c[2]);
                g.forbid_values
                    .iter()
                    .find(|fv| {
                        fv.key.value.eq_ignore_ascii_case(&c[1])
                            && fv.value.value.eq_ignore_ascii_case(value)
                    })
                    .map(|fv| format!("{at}: {}={}", &c[1], fv.value.value))
            })
            .collect();
        let what = g
            .forbid_values
            .iter()
            .map(|v| format!("{}={}", v.key.value, v.value.value))
            .collect::<Vec<_>>()
            .join(", ");
        f.checks.push(rule(
            "forbid_values",
            findings,
            format!("no {what} in {names}"),
            format!("a forbidden setting ({what})"),
        ));
    }

    for p in &g.forbid_patterns {
        let what = p
            .message
            .clone()
            .unwrap_or_else(|| format!("/{}/", p.regex.value.as_str()));
        // What matched is not shown: a pattern for live keys would show the key.
        let findings: Vec<String> = lines()
            .filter(|(_, line)| p.regex.value.is_match(line))
            .map(|(at, _)| format!("{at}: {what}"))
            .collect();
        f.checks.push(rule(
            "forbid_patterns",
            findings,
            format!("nothing in {names} matches {what}"),
            what,
        ));
    }
    if f.checks.iter().any(|c| !c.ok) {
        f.help = Some(format!(
            "fix the lines named above; this configuration is not fit for {}",
            ctx.scope.environment
        ));
    }
    f
}

fn rule(name: &str, mut findings: Vec<String>, ok: String, bad: String) -> Check {
    if findings.is_empty() {
        return Check::pass(name, ok);
    }
    let n = findings.len();
    if n > LIST_MAX {
        findings.truncate(LIST_MAX);
        findings.push(format!("… and {} more", n - LIST_MAX));
    }
    let first = findings[0].split(": ").next().unwrap_or("").to_string();
    let message = if n == 1 {
        format!("{bad} at {first}")
    } else {
        format!("{n} findings of {bad}, the first at {first}")
    };
    Check::fail(name, message).with_findings(findings)
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The part of a line that is not a comment, or `None` for a comment line.
fn strip_comment(line: &str, json: bool) -> Option<&str> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with("//") || (!json && t.starts_with('#')) {
        return None;
    }
    if json {
        return Some(line);
    }
    // A ` #` begins a trailing comment (a `#` inside a URL has no space before it).
    Some(match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    })
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// A URL for a finding: credentials and the query (which may carry a token) masked, long
/// ones cut.
fn show_url(url: &str) -> String {
    let s = USERINFO.replace(url, "://***@");
    let s = match s.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => s.into_owned(),
    };
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_urls_and_settings_in_every_format() {
        let hosts: Vec<String> = [
            "API_URL=http://localhost:8000/api",
            "  url: \"http://user:pw@127.0.0.1:5432/db\"",
            "  \"backend\": \"http://0.0.0.0:9000\",",
            "endpoint = \"https://[::1]:8443/x\"",
            "ok: https://api.example.com/v1",
        ]
        .iter()
        .flat_map(|l| {
            URL.captures_iter(l)
                .map(|c| format!("{} {}", &c[1], &c[2]))
                .collect::<Vec<_>>()
        })
        .collect();
        assert_eq!(
            hosts,
            vec![
                "http localhost",
                "http 127.0.0.1",
                "http 0.0.0.0",
                "https [::1]",
                "https api.example.com"
            ]
        );
        assert_eq!(
            show_url("http://user:pw@127.0.0.1:5432/db"),
            "http://***@127.0.0.1:5432/db"
        );
        assert_eq!(
            show_url("http://localhost:8000/cb?token=abc123"),
            "http://localhost:8000/cb?***"
        );
        for (line, key, value) in [
            ("DEBUG=true", "DEBUG", "true"),
            ("export DEBUG = \"True\"", "DEBUG", "True"),
            ("debug: true", "debug", "true"),
            ("  \"DEBUG\": true,", "DEBUG", "true"),
            ("DEBUG = 'true'", "DEBUG", "true"),
        ] {
            let c = KEY_VALUE.captures(line).unwrap();
            assert_eq!((&c[1], unquote(&c[2])), (key, value), "{line}");
        }
        assert_eq!(strip_comment("# DEBUG=true", false), None);
        assert_eq!(strip_comment("A=1 # note", false), Some("A=1"));
        assert_eq!(
            strip_comment("\"u\": \"http://x/#a\"", true),
            Some("\"u\": \"http://x/#a\"")
        );
    }
}
