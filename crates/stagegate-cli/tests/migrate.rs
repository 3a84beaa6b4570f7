//! `migrate` steps against a real PostgreSQL (`tests/pg`): the backup (pg_dump -Fc, private,
//! its size and sha256 recorded), `up`, `down` on rollback, the restore when `down` fails or
//! is absent, what the report says was and was not undone, and the database URL nowhere.
//! Needs Debian's `postgresql` package; without it these tests fail and say so.

mod common;
mod pg;

use common::{Project, assert_nowhere, show_json, step, with_reports};
use pg::{Database, Postgres};

/// The schema before the migration: two accounts.
const SCHEMA: &str = "CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts VALUES (1, 'alice'), (2, 'bob');";

/// Migration 0002 and its down.
const UP: &str = "ALTER TABLE accounts ADD COLUMN email text;
CREATE TABLE invoices (id int PRIMARY KEY, account int REFERENCES accounts (id));
";
const DOWN: &str = "DROP TABLE invoices;
ALTER TABLE accounts DROP COLUMN email;
";
/// A migration that fails partway: psql runs each statement on its own, so the table and
/// the delete are committed before the error stops it (ON_ERROR_STOP, exit code 3).
const BROKEN_UP: &str = "CREATE TABLE half_done (x int);
DELETE FROM accounts WHERE name = 'bob';
SELECT no_such_function();
CREATE TABLE never (x int);
";

const PSQL: &str = "psql -X -q -v ON_ERROR_STOP=1";

/// A project whose `deploy` stage migrates the database with `migrate` (the YAML under
/// `migrate:`), then a `verify` stage whose step fails when `FAIL_VERIFY=yes`.
fn project(migrate: &str) -> Project {
    let plan = format!(
        r#"project: shop
secrets: [DATABASE_URL]
environments:
  staging: {{}}
stages:
  deploy:
    - id: migrate
      env: {{ DATABASE_URL: "${{{{ secrets.DATABASE_URL }}}}" }}
      migrate:
{migrate}
  verify:
    - id: smoke
      run: test "$FAIL_VERIFY" != yes
"#
    );
    let p = Project::new(&plan);
    p.write("migrations/0002_up.sql", UP)
        .write("migrations/0002_down.sql", DOWN)
        .write("migrations/0002_broken_up.sql", BROKEN_UP);
    p
}

/// `up:` running a migration file, `down:` likewise, with the backup of the database.
fn migrate_keys(up_file: &str, down_file: Option<&str>, restore: &str) -> String {
    let mut keys = format!(
        "        backup: {{ postgres: \"${{{{ secrets.DATABASE_URL }}}}\" }}\n        up: {PSQL} -f migrations/{up_file} \"$DATABASE_URL\"\n"
    );
    if let Some(d) = down_file {
        keys.push_str(&format!(
            "        down: {PSQL} -f migrations/{d} \"$DATABASE_URL\"\n"
        ));
    }
    keys.push_str(&format!("        restore: {restore}\n"));
    keys
}

/// Deploys with the database's URL in `.env.staging` (where `plan staging`, run by
/// `assert_nowhere`, finds it too).
fn deploy(p: &Project, db: &Database, fail_verify: bool) -> common::Out {
    p.write(".env.staging", &format!("DATABASE_URL={}\n", db.url));
    p.run_clean(
        &with_reports(&["deploy", "staging", "--release-version", "2.0.0"]),
        &[("FAIL_VERIFY", if fail_verify { "yes" } else { "no" })],
    )
}

/// The accounts' names, in order.
fn names(pg: &Postgres, db: &Database) -> String {
    pg.superuser(
        &db.name,
        "SELECT string_agg(name, ',' ORDER BY id) FROM accounts",
    )
}

/// Whether a relation exists in `public`.
fn exists(pg: &Postgres, db: &Database, relation: &str) -> bool {
    pg.superuser(
        &db.name,
        &format!("SELECT to_regclass('public.{relation}') IS NOT NULL"),
    ) == "t"
}

fn columns(pg: &Postgres, db: &Database, table: &str) -> String {
    pg.superuser(
        &db.name,
        &format!(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '{table}'"
        ),
    )
}

