//! Isolation rules: what one virtual user must never see. A rule looks at each response
//! with the identity of the user who got it; every violation is counted and the first is
//! kept as an example.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::check::ResponseView;
use crate::identity::{Identities, Identity};

/// Decides whether a response shows a user something that is not theirs.
pub trait IsolationRule: Send + Sync {
    /// `Some(description)` when the response violates the rule.
    fn violation(&self, user: &Identity, response: &ResponseView<'_>) -> Option<String>;
}

impl<F> IsolationRule for F
where
    F: Fn(&Identity, &ResponseView<'_>) -> Option<String> + Send + Sync,
{
    fn violation(&self, user: &Identity, response: &ResponseView<'_>) -> Option<String> {
        self(user, response)
    }
}

/// No response to a user contains another user's value of `field` (their id, email,
/// token, ...). Values are matched as whole words, so user `1` is not confused with `12`.
pub struct NoForeignValues {
    field: String,
    values: Vec<String>,
    finder: AhoCorasick,
}

impl NoForeignValues {
    /// `None` when no identity has `field`.
    pub fn new(field: &str, identities: &Identities) -> Option<Self> {
        let mut values: Vec<String> = identities
            .iter()
            .filter_map(|i| i.get(field))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        values.sort();
        values.dedup();
        if values.is_empty() {
            return None;
        }
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .ok()?;
        Some(Self {
            field: field.to_string(),
            values,
            finder,
        })
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl IsolationRule for NoForeignValues {
    fn violation(&self, user: &Identity, r: &ResponseView<'_>) -> Option<String> {
        let own = user.get(&self.field).unwrap_or_default();
        let body = r.body;
        for m in self.finder.find_iter(body) {
            let value = &self.values[m.pattern().as_usize()];
            if value == own {
                continue;
            }
            let before = m.start().checked_sub(1).map(|i| body[i]);
            let after = body.get(m.end()).copied();
            if before.is_some_and(is_word_byte) || after.is_some_and(is_word_byte) {
                continue;
            }
            let from = m.start().saturating_sub(40);
            let to = (m.end() + 40).min(body.len());
            let context = String::from_utf8_lossy(&body[from..to]).replace(['\n', '\r'], " ");
            return Some(format!(
                "the user of row {} (`{}` = {own}) got `{value}`, which belongs to another user, in the response to `{}`: …{context}…",
                user.index + 1,
                self.field,
                r.request
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn flags_another_users_value_as_a_whole_word_only() {
        let ids = Identities::from_csv("user_id\n1\n12\nann\n").unwrap();
        let rule = NoForeignValues::new("user_id", &ids).unwrap();
        let h = HeaderMap::new();
        let me = ids.for_vu(0);
        let view = |body: &'static str| ResponseView {
            request: "r",
            status: 200,
            headers: &h,
            body: body.as_bytes(),
        };
        assert_eq!(
            rule.violation(&me, &view(r#"{"user_id": 1, "n": 312}"#)),
            None
        );
        let v = rule.violation(&me, &view(r#"{"user_id": 12}"#)).unwrap();
        assert!(v.contains("got `12`, which belongs to another user"), "{v}");
        assert_eq!(rule.violation(&me, &view("hello annie")), None);
        assert!(rule.violation(&me, &view("hello ann")).is_some());
    }
}
