//! Splitting a fenced shell block into commands, the comments around them, and lines that
//! are not commands at all (a pasted JSON answer, a release note, a URL).
//!
//! A command spans its `\` continuations, a here-document up to its terminator, and a
//! compound command (`for ... done`, `if ... fi`) to its end. In a PowerShell block a
//! backtick continues a line and braces group lines.

/// What a code block's language says about its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sh,
    PowerShell,
}

/// One piece of a shell block, with its line in the runbook.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A comment line, without its `#`.
    Comment {
        line: usize,
        text: String,
    },
    Blank,
    Command(Command),
    /// A JSON value pasted into the block (an example answer).
    Json {
        line: usize,
        text: String,
    },
    /// A line that does not look like a command.
    Prose {
        line: usize,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub line: usize,
    /// The command as written, continuation lines included, without a trailing comment.
    pub text: String,
    /// A trailing `# comment` on the command's last line.
    pub trailing: Option<String>,
    /// The here-document's command line (`ssh user@staging << 'EOF'`), if it has one.
    pub heredoc: Option<String>,
}

impl Command {
    /// The first word: the program.
    pub fn program(&self) -> &str {
        let first = self.text.split_whitespace().next().unwrap_or("");
        first.rsplit('/').next().unwrap_or(first)
    }
}

/// Splits `body` (a block whose first line is runbook line `first_line`) into pieces.
pub fn split(body: &str, first_line: usize, dialect: Dialect) -> Vec<Piece> {
    let lines: Vec<&str> = body.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = first_line + i;
        let raw = lines[i].trim_end_matches('\r');
        let t = raw.trim();
        if t.is_empty() {
            out.push(Piece::Blank);
            i += 1;
            continue;
        }
        if let Some(c) = t.strip_prefix('#') {
            out.push(Piece::Comment {
                line: line_no,
                text: c.trim().to_string(),
            });
            i += 1;
            continue;
        }
        if t.starts_with('{') || t.starts_with('[') {
            let (end, text) = json_value(&lines, i);
            out.push(Piece::Json {
                line: line_no,
                text,
            });
            i = end;
            continue;
        }
        if !looks_like_command(t) {
            out.push(Piece::Prose {
                line: line_no,
                text: t.to_string(),
            });
            i += 1;
            continue;
        }
        // A command: gather its continuation lines.
        let start = i;
        let mut heredoc_end: Option<String> = None;
        let mut heredoc_line = None;
        let mut depth: i32 = 0;
        loop {
            let l = lines[i].trim_end_matches('\r');
            if let Some(end) = &heredoc_end {
                if l.trim() == end {
                    heredoc_end = None;
                }
            } else {
                if let Some(word) = heredoc_word(l) {
                    heredoc_end = Some(word);
                    heredoc_line = Some(l.trim().to_string());
                }
                depth += block_depth(strip_comment(l), dialect);
            }
            let continued = {
                let code = strip_comment(l).trim_end();
                code.ends_with('\\')
                    || (dialect == Dialect::PowerShell && code.ends_with('`'))
                    || code.ends_with("&&")
                    || code.ends_with("||")
                    || code.ends_with('|')
            };
            i += 1;
            if i >= lines.len() || (heredoc_end.is_none() && depth <= 0 && !continued) {
                break;
            }
        }
        let mut text_lines: Vec<&str> = lines[start..i]
            .iter()
            .map(|l| l.trim_end_matches('\r'))
            .collect();
        let mut trailing = None;
        if let Some(last) = text_lines.last_mut() {
            let code = strip_comment(last);
            if code.len() < last.len() && heredoc_line.is_none() && i - start == 1 {
                trailing = Some(
                    last[code.len()..]
                        .trim_start_matches('#')
                        .trim()
                        .to_string(),
                );
                *last = code.trim_end();
            }
        }
        out.push(Piece::Command(Command {
            line: line_no,
            text: dedent(&text_lines),
            trailing,
            heredoc: heredoc_line,
        }));
    }
    out
}

