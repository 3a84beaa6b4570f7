//! Bodies as streams: what a check receives (a response body, a command's stdout, files)
//! passes through a [`BodySink`] chunk by chunk. The sink counts, hashes, saves to a file and
//! keeps in memory only what assertions need, so a 1 GiB download costs a buffer, not 1 GiB.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// How much of a body to keep when no assertion reads its text: enough for a preview.
pub const PREVIEW_BYTES: u64 = 1024;

/// What the assertions and captures of a check need from a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyNeeds {
    pub sha256: bool,
    /// Bytes to keep in memory (the text that assertions read).
    pub keep: u64,
}

/// Receives a body in chunks.
pub struct BodySink {
    hasher: Option<Sha256>,
    len: u64,
    kept: Vec<u8>,
    keep: u64,
    file: Option<(tokio::fs::File, PathBuf)>,
}

impl BodySink {
    pub fn new(needs: BodyNeeds) -> Self {
        Self {
            hasher: needs.sha256.then(Sha256::new),
            len: 0,
            kept: Vec::new(),
            keep: needs.keep,
            file: None,
        }
    }

    /// Also writes the body to `path` (its directory is created), replacing the file.
    pub async fn save_to(&mut self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let f = tokio::fs::File::create(path)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.file = Some((f, path.to_path_buf()));
        Ok(())
    }

    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.len += chunk.len() as u64;
        if let Some(h) = self.hasher.as_mut() {
            h.update(chunk);
        }
        let room = self.keep.saturating_sub(self.kept.len() as u64) as usize;
        if room > 0 {
            self.kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
        }
        if let Some((f, path)) = self.file.as_mut() {
            f.write_all(chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<Body, String> {
        if let Some((f, path)) = self.file.as_mut() {
            f.flush()
                .await
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(Body {
            complete: self.kept.len() as u64 == self.len,
            len: self.len,
            sha256: self.hasher.map(|h| hex::encode(h.finalize())),
            kept: self.kept,
            keep: self.keep,
            saved: self.file.map(|(_, p)| p),
            mask: Default::default(),
            json: OnceLock::new(),
        })
    }
}

/// A body that was received in full.
#[derive(Debug)]
pub struct Body {
    pub len: u64,
    /// Lowercase hex, when an assertion or capture needed it.
    pub sha256: Option<String>,
    /// The first bytes (all of them when `complete`).
    pub kept: Vec<u8>,
    pub complete: bool,
    keep: u64,
    pub saved: Option<PathBuf>,
    /// Secrets to mask in previews.
    pub mask: std::sync::Arc<stagegate_plan::Scrubber>,
    json: OnceLock<Result<serde_json::Value, String>>,
}

impl Body {
    /// A body held in memory whole.
    pub fn from_bytes(bytes: Vec<u8>, sha256: bool) -> Self {
        Self {
            len: bytes.len() as u64,
            sha256: sha256.then(|| hex::encode(Sha256::digest(&bytes))),
            complete: true,
            keep: bytes.len() as u64,
            kept: bytes,
            saved: None,
            mask: Default::default(),
            json: OnceLock::new(),
        }
    }

    /// The whole body as text, or why it is not available.
    pub fn text(&self, what: &str) -> Result<String, String> {
        if !self.complete {
            return Err(format!(
                "the {what} is {}, more than the {} kept in memory for text assertions (raise `max_body`, or assert `sha256` and `body_len` instead); it begins: {}",
                human_bytes(self.len),
                human_bytes(self.keep),
                self.preview()
            ));
        }
        Ok(String::from_utf8_lossy(&self.kept).into_owned())
    }

    /// The body parsed as JSON, or a message that says it is not and shows its first bytes.
    pub fn json(&self, what: &str) -> Result<&serde_json::Value, String> {
        self.json
            .get_or_init(|| {
                if !self.complete {
                    return Err(self.text(what).err().unwrap_or_default());
                }
                serde_json::from_slice(&self.kept).map_err(|e| {
                    format!(
                        "the {what} is not JSON ({e}); it begins: {}",
                        self.preview()
                    )
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The first bytes, on one line, secrets masked; never a large body whole.
    pub fn preview(&self) -> String {
        const MAX: usize = 200;
        if self.len == 0 {
            return "nothing (an empty body)".into();
        }
        // Mask before cutting: a secret cut in two would escape the mask.
        let head = &self.kept[..self.kept.len().min(64 * 1024)];
        if looks_binary(head) {
            let first: Vec<String> = head.iter().take(16).map(|b| format!("{b:02x}")).collect();
            return format!(
                "{} of binary data beginning {}",
                human_bytes(self.len),
                first.join(" ")
            );
        }
        let text = self
            .mask
            .scrub(&String::from_utf8_lossy(head))
            .replace(['\n', '\r'], " ");
        if text.chars().count() > MAX || self.len > head.len() as u64 {
            let cut: String = text.chars().take(MAX).collect();
            format!("{cut}… ({} bytes)", self.len)
        } else {
            text
        }
    }
}

/// Bytes that are not text: invalid UTF-8 (a character cut at the end aside) or control
/// characters other than line breaks and tabs.
fn looks_binary(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return true,
    };
    valid
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// `512 B`, `10.0 KiB`, `1.00 GiB`.
pub fn human_bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else {
        format!("{:.2} GiB", f / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_only_what_is_needed_and_hashes_everything() {
        let mut sink = BodySink::new(BodyNeeds {
            sha256: true,
            keep: 4,
        });
        sink.push(b"hello ").await.unwrap();
        sink.push(b"world").await.unwrap();
        let body = sink.finish().await.unwrap();
        assert_eq!(body.len, 11);
        assert_eq!(body.kept, b"hell");
        assert!(!body.complete);
        assert_eq!(
            body.sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        let err = body.text("body").unwrap_err();
        assert!(err.contains("more than the 4 B kept"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_json_says_so_with_its_first_bytes() {
        let b = Body::from_bytes(b"<html>oops</html>".to_vec(), false);
        let err = b.json("body").unwrap_err();
        assert!(err.starts_with("the body is not JSON"), "{err}");
        assert!(err.contains("<html>oops"), "{err}");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        let bin = Body::from_bytes(vec![0x8f, 0x00, 0xff, 0x10], false);
        assert_eq!(bin.preview(), "4 B of binary data beginning 8f 00 ff 10");
    }
}
