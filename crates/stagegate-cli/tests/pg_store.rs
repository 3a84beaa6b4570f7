//! The PostgreSQL state store from the command line, against a real PostgreSQL (`tests/pg`):
//! `deploy` records there (chosen by `--state`/`STAGEGATE_STATE` or the plan's
//! `state.url`), `history`, `status`, `show` and `audit verify` read it back, and the URL's
//! password appears in no output. Needs Debian's `postgresql` package.

mod common;
mod pg;

use common::Project;
use pg::Postgres;

const PLAN: &str = r#"project: shop
environments:
  staging: {}
stages:
  deploy:
    - id: hello
      run: echo hello from the deploy
"#;

/// Every output of `out` lacks `secret`.
fn hides(out: &common::Out, secret: &str) {
    out.lacks(secret);
}

#[test]
fn deploy_records_in_postgres_and_history_and_status_read_it_back() {
    let pg = Postgres::start();
    let db = pg.database("cli_store");
    let p = Project::new(PLAN);
    let env = [("STAGEGATE_STATE", db.url.as_str())];

    let out = p.run_env(
        &[
            "deploy",
            "staging",
            "--release-version",
            "1.0.0",
            "--release-sha",
            "abc123",
        ],
        &env,
    );
    hides(&out, &db.password);
    out.code(0);

    let out = p.run_env(&["history", "--json"], &env);
    hides(&out, &db.password);
    out.code(0);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).expect("history --json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["release_version"], "1.0.0", "{rows}");
    assert_eq!(rows[0]["outcome"], "succeeded", "{rows}");

    let out = p.run_env(&["status", "staging"], &env);
    hides(&out, &db.password);
    out.code(0).stdout_has("1.0.0");
    let out = p.run_env(&["show", "1"], &env);
    hides(&out, &db.password);
    out.code(0).stdout_has("hello");
    let out = p.run_env(&["audit", "verify"], &env);
    hides(&out, &db.password);
    out.code(0);

    // The record is in PostgreSQL, not in a SQLite file beside the plan.
    assert_eq!(
        pg.superuser(&db.name, "SELECT release_version, outcome FROM deployments"),
        "1.0.0|succeeded"
    );
    assert_eq!(
        pg.superuser(&db.name, "SELECT count(*) FROM env_locks"),
        "0"
    );
    assert!(!p.path().join(".stagegate/state.db").exists());
    common::assert_not_stored(&p, &[&db.password]);

    // The record is read even when the plan no longer validates.
    p.write("stagegate.yml", "project: shop\nstages: 12\n");
    let out = p.run_env(&["history"], &env);
    hides(&out, &db.password);
    out.code(0)
        .stdout_has("1.0.0")
        .stderr_has("reading the record in the PostgreSQL store");
}

/// `state.url` in the plan selects PostgreSQL; its password comes from PGPASSWORD.
#[test]
fn the_plans_state_url_selects_postgres() {
    let pg = Postgres::start();
    let db = pg.database("plan_url");
    let plan = PLAN.replace(
        "environments:",
        &format!(
            "state: {{ url: \"postgresql://{}@127.0.0.1:{}/{}\" }}\nenvironments:",
            db.role, pg.port, db.name
        ),
    );
    let p = Project::new(&plan);
    let env = [("PGPASSWORD", db.password.as_str())];
    let out = p.run_env(
        &[
            "deploy",
            "staging",
            "--release-version",
            "2.0.0",
            "--release-sha",
            "abc123",
        ],
        &env,
    );
    hides(&out, &db.password);
    out.code(0);
    p.run_env(&["history"], &env).code(0).stdout_has("2.0.0");
    assert_eq!(
        pg.superuser(&db.name, "SELECT release_version FROM deployments"),
        "2.0.0"
    );
}

