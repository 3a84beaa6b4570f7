//! The one error type of the state store.

use std::path::PathBuf;

/// Everything that can go wrong in the state store.
///
/// Every message says what failed and what to do next, so the CLI can show
/// it as-is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that should hold the state file could not be created.
    #[error(
        "cannot open state store at {}: cannot create its directory {}: {source}; \
         check the parent directory is writable or set --state to another path",
        path.display(),
        dir.display()
    )]
    CreateDir {
        /// Path of the state file.
        path: PathBuf,
        /// Directory that could not be created.
        dir: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The SQLite file could not be opened or created.
    #[error(
        "cannot open state store at {}: {source}; \
         check the directory is writable or set --state",
        path.display()
    )]
    Open {
        /// Path of the state file.
        path: PathBuf,
        /// Underlying database error.
        source: sqlx::Error,
    },

    /// The PostgreSQL database could not be reached or refused the connection. `target` is
    /// the URL with its password masked.
    #[error("cannot open the PostgreSQL state store {target}: {problem}; {next}")]
    Connect {
        /// The URL, password masked.
        target: String,
        /// What went wrong, password scrubbed.
        problem: String,
        /// What to do about it.
        next: &'static str,
    },

    /// The PostgreSQL schema could not be brought up to date.
    #[error(
        "cannot update the schema of the PostgreSQL state store {target}: {source}; \
         the database may come from a newer stagegate: upgrade stagegate, or point the state \
         URL at a fresh database; the role also needs the right to create tables in it"
    )]
    MigrateRemote {
        /// The URL, password masked.
        target: String,
        /// Underlying migration error.
        source: sqlx::migrate::MigrateError,
    },

    /// The schema could not be brought up to date.
    #[error(
        "cannot update the schema of the state store at {}: {source}; \
         the file may come from a newer stagegate or be damaged: upgrade stagegate, \
         or move the file aside and set --state to a fresh path",
        path.display()
    )]
    Migrate {
        /// Path of the state file.
        path: PathBuf,
        /// Underlying migration error.
        source: sqlx::migrate::MigrateError,
    },

    /// A read or write against the state store failed.
    #[error(
        "state store failed while {action}: {source}; \
         retry, and if it keeps failing check free disk space and that no other \
         process holds the state file open for long"
    )]
    Query {
        /// What the store was doing, e.g. "recording an event".
        action: &'static str,
        /// Underlying database error.
        source: sqlx::Error,
    },

    /// The deployment id does not exist.
    #[error(
        "deployment {id} does not exist in the state store; \
         list recent deployments to find the right id"
    )]
    DeploymentNotFound {
        /// The id that was asked for.
        id: i64,
    },

    /// The environment lock is not (or no longer) held by this process.
    #[error(
        "the lock on environment '{environment}' is no longer held by this run; \
         it was broken by someone else (`stagegate unlock`): check who holds it before retrying"
    )]
    LockNotHeld {
        /// Environment whose lock was expected.
        environment: String,
    },

    /// The lock was taken and released by others so fast that no attempt
    /// could either win it or see who held it.
    #[error(
        "the lock on environment '{environment}' kept changing hands while taking it; \
         another process is locking and unlocking in a loop: retry in a moment"
    )]
    LockContended {
        /// Environment whose lock was contended.
        environment: String,
    },

    /// A stored value could not be decoded.
    #[error(
        "the state store holds an unreadable value in {what}: {detail}; \
         the file may be damaged: move it aside and set --state to a fresh path"
    )]
    Corrupt {
        /// Where the bad value was found, e.g. "step_runs.outputs".
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },

    /// The room for a deployment's outcome could not be reserved before it began.
    #[error(
        "cannot reserve room for the deployment's outcome in {}: {source}; \
         check free disk space and that the state directory is writable",
        path.display()
    )]
    Reserve {
        /// The pending directory.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// [`crate::Store::record_audit_note`] was asked for a kind of record that covers a row
    /// (only `bypass` and `promotion` records stand alone).
    #[error(
        "cannot append an audit record of kind `{kind}` on its own: only `bypass` and \
         `promotion` records cover no row; this is a bug in stagegate, please report it"
    )]
    NotAnAuditNote {
        /// The kind that was asked for.
        kind: &'static str,
    },

    /// A value could not be encoded for storage.
    #[error("cannot store {what}: {detail}; this is a bug in stagegate, please report it")]
    Encode {
        /// What was being stored.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { action, source }
    }
}
