//! Statistics for judging a release against a baseline during a bake.
//!
//! A bake collects measurements of one metric (latency, error rate, ...) from the
//! release under test and from the baseline it replaces, then asks whether the release
//! is worse. This module answers that the way Kayenta's Mann-Whitney judge does: a
//! rank test for "are these two samples different", plus an effect-size floor so that a
//! statistically significant but tiny difference does not fail a release. It is plain
//! library code: nothing here prints.
//!
//! # NaN values
//!
//! Every function drops NaN values before doing anything else; a NaN is "no
//! measurement", not a measurement. Counts reported back (`count`, `n_test`,
//! `n_baseline`) are the counts after dropping. Infinities are kept and ranked like any
//! other value.
//!
//! # Summaries ([`summarize`])
//!
//! `mean` is `sum / count`. Percentiles use linear interpolation between the two
//! nearest ranks (the "type 7" definition, the default of numpy and R): for the sorted
//! values `x[0..n]` and a fraction `q`, let `h = q (n - 1)`; the percentile is
//! `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`. `median` is `q = 0.5`
//! (the middle value, or the mean of the two middle values), `p95` is `q = 0.95`.
//!
//! # Mann-Whitney U test ([`mann_whitney`])
//!
//! With `n1` test (release) values and `n2` baseline values, all `n = n1 + n2` values
//! are ranked together from 1, tied values getting the average of the ranks they span.
//! With `R1` the sum of the test values' ranks:
//!
//! ```text
//! U     = R1 - n1 (n1 + 1) / 2               U of the test sample; 0 ..= n1 n2
//! mu    = n1 n2 / 2                          mean of U under "no difference"
//! sigma = sqrt(n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))))
//!                                            t = size of each group of tied values
//! z     = sign(U - mu) * max(|U - mu| - 1/2, 0) / sigma
//!                                            the 1/2 is the continuity correction
//! p     = min(1, 2 * (1 - Phi(|z|)))         two-sided; Phi = standard normal CDF
//! r     = 2 U / (n1 n2) - 1                  rank-biserial correlation
//! ```
//!
//! This is the normal approximation with tie and continuity correction, the same as
//! `scipy.stats.mannwhitneyu(test, baseline, alternative="two-sided",
//! method="asymptotic", use_continuity=True)`; `u` equals scipy's statistic and
//! `p_value` its p-value. No exact p-values are computed: with the sample sizes a bake
//! collects the approximation is what Kayenta uses too. A positive `z` or
//! `rank_biserial` means the test values tend to be larger than the baseline values.
//! `rank_biserial` is the probability that a random test value exceeds a random baseline
//! value (ties counting half), rescaled from `0 ..= 1` to `-1 ..= 1`.
//!
//! When every value in both samples is the same, `sigma` is 0: there is no evidence of
//! any difference, and the result is `z = 0`, `p_value = 1`.
//!
//! # Effect size
//!
//! `effect_size` is the ratio of the medians, `median(test) / median(baseline)`
//! (Kayenta can use means or medians; medians here, since latencies are skewed and a
//! few outliers should not move the effect). 1.0 means no change, 1.2 means the release
//! median is 20% higher. When the baseline median is 0 the ratio is `+inf` if the test
//! median is positive, `-inf` if it is negative and `1.0` if it is 0 too. It is `NaN`
//! only when both medians are infinite. The ratio is meant for metrics that are never
//! negative (latencies, rates, counts); with negative medians its direction is not
//! meaningful.
//!
//! # Judgement ([`judge`])
//!
//! A metric fails when the release differs significantly (`p_value < alpha`) in the bad
//! [`Direction`] *and* the effect reaches the floor: for an increase `effect_size >=
//! effect_floor`, for a decrease `effect_size <= 1 / effect_floor`. So `effect_floor =
//! 1.1` means "fail only for at least 10% higher" (or at least 9.1% lower, `1 / 1.1`).
//! The direction of a difference is the sign of `z`.

use std::cmp::Ordering;
use std::fmt::Write as _;

/// The fewest values (after dropping NaN) each sample needs for [`mann_whitney`].
pub const MIN_SAMPLES: usize = 3;

/// Summary of a sample.
///
/// Built by [`summarize`]; see the [module documentation](self) for the definitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values summarized (NaN values are not counted).
    pub count: usize,
    pub min: f64,
    pub max: f64,
    /// Arithmetic mean, `sum / count`.
    pub mean: f64,
    /// 50th percentile, linear interpolation.
    pub median: f64,
    /// 95th percentile, linear interpolation.
    pub p95: f64,
}

