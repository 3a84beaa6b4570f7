//! Integration tests of the store, each run against both backends: a real SQLite file in a
//! temporary directory, and a fresh database in a real PostgreSQL cluster (`mod pg`, one
//! cluster for this binary). `on_both!` makes `NAME::sqlite` and `NAME::postgres` of each
//! `async fn NAME(backend)`.

mod pg;

use std::path::PathBuf;

use serde_json::json;
use stagegate_store::{
    ApprovalRecord, AuditKind, LockAttempt, LockBreak, LockInfo, NewDeployment, Outcome, StepRun,
    Store, StoreError, Verdict, now_millis,
};

fn breaker() -> LockBreak {
    LockBreak {
        by: "tester".into(),
        reason: Some("test".into()),
        forced: false,
        at: 1,
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.db")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Where one test's store lives: a SQLite file in a temporary directory, or a database of
/// its own in the shared PostgreSQL cluster (the temporary directory is then its local
/// state directory). Opening it again reaches the same data.
struct Place {
    dir: tempfile::TempDir,
    db: Option<pg::Database>,
}

impl Place {
    fn new(backend: Backend) -> Place {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = (backend == Backend::Postgres).then(|| pg::fresh_database("store"));
        Place { dir, db }
    }

    async fn open(&self) -> Store {
        match &self.db {
            None => Store::open(&db_path(&self.dir)).await.expect("open store"),
            Some(db) => Store::open_postgres(&db.url, self.dir.path())
                .await
                .expect("open store"),
        }
    }

    /// Runs `sql` behind stagegate's back, as someone who can write the database would.
    async fn tamper(&self, sql: &str) {
        match &self.db {
            None => tamper(&db_path(&self.dir), sql).await,
            Some(db) => {
                // PostgreSQL's way to write past foreign keys (as superuser).
                let sql = sql.replace(
                    "PRAGMA foreign_keys = OFF;",
                    "SET session_replication_role = replica;",
                );
                pg::shared().superuser(&db.name, &sql);
            }
        }
    }
}

async fn open_temp(backend: Backend) -> (Place, Store) {
    let place = Place::new(backend);
    let store = place.open().await;
    (place, store)
}

/// `mod NAME { sqlite, postgres }` for each `async fn NAME(backend: Backend)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name(super::Backend::Postgres).await
                }
            }
        )*
    };
}

on_both!(
    deployment_round_trip,
    data_survives_reopen,
    steps_round_trip_upsert_and_order,
    events_get_increasing_seq_per_deployment,
    concurrent_events_from_two_stores_get_distinct_seqs,
    deployments_newest_first_and_filtered,
    unfinished_and_mark_abandoned,
    lock_acquire_info_attach_release,
    break_lock_removes_and_reports,
    lock_is_exclusive_across_two_stores_racing,
    a_lease_is_renewed_by_its_holding_only_and_runs_out,
    an_untampered_store_verifies,
    edits_deletions_and_reordering_are_named,
    ids_are_never_reused_and_the_floor_is_kept,
    approvals_round_trip_in_order,
    an_approval_of_a_missing_deployment_fails,
    an_awaiting_approval_request_is_settled_by_finish_deployment,
    approvals_bypasses_and_promotions_are_audited,
    approval_edits_and_deletions_are_named,
    step_durations_and_deployment_totals_are_counted,
);

fn new_deployment(env: &str, version: &str, started_at: i64) -> NewDeployment {
    NewDeployment {
        project: "shop".into(),
        environment: env.into(),
        kind: "deploy".into(),
        release_version: version.into(),
        release_sha: format!("sha-{version}"),
        plan_hash: "plan-abc".into(),
        actor: "alice".into(),
        pid: 4242,
        host: "build-1".into(),
        started_at,
    }
}

fn step(deployment_id: i64, seq: i64, step_id: &str, status: &str) -> StepRun {
    StepRun {
        deployment_id,
        seq,
        phase: "run".parse().unwrap(),
        stage: "migrate".into(),
        step_id: step_id.into(),
        name: format!("Step {step_id}"),
        kind: "shell".into(),
        status: status.parse().unwrap(),
        started_at: 1_000 + seq,
        finished_at: None,
        duration_ms: None,
        exit_code: None,
        attempts: 1,
        output_tail: String::new(),
        error: None,
        outputs: json!({}),
        details: json!(null),
    }
}

fn lock_holder(env: &str, pid: u32) -> LockInfo {
    LockInfo {
        pid_started: None,
        boot_id: None,
        environment: env.into(),
        deployment_id: None,
        holder: format!("user{pid}@host{pid}"),
        pid,
        host: format!("host{pid}"),
        acquired_at: 5_000 + i64::from(pid),
        token: Some(format!("token-{pid}")),
        lease_ms: Some(60_000),
        lease_left_ms: None,
    }
}

async fn deployment_round_trip(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let id = store
        .begin_deployment(&new_deployment("staging", "1.2.3", 1_700_000_000_123))
        .await
        .unwrap();

    let d = store.deployment(id).await.unwrap().expect("stored");
    assert_eq!(d.id, id);
    assert_eq!(d.project, "shop");
    assert_eq!(d.environment, "staging");
    assert_eq!(d.kind, "deploy");
    assert_eq!(d.release_version, "1.2.3");
    assert_eq!(d.release_sha, "sha-1.2.3");
    assert_eq!(d.plan_hash, "plan-abc");
    assert_eq!(d.actor, "alice");
    assert_eq!(d.pid, 4242);
    assert_eq!(d.host, "build-1");
    assert_eq!(d.started_at, 1_700_000_000_123);
    assert_eq!(d.outcome, "running");
    assert_eq!(d.finished_at, None);
    assert_eq!(d.exit_code, None);
    assert_eq!(d.summary, None);

    store
        .finish_deployment(
            id,
            "failed".parse().unwrap(),
            3,
            "step db-migrate failed",
            1_700_000_009_000,
        )
        .await
        .unwrap();
    let d = store.deployment(id).await.unwrap().expect("stored");
    assert_eq!(d.outcome, "failed");
    assert_eq!(d.exit_code, Some(3));
    assert_eq!(d.summary.as_deref(), Some("step db-migrate failed"));
    assert_eq!(d.finished_at, Some(1_700_000_009_000));

    assert!(store.deployment(id + 100).await.unwrap().is_none());
    let err = store
        .finish_deployment(id + 100, "succeeded".parse().unwrap(), 0, "", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DeploymentNotFound { id: missing } if missing == id + 100),
        "{err:?}"
    );
    store.close().await;
}

