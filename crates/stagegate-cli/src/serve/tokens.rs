//! API tokens: `stagegate token create|list|revoke`, kept hashed in `tokens.json` (0600)
//! in the state directory. A token is shown once, when it is made; the file holds only
//! its SHA-256.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::Failure;

/// What a token may do.
pub const SCOPES: &[&str] = &["read", "approve", "deploy"];

/// The prefix every token starts with, so a leaked one is easy to find in a scan.
const PREFIX: &str = "sgt_";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// Who acts with it: recorded as the actor of approvals and runs.
    pub subject: String,
    pub scopes: Vec<String>,
    pub sha256: String,
    pub created_at: i64,
    pub created_by: String,
}

impl TokenRecord {
    pub fn allows(&self, scope: &str) -> bool {
        // `deploy` and `approve` include reading what they act on.
        self.scopes.iter().any(|s| s == scope) || (scope == "read" && !self.scopes.is_empty())
    }
}

pub fn file_of(state_dir: &Path) -> PathBuf {
    state_dir.join("tokens.json")
}

pub fn load(path: &Path) -> Result<Vec<TokenRecord>, Failure> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Failure::internal(format!(
                "error: {} is not a token file stagegate can read: {e}\n  = help: restore it from a backup, or move it away and create the tokens again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Failure::internal(format!(
            "error: cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn save(path: &Path, list: &[TokenRecord]) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::internal(format!("error: cannot write {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(list).map_err(|e| Failure::internal(e.to_string()))?;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(&text).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two strings in time that depends on their length only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> Result<String, Failure> {
    stagegate_store::random_hex(n)
        .map_err(|e| Failure::internal(format!("error: cannot read /dev/urandom: {e}")))
}

/// The token whose hash matches `token`, if any.
pub fn verify<'a>(list: &'a [TokenRecord], token: &str) -> Option<&'a TokenRecord> {
    if !token.starts_with(PREFIX) || token.len() > 200 {
        return None;
    }
    let h = hash(token);
    // Every record is compared, so the time does not tell which one matched.
    let mut found = None;
    for t in list {
        if same(t.sha256.as_bytes(), h.as_bytes()) {
            found = Some(t);
        }
    }
    found
}

pub fn create(
    path: &Path,
    name: &str,
    subject: &str,
    scopes: &[String],
    by: &str,
) -> Result<String, Failure> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Failure::invalid(format!(
            "error: `{name}` is not a valid token name; use letters, digits, `-`, `_` and `.`"
        )));
    }
    if subject.trim().is_empty() {
        return Err(Failure::invalid(
            "error: --subject is empty; name who acts with the token, e.g. --subject alice",
        ));
    }
    for s in scopes {
        if !SCOPES.contains(&s.as_str()) {
            return Err(Failure::invalid(format!(
                "error: unknown scope `{s}`; scopes are: {}",
                SCOPES.join(", ")
            )));
        }
    }
    let mut list = load(path)?;
    if list.iter().any(|t| t.name == name) {
        return Err(Failure::invalid(format!(
            "error: a token named `{name}` exists already\n  = help: `stagegate token revoke {name}` first, or pick another name"
        )));
    }
    let token = format!("{PREFIX}{}", random_hex(24)?);
    list.push(TokenRecord {
        name: name.to_string(),
        subject: subject.trim().to_string(),
        scopes: scopes.to_vec(),
        sha256: hash(&token),
        created_at: stagegate_store::now_millis(),
        created_by: by.to_string(),
    });
    save(path, &list)?;
    Ok(token)
}

pub fn revoke(path: &Path, name: &str) -> Result<bool, Failure> {
    let mut list = load(path)?;
    let before = list.len();
    list.retain(|t| t.name != name);
    if list.len() == before {
        return Ok(false);
    }
    save(path, &list)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_hashed_and_verifies_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_of(dir.path());
        let t = create(&path, "ci", "alice", &["approve".into()], "root").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t), "the token itself is not stored");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let list = load(&path).unwrap();
        assert_eq!(verify(&list, &t).unwrap().subject, "alice");
        let mut wrong = t.clone();
        wrong.pop();
        wrong.push('x');
        assert!(verify(&list, &wrong).is_none());
        assert!(verify(&list, "").is_none());
        assert!(create(&path, "ci", "bob", &[], "root").is_err());
        assert!(create(&path, "x", "bob", &["root".into()], "root").is_err());
        assert!(revoke(&path, "ci").unwrap());
        assert!(verify(&load(&path).unwrap(), &t).is_none());
    }
}