/// Summarizes `values`, ignoring NaN values.
///
/// Returns `None` when there is nothing to summarize: `values` is empty or holds only
/// NaN. Percentiles use linear interpolation between the nearest ranks (numpy's
/// default), so the median of `[1, 2, 3, 4]` is 2.5 and its p95 is 3.85.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let sorted = sorted_without_nan(values);
    let (&min, &max) = (sorted.first()?, sorted.last()?);
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    Some(Summary {
        count: sorted.len(),
        min,
        max,
        mean,
        median: percentile(&sorted, 0.5),
        p95: percentile(&sorted, 0.95),
    })
}

/// Result of [`mann_whitney`]; see the [module documentation](self) for the formulas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the test sample (release) against the baseline, `0 ..= n1 n2`.
    pub u: f64,
    /// Normal approximation of U with tie and continuity correction; positive when the
    /// test values tend to be larger. 0 when there is no variance.
    pub z: f64,
    /// Two-sided p-value of the normal approximation, `0 ..= 1`.
    pub p_value: f64,
    /// `median(test) / median(baseline)`; `+inf`/`-inf` for a baseline median of 0 and
    /// a positive/negative test median, 1.0 when both medians are 0.
    pub effect_size: f64,
    /// Rank-biserial correlation `2 U / (n1 n2) - 1`, `-1 ..= 1`; positive means the
    /// test values tend to be larger.
    pub rank_biserial: f64,
    /// Number of test values used (NaN dropped).
    pub n_test: usize,
    /// Number of baseline values used (NaN dropped).
    pub n_baseline: usize,
}

/// Two-sided Mann-Whitney U test of `test` against `baseline`.
///
/// NaN values are dropped first. Returns `None` when either sample then has fewer than
/// [`MIN_SAMPLES`] (3) values: too few for the normal approximation to say anything.
/// Exact p-values are not computed; the p-value is the normal approximation with tie
/// and continuity correction (scipy's `method="asymptotic", use_continuity=True`). When
/// all values are equal (variance 0), `p_value` is 1.0 and `z` is 0.
pub fn mann_whitney(test: &[f64], baseline: &[f64]) -> Option<MannWhitney> {
    let test = sorted_without_nan(test);
    let baseline = sorted_without_nan(baseline);
    if test.len() < MIN_SAMPLES || baseline.len() < MIN_SAMPLES {
        return None;
    }
    let (n1, n2) = (test.len() as f64, baseline.len() as f64);
    let n = n1 + n2;

    // Merge the two sorted samples, remembering which sample each value came from.
    let mut all: Vec<(f64, bool)> = Vec::with_capacity(test.len() + baseline.len());
    all.extend(test.iter().map(|&v| (v, true)));
    all.extend(baseline.iter().map(|&v| (v, false)));
    all.sort_by(|a, b| a.0.total_cmp(&b.0));

    // Average ranks over groups of equal values (== so that -0.0 ties with 0.0; the
    // total order puts them next to each other).
    let mut rank_sum_test = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < all.len() {
        let mut end = start + 1;
        while end < all.len() && all[end].0 == all[start].0 {
            end += 1;
        }
        // Ranks start + 1 ..= end, averaged.
        let rank = (start + 1 + end) as f64 / 2.0;
        let in_test = all[start..end].iter().filter(|v| v.1).count() as f64;
        rank_sum_test += rank * in_test;
        let t = (end - start) as f64;
        tie_term += t * t * t - t;
        start = end;
    }
    let all_equal = all.first().map(|v| v.0) == all.last().map(|v| v.0);

    let u = rank_sum_test - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let (z, p_value) = if all_equal {
        (0.0, 1.0)
    } else {
        let sigma = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
        let diff = u - mu;
        let magnitude = (diff.abs() - 0.5).max(0.0) / sigma;
        let z = if diff < 0.0 { -magnitude } else { magnitude };
        (z, (2.0 * normal_sf(magnitude)).min(1.0))
    };

    Some(MannWhitney {
        u,
        z,
        p_value,
        effect_size: median_ratio(percentile(&test, 0.5), percentile(&baseline, 0.5)),
        rank_biserial: 2.0 * u / (n1 * n2) - 1.0,
        n_test: test.len(),
        n_baseline: baseline.len(),
    })
}

/// Which direction is bad for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (latency, error rate).
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
    /// Any change is suspect.
    Either,
}

/// Outcome of [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// A verdict with the evidence behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// The test the verdict rests on; `None` when there were too few samples to run it
    /// (the verdict is then [`Verdict::Inconclusive`]).
    pub test: Option<MannWhitney>,
    /// One plain English sentence: sample sizes, medians, p-value, effect and floor.
    pub reason: String,
}

