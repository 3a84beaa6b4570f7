//! Polling: try something until it succeeds, a number of attempts is spent, a deadline
//! passes, or the run is cancelled. Health waits and checks (`retry`, `until`) share it.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long and how often to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// At most this many attempts (`None`: until the deadline).
    pub attempts: Option<u32>,
    /// The pause between attempts.
    pub interval: Duration,
    /// Give up when another attempt would start after this much time.
    pub deadline: Option<Duration>,
}

/// What one attempt found.
pub enum Attempt<T, E> {
    /// Success: stop polling.
    Done(T),
    /// Not yet: try again if the policy allows.
    Again(E),
    /// A failure that no retry can fix (the process behind a service ended).
    Stop(E),
}

/// A success, with how long it took.
#[derive(Debug, Clone)]
pub struct Polled<T> {
    pub value: T,
    pub attempts: u32,
    pub waited: Duration,
}

/// Why polling ended without success.
#[derive(Debug, Clone)]
pub enum GaveUp<E> {
    /// The attempts or the deadline ran out; `last` is what the last attempt found.
    Exhausted {
        attempts: u32,
        waited: Duration,
        last: E,
    },
    /// An attempt said stop.
    Stopped { attempts: u32, last: E },
    /// Cancelled between attempts; `last` is what the last attempt found, if any ran.
    Cancelled { attempts: u32, last: Option<E> },
}

impl<E> GaveUp<E> {
    pub fn attempts(&self) -> u32 {
        match self {
            GaveUp::Exhausted { attempts, .. }
            | GaveUp::Stopped { attempts, .. }
            | GaveUp::Cancelled { attempts, .. } => *attempts,
        }
    }

    /// What the last attempt found.
    pub fn into_last(self) -> Option<E> {
        match self {
            GaveUp::Exhausted { last, .. } | GaveUp::Stopped { last, .. } => Some(last),
            GaveUp::Cancelled { last, .. } => last,
        }
    }
}

/// Calls `attempt(n)` (1-based) until it is done, the policy is spent or `cancel` fires.
/// `on_retry(n, &failure)` runs before each pause, so callers can report the retry.
pub async fn poll<T, E, F, Fut>(
    policy: &PollPolicy,
    cancel: &CancellationToken,
    mut attempt: F,
    mut on_retry: impl FnMut(u32, &E),
) -> Result<Polled<T>, GaveUp<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let last = match attempt(n).await {
            Attempt::Done(value) => {
                return Ok(Polled {
                    value,
                    attempts: n,
                    waited: start.elapsed(),
                });
            }
            Attempt::Stop(last) => return Err(GaveUp::Stopped { attempts: n, last }),
            Attempt::Again(last) => last,
        };
        let out_of_attempts = policy.attempts.is_some_and(|max| n >= max);
        let out_of_time = policy
            .deadline
            .is_some_and(|d| start.elapsed() + policy.interval > d);
        if out_of_attempts || out_of_time {
            return Err(GaveUp::Exhausted {
                attempts: n,
                waited: start.elapsed(),
                last,
            });
        }
        if cancel.is_cancelled() {
            return Err(GaveUp::Cancelled {
                attempts: n,
                last: Some(last),
            });
        }
        on_retry(n, &last);
        tokio::select! {
            () = tokio::time::sleep(policy.interval) => {}
            () = cancel.cancelled() => {
                return Err(GaveUp::Cancelled { attempts: n, last: Some(last) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: Option<u32>, deadline: Option<Duration>) -> PollPolicy {
        PollPolicy {
            attempts,
            interval: Duration::from_millis(1),
            deadline,
        }
    }

    #[tokio::test]
    async fn stops_at_the_first_success() {
        let mut retries = Vec::new();
        let r = poll(
            &policy(Some(5), None),
            &CancellationToken::new(),
            |n| async move {
                if n == 3 {
                    Attempt::Done(n)
                } else {
                    Attempt::Again(format!("no {n}"))
                }
            },
            |n, e: &String| retries.push((n, e.clone())),
        )
        .await
        .unwrap_or_else(|_| panic!("succeeds"));
        assert_eq!((r.value, r.attempts), (3, 3));
        assert_eq!(retries, vec![(1, "no 1".into()), (2, "no 2".into())]);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_with_the_last_failure() {
        let r: Result<Polled<()>, _> = poll(
            &policy(Some(2), None),
            &CancellationToken::new(),
            |n| async move { Attempt::Again(n) },
            |_, _| {},
        )
        .await;
        match r {
            Err(GaveUp::Exhausted { attempts, last, .. }) => assert_eq!((attempts, last), (2, 2)),
            _ => panic!("expected exhaustion"),
        }
    }

    #[tokio::test]
    async fn a_stop_ends_at_once_and_cancel_between_attempts() {
        let r: Result<Polled<()>, _> = poll(
            &policy(None, Some(Duration::from_secs(60))),
            &CancellationToken::new(),
            |_| async { Attempt::Stop("gone") },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(GaveUp::Stopped { attempts: 1, .. })));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r: Result<Polled<()>, _> = poll(
            &policy(None, None),
            &cancel,
            |_| async { Attempt::Again("not yet") },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(GaveUp::Cancelled { attempts: 1, .. })));
    }
}
