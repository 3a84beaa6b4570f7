//! Shell-style name patterns: `*_LIVE_*`, `v*`, `release/*`, `config/**/*.yaml`.
//!
//! `*` matches any run of characters except `/`, `**` any run including `/`, `?` one
//! character, `[abc]`, `[a-z]` and `[!abc]` one character of (or not of) a set. Everything
//! else matches itself. A pattern is checked when the plan is read, so a bad one is a
//! validation error with its place in the plan, never a surprise during a run.

use std::fmt;
use std::path::{Path, PathBuf};

/// A compiled pattern. `Display` shows it as written.
#[derive(Clone)]
pub struct Glob {
    text: String,
    regex: regex::Regex,
}

impl Glob {
    /// Compiles `text`; the error says what is wrong with it.
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("the pattern is empty".into());
        }
        let mut re = String::from("^");
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    // `**/` also matches no directory at all.
                    if chars.get(i + 2) == Some(&'/') {
                        re.push_str("(?:.*/)?");
                        i += 3;
                    } else {
                        re.push_str(".*");
                        i += 2;
                    }
                    continue;
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' => {
                    let close = chars[i + 1..]
                        .iter()
                        .enumerate()
                        // A `]` right after `[` or `[!` is a member, not the end.
                        .find(|(j, c)| **c == ']' && *j > 0 && !(*j == 1 && chars[i + 1] == '!'))
                        .map(|(j, _)| i + 1 + j)
                        .ok_or_else(|| format!("`[` at position {} has no closing `]`", i + 1))?;
                    let body: String = chars[i + 1..close].iter().collect();
                    let (negate, body) = match body.strip_prefix('!') {
                        Some(b) => (true, b.to_string()),
                        None => (false, body),
                    };
                    if body.is_empty() {
                        return Err(format!("`[` at position {} has an empty set", i + 1));
                    }
                    re.push('[');
                    if negate {
                        re.push('^');
                    }
                    for c in body.chars() {
                        match c {
                            '-' => re.push('-'),
                            '\\' | '^' | '[' | ']' | '&' | '~' => {
                                re.push('\\');
                                re.push(c);
                            }
                            c => re.push(c),
                        }
                    }
                    re.push(']');
                    i = close + 1;
                    continue;
                }
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
        }
        re.push('$');
        let regex = regex::Regex::new(&re).map_err(|e| {
            // A set such as `[z-a]` is the only way to get here.
            format!(
                "invalid character set: {}",
                e.to_string().lines().last().unwrap_or("")
            )
        })?;
        Ok(Glob {
            text: text.to_string(),
            regex,
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the text has any pattern character (otherwise it matches only itself).
    pub fn is_pattern(text: &str) -> bool {
        text.contains(['*', '?', '['])
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The files a path or pattern names, relative to `dir` (absolute paths stay absolute).
///
/// A path without pattern characters names one file, which must exist. A pattern walks
/// the directories under its literal prefix (skipping `.git` and `.stagegate`) and must
/// match at least one file. Results are sorted, for stable findings.
pub fn expand_files(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    if !Glob::is_pattern(pattern) {
        let path = dir.join(pattern);
        return if path.is_file() {
            Ok(vec![path])
        } else if path.exists() {
            Err(format!("`{pattern}` is a directory, not a file"))
        } else {
            Err(format!("file `{pattern}` does not exist"))
        };
    }
    let glob = Glob::new(pattern).map_err(|e| format!("bad pattern `{pattern}`: {e}"))?;
    // Walk from the longest prefix without pattern characters.
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts
        .iter()
        .take_while(|p| !Glob::is_pattern(p))
        .count()
        .min(parts.len() - 1);
    let prefix = parts[..literal].join("/");
    let base = if prefix.is_empty() && pattern.starts_with('/') {
        PathBuf::from("/")
    } else {
        dir.join(&prefix)
    };
    let depth = if pattern.contains("**") {
        16
    } else {
        parts.len() - literal
    };
    let mut found = Vec::new();
    walk(&base, depth, &mut |path| {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let text = rel.to_string_lossy();
        if glob.matches(&text) {
            found.push(path.to_path_buf());
        }
    });
    found.sort();
    if found.is_empty() {
        Err(format!("`{pattern}` matches no file"))
    } else {
        Ok(found)
    }
}

fn walk(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            let name = e.file_name();
            if name != ".git" && name != ".stagegate" {
                walk(&path, depth - 1, visit);
            }
        } else if path.is_file() {
            visit(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn matches_names_and_paths() {
        assert!(m("*_LIVE_*", "ALPACA_LIVE_API_KEY"));
        assert!(!m("*_LIVE_*", "ALPACA_PAPER_API_KEY"));
        assert!(m("v*", "v1.2.0"));
        assert!(!m("v*", "1.2.0"));
        assert!(m("release/*", "release/1.2"));
        assert!(!m("release/*", "release/1/2"));
        assert!(m("config/**/*.yaml", "config/a.yaml"));
        assert!(m("config/**/*.yaml", "config/x/y/a.yaml"));
        assert!(m("v?.[0-9]", "v1.5"));
        assert!(m("[!a]b", "xb"));
        assert!(!m("[!a]b", "ab"));
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "axb"));
        assert!(m("[]]", "]"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("*_LIVE_[").unwrap_err().contains("no closing"));
        assert!(Glob::new("[z-a]").is_err());
        assert!(Glob::new("[!]").is_err());
    }

    #[test]
    fn expands_files_under_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("config/deep")).unwrap();
        for f in ["config/a.yaml", "config/b.env", "config/deep/c.yaml"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(expand_files(d, "config/*.yaml").unwrap()),
            vec!["config/a.yaml"]
        );
        assert_eq!(
            names(expand_files(d, "config/**/*.yaml").unwrap()),
            vec!["config/a.yaml", "config/deep/c.yaml"]
        );
        assert_eq!(
            names(expand_files(d, "config/b.env").unwrap()),
            vec!["config/b.env"]
        );
        assert!(
            expand_files(d, "config/*.toml")
                .unwrap_err()
                .contains("matches no file")
        );
        assert!(
            expand_files(d, "nope.env")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(expand_files(d, "config").unwrap_err().contains("directory"));
    }
}
