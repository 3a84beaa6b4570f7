//! PostgreSQL backups and restores with the client programs: `pg_dump -Fc` into a file,
//! and a restore that leaves the database as the backup has it.
//!
//! The connection travels in `PG*` environment variables ([`ConnInfo::env`]), never on a
//! command line, where every user of the machine could read it.
//!
//! `pg_restore --clean --if-exists` drops and recreates what the backup holds, but leaves
//! what it does not: a table the migration created would stay, and running the migration
//! again would fail on it. So a restore, in one transaction (`psql --single-transaction`):
//! 1. drops every schema (but `public`), extension (but `plpgsql`), table, view,
//!    materialized view, sequence, foreign table, type, domain, function, procedure and
//!    aggregate outside the system schemas, save what belongs to an extension or to
//!    another object (a serial column's sequence, a table's row type);
//! 2. runs the script `pg_restore --clean --if-exists` makes of the backup.
//!
//! Either all of it happens or none. Objects that the backup's table of contents does not
//! list (by catalog and oid) were created after the backup: they are named in the report.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use stagegate_plan::Scrubber;
use stagegate_plan::conninfo::ConnInfo;
use tokio_util::sync::CancellationToken;

use crate::process::{CommandResult, Exit, ProgramSpec, run_program, spawn_program, supervise};

/// Where a command runs and how long it may take.
pub struct PgCtx<'a> {
    pub conn: &'a ConnInfo,
    pub cwd: &'a Path,
    pub timeout: Option<Duration>,
    pub log: Option<&'a Path>,
    pub scrubber: &'a Scrubber,
    pub cancel: &'a CancellationToken,
}

impl PgCtx<'_> {
    fn program(&self, program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> ProgramSpec {
        let mut env: BTreeMap<String, String> = self
            .conn
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        env.entry("PGAPPNAME".into())
            .or_insert_with(|| "stagegate".into());
        ProgramSpec {
            program: program.into(),
            args: args.iter().map(|a| OsString::from(a.as_ref())).collect(),
            cwd: self.cwd.to_path_buf(),
            env,
            timeout: self.timeout,
            log: self.log.map(Path::to_path_buf),
        }
    }
}

/// The help for a client program that could not start.
pub const CLIENT_HELP: &str =
    "install the PostgreSQL client programs (Debian: apt-get install postgresql-client)";

/// `pg_dump -Fc` of the database into `file`.
pub async fn dump(cx: &PgCtx<'_>, file: &Path) -> CommandResult {
    let spec = cx.program(
        "pg_dump",
        &[&"--format=custom", &"--no-password", &"--file", &file],
    );
    run_program(&spec, cx.scrubber, cx.cancel).await
}

/// An object the restore dropped because the backup does not have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// `table`, `view`, `type`, `function`, `schema`, `extension`, ...
    pub kind: String,
    /// Schema-qualified, as PostgreSQL quotes it: `public.half_done`, `public.f(integer)`.
    pub name: String,
}

/// Why a restore did not happen. Nothing was changed unless said.
#[derive(Debug, Clone)]
pub struct RestoreError {
    pub message: String,
    pub exit_code: Option<i32>,
    pub tail: String,
}

