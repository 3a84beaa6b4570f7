//! A state store on a full disk: the deployment that ends while nothing can be written is
//! recorded with its true outcome by the next command, and its lock is freed. The disk is a
//! real one: a small tmpfs mounted for the test (root only; skipped, saying so, otherwise).

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Project;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "skipped: cannot mount a tmpfs here (needs root); this test fills a real disk"
            );
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_deploy_that_ends_on_a_full_disk_is_recorded_by_the_next_command() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let state: PathBuf = disk.path().join("state.db");
    let fill = disk.path().join("fill");
    let p = Project::new(
        "project: demo\nenvironments:\n  staging: {}\nstages:\n  s:\n    - id: fill-the-disk\n      run: cat /dev/zero > \"$FILL\" 2>/dev/null || true\n    - id: after\n      run: echo still running\n",
    );
    let st = state.to_str().unwrap();
    let out = p.run_env(
        &["--state", st, "deploy", "staging"],
        &[("FILL", fill.to_str().unwrap())],
    );
    out.code(1)
        .stderr_has("deployment #1 succeeded (its own exit code: 0), but the state store could not record it")
        .stderr_has("the outcome is kept in")
        .stderr_has("free disk space first");

    // Room again: the next command records the truth and frees the lock.
    std::fs::remove_file(&fill).unwrap();
    let h = p.run(&["--state", st, "history", "--json"]);
    h.code(0)
        .stderr_has("recorded deployment #1's outcome, succeeded");
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(v[0]["outcome"], "succeeded", "{v}");
    assert!(
        v[0]["summary"].as_str().unwrap().contains("recorded late"),
        "{v}"
    );
    p.write(
        "stagegate.yml",
        "project: demo\nenvironments:\n  staging: {}\nstages:\n  s:\n    - run: 'true'\n",
    );
    p.run(&["--state", st, "deploy", "staging"]).code(0);
    let h = p.run(&["--state", st, "history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(v[1]["outcome"], "succeeded", "{v}");
    assert_eq!(v[0]["outcome"], "succeeded", "{v}");
    p.run(&["--state", st, "audit", "verify"]).code(0);
}
