//! Diagnostics: an error or warning about a place in a plan file, rendered like a compiler's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a source file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A source file's name and text, shared by every diagnostic that points into it.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    /// Byte offset of each line's start, so finding a line is not a scan of the file.
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Self> {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Arc::new(Self {
            path: path.into(),
            text,
            line_starts,
        })
    }

    /// Line `n` (1-based) without its line ending.
    pub fn line(&self, n: usize) -> Option<&str> {
        let start = *self.line_starts.get(n.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(n)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        let line = self.text.get(start..end.max(start))?;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

/// A place in a source: the file and a position, with the width to underline.
#[derive(Debug, Clone)]
pub struct Span {
    pub source: Arc<Source>,
    pub pos: Pos,
    pub width: usize,
}

impl Span {
    pub fn path(&self) -> &Path {
        &self.source.path
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the plan: what is wrong, where, and what to do.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            span,
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(message, span)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col`, or the bare file name when the position is unknown.
    pub fn location(&self) -> Option<String> {
        self.span
            .as_ref()
            .map(|s| format!("{}:{}:{}", s.source.path.display(), s.pos.line, s.pos.col))
    }
}

impl fmt::Display for Diagnostic {
    /// Renders as
    /// ```text
    /// error: unknown key `comand` in step
    ///   --> stagegate.yml:12:7
    ///    |
    /// 12 |       comand: echo hi
    ///    |       ^^^^^^
    ///    = help: did you mean `command`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", self.message)?;
        if let Some(span) = &self.span {
            let gutter = span.pos.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(
                f,
                "{pad}--> {}:{}:{}",
                span.source.path.display(),
                span.pos.line,
                span.pos.col
            )?;
            if let Some(line) = span.source.line(span.pos.line) {
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {}", span.pos.line, line)?;
                let indent: String = line
                    .chars()
                    .take(span.pos.col.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{pad} | {indent}{}", "^".repeat(span.width.max(1)))?;
            }
            if let Some(help) = &self.help {
                writeln!(f, "{pad} = help: {help}")?;
            }
        } else if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// Every error found in a plan (and the warnings), in file order.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn error(&mut self, message: impl Into<String>, span: Option<Span>) {
        self.push(Diagnostic::error(message, span));
    }

    pub fn error_help(
        &mut self,
        message: impl Into<String>,
        span: Option<Span>,
        help: impl Into<String>,
    ) {
        self.push(Diagnostic::error(message, span).with_help(help));
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    /// Sorts by position so the report reads top to bottom.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            let key = |d: &Diagnostic| d.span.as_ref().map(|s| (s.source.path.clone(), s.pos));
            key(a).cmp(&key(b))
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest name to `given` among `candidates`, if it is close enough to be a likely typo:
/// at most two edits (a swap counts as one) and fewer edits than the name has letters, or a
/// strong prefix-weighted similarity.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = given.chars().count();
    candidates
        .into_iter()
        // Names of very different length are never close; skipping them keeps a huge typo
        // (a 300 KB value) linear instead of computing edit distances against it.
        .filter(|c| {
            let n = c.chars().count();
            n.abs_diff(len) <= 3 || (len <= 2 * n && n <= 2 * len)
        })
        .filter_map(|c| {
            let edits = strsim::damerau_levenshtein(given, c);
            let close = (edits <= 2 && edits < given.chars().count())
                || strsim::jaro_winkler(given, c) > 0.85;
            close.then_some((edits, c))
        })
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("comand", ["command", "run", "env"]),
            Some("command")
        );
        assert_eq!(did_you_mean("xyz", ["command", "run", "env"]), None);
        assert_eq!(did_you_mean("wbe", ["web", "db"]), Some("web"));
        assert_eq!(did_you_mean("rn", ["run", "env", "name"]), Some("run"));
        assert_eq!(did_you_mean("a", ["b"]), None);
    }

    #[test]
    fn renders_location_source_and_caret() {
        let src = Source::new("stagegate.yml", "a: 1\n  comand: x\n");
        let d = Diagnostic::error(
            "unknown key `comand`",
            Some(Span {
                source: src,
                pos: Pos { line: 2, col: 3 },
                width: 6,
            }),
        )
        .with_help("did you mean `command`?");
        let text = d.to_string();
        assert!(text.contains("--> stagegate.yml:2:3"), "{text}");
        assert!(text.contains("2 |   comand: x"), "{text}");
        assert!(text.contains("  |   ^^^^^^"), "{text}");
        assert!(text.contains("= help: did you mean `command`?"), "{text}");
    }
}