/// Restores `file` (a `pg_dump -Fc` archive) into the database, in one transaction.
/// Returns the objects it dropped that the backup does not have.
pub async fn restore(cx: &PgCtx<'_>, file: &Path) -> Result<Vec<Dropped>, RestoreError> {
    let fail = |message: String, r: Option<&CommandResult>| RestoreError {
        message,
        exit_code: r.and_then(CommandResult::exit_code),
        tail: r.map(|r| r.tail.clone()).unwrap_or_default(),
    };
    let listing = capture(cx, "pg_restore", &[&"--list", &file])
        .await
        .map_err(|e| {
            fail(
                format!("cannot read the backup's table of contents: {e}"),
                None,
            )
        })?;
    let in_backup = table_of_contents(&listing);
    let rows = capture(
        cx,
        "psql",
        &[
            &"-X",
            &"-q",
            &"--no-password",
            &"-v",
            &"ON_ERROR_STOP=1",
            &"-At",
            &"-F",
            &"\t",
            &"-c",
            &"SET search_path = pg_catalog",
            &"-c",
            &OBJECTS_QUERY,
        ],
    )
    .await
    .map_err(|e| fail(format!("cannot list the database's objects: {e}"), None))?;
    let objects = parse_objects(&rows);
    let dropped: Vec<Dropped> = objects
        .iter()
        .filter(|o| !in_backup.contains(&(o.catalog, o.oid)))
        .map(|o| Dropped {
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
        .collect();

    // pg_restore writes the script to its stdout, which is psql's stdin.
    let script = cx.program(
        "pg_restore",
        &[&"--clean", &"--if-exists", &"--file=-", &file],
    );
    let mut make_script = spawn_program(&script, Stdio::null())
        .map_err(|e| fail(format!("could not start pg_restore: {e}"), None))?;
    let stdout = make_script
        .stdout
        .take()
        .ok_or_else(|| fail("pg_restore has no output".into(), None))?;
    let stdin: Stdio = stdout
        .try_into()
        .map_err(|e| fail(format!("cannot connect pg_restore to psql: {e}"), None))?;
    let mut script_errors = make_script.stderr.take();
    let errors = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(e) = script_errors.as_mut() {
            let _ = e.read_to_end(&mut buf).await;
        }
        buf
    });
    let drops = drop_block(&objects);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"-X",
        &"-q",
        &"--no-password",
        &"-o",
        &"/dev/null",
        &"-v",
        &"ON_ERROR_STOP=1",
        &"--single-transaction",
    ];
    if !objects.is_empty() {
        args.push(&"-c");
        args.push(&drops);
    }
    args.extend([&"-f" as &dyn AsRef<std::ffi::OsStr>, &"-"]);
    let apply = cx.program("psql", &args);
    let applied = match spawn_program(&apply, stdin) {
        Ok(child) => supervise(child, cx.timeout, cx.log, cx.scrubber, cx.cancel).await,
        Err(e) => CommandResult {
            exit: Exit::SpawnFailed(e),
            tail: String::new(),
        },
    };
    // psql has read the whole script, or stopped at an error (then pg_restore's next write
    // fails and it exits): either way it ends soon.
    let made = tokio::time::timeout(Duration::from_secs(10), make_script.wait()).await;
    let script_log = cx
        .scrubber
        .scrub(&String::from_utf8_lossy(&errors.await.unwrap_or_default()));
    if !script_log.trim().is_empty()
        && let Some(log) = cx.log
        && let Ok(mut f) = crate::process::append_private(log)
    {
        use std::io::Write;
        let _ = f.write_all(script_log.as_bytes());
    }
    if !applied.success() {
        return Err(fail(
            format!(
                "psql {}; the restore is one transaction, so it changed nothing",
                applied.describe(cx.timeout)
            ),
            Some(&applied),
        ));
    }
    match made {
        Ok(Ok(status)) if status.success() => Ok(dropped),
        Ok(status) => Err(RestoreError {
            message: format!(
                "pg_restore {} while making the restore script{}",
                crate::process::exit_of(status).describe(None),
                last_line(&script_log)
            ),
            exit_code: None,
            tail: script_log,
        }),
        Err(_) => Err(fail(
            "pg_restore did not finish after psql had".into(),
            None,
        )),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default()
}

/// Runs a client program and returns its stdout; errors carry the end of its stderr.
async fn capture(
    cx: &PgCtx<'_>,
    program: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
) -> Result<String, String> {
    let spec = cx.program(program, args);
    let child = spawn_program(&spec, Stdio::null())?;
    let out = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| format!("{program}: {e}"))?,
        () = sleep_or_forever(cx.timeout) => return Err(format!("{program} did not finish within the step's timeout")),
        () = cx.cancel.cancelled() => return Err(format!("{program} was cancelled")),
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = cx.scrubber.scrub(&String::from_utf8_lossy(&out.stderr));
    Err(format!(
        "{program} {}{}",
        crate::process::exit_of(Ok(out.status)).describe(None),
        last_line(&err)
    ))
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// (catalog oid, object oid) of every entry in `pg_restore --list`: lines such as
/// `215; 1259 16387 TABLE public accounts app`.
fn table_of_contents(listing: &str) -> HashSet<(u32, u32)> {
    listing
        .lines()
        .filter(|l| !l.trim_start().starts_with(';'))
        .filter_map(|l| {
            let (_, rest) = l.split_once(';')?;
            let mut words = rest.split_whitespace();
            let catalog = words.next()?.parse().ok()?;
            let oid = words.next()?.parse().ok()?;
            Some((catalog, oid))
        })
        .collect()
}

/// One object the restore drops first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Object {
    kind: String,
    catalog: u32,
    oid: u32,
    name: String,
}

const PG_NAMESPACE: u32 = 2615;
const PG_EXTENSION: u32 = 3079;
const PG_CLASS: u32 = 1259;
const PG_TYPE: u32 = 1247;
const PG_PROC: u32 = 1255;

/// Every object the restore drops, with its kind, catalog, oid and name (run with
/// `search_path = pg_catalog`, so names come schema-qualified).
const OBJECTS_QUERY: &str = "\
WITH sys AS (SELECT oid FROM pg_namespace WHERE nspname ~ '^pg_' OR nspname = 'information_schema'),
owned AS (SELECT classid, objid FROM pg_depend WHERE deptype IN ('e', 'i', 'a'))
SELECT 'schema', 2615, n.oid, quote_ident(n.nspname) FROM pg_namespace n
 WHERE n.oid NOT IN (SELECT oid FROM sys) AND n.nspname <> 'public'
   AND (2615, n.oid) NOT IN (SELECT classid, objid FROM owned)