async fn data_survives_reopen(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open().await;
    let id = store
        .begin_deployment(&new_deployment("prod", "9.9.9", 42))
        .await
        .unwrap();
    store.close().await;

    // Reopening runs the migrator again; it must be a no-op.
    let store = place.open().await;
    let d = store.deployment(id).await.unwrap().expect("persisted");
    assert_eq!(d.release_version, "9.9.9");
    store.close().await;
}

async fn steps_round_trip_upsert_and_order(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let id = store
        .begin_deployment(&new_deployment("staging", "1.0.0", 1))
        .await
        .unwrap();

    // Insert out of order; reading must come back ordered by seq.
    store
        .upsert_step(&step(id, 3, "c", "running"))
        .await
        .unwrap();
    store
        .upsert_step(&step(id, 1, "a", "running"))
        .await
        .unwrap();
    store
        .upsert_step(&step(id, 2, "b", "running"))
        .await
        .unwrap();

    // Replace seq 1 with a finished version carrying every optional field.
    let mut done = step(id, 1, "a", "passed");
    done.phase = "rollback".parse().unwrap();
    done.finished_at = Some(2_000);
    done.duration_ms = Some(999);
    done.exit_code = Some(-1);
    done.attempts = 3;
    done.output_tail = "line 1\nline 2 ✓\n".into();
    done.error = Some("flaky".into());
    done.outputs = json!({"release_id": "r-17", "count": 2});
    done.details = json!({"checks": [{"name": "health", "ok": true}], "nested": {"x": 1.5}});
    store.upsert_step(&done).await.unwrap();

    let steps = store.steps(id).await.unwrap();
    let ids: Vec<(i64, &str)> = steps.iter().map(|s| (s.seq, s.step_id.as_str())).collect();
    assert_eq!(ids, vec![(1, "a"), (2, "b"), (3, "c")]);

    let s = &steps[0];
    assert_eq!(s.deployment_id, id);
    assert_eq!(s.phase, "rollback");
    assert_eq!(s.stage, "migrate");
    assert_eq!(s.name, "Step a");
    assert_eq!(s.kind, "shell");
    assert_eq!(s.status, "passed");
    assert_eq!(s.started_at, 1_001);
    assert_eq!(s.finished_at, Some(2_000));
    assert_eq!(s.duration_ms, Some(999));
    assert_eq!(s.exit_code, Some(-1));
    assert_eq!(s.attempts, 3);
    assert_eq!(s.output_tail, "line 1\nline 2 ✓\n");
    assert_eq!(s.error.as_deref(), Some("flaky"));
    assert_eq!(s.outputs, json!({"release_id": "r-17", "count": 2}));
    assert_eq!(
        s.details,
        json!({"checks": [{"name": "health", "ok": true}], "nested": {"x": 1.5}})
    );
    assert_eq!(steps[1].status, "running");
    assert_eq!(steps[1].details, json!(null));
    assert_eq!(steps[1].error, None);

    // Steps are scoped to their deployment.
    let other = store
        .begin_deployment(&new_deployment("staging", "1.0.1", 2))
        .await
        .unwrap();
    assert!(store.steps(other).await.unwrap().is_empty());
    store.close().await;
}

async fn events_get_increasing_seq_per_deployment(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let a = store
        .begin_deployment(&new_deployment("staging", "1", 1))
        .await
        .unwrap();
    let b = store
        .begin_deployment(&new_deployment("staging", "2", 2))
        .await
        .unwrap();

    store
        .record_event(a, "started", &json!({"plan": "p"}), 10)
        .await
        .unwrap();
    store
        .record_event(b, "started", &json!(1), 11)
        .await
        .unwrap();
    store
        .record_event(a, "step", &json!({"id": "x", "ok": true}), 12)
        .await
        .unwrap();
    store
        .record_event(a, "finished", &json!(null), 13)
        .await
        .unwrap();

    let ev = store.events(a).await.unwrap();
    let got: Vec<(i64, i64, &str)> = ev.iter().map(|e| (e.seq, e.at, e.kind.as_str())).collect();
    assert_eq!(
        got,
        vec![(1, 10, "started"), (2, 12, "step"), (3, 13, "finished")]
    );
    assert!(ev.iter().all(|e| e.deployment_id == a));
    assert_eq!(ev[0].data, json!({"plan": "p"}));
    assert_eq!(ev[1].data, json!({"id": "x", "ok": true}));
    assert_eq!(ev[2].data, json!(null));

    let ev_b = store.events(b).await.unwrap();
    assert_eq!(ev_b.len(), 1);
    assert_eq!((ev_b[0].seq, ev_b[0].data.clone()), (1, json!(1)));

    // Foreign key: events need an existing deployment.
    assert!(store.record_event(9_999, "x", &json!({}), 1).await.is_err());
    store.close().await;
}

