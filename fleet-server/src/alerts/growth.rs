//! A leak detector for rules with `growth_window_s` (issue 24): the input of such a rule is
//! how much the metric rose over the last window, provided it never fell in that window;
//! 0 while the window is not yet covered or right after a fall.
//!
//! A watched process whose RSS or open descriptors only ever go up is leaking; one that
//! grows at start and then levels off is not (its rise over the window returns to 0 and the
//! alert resolves), nor one that frees what it took (a fall starts over). Pure and bounded:
//! at most [`BUCKETS`] + 2 samples per (rule, device), whatever the sample rate.

use std::collections::VecDeque;

/// Samples kept per window: one per window / BUCKETS, so a rise is measured to within a
/// sixteenth of the window.
pub const BUCKETS: i64 = 16;

#[derive(Debug, Clone, Default)]
pub struct GrowthWindow {
    samples: VecDeque<(i64, f64)>,
    last: Option<f64>,
}

impl GrowthWindow {
    /// Adds the sample `value` at `at_ms` and returns the rise over the last `window_ms`
    /// (0 if the metric fell within it or the window is not covered yet).
    pub fn push(&mut self, at_ms: i64, value: f64, window_ms: i64) -> f64 {
        if self.last.is_some_and(|l| value < l) {
            self.samples.clear();
        }
        self.last = Some(value);
        let step = (window_ms / BUCKETS).max(1);
        match self.samples.back_mut() {
            Some((t, _)) if at_ms - *t < step => {}
            _ => self.samples.push_back((at_ms, value)),
        }
        let start = at_ms - window_ms;
        while self.samples.len() >= 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some((t, first)) if *t <= start => value - first,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 30_000;

    #[test]
    fn a_steady_rise_counts_once_the_window_is_covered() {
        let mut g = GrowthWindow::default();
        let mut last = 0.0;
        for s in 0..=60 {
            last = g.push(s * 1000, 48.0 + 7.0 * s as f64, W);
            if s < 30 {
                assert_eq!(last, 0.0, "window not covered at {s}s");
            }
        }
        assert!((last - 7.0 * 30.0).abs() <= 7.0 * 2.0, "{last}");
        assert!(g.samples.len() as i64 <= BUCKETS + 2, "{}", g.samples.len());
    }

    #[test]
    fn a_fall_starts_over_and_a_plateau_returns_to_zero() {
        let mut g = GrowthWindow::default();
        for s in 0..40 {
            g.push(s * 1000, s as f64, W);
        }
        assert_eq!(g.push(40_000, 5.0, W), 0.0, "fell: no leak");
        let mut v = 0.0;
        for s in 41..120 {
            v = g.push(s * 1000, 100.0, W);
        }
        assert_eq!(v, 0.0, "levelled off long ago");
    }

    #[test]
    fn a_flat_series_never_counts() {
        let mut g = GrowthWindow::default();
        assert!((0..100).all(|s| g.push(s * 1000, 48.0, W) == 0.0));
    }
}
