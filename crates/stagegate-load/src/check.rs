//! Checks run on every response of a load test. The HTTP check definitions (assertions on
//! status, headers, JSON, ...) plug in here by implementing [`ResponseCheck`]; a failed
//! check makes the request an `assertion` error and lowers the `checks` pass rate.

use http::HeaderMap;

use crate::identity::Identity;

/// What a check or an isolation rule sees of one response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The request's name in the scenario.
    pub request: &'a str,
    pub status: u16,
    pub headers: &'a HeaderMap,
    /// The body, up to [`crate::LoadTest::body_limit`] bytes (empty when no check or rule
    /// needs it).
    pub body: &'a [u8],
}

/// A check evaluated on every response.
pub trait ResponseCheck: Send + Sync {
    /// Names the check in the report.
    fn name(&self) -> &str;

    /// Whether the check reads the body; bodies are only kept when one does.
    fn needs_body(&self) -> bool {
        true
    }

    /// `Err` says what was expected and what came.
    fn check(&self, user: &Identity, response: &ResponseView<'_>) -> Result<(), String>;
}

/// The status is one of these.
#[derive(Debug, Clone)]
pub struct StatusIn {
    name: String,
    statuses: Vec<u16>,
}

impl StatusIn {
    pub fn new(statuses: Vec<u16>) -> Self {
        let list = statuses
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            name: format!("status in [{list}]"),
            statuses,
        }
    }
}

impl ResponseCheck for StatusIn {
    fn name(&self) -> &str {
        &self.name
    }

    fn needs_body(&self) -> bool {
        false
    }

    fn check(&self, _user: &Identity, r: &ResponseView<'_>) -> Result<(), String> {
        if self.statuses.contains(&r.status) {
            Ok(())
        } else {
            Err(format!("expected {}, got status {}", self.name, r.status))
        }
    }
}
