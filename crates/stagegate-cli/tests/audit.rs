//! The audit log (`stagegate audit verify|show`), stale locks whose pid was reused,
//! `unlock --force --reason`, and deployment ids that are never reused, through the real
//! binary, real processes and the real SQLite file (edited behind stagegate's back).

mod common;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Project, tamper};

fn plan(stages: &str) -> String {
    format!("project: demo\nenvironments:\n  staging: {{}}\nstages:\n{stages}")
}

/// Deploys, kills it with SIGKILL while its second step runs, and returns the project: the
/// environment's lock is left behind, held by a dead pid.
fn killed_run() -> Project {
    let p = Project::new(&plan(
        "  s:\n    - id: first\n      run: echo one\n    - id: long\n      run: touch started; sleep 30\n",
    ));
    let mut run = p.spawn(&["deploy", "staging"]);
    p.wait_for("started", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    run.kill().unwrap();
    run.wait().unwrap();
    p
}

/// An unrelated live process, to stand in for whatever reused the dead holder's pid.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    fn start_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = stat.rsplit_once(") ").unwrap().1;
        rest.split_whitespace().nth(19).unwrap().parse().unwrap()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lock_whose_pid_now_belongs_to_another_process_is_stale() {
    let p = killed_run();
    let other = Bystander::start();
    // The dead holder's pid is reused by an unrelated process: the recorded start time (the
    // dead stagegate's) no longer matches it.
    tamper(
        &p,
        &format!(
            "UPDATE env_locks SET pid = {} WHERE environment = 'staging'",
            other.pid()
        ),
    );
    p.run(&["deploy", "staging"])
        .code(6)
        .stderr_has("that process is gone")
        .stderr_has("stagegate unlock staging");
    p.run(&["unlock", "staging"])
        .code(0)
        .stdout_has("unlocked staging")
        .stderr_has("marked abandoned");
    p.write("stagegate.yml", &plan("  s:\n    - run: 'true'\n"));
    p.run(&["deploy", "staging"]).code(0);
}

#[test]
fn a_live_holder_is_kept_unless_forced_with_a_reason_which_is_recorded() {
    let p = killed_run();
    let other = Bystander::start();
    // Now the lock names a live process with its true start time: it looks held.
    tamper(
        &p,
        &format!(
            "UPDATE env_locks SET pid = {}, pid_started = {} WHERE environment = 'staging'",
            other.pid(),
            other.start_ticks()
        ),
    );
    p.run(&["unlock", "staging"])
        .code(6)
        .stderr_has("still going")
        .stderr_has("--force --reason");
    p.run(&["unlock", "staging", "--force"])
        .code(2)
        .stderr_has("--reason");
    p.run(&["unlock", "staging", "--force", "--reason", "  "])
        .code(2)
        .stderr_has("--reason is empty");
    p.run(&[
        "unlock",
        "staging",
        "--force",
        "--reason",
        "holder hung on a dead NFS mount",
    ])
    .code(0)
    .stdout_has("unlocked staging");
    let show = p.run(&["audit", "show", "--json"]);
    show.code(0);
    let records: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let broken = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "lock_broken")
        .expect("a lock_broken record");
    let data: serde_json::Value = serde_json::from_str(broken["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["reason"], "holder hung on a dead NFS mount");
    assert_eq!(data["forced"], true);
    assert_eq!(data["pid"], other.pid());
    p.run(&["audit", "verify"])
        .code(0)
        .stdout_has("audit log intact");
}

#[test]
fn audit_verify_passes_on_real_runs_and_names_what_was_edited() {
    let p = Project::new(&plan(
        "  s:\n    - id: change\n      run: echo did\n      rollback: echo undid\n    - id: maybe\n      run: test \"${{ release.version }}\" != 2\n",
    ));
    p.run(&["deploy", "staging", "--release-version", "1"])
        .code(0);
    p.run(&["deploy", "staging", "--release-version", "2"])
        .code(4);
    p.run(&["audit", "verify"])
        .code(0)
        .stdout_has("audit log intact:")
        .stdout_has("2 deployments and")
        .stdout_has("head: ");

    // The failed deploy rewritten as a success.
    tamper(
        &p,
        "UPDATE deployments SET outcome = 'succeeded' WHERE id = 2",
    );
    p.run(&["audit", "verify"])
        .code(3)
        .stderr_has("the audit log is broken at deployment #2")
        .stderr_has("`outcome` is \"succeeded\" but was recorded as \"rolled_back\"");
    tamper(
        &p,
        "UPDATE deployments SET outcome = 'rolled_back' WHERE id = 2",
    );
    p.run(&["audit", "verify"]).code(0);

    // The rollback step deleted, to hide that it ran.
    tamper(
        &p,
        "DELETE FROM step_runs WHERE deployment_id = 2 AND phase = 'rollback'",
    );
    p.run(&["audit", "verify"])
        .code(3)
        .stderr_has("of deployment #2")
        .stderr_has("was deleted");
}

#[test]
fn a_new_store_beside_old_logs_does_not_reuse_their_ids() {
    let p = Project::new(&plan("  s:\n    - id: hello\n      run: echo first run\n"));
    p.run(&["deploy", "staging"]).code(0);
    let logs = p.path().join(".stagegate").join("logs");
    let first: Vec<_> = common::walk(&logs.join("1"));
    assert_eq!(first.len(), 1, "{first:?}");
    let before = std::fs::read_to_string(&first[0]).unwrap();
    // The store is deleted (or replaced), the logs stay.
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(p.path().join(".stagegate").join(f));
    }
    p.write(
        "stagegate.yml",
        &plan("  s:\n    - id: hello\n      run: echo second run\n"),
    );
    p.run(&["deploy", "staging"])
        .code(0)
        .stderr_has("deployment #2");
    assert_eq!(std::fs::read_to_string(&first[0]).unwrap(), before);
    assert!(logs.join("2").is_dir());
}

/// docs/audit.md's example, as the doc shows it.
#[test]
fn the_docs_example_verifies() {
    let plans = common::doc_plans("audit.md");
    assert_eq!(plans.len(), 1);
    let p = Project::new(&plans[0]);
    p.run(&["deploy", "staging", "--ack-all", "--as", "alice"])
        .code(0);
    p.run(&["audit", "verify"])
        .code(0)
        .stdout_has("audit log intact: 5 records; 1 deployments and 2 steps match it")
        .stdout_has("head: ");
    let show = p.run(&["audit", "show"]);
    show.code(0).stdout_has("step_finished").stdout_has("alice");
}
