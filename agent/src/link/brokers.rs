//! The brokers a machine may use and which one it tries next (pure).
//!
//! Several `fleet-server` instances share one PostgreSQL store, each with its embedded broker
//! (`docs/architecture.md`, "Several instances"). A machine is given all of them
//! (`[mqtt] broker = ["a:8883", "b:8883", "c:8883"]`) and stays on one while it works: a
//! connection is never moved while it is healthy, so a machine's records reach one instance at
//! a time. When the connection is lost (closed, reset, keep-alive timeout) or an attempt fails
//! (refused, TLS or CONNACK refused, timeout), the next attempt goes to the next broker of the
//! list, round robin, after the link's backoff. Nothing else changes on a move: the buffer is
//! the source of truth, and every CONNACK resends from its head.
//!
//! Machines start at a broker chosen from their device id ([`start_index`]), so a fleet
//! configured with the same list spreads over the instances rather than piling onto the
//! first; a list of one behaves exactly like the single broker of before.

use std::fmt;

/// One broker: the host is also the name its TLS certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    pub fn new(host: impl Into<String>, port: u16) -> Broker {
        Broker {
            host: host.into(),
            port,
        }
    }

    /// `host:port` (an IPv6 host in brackets, as written in the config).
    pub fn parse(s: &str) -> Option<Broker> {
        common::addr::split_host_port(s).map(|(host, port)| Broker { host, port })
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the link to the current broker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLoss {
    /// An attempt failed before a CONNACK: refused, unreachable, TLS or CONNACK refused,
    /// timeout.
    ConnectFailed,
    /// An established connection closed, was reset, or its keep-alive timed out.
    Lost,
    /// The machine's own network was cut (the simulator's gate): no broker's fault.
    NetworkCut,
}

/// The index of the broker to try after `loss` on broker `current` of `len`: the next one,
/// round robin, unless the machine's own network was cut (then the same one).
pub fn next_broker(len: usize, current: usize, loss: LinkLoss) -> usize {
    if len == 0 {
        return 0;
    }
    match loss {
        LinkLoss::NetworkCut => current % len,
        LinkLoss::ConnectFailed | LinkLoss::Lost => (current + 1) % len,
    }
}

/// The broker a device starts on: a stable hash of its id (FNV-1a, the same on every
/// build), so identical lists spread a fleet over the instances.
pub fn start_index(device: &str, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % len as u64) as usize
}

/// The brokers of one link and the one it is on.
#[derive(Debug, Clone)]
pub struct BrokerRing {
    brokers: Vec<Broker>,
    current: usize,
}

impl BrokerRing {
    /// Starts `device` on its [`start_index`]. `brokers` must not be empty (the config's
    /// validation says so with the key).
    pub fn for_device(device: &str, brokers: Vec<Broker>) -> BrokerRing {
        assert!(!brokers.is_empty(), "a link needs at least one broker");
        let current = start_index(device, brokers.len());
        BrokerRing { brokers, current }
    }

    pub fn current(&self) -> &Broker {
        &self.brokers[self.current]
    }

    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    /// Moves on after `loss`; true when the broker changed.
    pub fn after(&mut self, loss: LinkLoss) -> bool {
        let next = next_broker(self.brokers.len(), self.current, loss);
        let moved = next != self.current;
        self.current = next;
        moved
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring(n: usize) -> BrokerRing {
        BrokerRing {
            brokers: (0..n).map(|i| Broker::new(format!("b{i}"), 8883)).collect(),
            current: 0,
        }
    }

    #[test]
    fn a_lost_connection_moves_to_the_next_broker_round_robin() {
        assert_eq!(next_broker(3, 0, LinkLoss::Lost), 1);
        assert_eq!(next_broker(3, 1, LinkLoss::Lost), 2);
        assert_eq!(next_broker(3, 2, LinkLoss::Lost), 0);
    }

    #[test]
    fn a_failed_attempt_moves_on_as_well() {
        let mut r = ring(3);
        assert!(r.after(LinkLoss::ConnectFailed));
        assert_eq!(r.current().host, "b1");
        assert!(r.after(LinkLoss::ConnectFailed));
        assert!(r.after(LinkLoss::ConnectFailed));
        assert_eq!(r.current().host, "b0", "every broker once, then the first again");
    }

    #[test]
    fn a_cut_network_stays_on_the_same_broker() {
        let mut r = ring(3);
        r.after(LinkLoss::Lost);
        assert!(!r.after(LinkLoss::NetworkCut));
        assert_eq!(r.current().host, "b1");
    }

    #[test]
    fn a_single_broker_is_always_the_one() {
        let mut r = ring(1);
        for loss in [LinkLoss::Lost, LinkLoss::ConnectFailed, LinkLoss::NetworkCut] {
            assert!(!r.after(loss));
            assert_eq!(r.current().host, "b0");
        }
        assert_eq!(start_index("rvm0042", 1), 0);
    }

    #[test]
    fn a_fleet_with_one_list_spreads_over_its_brokers() {
        let mut counts = [0usize; 3];
        for i in 0..300 {
            counts[start_index(&format!("sim{i:04}"), 3)] += 1;
        }
        for c in counts {
            assert!((70..=130).contains(&c), "{counts:?}");
        }
        assert_eq!(start_index("rvm0042", 3), start_index("rvm0042", 3), "stable");
    }

    #[test]
    fn brokers_print_as_written() {
        assert_eq!(
            Broker::parse("a.example:8883").unwrap().to_string(),
            "a.example:8883"
        );
        assert_eq!(Broker::parse("[::1]:8883").unwrap().to_string(), "[::1]:8883");
        assert_eq!(Broker::parse("nohost"), None);
    }

    proptest! {
        #[test]
        fn failures_visit_every_broker_before_any_twice(n in 1usize..8, start in 0usize..8, cut_every in 2usize..5) {
            let mut r = ring(n);
            r.current = start % n;
            let mut seen = vec![r.current];
            let mut i = 0;
            while seen.len() < n {
                i += 1;
                // network cuts in between never skip or repeat a broker
                if i % cut_every == 0 {
                    r.after(LinkLoss::NetworkCut);
                    continue;
                }
                r.after(LinkLoss::Lost);
                prop_assert!(!seen.contains(&r.current), "{seen:?} then {}", r.current);
                seen.push(r.current);
            }
            r.after(LinkLoss::ConnectFailed);
            prop_assert_eq!(r.current, start % n);
        }
    }
}
