//! `prometheus` checks and measurements: a PromQL query against the Prometheus HTTP API.
//!
//! An instant query goes to `/api/v1/query?query=Q&time=NOW`, a range query to
//! `/api/v1/query_range?query=Q&start=NOW-RANGE&end=NOW&step=STEP`. Vector, matrix and
//! scalar results become [`Series`]; an empty result is no data. A failed request, a
//! non-JSON answer or `"status":"error"` is an error of the source, not a failed check:
//! the message carries Prometheus' own `errorType` and `error`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use stagegate_plan::Scope;
use stagegate_plan::check::{Auth, PromQuery};

use super::Observed;
use super::expect::{Observation, Series};

/// The default timeout of one query.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers larger than this are refused (a query selecting far too many series).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// At most this many series are kept from one answer.
pub const MAX_SERIES: usize = 1000;

/// The innermost cause of a failed request (`Connection refused (os error 111)`), which
/// says what went wrong without the client's layers of wrapping.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// A query with its templates rendered.
#[derive(Debug)]
pub struct Prepared {
    client: reqwest::Client,
    /// `http://host:9090`.
    base: String,
    /// `http://host:9090/api/v1/query` or `.../query_range`.
    endpoint: String,
    /// The PromQL as sent.
    pub query: String,
    range: Option<(Duration, Duration)>,
    headers: Vec<(String, String)>,
    auth: Option<(String, Option<String>)>,
    bearer: Option<String>,
    timeout: Duration,
}

impl Prepared {
    pub fn new(
        q: &PromQuery,
        scope: &Scope,
        step_timeout: Option<Duration>,
    ) -> Result<Self, String> {
        let render = |t: &stagegate_plan::Template, what: &str| {
            scope.render(t).map_err(|e| format!("{what}: {e}"))
        };
        let base = render(&q.url.value, "`url`")?;
        let parsed = url::Url::parse(base.trim()).map_err(|e| {
            format!("`url` `{base}` is not a URL ({e}); write e.g. `http://127.0.0.1:9090`")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "`url` `{base}` must start with http:// or https://"
            ));
        }
        let mut base = parsed.to_string();
        while base.ends_with('/') {
            base.pop();
        }
        let endpoint = if q.range.is_some() {
            format!("{base}/api/v1/query_range")
        } else {
            format!("{base}/api/v1/query")
        };
        let query = render(&q.query.value, "`query`")?;
        let headers = q
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(&v.value, &format!("header `{k}`"))?)))
            .collect::<Result<Vec<_>, String>>()?;
        let (auth, bearer) = match &q.auth {
            Some(Auth::Basic { user, password }) => (
                Some((
                    render(&user.value, "`auth.basic.user`")?,
                    Some(render(&password.value, "`auth.basic.password`")?),
                )),
                None,
            ),
            Some(Auth::Bearer(t)) => (None, Some(render(&t.value, "`auth.bearer`")?)),
            None => (None, None),
        };
        let timeout = q.timeout.or(step_timeout).unwrap_or(DEFAULT_TIMEOUT);
        Ok(Prepared {
            client: super::http::client(false, None, false)?,
            base: base.clone(),
            endpoint,
            query,
            range: q.range.map(|r| (r, q.step_or_default())),
            headers,
            auth,
            bearer,
            timeout,
        })
    }

    /// The same query as a range query over the `range` before now, a point every `step`.
    pub fn over(mut self, range: Duration, step: Duration) -> Self {
        self.endpoint = format!("{}/api/v1/query_range", self.base);
        self.range = Some((range, step));
        self
    }

    /// `query Q at URL`, for messages.
    pub fn target(&self) -> String {
        format!("prometheus {} at {}", self.query, self.endpoint)
    }

    /// Sends the query; an answer that is not a successful result is an error.
    pub async fn observe(&self) -> Result<Observation, Observed> {
        let started = Instant::now();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut params: Vec<(&str, String)> = vec![("query", self.query.clone())];
        match self.range {
            None => params.push(("time", format!("{now:.3}"))),
            Some((range, step)) => {
                params.push(("start", format!("{:.3}", now - range.as_secs_f64())));
                params.push(("end", format!("{now:.3}")));
                params.push(("step", format!("{}", step.as_secs_f64())));
            }
        }
        params.push(("timeout", format!("{}s", self.timeout.as_secs().max(1))));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let mut req = self
            .client
            .post(&self.endpoint)
            .timeout(self.timeout)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, p.as_ref());
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Observed::Failed(format!(
                    "Prometheus did not answer within {}s",
                    self.timeout.as_secs_f64()
                )));
            }
            Err(e) => {
                return Err(Observed::Failed(format!(
                    "cannot reach Prometheus at {}: {}",
                    self.endpoint,
                    root_cause(&e)
                )));
            }
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(Observed::Failed(format!(
                    "reading Prometheus' answer: {}",
                    super::http::chain(&e)
                )));
            }
        };
        if bytes.len() > MAX_ANSWER {
            return Err(Observed::Failed(format!(
                "Prometheus answered {} bytes, more than 16 MiB: the query selects too many series; aggregate it (e.g. `sum by (status) (...)`)",
                bytes.len()
            )));
        }
        let series = parse_answer(status, &bytes).map_err(Observed::Failed)?;
        Ok(Observation {
            status: Some(status),
            duration: started.elapsed(),
            series,
            ..Observation::default()
        })
    }
}

