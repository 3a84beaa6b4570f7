//! Templates in shell commands: a value never becomes shell syntax.
//!
//! `run`, `build`, `start`, `rollback`, command checks and command gates hand their text to
//! `sh -c`. Pasting a `${{ }}` value into that text would let the value run: a release
//! version, a `--var`, an environment variable or a value captured from an HTTP answer
//! holding `$(touch x)` would run `touch x`. So, as GitHub Actions advises for its own
//! templates, each value goes to the shell through an environment variable instead
//! ([`ShellScript::env`]: `STAGEGATE_VALUE_1`, `STAGEGATE_VALUE_2`, ...), and the command text
//! gets a reference to that variable, written for where the template stands:
//!
//! | the template stands        | it becomes                  | the shell sees          |
//! |----------------------------|-----------------------------|-------------------------|
//! | outside quotes             | `"${STAGEGATE_VALUE_1}"`    | one word, the value     |
//! | inside `"..."`             | `${STAGEGATE_VALUE_1}`      | the value, in the string|
//! | inside `'...'`             | `'"${STAGEGATE_VALUE_1}"'`  | the value, in the string|
//! | in a `<<EOF` here-document | `${STAGEGATE_VALUE_1}`      | the value, in the text  |
//! | in a `# comment`           | (the value, newlines made spaces) | nothing           |
//!
//! The shell expands a variable once and never parses its value again, so the value is
//! data in every one of these places. Inside a quoted here-document (`<<'EOF'`) nothing is
//! expanded, so the text keeps the reference itself: put such templates elsewhere.

use std::collections::BTreeMap;

use crate::template::{Part, Ref, RenderError, Template};

/// A command ready for `sh -c`: its text and the variables its values travel in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellScript {
    pub script: String,
    pub env: BTreeMap<String, String>,
}

/// The prefix of the variables that carry template values.
pub const VALUE_VAR: &str = "STAGEGATE_VALUE_";

/// Where in the shell's grammar the text so far has left us.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ctx {
    /// Plain command text (also inside `$( )`, `` ` ` `` and `( )`).
    Plain,
    Single,
    Double,
    Comment,
    /// A here-document's body: its delimiter, and whether it expands (`<<EOF`, not `<<'EOF'`).
    Heredoc {
        delim: String,
        expands: bool,
    },
}

/// Follows the shell's quoting through literal text, closely enough to say where a template
/// stands. A `$(`, `` ` `` or `(` opens a nested plain context; here-documents start after
/// the line that names them.
#[derive(Debug)]
struct Scanner {
    stack: Vec<Ctx>,
    /// Here-documents named on the current line, to start at its end.
    pending: Vec<(String, bool)>,
    /// The last character seen, for `$(` and word starts.
    prev: char,
    escaped: bool,
    /// The current line so far (for here-document delimiters).
    line: String,
}

impl Scanner {
    fn new() -> Self {
        Self {
            stack: vec![Ctx::Plain],
            pending: Vec::new(),
            prev: '\n',
            escaped: false,
            line: String::new(),
        }
    }

    fn top(&self) -> &Ctx {
        self.stack.last().unwrap_or(&Ctx::Plain)
    }

    fn feed(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            if let Ctx::Heredoc { delim, .. } = self.top().clone() {
                if c == '\n' {
                    let line = std::mem::take(&mut self.line);
                    if line.trim_start_matches('\t') == delim {
                        self.stack.pop();
                        self.start_pending_heredoc();
                    }
                } else {
                    self.line.push(c);
                }
                self.prev = c;
                continue;
            }
            if c == '\n' {
                self.line.clear();
            } else {
                self.line.push(c);
            }
            if self.escaped {
                self.escaped = false;
                self.prev = c;
                continue;
            }
            match self.top().clone() {
                Ctx::Comment => {
                    if c == '\n' {
                        self.stack.pop();
                        self.start_pending_heredoc();
                    }
                }
                Ctx::Single => {
                    if c == '\'' {
                        self.stack.pop();
                    }
                }
                Ctx::Double => match c {
                    '\\' => self.escaped = true,
                    '"' => {
                        self.stack.pop();
                    }
                    '(' if self.prev == '$' => self.stack.push(Ctx::Plain),
                    '`' => self.stack.push(Ctx::Plain),
                    _ => {}
                },
                Ctx::Plain => match c {
                    '\\' => self.escaped = true,
                    '\'' => self.stack.push(Ctx::Single),
                    '"' => self.stack.push(Ctx::Double),
                    '#' if self.prev.is_whitespace()
                        || matches!(self.prev, ';' | '&' | '|' | '(') =>
                    {
                        self.stack.push(Ctx::Comment)
                    }
                    '(' => self.stack.push(Ctx::Plain),
                    ')' if self.stack.len() > 1 => {
                        self.stack.pop();
                    }
                    // A backquote closes the nested context it opened, if one is open.
                    '`' if self.stack.len() > 1 => {
                        self.stack.pop();
                    }
                    '`' => self.stack.push(Ctx::Plain),
                    '<' if self.prev == '<' => {
                        if let Some((delim, expands, used)) = heredoc_word(&chars[i..]) {
                            self.pending.push((delim, expands));
                            for &d in &chars[i..i + used] {
                                self.line.push(d);
                            }
                            i += used;
                            self.prev = ' ';
                            continue;
                        }
                    }
                    '\n' => self.start_pending_heredoc(),
                    _ => {}
                },
                Ctx::Heredoc { .. } => unreachable!("handled above"),
            }
            self.prev = c;
        }
    }

    fn start_pending_heredoc(&mut self) {
        if !self.pending.is_empty() {
            let (delim, expands) = self.pending.remove(0);
            // Later ones start when this one ends (pushed in reverse: the first on top).
            self.stack.push(Ctx::Heredoc { delim, expands });
        }
    }
}

