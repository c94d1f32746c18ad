//! The alerts actor's part when several fleet-server instances share its store
//! (PostgreSQL): device loads and claims (see [`super::actor`]'s docs and
//! docs/architecture.md "Several instances"). Everything here runs only with a store whose
//! [`AlertStore::shared`] is true; with sled the actor never gets here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use common::DeviceId;

use super::actor::{AlertsActor, Observation};
use super::alert::{Alert, Transition, TransitionKind};
use super::engine::DeviceAlerts;
use super::store::{AlertStore, Claim, SharedIncidents};

/// How long a device load or a claim may take on the shared store before the actor goes on
/// without it.
pub const SHARED_TIMEOUT: Duration = Duration::from_secs(5);
/// Claims of one alert that met a stale generation before it is notified unclaimed.
pub const MAX_CLAIMS: u32 = 3;

/// Does `t` open its alert (the engine made it just now)?
fn opens(t: &Transition) -> bool {
    match t.kind {
        TransitionKind::Pending => true,
        // a rule without `for` fires at once: its first transition
        TransitionKind::Firing => {
            t.alert.fired_ms == Some(t.alert.started_ms) && t.at_ms == t.alert.started_ms
        }
        _ => false,
    }
}

impl AlertsActor {
    /// Evaluates `o` now, or, for a device not yet loaded from a shared store, once it is.
    pub(super) fn admit(&mut self, o: Observation) {
        if o.elsewhere {
            if let Some(fc) = self.fleet.as_mut() {
                fc.on_metrics(&o.device, &o.metrics, o.at_ms);
            }
            return;
        }
        let Some(sh) = self.shared.as_mut() else {
            return self.observe(o);
        };
        let id = o.device.id.clone();
        // a session started here: the device may come from another instance, which changed
        // its alerts meanwhile; read them again, unless one of its alerts is being claimed
        // (the read could miss it and drop it)
        if o.session_started
            && !sh
                .claiming
                .values()
                .any(|w| w.iter().any(|(t, _)| t.alert.device == id))
        {
            sh.loaded.remove(&id);
        }
        if sh.loaded.contains(&id) {
            return self.observe(o);
        }
        if let Some(waiting) = sh.loading.get_mut(&id) {
            waiting.push(o);
            return;
        }
        let Some(me) = sh.me.clone() else {
            // not started (never the case for a handler): evaluate as with one instance
            sh.loaded.insert(id);
            return self.observe(o);
        };
        sh.loading.insert(id.clone(), vec![o]);
        let store = sh.store.clone();
        let device = id.clone();
        off_thread(
            me,
            move || store.load_device(&device),
            move |result| Loaded { device: id, result },
        );
    }

    /// Passes `t` on to [`Self::decide`], unless the shared store must first say whose alert
    /// it is: an opening is claimed, and transitions of an alert being claimed wait for it.
    pub(super) fn consider(&mut self, t: &Transition, now_ms: i64) {
        let Some(sh) = self.shared.as_mut() else {
            return self.decide(t, now_ms);
        };
        if let Some(waiting) = sh.claiming.get_mut(&t.alert.id) {
            waiting.push((t.clone(), now_ms));
            return;
        }
        let Some(me) = sh.me.clone().filter(|_| opens(t)) else {
            return self.decide(t, now_ms);
        };
        sh.claiming.insert(t.alert.id.clone(), vec![(t.clone(), now_ms)]);
        start_claim(sh.store.clone(), me, t.alert.clone(), 1);
    }

    /// A device's stored alerts arrived (or could not be read): adopt them, then evaluate
    /// what waited for them.
    fn loaded(&mut self, device: DeviceId, result: Result<DeviceAlerts, String>) {
        let Some(sh) = self.shared.as_mut() else {
            return;
        };
        sh.loaded.insert(device.clone());
        let waiting = sh.loading.remove(&device).unwrap_or_default();
        match result {
            Ok(stored) => {
                let taken = self.engine.adopt_device(&device, stored);
                for id in &taken {
                    tracing::info!(alert = %id, device = %device, "open alert adopted from the shared store");
                    if self.engine.get(id).is_some_and(|a| a.muted_by.is_some()) {
                        self.muted_alerts.insert(id.clone());
                    }
                }
                self.stats
                    .adopted
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                if !taken.is_empty() {
                    self.persist_state();
                }
            }
            Err(e) => {
                self.stats.shared_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(device = %device, error = %e, "stored alerts of a device not read; evaluating it without them");
            }
        }
        for o in waiting {
            self.observe(o);
        }
    }

