//! Secret values and the scrubber that masks them on every output path.

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
        // Longest first, so a secret that contains another is masked whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.inner = if self.values.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&self.values)
                .ok()
                .map(Arc::new)
        };
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn scrub(&self, text: &str) -> String {
        match &self.inner {
            Some(ac) => ac.replace_all(text, &vec![MASK; self.values.len()]),
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

#[cfg(test)]
mod tests {
    use super::*;

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
