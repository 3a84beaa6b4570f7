//! Secret values and the scrubber that masks them on every output path.
//!
//! The [`Scrubber`] masks each secret value as it is, and also in the forms stagegate itself
//! (or a command, or an HTTP answer) turns it into, so an encoded secret does not slip
//! through:
//!
//! - each line of a multi-line secret of at least [`MIN_LINE`] characters (a log holds
//!   one line at a time);
//! - percent-encoded, as in a URL (`%20` for a space) and as in a form or query string
//!   (`+` for a space);
//! - JSON-escaped, as inside a JSON string (`\"`, `\n`, `\u0001`);
//! - base64, at each of the three alignments it can have inside a longer base64 text: the
//!   `Authorization: Basic` header of `user:password` holds the password's base64 at an
//!   offset. Only the part of the encoding that depends on the secret alone is masked, and
//!   only when it is at least [`MIN_LINE`] characters long.

use std::fmt;
use std::sync::Arc;

use aho_corasick::AhoCorasick;

/// The text that replaces a secret value wherever it would appear.
pub const MASK: &str = "***";

/// A secret value. `Debug` and `Display` print the mask; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the places that need it: a child's environment, a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable fingerprint that identifies a value without revealing it.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(self.0.as_bytes());
        format!("sha256:{}", &hex::encode(d)[..8])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Replaces every known secret value in text with [`MASK`].
///
/// Built once per run from the secret values (and captured secret outputs, added as they
/// appear); cheap to clone and share between the executor and the reporters.
#[derive(Clone, Default)]
pub struct Scrubber {
    inner: Option<Arc<AhoCorasick>>,
    values: Vec<String>,
    /// How many patterns `inner` matches: the values and their encodings.
    patterns: usize,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} values)", self.values.len())
    }
}

impl Scrubber {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut s = Self::default();
        for v in secrets {
            s.values.push(v.0.clone());
        }
        s.rebuild();
        s
    }

    /// Adds a value discovered during the run (a secret step output).
    pub fn add(&mut self, value: &str) {
        if !value.is_empty() && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        self.values.retain(|v| !v.is_empty());
        let mut patterns: Vec<String> = Vec::new();
        for v in &self.values {
            for p in encodings(v) {
                if !patterns.contains(&p) {
                    patterns.push(p);
                }
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        patterns.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.patterns = patterns.len();
        self.inner = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
                .map(Arc::new)
        };
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn scrub(&self, text: &str) -> String {
        match &self.inner {
            Some(ac) => ac.replace_all(text, &vec![MASK; self.patterns]),
            None => text.to_string(),
        }
    }

    /// Scrubs every string inside a JSON value.
    pub fn scrub_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.scrub(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.scrub_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.scrub_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The shortest line of a multi-line secret, and the shortest base64 fragment, that is
/// masked on its own: shorter ones would mask ordinary words.
pub const MIN_LINE: usize = 4;

/// The value and every form of it that output may hold (see the module's doc).
fn encodings(v: &str) -> Vec<String> {
    use base64::Engine;
    let mut out = vec![v.to_string()];
    let mut push = |s: String| {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    };
    if v.contains('\n') {
        for line in v.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().chars().count() >= MIN_LINE {
                push(line.to_string());
                push(line.trim().to_string());
            }
        }
    }
    // JSON-escaped, without the quotes.
    if let Ok(j) = serde_json::to_string(v) {
        push(j[1..j.len() - 1].to_string());
    }
    // Percent-encoded: a URL's path or query (%20) and a form's (+).
    let percent: String = v
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    push(percent.to_lowercase_hex());
    push(percent);
    push(url::form_urlencoded::byte_serialize(v.as_bytes()).collect());
    // base64 at each alignment: only the groups made of the secret's bytes alone.
    let b = v.as_bytes();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(b);
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&padded);
        // Leading group mixes the pad's bits when offset > 0; the last group may mix the
        // next byte's bits when the length is not a multiple of three.
        let start = if offset == 0 { 0 } else { 4 };
        let whole = padded.len() / 3 * 4;
        let end = if padded.len() % 3 == 0 {
            enc.len()
        } else {
            whole
        };
        if end > start && end - start >= MIN_LINE.max(8) {
            push(enc[start..end].to_string());
        }
    }
    out
}

/// Lower-case hex digits in `%XX` escapes: some encoders write `%2f`.
trait LowerHex {
    fn to_lowercase_hex(&self) -> String;
}

impl LowerHex for String {
    fn to_lowercase_hex(&self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut chars = self.chars();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == '%' {
                for d in chars.by_ref().take(2) {
                    out.push(d.to_ascii_lowercase());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form stagegate or a server may put a secret in is masked.
    #[test]
    fn masks_lines_and_encodings_of_a_secret() {
        use base64::Engine;
        let secret = "p@ss w0rd&x=\"1\"/\u{1}\nsecond line here\nab";
        let s = Scrubber::new([&Secret::new(secret)]);
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let forms = [
            "second line here".to_string(),
            "p@ss w0rd&x=\"1\"/\u{1}".to_string(),
            serde_json::to_string(secret).unwrap(),
            format!(
                "q={}",
                url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
            ),
            "p%40ss%20w0rd%26x%3D%221%22%2F%01%0Asecond%20line%20here%0Aab".to_string(),
            "p%40ss%20w0rd%26x%3d%221%22%2f%01%0asecond%20line%20here%0aab".to_string(),
        ];
        for f in &forms {
            let out = s.scrub(&format!("before {f} after"));
            assert!(out.contains(MASK), "{f:?} -> {out:?}");
            assert!(
                !out.contains("second line") && !out.contains("w0rd"),
                "{f:?} -> {out:?}"
            );
        }
        for user in ["", "a", "ab", "admin", "x"] {
            let header = format!("Authorization: Basic {}", b64(&format!("{user}:{secret}")));
            let out = s.scrub(&header);
            assert!(out.contains(MASK), "user {user:?}: {out}");
            // What is left of the token is at most the groups that mix the user's bytes
            // and the last partial group.
            let left = out.split_whitespace().last().unwrap().replace(MASK, "");
            assert!(left.len() <= 8 + user.len() * 2, "user {user:?}: {out}");
        }
        // Short lines of a multi-line secret are not masked on their own.
        assert_eq!(s.scrub("ab"), "ab");
    }

    #[test]
    fn masks_values_and_never_prints_them() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let scrub = Scrubber::new([&s, &Secret::new("hunter2")]);
        assert_eq!(
            scrub.scrub("token=hunter2-very-secret and hunter2!"),
            "token=*** and ***!"
        );
        assert!(s.fingerprint().starts_with("sha256:"));
        assert!(!s.fingerprint().contains("hunter"));
    }
}