    /// The shared store's word on an alert this engine opened.
    fn claimed(&mut self, alert: Alert, attempt: u32, result: Result<Claim, String>) {
        let Some(sh) = self.shared.as_mut() else {
            return;
        };
        let waiting = sh.claiming.remove(&alert.id).unwrap_or_default();
        match result {
            Ok(Claim::Won) => {}
            Ok(Claim::Lost(stored)) => {
                self.stats.claims_lost.fetch_add(1, Ordering::Relaxed);
                self.stats.adopted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(alert = %alert.id, stored = %stored.id, "another instance holds this alert open; adopted, not notified");
                self.held.remove(&alert.id);
                self.muted_alerts.remove(&alert.id);
                if stored.muted_by.is_some() {
                    self.muted_alerts.insert(stored.id.clone());
                }
                self.corr.replace_alert(&alert.id, &stored.id);
                self.engine.adopt(*stored);
                self.persist_state();
                return;
            }
            Ok(Claim::Stale { generation }) if attempt < MAX_CLAIMS => {
                if let Some(renamed) = self.engine.renumber(&alert.id, generation)
                    && let Some(me) = sh.me.clone()
                {
                    tracing::info!(alert = %alert.id, now = %renamed.id, "alert generation taken on another instance; claimed again");
                    let waiting = waiting
                        .into_iter()
                        .map(|(mut t, at)| {
                            t.alert.id.clone_from(&renamed.id);
                            t.alert.generation = renamed.generation;
                            (t, at)
                        })
                        .collect();
                    sh.claiming.insert(renamed.id.clone(), waiting);
                    start_claim(sh.store.clone(), me, renamed, attempt + 1);
                    self.persist_state();
                    return;
                }
            }
            Ok(Claim::Stale { .. }) => {
                tracing::error!(alert = %alert.id, "alert generation still taken after {MAX_CLAIMS} claims; notified unclaimed");
            }
            Err(e) => {
                self.stats.shared_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(alert = %alert.id, error = %e, "alert not claimed on the shared store; notified anyway");
            }
        }
        for (t, at) in waiting {
            self.decide(&t, at);
        }
    }
}

/// How often the correlator reads what the other instances' correlators stored.
pub const INCIDENT_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl AlertsActor {
    /// With a shared store: reads what the other instances' correlators stored now and every
    /// [`INCIDENT_SYNC_EVERY`].
    pub(super) fn start_incident_sync(&self, ctx: &mut Context<AlertsActor>) {
        if self.shared.is_none() {
            return;
        }
        self.sync_incidents(ctx.address());
        ctx.run_interval(INCIDENT_SYNC_EVERY, |act, ctx| act.sync_incidents(ctx.address()));
    }

    /// Reads the highest stored incident number and the open site outages, off the thread
    /// ([`IncidentSync`], `crate::incidents::adopt`): incidents are numbered per instance, and
    /// the instance that opens site outages changes with the presence lease. A new judge
    /// within [`INCIDENT_SYNC_EVERY`] of an outage opened just before its takeover may still
    /// miss it.
    pub(super) fn sync_incidents(&self, me: Addr<AlertsActor>) {
        let Some(sh) = &self.shared else { return };
        let store = sh.store.clone();
        // and this engine's open alerts another instance acknowledged or resolved by hand
        // (`super::fleetwide`)
        let open: Vec<String> = self.engine.active().into_iter().map(|a| a.id).collect();
        off_thread(
            me,
            move || Ok((store.shared_incidents()?, store.handled_elsewhere(&open)?)),
            |result| IncidentSync { result },
        );
    }
}

/// What the other instances' correlators stored, and which of this engine's open alerts they
/// acknowledged or resolved by hand.
#[derive(Message)]
#[rtype(result = "()")]
struct IncidentSync {
    result: Result<(SharedIncidents, Vec<Alert>), String>,
}

