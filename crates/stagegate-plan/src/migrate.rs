//! `migrate:` steps: a database migration with a backup first, a `down` command that the
//! rollback runs, and a restore from the backup when `down` fails or is absent.
//!
//! ```yaml
//! - id: migrate
//!   env: { DATABASE_URL: "${{ secrets.DATABASE_URL }}" }
//!   migrate:
//!     backup:
//!       postgres: "${{ secrets.DATABASE_URL }}"   # pg_dump -Fc; or `command: ./backup.sh`
//!     up: alembic upgrade head
//!     down: alembic downgrade 0041
//!     restore: on_down_failure                   # never (default) | on_down_failure | always
//! ```
//!
//! `up`, `down` and a backup's `command` and `restore_command` are shell commands, run like a
//! `run` step's (`sh -c`, the step's `env`, `cwd` and `timeout`, templates passed through
//! variables). The engine takes the backup, runs `up`, and keeps what undoes it.

use marked_yaml::types::MarkedMappingNode;

use crate::build::{first_line, template_field};
use crate::conninfo::ConnInfo;
use crate::diagnostic::{Diagnostic, Span};
use crate::model::StepKind;
use crate::template::{Expr, Part, Template};
use crate::yaml::{Cx, Spanned};

const MIGRATE_KEYS: &[&str] = &["backup", "up", "down", "restore"];
const BACKUP_KEYS: &[&str] = &["postgres", "command", "restore_command"];
const RESTORE_POLICIES: &[&str] = &["never", "on_down_failure", "always"];

/// A `migrate` step.
#[derive(Debug, Clone)]
pub struct MigrateSpec {
    pub span: Span,
    /// Taken before `up` runs; none: the migration has no backup (and cannot be restored).
    pub backup: Option<BackupSpec>,
    /// The migration.
    pub up: Spanned<Template>,
    /// Undoes `up`; run by the rollback, also after an `up` that failed partway.
    pub down: Option<Spanned<Template>>,
    pub restore: RestorePolicy,
}

/// How the backup is taken (and restored).
#[derive(Debug, Clone)]
pub enum BackupSpec {
    /// `pg_dump -Fc` of the database at this connection string (a URL or `key=value`s);
    /// restored with `pg_restore --clean --if-exists` in one transaction.
    Postgres(Spanned<Template>),
    /// A command that writes the backup to the file `$STAGEGATE_BACKUP`, and the command
    /// that restores it from there.
    Command {
        command: Spanned<Template>,
        restore_command: Option<Spanned<Template>>,
    },
}

impl BackupSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            BackupSpec::Postgres(_) => "postgres",
            BackupSpec::Command { .. } => "command",
        }
    }
}

/// When the rollback restores the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestorePolicy {
    /// Never: only `down` undoes the migration.
    #[default]
    Never,
    /// When `down` fails, or there is none.
    OnDownFailure,
    /// Always, instead of `down`.
    Always,
}

impl RestorePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestorePolicy::Never => "never",
            RestorePolicy::OnDownFailure => "on_down_failure",
            RestorePolicy::Always => "always",
        }
    }
}

impl MigrateSpec {
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        let mut out = vec![&self.up];
        out.extend(self.down.iter());
        match &self.backup {
            Some(BackupSpec::Postgres(url)) => out.push(url),
            Some(BackupSpec::Command {
                command,
                restore_command,
            }) => {
                out.push(command);
                out.extend(restore_command.iter());
            }
            None => {}
        }
        out
    }

    pub fn default_name(&self) -> String {
        format!("migrate: {}", first_line(&self.up.value, 50))
    }

    /// Lines for `stagegate plan`.
    pub fn describe(&self, render: &dyn Fn(&Template) -> String) -> Vec<String> {
        let commands = |label: &str, t: &Template| -> Vec<String> {
            let text = render(t);
            let mut lines = text.lines();
            let mut out = vec![format!("{label}: $ {}", lines.next().unwrap_or(""))];
            let pad = " ".repeat(label.len() + 2);
            out.extend(lines.map(|l| format!("{pad}$ {l}")));
            out
        };
        let mut lines = Vec::new();
        match &self.backup {
            Some(BackupSpec::Postgres(url)) => lines.push(format!(
                "backup: pg_dump -Fc of the database at {} (into the deployment's record)",
                written(&url.value)
            )),
            Some(BackupSpec::Command { command, .. }) => lines.extend(commands(
                "backup (writes $STAGEGATE_BACKUP)",
                &command.value,
            )),
            None => lines.push("backup: none".into()),
        }
        lines.extend(commands("up", &self.up.value));
        match &self.down {
            Some(d) => lines.extend(commands("down (on rollback)", &d.value)),
            None => lines.push("down: none".into()),
        }
        let how = match &self.backup {
            Some(BackupSpec::Postgres(_)) => "pg_restore --clean --if-exists, one transaction",
            _ => "restore_command",
        };
        lines.push(match self.restore {
            RestorePolicy::Never => "restore: never".into(),
            RestorePolicy::OnDownFailure => format!(
                "restore: from the backup when `down` {} ({how})",
                if self.down.is_some() {
                    "fails"
                } else {
                    "is absent, on every rollback"
                }
            ),
            RestorePolicy::Always => {
                format!("restore: from the backup on every rollback ({how})")
            }
        });
        if let Some(BackupSpec::Command {
            restore_command: Some(r),
            ..
        }) = &self.backup
            && self.restore != RestorePolicy::Never
        {
            lines.extend(commands("restore_command", &r.value));
        }
        lines
    }
}

