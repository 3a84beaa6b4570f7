//! Writing runbook text into YAML safely.
//!
//! Nothing from a runbook is pasted into the plan as it is: every value goes through
//! [`string`] (a double-quoted YAML scalar with every special character escaped) or
//! [`template`] (the same, for fields the plan renders as templates, where a literal `${{`
//! would otherwise become an expression). Multi-line commands use [`block`], a literal block
//! scalar, which YAML never interprets.

/// A double-quoted YAML scalar holding exactly `text`.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text with every `${{` written as a template that renders to `${{`.
///
/// The plan has no escape for a literal `${{` (docs/plan.md, Templates), but the expression
/// `${{ '${{' }}` is a quoted literal whose value is `${{`: the runbook's text survives as
/// text and never becomes a reference such as `secrets.X`.
pub fn escape_template(text: &str) -> String {
    text.replace("${{", "${{ '${{' }}")
}

/// A double-quoted scalar for a field the plan reads as a template.
pub fn template(text: &str) -> String {
    string(&escape_template(text))
}

/// A value for a template field: a literal block scalar (`|-`) for multi-line text, indented
/// by `indent` spaces, else a quoted scalar. Text a block cannot hold exactly (control
/// characters, a carriage return) falls back to a quoted scalar.
pub fn block(text: &str, indent: usize) -> String {
    let text = escape_template(text);
    let blockable = text.contains('\n')
        && !text
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{feff}')
        && !text.ends_with('\n')
        && !text.lines().any(|l| l.trim().is_empty() && !l.is_empty())
        // A first line that starts with a space would need an indentation indicator.
        && !text.starts_with([' ', '\t']);
    if !blockable {
        return string(&text);
    }
    let pad = " ".repeat(indent);
    let mut out = String::from("|-");
    for line in text.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

/// A one-line YAML comment: line breaks become spaces, so the text cannot end the comment.
pub fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A name made of lowercase letters, digits and `-`: `Pre-Deployment Checklist` is
/// `pre-deployment-checklist`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hostile_text() {
        assert_eq!(string(r#""; rm -rf / #"#), r#""\"; rm -rf / #""#);
        assert_eq!(string("a\nb\\c"), r#""a\nb\\c""#);
        assert_eq!(string("bell\u{7}"), r#""bell\u0007""#);
    }

    #[test]
    fn a_template_in_the_runbook_stays_text() {
        assert_eq!(
            template("${{ secrets.X }}"),
            r#""${{ '${{' }} secrets.X }}""#
        );
        assert_eq!(
            block("echo ${{ secrets.X }}\nls", 4),
            "|-\n    echo ${{ '${{' }} secrets.X }}\n    ls"
        );
    }

    #[test]
    fn blocks_keep_leading_spaces_and_fall_back_to_quotes() {
        assert_eq!(block("  a\nb", 2), "\"  a\\nb\"");
        assert_eq!(block("one line", 2), "\"one line\"");
        assert_eq!(block("a\r\nb", 2), "\"a\\r\\nb\"");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Pre-Deployment Checklist"), "pre-deployment-checklist");
        assert_eq!(slug("### 1. Prepare Build!"), "1-prepare-build");
    }
}
