//! Checks run on every response of a load test, and captures that take values from
//! responses. The HTTP check definitions (assertions on status, headers, JSON, ...) plug in
//! here by implementing [`ResponseCheck`]; a failed check makes the request an `assertion`
//! error and lowers the `checks` pass rate. A [`ResponseCapture`] takes a value (a token, the
//! id of what was just created) into the virtual user's variables, for its later requests;
//! [`JsonField`] is a simple one.

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

/// Takes a value from a response into a virtual user's variables.
///
/// Captures run after a response whose checks all passed and whose status is below 500, in
/// the order they were added. The value goes into that user's own [`Identity`] (no other
/// user sees it), and the user's requests that name the variable are filled in again, so
/// the rest of the iteration and later iterations send it. A capture that fails makes the
/// request an `assertion` error (``capture `NAME`: reason``) and ends the user's iteration.
pub trait ResponseCapture: Send + Sync {
    /// The variable the value goes into (`${{ vu.NAME }}` in later requests).
    fn var(&self) -> &str;

    /// Whether it reads the body; bodies are only kept when something needs them.
    fn needs_body(&self) -> bool {
        true
    }

    /// The value, or why there is none (shown as the error example).
    fn capture(&self, user: &Identity, response: &ResponseView<'_>) -> Result<String, String>;
}

/// Captures a value of a JSON body: a top-level field (`token`) or a dotted path into
/// objects and arrays (`data.session.token`, `items.0.id`). Strings are taken as they are,
/// numbers and booleans as written; `null`, objects and arrays are not values to capture.
#[derive(Debug, Clone)]
pub struct JsonField {
    var: String,
    path: String,
}

impl JsonField {
    /// Captures `path` of the body into the variable `var`.
    pub fn new(var: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            path: path.into(),
        }
    }

    /// The dotted path it reads.
    pub fn path(&self) -> &str {
        &self.path
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl ResponseCapture for JsonField {
    fn var(&self) -> &str {
        &self.var
    }

    fn capture(&self, _user: &Identity, r: &ResponseView<'_>) -> Result<String, String> {
        if r.body.is_empty() {
            return Err(format!(
                "the response to `{}` has no body to read `{}` from",
                r.request, self.path
            ));
        }
        let root: serde_json::Value = serde_json::from_slice(r.body).map_err(|e| {
            format!(
                "the response to `{}` is not JSON ({e}), so `{}` cannot be read",
                r.request, self.path
            )
        })?;
        let mut value = &root;
        let mut end = 0;
        for seg in self.path.split('.') {
            let start = end;
            end = start + seg.len() + 1;
            if seg.is_empty() {
                continue;
            }
            let parent = || match self.path[..start.saturating_sub(1)].trim_matches('.') {
                "" => "the body".to_string(),
                p => format!("`{p}`"),
            };
            value = match value {
                serde_json::Value::Object(o) => o
                    .get(seg)
                    .ok_or_else(|| format!("{} has no field `{seg}`", parent()))?,
                serde_json::Value::Array(a) => seg
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get(i))
                    .ok_or_else(|| {
                        format!(
                            "{} is an array of {} items: `{seg}` is not one of its indexes",
                            parent(),
                            a.len()
                        )
                    })?,
                other => {
                    return Err(format!(
                        "{} is {}, so it has no field `{seg}`",
                        parent(),
                        json_kind(other)
                    ));
                }
            };
        }
        match value {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            serde_json::Value::Bool(b) => Ok(b.to_string()),
            other => Err(format!(
                "`{}` is {}, not a string, number or boolean{}",
                self.path,
                json_kind(other),
                if other.is_object() {
                    ": capture one of its fields (`PATH.FIELD`)"
                } else {
                    ""
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(path: &str, body: &str) -> Result<String, String> {
        let h = HeaderMap::new();
        let view = ResponseView {
            request: "login",
            status: 200,
            headers: &h,
            body: body.as_bytes(),
        };
        JsonField::new("v", path).capture(&Identity::anonymous(0), &view)
    }

    #[test]
    fn json_fields_are_read_by_dotted_paths() {
        let body = r#"{"token":"abc","n":7,"ok":true,"data":{"items":[{"id":"x1"},{"id":2}]}}"#;
        assert_eq!(capture("token", body).unwrap(), "abc");
        assert_eq!(capture("n", body).unwrap(), "7");
        assert_eq!(capture("ok", body).unwrap(), "true");
        assert_eq!(capture("data.items.0.id", body).unwrap(), "x1");
        assert_eq!(capture("data.items.1.id", body).unwrap(), "2");
    }

    #[test]
    fn json_capture_failures_say_where_the_path_stopped() {
        let body = r#"{"data":{"items":[{"id":1}],"name":"a"},"none":null}"#;
        assert_eq!(
            capture("token", body).unwrap_err(),
            "the body has no field `token`"
        );
        assert_eq!(
            capture("data.items.3.id", body).unwrap_err(),
            "`data.items` is an array of 1 items: `3` is not one of its indexes"
        );
        assert_eq!(
            capture("data.name.first", body).unwrap_err(),
            "`data.name` is a string, so it has no field `first`"
        );
        let e = capture("data", body).unwrap_err();
        assert!(
            e.contains("is an object") && e.contains("capture one of its fields"),
            "{e}"
        );
        assert!(capture("none", body).unwrap_err().contains("is null"));
        let e = capture("token", "<html>").unwrap_err();
        assert!(e.contains("the response to `login` is not JSON"), "{e}");
        let e = capture("token", "").unwrap_err();
        assert!(e.contains("has no body"), "{e}");
    }
}