async fn concurrent_events_from_two_stores_get_distinct_seqs(backend: Backend) {
    let place = Place::new(backend);
    let s1 = place.open().await;
    let s2 = place.open().await;
    let id = s1
        .begin_deployment(&new_deployment("staging", "1", 1))
        .await
        .unwrap();

    let write = |store: &Store, tag: &'static str| {
        let store = store.clone();
        async move {
            for i in 0..20 {
                store
                    .record_event(id, tag, &json!({ "i": i }), i)
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(write(&s1, "one"), write(&s2, "two"));

    let seqs: Vec<i64> = s1.events(id).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    s1.close().await;
    s2.close().await;
}

async fn deployments_newest_first_and_filtered(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let s1 = store
        .begin_deployment(&new_deployment("staging", "1", 100))
        .await
        .unwrap();
    let p1 = store
        .begin_deployment(&new_deployment("prod", "1", 150))
        .await
        .unwrap();
    let s2 = store
        .begin_deployment(&new_deployment("staging", "2", 200))
        .await
        .unwrap();
    // Same start time as s2: the later id counts as newer.
    let s3 = store
        .begin_deployment(&new_deployment("staging", "3", 200))
        .await
        .unwrap();

    let all: Vec<i64> = store
        .deployments(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(all, vec![s3, s2, p1, s1]);

    let staging: Vec<i64> = store
        .deployments(Some("staging"), 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(staging, vec![s3, s2, s1]);

    let limited: Vec<i64> = store
        .deployments(Some("staging"), 2)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(limited, vec![s3, s2]);
    assert!(store.deployments(Some("dev"), 10).await.unwrap().is_empty());
    // Pages of the history: the second page of two starts after the first.
    let page = |offset| {
        let store = &store;
        async move {
            store
                .deployments_page(Some("staging"), 2, offset)
                .await
                .unwrap()
                .iter()
                .map(|d| d.id)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(page(0).await, vec![s3, s2]);
    assert_eq!(page(2).await, vec![s1]);
    assert!(page(3).await.is_empty());

    // last_deployment, with and without an outcome filter.
    store
        .finish_deployment(s1, "succeeded".parse().unwrap(), 0, "ok", 110)
        .await
        .unwrap();
    store
        .finish_deployment(s2, "failed".parse().unwrap(), 1, "boom", 210)
        .await
        .unwrap();
    assert_eq!(
        store
            .last_deployment("staging", None)
            .await
            .unwrap()
            .map(|d| d.id),
        Some(s3)
    );
    assert_eq!(
        store
            .last_deployment("staging", Some(stagegate_store::Outcome::Succeeded))
            .await
            .unwrap()
            .map(|d| d.id),
        Some(s1)
    );
    assert_eq!(
        store
            .last_deployment("staging", Some(stagegate_store::Outcome::Failed))
            .await
            .unwrap()
            .map(|d| d.id),
        Some(s2)
    );
    assert!(
        store
            .last_deployment("prod", Some(stagegate_store::Outcome::Succeeded))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.last_deployment("dev", None).await.unwrap().is_none());
    store.close().await;
}

async fn unfinished_and_mark_abandoned(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let a = store
        .begin_deployment(&new_deployment("staging", "1", 100))
        .await
        .unwrap();
    let b = store
        .begin_deployment(&new_deployment("prod", "1", 200))
        .await
        .unwrap();
    let c = store
        .begin_deployment(&new_deployment("staging", "2", 300))
        .await
        .unwrap();
    store
        .finish_deployment(c, "succeeded".parse().unwrap(), 0, "all good", 310)
        .await
        .unwrap();

    let ids = |v: Vec<stagegate_store::Deployment>| v.iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(store.unfinished(None).await.unwrap()), vec![a, b]);
    assert_eq!(
        ids(store.unfinished(Some("staging")).await.unwrap()),
        vec![a]
    );
    assert_eq!(ids(store.unfinished(Some("prod")).await.unwrap()), vec![b]);

    store
        .mark_abandoned(a, "process 4242 on build-1 is gone", 999)
        .await
        .unwrap();
    let d = store.deployment(a).await.unwrap().unwrap();
    assert_eq!(d.outcome, "abandoned");
    assert_eq!(
        d.summary.as_deref(),
        Some("process 4242 on build-1 is gone")
    );
    assert_eq!(d.finished_at, Some(999));
    assert_eq!(d.exit_code, None);
    assert_eq!(ids(store.unfinished(None).await.unwrap()), vec![b]);

    // A finished deployment is left alone.
    store
        .mark_abandoned(c, "should not apply", 1_000)
        .await
        .unwrap();
    let d = store.deployment(c).await.unwrap().unwrap();
    assert_eq!(d.outcome, "succeeded");
    assert_eq!(d.summary.as_deref(), Some("all good"));
    assert_eq!(d.finished_at, Some(310));
    store.close().await;
}

async fn lock_acquire_info_attach_release(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    assert!(store.lock_info("staging").await.unwrap().is_none());

    let me = lock_holder("staging", 100);
    assert!(matches!(
        store.try_lock("staging", &me).await.unwrap(),
        LockAttempt::Acquired
    ));
    let info = store.lock_info("staging").await.unwrap().expect("locked");
    assert_eq!(info.environment, "staging");
    assert_eq!(info.holder, "user100@host100");
    assert_eq!(info.pid, 100);
    assert_eq!(info.host, "host100");
    assert_eq!(info.acquired_at, 5_100);
    assert_eq!(info.deployment_id, None);

    // Another pid is refused and told who holds it.
    match store
        .try_lock("staging", &lock_holder("staging", 200))
        .await
        .unwrap()
    {
        LockAttempt::Held(h) => assert_eq!((h.pid, h.holder.as_str()), (100, "user100@host100")),
        LockAttempt::Acquired => panic!("second holder must not acquire"),
    }
    // Other environments are independent.
    assert!(matches!(
        store
            .try_lock("prod", &lock_holder("prod", 200))
            .await
            .unwrap(),
        LockAttempt::Acquired
    ));

    let id = store
        .begin_deployment(&new_deployment("staging", "1", 1))
        .await
        .unwrap();
    store
        .set_lock_deployment("staging", "token-100", id)
        .await
        .unwrap();
    assert_eq!(
        store
            .lock_info("staging")
            .await
            .unwrap()
            .unwrap()
            .deployment_id,
        Some(id)
    );
    let err = store
        .set_lock_deployment("staging", "token-200", id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::LockNotHeld { environment } if environment == "staging"),
        "{err:?}"
    );

    // Release by a different holding does nothing.
    store.release_lock("staging", "token-200").await.unwrap();
    assert_eq!(store.lock_info("staging").await.unwrap().unwrap().pid, 100);

    // Release by the holder frees it, and it can be taken again.
    store.release_lock("staging", "token-100").await.unwrap();
    assert!(store.lock_info("staging").await.unwrap().is_none());
    assert!(matches!(
        store
            .try_lock("staging", &lock_holder("staging", 200))
            .await
            .unwrap(),
        LockAttempt::Acquired
    ));
    assert_eq!(store.lock_info("prod").await.unwrap().unwrap().pid, 200);
    store.close().await;
}

async fn break_lock_removes_and_reports(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    assert!(
        store
            .break_lock("staging", &breaker())
            .await
            .unwrap()
            .is_none()
    );

    let id = store
        .begin_deployment(&new_deployment("staging", "1", 1))
        .await
        .unwrap();
    let mut holder = lock_holder("staging", 77);
    holder.deployment_id = Some(id);
    assert!(matches!(
        store.try_lock("staging", &holder).await.unwrap(),
        LockAttempt::Acquired
    ));

    let broken = store
        .break_lock("staging", &breaker())
        .await
        .unwrap()
        .expect("was locked");
    assert_eq!(broken.environment, "staging");
    assert_eq!(broken.pid, 77);
    assert_eq!(broken.holder, "user77@host77");
    assert_eq!(broken.deployment_id, Some(id));
    assert!(store.lock_info("staging").await.unwrap().is_none());
    assert!(
        store
            .break_lock("staging", &breaker())
            .await
            .unwrap()
            .is_none()
    );

    // The old holder's attach now fails; its release is a harmless no-op.
    assert!(matches!(
        store.set_lock_deployment("staging", "token-77", id).await,
        Err(StoreError::LockNotHeld { .. })
    ));
    assert!(!store.renew_lock("staging", "token-77").await.unwrap());
    store.release_lock("staging", "token-77").await.unwrap();
    store.close().await;
}

/// A lock's lease is read as time left by the store's clock, pushed ahead by a renewal of its
/// own holding only (not by a process with the same pid elsewhere), and counts as expired
/// once it has run out by a whole lease; a lock without a lease never expires.
async fn a_lease_is_renewed_by_its_holding_only_and_runs_out(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let mut me = lock_holder("staging", 300);
    me.lease_ms = Some(400);
    assert!(matches!(
        store.try_lock("staging", &me).await.unwrap(),
        LockAttempt::Acquired
    ));
    let fresh = store.lock_info("staging").await.unwrap().unwrap();
    assert_eq!(fresh.lease_ms, Some(400));
    let left = fresh.lease_left_ms.expect("a lease");
    assert!((0..=400).contains(&left), "{left}");
    assert!(!fresh.lease_expired());
    assert_eq!(fresh.token.as_deref(), Some("token-300"));

    // Run out by more than a whole lease: expired.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let stale = store.lock_info("staging").await.unwrap().unwrap();
    assert!(stale.lease_left_ms.unwrap() < -400, "{stale:?}");
    assert!(stale.lease_expired());

    // Another holding (the same pid on another host) renews nothing and releases nothing.
    assert!(!store.renew_lock("staging", "token-other").await.unwrap());
    store.release_lock("staging", "token-other").await.unwrap();
    assert!(
        store
            .lock_info("staging")
            .await
            .unwrap()
            .unwrap()
            .lease_expired()
    );

    // Its own renewal makes it fresh again.
    assert!(store.renew_lock("staging", "token-300").await.unwrap());
    let renewed = store.lock_info("staging").await.unwrap().unwrap();
    assert!(!renewed.lease_expired());
    assert!(renewed.lease_left_ms.unwrap() > 0, "{renewed:?}");
    store.release_lock("staging", "token-300").await.unwrap();
    assert!(store.lock_info("staging").await.unwrap().is_none());

    // An older version's lock has no lease: it is never taken for expired.
    let mut old = lock_holder("staging", 301);
    old.token = None;
    old.lease_ms = None;
    store.try_lock("staging", &old).await.unwrap();
    let old = store.lock_info("staging").await.unwrap().unwrap();
    assert_eq!((old.lease_ms, old.lease_left_ms), (None, None));
    assert!(!old.lease_expired());
    store.close().await;
}

async fn lock_is_exclusive_across_two_stores_racing(backend: Backend) {
    for round in 0..10 {
        let place = Place::new(backend);
        let (s1, s2) = tokio::join!(place.open(), place.open());

        let env = format!("env-{round}");
        let h1 = lock_holder(&env, 1);
        let h2 = lock_holder(&env, 2);
        let (r1, r2) = tokio::join!(s1.try_lock(&env, &h1), s2.try_lock(&env, &h2));
        let (r1, r2) = (r1.unwrap(), r2.unwrap());

        let winner = match (&r1, &r2) {
            (LockAttempt::Acquired, LockAttempt::Held(h)) => {
                assert_eq!(h.pid, 1, "loser must see the winner");
                1
            }
            (LockAttempt::Held(h), LockAttempt::Acquired) => {
                assert_eq!(h.pid, 2, "loser must see the winner");
                2
            }
            other => panic!("round {round}: exactly one must acquire, got {other:?}"),
        };
        assert_eq!(s1.lock_info(&env).await.unwrap().unwrap().pid, winner);
        assert_eq!(s2.lock_info(&env).await.unwrap().unwrap().pid, winner);
        s1.close().await;
        s2.close().await;
    }
}

#[tokio::test]
async fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("state.db");
    assert!(!path.parent().unwrap().exists());

    let store = Store::open(&path).await.unwrap();
    assert!(path.is_file(), "state file created");
    let id = store
        .begin_deployment(&new_deployment("staging", "1", now_millis()))
        .await
        .unwrap();
    assert!(store.deployment(id).await.unwrap().is_some());
    store.close().await;
}

#[tokio::test]
async fn open_uncreatable_path_names_it() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory is needed: fails even as root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();

    let nested = blocker.join("sub").join("state.db");
    let err = Store::open(&nested).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(
        msg.contains(&blocker.join("sub").display().to_string()),
        "message must name the path: {msg}"
    );
    assert!(
        msg.contains("--state"),
        "message must say what to do: {msg}"
    );

    // Parent exists but is a file: opening the database itself fails.
    let direct = blocker.join("state.db");
    let err = Store::open(&direct).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&direct.display().to_string()),
        "message must name the path: {msg}"
    );

    // The path is an existing directory, not a file.
    let err = Store::open(dir.path()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        msg.contains(&dir.path().display().to_string()),
        "message must name the path: {msg}"
    );
}

