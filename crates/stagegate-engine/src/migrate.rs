//! `migrate` steps: a backup first, then `up`; on rollback `down`, and a restore from the
//! backup when `down` fails or is absent (as the step's `restore` policy says).
//!
//! The run ([`run`]) renders every command before anything happens, takes the backup into
//! the deployment's record (`STATE/backups/DEPLOYMENT/STEP.dump`, the directory 0700, the
//! file 0600, its size and sha256 recorded), then runs `up` like a `run` step's command. An
//! `up` that fails has begun, so it is undone like one that passed: the rollback gets a
//! [`MigrationUndo`], or, when nothing can undo it (no `down`, `restore: never`), the run is
//! told in a sentence that says so ([`MigrateRun::not_undone`]).
//!
//! The rollback (the executor's, newest first like every undo) runs [`down`], then
//! [`restore`] if the policy calls for it. Each is a step of the rollback's record, whose
//! details say what it did, and [`statement`] puts what was and was not undone in words.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stagegate_plan::conninfo::ConnInfo;
use stagegate_plan::{BackupSpec, MigrateSpec, Plan, RestorePolicy, Scope, Scrubber, Step};
use tokio_util::sync::CancellationToken;

use crate::details::StepDetails;
use crate::event::{Millis, StepStatus, now_ms};
use crate::postgres::{CLIENT_HELP, PgCtx};
use crate::process::{CommandResult, CommandSpec, Exit, read_outputs, run_command};
use crate::step::{StepCtx, StepOutcome, command_cwd, command_env};

/// A migrate step's record: `{"migrate": {...}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrateDetails {
    pub migrate: MigrationRecord,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// Which part of the migration this step was: `up` (the run), `down` or `restore`
    /// (the rollback).
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRecord>,
    /// How `up` ended: `passed`, `failed`, `timed_out`, `cancelled`, or `not_run` (the
    /// backup failed, or a command could not be prepared).
    pub up: String,
    /// A restore: what it dropped that the backup does not have (`table public.x`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// A rollback step: what was and was not undone, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
}

/// The backup a migrate step took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// `postgres` (pg_dump -Fc) or `command`.
    pub kind: String,
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub taken_at: Millis,
    pub duration_ms: u64,
}

impl BackupRecord {
    /// `the backup taken at 2026-01-01T10:00:00Z (2048 bytes, sha256 ab12...)`.
    pub fn describe(&self) -> String {
        format!(
            "the backup taken at {} ({} bytes, sha256 {})",
            format_ms(self.taken_at),
            self.bytes,
            self.sha256
        )
    }
}

