//! `tcp` checks: does a port accept a connection?

use std::time::{Duration, Instant};

use super::Observed;
use super::expect::Observation;

/// How long a connection may take when the step sets no timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `addr` (`HOST:PORT`); a refusal or a silence is `open: false`, not an error.
pub async fn connect(addr: &str, deadline: Option<Instant>) -> Result<Observation, Observed> {
    if !addr.contains(':') {
        return Err(Observed::Failed(format!(
            "`{addr}` is not HOST:PORT, e.g. `127.0.0.1:8002`"
        )));
    }
    let started = Instant::now();
    let limit = deadline
        .map(|d| d.saturating_duration_since(started))
        .unwrap_or(CONNECT_TIMEOUT)
        .min(CONNECT_TIMEOUT);
    let open = matches!(
        tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    Ok(Observation {
        series: Vec::new(),
        open: Some(open),
        duration: started.elapsed(),
        ..Default::default()
    })
}