#[test]
fn now_millis_is_unix_milliseconds() {
    let std_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ours = now_millis();
    assert!((ours - std_now).abs() < 5_000, "{ours} vs {std_now}");
}

/// A store with two finished deployments (steps passed and failed), a rollback, an
/// abandoned run and a broken lock: every kind of audit record.
async fn audited_store(backend: Backend) -> Place {
    let place = Place::new(backend);
    let store = place.open().await;
    for (v, outcome) in [("1", "succeeded"), ("2", "rolled_back")] {
        let id = store
            .begin_deployment(&new_deployment("staging", v, 10))
            .await
            .unwrap();
        let mut s = step(id, 1, "migrate", "running");
        store.upsert_step(&s).await.unwrap();
        s.status = "passed".parse().unwrap();
        s.finished_at = Some(2_000);
        s.details = json!({"gate": "git", "passed": true, "checks": []});
        store.upsert_step(&s).await.unwrap();
        let mut r = step(id, 2, "restore-web", "failed");
        r.phase = "rollback".parse().unwrap();
        store.upsert_step(&r).await.unwrap();
        store
            .finish_deployment(id, outcome.parse().unwrap(), 0, "done", 3_000)
            .await
            .unwrap();
    }
    let id = store
        .begin_deployment(&new_deployment("staging", "3", 20))
        .await
        .unwrap();
    store.mark_abandoned(id, "killed", 4_000).await.unwrap();
    let mut holder = lock_holder("staging", 9);
    holder.deployment_id = Some(id);
    store.try_lock("staging", &holder).await.unwrap();
    store.break_lock("staging", &breaker()).await.unwrap();
    store.close().await;
    place
}