/// A connection that fails says why and what to do, and never shows the password.
#[test]
fn connection_failures_say_what_to_do_without_the_password() {
    let pg = Postgres::start();
    let db = pg.database("failing");
    let p = Project::new(PLAN);

    let wrong = db.url.replace(&db.password, "not-the-password-42");
    let out = p.run_env(&["history"], &[("STAGEGATE_STATE", wrong.as_str())]);
    hides(&out, "not-the-password-42");
    hides(&out, &db.password);
    out.code(1)
        .stderr_has("check the user and password")
        .stderr_has(":***@");

    let gone = format!(
        "postgresql://{}:{}@127.0.0.1:{}/{}",
        db.role,
        db.password,
        pg::free_port(),
        db.name
    );
    let out = p.run_env(
        &["deploy", "staging"],
        &[("STAGEGATE_STATE", gone.as_str())],
    );
    hides(&out, &db.password);
    out.code(1).stderr_has("start the server");

    let missing = format!(
        "postgresql://{}:{}@127.0.0.1:{}/no_such_db",
        db.role, db.password, pg.port
    );
    let out = p.run_env(
        &["status", "staging"],
        &[("STAGEGATE_STATE", missing.as_str())],
    );
    hides(&out, &db.password);
    out.code(1)
        .stderr_has("does not exist")
        .stderr_has("createdb");
}

/// `state.url` must be a PostgreSQL URL, not beside `state.path`; a password written in
/// it is warned about and not quoted.
#[test]
fn state_url_is_validated() {
    let with = |state: &str| {
        Project::new(&PLAN.replace("environments:", &format!("state: {state}\nenvironments:")))
    };
    let p = with("{ url: /var/lib/state.db }");
    p.run(&["validate"])
        .code(2)
        .stderr_has("`state.url` must be a PostgreSQL URL");
    let p = with("{ path: s.db, url: \"postgresql://a@b/c\" }");
    p.run(&["validate"])
        .code(2)
        .stderr_has("`state` has both `path` and `url`");
    let p = with("{ url: \"postgresql://app:hunter2-secret@db/c\" }");
    let out = p.run(&["validate"]);
    out.code(0)
        .stderr_has("holds a password")
        .stderr_has("stagegate.yml:2");
    hides(&out, "hunter2-secret");
}

/// Two `stagegate deploy` processes on one PostgreSQL store: while the first runs, the
/// second is refused (exit 6) and told who holds the lock; `unlock` will not break a run
/// that is still going.
#[test]
fn a_second_deploy_is_locked_out_while_the_first_runs() {
    let pg = Postgres::start();
    let db = pg.database("two_deploys");
    let p = Project::new(&PLAN.replace(
        "run: echo hello from the deploy",
        "run: touch started; while [ ! -e go-on ]; do sleep 0.1; done",
    ));
    let first = p
        .cmd(&[
            "deploy",
            "staging",
            "--release-version",
            "1",
            "--release-sha",
            "a",
        ])
        .env("STAGEGATE_STATE", &db.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("stagegate starts");
    p.wait_for("started", std::time::Duration::from_secs(60));

    let env = [("STAGEGATE_STATE", db.url.as_str())];
    let out = p.run_env(
        &[
            "deploy",
            "staging",
            "--release-version",
            "2",
            "--release-sha",
            "b",
        ],
        &env,
    );
    hides(&out, &db.password);
    out.code(6).stderr_has("environment `staging` is locked by");
    p.run_env(&["unlock", "staging"], &env)
        .code(6)
        .stderr_has("still going");

    p.write("go-on", "");
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.superuser(&db.name, "SELECT count(*) FROM env_locks"),
        "0"
    );
}