/// Kayenta-style judgement of a release's measurements (`test`) against a baseline's.
///
/// * [`Verdict::Fail`] when the difference is significant (`p_value < alpha`) in the bad
///   `direction` and the effect reaches the floor: `effect_size >= effect_floor` for an
///   increase, `effect_size <= 1 / effect_floor` for a decrease; [`Direction::Either`]
///   fails on either. `effect_floor = 1.1` means the release median must be at least
///   10% above (or 9.1% below) the baseline's.
/// * [`Verdict::Pass`] when the difference is not significant, is below the floor, or is
///   in the good direction.
/// * [`Verdict::Inconclusive`] when [`mann_whitney`] returns `None` (fewer than
///   [`MIN_SAMPLES`] non-NaN values in a sample), or when a significant bad-direction
///   difference has an undefined (NaN) effect size (both medians infinite).
///
/// The direction of a difference is the sign of `z`. An `effect_floor` below 1.0 (or
/// NaN) is treated as 1.0: no floor, any significant change in the bad direction fails.
/// `alpha` is expected in `(0, 1)`; a NaN `alpha` makes nothing significant.
///
/// `reason` reads like "release median 0.120 vs baseline 0.100 (+20.0%), p = 0.003 <
/// 0.05 with 30 and 30 samples: significantly higher, above the +10% floor".
pub fn judge(
    test: &[f64],
    baseline: &[f64],
    direction: Direction,
    alpha: f64,
    effect_floor: f64,
) -> Judgement {
    let Some(mw) = mann_whitney(test, baseline) else {
        return Judgement {
            verdict: Verdict::Inconclusive,
            test: None,
            reason: too_few_reason(test, baseline),
        };
    };
    // Never None here: mann_whitney saw at least MIN_SAMPLES non-NaN values in each.
    let median = |v: &[f64]| summarize(v).map_or(f64::NAN, |s| s.median);
    let (test_median, baseline_median) = (median(test), median(baseline));
    let floor = if effect_floor >= 1.0 {
        effect_floor
    } else {
        1.0
    };

    let mut reason = format!(
        "release median {} vs baseline {} ({}), p = {} {} {} with {} and {} samples: ",
        fmt_value(test_median),
        fmt_value(baseline_median),
        fmt_change(mw.effect_size),
        fmt_p(mw.p_value),
        if mw.p_value < alpha { "<" } else { ">=" },
        alpha,
        mw.n_test,
        mw.n_baseline,
    );

    let significant = mw.p_value < alpha && mw.z != 0.0;
    let higher = mw.z > 0.0;
    let bad = match direction {
        Direction::Increase => higher,
        Direction::Decrease => !higher,
        Direction::Either => true,
    };
    let word = if higher { "higher" } else { "lower" };

    let verdict = if !significant {
        reason.push_str("no significant difference");
        Verdict::Pass
    } else if !bad {
        let bad_word = if direction == Direction::Increase {
            "an increase"
        } else {
            "a decrease"
        };
        let _ = write!(
            reason,
            "significantly {word}, which is fine since only {bad_word} is bad"
        );
        Verdict::Pass
    } else if mw.effect_size.is_nan() {
        let _ = write!(
            reason,
            "significantly {word}, but the effect size is undefined"
        );
        Verdict::Inconclusive
    } else {
        // Floor as a ratio in the direction of the change.
        let limit = if higher { floor } else { 1.0 / floor };
        let floor_text = fmt_floor(limit);
        let cmp = if higher {
            mw.effect_size.partial_cmp(&limit)
        } else {
            limit.partial_cmp(&mw.effect_size)
        };
        match cmp {
            Some(Ordering::Greater) => {
                let side = if higher { "above" } else { "below" };
                let _ = write!(
                    reason,
                    "significantly {word}, {side} the {floor_text} floor"
                );
                Verdict::Fail
            }
            Some(Ordering::Equal) => {
                let _ = write!(reason, "significantly {word}, at the {floor_text} floor");
                Verdict::Fail
            }
            _ => {
                let _ = write!(
                    reason,
                    "significantly {word}, but within the {floor_text} floor"
                );
                Verdict::Pass
            }
        }
    };
    Judgement {
        verdict,
        test: Some(mw),
        reason,
    }
}