async fn tamper(path: &std::path::Path, sql: &str) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    // One connection, so `PRAGMA foreign_keys = OFF` holds for the statements after it.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn verify(place: &Place) -> stagegate_store::AuditReport {
    let store = place.open().await;
    let r = store.verify_audit().await.unwrap();
    store.close().await;
    r
}

async fn an_untampered_store_verifies(backend: Backend) {
    let place = audited_store(backend).await;
    let r = verify(&place).await;
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!(r.deployments_checked, 3);
    assert_eq!(r.steps_checked, 4);
    // 1 start + 3 begun + 4 steps finished + 3 finished (one abandoned) + 1 lock broken.
    assert_eq!(r.records, 12);
    // One deployment's trail: it began, its two steps (a failed one counts as finished), it
    // finished; only its own records, oldest first.
    let store = place.open().await;
    let first = store.audit_log_of(1).await.unwrap();
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(first.iter().all(|a| a.deployment_id == Some(1)));
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(store.audit_log_of(99).await.unwrap().is_empty());
    store.close().await;
}

/// Each edit made behind stagegate's back is found, and the first broken link is named.
async fn edits_deletions_and_reordering_are_named(backend: Backend) {
    let cases: &[(&str, &str, &str)] = &[
        (
            "UPDATE deployments SET outcome = 'succeeded' WHERE id = 2",
            "deployment #2",
            "`outcome` is \"succeeded\" but was recorded as \"rolled_back\"",
        ),
        (
            "UPDATE deployments SET release_version = '9' WHERE id = 1",
            "deployment #1",
            "release_version",
        ),
        (
            "DELETE FROM deployments WHERE id = 3",
            "deployment #3",
            "was deleted",
        ),
        (
            "UPDATE step_runs SET status = 'passed' WHERE deployment_id = 2 AND seq = 2",
            "step 2 (`restore-web`) of deployment #2",
            "`status`",
        ),
        (
            "UPDATE step_runs SET details = '{\"gate\":\"git\",\"passed\":true,\"checks\":[],\"overridden\":{\"by\":\"x\"}}' WHERE deployment_id = 1 AND seq = 1",
            "step 1 (`migrate`) of deployment #1",
            "`details`",
        ),
        (
            "DELETE FROM step_runs WHERE deployment_id = 1 AND seq = 2",
            "step 2 of deployment #1",
            "was deleted",
        ),
        (
            "PRAGMA foreign_keys = OFF; UPDATE step_runs SET deployment_id = 7 WHERE deployment_id = 3; UPDATE deployments SET id = 7 WHERE id = 3",
            "deployment #7",
            "has no audit record",
        ),
        (
            "UPDATE audit_log SET data = replace(data, 'killed', 'finished') WHERE seq = 11",
            "audit record #11",
            "does not match its hash",
        ),
        (
            "DELETE FROM audit_log WHERE seq = 5",
            "audit record #5",
            "is missing",
        ),
        (
            "UPDATE audit_log SET seq = 100 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = 100",
            "audit record #4",
            "does not link",
        ),
    ];
    for (sql, link, what) in cases {
        let place = audited_store(backend).await;
        place.tamper(sql).await;
        let r = verify(&place).await;
        let p = r
            .problem
            .unwrap_or_else(|| panic!("`{sql}` went unnoticed"));
        assert_eq!(p.link, *link, "{sql}: {p:?}");
        assert!(p.what.contains(what), "{sql}: {p:?}");
    }
}

/// Ids are never handed out twice: not after the newest row is deleted, and not below a
/// floor the caller gives (ids that files outside the store already use).
async fn ids_are_never_reused_and_the_floor_is_kept(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open().await;
    let a = store
        .begin_deployment(&new_deployment("staging", "1", 1))
        .await
        .unwrap();
    let b = store
        .begin_deployment_above(&new_deployment("staging", "2", 2), 41)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 42));
    store.close().await;
    place.tamper("DELETE FROM deployments WHERE id = 42").await;
    let store = place.open().await;
    let c = store
        .begin_deployment(&new_deployment("staging", "3", 3))
        .await
        .unwrap();
    assert_eq!(c, 43);
    // A floor below the sequence changes nothing.
    let d = store
        .begin_deployment_above(&new_deployment("staging", "4", 4), 5)
        .await
        .unwrap();
    assert_eq!(d, 44);
    store.close().await;
}

/// Rounds of the two-process lock race, and the pause between them.
const RACE_ROUNDS: u32 = 40;
const RACE_GAP_MS: i64 = 60;

/// One side of `two_processes_race_for_the_lock`: does nothing unless that test started
/// this process. Connects, then at each round's start time tries the round's environment
/// lock once as this pid, and prints what it got.
#[tokio::test]
async fn lock_race_helper() {
    let (Ok(url), Ok(start)) = (
        std::env::var("STAGEGATE_RACE_URL"),
        std::env::var("STAGEGATE_RACE_START"),
    ) else {
        return;
    };
    let start: i64 = start.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_postgres(&url, dir.path()).await.unwrap();
    let me = std::process::id();
    for round in 0..RACE_ROUNDS {
        let at = start + i64::from(round) * RACE_GAP_MS;
        let wait = at - now_millis();
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
        }
        let env = format!("race-{round}");
        let got = match store.try_lock(&env, &lock_holder(&env, me)).await.unwrap() {
            LockAttempt::Acquired => "acquired".to_string(),
            LockAttempt::Held(h) => format!("held {}", h.pid),
        };
        println!("RACE {round} {me} {got}");
    }
    store.close().await;
}

