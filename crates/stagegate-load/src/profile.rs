//! What load to apply: the closed model (a number of virtual users, each sending its next
//! request when the previous one is answered) or the open model (requests arrive at a rate,
//! whether or not earlier ones were answered), with warm-up and ramps.
//!
//! A [`Timeline`] turns a profile's level (users or requests per second) and ramp into a
//! function of time; the open model's [`Arrivals`] turns a rate timeline into the intended
//! send time of every request.

use std::time::Duration;

use crate::LoadError;

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct LoadProfile {
    pub model: Model,
    /// Load applied before measuring; its requests are not in the results.
    pub warmup: Duration,
    /// A request not answered within this time counts as a `timeout` error.
    pub timeout: Duration,
    /// Generator threads, each with its own connections [default: the CPUs this process
    /// may run on, at most one per connection].
    pub threads: Option<usize>,
}

impl LoadProfile {
    pub fn closed(vus: usize, stop: Stop) -> Self {
        Self::with_model(Model::Closed {
            vus,
            stop,
            ramp: Vec::new(),
        })
    }

    pub fn open(rate: f64, duration: Duration, max_in_flight: usize) -> Self {
        Self::with_model(Model::Open {
            rate,
            duration,
            max_in_flight,
            ramp: Vec::new(),
        })
    }

    fn with_model(model: Model) -> Self {
        Self {
            model,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(20),
            threads: None,
        }
    }

    /// Every problem with the profile, in one error.
    pub fn validate(&self) -> Result<(), LoadError> {
        let mut problems = Vec::new();
        if self.timeout.is_zero() {
            problems.push("`timeout` must be more than zero".to_string());
        }
        if self.threads == Some(0) {
            problems.push("`threads` must be at least 1".to_string());
        }
        match &self.model {
            Model::Closed { vus, stop, ramp } => {
                if *vus == 0 && ramp.is_empty() {
                    problems.push("`vus` must be at least 1".to_string());
                }
                if !ramp.is_empty() {
                    if matches!(stop, Stop::Requests(_)) {
                        problems.push(
                            "a ramp sets the run's length: use it with `duration`, not `requests`"
                                .to_string(),
                        );
                    }
                    if ramp.iter().all(|s| s.target < 1.0) && *vus == 0 {
                        problems.push("the ramp never has a virtual user running".to_string());
                    }
                }
                match stop {
                    Stop::Requests(0) => problems.push("`requests` must be at least 1".into()),
                    Stop::Duration(d) if d.is_zero() && ramp.is_empty() => {
                        problems.push("`duration` must be more than zero".into())
                    }
                    _ => {}
                }
                if !self.warmup.is_zero() && *vus == 0 {
                    problems.push("a warm-up runs at `vus` users: set `vus` above zero".into());
                }
            }
            Model::Open {
                rate,
                duration,
                max_in_flight,
                ramp,
            } => {
                if !rate.is_finite() || *rate < 0.0 || (*rate == 0.0 && ramp.is_empty()) {
                    problems.push(format!("`rate` must be more than zero (got {rate})"));
                }
                if duration.is_zero() && ramp.is_empty() {
                    problems.push("`duration` must be more than zero".into());
                }
                if *max_in_flight == 0 {
                    problems.push("`max_in_flight` must be at least 1".into());
                }
                if !self.warmup.is_zero() && *rate <= 0.0 {
                    problems.push("a warm-up runs at `rate`: set `rate` above zero".into());
                }
            }
        }
        for s in self.ramp() {
            if !s.target.is_finite() || s.target < 0.0 {
                problems.push(format!(
                    "a ramp target must be zero or more (got {})",
                    s.target
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Profile(problems.join("; ")))
        }
    }

    pub fn ramp(&self) -> &[RampStage] {
        match &self.model {
            Model::Closed { ramp, .. } | Model::Open { ramp, .. } => ramp,
        }
    }

    /// The measured phase's length, when it is set by time.
    pub fn measured_duration(&self) -> Option<Duration> {
        match &self.model {
            Model::Closed { stop, ramp, .. } => {
                if !ramp.is_empty() {
                    Some(ramp.iter().map(|s| s.duration).sum())
                } else {
                    match stop {
                        Stop::Duration(d) => Some(*d),
                        Stop::Requests(_) => None,
                    }
                }
            }
            Model::Open { duration, ramp, .. } => Some(if ramp.is_empty() {
                *duration
            } else {
                ramp.iter().map(|s| s.duration).sum()
            }),
        }
    }

    /// Users (closed) or requests per second (open) over the measured phase.
    pub fn timeline(&self) -> Timeline {
        let (level, ramp) = match &self.model {
            Model::Closed { vus, ramp, .. } => (*vus as f64, ramp),
            Model::Open { rate, ramp, .. } => (*rate, ramp),
        };
        let mut segments = Vec::new();
        if ramp.is_empty() {
            let d = self.measured_duration().unwrap_or(Duration::MAX);
            segments.push(Segment {
                from: level,
                to: level,
                duration: d,
            });
        } else {
            let mut from = level;
            for s in ramp {
                segments.push(Segment {
                    from,
                    to: s.target,
                    duration: s.duration,
                });
                from = s.target;
            }
        }
        Timeline { segments }
    }

    /// The most connections the profile can use.
    pub fn max_connections(&self) -> usize {
        match &self.model {
            Model::Closed { vus, ramp, .. } => ramp
                .iter()
                .map(|s| s.target.ceil() as usize)
                .chain([*vus])
                .max()
                .unwrap_or(0),
            Model::Open { max_in_flight, .. } => *max_in_flight,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Model {
    /// `vus` virtual users, each with one connection, each sending its next request as soon
    /// as the previous one is answered.
    Closed {
        vus: usize,
        stop: Stop,
        /// Changes the number of users over time, starting from `vus`.
        ramp: Vec<RampStage>,
    },
    /// Requests start at `rate` per second whatever the server does; latency is measured
    /// from each request's intended send time.
    Open {
        rate: f64,
        duration: Duration,
        /// At most this many requests in flight (and connections open); requests due while
        /// all are busy wait for one, and their wait counts in their latency.
        max_in_flight: usize,
        /// Changes the rate over time, starting from `rate`.
        ramp: Vec<RampStage>,
    },
}

impl Model {
    pub fn name(&self) -> &'static str {
        match self {
            Model::Closed { .. } => "closed",
            Model::Open { .. } => "open",
        }
    }
}

/// When a closed-model run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After exactly this many measured requests.
    Requests(u64),
    /// After this long (requests in flight then are awaited and counted).
    Duration(Duration),
}

/// One step of a ramp: move linearly to `target` (users, or requests per second) over
/// `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RampStage {
    pub target: f64,
    pub duration: Duration,
}

/// Reads a rate: `500/s`, `500`, `30000/m`, `10/ms`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, per) = match t.split_once('/') {
        Some((n, unit)) => {
            let per = match unit.trim() {
                "s" | "sec" | "1s" => 1.0,
                "m" | "min" | "1m" => 60.0,
                "h" | "1h" => 3600.0,
                "ms" => 0.001,
                other => {
                    return Err(format!(
                        "`{t}` has an unknown unit `/{other}`: write a rate as 500/s, 30000/m or 500"
                    ));
                }
            };
            (n.trim(), per)
        }
        None => (t, 1.0),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a rate: write it as 500/s, 30000/m or 500"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{t}` is not a rate: it must be zero or more"));
    }
    Ok(n / per)
}