/// The sentence for a judgement with too few samples.
fn too_few_reason(test: &[f64], baseline: &[f64]) -> String {
    let part = |label: &str, values: &[f64]| match summarize(values) {
        Some(s) => format!(
            "{} {label} values (median {})",
            s.count,
            fmt_value(s.median)
        ),
        None => format!("0 {label} values"),
    };
    format!(
        "too few samples to judge: {} and {} after dropping NaN, at least {MIN_SAMPLES} of each are needed",
        part("release", test),
        part("baseline", baseline),
    )
}

/// `values` without NaN, sorted ascending.
fn sorted_without_nan(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Linear-interpolation percentile of sorted, non-empty, NaN-free `sorted`; `q` in 0..=1.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    let (a, b) = (sorted[lo], sorted[hi]);
    // The guard keeps infinities from turning into inf - inf = NaN.
    if lo == hi || a == b {
        a
    } else {
        a + (h - lo as f64) * (b - a)
    }
}

/// `test / baseline`, with the zero-baseline cases of the module documentation.
fn median_ratio(test: f64, baseline: f64) -> f64 {
    if baseline != 0.0 {
        test / baseline
    } else if test > 0.0 {
        f64::INFINITY
    } else if test < 0.0 {
        f64::NEG_INFINITY
    } else if test == 0.0 {
        1.0
    } else {
        f64::NAN
    }
}

/// Upper tail of the standard normal distribution, `1 - Phi(z)`.
fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    if x >= 0.0 {
        0.5 * erfc(x)
    } else {
        1.0 - 0.5 * erfc(-x)
    }
}