/// Two OS processes (this test binary, run twice) race for the same environment's lock on
/// one PostgreSQL database, round after round: each time exactly one wins, and the other is
/// told the winner's pid.
#[tokio::test]
async fn two_processes_race_for_the_lock() {
    let db = pg::fresh_database("race");
    // Creates the schema first, so the racers race for locks, not for the migration.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_postgres(&db.url, dir.path()).await.unwrap();
    let start = now_millis() + 3_000;
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_race_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STAGEGATE_RACE_URL", &db.url)
            .env("STAGEGATE_RACE_START", start.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "a racer failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // round -> [(pid, what it got)]
    let mut rounds: std::collections::BTreeMap<u32, Vec<(u32, String)>> = Default::default();
    for out in [&a, &b] {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest's `test lock_race_helper ... ` may start the first line.
            let Some(rest) = line.find("RACE ").map(|i| &line[i + 5..]) else {
                continue;
            };
            let mut parts = rest.splitn(3, ' ');
            let round: u32 = parts.next().unwrap().parse().unwrap();
            let pid: u32 = parts.next().unwrap().parse().unwrap();
            rounds
                .entry(round)
                .or_default()
                .push((pid, parts.next().unwrap().to_string()));
        }
    }
    assert_eq!(rounds.len(), RACE_ROUNDS as usize, "{rounds:?}");
    for (round, got) in &rounds {
        let winners: Vec<u32> = got
            .iter()
            .filter(|(_, g)| g == "acquired")
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {got:?}");
        let loser = got.iter().find(|(_, g)| g != "acquired").unwrap();
        assert_eq!(loser.1, format!("held {}", winners[0]), "round {round}");
        let env = format!("race-{round}");
        assert_eq!(
            store.lock_info(&env).await.unwrap().unwrap().pid,
            winners[0]
        );
    }
    store.close().await;
}

/// What a failed connection says: the cause, what to do, and never the password.
#[tokio::test]
async fn postgres_connection_errors_say_what_to_do_and_hide_the_password() {
    let pg = pg::shared();
    let db = pg::fresh_database("errors");
    let dir = tempfile::tempdir().unwrap();
    let open = |url: String| {
        let dir = dir.path().to_path_buf();
        async move { Store::open_postgres(&url, &dir).await.unwrap_err() }
    };
    let check = |err: &StoreError, wants: &[&str]| {
        let msg = err.to_string();
        let debug = format!("{err:?}");
        assert!(!msg.contains(&db.password), "password shown: {msg}");
        assert!(!debug.contains(&db.password), "password in Debug: {debug}");
        for w in wants {
            assert!(msg.contains(w), "`{w}` missing from: {msg}");
        }
    };

    // No server at that port.
    let port = pg::free_port();
    let err = open(format!(
        "postgresql://{}:{}@127.0.0.1:{port}/{}",
        db.role, db.password, db.name
    ))
    .await;
    check(
        &err,
        &[
            "no PostgreSQL server answers at 127.0.0.1",
            "start the server",
            ":***@",
        ],
    );

    // A wrong password: the right one must not show either.
    let wrong = format!("{}-wrong", db.password);
    let err = open(db.url.replace(&db.password, &wrong)).await;
    check(&err, &["refused role", "check the user and password"]);
    assert!(!err.to_string().contains(&wrong), "{err}");

    // A database that does not exist.
    let err = open(format!(
        "postgresql://{}:{}@127.0.0.1:{}/nosuchdb",
        db.role, db.password, pg.port
    ))
    .await;
    check(&err, &["database `nosuchdb` does not exist", "createdb"]);
}

/// On PostgreSQL the reservations of outcomes live in the local state directory, and an
/// outcome left there is recorded by the next open, its lock freed.
#[tokio::test]
async fn postgres_pending_outcomes_live_in_the_local_directory() {
    let place = Place::new(Backend::Postgres);
    let store = place.open().await;
    let id = store
        .begin_deployment(&new_deployment("staging", "1", 1))
        .await
        .unwrap();
    store
        .try_lock("staging", &lock_holder("staging", 4242))
        .await
        .unwrap();
    let reservation = store.reserve_finish(id).unwrap();
    assert!(reservation.path().starts_with(place.dir.path()));
    reservation
        .write(&stagegate_store::FinishRecord {
            deployment_id: id,
            environment: "staging".into(),
            pid: 4242,
            lock_token: "token-4242".into(),
            outcome: "succeeded".into(),
            exit_code: 0,
            summary: "all good".into(),
            finished_at: 9,
        })
        .unwrap();
    store.close().await;

    let store = place.open().await;
    let done = store.recover_pending().await.unwrap();
    assert_eq!(done.len(), 1);
    let d = store.deployment(id).await.unwrap().unwrap();
    assert_eq!(d.outcome, "succeeded");
    assert!(store.lock_info("staging").await.unwrap().is_none());
    assert!(store.verify_audit().await.unwrap().problem.is_none());
    store.close().await;
}

fn promotion_request(env: &str, version: &str, started_at: i64) -> NewDeployment {
    NewDeployment {
        kind: "promote".into(),
        ..new_deployment(env, version, started_at)
    }
}

fn approval(
    deployment_id: i64,
    verdict: Verdict,
    actor: &str,
    role: Option<&str>,
    at: i64,
) -> ApprovalRecord {
    ApprovalRecord {
        id: 0,
        deployment_id,
        environment: "prod".into(),
        verdict,
        actor: actor.into(),
        role: role.map(str::to_string),
        comment: format!("{actor} looked at it"),
        plan_hash: "plan-abc".into(),
        artifact: "sha256:0123abcd".into(),
        at,
    }
}