/// A piece of a timeline: a linear move from one level to another.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub from: f64,
    pub to: f64,
    pub duration: Duration,
}

/// A level (users or rate) as a piecewise-linear function of time.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub segments: Vec<Segment>,
}

impl Timeline {
    /// The level `t` after the measured phase began (the last level after the end).
    pub fn level_at(&self, t: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for s in &self.segments {
            let end = start.saturating_add(s.duration);
            if t < end {
                let d = s.duration.as_secs_f64();
                if d <= 0.0 || !d.is_finite() {
                    return s.to;
                }
                let x = (t - start).as_secs_f64() / d;
                return s.from + (s.to - s.from) * x;
            }
            start = end;
        }
        self.segments.last().map(|s| s.to).unwrap_or(0.0)
    }

    /// The area under the level over the whole timeline: users × seconds or, for a rate,
    /// the number of requests the open model schedules ([`Arrivals`] yields this many,
    /// within one), without counting them.
    pub fn area(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| (s.from + s.to) / 2.0 * s.duration.as_secs_f64())
            .sum()
    }

    pub fn scaled(&self, factor: f64) -> Timeline {
        Timeline {
            segments: self
                .segments
                .iter()
                .map(|s| Segment {
                    from: s.from * factor,
                    to: s.to * factor,
                    duration: s.duration,
                })
                .collect(),
        }
    }
}

/// The open model's schedule: the intended send time of each request, as an offset from
/// the start, for a rate timeline. Arrival `k` (from 0) is due when the rate's integral
/// reaches `k`.
#[derive(Debug, Clone)]
pub struct Arrivals {
    timeline: Timeline,
    /// The segment the last answer came from, its start time and the arrivals before it.
    seg: usize,
    seg_start: f64,
    seg_count: f64,
    next: u64,
}

impl Arrivals {
    pub fn new(timeline: Timeline) -> Self {
        Self {
            timeline,
            seg: 0,
            seg_start: 0.0,
            seg_count: 0.0,
            next: 0,
        }
    }