impl Handler<IncidentSync> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: IncidentSync, _: &mut Context<Self>) {
        match m.result {
            Ok((shared, handled)) => {
                self.corr.number_above(shared.seq_max);
                self.corr.adopt_site_outages(shared.open_site_outages);
                self.take_in_handled(handled);
            }
            Err(e) => tracing::warn!(error = %e, "stored incidents not read"),
        }
    }
}

/// Runs `job` (blocking, on the shared store) off the actor's thread, within
/// [`SHARED_TIMEOUT`], and sends its outcome back as `msg(outcome)`.
pub(super) fn off_thread<T, M>(
    me: Addr<AlertsActor>,
    job: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
    msg: impl FnOnce(Result<T, String>) -> M + Send + 'static,
) where
    T: Send + 'static,
    M: Message<Result = ()> + Send + 'static,
    AlertsActor: Handler<M>,
{
    actix::spawn(async move {
        let outcome = match tokio::time::timeout(SHARED_TIMEOUT, tokio::task::spawn_blocking(job)).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("the store call failed: {e}")),
            Err(_) => Err(format!("no answer within {SHARED_TIMEOUT:?}")),
        };
        me.do_send(msg(outcome));
    });
}

fn start_claim(store: Arc<dyn AlertStore>, me: Addr<AlertsActor>, alert: Alert, attempt: u32) {
    let a = alert.clone();
    off_thread(
        me,
        move || store.claim(&a),
        move |result| Claimed {
            alert,
            attempt,
            result,
        },
    );
}

/// A device's stored alerts, read off the actor's thread.
#[derive(Message)]
#[rtype(result = "()")]
struct Loaded {
    device: DeviceId,
    result: Result<DeviceAlerts, String>,
}

impl Handler<Loaded> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: Loaded, _: &mut Context<Self>) {
        self.loaded(m.device, m.result);
    }
}

/// The shared store's answer to a claim.
#[derive(Message)]
#[rtype(result = "()")]
struct Claimed {
    alert: Alert,
    attempt: u32,
    result: Result<Claim, String>,
}

