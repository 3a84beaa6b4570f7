//! Release records kept on this machine for every driver:
//! `STATE/releases/ENV/SERVICE/RELEASE/release.json` and a `current` file per service.
//!
//! The local driver keeps its releases themselves there; the remote drivers (ssh, docker,
//! compose, kubernetes) keep the record of what they deployed, so `status`, `history`,
//! `rollback --to` and a later run know the releases without asking the target first.
//! Records are private to the user (directories 0700, files 0600) and never hold a secret
//! value: what a release runs is sealed (see [`crate::local::SealedRun`]).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::local::{ReleaseMeta, ReleaseState};

pub(crate) const META: &str = "release.json";
const CURRENT: &str = "current";

/// The records of one environment: `STATE/releases/ENV`.
#[derive(Debug, Clone)]
pub struct Records {
    pub root: PathBuf,
}

/// Writes `bytes` to `path` through a private temporary file and a rename.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Creates a directory (and its parents) private to the user.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Records {
    pub fn new(state_dir: &Path, environment: &str) -> Self {
        Self {
            root: state_dir.join("releases").join(environment),
        }
    }

    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.root.join(service)
    }

    pub fn release_dir(&self, service: &str, id: &str) -> PathBuf {
        self.service_dir(service).join(id)
    }

    /// A release's record and its directory.
    pub fn record(&self, service: &str, id: &str) -> Option<(PathBuf, ReleaseMeta)> {
        let dir = self.release_dir(service, id);
        Self::read_meta(&dir).map(|m| (dir, m))
    }

    /// A new release's id, `VERSION-dDEPLOYMENT`, with `.2`, `.3`... when one is taken.
    pub fn new_id(&self, service: &str, version: &str, deployment_id: i64) -> String {
        let base = format!("{}-d{deployment_id}", crate::local::sanitize(version));
        let mut id = base.clone();
        let mut n = 1;
        while self.release_dir(service, &id).exists() {
            n += 1;
            id = format!("{base}.{n}");
        }
        id
    }

    /// Releases whose starter file (`PID START_TIME` of the run deploying them) names a
    /// run that is gone: the file is removed and a release still `starting` is marked
    /// `failed`. Returns them, still `starting` ones flagged, for the driver to stop.
    pub(crate) fn abandoned(
        &self,
        service: &str,
        starter: &str,
    ) -> Vec<(PathBuf, ReleaseMeta, bool)> {
        let mut out = Vec::new();
        for (dir, meta) in self.metas(service) {
            if let Ok(owner) = std::fs::read_to_string(dir.join(starter))
                && !crate::local::owner_alive(&owner)
            {
                let _ = std::fs::remove_file(dir.join(starter));
                let was_starting = meta.status == "starting";
                if was_starting {
                    Self::set_status(&dir, "failed");
                }
                out.push((dir, meta, was_starting));
            }
        }
        out
    }

    /// The release that serves, as the records say.
    pub fn current(&self, service: &str) -> Option<String> {
        std::fs::read_to_string(self.service_dir(service).join(CURRENT))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    pub fn set_current(&self, service: &str, id: Option<&str>) -> std::io::Result<()> {
        let path = self.service_dir(service).join(CURRENT);
        match id {
            Some(id) => {
                private_dir(&self.service_dir(service))?;
                write_private(&path, id.as_bytes())
            }
            None => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    pub fn read_meta(dir: &Path) -> Option<ReleaseMeta> {
        serde_json::from_slice(&std::fs::read(dir.join(META)).ok()?).ok()
    }

    pub fn write_meta(dir: &Path, meta: &ReleaseMeta) -> std::io::Result<()> {
        private_dir(dir)?;
        write_private(
            &dir.join(META),
            &serde_json::to_vec_pretty(meta).unwrap_or_default(),
        )
    }

    pub fn set_status(dir: &Path, status: &str) {
        if let Some(mut m) = Self::read_meta(dir) {
            m.status = status.to_string();
            let _ = Self::write_meta(dir, &m);
        }
    }

    /// Every recorded release of a service with its directory, oldest first.
    pub fn metas(&self, service: &str) -> Vec<(PathBuf, ReleaseMeta)> {
        let Ok(entries) = std::fs::read_dir(self.service_dir(service)) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, ReleaseMeta)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .filter_map(|p| Self::read_meta(&p).map(|m| (p, m)))
            .collect();
        out.sort_by_key(|(_, m)| (m.created_at, m.deployment_id));
        out
    }

    /// Removes the records of releases beyond the newest `keep` (never the current one or
    /// those in `also_keep`); returns the ids removed.
    pub fn prune(&self, service: &str, keep: usize, also_keep: &[&str]) -> Vec<String> {
        let current = self.current(service);
        let all = self.metas(service);
        let excess = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for (dir, meta) in all.into_iter().take(excess) {
            if Some(&meta.id) == current.as_ref() || also_keep.contains(&meta.id.as_str()) {
                continue;
            }
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed.push(meta.id);
            }
        }
        removed
    }
}

impl ReleaseState {
    /// The state of a release whose running process is not on this machine: `live` says
    /// what runs where (`running on web-1, web-2`), `None` when nothing of it runs.
    pub fn remote(meta: ReleaseMeta, dir: PathBuf, current: bool, live: Option<String>) -> Self {
        Self {
            meta,
            dir,
            current,
            supervisor_pid: None,
            service_pid: None,
            exits: 0,
            abandoned: false,
            stopping: false,
            live,
        }
    }
}

/// A release by id or, failing that, the newest with that version.
pub fn find_in(all: &[ReleaseState], wanted: &str) -> Option<ReleaseState> {
    all.iter()
        .find(|r| r.meta.id == wanted)
        .cloned()
        .or_else(|| all.iter().rev().find(|r| r.meta.version == wanted).cloned())
}

/// The newest release before the current one that was healthy once: the rollback target.
pub fn previous_good_in(all: &[ReleaseState]) -> Option<ReleaseState> {
    let cur = all.iter().position(|r| r.current)?;
    all[..cur]
        .iter()
        .rev()
        .find(|r| matches!(r.meta.status.as_str(), "healthy" | "retired" | "stopped"))
        .cloned()
}
