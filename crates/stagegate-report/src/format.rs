//! Formatting helpers shared by the reporters: durations, timestamps, and cleaning text that
//! came from a step's output.

use stagegate_engine::event::StepStatus;

/// A duration for people: `0.12s`, `3.40s`, `1m03s`, `1h02m`.
///
/// Under a minute, seconds with two decimals (rounded to the hundredth); under an hour,
/// minutes and seconds (rounded to the second); beyond, hours and whole minutes.
pub fn format_duration_ms(ms: u64) -> String {
    let centis = ms.saturating_add(5) / 10;
    if centis < 6000 {
        return format!("{}.{:02}s", centis / 100, centis % 100);
    }
    // Rounded like the seconds above, so 59.996s reads 1m00s and not 0m59s.
    let secs = ms.saturating_add(500) / 1000;
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// A Unix time in milliseconds as UTC RFC 3339, to the second: `2024-05-01T12:00:00Z`.
pub fn format_time_ms(ms: i64) -> String {
    match jiff::Timestamp::from_second(ms.div_euclid(1000)) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Out of jiff's range: nothing sensible to show but the raw number.
        Err(_) => format!("{ms}ms"),
    }
}

/// The first seven characters of a commit sha, the way git abbreviates it.
pub(crate) fn short_sha(sha: &str) -> &str {
    match sha.char_indices().nth(7) {
        Some((i, _)) => &sha[..i],
        None => sha,
    }
}

/// A short human label for a step status.
pub(crate) fn status_label(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Passed => "passed",
        StepStatus::Failed => "failed",
        StepStatus::TimedOut => "timed out",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
    }
}

/// Removes ANSI escape sequences (colors, cursor moves, OSC titles and links) and other
/// control characters except newlines and tabs. Carriage returns are dropped, so progress
/// bars collapse into the text they last printed on a line.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // Two-character sequences (ESC 7, ESC =, ...).
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `n` non-trailing-empty lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration_ms(0), "0.00s");
        assert_eq!(format_duration_ms(120), "0.12s");
        assert_eq!(format_duration_ms(3400), "3.40s");
        assert_eq!(format_duration_ms(59_994), "59.99s");
        assert_eq!(format_duration_ms(59_996), "1m00s");
        assert_eq!(format_duration_ms(63_000), "1m03s");
        assert_eq!(format_duration_ms(3_599_000), "59m59s");
        assert_eq!(format_duration_ms(3_599_999), "1h00m");
        assert_eq!(format_duration_ms(3_720_000), "1h02m");
        assert!(format_duration_ms(u64::MAX).ends_with('m'));
    }

    #[test]
    fn times() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time_ms(1_714_564_800_999), "2024-05-01T12:00:00Z");
        assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn strips_escapes() {
        let s = "\x1b[1;31merror\x1b[0m: \x1b]8;;http://x\x07link\x1b]8;;\x1b\\ done\r\n\tok";
        assert_eq!(strip_ansi(s), "error: link done\n\tok");
    }

    #[test]
    fn short_shas_and_tails() {
        assert_eq!(short_sha("1234567890abcdef"), "1234567");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(last_lines("a\nb\nc\n\n", 2), vec!["b", "c"]);
        assert!(last_lines("", 3).is_empty());
    }
}
