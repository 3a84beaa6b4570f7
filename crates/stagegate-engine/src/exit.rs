//! The exit-code contract of the `stagegate` command. Documented in docs/exit-codes.md.

/// Everything ran and passed.
pub const SUCCESS: i32 = 0;
/// stagegate itself failed: the state store cannot be opened, a file cannot be written.
pub const INTERNAL: i32 = 1;
/// The plan or the command line is invalid; nothing ran.
pub const INVALID: i32 = 2;
/// A step failed and nothing was rolled back: nothing had changed yet, or `on_failure: stop`.
pub const FAILED: i32 = 3;
/// A step failed after the deploy began, and the rollback restored the previous state.
pub const ROLLED_BACK: i32 = 4;
/// A step failed and the rollback failed too: the environment needs a person.
pub const ROLLBACK_FAILED: i32 = 5;
/// Another run holds the environment's lock (or a dead run left it).
pub const LOCKED: i32 = 6;
/// A `watch` step was inconclusive: the new release runs and waits for `stagegate decide`.
pub const AWAITING_DECISION: i32 = 7;
/// A protected deploy (or promotion) waits for approvals, its wait timer or its soak; it is
/// recorded as a request awaiting approval and nothing ran.
pub const AWAITING_APPROVAL: i32 = 8;
/// A protection rule refused the deploy or the approval: self-approval, a role that may not
/// approve, a version the environment's `tags` exclude, a rejected request, a bypass not
/// allowed. Nothing ran and nothing was recorded as approved.
pub const REFUSED: i32 = 9;
/// Interrupted by Ctrl-C or SIGTERM; what had begun was rolled back.
pub const INTERRUPTED: i32 = 130;