/// Reads an answer of `/api/v1/query` or `/api/v1/query_range`.
pub fn parse_answer(status: u16, bytes: &[u8]) -> Result<Vec<Series>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        format!(
            "Prometheus answered HTTP {status} with something that is not its JSON API: {}",
            text.replace(['\n', '\r'], " ")
        )
    })?;
    if doc.get("status").and_then(Value::as_str) != Some("success") {
        let kind = doc
            .get("errorType")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let msg = doc
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(format!(
            "Prometheus refused the query (HTTP {status}, {kind}): {msg}"
        ));
    }
    let data = doc.get("data").ok_or("Prometheus' answer has no `data`")?;
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    let result = data
        .get("result")
        .ok_or("Prometheus' answer has no `result`")?;
    let point = |p: &Value| -> Option<(f64, f64)> {
        let a = p.as_array()?;
        let t = a.first()?.as_f64()?;
        let v = a.get(1)?.as_str()?;
        let v = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().ok()?,
        };
        Some((t, v))
    };
    let labels = |s: &Value| {
        s.get("metric")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    match kind {
        "vector" => {
            for s in result.as_array().into_iter().flatten().take(MAX_SERIES) {
                if let Some(p) = s.get("value").and_then(point) {
                    out.push(Series {
                        labels: labels(s),
                        points: vec![p],
                    });
                }
            }
        }
        "matrix" => {
            for s in result.as_array().into_iter().flatten().take(MAX_SERIES) {
                let points: Vec<(f64, f64)> = s
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(point)
                    .collect();
                if !points.is_empty() {
                    out.push(Series {
                        labels: labels(s),
                        points,
                    });
                }
            }
        }
        "scalar" => {
            if let Some(p) = point(result) {
                out.push(Series {
                    labels: Default::default(),
                    points: vec![p],
                });
            }
        }
        other => {
            return Err(format!(
                "Prometheus answered a `{other}` result; a check needs a number: a vector, a matrix or a scalar"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vectors_matrices_scalars_and_errors() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"status":"5xx"},"value":[1700000000.1,"0.25"]},{"metric":{},"value":[1,"NaN"]}]}}"#;
        let s = parse_answer(200, v).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].points, vec![(1700000000.1, 0.25)]);
        assert_eq!(s[0].labels["status"], "5xx");
        assert!(s[1].points[0].1.is_nan());

        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"1"],[2,"2"]]}]}}"#;
        assert_eq!(parse_answer(200, m).unwrap()[0].points.len(), 2);

        let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(parse_answer(200, sc).unwrap()[0].points, vec![(1.0, 3.0)]);

        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_answer(200, empty).unwrap().is_empty());

        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let e = parse_answer(400, err).unwrap_err();
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");

        let html = b"<html>not prometheus</html>";
        assert!(
            parse_answer(200, html)
                .unwrap_err()
                .contains("not its JSON API")
        );
    }
}
