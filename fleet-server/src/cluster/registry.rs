//! The instances of a cluster as `GET /api/v1/cluster` and `/metrics` show them: pure, from
//! the rows of `instances` and `leader_lease` and the database's clock (every age is measured
//! on one clock, the database's, never against another instance's).
//!
//! An instance is `alive` while its last heartbeat is younger than `lease_ms`, `stopped` once
//! it stopped cleanly (`stopped_at`), `dead` otherwise (killed, frozen, cut off). A job's
//! leader is the holder of its lease while the lease has not expired; an expired lease has no
//! leader until an instance takes it over.

use serde::Serialize;

/// How an instance is doing, as the database sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Alive,
    Dead,
    Stopped,
}

impl InstanceState {
    pub fn label(self) -> &'static str {
        match self {
            InstanceState::Alive => "alive",
            InstanceState::Dead => "dead",
            InstanceState::Stopped => "stopped",
        }
    }

    pub const ALL: [InstanceState; 3] = [InstanceState::Alive, InstanceState::Dead, InstanceState::Stopped];
}

/// One row of `instances`, times in ms since the epoch (the database's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub id: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub mqtt_addr: Option<String>,
    pub http_addr: Option<String>,
    pub version: String,
    pub stopped_ms: Option<i64>,
}

/// One row of `leader_lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_ms: i64,
}

/// The state of an instance whose last heartbeat was at `heartbeat_ms`, at `now_ms`.
pub fn state_of(row: &InstanceRow, now_ms: i64, lease_ms: i64) -> InstanceState {
    if row.stopped_ms.is_some() {
        InstanceState::Stopped
    } else if now_ms - row.heartbeat_ms < lease_ms {
        InstanceState::Alive
    } else {
        InstanceState::Dead
    }
}

/// An instance as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub state: InstanceState,
    /// This is the instance that answered.
    #[serde(rename = "self")]
    pub this: bool,
    pub version: String,
    pub mqtt_addr: Option<String>,
    pub http_addr: Option<String>,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    pub stopped_ms: Option<i64>,
    /// The jobs whose lease it holds now.
    pub leads: Vec<String>,
}

/// A lease as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderView {
    pub job: String,
    /// The holder while the lease is valid; None while it lapsed and nobody took it yet.
    pub leader: Option<String>,
    pub epoch: i64,
    /// Until when the database keeps it without a renewal (ms since the epoch).
    pub expires_ms: i64,
    /// The last holder (also of a lapsed lease).
    pub holder: String,
}

/// The whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The instance that answered.
    pub instance: String,
    pub backend: &'static str,
    pub lease_ms: i64,
    /// The database's clock when it was read.
    pub now_ms: i64,
    pub instances: Vec<InstanceView>,
    pub leaders: Vec<LeaderView>,
}

impl ClusterView {
    /// Instances by state, every state listed.
    pub fn counts(&self) -> Vec<(InstanceState, u64)> {
        InstanceState::ALL
            .iter()
            .map(|s| (*s, self.instances.iter().filter(|i| i.state == *s).count() as u64))
            .collect()
    }
}

/// The view from the rows read at the database's `now_ms`: instances alive first, then by id.
pub fn view(
    this: &str,
    lease_ms: i64,
    now_ms: i64,
    rows: Vec<InstanceRow>,
    leases: Vec<LeaseRow>,
) -> ClusterView {
    let leaders: Vec<LeaderView> = leases
        .into_iter()
        .map(|l| LeaderView {
            leader: (l.expires_ms > now_ms).then(|| l.holder.clone()),
            job: l.name,
            epoch: l.epoch,
            expires_ms: l.expires_ms,
            holder: l.holder,
        })
        .collect();
    let mut instances: Vec<InstanceView> = rows
        .into_iter()
        .map(|r| InstanceView {
            state: state_of(&r, now_ms, lease_ms),
            this: r.id == this,
            leads: leaders
                .iter()
                .filter(|l| l.leader.as_deref() == Some(r.id.as_str()))
                .map(|l| l.job.clone())
                .collect(),
            heartbeat_age_ms: (now_ms - r.heartbeat_ms).max(0),
            id: r.id,
            version: r.version,
            mqtt_addr: r.mqtt_addr,
            http_addr: r.http_addr,
            started_ms: r.started_ms,
            heartbeat_ms: r.heartbeat_ms,
            stopped_ms: r.stopped_ms,
        })
        .collect();
    instances.sort_by(|a, b| (a.state, &a.id).cmp(&(b.state, &b.id)));
    ClusterView {
        instance: this.to_string(),
        backend: "postgres",
        lease_ms,
        now_ms,
        instances,
        leaders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_row(id: &str, heartbeat_ms: i64, stopped_ms: Option<i64>) -> InstanceRow {
        InstanceRow {
            id: id.into(),
            started_ms: 0,
            heartbeat_ms,
            mqtt_addr: Some("127.0.0.1:8883".into()),
            http_addr: None,
            version: "0.1.0".into(),
            stopped_ms,
        }
    }

    #[test]
    fn an_instance_silent_for_the_lease_is_dead_and_a_stopped_one_is_stopped() {
        let lease = 5_000;
        assert_eq!(
            state_of(&build_row("a", 96_000, None), 100_000, lease),
            InstanceState::Alive
        );
        assert_eq!(
            state_of(&build_row("a", 95_001, None), 100_000, lease),
            InstanceState::Alive
        );
        assert_eq!(
            state_of(&build_row("a", 95_000, None), 100_000, lease),
            InstanceState::Dead
        );
        assert_eq!(
            state_of(&build_row("a", 99_000, Some(99_500)), 100_000, lease),
            InstanceState::Stopped
        );
    }

    #[test]
    fn the_leader_is_the_holder_of_an_unexpired_lease() {
        let v = view(
            "b",
            5_000,
            100_000,
            vec![
                build_row("c", 10_000, None),
                build_row("b", 99_000, None),
                build_row("a", 99_500, None),
            ],
            vec![
                LeaseRow {
                    name: "history".into(),
                    holder: "a".into(),
                    epoch: 7,
                    expires_ms: 103_000,
                },
                LeaseRow {
                    name: "correlator".into(),
                    holder: "c".into(),
                    epoch: 2,
                    expires_ms: 15_000,
                },
            ],
        );
        let ids: Vec<&str> = v.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "alive first, then by id");
        assert_eq!(v.instances[0].leads, ["history"]);
        assert!(v.instances[1].this);
        assert_eq!(v.instances[2].state, InstanceState::Dead);
        assert!(v.instances[2].leads.is_empty(), "its lease lapsed");
        assert_eq!(v.leaders[1].leader, None);
        assert_eq!(v.leaders[1].holder, "c");
        assert_eq!(
            v.counts(),
            [
                (InstanceState::Alive, 2),
                (InstanceState::Dead, 1),
                (InstanceState::Stopped, 0)
            ]
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["instances"][1]["self"], true);
        assert_eq!(json["instances"][2]["state"], "dead");
    }
}
