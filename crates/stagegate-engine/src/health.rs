//! Health waits: poll an HTTP endpoint until it answers as expected, or give up at a deadline.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::poll::{Attempt, GaveUp, PollPolicy, poll};

/// One expectation on a JSON field of the answer.
#[derive(Debug, Clone)]
pub struct JsonField {
    pub path: String,
    pub query: serde_json_path::JsonPath,
    pub equals: String,
}

/// A rendered health check, ready to poll.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    pub url: String,
    pub status: Vec<u16>,
    pub json: Vec<JsonField>,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Healthy {
    pub waited: Duration,
    pub attempts: u32,
    pub answer: String,
}

#[derive(Debug, Clone)]
pub enum Unhealthy {
    /// The deadline passed; `last` is what the last attempt saw.
    Deadline {
        waited: Duration,
        attempts: u32,
        last: String,
    },
    /// The process behind the service ended while we waited.
    Exited(String),
    Cancelled,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::Deadline {
                waited,
                attempts,
                last,
            } => write!(
                f,
                "not healthy after {:.1}s ({attempts} attempts); last answer: {last}",
                waited.as_secs_f64()
            ),
            Unhealthy::Exited(why) => write!(f, "{why}"),
            Unhealthy::Cancelled => write!(f, "cancelled while waiting for health"),
        }
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("a default HTTP client always builds")
}

/// Asks once. `Ok` carries a short description of the good answer, `Err` says what was wrong.
pub async fn probe_once(client: &reqwest::Client, probe: &HealthProbe) -> Result<String, String> {
    let per_try = probe
        .interval
        .max(Duration::from_secs(2))
        .min(probe.timeout.max(Duration::from_millis(100)));
    let resp = client
        .get(&probe.url)
        .timeout(per_try)
        .send()
        .await
        .map_err(|e| describe_reqwest(&e, &probe.url))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?;
    if !probe.status.contains(&status) {
        return Err(format!(
            "HTTP {status}, expected {} (body: {})",
            probe
                .status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            preview(&body)
        ));
    }
    if probe.json.is_empty() {
        return Ok(format!("HTTP {status}"));
    }
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| format!("HTTP {status} but the body is not JSON: {}", preview(&body)))?;
    let mut seen = Vec::new();
    for f in &probe.json {
        let nodes = f.query.query(&doc).all();
        let Some(actual) = nodes.first() else {
            return Err(format!(
                "`{}` is missing from the answer {}",
                f.path,
                preview(&body)
            ));
        };
        let actual = match actual {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if actual != f.equals {
            return Err(format!(
                "`{}` is {actual:?}, expected {:?}",
                f.path, f.equals
            ));
        }
        seen.push(format!("{}={actual}", f.path));
    }
    Ok(format!("HTTP {status}, {}", seen.join(", ")))
}

/// Polls until healthy, the deadline, the process's end (`exited` returns why), or cancel.
/// The polling is [`crate::poll`], the mechanism check steps use for `retry` and `until`.
pub async fn wait_healthy(
    client: &reqwest::Client,
    probe: &HealthProbe,
    exited: &(dyn Fn() -> Option<String> + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Healthy, Unhealthy> {
    let policy = PollPolicy {
        attempts: None,
        interval: probe.interval,
        deadline: Some(probe.timeout),
    };
    let result = poll(
        &policy,
        cancel,
        |_| async {
            match probe_once(client, probe).await {
                Ok(answer) => Attempt::Done(answer),
                Err(why) => match exited() {
                    Some(gone) => Attempt::Stop(gone),
                    None => Attempt::Again(why),
                },
            }
        },
        |_, _| {},
    )
    .await;
    match result {
        Ok(p) => Ok(Healthy {
            waited: p.waited,
            attempts: p.attempts,
            answer: p.value,
        }),
        Err(GaveUp::Exhausted {
            attempts,
            waited,
            last,
        }) => Err(Unhealthy::Deadline {
            waited,
            attempts,
            last,
        }),
        Err(GaveUp::Stopped { last, .. }) => Err(Unhealthy::Exited(last)),
        Err(GaveUp::Cancelled { .. }) => Err(Unhealthy::Cancelled),
    }
}

fn describe_reqwest(e: &reqwest::Error, url: &str) -> String {
    if e.is_connect() {
        format!("connection to {url} refused")
    } else if e.is_timeout() {
        format!("{url} did not answer in time")
    } else {
        format!("request to {url} failed: {e}")
    }
}

/// The first bytes of a body, for messages; never the whole of a large one.
pub fn preview(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).replace('\n', " ");
    if body.len() > MAX {
        format!("{text}… ({} bytes)", body.len())
    } else if text.is_empty() {
        "empty".into()
    } else {
        text
    }
}