/// A lock held from another machine cannot be checked from here: `unlock` names the host and
/// asks for `--force --reason`, which breaks it and records that in the audit log.
#[test]
fn a_lock_from_another_host_needs_force() {
    let pg = Postgres::start();
    let db = pg.database("other_host");
    let p = Project::new(PLAN);
    let env = [("STAGEGATE_STATE", db.url.as_str())];
    p.run_env(&["history"], &env).code(0); // creates the schema
    pg.superuser(
        &db.name,
        "INSERT INTO env_locks (environment, holder, pid, host, acquired_at) \
         VALUES ('staging', 'bob@ci-runner-7', 4242, 'ci-runner-7', 1)",
    );
    let out = p.run_env(
        &[
            "deploy",
            "staging",
            "--release-version",
            "1",
            "--release-sha",
            "a",
        ],
        &env,
    );
    out.code(6).stderr_has("bob@ci-runner-7");
    p.run_env(&["unlock", "staging"], &env)
        .code(6)
        .stderr_has("on another host, ci-runner-7");
    p.run_env(
        &[
            "unlock",
            "staging",
            "--force",
            "--reason",
            "runner 7 was recycled",
        ],
        &env,
    )
    .code(0)
    .stdout_has("unlocked staging");
    p.run_env(&["audit", "verify"], &env).code(0);
    assert_eq!(
        pg.superuser(
            &db.name,
            "SELECT kind FROM audit_log ORDER BY seq DESC LIMIT 1"
        ),
        "lock_broken"
    );
}

/// A lock from another machine carries a lease, renewed by PostgreSQL's clock. While it is
/// fresh the holder looks alive: `unlock` needs `--force`. Once it has not been renewed for
/// two leases the holder is gone: `deploy` says so and what to do, `status` shows it, and
/// `unlock` clears it without `--force`, recorded in the audit log.
#[test]
fn a_remote_lock_whose_lease_ran_out_is_gone() {
    let pg = Postgres::start();
    let db = pg.database("lease_out");
    let p = Project::new(PLAN);
    let env = [("STAGEGATE_STATE", db.url.as_str())];
    p.run_env(&["history"], &env).code(0); // creates the schema
    let lock = |ms_ago: i64| {
        pg.superuser(
            &db.name,
            &format!(
                "DELETE FROM env_locks; \
                 INSERT INTO env_locks (environment, holder, pid, host, acquired_at, token, lease_ms, lease_until) \
                 VALUES ('staging', 'bob@ci-runner-7', 4242, 'ci-runner-7', 1, 'theirs', 60000, \
                 (extract(epoch from clock_timestamp()) * 1000)::bigint + 60000 - {ms_ago})"
            ),
        )
    };
    let deploy = [
        "deploy",
        "staging",
        "--release-version",
        "1",
        "--release-sha",
        "a",
    ];

    // Renewed 5 s ago: alive.
    lock(5_000);
    p.run_env(&deploy, &env)
        .code(6)
        .stderr_has("is locked by bob@ci-runner-7")
        .stderr_has("--wait");
    p.run_env(&["status", "staging"], &env)
        .code(0)
        .stdout_has("on ci-runner-7, lease renewed 5.");
    p.run_env(&["unlock", "staging"], &env)
        .code(6)
        .stderr_has("its lease was renewed 5.")
        .stderr_has("looks alive")
        .stderr_has("--force");

    // Not renewed for 3 minutes (a lease is 1 minute): gone.
    lock(180_000);
    p.run_env(&deploy, &env)
        .code(6)
        .stderr_has("but that run is gone: it has not renewed its lease for 3m0")
        .stderr_has("check on ci-runner-7");
    p.run_env(&["status", "staging"], &env)
        .code(0)
        .stdout_has("that run is gone, its lease not renewed for 3m0");
    p.run_env(&["unlock", "staging"], &env)
        .code(0)
        .stdout_has("unlocked staging")
        .stdout_has("its lease had not been renewed for 3m0");
    assert_eq!(
        pg.superuser(
            &db.name,
            "SELECT kind FROM audit_log ORDER BY seq DESC LIMIT 1"
        ),
        "lock_broken"
    );
    p.run_env(&deploy, &env).code(0);
    p.run_env(&["audit", "verify"], &env).code(0);
}

