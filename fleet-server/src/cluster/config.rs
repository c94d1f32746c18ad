//! `[cluster]` of `fleet-server.toml`: this instance's id, its heartbeat, the leader lease.

use serde::Deserialize;

/// Longest accepted instance id (it is a primary key and a log field).
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// `[cluster]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This instance's id in `instances`, session owners and leases; default
    /// `HOSTNAME-PID-START` (a process lifetime: a restarted instance is a new one).
    pub instance_id: Option<String>,
    /// How often the instance heartbeats and renews a lease it holds, milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a lease (and a heartbeat) stays valid without renewal, milliseconds: the
    /// longest a dead or frozen leader's jobs wait for a successor.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    1_000
}
fn default_lease_ms() -> u64 {
    5_000
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            instance_id: None,
            heartbeat_ms: default_heartbeat_ms(),
            lease_ms: default_lease_ms(),
        }
    }
}

/// `[cluster]` validated, with the instance id chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub instance_id: String,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
}

impl ClusterConfig {
    /// The defaults with a generated instance id (tests, the demo).
    pub fn generated() -> Self {
        let s = ClusterSection::default();
        Self {
            instance_id: generated_id(),
            heartbeat_ms: s.heartbeat_ms,
            lease_ms: s.lease_ms,
        }
    }
}

impl ClusterSection {
    /// Every problem, each naming its key under `prefix` (`cluster`).
    pub fn validate(&self, prefix: &str) -> Result<ClusterConfig, Vec<String>> {
        let mut p = Vec::new();
        if let Some(id) = &self.instance_id
            && let Err(why) = check_id(id)
        {
            p.push(format!("{prefix}.instance_id: {id:?} {why}"));
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            p.push(format!(
                "{prefix}.heartbeat_ms: {} is outside 100..=60000",
                self.heartbeat_ms
            ));
        }
        if self.lease_ms < 2 * self.heartbeat_ms || self.lease_ms > 600_000 {
            p.push(format!(
                "{prefix}.lease_ms: {} must be at least twice heartbeat_ms ({}) and at most 600000",
                self.lease_ms, self.heartbeat_ms
            ));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(ClusterConfig {
            instance_id: self.instance_id.clone().unwrap_or_else(generated_id),
            heartbeat_ms: self.heartbeat_ms,
            lease_ms: self.lease_ms,
        })
    }
}

/// Why `id` cannot be an instance id, if it cannot.
fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
        return Err("must be 1 to 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may hold only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// `HOSTNAME-PID-START`: unique per process lifetime on one host; a second id made in the same
/// process (in-process test servers, which may start within one millisecond) gets `-N`
/// appended, so two servers of one process never register as one instance.
fn generated_id() -> String {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(32)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fleet-server".to_string());
    let start = common::time::now_ms() % 1_000_000_000;
    let id = format!("{host}-{}-{start:x}", std::process::id());
    match MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => id,
        n => format!("{id}-{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_generate_a_usable_id() {
        let c = ClusterSection::default().validate("cluster").unwrap();
        assert!(check_id(&c.instance_id).is_ok(), "{}", c.instance_id);
        assert_eq!((c.heartbeat_ms, c.lease_ms), (1_000, 5_000));
    }

    #[test]
    fn bad_keys_are_named() {
        let s = ClusterSection {
            instance_id: Some("a b".into()),
            heartbeat_ms: 50,
            lease_ms: 60,
        };
        let p = s.validate("cluster").unwrap_err();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("cluster.instance_id:"), "{p:?}");
        assert!(p[1].starts_with("cluster.heartbeat_ms:"), "{p:?}");
        assert!(p[2].starts_with("cluster.lease_ms:"), "{p:?}");
        let long = ClusterSection {
            instance_id: Some("x".repeat(65)),
            ..ClusterSection::default()
        };
        assert!(long.validate("cluster").is_err());
    }

    #[test]
    fn ids_generated_in_one_process_differ() {
        let (a, b) = (generated_id(), generated_id());
        assert_ne!(a, b);
        assert!(check_id(&a).is_ok() && check_id(&b).is_ok(), "{a} {b}");
    }

    #[test]
    fn a_given_id_is_kept() {
        let s = ClusterSection {
            instance_id: Some("fleet-a.eu_1".into()),
            ..ClusterSection::default()
        };
        assert_eq!(s.validate("cluster").unwrap().instance_id, "fleet-a.eu_1");
    }
}
