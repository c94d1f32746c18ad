//! [`Leadership`]: which leader-only jobs this instance runs now, shared by the heartbeat loop
//! (which feeds it the database's answers, [`super::heartbeat`]) and the jobs (which ask it
//! before each leader write and report the writes the fence refused).
//!
//! With sled there is one instance: it leads every job, and there is nothing to fence
//! ([`Role::Leader`] without a token). With PostgreSQL each job has a [`Lease`] (pure,
//! [`super::lease`]); the role is decided at the moment a job asks, by this process's own
//! clock, so a job asks again before each write rather than remembering an old answer.
//!
//! One place logs and counts each change of role and each refused write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::lease::{Answer, Lease, LeaseTiming, LeaseToken, LeaseView, LostBecause, Transition, mono_ms};
use super::registry::InstanceState;

/// The history job's rollups and retention (`crate::history::job`).
pub const HISTORY: &str = "history";
/// The fleet-wide presence judgement: which machines are offline (not seen by any instance
/// for the offline timeout), hence the offline alerts and the site outage incidents they make
/// (`crate::fleet::actor`, `crate::fleet::mirror`).
pub const PRESENCE: &str = "presence";
/// Rollouts: dispatching their commands and judging their health gates
/// (`crate::commands::actor`); one instance advances them, the others serve them.
pub const ROLLOUTS: &str = "rollouts";
/// The fleet-wide correlation: cohort regressions, outliers and thermal chains over every
/// machine's alerts and metrics, whichever instance holds the machine
/// (`crate::alerts::fleetcorr`); site outages stay with [`PRESENCE`], whose offline alerts
/// they are made of.
pub const CORRELATOR: &str = "correlator";
/// Every leader-only job this build runs, each with a lease of its own name.
pub const JOBS: &[&str] = &[HISTORY, PRESENCE, ROLLOUTS, CORRELATOR];

/// What a job may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Another instance runs the job (or nobody holds the lease yet): skip it.
    Follower,
    /// Run the job; with PostgreSQL every write asserts the token in its transaction
    /// ([`super::fence`]); None with sled (one instance, nothing to fence).
    Leader(Option<LeaseToken>),
}

/// This instance's leaderships (module docs); clones share them.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    /// None with sled: the only instance, always the leader.
    leases: Option<Mutex<Vec<Lease>>>,
    fenced: Mutex<BTreeMap<String, u64>>,
    heartbeats: AtomicU64,
    heartbeat_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Instances by state at the last heartbeat (the database's view).
    instances: Mutex<Vec<(InstanceState, u64)>>,
}

/// What health and `/metrics` show.
#[derive(Debug, Clone, Serialize)]
pub struct LeadershipSnapshot {
    /// This instance's id (`[cluster] instance_id`).
    pub instance: String,
    /// `single` (sled: one instance, always leader) or `lease` (PostgreSQL).
    pub mode: &'static str,
    pub leases: Vec<LeaseView>,
    /// Leader writes refused by the fence (`RVML1`), by job.
    pub fenced_writes: BTreeMap<String, u64>,
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
    pub last_error: Option<String>,
    /// Instances by state (`alive`, `dead`, `stopped`) at the last heartbeat.
    pub instances: BTreeMap<&'static str, u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Leadership {
    /// One instance on sled: the leader of every job.
    pub fn single(id: &str) -> Leadership {
        Self::make(id, None)
    }

    /// An instance on PostgreSQL: a follower of every job until the database says otherwise.
    pub fn leased(id: &str, timing: LeaseTiming) -> Leadership {
        let leases = JOBS.iter().map(|j| Lease::new(j, id, timing)).collect();
        Self::make(id, Some(Mutex::new(leases)))
    }

