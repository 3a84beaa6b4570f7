//! The reporters as [`EventSink`]s of a [`stagegate_engine::Session`]: the terminal, the
//! JSON Lines stream and the report files written when the run ends.

use std::io::Write;
use std::path::PathBuf;

use stagegate_engine::{Event, EventSink, Notice, SinkError};
use stagegate_store::LockInfo;

use crate::{JsonLinesReporter, RunSummary, TerminalReporter, format_time_ms};

/// One line about who holds a lock: `environment `staging` is locked by ... since ...`.
pub fn describe_lock(environment: &str, h: &LockInfo) -> String {
    format!(
        "environment `{environment}` is locked by {} (pid {} on {}{}) since {}",
        h.holder,
        h.pid,
        h.host,
        h.deployment_id
            .map(|d| format!(", deployment #{d}"))
            .unwrap_or_default(),
        format_time_ms(h.acquired_at)
    )
}

/// How long the holder of `h` has gone without renewing its lease (`2m10s`), or `no lease`
/// for a lock taken by an older version.
pub fn lease_silence(h: &LockInfo) -> String {
    match (h.lease_ms, h.lease_left_ms) {
        (Some(lease), Some(left)) => {
            crate::format_duration_ms(u64::try_from(lease - left).unwrap_or(0))
        }
        _ => "no lease".into(),
    }
}

/// The words for a session's notice, as the terminal shows them.
pub fn describe_notice(n: &Notice) -> String {
    match n {
        Notice::WaitingForLock {
            environment,
            holder,
        } => format!("waiting: {}", describe_lock(environment, holder)),
        Notice::Reaped {
            environment,
            deployment_id,
            release_version,
            during,
        } => format!(
            "warning: deployment #{deployment_id} (release {release_version}) was left unfinished{during} and has been marked abandoned.\n  \
             = help: check `stagegate status {environment}`; `stagegate rollback {environment}` returns services to their previous release"
        ),
        Notice::LockLost { environment } => format!(
            "warning: the lock on `{environment}` was broken by someone else while this run went (`stagegate unlock --force`); the run stopped without rolling back.\n  \
             = help: `stagegate status {environment}` shows what runs now; whoever broke the lock should check the environment before deploying"
        ),
        Notice::RecordFailed { error } => {
            format!("warning: cannot record to the state store: {error}")
        }
    }
}

impl EventSink for TerminalReporter {
    fn on_event(&mut self, event: &Event) {
        TerminalReporter::on_event(self, event);
    }

    fn on_notice(&mut self, notice: &Notice) {
        self.note(&describe_notice(notice));
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        TerminalReporter::finish(self);
        Ok(())
    }
}

impl EventSink for JsonLinesReporter {
    fn on_event(&mut self, event: &Event) {
        // A reader that went away (a closed pipe) must not stop the run.
        let _ = JsonLinesReporter::on_event(self, event);
    }
}

/// Which file report to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Junit,
    Markdown,
    /// One self-contained HTML page.
    Html,
}

/// Folds the run into a [`RunSummary`] and writes the asked-for report files at the end.
pub struct ReportFiles {
    summary: RunSummary,
    files: Vec<(ReportFormat, PathBuf)>,
}

impl ReportFiles {
    pub fn new(files: Vec<(ReportFormat, PathBuf)>) -> Self {
        Self {
            summary: RunSummary::new(),
            files,
        }
    }

    /// Who runs it, for the reports that show it (the HTML header).
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.summary.actor = Some(actor.into());
        self
    }
}

impl EventSink for ReportFiles {
    fn on_event(&mut self, event: &Event) {
        self.summary.apply(event);
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        for (format, path) in &self.files {
            let mut buf = Vec::new();
            let r = match format {
                ReportFormat::Json => crate::write_json(&self.summary, &mut buf),
                ReportFormat::Junit => crate::write_junit(&self.summary, &mut buf),
                ReportFormat::Markdown => crate::write_markdown(&self.summary, &mut buf),
                ReportFormat::Html => crate::write_html(&self.summary, &mut buf),
            };
            r.and_then(|()| {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)?
                    .write_all(&buf)
            })
            .map_err(|e| SinkError(format!("cannot write the report {}: {e}", path.display())))?;
        }
        Ok(())
    }
}