/// A deploy marks runs of its environment that were left `running` as abandoned (it holds the
/// lock, so their processes are gone), but not a check running on another machine: a check
/// takes no lock, and from here nothing tells whether it still goes.
#[test]
fn a_check_on_another_machine_is_not_reaped() {
    let pg = Postgres::start();
    let db = pg.database("remote_check");
    let p = Project::new(PLAN);
    let env = [("STAGEGATE_STATE", db.url.as_str())];
    p.run_env(&["history"], &env).code(0); // creates the schema
    pg.superuser(
        &db.name,
        "INSERT INTO deployments (project, environment, kind, release_version, release_sha, \
         plan_hash, actor, pid, host, started_at) VALUES \
         ('shop', 'staging', 'check', '1', 'a', 'h', 'bob', 4242, 'ci-runner-7', 1), \
         ('shop', 'staging', 'deploy', '1', 'a', 'h', 'bob', 4243, 'ci-runner-7', 2)",
    );
    p.run_env(
        &[
            "deploy",
            "staging",
            "--release-version",
            "2",
            "--release-sha",
            "b",
        ],
        &env,
    )
    .code(0)
    .stderr_has("was left unfinished");
    assert_eq!(
        pg.superuser(
            &db.name,
            "SELECT kind || ' ' || outcome FROM deployments WHERE host = 'ci-runner-7' ORDER BY id"
        ),
        "check running\ndeploy abandoned"
    );
}