/// Complementary error function for `x >= 0`, to about 1e-15 relative error.
///
/// Below 2 it is `1 - erf(x)` with the series `erf(x) = 2/sqrt(pi) exp(-x^2) sum_k
/// (2x^2)^k x / (1 3 5 ... (2k+1))`, whose terms are all positive (no cancellation).
/// From 2 on it is the continued fraction `erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x
/// + 1/(x + (3/2)/(x + ...))))`, evaluated with the modified Lentz method.
fn erfc(x: f64) -> f64 {
    const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 2.0 {
        let two_x2 = 2.0 * x * x;
        let mut term = x;
        let mut sum = x;
        let mut k = 0.0;
        while term > sum * 1e-17 {
            k += 1.0;
            term *= two_x2 / (2.0 * k + 1.0);
            sum += term;
        }
        return 1.0 - 2.0 * FRAC_1_SQRT_PI * (-x * x).exp() * sum;
    }
    if x > 27.0 {
        return 0.0; // exp(-x^2) underflows
    }
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..1000 {
        let a = f64::from(k) / 2.0;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    FRAC_1_SQRT_PI * (-x * x).exp() / f
}

/// A measurement for a sentence: three decimals, or scientific notation when tiny.
fn fmt_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// A p-value for a sentence: three decimals, or scientific notation below 0.001.
fn fmt_p(p: f64) -> String {
    if p == 0.0 {
        "0".to_owned()
    } else if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// The change an effect-size ratio stands for, e.g. "+20.0%".
fn fmt_change(ratio: f64) -> String {
    if ratio.is_infinite() {
        "baseline median is 0".to_owned()
    } else if ratio.is_nan() {
        "change undefined".to_owned()
    } else {
        format!("{:+.1}%", (ratio - 1.0) * 100.0)
    }
}

/// A floor ratio as a percentage without a needless ".0", e.g. "+10%", "-9.1%".
fn fmt_floor(ratio: f64) -> String {
    let s = format!("{:+.1}", (ratio - 1.0) * 100.0);
    let s = s.strip_suffix(".0").unwrap_or(&s);
    if s == "+0" || s == "-0" {
        "0%".to_owned()
    } else {
        format!("{s}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tol: f64) -> bool {
        (actual - expected).abs() <= tol
    }

    /// Checks U, z and p against a reference. U and z are checked to 1e-9; p to 1e-6
    /// absolute and, for small p, 1e-9 relative.
    #[track_caller]
    fn check(test: &[f64], baseline: &[f64], u: f64, z: f64, p: f64) {
        let mw = mann_whitney(test, baseline).expect("enough samples");
        assert!(close(mw.u, u, 1e-9), "u = {}, expected {u}", mw.u);
        assert!(close(mw.z, z, 1e-9), "z = {}, expected {z}", mw.z);
        assert!(
            close(mw.p_value, p, 1e-6),
            "p = {}, expected {p}",
            mw.p_value
        );
        assert!(
            close(mw.p_value / p, 1.0, 1e-9),
            "p = {}, expected {p}",
            mw.p_value
        );
        assert_eq!(mw.n_test, test.len());
        assert_eq!(mw.n_baseline, baseline.len());
        let r = 2.0 * u / (test.len() * baseline.len()) as f64 - 1.0;
        assert!(close(mw.rank_biserial, r, 1e-12));
    }

    // Reference values below come from scipy 1.17.1's asymptotic method:
    // scipy.stats.mannwhitneyu(test, baseline, alternative='two-sided',
    // method='asymptotic', use_continuity=True) for U (its `statistic`) and p (its
    // `pvalue`); z is scipy's _get_mwu_z with the sign of U - n1*n2/2 attached, i.e.
    // sign(d) * max(|d| - 0.5, 0) / sigma, and 2 * norm.sf(|z|) reproduces p exactly.

    #[test]
    fn mann_whitney_no_ties_unequal_sizes() {
        check(
            &[1.1, 2.3, 3.7, 4.2, 5.9, 6.1, 7.4],
            &[0.5, 1.9, 2.2, 2.8, 3.1],
            29.0,
            1.786_395_474_470_530_4,
            0.074_035_247_854_896_64,
        );
    }

    #[test]
    fn mann_whitney_ties() {
        check(
            &[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0],
            &[2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 7.0],
            16.5,
            -1.862_839_891_815_417_2,
            0.062_484_795_672_341_206,
        );
    }

    #[test]
    fn mann_whitney_heavy_ties() {
        check(
            &[0.0, 0.0, 0.0, 1.0, 1.0, 2.0],
            &[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0],
            18.0,
            -0.761_106_042_156_680_9,
            0.446_593_731_842_265_8,
        );
    }

    #[test]
    fn mann_whitney_fully_separated() {
        let test: Vec<f64> = (0..20).map(|i| f64::from(10 + i)).collect();
        let baseline: Vec<f64> = (0..15).map(|i| f64::from(i) * 0.5).collect();
        check(
            &test,
            &baseline,
            300.0,
            4.983_333_333_333_333,
            6.249_814_797_861_823e-7,
        );
        let mw = mann_whitney(&test, &baseline).unwrap();
        assert_eq!(mw.rank_biserial, 1.0);
    }

    #[test]
    fn mann_whitney_latencies_with_ties() {
        check(
            &[
                0.121, 0.118, 0.125, 0.130, 0.119, 0.122, 0.127, 0.124, 0.120, 0.126, 0.123, 0.128,
            ],
            &[
                0.101, 0.099, 0.104, 0.100, 0.098, 0.103, 0.102, 0.097, 0.105, 0.100, 0.118, 0.121,
                0.099, 0.102,
            ],
            164.0,
            4.092_538_165_970_077,
            4.266_769_890_602_14e-5,
        );
    }

    #[test]
    fn mann_whitney_near_center() {
        check(
            &[1.0, 2.0, 3.0, 4.0],
            &[1.5, 2.5, 3.5, 4.5],
            6.0,
            -0.433_012_701_892_219_35,
            0.665_005_542_102_029_1,
        );
    }

    #[test]
    fn mann_whitney_swapping_samples_mirrors() {
        let a = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0];
        let b = [2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 7.0];
        let ab = mann_whitney(&a, &b).unwrap();
        let ba = mann_whitney(&b, &a).unwrap();
        assert_eq!(ab.u + ba.u, 72.0);
        assert_eq!(ab.z, -ba.z);
        assert_eq!(ab.p_value, ba.p_value);
        assert_eq!(ab.rank_biserial, -ba.rank_biserial);
    }

    #[test]
    fn mann_whitney_identical_samples() {
        let mw = mann_whitney(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert_eq!(
            (mw.u, mw.z, mw.p_value, mw.rank_biserial),
            (4.5, 0.0, 1.0, 0.0)
        );
        assert_eq!(mw.effect_size, 1.0);
    }

    #[test]
    fn mann_whitney_all_equal_has_no_variance() {
        let mw = mann_whitney(&[5.0; 4], &[5.0; 6]).unwrap();
        assert_eq!((mw.u, mw.z, mw.p_value), (12.0, 0.0, 1.0));
        assert_eq!(mw.effect_size, 1.0);
        // -0.0 and 0.0 are the same value.
        let mw = mann_whitney(&[0.0, -0.0, 0.0], &[-0.0, 0.0, 0.0]).unwrap();
        assert_eq!((mw.z, mw.p_value, mw.effect_size), (0.0, 1.0, 1.0));
    }

    #[test]
    fn mann_whitney_needs_three_values_each() {
        assert!(mann_whitney(&[1.0, 2.0], &[1.0, 2.0, 3.0]).is_none());
        assert!(mann_whitney(&[1.0, 2.0, 3.0], &[1.0, 2.0]).is_none());
        assert!(mann_whitney(&[], &[]).is_none());
        assert!(mann_whitney(&[1.0, 2.0, f64::NAN], &[1.0, 2.0, 3.0]).is_none());
        assert!(mann_whitney(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).is_some());
    }

    #[test]
    fn mann_whitney_drops_nan() {
        let test = [1.1, f64::NAN, 2.3, 3.7, 4.2, 5.9, 6.1, 7.4, f64::NAN];
        let baseline = [f64::NAN, 0.5, 1.9, 2.2, 2.8, 3.1];
        check(
            &[1.1, 2.3, 3.7, 4.2, 5.9, 6.1, 7.4],
            &[0.5, 1.9, 2.2, 2.8, 3.1],
            29.0,
            1.786_395_474_470_530_4,
            0.074_035_247_854_896_64,
        );
        let with_nan = mann_whitney(&test, &baseline).unwrap();
        let without = mann_whitney(
            &[1.1, 2.3, 3.7, 4.2, 5.9, 6.1, 7.4],
            &[0.5, 1.9, 2.2, 2.8, 3.1],
        )
        .unwrap();
        assert_eq!(with_nan, without);
        assert_eq!((with_nan.n_test, with_nan.n_baseline), (7, 5));
    }

    #[test]
    fn effect_size_is_ratio_of_medians() {
        let mw = mann_whitney(&[1.0, 12.0, 100.0], &[5.0, 10.0, 11.0]).unwrap();
        assert!(close(mw.effect_size, 1.2, 1e-12));
        // Baseline median 0.
        let mw = mann_whitney(&[0.0, 1.0, 2.0], &[0.0, 0.0, 1.0]).unwrap();
        assert_eq!(mw.effect_size, f64::INFINITY);
        let mw = mann_whitney(&[-2.0, -1.0, 0.0], &[0.0, 0.0, 1.0]).unwrap();
        assert_eq!(mw.effect_size, f64::NEG_INFINITY);
        let mw = mann_whitney(&[0.0, 0.0, 1.0], &[-1.0, 0.0, 0.0]).unwrap();
        assert_eq!(mw.effect_size, 1.0);
        // Infinite medians.
        let inf = f64::INFINITY;
        let mw = mann_whitney(&[inf; 3], &[1.0, inf, inf]).unwrap();
        assert!(mw.effect_size.is_nan());
    }

    #[test]
    fn normal_sf_matches_scipy() {
        // scipy.stats.norm.sf(z)
        let cases = [
            (0.0, 0.5),
            (0.5, 0.308_537_538_725_986_9),
            (1.0, 0.158_655_253_931_457_07),
            (1.959_963_984_540_054, 0.025),
            (2.5, 0.006_209_665_325_776_132),
            (2.9, 0.001_865_813_300_384_037_5),
            (3.1, 0.000_967_603_213_218_356_3),
            (3.5, 0.000_232_629_079_035_525_02),
            (5.0, 2.866_515_718_791_933e-7),
            (8.0, 6.220_960_574_271_74e-16),
            (10.0, 7.619_853_024_160_47e-24),
            (-1.0, 0.841_344_746_068_542_9),
        ];
        for (z, expected) in cases {
            let sf = normal_sf(z);
            assert!(
                close(sf / expected, 1.0, 1e-12),
                "sf({z}) = {sf}, expected {expected}"
            );
        }
        assert_eq!(normal_sf(40.0), 0.0);
        assert_eq!(normal_sf(-40.0), 1.0);
    }

    #[test]
    fn summary_odd_and_even() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Summary {
                count: 3,
                min: 1.0,
                max: 3.0,
                mean: 2.0,
                median: 2.0,
                p95: 2.9
            }
        );
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            (s.count, s.min, s.max, s.mean, s.median),
            (4, 1.0, 4.0, 2.5, 2.5)
        );
        assert!(close(s.p95, 3.85, 1e-12)); // numpy.percentile([1,2,3,4], 95)
    }

    #[test]
    fn summary_p95_of_1_to_100() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&values).unwrap();
        assert_eq!(
            (s.count, s.min, s.max, s.mean, s.median),
            (100, 1.0, 100.0, 50.5, 50.5)
        );
        assert!(close(s.p95, 95.05, 1e-9)); // numpy.percentile(range(1, 101), 95)
    }

    #[test]
    fn summary_single_value() {
        let s = summarize(&[7.5]).unwrap();
        assert_eq!(
            s,
            Summary {
                count: 1,
                min: 7.5,
                max: 7.5,
                mean: 7.5,
                median: 7.5,
                p95: 7.5
            }
        );
    }

    #[test]
    fn summary_empty_and_nan() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN, f64::NAN]), None);
        let s = summarize(&[f64::NAN, 2.0, 1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!(s, summarize(&[1.0, 2.0, 3.0]).unwrap());
        assert_eq!(s.count, 3);
    }

    #[test]
    fn summary_keeps_infinities() {
        let s = summarize(&[1.0, 2.0, f64::INFINITY, f64::INFINITY]).unwrap();
        assert_eq!(
            (s.max, s.mean, s.median, s.p95),
            (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::INFINITY)
        );
        assert_eq!(s.min, 1.0);
    }

    /// 30 release values around 0.120 against 30 baseline values around 0.100.
    fn slower() -> (Vec<f64>, Vec<f64>) {
        let spread = |i: i32| (f64::from(i % 10) - 4.5) * 0.001; // -0.0045 ..= 0.0045
        let test = (0..30).map(|i| 0.120 + spread(i)).collect();
        let baseline = (0..30).map(|i| 0.100 + spread(i)).collect();
        (test, baseline)
    }

    #[test]
    fn judge_increase_fails_above_floor() {
        let (test, baseline) = slower();
        let j = judge(&test, &baseline, Direction::Increase, 0.05, 1.1);
        assert_eq!(j.verdict, Verdict::Fail);
        let mw = j.test.unwrap();
        assert!(mw.p_value < 1e-6 && mw.z > 0.0);
        assert!(close(mw.effect_size, 0.120 / 0.100, 1e-9));
        assert!(
            j.reason
                .starts_with("release median 0.120 vs baseline 0.100 (+20.0%), p = "),
            "{}",
            j.reason
        );
        assert!(
            j.reason.ends_with(
                " < 0.05 with 30 and 30 samples: significantly higher, above the +10% floor"
            ),
            "{}",
            j.reason
        );
    }

    #[test]
    fn judge_increase_passes_below_floor() {
        let (test, baseline) = slower();
        let j = judge(&test, &baseline, Direction::Increase, 0.05, 1.25);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(
            j.reason
                .ends_with("significantly higher, but within the +25% floor"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn judge_increase_passes_good_direction() {
        let (test, baseline) = slower();
        let j = judge(&baseline, &test, Direction::Increase, 0.05, 1.1);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(j.test.unwrap().z < 0.0);
        assert!(j.reason.contains("(-16.7%)"), "{}", j.reason);
        assert!(
            j.reason
                .ends_with("significantly lower, which is fine since only an increase is bad"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn judge_not_significant_passes() {
        let test = [1.0, 2.0, 3.0, 4.0];
        let baseline = [1.5, 2.5, 3.5, 4.5];
        for direction in [Direction::Increase, Direction::Decrease, Direction::Either] {
            let j = judge(&test, &baseline, direction, 0.05, 1.0);
            assert_eq!(j.verdict, Verdict::Pass);
            assert_eq!(
                j.reason,
                "release median 2.500 vs baseline 3.000 (-16.7%), p = 0.665 >= 0.05 with 4 and 4 \
                 samples: no significant difference"
            );
        }
    }

    #[test]
    fn judge_decrease() {
        let (high, low) = slower();
        // Release lower: 0.100 / 0.120 = 0.833, below 1 / 1.1 = 0.909.
        let j = judge(&low, &high, Direction::Decrease, 0.05, 1.1);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reason
                .ends_with("significantly lower, below the -9.1% floor"),
            "{}",
            j.reason
        );
        // ...but within 1 / 1.25 = 0.8.
        let j = judge(&low, &high, Direction::Decrease, 0.05, 1.25);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(
            j.reason
                .ends_with("significantly lower, but within the -20% floor"),
            "{}",
            j.reason
        );
        // Release higher is fine.
        let j = judge(&high, &low, Direction::Decrease, 0.05, 1.1);
        assert_eq!(j.verdict, Verdict::Pass);
        assert!(
            j.reason
                .ends_with("significantly higher, which is fine since only a decrease is bad"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn judge_either() {
        let (high, low) = slower();
        let up = judge(&high, &low, Direction::Either, 0.05, 1.1);
        assert_eq!(up.verdict, Verdict::Fail);
        assert!(
            up.reason
                .ends_with("significantly higher, above the +10% floor")
        );
        let down = judge(&low, &high, Direction::Either, 0.05, 1.1);
        assert_eq!(down.verdict, Verdict::Fail);
        assert!(
            down.reason
                .ends_with("significantly lower, below the -9.1% floor")
        );
        let within = judge(&high, &low, Direction::Either, 0.05, 1.5);
        assert_eq!(within.verdict, Verdict::Pass);
        assert!(
            within
                .reason
                .ends_with("significantly higher, but within the +50% floor")
        );
    }

    #[test]
    fn judge_alpha_is_strict() {
        // p = 0.0740... for this pair (see mann_whitney_no_ties_unequal_sizes).
        let test = [1.1, 2.3, 3.7, 4.2, 5.9, 6.1, 7.4];
        let baseline = [0.5, 1.9, 2.2, 2.8, 3.1];
        assert_eq!(
            judge(&test, &baseline, Direction::Increase, 0.05, 1.0).verdict,
            Verdict::Pass
        );
        let j = judge(&test, &baseline, Direction::Increase, 0.1, 1.0);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reason.contains("p = 0.074 < 0.1 with 7 and 5 samples"),
            "{}",
            j.reason
        );
        assert!(j.reason.ends_with("above the 0% floor"), "{}", j.reason);
        // A floor below 1 means no floor.
        assert_eq!(
            judge(&test, &baseline, Direction::Increase, 0.1, 0.5).verdict,
            Verdict::Fail
        );
        assert_eq!(
            judge(&test, &baseline, Direction::Increase, f64::NAN, 1.0).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn judge_effect_exactly_at_floor_fails() {
        let test = [10.0, 11.0, 12.0, 13.0, 14.0];
        let baseline = [1.0, 2.0, 3.0, 4.0, 5.0];
        let j = judge(&test, &baseline, Direction::Increase, 0.05, 4.0);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reason
                .ends_with("significantly higher, at the +300% floor"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn judge_zero_baseline_median() {
        let test = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06];
        let baseline = [0.0, 0.0, 0.0, 0.0, 0.0, 0.01];
        let j = judge(&test, &baseline, Direction::Increase, 0.05, 1.1);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.test.unwrap().effect_size, f64::INFINITY);
        assert!(j.reason.contains("(baseline median is 0)"), "{}", j.reason);
    }

    #[test]
    fn judge_inconclusive_with_too_few_samples() {
        for direction in [Direction::Increase, Direction::Decrease, Direction::Either] {
            let j = judge(&[0.12, 0.13], &[0.1, 0.1, 0.1], direction, 0.05, 1.1);
            assert_eq!(j.verdict, Verdict::Inconclusive);
            assert_eq!(j.test, None);
            assert_eq!(
                j.reason,
                "too few samples to judge: 2 release values (median 0.125) and 3 baseline values \
                 (median 0.100) after dropping NaN, at least 3 of each are needed"
            );
        }
        let j = judge(&[f64::NAN; 5], &[], Direction::Increase, 0.05, 1.1);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(
            j.reason,
            "too few samples to judge: 0 release values and 0 baseline values after dropping \
             NaN, at least 3 of each are needed"
        );
    }

    #[test]
    fn judge_ignores_nan() {
        let (mut test, mut baseline) = slower();
        let clean = judge(&test, &baseline, Direction::Increase, 0.05, 1.1);
        test.extend([f64::NAN, f64::NAN]);
        baseline.insert(0, f64::NAN);
        let noisy = judge(&test, &baseline, Direction::Increase, 0.05, 1.1);
        assert_eq!(noisy, clean);
        assert!(noisy.reason.contains("with 30 and 30 samples"));
    }

    #[test]
    fn judge_undefined_effect_is_inconclusive() {
        let inf = f64::INFINITY;
        let test = [inf, inf, inf, inf, inf, inf];
        let baseline = [1.0, 2.0, 3.0, inf, inf, inf];
        let j = judge(&test, &baseline, Direction::Increase, 0.1, 1.1);
        let mw = j.test.unwrap();
        assert!(
            mw.effect_size.is_nan() && mw.z > 0.0 && mw.p_value < 0.1,
            "{mw:?}"
        );
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(
            j.reason
                .ends_with("significantly higher, but the effect size is undefined"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(fmt_value(0.12), "0.120");
        assert_eq!(fmt_value(0.0), "0.000");
        assert_eq!(fmt_value(0.000_123), "1.23e-4");
        assert_eq!(fmt_p(0.003_14), "0.003");
        assert_eq!(fmt_p(4.3e-5), "4.3e-5");
        assert_eq!(fmt_p(0.0), "0");
        assert_eq!(fmt_floor(1.1), "+10%");
        assert_eq!(fmt_floor(1.0 / 1.1), "-9.1%");
        assert_eq!(fmt_floor(1.0), "0%");
        assert_eq!(fmt_change(1.2), "+20.0%");
    }
}