UNION ALL
SELECT 'extension', 3079, x.oid, quote_ident(x.extname) FROM pg_extension x WHERE x.extname <> 'plpgsql'
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
       WHEN 'f' THEN 'foreign table' ELSE 'table' END, 1259, c.oid, c.oid::regclass::text
  FROM pg_class c
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relnamespace NOT IN (SELECT oid FROM sys)
   AND (1259, c.oid) NOT IN (SELECT classid, objid FROM owned)
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, 1247, t.oid, t.oid::regtype::text
  FROM pg_type t
 WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r', 'm') AND t.typnamespace NOT IN (SELECT oid FROM sys)
   AND (1247, t.oid) NOT IN (SELECT classid, objid FROM owned)
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       1255, p.oid, p.oid::regprocedure::text
  FROM pg_proc p
 WHERE p.pronamespace NOT IN (SELECT oid FROM sys)
   AND (1255, p.oid) NOT IN (SELECT classid, objid FROM owned)
ORDER BY 2, 3";

fn parse_objects(rows: &str) -> Vec<Object> {
    rows.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            Some(Object {
                kind: f.next()?.to_string(),
                catalog: f.next()?.parse().ok()?,
                oid: f.next()?.parse().ok()?,
                name: f.next()?.to_string(),
            })
        })
        .collect()
}

/// A `DO` block that drops `objects` by oid. It holds only numbers: names are looked up
/// inside, so no name from the database is ever pasted into SQL. An object an earlier drop
/// took with it (CASCADE) is skipped.
fn drop_block(objects: &[Object]) -> String {
    let oids = |catalog: u32| -> String {
        let list: Vec<String> = objects
            .iter()
            .filter(|o| o.catalog == catalog)
            .map(|o| o.oid.to_string())
            .collect();
        format!("ARRAY[{}]::oid[]", list.join(","))
    };
    format!(
        "DO $stagegate$
DECLARE o oid; k text;
BEGIN
  FOREACH o IN ARRAY {schemas} LOOP
    SELECT nspname INTO k FROM pg_catalog.pg_namespace WHERE oid = o;
    IF FOUND THEN EXECUTE format('DROP SCHEMA %I CASCADE', k); END IF;
  END LOOP;
  FOREACH o IN ARRAY {extensions} LOOP
    SELECT extname INTO k FROM pg_catalog.pg_extension WHERE oid = o;
    IF FOUND THEN EXECUTE format('DROP EXTENSION %I CASCADE', k); END IF;
  END LOOP;
  FOREACH o IN ARRAY {relations} LOOP
    SELECT CASE relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
           WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END INTO k FROM pg_catalog.pg_class WHERE oid = o;
    IF FOUND THEN EXECUTE format('DROP %s %s CASCADE', k, o::pg_catalog.regclass); END IF;
  END LOOP;
  FOREACH o IN ARRAY {types} LOOP
    SELECT CASE typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END INTO k FROM pg_catalog.pg_type WHERE oid = o;
    IF FOUND THEN EXECUTE format('DROP %s %s CASCADE', k, o::pg_catalog.regtype); END IF;
  END LOOP;
  FOREACH o IN ARRAY {routines} LOOP
    SELECT CASE prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END INTO k
      FROM pg_catalog.pg_proc WHERE oid = o;
    IF FOUND THEN EXECUTE format('DROP %s %s CASCADE', k, o::pg_catalog.regprocedure); END IF;
  END LOOP;
END $stagegate$",
        schemas = oids(PG_NAMESPACE),
        extensions = oids(PG_EXTENSION),
        relations = oids(PG_CLASS),
        types = oids(PG_TYPE),
        routines = oids(PG_PROC),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_contents_gives_catalog_and_oid() {
        let listing = ";\n; Archive created at 2026-01-01\n;     dbname: app\n;\n848; 1247 16402 TYPE public mood app\n215; 1259 16387 TABLE public accounts app\n3366; 0 0 SEQUENCE OWNED BY public accounts_id_seq app\n";
        let toc = table_of_contents(listing);
        assert!(toc.contains(&(1247, 16402)) && toc.contains(&(1259, 16387)));
        assert_eq!(toc.len(), 3);
    }

    #[test]
    fn the_drop_block_holds_only_numbers() {
        let objects = parse_objects(
            "schema\t2615\t16413\tnewschema\ntable\t1259\t16410\tpublic.\"we'ird; DROP\"\nfunction\t1255\t16405\tpublic.f(integer)\n",
        );
        assert_eq!(objects.len(), 3);
        let sql = drop_block(&objects);
        assert!(
            !sql.contains("we'ird") && !sql.contains("newschema"),
            "{sql}"
        );
        assert!(
            sql.contains("FOREACH o IN ARRAY ARRAY[16410]::oid[] LOOP"),
            "{sql}"
        );
        assert!(
            sql.contains("FOREACH o IN ARRAY ARRAY[]::oid[] LOOP"),
            "{sql}"
        );
    }
}
