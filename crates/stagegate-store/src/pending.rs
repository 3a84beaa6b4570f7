//! A deployment's outcome kept outside the database, for when the database cannot take it.
//!
//! A full disk (or any write failure) at the very end of a run would otherwise leave a
//! finished deployment recorded as `running`, its lock held, and the next run would call it
//! `abandoned`. So when a deployment begins, [`crate::Store::reserve_finish`] creates a
//! small file of fixed size next to the database (`state.db.pending/ID.json`; for a
//! PostgreSQL store, in the local state directory the caller names: `DIR/postgres.pending/`),
//! while there is still room. When the run ends and the store cannot record the outcome, the outcome is
//! written into that file *in place*: overwriting bytes a file already has needs no free
//! space. The next [`crate::Store::open`] that can write records it (the true outcome, and a
//! note of the delay), frees the lock the run held, and deletes the file.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The size every reservation has; what is written is padded with spaces to it.
pub const RESERVED_BYTES: usize = 4096;

/// The outcome of a run as [`PendingFinish::write`] keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FinishRecord {
    pub deployment_id: i64,
    pub environment: String,
    /// The process that held the environment's lock.
    pub pid: u32,
    /// The token of that lock ([`crate::LockInfo::token`]): it is freed with the record.
    /// Empty in records of older versions, whose lock is left for `stagegate unlock`.
    #[serde(default)]
    pub lock_token: String,
    pub outcome: String,
    pub exit_code: i32,
    pub summary: String,
    pub finished_at: i64,
}

/// The space reserved for one deployment's outcome.
#[derive(Debug)]
pub struct PendingFinish {
    path: PathBuf,
}

pub(crate) fn dir_of(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".pending");
    db.with_file_name(name)
}

impl PendingFinish {
    pub(crate) fn create(dir: &Path, deployment_id: i64) -> std::io::Result<PendingFinish> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(format!("{deployment_id}.json"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        // Writing the bytes is what reserves them (the file system allocates, or refuses,
        // here); no sync is needed for that.
        f.write_all(&[b' '; RESERVED_BYTES])?;
        Ok(PendingFinish { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `record` over the reserved bytes (no new space needed) and syncs it.
    pub fn write(&self, record: &FinishRecord) -> std::io::Result<()> {
        let mut record = record.clone();
        let mut text = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        // A long summary is cut to fit: the outcome and exit code are what must survive.
        while text.len() > RESERVED_BYTES {
            let keep = record.summary.chars().count().saturating_sub(200);
            record.summary = record.summary.chars().take(keep).collect::<String>() + "…";
            text = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        }
        text.resize(RESERVED_BYTES, b' ');
        let mut f = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&text)?;
        f.sync_all()
    }

    /// The run's outcome was recorded in the database: the reservation is not needed.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The reservations left in the pending directory `dir`: (path, the record if one was
/// written).
pub(crate) fn left_behind(dir: &Path) -> Vec<(PathBuf, Option<FinishRecord>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let record = std::fs::read(&p).ok().and_then(|b| {
                let text = String::from_utf8_lossy(&b);
                let text = text.trim();
                (!text.is_empty())
                    .then(|| serde_json::from_str(text).ok())
                    .flatten()
            });
            (p, record)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