/// A template as written: `${{ secrets.DATABASE_URL }}`, or a URL written in the plan with
/// its password left out.
fn written(t: &Template) -> String {
    if t.is_literal() {
        let text: String = t
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.as_str(),
                Part::Expr(_) => "",
            })
            .collect();
        return match ConnInfo::parse(&text) {
            Ok(c) if c.password().is_some() => {
                "a URL written in the plan (its password not shown)".into()
            }
            _ => format!("`{text}`"),
        };
    }
    let text: String = t
        .parts
        .iter()
        .map(|p| match p {
            Part::Lit(s) => s.clone(),
            Part::Expr(Expr::Ref(r, _)) => format!("${{{{ {r} }}}}"),
            Part::Expr(_) => "${{…}}".into(),
        })
        .collect();
    format!("`{text}`")
}

/// Reads a `migrate:` step.
pub(crate) fn read(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    common: &[&str],
) -> Option<StepKind> {
    let mut allowed: Vec<&str> = common.to_vec();
    allowed.push("migrate");
    cx.keys(m, what, &allowed);
    for (key, why) in [
        (
            "retries",
            "a migration that failed partway must not run again blindly: fix it, then deploy again",
        ),
        (
            "retry_delay",
            "a migration that failed partway must not run again blindly: fix it, then deploy again",
        ),
        (
            "rollback",
            "a migration's undo is its `down` command (and `restore`): move the command to `migrate.down`",
        ),
        (
            "continue_on_error",
            "a failed migration leaves the database between two schemas; the deploy cannot go on",
        ),
    ] {
        if let Some((k, _)) = m.iter().find(|(k, _)| k.as_str() == key) {
            cx.error_help(
                format!("`{key}` does not apply to a migrate step ({what})"),
                cx.key_span(k),
                format!("remove `{key}`: {why}"),
            );
        }
    }
    let node = m.get_node("migrate")?;
    let mwhat = format!("`migrate` in {what}");
    let span = cx.span(node);
    let mm = cx.mapping(node, &mwhat)?;
    cx.keys(mm, &mwhat, MIGRATE_KEYS);

    let up = template_field(cx, mm, "up", &mwhat);
    if up.is_none() && mm.get_node("up").is_none() {
        cx.error_help(
            format!("{mwhat} has no `up` command"),
            span.clone(),
            "add the command that migrates the database, e.g. `up: alembic upgrade head`",
        );
    }
    let down = template_field(cx, mm, "down", &mwhat);
    let backup = mm
        .get_node("backup")
        .and_then(|n| read_backup(cx, n, &mwhat));
    let restore = match cx.string(mm, "restore", &mwhat) {
        None => RestorePolicy::Never,
        Some(s) => match s.value.as_str() {
            "never" => RestorePolicy::Never,
            "on_down_failure" => RestorePolicy::OnDownFailure,
            "always" => RestorePolicy::Always,
            other => {
                let help = crate::diagnostic::did_you_mean(other, RESTORE_POLICIES.iter().copied())
                    .map(|x| format!("did you mean `{x}`?"))
                    .unwrap_or_else(|| {
                        "`never`: only `down` undoes the migration; `on_down_failure`: the backup is restored when `down` fails or is absent; `always`: the backup is restored instead of running `down`".into()
                    });
                cx.error_help(
                    format!("`restore` in {mwhat} must be never, on_down_failure or always, found `{other}`"),
                    s.span,
                    help,
                );
                RestorePolicy::Never
            }
        },
    };
    if restore != RestorePolicy::Never
        && let Some(n) = mm.get_node("restore")
    {
        let at = cx.span(n);
        match &backup {
            None if mm.get_node("backup").is_none() => cx.error_help(
                format!("{mwhat} restores a backup (`restore: {}`) but takes none", restore.as_str()),
                at,
                "add `backup: { postgres: \"${{ secrets.DATABASE_URL }}\" }` (or a backup `command`), or remove `restore`",
            ),
            Some(BackupSpec::Command {
                restore_command: None,
                ..
            }) => cx.error_help(
                format!(
                    "{mwhat} restores its backup (`restore: {}`) but its backup `command` has no `restore_command`",
                    restore.as_str()
                ),
                at,
                "add `restore_command:` under `backup`: it restores the file $STAGEGATE_BACKUP",
            ),
            _ => {}
        }
    }
    if restore == RestorePolicy::Always
        && let Some(d) = &down
    {
        cx.error_help(
            format!("{mwhat} has a `down` command that never runs: `restore: always` restores the backup instead"),
            d.span.clone(),
            "remove `down`, or write `restore: on_down_failure` to restore only when `down` fails",
        );
    }
    Some(StepKind::Migrate(Box::new(MigrateSpec {
        span,
        backup,
        up: up?,
        down,
        restore,
    })))
}

