//! Migrate steps in reports: the backup a migration took (kind, size, sha256, where), and
//! for the rollback's `down` and restore steps what they did, in a sentence.

use stagegate_engine::event::StepResult;
use stagegate_engine::migrate::MigrationRecord;

/// The migration record of a step, `None` for steps that are not a migration's.
pub fn record(r: &StepResult) -> Option<&MigrationRecord> {
    r.details.migrate()
}

/// [`lines`] of a step's record, without what its error says already (a failed rollback
/// step's sentence is its error).
pub fn step_lines(r: &StepResult) -> Vec<String> {
    record(r)
        .map(|m| lines(m, r.error.as_deref()))
        .unwrap_or_default()
}

/// Lines that describe a migration step: its backup, then what a rollback step did (unless
/// `error`, shown already, says it).
pub fn lines(m: &MigrationRecord, error: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if m.action == "up"
        && let Some(b) = &m.backup
    {
        let how = if b.kind == "postgres" {
            "pg_dump -Fc"
        } else {
            "backup command"
        };
        out.push(format!(
            "backup ({how}): {} bytes, sha256 {}, in {}",
            b.bytes, b.sha256, b.path
        ));
    }
    if let Some(s) = m.statement.as_ref().filter(|s| Some(s.as_str()) != error) {
        out.push(s.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagegate_engine::migrate::BackupRecord;

    #[test]
    fn the_backup_and_what_a_rollback_step_did() {
        let backup = BackupRecord {
            kind: "postgres".into(),
            path: "backups/3/migrate.dump".into(),
            bytes: 2048,
            sha256: "ab12".into(),
            taken_at: 0,
            duration_ms: 5,
        };
        let up = MigrationRecord {
            action: "up".into(),
            backup: Some(backup.clone()),
            up: "failed".into(),
            ..Default::default()
        };
        assert_eq!(
            lines(&up, None),
            ["backup (pg_dump -Fc): 2048 bytes, sha256 ab12, in backups/3/migrate.dump"]
        );
        let restore = MigrationRecord {
            action: "restore".into(),
            backup: Some(backup),
            up: "failed".into(),
            statement: Some("restored the backup".into()),
            ..Default::default()
        };
        assert_eq!(lines(&restore, None), ["restored the backup"]);
        assert!(lines(&restore, Some("restored the backup")).is_empty());
    }
}
