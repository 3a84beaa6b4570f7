//! `hey`, `ab` and `wrk` command lines as `load` steps (docs/load.md), and SLO lines near
//! them ("P95 < 2s", "<5% error rate", "No 5xx errors") as thresholds.

use std::sync::LazyLock;

use regex::Regex;

use crate::curl::to_template;

/// A load step read from a load tool's command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadTest {
    pub tool: String,
    pub vus: Option<u64>,
    pub requests: Option<u64>,
    pub duration: Option<String>,
    pub method: Option<String>,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub slo: Vec<String>,
    pub todos: Vec<String>,
}

/// The tool's words (the program first) as a load test, or `None` without a URL.
pub fn parse(words: &[String]) -> Option<LoadTest> {
    let tool = words.first()?.rsplit('/').next()?.to_string();
    // `-c100` is `-c 100`, `-d30s` is `-d 30s` (wrk's usual spelling).
    let words: Vec<String> = words
        .iter()
        .flat_map(|w| {
            let b = w.as_bytes();
            if b.len() > 2 && b[0] == b'-' && b[1].is_ascii_alphabetic() && b[2].is_ascii_digit() {
                vec![w[..2].to_string(), w[2..].to_string()]
            } else {
                vec![w.clone()]
            }
        })
        .collect();
    let mut t = LoadTest {
        tool: tool.clone(),
        ..Default::default()
    };
    let mut url = None;
    let mut i = 1;
    while i < words.len() {
        let w = words[i].clone();
        let w = w.as_str();
        i += 1;
        let value = |i: &mut usize| {
            let v = words.get(*i).cloned();
            *i += 1;
            v
        };
        match (tool.as_str(), w) {
            (_, "-n") if tool != "wrk" => t.requests = value(&mut i).and_then(|v| v.parse().ok()),
            (_, "-c") => t.vus = value(&mut i).and_then(|v| v.parse().ok()),
            ("hey", "-z") | ("wrk", "-d") => t.duration = value(&mut i),
            ("hey", "-m") => t.method = value(&mut i).map(|m| m.to_uppercase()),
            (_, "-H") => {
                if let Some(h) = value(&mut i)
                    && let Some((k, v)) = h.split_once(':')
                {
                    t.headers
                        .push((k.trim().to_string(), to_template(v.trim())));
                }
            }
            ("wrk", "-t") => {
                value(&mut i);
            }
            (_, f) if f.starts_with('-') => {
                // Flags with a value we do not translate take the next word along.
                if matches!(
                    f,
                    "-q" | "-t" | "-d" | "-T" | "-D" | "-A" | "-o" | "-s" | "-p"
                ) {
                    value(&mut i);
                }
                t.todos
                    .push(format!("{tool} option `{f}` is not translated"));
            }
            (_, u) => url = Some(u.to_string()),
        }
    }
    let url = url?;
    static PLACEHOLDER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<[A-Za-z][A-Za-z0-9_-]*>").unwrap());
    for p in PLACEHOLDER.find_iter(&url) {
        t.todos.push(format!(
            "the URL's placeholder `{}` needs a value: a var, or a capture of an earlier step",
            p.as_str()
        ));
    }
    t.url = to_template(&url);
    if t.vus.is_none() {
        // hey's default is 50 users, ab's and wrk's 1 and 10.
        t.vus = Some(match tool.as_str() {
            "hey" => 50,
            "wrk" => 10,
            _ => 1,
        });
    }
    if t.requests.is_none() && t.duration.is_none() {
        t.requests = Some(if tool == "hey" { 200 } else { 1 });
    }
    Some(t)
}

static QUANTILE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(p50|p90|p95|p99|max)\b[^<>\n]{0,20}(<=?)\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?)\b")
        .unwrap()
});
static ERROR_RATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)<\s*(\d+(?:\.\d+)?)\s*%\s*error rate|error rate[^<>\n]{0,20}<\s*(\d+(?:\.\d+)?)\s*%",
    )
    .unwrap()
});
static NO_5XX: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\bno 5xx\b").unwrap());

/// The thresholds an SLO line states, in the load step's syntax.
pub fn slo_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in QUANTILE.captures_iter(text) {
        let unit = match &c[4] {
            "ms" => "ms",
            _ => "s",
        };
        out.push(format!("{} {} {}{unit}", c[1].to_lowercase(), &c[2], &c[3]));
    }
    for c in ERROR_RATE.captures_iter(text) {
        let v = c.get(1).or(c.get(2)).map(|m| m.as_str()).unwrap_or("0");
        out.push(format!("error_rate < {v}%"));
    }
    if NO_5XX.is_match(text) {
        out.push("status_5xx == 0".into());
    }
    // A list line in stagegate's own threshold syntax (`- error_rate < 1%`, as `stagegate
    // doc` writes them) is kept as written.
    for line in text.lines() {
        let t = line.trim_start_matches(['#', '-', '*', ' ']).trim();
        let listed = line.trim_start_matches(['#', ' ']).starts_with("- ");
        if listed && !out.iter().any(|o| o == t) && stagegate_load::slo::Threshold::parse(t).is_ok()
        {
            out.push(t.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::words;

    #[test]
    fn hey_ab_and_wrk() {
        let h = parse(&words(
            "hey -n 100 -c 10 -H \"Authorization: Bearer $token\" https://h/s",
        ))
        .unwrap();
        assert_eq!((h.vus, h.requests), (Some(10), Some(100)));
        assert_eq!(h.headers[0].1, "Bearer ${{ env.token }}");
        assert_eq!(h.url, "https://h/s");
        let w = parse(&words("wrk -t4 -c100 -d30s http://h/")).unwrap();
        assert_eq!(w.url, "http://h/");
        assert_eq!((w.vus, w.duration.as_deref()), (Some(100), Some("30s")));
        let a = parse(&words("ab -n 1000 -c 20 http://h/")).unwrap();
        assert_eq!((a.vus, a.requests), (Some(20), Some(1000)));
    }

    #[test]
    fn slo_lines_become_thresholds() {
        assert_eq!(
            slo_lines("- No 5xx errors\n- <5% error rate acceptable\n- Response time P95 < 2s"),
            ["p95 < 2s", "error_rate < 5%", "status_5xx == 0"]
        );
        assert_eq!(slo_lines("P99: < 1000ms"), ["p99 < 1000ms"]);
        assert!(slo_lines("CPU < 70%").is_empty());
        assert_eq!(
            slo_lines("# - p95 < 500ms\n# - error_rate < 1%\n# - status_5xx == 0"),
            ["p95 < 500ms", "error_rate < 1%", "status_5xx == 0"]
        );
    }
}