/// A JSON value starting at line `i`: lines up to where its brackets balance.
fn json_value(lines: &[&str], i: usize) -> (usize, String) {
    let mut depth: i32 = 0;
    let mut j = i;
    let mut in_str = false;
    let mut esc = false;
    while j < lines.len() {
        for c in lines[j].chars() {
            if in_str {
                match c {
                    _ if esc => esc = false,
                    '\\' => esc = true,
                    '"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
        }
        j += 1;
        if depth <= 0 {
            break;
        }
    }
    (j, lines[i..j].join("\n"))
}

fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or(l.trim_start()).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The line without a trailing ` # comment` that is outside quotes.
pub fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The terminator of a here-document the line opens: `<< 'EOF'`, `<<EOF`, `<<-END`.
fn heredoc_word(line: &str) -> Option<String> {
    let code = strip_comment(line);
    let at = code.find("<<")?;
    let rest = code[at + 2..].trim_start_matches('-').trim_start();
    if rest.starts_with('<') {
        return None; // a here-string (`<<<`)
    }
    let word: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// How much a line opens (+) or closes (-) a compound command.
fn block_depth(code: &str, dialect: Dialect) -> i32 {
    match dialect {
        Dialect::PowerShell => code.matches('{').count() as i32 - code.matches('}').count() as i32,
        Dialect::Sh => {
            let mut d = 0;
            for segment in code.split([';', '&', '|']) {
                match segment.split_whitespace().next() {
                    Some("for" | "while" | "until" | "if" | "case") => d += 1,
                    Some("done" | "fi" | "esac") => d -= 1,
                    _ => {}
                }
            }
            d
        }
    }
}

/// Whether a line reads as a command rather than prose, a URL or a `Key: value` line.
pub fn looks_like_command(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    // An assignment is shell, whatever its value: `JWT_SECRET=<use-secrets-manager>`.
    let name_len = first.find('=').filter(|&at| {
        at > 0
            && first[..at]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if name_len.is_some() && !first.starts_with(|c: char| c.is_ascii_digit()) {
        return true;
    }
    if first.is_empty() || first.contains("://") || first.ends_with(':') {
        return false;
    }
    if !line.is_ascii() && !line.contains(" #") && !line.contains("echo") {
        // Box drawings and arrows: a diagram, not a command.
        if line
            .chars()
            .any(|c| ('\u{2500}'..='\u{257f}').contains(&c) || c == '→')
        {
            return false;
        }
    }
    let mut chars = first.chars();
    let Some(c0) = chars.next() else { return false };
    (c0.is_ascii_alphanumeric() || matches!(c0, '.' | '/' | '~' | '$' | '_'))
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/~$-=:@+{}()\"',*%[]".contains(c))
}

/// Shell words of a command: quotes removed, `\` continuations joined.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = text.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => {
                single = !single;
                has = true;
            }
            '"' if !single => {
                double = !double;
                has = true;
            }
            '\\' if !single => match chars.next() {
                Some('\n') => {}
                Some(n) if double && !matches!(n, '"' | '\\' | '$' | '`') => {
                    cur.push('\\');
                    cur.push(n);
                }
                Some(n) => {
                    cur.push(n);
                    has = true;
                }
                None => {}
            },
            '`' if !single && !double && chars.peek() == Some(&'\n') => {
                chars.next(); // a PowerShell continuation
            }
            c if c.is_whitespace() && !single && !double => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// Whether the command uses shell syntax beyond one program and its arguments: a pipe, a
/// list, a redirection, a substitution. Such a command stays a `run` step.
pub fn is_compound(text: &str) -> bool {
    // `<blob_id>` is a runbook's placeholder, not a redirection.
    static PLACEHOLDER: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"<[A-Za-z][A-Za-z0-9_-]*>").unwrap());
    let text = PLACEHOLDER.replace_all(text, "x");
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for c in text.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '|' | ';' | '&' | '>' | '<' if !single && !double => return true,
            '(' if !single && prev == '$' => return true,
            '`' if !single && !double => {}
            _ => {}
        }
        prev = c;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(body: &str) -> Vec<Command> {
        split(body, 10, Dialect::Sh)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Command(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn continuations_heredocs_and_loops_are_one_command() {
        let body = "docker build -t a \\\n  -f Dockerfile .\nssh user@host << 'EOF'\ncd /srv\nsystemctl restart x\nEOF\nfor p in 1 2; do\n  curl -f http://h:$p/\ndone\nls  # list";
        let c = commands(body);
        assert_eq!(c.len(), 4, "{c:#?}");
        assert_eq!(c[0].text, "docker build -t a \\\n  -f Dockerfile .");
        assert_eq!(c[1].line, 12);
        assert_eq!(c[1].heredoc.as_deref(), Some("ssh user@host << 'EOF'"));
        assert!(c[2].text.ends_with("done"));
        assert_eq!(c[3].text, "ls");
        assert_eq!(c[3].trailing.as_deref(), Some("list"));
    }

    #[test]
    fn prose_and_json_are_not_commands() {
        let p = split(
            "Tag: v1.0.0\n\"JWT verification failed\"\nhttps://github.com/x\n{\n  \"a\": 1\n}",
            1,
            Dialect::Sh,
        );
        assert!(matches!(p[0], Piece::Prose { .. }));
        assert!(matches!(p[1], Piece::Prose { .. }));
        assert!(matches!(p[2], Piece::Prose { .. }));
        assert_eq!(
            p[3],
            Piece::Json {
                line: 4,
                text: "{\n  \"a\": 1\n}".into()
            }
        );
    }

    #[test]
    fn words_unquote_and_join() {
        assert_eq!(
            words("curl -H \"Authorization: Bearer $t\" \\\n  'a b'"),
            ["curl", "-H", "Authorization: Bearer $t", "a b"]
        );
        assert!(is_compound("curl x | jq ."));
        assert!(!is_compound("curl 'a|b'"));
        assert!(!is_compound("curl https://h/files/<blob_id>/stream"));
    }
}