impl Handler<Claimed> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: Claimed, _: &mut Context<Self>) {
        self.claimed(m.alert, m.attempt, m.result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::alerts::actor::AlertsSetup;
    use crate::alerts::actor::Observe;
    use crate::alerts::alert::{AlertState, DeviceInfo};
    use crate::alerts::engine::{AlertEngine, EngineState, PairCounter};
    use crate::alerts::maintenance::AddedWindow;
    use crate::alerts::rules::parse_rules;
    use crate::alerts::stats::AlertsStats;
    use crate::alerts::store::SavedAlerts;
    use crate::audit::AuditFile;
    use crate::incidents::incident::CorrelatorState;
    use crate::notify::NotifyHandle;
    use crate::notify::maintenance::Windows;
    use crate::notify::notification::Notification;
    use crate::store::StoreError;

    const RULES: &str = "[[rules]]\nname = \"gpu_hot\"\nmetric = \"gpu.temp_c\"\nop = \">\"\nthreshold = 80\nclear = 75\nseverity = \"warning\"\n";

    /// A store shared with other instances, in memory: what it holds for the device and what
    /// it answers to claims are set by the test.
    #[derive(Default)]
    struct Twin {
        device: Mutex<DeviceAlerts>,
        /// The answers to the next claims, in order; then `Won`.
        claim: Mutex<std::collections::VecDeque<Claim>>,
        claims: AtomicU64,
        loads: AtomicU64,
    }

    impl AlertStore for Twin {
        fn load(&self) -> Result<SavedAlerts, StoreError> {
            Ok(SavedAlerts::default())
        }
        fn save(&self, _: &EngineState, _: &CorrelatorState) -> Result<(), StoreError> {
            Ok(())
        }
        fn save_windows(&self, _: &[AddedWindow]) -> Result<(), StoreError> {
            Ok(())
        }
        fn shared(&self) -> bool {
            true
        }
        fn load_device(&self, _: &DeviceId) -> Result<DeviceAlerts, StoreError> {
            self.loads.fetch_add(1, Ordering::Relaxed);
            Ok(self.device.lock().unwrap().clone())
        }
        fn claim(&self, _: &Alert) -> Result<Claim, StoreError> {
            self.claims.fetch_add(1, Ordering::Relaxed);
            Ok(self.claim.lock().unwrap().pop_front().unwrap_or(Claim::Won))
        }
    }

    /// Generation `g` of the alert, fired at `at`, as another instance stored it.
    fn build_stored(g: u64, at: i64) -> Alert {
        let mut e = AlertEngine::new(parse_rules(RULES).unwrap().rules);
        let d = DeviceInfo::new(DeviceId::new("rvm1").unwrap());
        for _ in 1..g {
            e.observe(&d, &temp(90.0), 0);
            e.observe(&d, &temp(10.0), 0);
        }
        e.observe(&d, &temp(90.0), at)[0].alert.clone()
    }

    fn temp(v: f64) -> Vec<(String, f64)> {
        vec![("gpu.temp_c".into(), v)]
    }

    fn build_actor(
        twin: Arc<Twin>,
    ) -> (
        Addr<AlertsActor>,
        tokio::sync::mpsc::Receiver<Notification>,
        Arc<AlertsStats>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(AlertsStats::default());
        let persist = super::super::persist::start_unsupervised(
            twin.clone(),
            Arc::new(AuditFile::new(&dir.path().join("audit.log"))),
            stats.clone(),
        );
        let (notify, sent) = NotifyHandle::detached(16);
        let a = AlertsActor::new(
            AlertsSetup {
                rules: parse_rules(RULES).unwrap(),
                notify,
                store: twin,
                persist,
                hold_offline_ms: None,
                maintenance: Windows::default(),
            },
            stats.clone(),
        )
        .unwrap();
        (a.start(), sent, stats, dir)
    }

    fn observe(v: f64, at_ms: i64) -> Observe {
        observe_session(v, at_ms, false)
    }

    fn observe_session(v: f64, at_ms: i64, session_started: bool) -> Observe {
        Observe(vec![Observation {
            device: DeviceInfo::new(DeviceId::new("rvm1").unwrap()),
            metrics: temp(v),
            checks: None,
            session_started,
            elsewhere: false,
            at_ms,
        }])
    }

    /// Waits (up to 5 s) for the next notification.
    async fn next(sent: &mut tokio::sync::mpsc::Receiver<Notification>) -> Option<Notification> {
        tokio::time::timeout(Duration::from_secs(5), sent.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits (up to 5 s) until `done`.
    async fn until(done: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(5), "never happened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn only_an_opening_is_claimed() {
        let a = build_stored(1, 5);
        let t = |kind, at_ms| Transition {
            kind,
            at_ms,
            silenced: false,
            alert: a.clone(),
        };
        assert!(opens(&t(TransitionKind::Firing, 5)), "a rule without `for`");
        assert!(!opens(&t(TransitionKind::Resolved, 9)));
        assert!(!opens(&t(TransitionKind::Escalated, 9)));
        let mut pending = t(TransitionKind::Firing, 9);
        pending.alert.started_ms = 1;
        pending.alert.fired_ms = Some(9);
        assert!(
            !opens(&pending),
            "fired after its `for`: claimed when it went pending"
        );
        assert!(opens(&t(TransitionKind::Pending, 1)));
    }

    #[actix::test]
    async fn a_device_whose_alert_fired_on_another_instance_is_not_notified_again_and_its_resolve_is() {
        let twin = Arc::new(Twin::default());
        let stored = build_stored(2, 1_000);
        *twin.device.lock().unwrap() = DeviceAlerts {
            open: vec![stored],
            generations: vec![PairCounter {
                rule: "gpu_hot".into(),
                device: DeviceId::new("rvm1").unwrap(),
                generation: 2,
            }],
            cooldowns: vec![],
        };
        let (addr, mut sent, stats, _dir) = build_actor(twin.clone());
        addr.send(observe(91.0, 5_000)).await.unwrap();
        addr.send(observe(92.0, 6_000)).await.unwrap();
        until(|| stats.observations.load(Ordering::Relaxed) == 2).await;
        assert_eq!(stats.adopted.load(Ordering::Relaxed), 1);
        assert!(
            sent.try_recv().is_err(),
            "already notified by the instance that fired it"
        );
        addr.send(observe(60.0, 7_000)).await.unwrap();
        let n = next(&mut sent).await.expect("the resolve");
        assert_eq!(
            (n.id.as_str(), n.event.as_str()),
            ("gpu_hot:rvm1:2/resolved", "resolved")
        );
        assert_eq!(twin.loads.load(Ordering::Relaxed), 1, "loaded once");
        assert_eq!(twin.claims.load(Ordering::Relaxed), 0, "nothing was opened here");
    }

    /// The machine was here, went to another instance which fired its alert, and came back:
    /// its birth makes the actor read the store again.
    #[actix::test]
    async fn a_device_whose_session_starts_here_again_is_read_again() {
        let twin = Arc::new(Twin::default());
        let (addr, mut sent, stats, _dir) = build_actor(twin.clone());
        addr.send(observe(50.0, 1_000)).await.unwrap();
        addr.send(observe(50.0, 2_000)).await.unwrap();
        until(|| stats.observations.load(Ordering::Relaxed) == 2).await;
        assert_eq!(twin.loads.load(Ordering::Relaxed), 1, "once while it stays");
        twin.device.lock().unwrap().open = vec![build_stored(3, 2_500)];
        addr.send(observe_session(95.0, 3_000, true)).await.unwrap();
        until(|| stats.observations.load(Ordering::Relaxed) == 3).await;
        assert_eq!(twin.loads.load(Ordering::Relaxed), 2);
        assert_eq!(stats.adopted.load(Ordering::Relaxed), 1);
        assert!(sent.try_recv().is_err(), "fired elsewhere: not notified again");
        assert_eq!(twin.claims.load(Ordering::Relaxed), 0);
        addr.send(observe(10.0, 4_000)).await.unwrap();
        assert_eq!(next(&mut sent).await.unwrap().id, "gpu_hot:rvm1:3/resolved");
    }

    #[actix::test]
    async fn a_lost_claim_notifies_nothing_and_the_stored_alert_goes_on_here() {
        let twin = Arc::new(Twin::default());
        let stored = build_stored(5, 1_000);
        twin.claim
            .lock()
            .unwrap()
            .push_back(Claim::Lost(Box::new(stored.clone())));
        let (addr, mut sent, stats, _dir) = build_actor(twin.clone());
        addr.send(observe(95.0, 5_000)).await.unwrap();
        until(|| stats.claims_lost.load(Ordering::Relaxed) == 1).await;
        addr.send(observe(95.0, 6_000)).await.unwrap();
        until(|| stats.observations.load(Ordering::Relaxed) == 2).await;
        assert!(sent.try_recv().is_err(), "the other instance notified it");
        addr.send(observe(10.0, 7_000)).await.unwrap();
        let n = next(&mut sent).await.expect("the resolve");
        assert_eq!(n.id, "gpu_hot:rvm1:5/resolved");
        assert_eq!(n.alert.as_ref().map(|a| a.fired_ms), Some(Some(1_000)));
        assert_eq!(n.alert.as_ref().map(|a| a.state), Some(AlertState::Resolved));
    }

    #[actix::test]
    async fn a_won_claim_notifies_once_and_a_stale_generation_is_claimed_again_under_a_new_id() {
        let twin = Arc::new(Twin::default());
        twin.claim
            .lock()
            .unwrap()
            .push_back(Claim::Stale { generation: 3 });
        let (addr, mut sent, _stats, _dir) = build_actor(twin.clone());
        addr.send(observe(95.0, 5_000)).await.unwrap();
        let n = next(&mut sent).await.expect("the firing");
        assert_eq!(n.id, "gpu_hot:rvm1:4/firing");
        assert_eq!(twin.claims.load(Ordering::Relaxed), 2);
        addr.send(observe(96.0, 6_000)).await.unwrap();
        addr.send(observe(10.0, 7_000)).await.unwrap();
        let n = next(&mut sent).await.expect("the resolve");
        assert_eq!(n.id, "gpu_hot:rvm1:4/resolved");
        assert!(sent.try_recv().is_err());
    }
}
