//! The one error type of the load generator: what went wrong and what to do about it.

use std::path::PathBuf;

/// Why a load test could not be set up. Failures of single requests are not errors: they
/// are counted in the report by [`crate::ErrorClass`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid header `{text}`: {reason}")]
    InvalidHeader { text: String, reason: String },

    #[error("invalid method `{0}`: use an HTTP method such as GET or POST")]
    InvalidMethod(String),

    #[error("invalid load profile: {0}")]
    Profile(String),

    #[error("invalid request template `{text}`: {reason}")]
    Template { text: String, reason: String },

    #[error("cannot read user identities from {}: {reason}", path.display())]
    Identities { path: PathBuf, reason: String },

    /// A field to check isolation on that the users do not have.
    #[error("cannot check isolation on `{field}`: {reason}")]
    Isolation { field: String, reason: String },

    #[error("cannot resolve `{host}`: {reason}")]
    Resolve { host: String, reason: String },

    #[error("cannot set up TLS: {0}")]
    Tls(String),

    #[error("cannot start the load generator: {0}")]
    Start(String),
}
