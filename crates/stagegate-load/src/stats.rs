//! What the generator counts while it runs: a latency histogram of bounded size, status
//! counts, error classes, bytes, checks and isolation violations. [`Stats`] of threads and
//! intervals are merged with [`Stats::add`].

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds from 1 µs to one hour with three significant
/// digits (a value is off by at most 0.1%). The histogram's size depends only on these
/// bounds, never on how many requests were recorded: about 190 KB.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
pub const LATENCY_SIGFIG: u8 = 3;

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
        .expect("the latency histogram's bounds are valid")
}

/// The bytes a histogram's counts take in memory.
pub fn histogram_bytes(h: &Histogram<u64>) -> usize {
    h.distinct_values() * std::mem::size_of::<u64>()
}

/// Why a request failed. A request has at most one class (the first that applies, in this
/// order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The TCP connection (or TLS handshake) could not be made.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection broke or the answer was not valid HTTP.
    Transport,
    /// The server answered 5xx.
    Status5xx,
    /// The answer came but a check on it failed.
    Assertion,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::Transport,
        ErrorClass::Status5xx,
        ErrorClass::Assertion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Transport => "transport",
            ErrorClass::Status5xx => "5xx",
            ErrorClass::Assertion => "assertion",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The first isolation violation seen: who, which request, what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationExample {
    pub vu: usize,
    pub identity: usize,
    pub request: String,
    pub detail: String,
}

/// Counts of a set of requests (a thread's, an interval's, a request name's or a run's).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency in microseconds of every request that got an answer (any status), and of
    /// timed-out requests at the timeout.
    pub latency: Histogram<u64>,
    pub requests: u64,
    /// Requests with an error of any class.
    pub failed: u64,
    pub errors: [u64; 5],
    /// One message per error class: the first one seen.
    pub error_examples: [Option<String>; 5],
    /// `status[code]` for codes 100..=999.
    pub status: Vec<u64>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub check_example: Option<String>,
    pub isolation_violations: u64,
    pub isolation_example: Option<IsolationExample>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            latency: latency_histogram(),
            requests: 0,
            failed: 0,
            errors: [0; 5],
            error_examples: Default::default(),
            status: vec![0; 1000],
            bytes_received: 0,
            bytes_sent: 0,
            checks_passed: 0,
            checks_failed: 0,
            check_example: None,
            isolation_violations: 0,
            isolation_example: None,
        }
    }

    #[inline]
    pub fn record_latency(&mut self, d: Duration) {
        let us = (d.as_nanos() / 1000) as u64;
        self.latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    #[inline]
    pub fn record_status(&mut self, status: u16) {
        if let Some(c) = self.status.get_mut(status as usize) {
            *c += 1;
        }
    }

    pub fn record_error(&mut self, class: ErrorClass, message: impl FnOnce() -> String) {
        self.errors[class.index()] += 1;
        let slot = &mut self.error_examples[class.index()];
        if slot.is_none() {
            *slot = Some(message());
        }
    }

    pub fn error_count(&self, class: ErrorClass) -> u64 {
        self.errors[class.index()]
    }

    pub fn error_example(&self, class: ErrorClass) -> Option<&str> {
        self.error_examples[class.index()].as_deref()
    }

    /// Answers with a status in `lo..=hi`.
    #[cfg(test)]
    fn status_range(&self, lo: u16, hi: u16) -> u64 {
        self.status[lo as usize..=hi as usize].iter().sum()
    }

    pub fn add(&mut self, other: &Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.failed += other.failed;
        for i in 0..5 {
            self.errors[i] += other.errors[i];
            if self.error_examples[i].is_none() {
                self.error_examples[i].clone_from(&other.error_examples[i]);
            }
        }
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.checks_passed += other.checks_passed;
        self.checks_failed += other.checks_failed;
        if self.check_example.is_none() {
            self.check_example.clone_from(&other.check_example);
        }
        self.isolation_violations += other.isolation_violations;
        if self.isolation_example.is_none() {
            self.isolation_example.clone_from(&other.isolation_example);
        }
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.failed as f64 / self.requests as f64)
    }
}

/// What a generator thread counts: all requests, and each request of the scenario when it
/// has more than one.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub total: Stats,
    pub per_request: Vec<Stats>,
}

impl RunStats {
    pub fn new(requests: usize) -> Self {
        Self {
            total: Stats::new(),
            per_request: if requests > 1 {
                (0..requests).map(|_| Stats::new()).collect()
            } else {
                Vec::new()
            },
        }
    }

    pub fn add(&mut self, other: &RunStats) {
        self.total.add(&other.total);
        if self.per_request.len() < other.per_request.len() {
            self.per_request
                .resize_with(other.per_request.len(), Stats::new);
        }
        for (a, b) in self.per_request.iter_mut().zip(&other.per_request) {
            a.add(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_keeps_the_first_example() {
        let mut a = Stats::new();
        a.requests = 2;
        a.record_status(200);
        a.record_latency(Duration::from_millis(10));
        a.record_error(ErrorClass::Connect, || "refused".into());
        let mut b = Stats::new();
        b.requests = 3;
        b.record_status(200);
        b.record_status(503);
        b.record_latency(Duration::from_millis(30));
        b.record_error(ErrorClass::Connect, || "reset".into());
        a.add(&b);
        assert_eq!(a.requests, 5);
        assert_eq!(a.status[200], 2);
        assert_eq!(a.status_range(500, 599), 1);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.error_count(ErrorClass::Connect), 2);
        assert_eq!(a.error_example(ErrorClass::Connect), Some("refused"));
    }
}