    /// Starts the count at `first` (a thread's offset when the rate is shared).
    pub fn starting_at(mut self, first: f64) -> Self {
        self.seg_count = -first;
        self
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let k = self.next as f64;
        loop {
            let s = self.timeline.segments.get(self.seg)?;
            let d = s.duration.as_secs_f64();
            let m = k - self.seg_count;
            // Arrivals within this segment: the area under the rate line.
            let total = if d.is_finite() {
                (s.from + s.to) / 2.0 * d
            } else {
                f64::INFINITY
            };
            if m < total {
                let t = if !d.is_finite() || (s.to - s.from).abs() < 1e-12 {
                    if s.from <= 0.0 {
                        return None;
                    }
                    m.max(0.0) / s.from
                } else {
                    // r(t) = from + a·t, N(t) = from·t + a·t²/2 = m.
                    let a = (s.to - s.from) / d;
                    let disc = (s.from * s.from + 2.0 * a * m.max(0.0)).max(0.0);
                    (-s.from + disc.sqrt()) / a
                };
                self.next += 1;
                return Some(Duration::from_secs_f64(
                    (self.seg_start + t.clamp(0.0, d)).max(0.0),
                ));
            }
            self.seg_count += total;
            self.seg_start += d;
            self.seg += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn constant_rate_arrivals_are_evenly_spaced_and_stop_at_the_end() {
        let p = LoadProfile::open(10.0, secs(1.0), 5);
        let times: Vec<_> = Arrivals::new(p.timeline()).collect();
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], Duration::ZERO);
        assert!((times[3].as_secs_f64() - 0.3).abs() < 1e-9, "{times:?}");
    }

    #[test]
    fn a_linear_ramp_sends_the_area_under_the_rate() {
        let mut p = LoadProfile::open(0.0, Duration::ZERO, 5);
        if let Model::Open { ramp, .. } = &mut p.model {
            ramp.push(RampStage {
                target: 100.0,
                duration: secs(2.0),
            });
            ramp.push(RampStage {
                target: 100.0,
                duration: secs(1.0),
            });
        }
        let times: Vec<_> = Arrivals::new(p.timeline()).collect();
        // 0 → 100/s over 2 s is 100 requests, then 100 more in the flat second.
        assert!((199..=201).contains(&times.len()), "{}", times.len());
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // Half the ramp's requests come in its last 0.59 s (sqrt(1/2) of the way).
        assert!((times[50].as_secs_f64() - 2.0 * 0.5f64.sqrt()).abs() < 0.02);
    }

    #[test]
    fn the_area_under_a_ramp_is_the_number_of_arrivals() {
        let mut p = LoadProfile::open(10.0, Duration::ZERO, 5);
        if let Model::Open { ramp, .. } = &mut p.model {
            ramp.push(RampStage {
                target: 110.0,
                duration: secs(2.0),
            });
            ramp.push(RampStage {
                target: 110.0,
                duration: secs(0.5),
            });
            ramp.push(RampStage {
                target: 0.0,
                duration: secs(1.5),
            });
        }
        let t = p.timeline();
        // (10 + 110) / 2 × 2 + 110 × 0.5 + 110 / 2 × 1.5
        let area = 120.0 + 55.0 + 82.5;
        assert!((t.area() - area).abs() < 1e-9, "{}", t.area());
        let count = Arrivals::new(t.clone()).count() as f64;
        assert!((t.area() - count).abs() <= 1.0, "{} vs {count}", t.area());
        let flat = LoadProfile::open(200.0, secs(3.0), 5).timeline();
        assert_eq!(flat.area(), 600.0);
        assert_eq!(flat.area(), Arrivals::new(flat.clone()).count() as f64);
    }

    #[test]
    fn closed_ramp_levels_interpolate() {
        let mut p = LoadProfile::closed(10, Stop::Duration(Duration::ZERO));
        if let Model::Closed { ramp, .. } = &mut p.model {
            ramp.push(RampStage {
                target: 20.0,
                duration: secs(10.0),
            });
        }
        let t = p.timeline();
        assert_eq!(t.level_at(secs(0.0)), 10.0);
        assert_eq!(t.level_at(secs(5.0)), 15.0);
        assert_eq!(t.level_at(secs(60.0)), 20.0);
        assert_eq!(p.max_connections(), 20);
        assert_eq!(p.measured_duration(), Some(secs(10.0)));
    }

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert_eq!(parse_rate("250"), Ok(250.0));
        assert!(
            parse_rate("fast")
                .unwrap_err()
                .contains("`fast` is not a rate")
        );
        assert!(parse_rate("5/week").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn validation_collects_every_problem() {
        let mut p = LoadProfile::open(-1.0, Duration::ZERO, 0);
        p.timeout = Duration::ZERO;
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("`rate` must be more than zero"), "{e}");
        assert!(e.contains("`duration` must be more than zero"), "{e}");
        assert!(e.contains("`max_in_flight` must be at least 1"), "{e}");
        assert!(e.contains("`timeout`"), "{e}");
    }
}
