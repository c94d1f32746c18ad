//! Which sessions this instance holds, and when one of them is stale (pure).
//!
//! `session_owners` has one row per machine: the instance whose broker accepted its latest
//! session and an epoch that every CONNECT anywhere bumps. This instance remembers, for each
//! machine whose session its own broker holds, the epoch its upsert was given. A session is
//! stale when the row names another instance at a higher epoch: the machine connected there
//! after it connected here (a half-open TCP connection the machine already gave up, or a
//! second process with the same certificate). A stale session is ended, so the machine has
//! one session and commands have one way to reach it.
//!
//! NOTIFY `fleet_session` (payload `device instance epoch`) only says "look"; the table is the
//! truth, re-read when the listener (re)connects and every [`super::REREAD_INTERVAL`].

use std::collections::HashMap;

use common::DeviceId;

/// One row of `session_owners`, or what a `fleet_session` notification says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub device: DeviceId,
    pub instance: String,
    pub epoch: i64,
}

/// Why a `fleet_session` payload was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("fleet_session payload {0:?}: expected \"device instance epoch\"")]
    Shape(String),
    #[error("fleet_session payload {payload:?}: device: {reason}")]
    Device { payload: String, reason: String },
    #[error("fleet_session payload {0:?}: epoch is not an integer")]
    Epoch(String),
}

/// Parses a `fleet_session` payload (`device instance epoch`, as the trigger in
/// migrations/0001_init.sql writes it).
pub fn parse_note(payload: &str) -> Result<Owner, NoteError> {
    let mut it = payload.split(' ');
    let (Some(device), Some(instance), Some(epoch), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(NoteError::Shape(payload.to_string()));
    };
    if instance.is_empty() {
        return Err(NoteError::Shape(payload.to_string()));
    }
    let device = DeviceId::new(device).map_err(|e| NoteError::Device {
        payload: payload.to_string(),
        reason: e.to_string(),
    })?;
    let epoch = epoch.parse().map_err(|_| NoteError::Epoch(payload.to_string()))?;
    Ok(Owner {
        device,
        instance: instance.to_string(),
        epoch,
    })
}

/// A session this instance's broker holds: the epoch its upsert was given, and the handle to
/// end it (generic: the broker's session in the server, anything in tests).
#[derive(Debug, Clone)]
pub struct Held<S> {
    pub epoch: i64,
    pub session: S,
}

/// The sessions this instance holds, by machine.
#[derive(Debug)]
pub struct Holdings<S> {
    me: String,
    held: HashMap<DeviceId, Held<S>>,
}

