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
