//! Published and not yet acknowledged records (pure): maps the pkids rumqttc assigns, in the
//! order of our publishes since the last CONNACK, to the buffer keys they carry, so a PUBACK
//! deletes exactly the record that carried its pkid.

use std::collections::{HashMap, VecDeque};

use crate::buffer::Key;

/// Published and not yet acknowledged records, by the order rumqttc assigns pkids.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Publishes issued since the CONNACK that have not been given a pkid yet; `None` for
    /// publishes that are not buffer records (the birth).
    awaiting_pkid: VecDeque<Option<Key>>,
    by_pkid: HashMap<u16, Key>,
    /// Highest seq sent per class since the last CONNACK.
    cursors: [Option<u64>; Key::CLASSES],
}

impl InFlight {
    /// A new session: nothing is in flight any more; resend from the head.
    pub fn reset(&mut self) {
        self.awaiting_pkid.clear();
        self.by_pkid.clear();
        self.cursors = [None; Key::CLASSES];
    }

    pub fn sent(&mut self, key: Option<Key>) {
        if let Some(k) = key {
            let c = &mut self.cursors[k.class as usize];
            *c = Some(c.map_or(k.seq, |s| s.max(k.seq)));
        }
        self.awaiting_pkid.push_back(key);
    }

    pub fn pkid_assigned(&mut self, pkid: u16) {
        if let Some(Some(key)) = self.awaiting_pkid.pop_front() {
            self.by_pkid.insert(pkid, key);
        }
    }

    /// The key a PUBACK acknowledges; `None` for an unknown pkid (ignored).
    pub fn acked(&mut self, pkid: u16) -> Option<Key> {
        self.by_pkid.remove(&pkid)
    }

    pub fn len(&self) -> usize {
        self.awaiting_pkid.iter().filter(|k| k.is_some()).count() + self.by_pkid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cursor(&self, class: u8) -> Option<u64> {
        self.cursors[class as usize]
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn k(seq: u64) -> Key {
        Key {
            class: Key::TELEMETRY,
            seq,
        }
    }

    #[test]
    fn pkids_map_to_keys_in_publish_order() {
        let mut f = InFlight::default();
        f.sent(None); // birth
        f.sent(Some(k(1)));
        f.sent(Some(k(2)));
        f.pkid_assigned(1);
        f.pkid_assigned(2);
        f.pkid_assigned(3);
        assert_eq!(f.acked(3), Some(k(2)));
        assert_eq!(f.acked(1), None, "the birth is not a buffer record");
        assert_eq!(f.acked(2), Some(k(1)));
        assert!(f.is_empty());
    }

    #[test]
    fn puback_for_unknown_pkid_is_ignored() {
        let mut f = InFlight::default();
        assert_eq!(f.acked(9), None);
    }

    #[test]
    fn reset_forgets_in_flight_and_rewinds_cursors() {
        let mut f = InFlight::default();
        f.sent(Some(k(5)));
        f.pkid_assigned(1);
        assert_eq!(f.cursor(Key::TELEMETRY), Some(5));
        f.reset();
        assert_eq!(f.cursor(Key::TELEMETRY), None);
        assert_eq!(f.acked(1), None);
        assert!(f.is_empty());
    }
}