/// The run's summary, from `show --json`.
fn summary(p: &Project) -> String {
    show_json(p, "1")["deployment"]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The backup the migrate step recorded: checks the file is private, its size and sha256
/// those recorded; returns its record.
fn recorded_backup(p: &Project) -> serde_json::Value {
    use std::os::unix::fs::PermissionsExt;
    let show = show_json(p, "1");
    let backup = step(&show, "migrate")["details"]["migrate"]["backup"].clone();
    assert_eq!(backup["kind"], "postgres", "{show:#}");
    let path = std::path::PathBuf::from(backup["path"].as_str().unwrap());
    assert_eq!(
        path,
        p.path()
            .join(".stagegate/backups/1/migrate.dump")
            .canonicalize()
            .unwrap()
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(backup["bytes"], bytes.len() as u64);
    assert!(
        bytes.starts_with(b"PGDMP"),
        "a pg_dump custom-format archive"
    );
    let sha = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(backup["sha256"], sha.split_whitespace().next().unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the backup file is private");
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&p.path().join(".stagegate/backups")), 0o700);
    backup
}

fn setup() -> (Postgres, Database) {
    let pg = Postgres::start();
    let db = pg.database("shop");
    pg.as_owner(&db, SCHEMA);
    (pg, db)
}

#[test]
fn a_later_failure_runs_down_and_the_schema_is_back() {
    let (pg, db) = setup();
    let p = project(&migrate_keys(
        "0002_up.sql",
        Some("0002_down.sql"),
        "on_down_failure",
    ));

    // The migration passes; the smoke test after it fails: `down` undoes it.
    let o = deploy(&p, &db, true);
    o.code(4)
        .stderr_has("step `smoke` failed")
        .stderr_has("undo: migrate: psql")
        .stderr_has("step `migrate`: the migration succeeded; `down` ran and succeeded");
    assert!(!exists(&pg, &db, "invoices"), "{}", pg.log());
    assert_eq!(columns(&pg, &db, "accounts"), "id,name");
    assert_eq!(names(&pg, &db), "alice,bob");
    let backup = recorded_backup(&p);
    let show = show_json(&p, "1");
    let down = step(&show, "migrate.down");
    assert_eq!(down["phase"], "rollback");
    assert_eq!(down["status"], "passed");
    assert_eq!(down["kind"], "migrate-down");
    // No restore was needed: `down` worked.
    assert!(
        show["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["step_id"] != "migrate.restore")
    );
    assert!(
        summary(&p).contains("`down` ran and succeeded"),
        "{}",
        summary(&p)
    );
    // The reports name the backup with its size and sha256.
    let md = p.read("r.md");
    assert!(md.contains("### Migrations"), "{md}");
    assert!(
        md.contains(&format!(
            "{} bytes, sha256 {}",
            backup["bytes"],
            backup["sha256"].as_str().unwrap()
        )),
        "{md}"
    );
    assert_nowhere(&p, &[&db.url, &db.password], "staging");

    // Deployed again with the smoke test passing, the migration stays.
    let o = deploy(&p, &db, false);
    o.code(0);
    assert!(exists(&pg, &db, "invoices"));
    assert_eq!(columns(&pg, &db, "accounts"), "id,name,email");
}

#[test]
fn a_migration_that_fails_partway_without_down_is_restored_from_the_backup() {
    let (pg, db) = setup();
    let p = project(&migrate_keys("0002_broken_up.sql", None, "on_down_failure"));
    let o = deploy(&p, &db, false);
    o.code(4)
        .stderr_has("the migration failed partway: `up` exited with code 3")
        .stderr_has("no_such_function")
        .stderr_has("undo: migrate: psql");
    // Bob is back, and the table the migration made before it failed is gone.
    assert_eq!(names(&pg, &db), "alice,bob");
    assert!(!exists(&pg, &db, "half_done"));
    assert!(!exists(&pg, &db, "never"));
    let backup = recorded_backup(&p);
    let s = summary(&p);
    assert!(
        s.contains("step `migrate`: the migration failed partway (`up` exited with code 3); no `down` command; restored the backup taken at "),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "({} bytes, sha256 {}); dropped 1 object the backup does not have: table public.half_done",
            backup["bytes"],
            backup["sha256"].as_str().unwrap()
        )),
        "{s}"
    );
    let show = show_json(&p, "1");
    let up = step(&show, "migrate");
    assert_eq!(up["status"], "failed");
    assert_eq!(up["exit_code"], 3);
    assert_eq!(up["details"]["migrate"]["up"], "failed");
    let restore = step(&show, "migrate.restore");
    assert_eq!(restore["status"], "passed");
    assert_eq!(restore["kind"], "migrate-restore");
    assert_eq!(
        restore["details"]["migrate"]["dropped"],
        serde_json::json!(["table public.half_done"])
    );
    assert_nowhere(&p, &[&db.url, &db.password], "staging");
}

