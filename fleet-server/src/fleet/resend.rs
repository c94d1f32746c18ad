//! Which devices' time-based alert inputs the fleet actor sends on a tick (pure).
//!
//! Every [`super::actor::PRESENCE_TICK`] the fleet actor works out each device's presence and
//! time-based inputs ([`crate::alerts::inputs::DeviceInputs::tick`]). Sending all of them to
//! the alerts actor every second made the tick O(fleet) in allocations and evaluations: at
//! 5,000 machines it was a sixth of the server's CPU, five observations a second per record
//! (issue 25). Most of them repeat the last one: a machine online, nothing dropped, nothing
//! failed. So a device's inputs go out when they differ from the last ones sent, and again
//! every [`REFRESH_MS`] however they stand:
//!
//! - a change goes out on the tick that sees it, so an alert starts pending, and resolves, at
//!   the same time as before;
//! - a pending alert fires from the engine's own tick, and only while its last sample is
//!   younger than [`crate::alerts::engine::PENDING_SAMPLE_MAX_AGE_MS`] (120 s): a refresh
//!   every [`REFRESH_MS`] keeps it fresh with a wide margin;
//! - refreshes are spread over the period by a hash of the device id, so 5,000 machines do
//!   not all resend on the same second.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use common::DeviceId;

/// Unchanged inputs are sent again this often.
pub const REFRESH_MS: i64 = 15_000;

/// The inputs last sent per device, and when.
#[derive(Debug, Default)]
pub struct InputsSent {
    last: HashMap<DeviceId, (Vec<(String, f64)>, i64)>,
}

impl InputsSent {
    /// Whether `metrics`, a device's inputs at `now_ms`, are to be sent; if so they become
    /// the device's last sent.
    pub fn due(&mut self, id: &DeviceId, metrics: &[(String, f64)], now_ms: i64) -> bool {
        match self.last.get_mut(id) {
            Some((last, at)) if same(last, metrics) && now_ms - *at < REFRESH_MS => false,
            Some((last, at)) => {
                last.clear();
                last.extend_from_slice(metrics);
                *at = now_ms;
                true
            }
            None => {
                // as if sent at a point of the last period that depends on the id only
                let spread = BuildHasherDefault::<DefaultHasher>::default().hash_one(id.as_str());
                let at = now_ms - (spread % REFRESH_MS as u64) as i64;
                self.last.insert(id.clone(), (metrics.to_vec(), at));
                true
            }
        }
    }

    /// Forgets devices `keep` says no longer exist.
    pub fn retain(&mut self, mut keep: impl FnMut(&DeviceId) -> bool) {
        self.last.retain(|id, _| keep(id));
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// Same names and values, bit for bit (a NaN is sent every time: it never equals itself).
fn same(a: &[(String, f64)], b: &[(String, f64)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((n, v), (m, w))| n == m && v == w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn m(offline: f64) -> Vec<(String, f64)> {
        vec![("presence.offline".into(), offline)]
    }

    #[test]
    fn a_change_goes_out_at_once_and_unchanged_inputs_once_a_period() {
        let mut s = InputsSent::default();
        let d = id("rvm1");
        assert!(s.due(&d, &m(0.0), 1_000), "first sight");
        // unchanged: not before the refresh comes round, then once a period
        let sent: Vec<i64> = (1..=40)
            .map(|k| 1_000 + k * 1_000)
            .filter(|t| s.due(&d, &m(0.0), *t))
            .collect();
        assert!((2..=3).contains(&sent.len()), "{sent:?}");
        assert!(sent.windows(2).all(|w| w[1] - w[0] == REFRESH_MS), "{sent:?}");
        // a change goes out on the tick that sees it, and back again too
        assert!(s.due(&d, &m(1.0), 41_500));
        assert!(!s.due(&d, &m(1.0), 42_500));
        assert!(s.due(&d, &m(0.0), 43_500));
        // a new input (a drop reported) is a change
        let mut more = m(0.0);
        more.push(("agent.records_dropped".into(), 1.0));
        assert!(s.due(&d, &more, 44_500));
    }

    #[test]
    fn refreshes_of_many_devices_are_spread_over_the_period() {
        let mut s = InputsSent::default();
        let ids: Vec<DeviceId> = (0..1_000).map(|i| id(&format!("fleet{i:04}"))).collect();
        for d in &ids {
            assert!(s.due(d, &m(0.0), 0));
        }
        assert_eq!(s.len(), 1_000);
        // every second of the next period some refresh, none twice, all of them once
        let per_second: Vec<usize> = (1..=15)
            .map(|k| ids.iter().filter(|d| s.due(d, &m(0.0), k * 1_000)).count())
            .collect();
        assert_eq!(per_second.iter().sum::<usize>(), 1_000, "{per_second:?}");
        assert!(
            per_second.iter().all(|n| (20..=130).contains(n)),
            "{per_second:?}"
        );
        s.retain(|d| d.as_str() < "fleet0500");
        assert_eq!(s.len(), 500);
    }

    #[test]
    fn a_nan_is_never_the_same() {
        let mut s = InputsSent::default();
        let d = id("rvm1");
        assert!(s.due(&d, &m(f64::NAN), 0));
        assert!(s.due(&d, &m(f64::NAN), 1_000));
    }
}