fn read_backup(cx: &mut Cx, n: &marked_yaml::types::Node, mwhat: &str) -> Option<BackupSpec> {
    let bwhat = format!("`backup` in {mwhat}");
    let span = cx.span(n);
    let bm = cx.mapping(n, &bwhat)?;
    cx.keys(bm, &bwhat, BACKUP_KEYS);
    let postgres = template_field(cx, bm, "postgres", &bwhat);
    let command = template_field(cx, bm, "command", &bwhat);
    let restore_command = template_field(cx, bm, "restore_command", &bwhat);
    match (postgres, command) {
        (Some(url), None) => {
            if let Some(r) = restore_command {
                cx.error_help(
                    format!("{bwhat} has a `restore_command`, but a `postgres` backup is restored with pg_restore"),
                    r.span,
                    "remove `restore_command`, or take the backup with a `command` of your own",
                );
            }
            check_literal_url(cx, &url);
            Some(BackupSpec::Postgres(url))
        }
        (None, Some(command)) => Some(BackupSpec::Command {
            command,
            restore_command,
        }),
        (Some(_), Some(c)) => {
            cx.error_help(
                format!("{bwhat} has both `postgres` and `command`"),
                c.span,
                "keep one: `postgres` runs pg_dump, `command` runs your own backup",
            );
            None
        }
        (None, None) => {
            if bm.get_node("postgres").is_none() && bm.get_node("command").is_none() {
                cx.error_help(
                    format!("{bwhat} says neither what to back up nor how"),
                    span,
                    "add `postgres: \"${{ secrets.DATABASE_URL }}\"` (pg_dump -Fc), or `command: ./backup.sh` that writes the file $STAGEGATE_BACKUP",
                );
            }
            None
        }
    }
}