#[test]
fn down_that_fails_is_followed_by_the_restore_when_asked() {
    let (pg, db) = setup();
    // The broken migration never made `invoices`, so its down fails on DROP TABLE.
    let p = project(&migrate_keys(
        "0002_broken_up.sql",
        Some("0002_down.sql"),
        "on_down_failure",
    ));
    let o = deploy(&p, &db, false);
    o.code(4).stderr_has(
        "step `migrate`: the migration failed partway (`up` exited with code 3); `down` failed (it exited with code 3); restored the backup taken at",
    );
    assert_eq!(names(&pg, &db), "alice,bob");
    assert!(!exists(&pg, &db, "half_done"));
    let show = show_json(&p, "1");
    assert_eq!(step(&show, "migrate.down")["status"], "failed");
    assert_eq!(step(&show, "migrate.restore")["status"], "passed");
}

#[test]
fn with_restore_never_what_was_not_undone_is_said() {
    let (pg, db) = setup();
    // No down, no restore: the half-done migration stays, and the run says so (exit 3:
    // nothing was rolled back).
    let p = project(&migrate_keys("0002_broken_up.sql", None, "never"));
    let o = deploy(&p, &db, false);
    o.code(3)
        .stderr_has("nothing was rolled back")
        .stderr_has(
            "step `migrate`: the migration failed partway (`up` exited with code 3); not undone: no `down` command and `restore: never`",
        )
        .lacks("nothing had changed yet");
    assert_eq!(names(&pg, &db), "alice");
    assert!(exists(&pg, &db, "half_done"));
    assert!(
        summary(&p).contains("not undone: no `down` command and `restore: never`"),
        "{}",
        summary(&p)
    );
    assert_nowhere(&p, &[&db.url, &db.password], "staging");

    // A down that fails with `restore: never`: the rollback failed (exit 5).
    let (pg2, db2) = setup();
    let p = project(&migrate_keys(
        "0002_broken_up.sql",
        Some("0002_down.sql"),
        "never",
    ));
    deploy(&p, &db2, false)
        .code(5)
        .stderr_has("`down` failed (it exited with code 3); not restored (`restore: never`)");
    assert_eq!(names(&pg2, &db2), "alice");
}

#[test]
fn a_backup_that_fails_stops_the_migration_and_shows_no_password() {
    let (pg, db) = setup();
    let p = project(&migrate_keys("0002_up.sql", Some("0002_down.sql"), "never"));
    let wrong = Database {
        url: db.url.replace(&db.password, "not-the-password"),
        password: "not-the-password".into(),
        name: db.name.clone(),
        role: db.role.clone(),
    };
    let o = deploy(&p, &wrong, false);
    o.code(3)
        .stderr_has("the backup failed: pg_dump exited with code 1; the migration did not run")
        .stderr_has("password authentication failed");
    assert_eq!(columns(&pg, &db, "accounts"), "id,name");
    assert!(!p.path().join(".stagegate/backups/1/migrate.dump").exists());
    assert_nowhere(&p, &[&wrong.url, &wrong.password], "staging");
}

/// docs/migrations.md's first plan, as written, against the real database: a broken
/// migration is undone (its `down` fails, the backup is restored), the fixed one passes and
/// its check sees the new column.
#[test]
fn the_docs_example_runs() {
    let (pg, db) = setup();
    let plan = common::doc_plans("migrations.md")
        .into_iter()
        .next()
        .expect("docs/migrations.md shows a plan");
    let p = Project::new(&plan);
    p.write("migrations/0002_up.sql", BROKEN_UP)
        .write("migrations/0002_down.sql", DOWN);
    deploy(&p, &db, false)
        .code(4)
        .stderr_has("`down` failed (it exited with code 3); restored the backup taken at");
    assert_eq!(names(&pg, &db), "alice,bob");
    assert!(!exists(&pg, &db, "half_done"));

    p.write("migrations/0002_up.sql", UP);
    deploy(&p, &db, false).code(0);
    assert_eq!(columns(&pg, &db, "accounts"), "id,name,email");
    let show = show_json(&p, "2");
    assert_eq!(step(&show, "schema")["status"], "passed");
    assert!(p.path().join(".stagegate/backups/2/migrate.dump").is_file());
}

