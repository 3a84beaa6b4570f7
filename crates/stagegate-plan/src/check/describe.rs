//! Checks written back: every template they hold (for reference checks), a default step
//! name, and the lines `stagegate plan` shows.

use super::*;
use crate::build::first_text_line;
use crate::template::Template;
use crate::yaml::Spanned;

/// A template written back as text, `${{ … }}` holes included: default step names, which
/// the executor renders when the step runs (secrets masked).
pub(crate) fn template_text(t: &Template) -> String {
    t.written()
}

impl CheckSpec {
    /// Every template in the check, so references are validated with the rest of the plan.
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        let mut out = Vec::new();
        match &self.target {
            CheckTarget::Http(h) => {
                out.push(&h.url);
                out.extend(h.headers.iter().map(|(_, t)| t));
                out.extend(h.query.iter().map(|(_, t)| t));
                match &h.auth {
                    Some(Auth::Bearer(t)) => out.push(t),
                    Some(Auth::Basic { user, password }) => {
                        out.push(user);
                        out.push(password);
                    }
                    None => {}
                }
                match &h.body {
                    Some(RequestBody::Json(j)) => json_templates(j, &mut out),
                    Some(RequestBody::Form(f)) => out.extend(f.iter().map(|(_, t)| t)),
                    Some(RequestBody::Multipart(parts)) => {
                        for p in parts {
                            payload_templates(&p.content, &mut out);
                            out.extend(p.filename.iter());
                            out.extend(p.content_type.iter());
                        }
                    }
                    Some(RequestBody::Raw(p)) => payload_templates(p, &mut out),
                    None => {}
                }
                out.extend(h.ca.iter());
                out.extend(h.save.iter());
            }
            CheckTarget::Command(t) | CheckTarget::Tcp(t) => out.push(t),
            CheckTarget::Log(l) => match &l.from {
                LogFrom::File(t) | LogFrom::Command(t) => out.push(t),
            },
            CheckTarget::File(files) => out.extend(files.iter()),
            CheckTarget::Prometheus(p) => {
                out.push(&p.url);
                out.push(&p.query);
                out.extend(p.headers.iter().map(|(_, t)| t));
                match &p.auth {
                    Some(Auth::Bearer(t)) => out.push(t),
                    Some(Auth::Basic { user, password }) => {
                        out.push(user);
                        out.push(password);
                    }
                    None => {}
                }
            }
        }
        for a in self.expect.iter().chain(&self.until) {
            match a {
                Assertion::Value {
                    subject, matcher, ..
                } => {
                    if let Subject::Json(p) = subject {
                        out.push(&p.text);
                    }
                    matcher_templates(matcher, &mut out);
                }
                Assertion::LogAbsent { pattern, .. } => out.push(&pattern.text),
                Assertion::LogPresent { entry, .. } => match entry {
                    LogEntry::Matches(r) => out.push(&r.text),
                    LogEntry::Json(fields) => {
                        for (p, ms) in fields {
                            out.push(&p.text);
                            for m in ms {
                                matcher_templates(m, &mut out);
                            }
                        }
                    }
                },
            }
        }
        for c in &self.captures {
            if let CaptureSource::Json(p) = &c.source {
                out.push(&p.text);
            }
            if let Some(r) = &c.regex {
                out.push(&r.text);
            }
        }
        out
    }

    /// A readable name for a step without `name`: `GET ${{…}}/health`, `tcp HOST:PORT`, ...
    pub fn default_name(&self) -> String {
        let short = |s: String| first_text_line(&s, 70);
        match &self.target {
            CheckTarget::Http(h) => short(format!("{} {}", h.method, h.url_text)),
            CheckTarget::Command(t) => short(format!("check: {}", template_text(&t.value))),
            CheckTarget::Tcp(t) => short(format!("tcp {}", template_text(&t.value))),
            CheckTarget::Log(l) => short(match &l.from {
                LogFrom::File(t) => format!("log {}", template_text(&t.value)),
                LogFrom::Command(t) => format!("log of `{}`", template_text(&t.value)),
            }),
            CheckTarget::Prometheus(p) => short(format!("prometheus {}", p.query_text)),
            CheckTarget::File(files) => short(format!(
                "file {}",
                files
                    .iter()
                    .map(|f| template_text(&f.value))
                    .collect::<Vec<_>>()
                    .join(" + ")
            )),
        }
    }

    /// Lines for `stagegate plan`.
    pub fn describe(&self, render: &dyn Fn(&Template) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.target {
            CheckTarget::Http(h) => {
                let mut url = render(&h.url.value);
                if !h.query.is_empty() {
                    let q: Vec<String> = h
                        .query
                        .iter()
                        .map(|(k, v)| format!("{k}={}", render(&v.value)))
                        .collect();
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str(&q.join("&"));
                }
                lines.push(format!("{} {url}", h.method));
                for (k, v) in &h.headers {
                    lines.push(format!("  {k}: {}", render(&v.value)));
                }
                match &h.auth {
                    Some(Auth::Bearer(t)) => {
                        lines.push(format!("  auth: bearer {}", render(&t.value)))
                    }
                    Some(Auth::Basic { user, .. }) => {
                        lines.push(format!("  auth: basic {} / ***", render(&user.value)))
                    }
                    None => {}
                }
                match &h.body {
                    Some(RequestBody::Json(_)) => lines.push("  body: JSON".into()),
                    Some(RequestBody::Form(f)) => lines.push(format!(
                        "  body: form {}",
                        f.iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some(RequestBody::Multipart(parts)) => lines.push(format!(
                        "  body: multipart {}",
                        parts
                            .iter()
                            .map(|p| format!("{}={}", p.name, describe_payload(&p.content, render)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some(RequestBody::Raw(p)) => {
                        lines.push(format!("  body: {}", describe_payload(p, render)))
                    }
                    None => {}
                }
                if let Some(s) = &h.save {
                    lines.push(format!("  save to {}", render(&s.value)));
                }
            }
            CheckTarget::Command(t) => {
                for l in render(&t.value).lines() {
                    lines.push(format!("$ {l}"));
                }
            }
            CheckTarget::Tcp(t) => lines.push(format!("connect to {}", render(&t.value))),
            CheckTarget::Prometheus(p) => {
                let mut l = format!(
                    "query {} at {}",
                    render(&p.query.value),
                    render(&p.url.value)
                );
                if let Some(r) = p.range {
                    l.push_str(&format!(
                        " over the last {}, every {}",
                        crate::yaml::fmt_duration(r),
                        crate::yaml::fmt_duration(p.step_or_default())
                    ));
                }
                lines.push(l);
            }
            CheckTarget::Log(l) => {
                let from = match &l.from {
                    LogFrom::File(t) => format!("file {}", render(&t.value)),
                    LogFrom::Command(t) => format!("output of `{}`", render(&t.value)),
                };
                let mut s = format!("scan {from}");
                if let Some(n) = l.tail {
                    s.push_str(&format!(", last {n} lines"));
                }
                if let Some(f) = l.follow {
                    s.push_str(&format!(", following for {f:?}"));
                }
                lines.push(s);
            }
            CheckTarget::File(files) => lines.push(format!(
                "read {}",
                files
                    .iter()
                    .map(|f| render(&f.value))
                    .collect::<Vec<_>>()
                    .join(" + ")
            )),
        }
        let kind = self.kind();
        let describe_all = |list: &[Assertion]| -> String {
            list.iter()
                .map(|a| describe_assertion(a, kind, render))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !self.expect.is_empty() {
            lines.push(format!("expect {}", describe_all(&self.expect)));
        }
        if !self.until.is_empty() {
            lines.push(format!("until {}", describe_all(&self.until)));
        }
        for c in &self.captures {
            lines.push(format!(
                "capture {} from {}{}{}",
                c.name,
                c.source.describe(),
                c.regex
                    .as_ref()
                    .map(|r| format!(" by /{}/", r.raw))
                    .unwrap_or_default(),
                if c.secret { " (secret)" } else { "" }
            ));
        }
        if let Some(r) = &self.retry {
            lines.push(format!(
                "retry {} attempts every {:?}",
                r.attempts, r.interval
            ));
        }
        if let Some(r) = &self.repeat {
            lines.push(format!(
                "repeat {} times, {} at a time",
                r.count, r.concurrency
            ));
        }
        lines
    }
}

fn describe_payload(p: &Payload, render: &dyn Fn(&Template) -> String) -> String {
    match p {
        Payload::Text(t) => format!("{:?}", render(&t.value)),
        Payload::File(f) => format!("file {}", render(&f.value)),
        Payload::Random { size, seed } => format!(
            "{size} random bytes{}",
            seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
        ),
    }
}

/// `status == 200`, `json $.version == 1.3.0`, `log has no /error/`, ...
pub fn describe_assertion(
    a: &Assertion,
    kind: &str,
    render: &dyn Fn(&Template) -> String,
) -> String {
    match a {
        Assertion::Value {
            subject, matcher, ..
        } => format!(
            "{} {}",
            subject.label(kind),
            describe_matcher(matcher, render)
        ),
        Assertion::LogAbsent { pattern, .. } => format!("no line matches /{}/", pattern.raw),
        Assertion::LogPresent { entry, .. } => format!("a line {}", describe_entry(entry, render)),
    }
}

pub fn describe_entry(e: &LogEntry, render: &dyn Fn(&Template) -> String) -> String {
    match e {
        LogEntry::Matches(r) => format!("matches /{}/", r.raw),
        LogEntry::Json(fields) => format!(
            "is JSON with {}",
            fields
                .iter()
                .map(|(p, ms)| format!(
                    "{} {}",
                    p.text_raw
                        .strip_prefix("$['")
                        .and_then(|s| s.strip_suffix("']"))
                        .unwrap_or(&p.text_raw),
                    ms.iter()
                        .map(|m| describe_matcher(m, render))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The expected side of a matcher, as reports show it: `== 200`, `2xx`, `contains "x"`.
pub fn describe_matcher(m: &Matcher, render: &dyn Fn(&Template) -> String) -> String {
    match m {
        Matcher::Equals(t) => format!("== {}", render(&t.value)),
        Matcher::OneOf(items) => format!(
            "one of {}",
            items
                .iter()
                .map(|t| render(&t.value))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Matcher::StatusClass(c) => format!("{c}xx"),
        Matcher::Contains(t) => format!("contains {:?}", render(&t.value)),
        Matcher::Matches(r) => format!("matches /{}/", render(&r.text.value)),
        Matcher::Exists(true) => "exists".into(),
        Matcher::Exists(false) => "does not exist".into(),
        Matcher::Count(inner) => format!("count {}", describe_matcher(inner, render)),
        Matcher::Length(inner) => format!("length {}", describe_matcher(inner, render)),
        Matcher::Compare(op, t) => format!("{} {}", op.symbol(), render(&t.value)),
        Matcher::Not(inner) => format!("not {}", describe_matcher(inner, render)),
    }
}

fn json_templates<'a>(j: &'a JsonTemplate, out: &mut Vec<&'a Spanned<Template>>) {
    match j {
        JsonTemplate::String(t) => out.push(t),
        JsonTemplate::Array(items) => items.iter().for_each(|i| json_templates(i, out)),
        JsonTemplate::Object(fields) => fields.iter().for_each(|(_, v)| json_templates(v, out)),
        _ => {}
    }
}

fn payload_templates<'a>(p: &'a Payload, out: &mut Vec<&'a Spanned<Template>>) {
    match p {
        Payload::Text(t) | Payload::File(t) => out.push(t),
        Payload::Random { .. } => {}
    }
}

fn matcher_templates<'a>(m: &'a Matcher, out: &mut Vec<&'a Spanned<Template>>) {
    match m {
        Matcher::Equals(t) | Matcher::Contains(t) | Matcher::Compare(_, t) => out.push(t),
        Matcher::OneOf(items) => out.extend(items.iter()),
        Matcher::Matches(r) => out.push(&r.text),
        Matcher::Count(inner) | Matcher::Length(inner) | Matcher::Not(inner) => {
            matcher_templates(inner, out)
        }
        Matcher::StatusClass(_) | Matcher::Exists(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_written_back_for_names() {
        let t = Template::parse("x ${{ steps.a.outputs.b }} ${{ env.P || '80' }}").unwrap();
        let text = template_text(&t);
        assert_eq!(text, "x ${{ steps.a.outputs.b }} ${{ env.P || '80' }}");
        assert_eq!(Template::parse(&text).unwrap(), t);
    }
}