fn format_ms(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .and_then(|t| t.round(jiff::Unit::Second).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// How `up` ended, kept for the rollback.
#[derive(Debug, Clone)]
pub struct UpEnd {
    pub passed: bool,
    /// `succeeded`, `exited with code 3`, ...
    pub how: String,
}

/// What the rollback needs to undo a migration.
#[derive(Debug, Clone)]
pub struct MigrationUndo {
    pub stage: String,
    pub step_id: String,
    pub up: UpEnd,
    pub backup: Option<BackupRecord>,
}

/// A migrate step's run: its outcome, and what undoes it or why nothing can.
pub struct MigrateRun {
    pub outcome: StepOutcome,
    pub undo: Option<MigrationUndo>,
    /// `up` ran, and nothing can undo it: the sentence that says so.
    pub not_undone: Option<String>,
    /// Values to mask from now on (the database password).
    pub mask: Vec<String>,
}

/// The connection of a `postgres` backup, rendered and taken apart; its password joins
/// `mask`.
fn connection(
    spec: &MigrateSpec,
    scope: &Scope,
    mask: &mut Vec<String>,
) -> Result<Option<ConnInfo>, String> {
    let Some(BackupSpec::Postgres(url)) = &spec.backup else {
        return Ok(None);
    };
    let text = scope
        .render(&url.value)
        .map_err(|e| format!("backup `postgres`: {e}"))?;
    let conn = ConnInfo::parse(&text).map_err(|e| format!("backup `postgres`: {e}"))?;
    if let Some(p) = conn.password() {
        mask.push(p.to_string());
    }
    Ok(Some(conn))
}

/// A shell command of the step (`up`, `down`, a backup or restore command), rendered like a
/// `run` step's, with `extra` variables.
fn shell(
    t: &stagegate_plan::Template,
    scope: &Scope,
    step: &Step,
    deployment_id: i64,
    plan_dir: &Path,
    extra: &[(&str, String)],
    log: &Path,
) -> Result<CommandSpec, String> {
    let rendered = scope.render_shell(t)?;
    let mut env = command_env(
        scope,
        deployment_id,
        step.env.iter().map(|(k, t)| (k, &t.value)),
    )?;
    env.extend(rendered.env);
    for (k, v) in extra {
        env.insert((*k).to_string(), v.clone());
    }
    Ok(CommandSpec {
        script: rendered.script,
        cwd: command_cwd(plan_dir, scope, step.cwd.as_ref().map(|c| &c.value))?,
        env,
        timeout: step.timeout,
        log: Some(log.to_path_buf()),
    })
}

/// Where a step's backup goes: `STATE/backups/DEPLOYMENT/STEP.dump` (`.backup` for a
/// command's), its directories made 0700.
fn backup_path(
    state_dir: &Path,
    deployment_id: i64,
    step_id: &str,
    kind: &str,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let base = state_dir.join("backups");
    let dir = base.join(deployment_id.to_string());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // An existing directory keeps its mode: narrow it.
    for d in [&base, &dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    let ext = if kind == "postgres" { "dump" } else { "backup" };
    Ok(dir.join(format!("{step_id}.{ext}")))
}

/// Size and sha256 of a file, read off the async threads.
pub async fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok((bytes, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(std::io::Error::other)?
}

fn status_of(exit: &Exit) -> StepStatus {
    match exit {
        Exit::Code(0) => StepStatus::Passed,
        Exit::TimedOut => StepStatus::TimedOut,
        Exit::Cancelled => StepStatus::Cancelled,
        _ => StepStatus::Failed,
    }
}

fn details(record: MigrationRecord) -> StepDetails {
    StepDetails::Migrate(Box::new(MigrateDetails { migrate: record }))
}

/// Runs a migrate step: the backup, then `up`.
pub async fn run(spec: &MigrateSpec, ctx: &StepCtx<'_>, stage: &str) -> MigrateRun {
    let mut mask = Vec::new();
    let step = ctx.step;
    let failed = |error: String, mask: Vec<String>| MigrateRun {
        outcome: StepOutcome {
            attempts: 0,
            ..StepOutcome::failed(error)
        }
        .with_details(details(MigrationRecord {
            action: "up".into(),
            up: "not_run".into(),
            ..Default::default()
        })),
        undo: None,
        not_undone: None,
        mask,
    };
    // Everything is rendered before anything runs: a template without a value stops the
    // step before the backup.
    let conn = match connection(spec, ctx.scope, &mut mask) {
        Ok(c) => c,
        Err(e) => return failed(e, mask),
    };
    let mut scrubber = ctx.scrubber.clone();
    for m in &mask {
        scrubber.add(m);
    }
    let kind = spec.backup.as_ref().map(BackupSpec::kind);
    let path = match kind {
        Some(kind) => match backup_path(ctx.state_dir, ctx.deployment_id, &step.id, kind) {
            Ok(p) => Some(p),
            Err(e) => {
                return failed(
                    format!("cannot create the backup directory: {e}; the migration did not run"),
                    mask,
                );
            }
        },
        None => None,
    };
    let backup_var: Vec<(&str, String)> = path
        .iter()
        .map(|p| ("STAGEGATE_BACKUP", p.display().to_string()))
        .collect();
    let outputs_file = ctx.log.with_extension("outputs");
    let mut up_extra = backup_var.clone();
    up_extra.push(("STAGEGATE_OUTPUT", outputs_file.display().to_string()));
    let up = match shell(
        &spec.up.value,
        ctx.scope,
        step,
        ctx.deployment_id,
        &ctx.plan.dir,
        &up_extra,
        &ctx.log,
    ) {
        Ok(c) => c,
        Err(e) => return failed(format!("up: {e}"), mask),
    };
    let backup_command = match &spec.backup {
        Some(BackupSpec::Command { command, .. }) => match shell(
            &command.value,
            ctx.scope,
            step,
            ctx.deployment_id,
            &ctx.plan.dir,
            &backup_var,
            &ctx.log,
        ) {
            Ok(c) => Some(c),
            Err(e) => return failed(format!("backup `command`: {e}"), mask),
        },
        _ => None,
    };

    // The backup.
    let mut backup = None;
    if let (Some(path), Some(kind)) = (&path, kind) {
        let started = (now_ms(), std::time::Instant::now());
        // Created private before the backup writes into it (pg_dump keeps the mode).
        if let Err(e) = crate::process::write_private(path, b"") {
            return failed(
                format!("cannot create the backup file: {e}; the migration did not run"),
                mask,
            );
        }
        let res = match (&conn, &backup_command) {
            (Some(conn), _) => {
                let cwd = match ctx.command_cwd() {
                    Ok(c) => c,
                    Err(e) => return failed(e, mask),
                };
                let pg = PgCtx {
                    conn,
                    cwd: &cwd,
                    timeout: step.timeout,
                    log: Some(&ctx.log),
                    scrubber: &scrubber,
                    cancel: ctx.cancel,
                };
                crate::postgres::dump(&pg, path).await
            }
            (None, Some(cmd)) => run_command(cmd, &scrubber, ctx.cancel).await,
            (None, None) => unreachable!("a backup is a postgres one or a command"),
        };
        let who = if kind == "postgres" {
            "pg_dump"
        } else {
            "the backup command"
        };
        if !res.success() {
            let _ = std::fs::remove_file(path);
            let mut error = format!(
                "the backup failed: {who} {}; the migration did not run",
                res.describe(step.timeout)
            );
            if matches!(res.exit, Exit::SpawnFailed(_)) && kind == "postgres" {
                error.push_str(&format!(" ({CLIENT_HELP})"));
            }
            return MigrateRun {
                outcome: StepOutcome {
                    status: status_of(&res.exit),
                    exit_code: res.exit_code(),
                    tail: res.tail,
                    ..StepOutcome::failed(error)
                }
                .with_details(details(MigrationRecord {
                    action: "up".into(),
                    up: "not_run".into(),
                    ..Default::default()
                })),
                undo: None,
                not_undone: None,
                mask,
            };
        }
        let digest = async {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            digest(path).await
        };
        // The backup command ran: a failure from here on is the backup's, after one attempt.
        let after_backup = |error: String, mask: Vec<String>| {
            let _ = std::fs::remove_file(path);
            let mut run = failed(error, mask);
            run.outcome.attempts = 1;
            run.outcome.tail = res.tail.clone();
            run
        };
        match digest.await {
            Ok((0, _)) => {
                return after_backup(
                    format!(
                        "the backup failed: {who} succeeded but wrote nothing to {}; the migration did not run",
                        path.display()
                    ),
                    mask,
                );
            }
            Ok((bytes, sha256)) => {
                backup = Some(BackupRecord {
                    kind: kind.to_string(),
                    path: path.display().to_string(),
                    bytes,
                    sha256,
                    taken_at: started.0,
                    duration_ms: started.1.elapsed().as_millis() as u64,
                });
            }
            Err(e) => {
                return after_backup(
                    format!(
                        "the backup failed: cannot read {}: {e}; the migration did not run",
                        path.display()
                    ),
                    mask,
                );
            }
        }
    }

    // The migration.
    let _ = crate::process::write_private(&outputs_file, b"");
    let res = run_command(&up, &scrubber, ctx.cancel).await;
    let outputs = read_outputs(&outputs_file);
    let _ = std::fs::remove_file(&outputs_file);
    let mut status = status_of(&res.exit);
    let mut error = (status != StepStatus::Passed).then(|| {
        format!(
            "the migration failed partway: `up` {}",
            res.describe(step.timeout)
        )
    });
    let mut outputs = match outputs {
        Ok(o) => o,
        Err(e) => {
            if status == StepStatus::Passed {
                status = StepStatus::Failed;
                error = Some(format!("the migration ran, but {e}"));
            }
            BTreeMap::new()
        }
    };
    if let Some(b) = &backup {
        outputs.insert("backup_path".into(), b.path.clone());
        outputs.insert("backup_bytes".into(), b.bytes.to_string());
        outputs.insert("backup_sha256".into(), b.sha256.clone());
    }
    let up_end = UpEnd {
        passed: res.success(),
        how: res.describe(step.timeout),
    };
    let undoable = (spec.down.is_some() && spec.restore != RestorePolicy::Always)
        || (spec.restore != RestorePolicy::Never && backup.is_some());
    let not_undone = (!undoable).then(|| {
        format!(
            "step `{}`: {}; not undone: no `down` command and `restore: {}`",
            step.id,
            migration_state(&up_end),
            spec.restore.as_str()
        )
    });
    MigrateRun {
        outcome: StepOutcome {
            status,
            exit_code: res.exit_code(),
            attempts: 1,
            tail: res.tail.clone(),
            error,
            outputs,
            secret_outputs: Vec::new(),
            details: details(MigrationRecord {
                action: "up".into(),
                backup: backup.clone(),
                up: status_of(&res.exit).as_str().into(),
                ..Default::default()
            }),
        },
        undo: undoable.then(|| MigrationUndo {
            stage: stage.to_string(),
            step_id: step.id.clone(),
            up: up_end,
            backup,
        }),
        not_undone,
        mask,
    }
}

/// `the migration succeeded` / `the migration failed partway (`up` exited with code 3)`.
pub fn migration_state(up: &UpEnd) -> String {
    if up.passed {
        "the migration succeeded".into()
    } else {
        format!("the migration failed partway (`up` {})", up.how)
    }
}

/// What a rollback step of a migration needs.
pub struct UndoCtx<'a> {
    pub plan: &'a Plan,
    pub step: &'a Step,
    pub spec: &'a MigrateSpec,
    pub scope: &'a Scope,
    pub scrubber: &'a Scrubber,
    pub deployment_id: i64,
    pub log: PathBuf,
    pub cancel: &'a CancellationToken,
}

/// Runs `down`, told how `up` ended (`STAGEGATE_MIGRATE_UP=succeeded|failed`) and where the
/// backup is (`STAGEGATE_BACKUP`).
pub async fn down(cx: &UndoCtx<'_>, undo: &MigrationUndo) -> Result<CommandResult, String> {
    let Some(t) = &cx.spec.down else {
        return Err("no `down` command".into());
    };
    let mut extra = vec![(
        "STAGEGATE_MIGRATE_UP",
        if undo.up.passed {
            "succeeded"
        } else {
            "failed"
        }
        .to_string(),
    )];
    if let Some(b) = &undo.backup {
        extra.push(("STAGEGATE_BACKUP", b.path.clone()));
    }
    let spec = shell(
        &t.value,
        cx.scope,
        cx.step,
        cx.deployment_id,
        &cx.plan.dir,
        &extra,
        &cx.log,
    )?;
    Ok(run_command(&spec, cx.scrubber, cx.cancel).await)
}

/// A restore that did not happen or failed.
#[derive(Debug, Clone)]
pub struct RestoreFailure {
    pub message: String,
    pub exit_code: Option<i32>,
    pub tail: String,
}

/// Restores the backup: checked against its recorded size and sha256 first, then
/// `pg_restore` in one transaction (see [`crate::postgres::restore`]) or the backup's
/// `restore_command`. Returns what a PostgreSQL restore dropped that the backup lacks.
pub async fn restore(
    cx: &UndoCtx<'_>,
    backup: &BackupRecord,
) -> Result<Vec<String>, RestoreFailure> {
    let fail = |message: String| RestoreFailure {
        message,
        exit_code: None,
        tail: String::new(),
    };
    let path = Path::new(&backup.path);
    match digest(path).await {
        Ok((bytes, sha)) if bytes == backup.bytes && sha == backup.sha256 => {}
        Ok((bytes, sha)) => {
            return Err(fail(format!(
                "the backup file {} changed since it was taken ({bytes} bytes, sha256 {sha}; recorded {} bytes, sha256 {}): not restored",
                backup.path, backup.bytes, backup.sha256
            )));
        }
        Err(e) => {
            return Err(fail(format!(
                "cannot read the backup file {}: {e}",
                backup.path
            )));
        }
    }
    match &cx.spec.backup {
        Some(BackupSpec::Postgres(_)) => {
            let mut mask = Vec::new();
            let conn = connection(cx.spec, cx.scope, &mut mask)
                .map_err(fail)?
                .ok_or_else(|| fail("no database to restore".into()))?;
            let cwd = command_cwd(
                &cx.plan.dir,
                cx.scope,
                cx.step.cwd.as_ref().map(|c| &c.value),
            )
            .map_err(fail)?;
            let pg = PgCtx {
                conn: &conn,
                cwd: &cwd,
                timeout: cx.step.timeout,
                log: Some(&cx.log),
                scrubber: cx.scrubber,
                cancel: cx.cancel,
            };
            crate::postgres::restore(&pg, path)
                .await
                .map(|dropped| {
                    dropped
                        .into_iter()
                        .map(|d| format!("{} {}", d.kind, d.name))
                        .collect()
                })
                .map_err(|e| RestoreFailure {
                    message: e.message,
                    exit_code: e.exit_code,
                    tail: e.tail,
                })
        }
        Some(BackupSpec::Command {
            restore_command: Some(t),
            ..
        }) => {
            let spec = shell(
                &t.value,
                cx.scope,
                cx.step,
                cx.deployment_id,
                &cx.plan.dir,
                &[("STAGEGATE_BACKUP", backup.path.clone())],
                &cx.log,
            )
            .map_err(fail)?;
            let res = run_command(&spec, cx.scrubber, cx.cancel).await;
            if res.success() {
                Ok(Vec::new())
            } else {
                Err(RestoreFailure {
                    message: format!(
                        "the restore command {}; the database may be partly restored",
                        res.describe(cx.step.timeout)
                    ),
                    exit_code: res.exit_code(),
                    tail: res.tail,
                })
            }
        }
        _ => Err(fail("the backup has no way to be restored".into())),
    }
}

/// `restored the backup taken at ... (N bytes, sha256 ...)`, and what it dropped.
pub fn restored(backup: &BackupRecord, dropped: &[String]) -> String {
    let mut s = format!("restored {}", backup.describe());
    if !dropped.is_empty() {
        s.push_str(&format!(
            "; dropped {} object{} the backup does not have: {}",
            dropped.len(),
            if dropped.len() == 1 { "" } else { "s" },
            dropped.join(", ")
        ));
    }
    s
}

/// The details of a rollback step of a migration.
pub fn undo_details(
    action: &str,
    undo: &MigrationUndo,
    dropped: Vec<String>,
    statement: Option<String>,
) -> StepDetails {
    details(MigrationRecord {
        action: action.into(),
        backup: undo.backup.clone(),
        up: if undo.up.passed { "passed" } else { "failed" }.into(),
        dropped,
        statement,
    })
}

/// What undoing a migration did, in one sentence: `step `migrate`: the migration failed
/// partway (...); `down` failed (exited with code 1); restored the backup taken at ...`.
pub fn statement(step_id: &str, up: &UpEnd, parts: &[String]) -> String {
    format!(
        "step `{step_id}`: {}; {}",
        migration_state(up),
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_say_what_was_and_was_not_undone() {
        let up = UpEnd {
            passed: false,
            how: "exited with code 3".into(),
        };
        let backup = BackupRecord {
            kind: "postgres".into(),
            path: "b.dump".into(),
            bytes: 2048,
            sha256: "ab".repeat(32),
            taken_at: 1_767_268_800_000,
            duration_ms: 40,
        };
        assert_eq!(
            statement(
                "migrate",
                &up,
                &[
                    "`down` failed (exited with code 1)".into(),
                    restored(&backup, &["table public.half_done".into()])
                ]
            ),
            format!(
                "step `migrate`: the migration failed partway (`up` exited with code 3); `down` failed (exited with code 1); restored the backup taken at 2026-01-01T12:00:00Z (2048 bytes, sha256 {}); dropped 1 object the backup does not have: table public.half_done",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn a_backup_directory_is_private_and_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("backups/7")).unwrap();
        std::fs::set_permissions(
            state.path().join("backups"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let p = backup_path(state.path(), 7, "migrate", "postgres").unwrap();
        assert!(p.ends_with("backups/7/migrate.dump"));
        for d in ["backups", "backups/7"] {
            let mode = std::fs::metadata(state.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
    }
}