/// Five stagegate processes deploy one environment of one PostgreSQL store at once, each
/// queueing (`--wait`) behind the others: never do two of them hold the lock, so their
/// steps never overlap (each writes `start` and `end` lines around a sleep of more than twice
/// its 1 s lease), and the lease in the row is renewed all along, by PostgreSQL's clock.
#[test]
fn concurrent_processes_on_one_postgres_never_both_hold_the_lock() {
    let pg = Postgres::start();
    let db = pg.database("five_at_once");
    let p = Project::new(&PLAN.replace(
        "run: echo hello from the deploy",
        "run: echo \"start ${{ release.version }}\" >> steps.log; sleep 2.5; echo \"end ${{ release.version }}\" >> steps.log",
    ));
    p.run_env(&["history"], &[("STAGEGATE_STATE", db.url.as_str())])
        .code(0);
    let children: Vec<_> = (1..=5)
        .map(|n| {
            p.cmd(&[
                "deploy",
                "staging",
                "--wait",
                "--wait-timeout",
                "5m",
                "--release-version",
                &n.to_string(),
                "--release-sha",
                "a",
            ])
            .env("STAGEGATE_STATE", &db.url)
            .env("STAGEGATE_LOCK_LEASE", "1s")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("stagegate starts")
        })
        .collect();
    // While they run, the row's lease never runs out (a renewal every third of a second).
    let mut lowest = i64::MAX;
    let mut reads = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let left = pg.superuser(
            &db.name,
            "SELECT lease_until - (extract(epoch from clock_timestamp()) * 1000)::bigint FROM env_locks",
        );
        if let Ok(ms) = left.trim().parse::<i64>() {
            lowest = lowest.min(ms);
            reads += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(reads > 5, "the lock row was seen {reads} times");
    // Without renewals it would run out 1.5 s into each 2.5 s step.
    assert!(
        lowest > 0,
        "the lease ran out under a live run ({lowest} ms left)"
    );

    let log = p.read("steps.log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 10, "{log}");
    for pair in lines.chunks(2) {
        let (start, end) = (pair[0], pair[1]);
        assert!(
            start.starts_with("start ") && end == start.replacen("start", "end", 1),
            "two runs overlapped:\n{log}"
        );
    }
    let mut versions: Vec<&str> = lines.iter().step_by(2).map(|l| &l[6..]).collect();
    versions.sort_unstable();
    assert_eq!(versions, ["1", "2", "3", "4", "5"]);
    assert_eq!(
        pg.superuser(&db.name, "SELECT count(*) FROM env_locks"),
        "0"
    );
}

/// A password written in `state.url` appears in no report, event file, command output or
/// file under `.stagegate`.
#[test]
fn a_password_in_the_plans_url_is_nowhere() {
    let pg = Postgres::start();
    let db = pg.database("nowhere");
    let p = Project::new(&PLAN.replace(
        "environments:",
        &format!("state: {{ url: \"{}\" }}\nenvironments:", db.url),
    ));
    let out = p.run(&common::with_reports(&[
        "deploy",
        "staging",
        "--release-version",
        "1",
        "--release-sha",
        "a",
    ]));
    hides(&out, &db.password);
    out.code(0).stderr_has("holds a password");
    common::assert_nowhere(&p, &[&db.password], "staging");
}

/// A promotion through a PostgreSQL store: the request, two approvers (each its own
/// process, as from two machines), the deploy, and the approvals in the table and the
/// audit log there.
#[test]
fn a_promotion_is_approved_and_deployed_through_postgres() {
    let pg = Postgres::start();
    let db = pg.database("cli_promotion");
    let p = Project::new(
        r#"project: shop
roles:
  security: [alice]
  devops: [bob]
environments:
  staging: {}
  production:
    promote_from: staging
    approvals: { required: 2, from: [security, devops], distinct_roles: true }
stages:
  deploy:
    - id: hello
      run: echo deploying ${{ release.version }}
"#,
    );
    let env = |who: &'static str| {
        [
            ("STAGEGATE_STATE", db.url.clone()),
            ("STAGEGATE_ACTOR", who.to_string()),
        ]
    };
    let run = |who: &'static str, args: &[&str]| {
        let e = env(who);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = p.run_env(args, &e);
        hides(&out, &db.password);
        out
    };
    run("ci", &["deploy", "staging", "--release-version", "2.1.0"]).code(0);
    // No service ran in staging: there is no artifact, so nothing can be promoted.
    run("ci", &["promote", "staging", "production"])
        .code(9)
        .stderr_has("deployed no service");
    assert_eq!(
        pg.superuser(
            &db.name,
            "SELECT count(*) FROM deployments WHERE environment = 'production'"
        ),
        "0"
    );
    // A direct deploy of production is refused too.
    run(
        "ci",
        &["deploy", "production", "--release-version", "2.1.0"],
    )
    .code(9)
    .stderr_has("takes releases only by promotion");

    // Sign-offs with no promotion: approvals in PostgreSQL.
    p.write(
        "stagegate.yml",
        r#"project: shop
roles:
  security: [alice]
  devops: [bob]
environments:
  production:
    approvals: { required: 2, from: [security, devops], distinct_roles: true }
stages:
  deploy:
    - id: hello
      run: echo deploying ${{ release.version }}
"#,
    );
    run(
        "ci",
        &["deploy", "production", "--release-version", "2.1.0"],
    )
    .code(8);
    run("ci", &["approve", "production"])
        .code(9)
        .stderr_has("cannot approve it");
    run("alice", &["approve", "production", "--comment", "ok"]).code(0);
    run("bob", &["approve", "production"])
        .code(0)
        .stdout_has("(2 of 2)");
    run(
        "ci",
        &["deploy", "production", "--release-version", "2.1.0"],
    )
    .code(0)
    .stderr_has("approved by alice (security), bob (devops)");
    assert_eq!(
        pg.superuser(
            &db.name,
            "SELECT string_agg(actor || ':' || coalesce(role, '-') || ':' || verdict, ',' ORDER BY id) FROM approvals"
        ),
        "alice:security:approved,bob:devops:approved"
    );
    assert_eq!(
        pg.superuser(
            &db.name,
            "SELECT outcome FROM deployments WHERE kind = 'request'"
        ),
        "approved"
    );
    run("ci", &["audit", "verify"])
        .code(0)
        .stdout_has("2 approvals");
}
