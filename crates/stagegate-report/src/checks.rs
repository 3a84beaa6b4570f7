//! Check steps in reports: the assertions a check recorded (`details.assertions`), and how
//! the reporters word them.

use stagegate_engine::check::AssertionResult;
use stagegate_engine::event::StepResult;

/// The assertions of a step, empty for steps that are not checks.
pub fn assertions(r: &StepResult) -> Vec<AssertionResult> {
    r.details.assertions().to_vec()
}

/// `✓` or `✗`.
pub fn mark(passed: bool) -> &'static str {
    if passed { "✓" } else { "✗" }
}

/// The head of a check's error that lists its failed assertions (`2 of 5 assertions
/// failed`, `after 3 attempts, 1 of 2 assertions failed`), so reporters can list the
/// assertions one per line instead; `None` when the error says something else.
pub fn error_headline(error: &str) -> Option<&str> {
    for word in ["assertions failed: ", "assertion failed: "] {
        if let Some(i) = error.find(word) {
            return Some(&error[..i + word.len() - 2]);
        }
    }
    None
}

/// Extra words for a passing check's line: `3 assertions`, `1000 requests`.
pub fn note(r: &StepResult) -> Option<String> {
    let n = assertions(r).len();
    if n == 0 {
        return None;
    }
    let mut s = format!("{n} assertion{}", if n == 1 { "" } else { "s" });
    if let Some(rep) = r.details.check().and_then(|c| c.repeat.as_ref()) {
        s.push_str(&format!(
            ", {} requests at {:.0}/s",
            rep.sent, rep.checks_per_second
        ));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headlines() {
        assert_eq!(
            error_headline("after 3 attempts, 1 of 2 assertions failed: status: expected 200"),
            Some("after 3 attempts, 1 of 2 assertions failed")
        );
        assert_eq!(
            error_headline("1 of 1 assertion failed: x"),
            Some("1 of 1 assertion failed")
        );
        assert_eq!(error_headline("GET http://x: connection refused"), None);
    }
}
