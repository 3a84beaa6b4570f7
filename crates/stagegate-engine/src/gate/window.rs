//! `gate: window`: deploy windows (days and hours in a time zone) and freezes (date ranges
//! with a reason). Outside a window, or in a freeze, the gate fails with the reason and the
//! next time a deploy may start.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use stagegate_plan::gate::{AllowedWindow, Freeze, WindowGate};

use super::{Check, Findings};
use crate::step::StepCtx;

/// How far ahead to look for the next open window.
const HORIZON_DAYS: i32 = 400;

pub(crate) fn evaluate(g: &WindowGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let now = ctx.inputs.at.unwrap_or_else(Timestamp::now);
    let schedule = Schedule::new(g);
    let when = if ctx.inputs.at.is_some() {
        format!("{} (as given by --at)", show(now, &g.tz))
    } else {
        show(now, &g.tz)
    };

    match schedule.freeze_at(now) {
        Some((fz, until)) => f.checks.push(Check::fail(
            "freeze",
            format!(
                "{when} is in a freeze until {}: {}",
                show(until, &g.tz),
                fz.reason
            ),
        )),
        None => f.checks.push(Check::pass(
            "freeze",
            if g.freeze.is_empty() {
                "no freeze is declared".to_string()
            } else {
                format!("{when} is in no freeze")
            },
        )),
    }
    if !g.allow.is_empty() {
        let windows = g
            .allow
            .iter()
            .map(AllowedWindow::describe)
            .collect::<Vec<_>>()
            .join("; ");
        match schedule.window_at(now) {
            Some(w) => f.checks.push(Check::pass(
                "window",
                format!("{when} is inside {} ({})", w.describe(), g.timezone.value),
            )),
            None => f.checks.push(Check::fail(
                "window",
                format!(
                    "{when} is outside the deploy windows: {windows} ({})",
                    g.timezone.value
                ),
            )),
        }
    }
    if f.checks.iter().any(|c| !c.ok) {
        f.help = Some(match schedule.next_open(now) {
            Some(t) => {
                f.outputs.insert(
                    "next_open".into(),
                    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                );
                format!(
                    "the next window opens {} (in {})",
                    show(t, &g.tz),
                    until(now, t)
                )
            }
            None => format!("no window opens in the next {HORIZON_DAYS} days"),
        });
    }
    f
}

/// `Tue 2025-10-07 10:00 BST`.
fn show(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%a %Y-%m-%d %H:%M %Z")
        .to_string()
}

/// `2d 3h`, `4h 05m`, `12m`.
fn until(from: Timestamp, to: Timestamp) -> String {
    let mins = (to.as_second() - from.as_second()).max(0) / 60;
    let (d, h, m) = (mins / 1440, (mins % 1440) / 60, mins % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else {
        format!("{m}m")
    }
}

struct Schedule<'a> {
    gate: &'a WindowGate,
    freezes: Vec<(&'a Freeze, Timestamp, Timestamp)>,
}

impl<'a> Schedule<'a> {
    fn new(gate: &'a WindowGate) -> Self {
        let freezes = gate
            .freeze
            .iter()
            .filter_map(|f| Some((f, local(f.from, &gate.tz)?, local(f.until, &gate.tz)?)))
            .collect();
        Self { gate, freezes }
    }

    /// The freeze in force at `t` and when it ends (freezes that touch are joined).
    fn freeze_at(&self, t: Timestamp) -> Option<(&'a Freeze, Timestamp)> {
        let (f, _, mut end) = *self.freezes.iter().find(|(_, s, e)| *s <= t && t < *e)?;
        while let Some((_, _, e)) = self.freezes.iter().find(|(_, s, e)| *s <= end && end < *e) {
            end = *e;
        }
        Some((f, end))
    }

    /// The window open at `t`, if any.
    fn window_at(&self, t: Timestamp) -> Option<&'a AllowedWindow> {
        let today = t.to_zoned(self.gate.tz.clone()).date();
        let yesterday = today.yesterday().ok()?;
        self.gate.allow.iter().find(|w| {
            [yesterday, today]
                .iter()
                .filter_map(|d| self.interval(w, *d))
                .any(|(s, e)| s <= t && t < e)
        })
    }

    /// When window `w` is open on `date` (it starts that day), in absolute time.
    fn interval(&self, w: &AllowedWindow, date: Date) -> Option<(Timestamp, Timestamp)> {
        if !w.days.contains(&date.weekday()) {
            return None;
        }
        let tz = &self.gate.tz;
        let start = local(date.to_datetime(w.start), tz)?;
        let end = match w.end {
            Some(e) if e > w.start => date.to_datetime(e),
            Some(e) => date.tomorrow().ok()?.to_datetime(e),
            None => date.tomorrow().ok()?.to_datetime(Time::midnight()),
        };
        Some((start, local(end, tz)?))
    }

    /// The first moment from `now` on that is inside a window and outside every freeze.
    fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        // Skip past freezes from `t`, staying before `limit`.
        let unfrozen = |mut t: Timestamp, limit: Option<Timestamp>| -> Option<Timestamp> {
            while let Some((_, end)) = self.freeze_at(t) {
                t = end;
            }
            limit.is_none_or(|l| t < l).then_some(t)
        };
        if self.gate.allow.is_empty() {
            return unfrozen(now, None);
        }
        let today = now.to_zoned(self.gate.tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        for offset in -1..HORIZON_DAYS {
            let Ok(date) = today.checked_add(offset.days()) else {
                continue;
            };
            if let Some(b) = best
                && local(date.to_datetime(Time::midnight()), &self.gate.tz)
                    .is_some_and(|day| day > b)
            {
                break;
            }
            for w in &self.gate.allow {
                let Some((s, e)) = self.interval(w, date) else {
                    continue;
                };
                if e <= now {
                    continue;
                }
                if let Some(t) = unfrozen(s.max(now), Some(e))
                    && best.is_none_or(|b| t < b)
                {
                    best = Some(t);
                }
            }
        }
        best
    }
}