impl<S> Holdings<S> {
    pub fn new(me: &str) -> Self {
        Holdings {
            me: me.to_string(),
            held: HashMap::new(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn devices(&self) -> Vec<DeviceId> {
        self.held.keys().cloned().collect()
    }

    /// This broker accepted `session` of `device`, and the upsert gave it `epoch`. A late
    /// answer for an older session never replaces a newer one.
    pub fn hold(&mut self, device: DeviceId, epoch: i64, session: S) {
        match self.held.get(&device) {
            Some(h) if h.epoch > epoch => {}
            _ => {
                self.held.insert(device, Held { epoch, session });
            }
        }
    }

    /// The session of `device` ended here; forgotten if it is the one held (`same`).
    pub fn release(&mut self, device: &DeviceId, same: impl Fn(&S) -> bool) {
        if self.held.get(device).is_some_and(|h| same(&h.session)) {
            self.held.remove(device);
        }
    }

    /// Whether `owner` (a notification or a row) makes the session held for its device stale:
    /// another instance holds the machine at a higher epoch.
    pub fn is_stale(&self, owner: &Owner) -> bool {
        owner.instance != self.me
            && self
                .held
                .get(&owner.device)
                .is_some_and(|h| owner.epoch > h.epoch)
    }

    /// Takes the held session that `owner` makes stale, if it does (the caller ends it).
    pub fn take_stale(&mut self, owner: &Owner) -> Option<Held<S>> {
        if self.is_stale(owner) {
            self.held.remove(&owner.device)
        } else {
            None
        }
    }

    /// After re-reading the rows of the held devices: every held session they make stale,
    /// taken out.
    pub fn take_stale_rows(&mut self, rows: &[Owner]) -> Vec<(DeviceId, Held<S>)> {
        rows.iter()
            .filter_map(|r| self.take_stale(r).map(|h| (r.device.clone(), h)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn d(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn owner(dev: &str, inst: &str, epoch: i64) -> Owner {
        Owner {
            device: d(dev),
            instance: inst.into(),
            epoch,
        }
    }

    #[test]
    fn a_payload_of_the_trigger_parses_and_malformed_ones_name_what_is_wrong() {
        assert_eq!(
            parse_note("rvm7 fleet-a 12").unwrap(),
            owner("rvm7", "fleet-a", 12)
        );
        assert!(matches!(parse_note("rvm7 fleet-a"), Err(NoteError::Shape(_))));
        assert!(matches!(parse_note("rvm7 fleet-a 1 x"), Err(NoteError::Shape(_))));
        assert!(matches!(parse_note("rvm7  1"), Err(NoteError::Shape(_))));
        assert!(matches!(
            parse_note("rvm7 fleet-a twelve"),
            Err(NoteError::Epoch(_))
        ));
        assert!(matches!(
            parse_note("bad/id fleet-a 1"),
            Err(NoteError::Device { .. })
        ));
        let e = parse_note("rvm7 fleet-a twelve").unwrap_err().to_string();
        assert!(e.contains("epoch"), "{e}");
    }

    #[test]
    fn a_newer_epoch_on_another_instance_makes_the_held_session_stale() {
        let mut h = Holdings::new("a");
        h.hold(d("m1"), 4, "s1");
        assert!(h.is_stale(&owner("m1", "b", 5)));
        let taken = h.take_stale(&owner("m1", "b", 5)).unwrap();
        assert_eq!((taken.epoch, taken.session), (4, "s1"));
        assert!(h.is_empty(), "a stale session is ended once");
        assert!(h.take_stale(&owner("m1", "b", 5)).is_none());
    }

    #[test]
    fn our_own_notification_an_older_epoch_or_an_unheld_device_is_never_stale() {
        let mut h = Holdings::new("a");
        h.hold(d("m1"), 4, "s1");
        assert!(!h.is_stale(&owner("m1", "a", 9)), "this instance's own upsert");
        assert!(!h.is_stale(&owner("m1", "b", 3)), "an older session elsewhere");
        assert!(!h.is_stale(&owner("m1", "b", 4)), "the same epoch is ours");
        assert!(!h.is_stale(&owner("m2", "b", 100)), "not held here");
    }

    #[test]
    fn a_late_upsert_answer_for_an_older_session_keeps_the_newer_one() {
        let mut h = Holdings::new("a");
        h.hold(d("m1"), 7, "new");
        h.hold(d("m1"), 6, "old");
        assert!(h.is_stale(&owner("m1", "b", 8)));
        assert!(!h.is_stale(&owner("m1", "b", 7)));
        assert_eq!(h.take_stale(&owner("m1", "b", 8)).unwrap().session, "new");
    }

    #[test]
    fn only_the_session_held_is_released() {
        let mut h = Holdings::new("a");
        h.hold(d("m1"), 2, "s2");
        h.release(&d("m1"), |s| *s == "s1");
        assert_eq!(h.len(), 1, "the end of an older session changes nothing");
        h.release(&d("m1"), |s| *s == "s2");
        assert!(h.is_empty());
    }

    #[test]
    fn re_read_rows_take_out_every_stale_session_and_only_those() {
        let mut h = Holdings::new("a");
        for (i, m) in ["m1", "m2", "m3"].iter().enumerate() {
            h.hold(d(m), i as i64 + 1, *m);
        }
        let rows = [owner("m1", "b", 2), owner("m2", "a", 2), owner("m3", "c", 3)];
        let stale: Vec<DeviceId> = h.take_stale_rows(&rows).into_iter().map(|(d, _)| d).collect();
        assert_eq!(stale, vec![d("m1")]);
        assert_eq!(h.devices().len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Hold(u8, i64, u32),
        Note(u8, u8, i64),
        Release(u8, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 1i64..20, 0u32..5).prop_map(|(d, e, s)| Op::Hold(d, e, s)),
            (0u8..3, 0u8..3, 1i64..20).prop_map(|(d, i, e)| Op::Note(d, i, e)),
            (0u8..3, 0u32..5).prop_map(|(d, s)| Op::Release(d, s)),
        ]
    }

    proptest! {
        /// Whatever the order of upserts, notifications and session ends: a session is ended
        /// only for another instance at a higher epoch, once, and the epoch held for a machine
        /// never goes down while it is held.
        #[test]
        fn a_session_is_ended_only_for_a_newer_owner_elsewhere_and_only_once(ops in proptest::collection::vec(op(), 1..60)) {
            let names = ["a", "b", "c"];
            let mut h: Holdings<u32> = Holdings::new("a");
            for o in ops {
                match o {
                    Op::Hold(d, e, s) => {
                        let dev = DeviceId::new(format!("m{d}")).unwrap();
                        let before = h.held.get(&dev).map(|x| x.epoch);
                        h.hold(dev.clone(), e, s);
                        let after = h.held.get(&dev).map(|x| x.epoch).unwrap();
                        prop_assert!(after >= before.unwrap_or(i64::MIN));
                    }
                    Op::Note(d, i, e) => {
                        let note = Owner { device: DeviceId::new(format!("m{d}")).unwrap(), instance: names[i as usize].into(), epoch: e };
                        let held = h.held.get(&note.device).map(|x| x.epoch);
                        match h.take_stale(&note) {
                            Some(taken) => {
                                prop_assert_ne!(note.instance.as_str(), "a");
                                prop_assert!(note.epoch > taken.epoch);
                                prop_assert_eq!(Some(taken.epoch), held);
                                prop_assert!(h.take_stale(&note).is_none());
                            }
                            None => prop_assert!(note.instance == "a" || held.is_none_or(|he| he >= note.epoch)),
                        }
                    }
                    Op::Release(d, s) => h.release(&DeviceId::new(format!("m{d}")).unwrap(), |x| *x == s),
                }
            }
        }
    }
}