/// A connection string written in the plan itself: it must read, and a password in it is
/// in the plan for anyone to read.
fn check_literal_url(cx: &mut Cx, url: &Spanned<Template>) {
    if !url.value.is_literal() {
        return;
    }
    let text: String = url
        .value
        .parts
        .iter()
        .map(|p| match p {
            Part::Lit(s) => s.as_str(),
            Part::Expr(_) => "",
        })
        .collect();
    match ConnInfo::parse(&text) {
        Err(e) => cx.error_help(
            format!("`postgres`: {e}"),
            url.span.clone(),
            "write a URL such as `postgresql://user@host:5432/db`, or `host=... dbname=...`",
        ),
        Ok(c) if c.password().is_some() => cx.diags.push(
            Diagnostic::warning(
                "the database URL holds a password in the plan file: whoever reads the plan reads it, and it is not masked",
                Some(url.span.clone()),
            )
            .with_help("declare a secret and write `postgres: \"${{ secrets.DATABASE_URL }}\"`"),
        ),
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// An error's message, `file:line:col` and help.
    type Found = (String, Option<String>, Option<String>);

    fn read(steps: &str) -> Result<MigrateSpec, Vec<Found>> {
        let text = format!(
            "project: demo\nsecrets: [DATABASE_URL]\nenvironments: {{ staging: {{}} }}\nstages:\n  s:\n{steps}"
        );
        match crate::load_str(Path::new("stagegate.yml"), &text) {
            Ok((plan, _)) => match &plan.stages[0].steps[0].kind {
                StepKind::Migrate(m) => Ok((**m).clone()),
                other => panic!("not a migrate step: {}", other.name()),
            },
            Err(d) => Err(d
                .errors()
                .map(|e| (e.message.clone(), e.location(), e.help.clone()))
                .collect()),
        }
    }

    #[test]
    fn a_migration_reads_with_its_backup_and_policy() {
        let m = read(
            "    - id: migrate\n      migrate:\n        backup: { postgres: \"${{ secrets.DATABASE_URL }}\" }\n        up: alembic upgrade head\n        down: alembic downgrade -1\n        restore: on_down_failure\n",
        )
        .unwrap();
        assert_eq!(m.restore, RestorePolicy::OnDownFailure);
        assert!(matches!(m.backup, Some(BackupSpec::Postgres(_))));
        assert_eq!(m.templates().len(), 3);
        let lines = m.describe(&|t| crate::build::sketch(t));
        assert_eq!(
            lines,
            [
                "backup: pg_dump -Fc of the database at `${{ secrets.DATABASE_URL }}` (into the deployment's record)",
                "up: $ alembic upgrade head",
                "down (on rollback): $ alembic downgrade -1",
                "restore: from the backup when `down` fails (pg_restore --clean --if-exists, one transaction)",
            ]
        );
        let m = read("    - migrate: { up: ./up }\n").unwrap();
        assert_eq!(m.restore, RestorePolicy::Never);
        assert!(m.backup.is_none() && m.down.is_none());
    }

    #[test]
    fn mistakes_are_errors_with_a_place_and_help() {
        let errors = read(
            "    - id: m\n      retries: 2\n      rollback: ./down\n      migrate:\n        up: ./up\n        restore: on_down_fail\n",
        )
        .unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|(m, ..)| m.as_str()).collect();
        assert!(
            messages.contains(&"`retries` does not apply to a migrate step (step 1 of stage `s`)"),
            "{errors:?}"
        );
        assert!(
            messages.contains(&"`rollback` does not apply to a migrate step (step 1 of stage `s`)"),
            "{errors:?}"
        );
        let restore = errors
            .iter()
            .find(|(m, ..)| m.starts_with("`restore` in `migrate`"))
            .unwrap();
        assert_eq!(restore.1.as_deref(), Some("stagegate.yml:11:18"));
        assert_eq!(
            restore.2.as_deref(),
            Some("did you mean `on_down_failure`?")
        );

        let errors =
            read("    - migrate:\n        restore: always\n        down: ./down\n").unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|(m, ..)| m.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.ends_with("has no `up` command")),
            "{errors:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.ends_with("restores a backup (`restore: always`) but takes none")),
            "{errors:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("has a `down` command that never runs")),
            "{errors:?}"
        );

        let errors = read(
            "    - migrate:\n        up: ./up\n        restore: always\n        backup: { command: ./backup.sh }\n",
        )
        .unwrap_err();
        assert!(
            errors[0]
                .0
                .ends_with("but its backup `command` has no `restore_command`"),
            "{errors:?}"
        );
        let errors = read(
            "    - migrate:\n        up: ./up\n        backup: { postgres: \"postgres://h/d?hunter2\" }\n",
        )
        .unwrap_err();
        assert_eq!(
            errors[0].0,
            "`postgres`: the connection URI has a query parameter without `=`"
        );
    }

    #[test]
    fn a_password_written_in_the_plan_is_a_warning_and_not_shown() {
        let text = "project: demo\nenvironments: { staging: {} }\nstages:\n  s:\n    - migrate:\n        up: ./up\n        backup: { postgres: \"postgresql://app:hunter2@db/app\" }\n";
        let (plan, warnings) = crate::load_str(Path::new("stagegate.yml"), text).unwrap();
        let w: Vec<&str> = warnings.warnings().map(|d| d.message.as_str()).collect();
        assert_eq!(
            w,
            [
                "the database URL holds a password in the plan file: whoever reads the plan reads it, and it is not masked"
            ]
        );
        let StepKind::Migrate(m) = &plan.stages[0].steps[0].kind else {
            panic!("a migrate step");
        };
        let lines = m.describe(&|t| crate::build::sketch(t)).join("\n");
        assert!(!lines.contains("hunter2"), "{lines}");
    }
}