/// A plan whose "database" is a file: the backup and restore are commands of the plan's.
fn file_database(migrate: &str, on_failure: &str) -> Project {
    let p = Project::new(&format!(
        r#"project: files
on_failure: {on_failure}
environments:
  staging: {{}}
stages:
  deploy:
    - id: migrate
      migrate:
        backup:
          command: cp db.txt "$STAGEGATE_BACKUP"
          restore_command: cp "$STAGEGATE_BACKUP" db.txt
{migrate}
  verify:
    - id: smoke
      run: test "$FAIL_VERIFY" != yes
"#
    ));
    p.write("db.txt", "v1\n");
    p
}

#[test]
fn a_command_backup_is_restored_by_its_restore_command() {
    use std::os::unix::fs::PermissionsExt;
    let p = file_database(
        "        up: echo v2 >> db.txt && echo \"up saw $STAGEGATE_BACKUP\" && exit 1\n        restore: always\n",
        "rollback",
    );
    p.run(&["deploy", "staging"])
        .code(4)
        .stderr_has("the migration failed partway: `up` exited with code 1")
        .stderr_has("up saw ")
        .stderr_has("step `migrate`: the migration failed partway (`up` exited with code 1); restored the backup taken at");
    assert_eq!(p.read("db.txt"), "v1\n");
    let backup = p.path().join(".stagegate/backups/1/migrate.backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), "v1\n");
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let show = show_json(&p, "1");
    let b = &step(&show, "migrate")["details"]["migrate"]["backup"];
    assert_eq!(b["kind"], "command");
    assert_eq!(b["bytes"], 3);
    assert_eq!(step(&show, "migrate.restore")["status"], "passed");
}

#[test]
fn a_backup_command_that_writes_nothing_stops_the_migration() {
    let p = Project::new(
        "project: files\nenvironments: { staging: {} }\nstages:\n  s:\n    - id: migrate\n      migrate:\n        backup: { command: 'true' }\n        up: touch migrated\n",
    );
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("the backup failed: the backup command succeeded but wrote nothing to ")
        .stderr_has("the migration did not run");
    assert!(!p.path().join("migrated").exists());
    assert!(
        !p.path()
            .join(".stagegate/backups/1/migrate.backup")
            .exists()
    );
}

#[test]
fn with_on_failure_stop_the_migration_stays_and_the_backup_is_named() {
    let p = file_database(
        "        up: echo v2 >> db.txt\n        down: cp \"$STAGEGATE_BACKUP\" db.txt\n",
        "stop",
    );
    let o = p.run_env(&["deploy", "staging"], &[("FAIL_VERIFY", "yes")]);
    o.code(3).stderr_has(
        "step `migrate`: the migration succeeded; not undone (on_failure: stop); the backup taken at",
    );
    assert_eq!(p.read("db.txt"), "v1\nv2\n");
    assert!(
        summary(&p).contains("backups/1/migrate.backup"),
        "{}",
        summary(&p)
    );
}

#[test]
fn validate_plan_and_explain_describe_migrate_steps() {
    let p = Project::new(
        "project: shop\nsecrets: [DATABASE_URL]\nenvironments: { staging: {} }\nstages:\n  s:\n    - id: migrate\n      retries: 1\n      migrate:\n        up: ./up\n        restore: on_down_failure\n",
    );
    p.run_env(&["validate"], &[("NO_COLOR", "1")])
        .code(2)
        .stderr_has("error: `retries` does not apply to a migrate step (step 1 of stage `s`)")
        .stderr_has("--> stagegate.yml:7:7")
        .stderr_has(
            "help: remove `retries`: a migration that failed partway must not run again blindly",
        )
        .stderr_has("restores a backup (`restore: on_down_failure`) but takes none")
        .stderr_has("--> stagegate.yml:10:18");

    let p = project(&migrate_keys(
        "0002_up.sql",
        Some("0002_down.sql"),
        "on_down_failure",
    ));
    p.write(
        ".env.staging",
        "DATABASE_URL=postgresql://app:hunter2@db/app\n",
    );
    p.run(&["plan", "staging"])
        .code(0)
        .stdout_has("backup: pg_dump -Fc of the database at `${{ secrets.DATABASE_URL }}`")
        .stdout_has(
            "up: $ psql -X -q -v ON_ERROR_STOP=1 -f migrations/0002_up.sql \"$DATABASE_URL\"",
        )
        .stdout_has("restore: from the backup when `down` fails")
        .lacks("hunter2");
    p.run(&["explain", "steps.migrate"])
        .code(0)
        .stdout_has("restore: on_down_failure");
    p.run(&["explain", "migrate.restore"])
        .code(0)
        .stdout_has("`on_down_failure`, when `down` fails or there is none");
}
