//! The stagegate load generator.
//!
//! A [`LoadTest`] is a [`Scenario`] (the requests of one iteration, to one origin) under a
//! [`LoadProfile`]: the closed model (`vus` virtual users, each sending its next request when
//! the previous one is answered, for a number of requests or a duration) or the open model
//! (requests released at a `rate` whatever the server does, at most `max_in_flight` at once),
//! with a warm-up whose requests are not counted and ramps that move the level over time.
//!
//! Requests go over raw hyper HTTP/1.1 connections, one per virtual user, kept alive, each
//! driven in its worker's own task on a per-thread single-threaded runtime
//! ([`generator`]). Counts go into [`Stats`]: an HDR latency histogram whose size is fixed
//! by its bounds (about 190 KB, for ten or ten million requests), status counts, error
//! classes ([`ErrorClass`]), bytes, checks and isolation violations. In the open model,
//! latency counts from each request's intended send time, so a stalled server is not hidden
//! by requests that were never sent (coordinated omission).
//!
//! The run ends in a [`LoadReport`]: figures per run and per request, and the generator's
//! own verdict ([`GeneratorHealth`]): whether it ran out of CPU or fell behind its schedule,
//! in which case the figures measure the generator and not the server. [`slo`] reads
//! thresholds (`p95 < 500ms`, `error_rate < 1%`, `p95 <= +10% vs last_pass`) and abort
//! rules (`error_rate > 5% over 10s`) and judges them.
//!
//! Each virtual user has an [`Identity`] (a row of a CSV or JSON file, used as
//! `${{ vu.NAME }}` in requests), its own [`CookieJar`] when asked, and [`IsolationRule`]s
//! check that no user sees another's data.
//!
//! A [`Scenario`] may have `setup` requests: each virtual user sends them once, in order,
//! before its first iteration (a login that yields a token or a cookie). They go through the
//! same exchange, checks, cookie jar and captures as the scenario's requests, and have their
//! own figures in the report, after the scenario's requests (so `p95[login] < 300ms` judges
//! a setup request named `login`). During warm-up they run but are not counted, like any
//! warm-up request. When one fails (no answer, 5xx, a failed check or capture), the failure
//! is counted, the user's iteration ends there, and the user sends its setup again at its
//! next iteration.
//!
//! A request's [`ResponseCapture`]s take values from its response into the user's own
//! variables ([`JsonField`] reads a JSON field; other captures implement the trait). They
//! run after a response whose checks all passed and whose status is below 500; the user's
//! requests that name the variable are filled in again, so the rest of the iteration and
//! later iterations send the value (`Authorization: Bearer ${{ vu.token }}`, or
//! `/items/${{ vu.item }}` right after the request that created the item). A variable may be
//! used by a request when an identity column has it or a capture before it (in a setup
//! request or an earlier request of the iteration) provides it; without identities, each
//! user starts from an empty identity. A failed capture makes the request an `assertion`
//! error (``capture `token`: why``) and ends the user's iteration, since the requests after
//! it would be meaningless; so does any other failure of a request that has captures. The
//! next iteration starts normally. Without setup requests and captures, nothing of this
//! costs a request anything.
//!
//! The library never prints: progress comes as [`LoadEvent`]s to a callback.

pub mod check;
pub(crate) mod conn;
pub mod cookies;
pub mod error;
pub mod generator;
pub mod identity;
pub mod isolation;
pub mod profile;
pub mod report;
pub mod request;
pub mod slo;
pub mod stats;
mod user;
mod worker;

pub use http::Method;

pub use check::{JsonField, ResponseCapture, ResponseCheck, ResponseView, StatusIn};
pub use cookies::CookieJar;
pub use error::LoadError;
pub use generator::{LoadEvent, LoadTest, Progress};
pub use identity::{Identities, Identity};
pub use isolation::{IsolationRule, NoForeignValues};
pub use profile::{LoadProfile, Model, RampStage, Stop, parse_rate};
pub use report::{GeneratorHealth, LatencySummary, LoadReport, Summary};
pub use request::{RequestSpec, Scenario, VuTemplate, parse_method, split_url};
pub use slo::{AbortRule, Threshold, ThresholdResult, Verdict};
pub use stats::{ErrorClass, Stats};
