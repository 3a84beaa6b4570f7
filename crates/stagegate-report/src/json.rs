//! JSON reports.
//!
//! - [`write_json`]: the finished run's [`RunSummary`] as one pretty-printed JSON document.
//!   Field names are those of [`RunSummary`] and the engine's event types, in snake case;
//!   enums (`outcome`, a step's `status` and `phase`) are snake-case strings.
//! - [`JsonLinesReporter`]: every event as it happens, one compact JSON object per line,
//!   tagged by its `event` field (`run_started`, `step_finished`, ...). This is what
//!   `--events jsonl` streams.

use std::io::{self, Write};

use stagegate_engine::event::Event;

use crate::collect::RunSummary;

/// Writes the summary as pretty JSON, followed by a newline.
pub fn write_json(summary: &RunSummary, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, summary).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Streams events as JSON Lines.
pub struct JsonLinesReporter {
    out: Box<dyn Write + Send>,
}

impl JsonLinesReporter {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }

    /// Writes one event as one line and flushes, so readers see it at once.
    pub fn on_event(&mut self, e: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, e).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_tagged_object_per_line() {
        let buf = Shared::default();
        let mut r = JsonLinesReporter::new(Box::new(buf.clone()));
        r.on_event(&Event::StageStarted {
            stage: "build\nstage".into(),
        })
        .unwrap();
        r.on_event(&Event::Warning {
            message: "careful".into(),
        })
        .unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["event"], "stage_started");
        assert_eq!(first["stage"], "build\nstage");
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["event"], "warning");
        assert_eq!(second["message"], "careful");
    }
}
