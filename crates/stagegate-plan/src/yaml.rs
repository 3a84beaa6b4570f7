//! Reading the YAML node tree with positions, collecting every error instead of stopping.
//!
//! `marked_yaml` gives each node a line and column; scalars stay strings until a field asks
//! for a type, so "10MiB" or "30s" never surprise anyone by turning into something else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, Node};

use crate::diagnostic::{Diagnostics, Pos, Source, Span, did_you_mean};

/// A value with the place in the plan it came from.
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The reading context: the source and the diagnostics found so far.
pub(crate) struct Cx {
    pub source: Arc<Source>,
    /// The plan's directory, canonical when it can be: where relative paths start.
    pub dir: PathBuf,
    pub diags: Diagnostics,
    /// Every step id written in the plan, in order, even of steps that failed to read, so
    /// one broken step does not make every reference to it an error too.
    pub step_ids: Vec<String>,
}

fn describe(n: &Node) -> &'static str {
    match n {
        Node::Scalar(s) if s.as_str().is_empty() => "nothing",
        Node::Scalar(_) => "a string",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

impl Cx {
    pub fn new(source: Arc<Source>, dir: PathBuf) -> Self {
        Self {
            source,
            dir,
            diags: Diagnostics::default(),
            step_ids: Vec::new(),
        }
    }

    fn span_at(&self, span: &marked_yaml::Span, width: usize) -> Span {
        let pos = span
            .start()
            .map(|m| Pos {
                line: m.line(),
                col: m.column(),
            })
            .unwrap_or(Pos { line: 1, col: 1 });
        Span {
            source: self.source.clone(),
            pos,
            width,
        }
    }

    pub fn span(&self, n: &Node) -> Span {
        let width = match n {
            Node::Scalar(s) if !s.as_str().contains('\n') => s.as_str().chars().count(),
            _ => 1,
        };
        self.span_at(n.span(), width)
    }

    pub fn key_span(&self, k: &MarkedScalarNode) -> Span {
        self.span_at(k.span(), k.as_str().chars().count())
    }

    pub fn error(&mut self, msg: impl Into<String>, span: Span) {
        self.diags.error(msg, Some(span));
    }

    pub fn error_help(&mut self, msg: impl Into<String>, span: Span, help: impl Into<String>) {
        self.diags.error_help(msg, Some(span), help);
    }

    pub fn warning_help(&mut self, msg: impl Into<String>, span: Span, help: impl Into<String>) {
        self.diags
            .push(crate::Diagnostic::warning(msg, Some(span)).with_help(help));
    }

    pub fn mapping<'n>(&mut self, n: &'n Node, what: &str) -> Option<&'n MarkedMappingNode> {
        match n {
            Node::Mapping(m) => Some(m),
            other => {
                let span = self.span(other);
                self.error(
                    format!("{what} must be a mapping, found {}", describe(other)),
                    span,
                );
                None
            }
        }
    }

    /// Reports every key of `m` that is not in `allowed`, suggesting the closest valid one.
    pub fn keys(&mut self, m: &MarkedMappingNode, what: &str, allowed: &[&str]) {
        for (k, _) in m.iter() {
            if !allowed.contains(&k.as_str()) {
                let span = self.key_span(k);
                let help = match did_you_mean(k.as_str(), allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("valid keys here: {}", allowed.join(", ")),
                };
                self.error_help(
                    format!("unknown key `{}` in {what}", k.as_str()),
                    span,
                    help,
                );
            }
        }
    }

    pub fn scalar(&mut self, n: &Node, what: &str) -> Option<Spanned<String>> {
        match n {
            Node::Scalar(s) => Some(Spanned {
                value: s.as_str().to_string(),
                span: self.span(n),
            }),
            other => {
                let span = self.span(other);
                self.error(
                    format!("{what} must be a string, found {}", describe(other)),
                    span,
                );
                None
            }
        }
    }

    pub fn string(
        &mut self,
        m: &MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Option<Spanned<String>> {
        let n = m.get_node(key)?;
        self.scalar(n, &format!("`{key}` in {what}"))
    }

    pub fn bool(&mut self, m: &MarkedMappingNode, key: &str, what: &str) -> Option<bool> {
        let n = m.get_node(key)?;
        match n.as_scalar().and_then(scalar_bool) {
            Some(b) => Some(b),
            None => {
                let span = self.span(n);
                self.error_help(
                    format!(
                        "`{key}` in {what} must be true or false, found {}",
                        describe_value(n)
                    ),
                    span,
                    "write `true` or `false`",
                );
                None
            }
        }
    }

    pub fn uint(&mut self, m: &MarkedMappingNode, key: &str, what: &str) -> Option<u64> {
        let n = m.get_node(key)?;
        match n
            .as_scalar()
            .and_then(|s| s.as_str().trim().parse::<u64>().ok())
        {
            Some(v) => Some(v),
            None => {
                let span = self.span(n);
                self.error(
                    format!(
                        "`{key}` in {what} must be a whole number, found {}",
                        describe_value(n)
                    ),
                    span,
                );
                None
            }
        }
    }

    pub fn duration(
        &mut self,
        m: &MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Option<Spanned<Duration>> {
        let s = self.string(m, key, what)?;
        match parse_duration(&s.value) {
            Ok(d) => Some(Spanned {
                value: d,
                span: s.span,
            }),
            Err(e) => {
                self.error_help(
                    format!("`{key}` in {what}: {e}"),
                    s.span,
                    "write a duration such as `500ms`, `30s`, `10m`, `1h30m` or `2d`",
                );
                None
            }
        }
    }

    /// A list of strings; a single string is accepted as a list of one.
    pub fn string_list(
        &mut self,
        m: &MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Vec<Spanned<String>> {
        let Some(n) = m.get_node(key) else {
            return Vec::new();
        };
        match n {
            Node::Sequence(seq) => seq
                .iter()
                .filter_map(|item| self.scalar(item, &format!("an item of `{key}` in {what}")))
                .collect(),
            Node::Scalar(_) => self.scalar(n, what).into_iter().collect(),
            Node::Mapping(_) => {
                let span = self.span(n);
                self.error(
                    format!("`{key}` in {what} must be a list of strings, found a mapping"),
                    span,
                );
                Vec::new()
            }
        }
    }

    /// A mapping of names to string values (vars, env).
    pub fn string_map(
        &mut self,
        m: &MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> BTreeMap<String, Spanned<String>> {
        let mut out = BTreeMap::new();
        let Some(n) = m.get_node(key) else {
            return out;
        };
        let Some(map) = self.mapping(n, &format!("`{key}` in {what}")) else {
            return out;
        };
        for (k, v) in map.iter() {
            if let Some(s) = self.scalar(v, &format!("`{}` in `{key}`", k.as_str())) {
                out.insert(k.as_str().to_string(), s);
            }
        }
        out
    }
}

/// The items of a list, or the one value written where a list may stand.
pub(crate) fn one_or_many(n: &Node) -> Vec<&Node> {
    match n {
        Node::Sequence(s) => s.iter().collect(),
        other => vec![other],
    }
}

/// `true` or `false` (or `True`, `FALSE`, ...), quoted or not. The loader keeps quoted
/// scalars from coercing (so a quoted JSON value stays a string), and a flag reads the same
/// either way.
pub(crate) fn scalar_bool(s: &MarkedScalarNode) -> Option<bool> {
    match s.as_str() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn describe_value(n: &Node) -> String {
    match n {
        Node::Scalar(s) => format!("`{}`", s.as_str()),
        other => describe(other).to_string(),
    }
}

/// Parses `500ms`, `30s`, `10m`, `1h30m`, `2d`, `250us`; a bare number is seconds. The load
/// generator's parser ([`stagegate_load::slo::parse_duration`]), so a plan and a load test
/// read durations alike.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    stagegate_load::slo::parse_duration(text)
}

/// A duration as plans write it: `500ms`, `30s`, `10m`, `1h30m`, `1.5s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if d.subsec_millis() != 0 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
    }
}

/// The deepest nesting of mappings, sequences and flow collections a plan may have: far
/// above any real plan, far below what would overflow the stack of the YAML reader.
pub const MAX_YAML_DEPTH: usize = 128;

/// Finds where the YAML text nests deeper than [`MAX_YAML_DEPTH`], before the YAML reader
/// (which recurses once per level) sees it: `(line, column)`, both 1-based.
///
/// Block nesting is counted from indentation (each deeper indent, each `- ` on a line) and
/// flow nesting from `[` and `{` of a flow collection. Quoted scalars, comments and the text
/// of block scalars (`|`, `>`) are skipped. It may count a little more than the reader
/// would, never less.
pub(crate) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut indents: Vec<usize> = Vec::new();
    // A block scalar's text: lines indented deeper than this are text.
    let mut block_scalar: Option<usize> = None;
    // Inside a flow collection: its depth, and an open quote.
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if let Some(parent) = block_scalar {
            if body.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if flow == 0 && quote.is_none() {
            if body.trim().is_empty() || body.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut depth = indents.len();
        // Every character the scan looks at is ASCII: walking bytes is exact (a UTF-8
        // continuation byte is never one of them) and keeps a large plan cheap.
        let chars = body.as_bytes();
        let mut i = 0;
        // Where a value may start: a flow collection opens only there.
        let mut value_start = true;
        // The last plain value's bytes on this line, for a block scalar's `|` or `>`.
        let mut last_value: (usize, usize) = (0, 0);
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = quote {
                if c == q {
                    // '' inside single quotes is an escaped quote.
                    if q == b'\'' && chars.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                } else if c == b'\\' && q == b'"' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            match c {
                b'#' if i == 0 || chars[i - 1] == b' ' || chars[i - 1] == b'\t' => break,
                b'"' | b'\'' if value_start || flow > 0 => {
                    quote = Some(c);
                    value_start = false;
                }
                b'[' | b'{' if value_start || flow > 0 => {
                    flow += 1;
                    value_start = true;
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    value_start = false;
                }
                b',' if flow > 0 => value_start = true,
                b'-' | b'?'
                    if value_start && flow == 0 && chars.get(i + 1).is_none_or(|n| *n == b' ') =>
                {
                    depth += 1;
                }
                b':' if chars.get(i + 1).is_none_or(|n| *n == b' ') => {
                    value_start = true;
                    last_value = (i + 1, i + 1);
                }
                b' ' | b'\t' => {}
                _ => {
                    if value_start {
                        last_value.0 = i;
                    }
                    value_start = false;
                    last_value.1 = i + 1;
                }
            }
            if depth + flow > MAX_YAML_DEPTH {
                return Some((n + 1, indent + body[..i].chars().count() + 1));
            }
            i += 1;
        }
        if flow == 0 && quote.is_none() {
            let v = body
                .get(last_value.0..last_value.1.max(last_value.0))
                .unwrap_or("")
                .trim_end();
            if v.starts_with(['|', '>'])
                && v[1..].chars().all(|c| matches!(c, '-' | '+' | '0'..='9'))
            {
                block_scalar = Some(indent);
            }
        }
    }
    None
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn deep_block_flow_and_dash_nesting_is_found_and_real_plans_are_not() {
        let mut block = String::new();
        for i in 0..200 {
            block.push_str(&" ".repeat(i * 2));
            block.push_str("a:\n");
        }
        assert_eq!(too_deep(&block).map(|(l, _)| l), Some(MAX_YAML_DEPTH + 1));
        let flow = format!("a: {}1{}\n", "[".repeat(500), "]".repeat(500));
        assert!(too_deep(&flow).is_some());
        let dashes = format!("a:\n{}x\n", "- ".repeat(300));
        assert!(too_deep(&dashes).is_some());
        let fine = "project: x\nstages:\n  s:\n    - run: |\n        echo '[[[[[[' {{{{\n        echo \"]]\"\n      env: { A: \"[\", B: '{' }\n    - run: echo [x] {y}\n";
        assert_eq!(too_deep(fine), None);
        let nested_ok = format!("a: {}1{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(too_deep(&nested_ok), None);
    }
}