/// Approvals come back per deployment, oldest first, with every field and the id the store
/// gave them; they survive a reopen.
async fn approvals_round_trip_in_order(backend: Backend) {
    let place = Place::new(backend);
    let store = place.open().await;
    let a = store
        .begin_deployment(&promotion_request("prod", "1", 10))
        .await
        .unwrap();
    let b = store
        .begin_deployment(&new_deployment("prod", "2", 20))
        .await
        .unwrap();
    assert!(store.approvals(a).await.unwrap().is_empty());

    let mut first = approval(a, Verdict::Approved, "alice", Some("release-manager"), 300);
    first.id = 999; // ignored: the store assigns it
    let wanted = [
        first,
        approval(b, Verdict::Rejected, "carol", None, 150),
        // Recorded later with an earlier time: the order is the store's, by id.
        approval(a, Verdict::Rejected, "bob", None, 100),
        approval(a, Verdict::Approved, "dave", Some("sre"), 400),
    ];
    let mut ids = Vec::new();
    for w in &wanted {
        ids.push(store.record_approval(w).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(!ids.contains(&999));

    let expect = |which: &[usize]| -> Vec<ApprovalRecord> {
        which
            .iter()
            .map(|&i| ApprovalRecord {
                id: ids[i],
                ..wanted[i].clone()
            })
            .collect()
    };
    assert_eq!(store.approvals(a).await.unwrap(), expect(&[0, 2, 3]));
    assert_eq!(store.approvals(b).await.unwrap(), expect(&[1]));
    assert!(store.approvals(b + 100).await.unwrap().is_empty());
    let got = store.approvals(a).await.unwrap();
    assert_eq!(got[0].role.as_deref(), Some("release-manager"));
    assert_eq!(got[0].verdict, Verdict::Approved);
    assert_eq!(got[1].role, None);
    assert_eq!(got[1].verdict, "rejected");
    assert_eq!(got[1].comment, "bob looked at it");
    assert_eq!(got[1].at, 100);
    assert_eq!(
        serde_json::to_value(&got[1]).unwrap()["verdict"],
        json!("rejected")
    );
    store.close().await;

    let store = place.open().await;
    assert_eq!(store.approvals(a).await.unwrap(), expect(&[0, 2, 3]));
    store.close().await;
}

/// An approval of a deployment that does not exist is refused, and nothing is written.
async fn an_approval_of_a_missing_deployment_fails(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    let id = store
        .begin_deployment(&promotion_request("prod", "1", 10))
        .await
        .unwrap();
    let records = store.audit_log().await.unwrap().len();
    let err = store
        .record_approval(&approval(id + 7, Verdict::Approved, "alice", None, 5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DeploymentNotFound { id: missing } if missing == id + 7),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(store.approvals(id + 7).await.unwrap().is_empty());
    assert_eq!(store.audit_log().await.unwrap().len(), records);
    // The store still takes a good one after the failure.
    store
        .record_approval(&approval(id, Verdict::Approved, "alice", None, 6))
        .await
        .unwrap();
    let r = store.verify_audit().await.unwrap();
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!(r.approvals_checked, 1);
    store.close().await;
}

/// A request waiting as `awaiting_approval` is not unfinished (nor abandoned by a later
/// run), and `finish_deployment` settles it as approved, rejected or voided.
async fn an_awaiting_approval_request_is_settled_by_finish_deployment(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    for (i, outcome) in [Outcome::Approved, Outcome::Rejected, Outcome::Voided]
        .into_iter()
        .enumerate()
    {
        let at = 100 * (i as i64 + 1);
        let id = store
            .begin_deployment(&promotion_request("prod", &format!("1.{i}"), at))
            .await
            .unwrap();
        store
            .finish_deployment(
                id,
                Outcome::AwaitingApproval,
                0,
                "waits for 2 approvals",
                at + 1,
            )
            .await
            .unwrap();
        let d = store.deployment(id).await.unwrap().unwrap();
        assert_eq!(d.outcome, Outcome::AwaitingApproval);
        assert_eq!(d.outcome, "awaiting_approval");
        assert_eq!(d.kind, "promote");
        // Only `running` rows are unfinished, and only those are abandoned.
        assert!(store.unfinished(None).await.unwrap().is_empty());
        store.mark_abandoned(id, "killed", at + 2).await.unwrap();
        assert_eq!(
            store.deployment(id).await.unwrap().unwrap().outcome,
            Outcome::AwaitingApproval
        );
        assert_eq!(
            store
                .last_deployment("prod", Some(Outcome::AwaitingApproval))
                .await
                .unwrap()
                .map(|d| d.id),
            Some(id)
        );

        store
            .finish_deployment(id, outcome, 3, &format!("settled as {outcome}"), at + 50)
            .await
            .unwrap();
        let d = store.deployment(id).await.unwrap().unwrap();
        assert_eq!(d.outcome, outcome);
        assert_eq!(d.exit_code, Some(3));
        assert_eq!(d.summary, Some(format!("settled as {outcome}")));
        assert_eq!(d.finished_at, Some(at + 50));
        assert_eq!(
            store
                .last_deployment("prod", Some(outcome))
                .await
                .unwrap()
                .map(|d| d.id),
            Some(id)
        );
        assert!(
            store
                .last_deployment("prod", Some(Outcome::AwaitingApproval))
                .await
                .unwrap()
                .is_none()
        );
    }
    let r = store.verify_audit().await.unwrap();
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!(r.deployments_checked, 3);
    store.close().await;
}

/// A store with a promotion request (deployment #1) approved twice and rejected once, a
/// protected deploy (#2) approved once, a bypass and a promotion noted.
async fn approved_store(backend: Backend) -> Place {
    let place = Place::new(backend);
    let store = place.open().await;
    let req = store
        .begin_deployment(&promotion_request("prod", "1", 10))
        .await
        .unwrap();
    let dep = store
        .begin_deployment(&new_deployment("prod", "1", 20))
        .await
        .unwrap();
    store
        .finish_deployment(req, Outcome::AwaitingApproval, 0, "waits", 30)
        .await
        .unwrap();
    for a in [
        approval(req, Verdict::Approved, "alice", Some("release-manager"), 40),
        approval(req, Verdict::Rejected, "bob", None, 50),
        approval(req, Verdict::Approved, "carol", Some("sre"), 60),
        approval(dep, Verdict::Approved, "dave", None, 70),
    ] {
        store.record_approval(&a).await.unwrap();
    }
    store
        .record_audit_note(
            AuditKind::Bypass,
            Some(dep),
            &json!({"rule": "required_approvals", "by": "erin", "reason": "hotfix"}),
            80,
        )
        .await
        .unwrap();
    store
        .record_audit_note(
            AuditKind::Promotion,
            None,
            &json!({"from": "staging", "to": "prod", "request": req, "deployment": dep}),
            90,
        )
        .await
        .unwrap();
    store
        .finish_deployment(req, Outcome::Approved, 0, "approved", 100)
        .await
        .unwrap();
    store.close().await;
    place
}

/// Approvals, bypasses and promotions are in the audit log, an approval's record holds
/// every field of its row, and the log verifies; a note of a kind that covers a row is
/// refused.
async fn approvals_bypasses_and_promotions_are_audited(backend: Backend) {
    let place = approved_store(backend).await;
    let store = place.open().await;
    let log = store.audit_log().await.unwrap();
    let kinds: Vec<&str> = log.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "audit_started",
            "deployment_begun",
            "deployment_begun",
            "deployment_finished",
            "approval",
            "approval",
            "approval",
            "approval",
            "bypass",
            "promotion",
            "deployment_finished",
        ]
    );
    for k in [AuditKind::Approval, AuditKind::Bypass, AuditKind::Promotion] {
        assert_eq!(AuditKind::parse(k.as_str()), Some(k));
    }
    let rows = store.approvals(1).await.unwrap();
    let first: serde_json::Value = serde_json::from_str(&log[4].data).unwrap();
    assert_eq!(log[4].deployment_id, Some(1));
    assert_eq!(log[4].at, 40);
    assert_eq!(
        first,
        json!({
            "id": rows[0].id,
            "deployment_id": 1,
            "environment": "prod",
            "verdict": "approved",
            "actor": "alice",
            "role": "release-manager",
            "comment": "alice looked at it",
            "plan_hash": "plan-abc",
            "artifact": "sha256:0123abcd",
            "at": 40,
        })
    );
    let second: serde_json::Value = serde_json::from_str(&log[5].data).unwrap();
    assert_eq!(second["role"], serde_json::Value::Null);
    assert_eq!(second["verdict"], "rejected");
    assert_eq!(log[8].deployment_id, Some(2));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&log[8].data).unwrap()["reason"],
        "hotfix"
    );
    assert_eq!(log[9].deployment_id, None);
    assert_eq!(log[9].at, 90);

    // Kinds that cover a row are not notes: refused, nothing written.
    for kind in [
        AuditKind::Approval,
        AuditKind::Decision,
        AuditKind::DeploymentBegun,
        AuditKind::LockBroken,
    ] {
        let err = store
            .record_audit_note(kind, Some(1), &json!({}), 1)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotAnAuditNote { kind: k } if k == kind.as_str()),
            "{err:?}"
        );
    }
    assert_eq!(store.audit_log().await.unwrap().len(), log.len());

    let r = store.verify_audit().await.unwrap();
    assert_eq!(r.problem, None, "{r:?}");
    assert_eq!(r.records, 11);
    assert_eq!(r.approvals_checked, 4);
    assert_eq!(r.deployments_checked, 2);
    assert_eq!(serde_json::to_value(&r).unwrap()["approvals_checked"], 4);
    store.close().await;
}