    fn make(id: &str, leases: Option<Mutex<Vec<Lease>>>) -> Leadership {
        Leadership {
            inner: Arc::new(Inner {
                id: id.to_string(),
                leases,
                fenced: Mutex::default(),
                heartbeats: AtomicU64::new(0),
                heartbeat_errors: AtomicU64::new(0),
                last_error: Mutex::default(),
                instances: Mutex::default(),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// What `job` may do now, by this process's clock.
    pub fn role(&self, job: &str) -> Role {
        let Some(leases) = &self.inner.leases else {
            return Role::Leader(None);
        };
        let now = mono_ms();
        let mut leases = lock(leases);
        match leases.iter_mut().find(|l| l.name() == job) {
            Some(l) => {
                if let Some(t) = l.tick(now) {
                    note(job, &t);
                }
                l.token(now).map_or(Role::Follower, |t| Role::Leader(Some(t)))
            }
            None => Role::Follower,
        }
    }

    /// A leader write with `token` was refused by the fence: counted, logged, and the
    /// leadership of that epoch ends now.
    pub fn refused(&self, token: &LeaseToken, error: &dyn std::fmt::Display) {
        *lock(&self.inner.fenced).entry(token.name.clone()).or_default() += 1;
        tracing::warn!(
            job = %token.name,
            epoch = token.epoch,
            error = %error,
            "leader write refused by the lease fence; not applied"
        );
        if let Some(leases) = &self.inner.leases
            && let Some(l) = lock(leases).iter_mut().find(|l| l.name() == token.name)
            && let Some(t) = l.fenced(token.epoch)
        {
            note(&token.name, &t);
        }
    }

    /// The jobs whose attempt is due at `now`, each with whether it believes it holds the
    /// lease (deadlines that passed end their leadership first).
    pub(super) fn due(&self, now: i64) -> Vec<(String, bool)> {
        let Some(leases) = &self.inner.leases else {
            return Vec::new();
        };
        let mut leases = lock(leases);
        leases
            .iter_mut()
            .filter_map(|l| {
                if let Some(t) = l.tick(now) {
                    note(l.name(), &t);
                }
                l.due(now).then(|| (l.name().to_string(), l.believes_held(now)))
            })
            .collect()
    }

    /// The database's answer to the attempt on `job` sent at `sent`.
    pub(super) fn answered(&self, job: &str, sent: i64, answer: Answer) {
        let Some(leases) = &self.inner.leases else {
            return;
        };
        let now = mono_ms();
        if let Some(l) = lock(leases).iter_mut().find(|l| l.name() == job)
            && let Some(t) = l.answered(sent, answer, now)
        {
            note(job, &t);
        }
    }

    /// A heartbeat went through; `instances` is the database's view of the cluster.
    pub(super) fn beat_ok(&self, instances: Vec<(InstanceState, u64)>) {
        self.inner.heartbeats.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.instances) = instances;
    }

    /// A heartbeat failed (logged by the caller).
    pub(super) fn beat_failed(&self, error: String) {
        self.inner.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.last_error) = Some(error);
    }

    pub fn snapshot(&self) -> LeadershipSnapshot {
        let now = mono_ms();
        let (mode, leases) = match &self.inner.leases {
            Some(l) => ("lease", lock(l).iter().map(|l| l.view(now)).collect()),
            None => (
                "single",
                JOBS.iter()
                    .map(|j| LeaseView {
                        name: j.to_string(),
                        leader: true,
                        epoch: None,
                        trusted_for_ms: None,
                        holder: Some(self.inner.id.clone()),
                        holder_epoch: None,
                        gained_total: 1,
                        lost_total: 0,
                    })
                    .collect(),
            ),
        };
        let instances = match &self.inner.leases {
            None => [(InstanceState::Alive.label(), 1)].into_iter().collect(),
            Some(_) => lock(&self.inner.instances)
                .iter()
                .map(|(s, n)| (s.label(), *n))
                .collect(),
        };
        LeadershipSnapshot {
            instance: self.inner.id.clone(),
            mode,
            leases,
            fenced_writes: JOBS
                .iter()
                .map(|j| (j.to_string(), 0))
                .chain(lock(&self.inner.fenced).clone())
                .collect(),
            heartbeats: self.inner.heartbeats.load(Ordering::Relaxed),
            heartbeat_errors: self.inner.heartbeat_errors.load(Ordering::Relaxed),
            last_error: lock(&self.inner.last_error).clone(),
            instances,
        }
    }
}

/// Logs a change of role (the counters are in the lease).
fn note(job: &str, t: &Transition) {
    match t {
        Transition::Gained { epoch } => tracing::info!(job, epoch, "leader of the job now"),
        Transition::Lost { epoch, because } => {
            let because = match because {
                LostBecause::Expired => "not renewed in time by this instance's clock",
                LostBecause::Taken => "another instance holds the lease",
                LostBecause::Fenced => "a write was refused by the lease fence",
            };
            tracing::warn!(job, epoch, because, "no longer leader of the job")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_on_sled_leads_every_job_without_a_token() {
        let l = Leadership::single("a");
        assert_eq!(l.role(HISTORY), Role::Leader(None));
        let s = l.snapshot();
        assert_eq!(s.mode, "single");
        assert!(s.leases.iter().all(|v| v.leader));
        assert_eq!(s.instances.get("alive"), Some(&1));
        assert!(l.due(mono_ms()).is_empty(), "nothing to ask a database");
    }

    #[test]
    fn a_leased_instance_follows_until_held_and_a_refused_write_ends_it() {
        let l = Leadership::leased("a", LeaseTiming::new(1_000, 5_000));
        assert_eq!(l.role(HISTORY), Role::Follower);
        let now = mono_ms();
        let every: Vec<(String, bool)> = JOBS.iter().map(|j| (j.to_string(), false)).collect();
        assert_eq!(l.due(now), every, "every job's lease is asked for");
        l.answered(HISTORY, now, Answer::Held { epoch: 3 });
        let Role::Leader(Some(token)) = l.role(HISTORY) else {
            panic!("leader after a held answer")
        };
        assert_eq!(
            (token.holder.as_str(), token.epoch, token.lease_ms),
            ("a", 3, 5_000)
        );
        assert!(
            l.due(now).iter().all(|(j, _)| j != HISTORY),
            "the next attempt is a heartbeat later"
        );
        l.refused(&token, &"RVML1");
        assert_eq!(l.role(HISTORY), Role::Follower);
        let s = l.snapshot();
        assert_eq!(s.fenced_writes.get(HISTORY), Some(&1));
        assert_eq!((s.leases[0].gained_total, s.leases[0].lost_total), (1, 1));
    }
}
