//! Reading dotenv files (`KEY=value` lines), as written for docker compose and most tools.

use std::path::Path;

/// One `KEY=value` entry with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvEntry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses dotenv text: `KEY=value`, optional `export `, `#` comments, single or double quotes
/// (double quotes understand `\n`, `\"` and `\\`). A malformed line is an error naming it.
pub fn parse_dotenv(text: &str) -> Result<Vec<DotenvEntry>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, "expected `KEY=value`".into()));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err((line_no, format!("`{key}` is not a valid variable name")));
        }
        let value = value.trim();
        let value = if let Some(body) = value.strip_prefix('"') {
            let Some(end) = body.rfind('"') else {
                return Err((line_no, "unterminated double quote".into()));
            };
            body[..end]
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else if let Some(body) = value.strip_prefix('\'') {
            let Some(end) = body.rfind('\'') else {
                return Err((line_no, "unterminated single quote".into()));
            };
            body[..end].to_string()
        } else {
            // An unquoted value ends at ` #`.
            value
                .split(" #")
                .next()
                .unwrap_or("")
                .trim_end()
                .to_string()
        };
        out.push(DotenvEntry {
            key: key.to_string(),
            value,
            line: line_no,
        });
    }
    Ok(out)
}

/// Reads and parses a dotenv file; errors name the file and line.
pub fn read_dotenv(path: &Path) -> Result<Vec<DotenvEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_dotenv(&text).map_err(|(line, msg)| format!("{}:{line}: {msg}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let e = parse_dotenv("# c\nA=1\nexport B = \"two\\nlines\"\nC='x #y'\nD=plain # note\n")
            .unwrap();
        let kv: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("A", "1"),
                ("B", "two\nlines"),
                ("C", "x #y"),
                ("D", "plain")
            ]
        );
        assert_eq!(e[1].line, 3);
        assert_eq!(parse_dotenv("ok=1\nnot a line\n").unwrap_err().0, 2);
    }
}
