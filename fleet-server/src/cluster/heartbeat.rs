//! The heartbeat loop (PostgreSQL only; a supervised task, `crate::server::children`): every
//! `heartbeat_ms` it proves this instance alive in `instances`, makes an attempt on each
//! lease that is due ([`super::pg::attempt`]: a leader renews, a follower takes a lapsed
//! lease) and reads the cluster for `/metrics`, all on one session of its own, and hands the
//! answers to [`Leadership`], which decides. A beat that gets no answer in time changes
//! nothing but the counters: what this instance trusted it keeps trusting until its own
//! deadline, and no longer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::leader::Leadership;
use super::lease::{Answer, LeaseTiming};
use super::pg::{self, Me};
use super::registry;
use crate::pg::PgError;
use crate::pg::store::PgStore;

/// The loop's state; a restarted generation gets a new one (and a new session).
pub struct Heartbeat {
    pub store: PgStore,
    pub me: Me,
    pub leadership: Leadership,
    pub timing: LeaseTiming,
}

/// What one beat learnt.
struct Beat {
    answers: Vec<(String, i64, Answer)>,
    instances: Vec<(registry::InstanceState, u64)>,
}

impl Heartbeat {
    /// Runs until its task is stopped.
    pub async fn run(self) {
        let session: Arc<Mutex<Option<Client>>> = Arc::default();
        let every = Duration::from_millis(self.timing.heartbeat_ms as u64);
        let mut tick = tokio::time::interval(every);
        // after a stall, one beat now, then the cadence again (no burst of missed beats)
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.beat(&session, every).await;
        }
    }

    async fn beat(&self, session: &Arc<Mutex<Option<Client>>>, every: Duration) {
        let due = self.leadership.due(super::lease::mono_ms());
        let (cfg, me, lease_ms) = (self.store.config().clone(), self.me.clone(), self.timing.lease_ms);
        let session = session.clone();
        let planned = due.clone();
        let work = async move {
            let mut guard = session.lock().await;
            let client = match guard.take().filter(|c| !c.is_closed()) {
                Some(c) => guard.insert(c),
                None => guard.insert(pg::connect(&cfg, every).await?),
            };
            let client: &Client = client;
            pg::heartbeat(client, &me).await?;
            let mut answers = Vec::with_capacity(planned.len());
            for (job, held) in planned {
                // one lease's failure (a lock timeout) is that lease's Failed, not the beat's
                let (sent, answer) = match pg::attempt(client, &job, &me.id, lease_ms, held).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(job = %job, error = %e, "lease attempt failed");
                        (super::lease::mono_ms(), Answer::Failed)
                    }
                };
                answers.push((job, sent, answer));
            }
            let (now_ms, rows, leases) = pg::read(client).await?;
            let view = registry::view(&me.id, lease_ms, now_ms, rows, leases);
            Ok::<_, PgError>(Beat {
                answers,
                instances: view.counts(),
            })
        };
        // bounded: the session's statement timeout is one heartbeat, a beat makes a few
        let res = tokio::time::timeout(every * 4, self.store.call(work)).await;
        match res {
            Ok(Ok(beat)) => {
                for (job, sent, answer) in beat.answers {
                    self.leadership.answered(&job, sent, answer);
                }
                self.leadership.beat_ok(beat.instances);
            }
            Ok(Err(e)) => self.failed(&due, e.to_string()),
            Err(_) => self.failed(&due, format!("no answer within {:?}", every * 4)),
        }
    }

    fn failed(&self, due: &[(String, bool)], error: String) {
        tracing::warn!(error = %error, "cluster heartbeat failed");
        let now = super::lease::mono_ms();
        for (job, _) in due {
            self.leadership.answered(job, now, Answer::Failed);
        }
        self.leadership.beat_failed(error);
    }
}
