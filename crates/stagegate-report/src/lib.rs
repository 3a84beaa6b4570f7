//! Reports for stagegate runs.
//!
//! Everything here consumes the engine's event stream ([`stagegate_engine::event::Event`]).
//! Nothing in this crate prints on its own: every reporter writes to a writer it is given,
//! and the binary decides whether that is stderr, stdout or a file.
//!
//! - [`collect`]: [`RunSummary`], the whole run folded from its events. The file-based
//!   reports below are rendered from it once the run has finished.
//! - [`terminal`]: [`TerminalReporter`], the live, human-readable progress of a run
//!   (a header, a line per stage and per finished step, retries, services, the rollback,
//!   warnings and a final verdict), in the spirit of cargo's output. Colors and the redrawn
//!   "running: …" line are opt-in through [`TerminalStyle`]; with both off, the output is
//!   plain lines without a single escape code, fit for CI logs.
//! - [`json`]: [`write_json`], the summary as pretty JSON with stable field names, and
//!   [`JsonLinesReporter`], every event as one JSON object per line (`--events jsonl`).
//! - [`junit`]: [`write_junit`], a JUnit XML report for CI test tabs: one test suite per
//!   stage (and one named `rollback`), one test case per step.
//! - [`markdown`]: [`write_markdown`], a Markdown summary fit for `$GITHUB_STEP_SUMMARY`.
//! - [`html`]: [`write_html`], one self-contained HTML page (inline CSS and SVG charts,
//!   no external assets, every text escaped) of the steps, checks, gates, load latencies,
//!   bake samples, rollback and authorization.
//! - [`gate`]: a gate's evidence (its checks, findings, acknowledgements and override) as
//!   lines, rendered alike by every reporter and by `stagegate show`.
//! - [`checks`]: the assertions of check steps (`details.assertions`), shown by the
//!   terminal (failed ones, one per line), JUnit (`assertions` and `system-out`), Markdown
//!   (a table of checks with expected and actual) and `stagegate show`.
//! - [`load`]: a load step's report (`details.load`): a summary line and each SLO threshold
//!   with its value, limit and verdict, shown by the terminal, JUnit, Markdown and `show`.
//! - [`watch`]: a watch step's bake (`details.watch`): the verdict and its reason, each
//!   measurement with its query, condition, sample counts and values, and the decision on an
//!   inconclusive one, shown by JUnit, Markdown and `show`.
//! - [`migrate`]: a migrate step's backup (kind, size, sha256, where) and what each of its
//!   rollback steps (`down`, the restore) did, shown by the terminal, JUnit, Markdown and
//!   `show`.
//! - [`sink`]: the reporters as event sinks of an engine session, and [`ReportFiles`],
//!   which writes the file reports when the run ends.
//! - [`format`]: small helpers shared by the reporters: [`format_duration_ms`] and
//!   [`format_time_ms`].

pub mod checks;
pub mod collect;
pub mod format;
pub mod gate;
pub mod html;
pub mod json;
pub mod junit;
pub mod load;
pub mod markdown;
pub mod migrate;
pub mod sink;
pub mod terminal;
pub mod watch;

pub use collect::{BakeRound, RollbackSummary, RunSummary, ServiceSummary};
pub use format::{format_duration_ms, format_time_ms};
pub use html::write_html;
pub use json::{JsonLinesReporter, write_json};
pub use junit::write_junit;
pub use markdown::write_markdown;
pub use sink::{ReportFiles, ReportFormat, describe_lock, describe_notice, lease_silence};
pub use terminal::{TerminalReporter, TerminalStyle};