/// After `<<`: an optional `-`, blanks, then the delimiter word, quoted or not. Returns the
/// delimiter, whether the body expands, and how many characters were consumed.
fn heredoc_word(rest: &[char]) -> Option<(String, bool, usize)> {
    let mut i = 0;
    if rest.first() == Some(&'<') {
        return None; // `<<<`: a here-string, not a here-document.
    }
    if rest.first() == Some(&'-') {
        i += 1;
    }
    while rest.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    let mut word = String::new();
    let mut quoted = false;
    while let Some(&c) = rest.get(i) {
        match c {
            '\'' | '"' => {
                quoted = true;
                let q = c;
                i += 1;
                while let Some(&d) = rest.get(i) {
                    i += 1;
                    if d == q {
                        break;
                    }
                    word.push(d);
                }
            }
            '\\' => {
                quoted = true;
                i += 1;
                if let Some(&d) = rest.get(i) {
                    word.push(d);
                    i += 1;
                }
            }
            c if c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | ')') => break,
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
    (!word.is_empty()).then_some((word, !quoted, i))
}

/// Renders `t` for `sh -c`: literal text as written, each value through a variable.
pub fn render_shell(
    t: &Template,
    resolve: &mut dyn FnMut(&Ref) -> Result<String, RenderError>,
) -> Result<ShellScript, RenderError> {
    let mut out = ShellScript::default();
    let mut scan = Scanner::new();
    for p in &t.parts {
        match p {
            Part::Lit(s) => {
                out.script.push_str(s);
                scan.feed(s);
            }
            Part::Expr(e) => {
                let value = e.eval(resolve)?;
                let name = format!("{VALUE_VAR}{}", out.env.len() + 1);
                let text = match scan.top() {
                    Ctx::Plain => format!("\"${{{name}}}\""),
                    Ctx::Double => format!("${{{name}}}"),
                    Ctx::Single => format!("'\"${{{name}}}\"'"),
                    Ctx::Heredoc { .. } => format!("${{{name}}}"),
                    Ctx::Comment => value.replace(['\n', '\r'], " "),
                };
                if !matches!(scan.top(), Ctx::Comment) {
                    out.env.insert(name, value);
                }
                // The inserted text is balanced: it leaves the context as it found it.
                out.script.push_str(&text);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(text: &str, value: &str) -> ShellScript {
        let t = Template::parse(text).unwrap();
        render_shell(&t, &mut |_| Ok(value.to_string())).unwrap()
    }

    /// Runs the rendered script in a real `sh` and returns what it printed.
    fn run(s: &ShellScript) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&s.script)
            .envs(&s.env)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    const HOSTILE: &str =
        "a $(echo INJECTED) `echo INJECTED` ; echo INJECTED ' \" \\ \n echo INJECTED $HOME *";

    #[test]
    fn a_value_is_data_wherever_the_template_stands() {
        let cases = [
            ("printf '%s' ${{ vars.x }}", HOSTILE.to_string()),
            ("printf '%s' \"v=${{ vars.x }}.\"", format!("v={HOSTILE}.")),
            ("printf '%s' 'v=${{ vars.x }}.'", format!("v={HOSTILE}.")),
            (
                "printf '%s' \"$(printf '%s' ${{ vars.x }})\"",
                HOSTILE.trim_end().to_string(),
            ),
            ("cat <<EOF\n${{ vars.x }}\nEOF", format!("{HOSTILE}\n")),
            (
                "cat <<-EOF\n\t${{ vars.x }}\n\tEOF\necho after",
                format!("{HOSTILE}\nafter\n"),
            ),
            (
                "echo one # ${{ vars.x }}\necho two",
                "one\ntwo\n".to_string(),
            ),
            ("x=${{ vars.x }}; printf '%s' \"$x\"", HOSTILE.to_string()),
        ];
        for (text, want) in cases {
            let s = shell(text, HOSTILE);
            let got = run(&s);
            assert!(
                !got.contains("INJECTED\n") || want.contains("INJECTED\n"),
                "{text}: {got:?}"
            );
            assert_eq!(got, want, "{text}\nscript: {}", s.script);
        }
    }

    #[test]
    fn literal_text_and_the_values_variables() {
        let s = shell("echo ${{ vars.x }} ${{ vars.x }}", "v");
        assert_eq!(
            s.script,
            "echo \"${STAGEGATE_VALUE_1}\" \"${STAGEGATE_VALUE_2}\""
        );
        assert_eq!(s.env.len(), 2);
        assert_eq!(shell("echo plain", "v").script, "echo plain");
        assert!(shell("echo plain", "v").env.is_empty());
    }
}