fn local(dt: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    dt.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagegate_plan::Spanned;
    use stagegate_plan::diagnostic::{Pos, Source, Span};

    fn span() -> Span {
        Span {
            source: Source::new("x", ""),
            pos: Pos::default(),
            width: 1,
        }
    }

    fn gate(
        tz: &str,
        allow: Vec<(Vec<jiff::civil::Weekday>, &str, Option<&str>)>,
        freeze: Vec<(&str, &str)>,
    ) -> WindowGate {
        WindowGate {
            timezone: Spanned {
                value: tz.into(),
                span: span(),
            },
            tz: TimeZone::get(tz).unwrap(),
            allow: allow
                .into_iter()
                .map(|(days, s, e)| AllowedWindow {
                    days,
                    start: s.parse().unwrap(),
                    end: e.map(|e| e.parse().unwrap()),
                    span: span(),
                })
                .collect(),
            freeze: freeze
                .into_iter()
                .map(|(a, b)| Freeze {
                    from: a.parse().unwrap(),
                    until: b.parse().unwrap(),
                    reason: "year end".into(),
                    span: span(),
                })
                .collect(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    use jiff::civil::Weekday::*;

    #[test]
    fn windows_freezes_and_the_next_opening() {
        let g = gate(
            "Europe/London",
            vec![(vec![Tuesday, Wednesday, Thursday], "10:00", Some("14:00"))],
            vec![("2025-12-20T00:00", "2026-01-03T00:00")],
        );
        let s = Schedule::new(&g);
        // Tuesday 7 October 2025, 11:00 BST is 10:00 UTC.
        assert!(s.window_at(ts("2025-10-07T10:00:00Z")).is_some());
        // Monday: closed; the next window is Tuesday 10:00 BST.
        let mon = ts("2025-10-06T08:00:00Z");
        assert!(s.window_at(mon).is_none());
        assert_eq!(s.next_open(mon).unwrap(), ts("2025-10-07T09:00:00Z"));
        // Thursday 14:30: the next window is next Tuesday.
        let thu = ts("2025-10-09T13:30:00Z");
        assert_eq!(s.next_open(thu).unwrap(), ts("2025-10-14T09:00:00Z"));
        // In the freeze: the first window after it (Tuesday 6 January 2026, GMT).
        let frozen = ts("2025-12-23T11:00:00Z");
        assert!(s.freeze_at(frozen).is_some());
        assert_eq!(s.next_open(frozen).unwrap(), ts("2026-01-06T10:00:00Z"));
        assert_eq!(until(mon, ts("2025-10-07T09:00:00Z")), "1d 1h");
    }

    #[test]
    fn overnight_windows_and_freezes_alone() {
        let g = gate("UTC", vec![(vec![Friday], "22:00", Some("02:00"))], vec![]);
        let s = Schedule::new(&g);
        // Saturday 01:00 is still in Friday's window.
        assert!(s.window_at(ts("2025-10-11T01:00:00Z")).is_some());
        assert!(s.window_at(ts("2025-10-11T03:00:00Z")).is_none());
        let g = gate(
            "UTC",
            vec![],
            vec![
                ("2025-10-01T00:00", "2025-10-02T00:00"),
                ("2025-10-02T00:00", "2025-10-03T00:00"),
            ],
        );
        let s = Schedule::new(&g);
        assert_eq!(
            s.next_open(ts("2025-10-01T12:00:00Z")).unwrap(),
            ts("2025-10-03T00:00:00Z")
        );
    }
}