/// An approval edited, deleted, added or renumbered behind stagegate's back is named.
async fn approval_edits_and_deletions_are_named(backend: Backend) {
    let cases: &[(&str, &str, &str)] = &[
        (
            "UPDATE approvals SET actor = 'mallory' WHERE id = 2",
            "approval #2 of deployment #1",
            "`actor` is \"mallory\" but was recorded as \"bob\"",
        ),
        (
            "UPDATE approvals SET actor = 'mallory'",
            "approval #1 of deployment #1",
            "`actor`",
        ),
        (
            "UPDATE approvals SET verdict = 'approved' WHERE id = 2",
            "approval #2 of deployment #1",
            "`verdict` is \"approved\" but was recorded as \"rejected\"",
        ),
        (
            "UPDATE approvals SET role = 'release-manager' WHERE id = 4",
            "approval #4 of deployment #2",
            "`role`",
        ),
        (
            "UPDATE approvals SET artifact = 'sha256:evil' WHERE id = 3",
            "approval #3 of deployment #1",
            "`artifact`",
        ),
        (
            "UPDATE approvals SET deployment_id = 2 WHERE id = 1",
            "approval #1 of deployment #2",
            "`deployment_id`",
        ),
        (
            "DELETE FROM approvals WHERE id = 2",
            "approval #2 of deployment #1",
            "was deleted",
        ),
        (
            "INSERT INTO approvals (deployment_id, environment, verdict, actor, role, comment, \
             plan_hash, artifact, at) VALUES (1, 'prod', 'approved', 'mallory', NULL, 'lgtm', \
             'plan-abc', 'sha256:0123abcd', 65)",
            "approval #5 of deployment #1",
            "has no audit record",
        ),
        (
            "UPDATE approvals SET id = 9 WHERE id = 3",
            "approval #9 of deployment #1",
            "has no audit record",
        ),
    ];
    for (sql, link, what) in cases {
        let place = approved_store(backend).await;
        place.tamper(sql).await;
        let r = verify(&place).await;
        let p = r
            .problem
            .unwrap_or_else(|| panic!("`{sql}` went unnoticed"));
        assert_eq!(p.link, *link, "{sql}: {p:?}");
        assert!(p.what.contains(what), "{sql}: {p:?}");
    }
}

async fn step_durations_and_deployment_totals_are_counted(backend: Backend) {
    let (_place, store) = open_temp(backend).await;
    assert!(store.step_durations().await.unwrap().is_empty());
    let staging = store
        .begin_deployment(&new_deployment("staging", "1", 10))
        .await
        .unwrap();
    let prod = store
        .begin_deployment(&new_deployment("production", "1", 20))
        .await
        .unwrap();
    // 50 ms, 2 s and 2 h on staging; 700 ms on production; one unfinished step, not counted.
    for (id, seq, ms) in [
        (staging, 1, 50),
        (staging, 2, 2_000),
        (staging, 3, 7_200_000),
        (prod, 1, 700),
    ] {
        let mut s = step(id, seq, &format!("s{seq}"), "passed");
        s.duration_ms = Some(ms);
        store.upsert_step(&s).await.unwrap();
    }
    store
        .upsert_step(&step(prod, 2, "running", "running"))
        .await
        .unwrap();
    let d = store.step_durations().await.unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(
        (d[0].environment.as_str(), d[0].count, d[0].sum_ms),
        ("production", 1, 700)
    );
    // 700 ms: above 0.1 s and 0.5 s, under 1 s and every bound after.
    assert_eq!(d[0].buckets, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(
        (
            d[1].environment.as_str(),
            d[1].kind.as_str(),
            d[1].phase.as_str(),
            d[1].status.as_str()
        ),
        ("staging", "shell", "run", "passed")
    );
    assert_eq!((d[1].count, d[1].sum_ms), (3, 7_202_050));
    // Cumulative: 50 ms is under every bound, 2 s from 5 s on, 2 h under none.
    assert_eq!(d[1].buckets, [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);

    // The deployments by outcome: a running one has taken no time yet.
    store
        .finish_deployment(staging, "succeeded".parse().unwrap(), 0, "ok", 1_500)
        .await
        .unwrap();
    let t = store.deployment_totals().await.unwrap();
    let rows: Vec<(&str, &str, &str, i64, i64)> = t
        .iter()
        .map(|t| {
            (
                t.environment.as_str(),
                t.kind.as_str(),
                t.outcome.as_str(),
                t.count,
                t.seconds_ms,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("production", "deploy", "running", 1, 0),
            ("staging", "deploy", "succeeded", 1, 1_490)
        ]
    );
}
