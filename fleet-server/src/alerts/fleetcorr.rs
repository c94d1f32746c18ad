//! The fleet-wide correlation, the alerts actor's part of the `correlator` leader job
//! (several instances on one PostgreSQL; docs/architecture.md "Several instances").
//!
//! Each instance's engine evaluates only the machines it holds, so a cohort spread over the
//! instances (two failing machines of one model version on each) is seen whole by none of them.
//! So while this instance leads `correlator` (`crate::cluster::leader::CORRELATOR`), every [`FLEET_EVERY`] it reads the alerts firing
//! in the store, whichever instance fired them, and the open incidents
//! ([`AlertStore::fleet_alerts`]), and a correlator of the kinds that compare machines
//! ([`Scope::AcrossMachines`]: cohorts, outliers, thermal chains) turns them into incident
//! changes (`crate::incidents::fleet`); every machine's metrics reach it too, those of machines
//! held elsewhere from the fleet-wide view (`Observation::elsewhere`). The instances' own
//! correlators keep site outages only ([`Scope::SiteOutages`]).
//!
//! Changes are written before anyone hears of them: the incidents they touch go to the store
//! in one transaction fenced by the lease ([`AlertStore::write_incidents`]), and only once it
//! committed are they notified, published and republished. A write the fence refuses (a leader
//! frozen past its lease) ends the leadership at once and notifies nothing; the next leader
//! starts from the store, so an incident the old one opened goes on there (its members join
//! it) and one it never wrote is opened by the next: one incident per cause, notified once
//! (the outbox's dedup key is the incident's id and event). Any other failed write is tried
//! again at the next read, the changes kept.
//!
//! With sled none of this runs: the one correlator sees every machine.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use actix::prelude::*;

use super::actor::AlertsActor;
use super::shared::off_thread;
use super::store::FleetAlerts;
use crate::cluster::fence::is_fenced_store;
use crate::cluster::leader::Leadership;
use crate::cluster::lease::LeaseToken;
use crate::incidents::incident::{Incident, IncidentChange};
use crate::incidents::leader::FleetCorrelation;
use crate::incidents::{Correlator, Scope};

/// How often the leader reads the fleet's firing alerts: a cohort's incident opens within
/// about this long (+ the export of the instance that fired its last member) after it formed.
pub const FLEET_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl AlertsActor {
    /// Every [`FLEET_EVERY`]: while this instance leads, reads the store (one read at a time).
    fn correlate_fleet(&mut self, me: Addr<AlertsActor>) {
        let (Some(fc), Some(sh)) = (self.fleet.as_mut(), self.shared.as_ref()) else {
            return;
        };
        let Some(token) = fc.token() else { return };
        if fc.reading {
            return;
        }
        fc.reading = true;
        let store = sh.store.clone();
        off_thread(
            me,
            move || store.fleet_alerts(),
            move |result| FleetRead { token, result },
        );
    }

    fn fleet_read(&mut self, me: Addr<AlertsActor>, token: LeaseToken, result: Result<FleetAlerts, String>) {
        let Some(fc) = self.fleet.as_mut() else { return };
        fc.reading = false;
        let read = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "fleet's alerts not read; correlating at the next read");
                return;
            }
        };
        if fc.token().is_none_or(|t| t.epoch != token.epoch) {
            return;
        }
        let now = common::time::now_ms();
        let view = fc.view();
        let (_, corr) = fc.led.get_or_insert_with(|| {
            let mut c = Correlator::new(fc.config.clone());
            c.set_scope(Scope::AcrossMachines);
            c.take_over(read.open.clone(), read.seq_max);
            tracing::info!(
                epoch = token.epoch,
                open = c.open().len(),
                "correlating the fleet"
            );
            (token.epoch, c)
        });
        corr.number_above(read.seq_max);
        corr.tick(now);
        let changes = corr.on_fleet_alerts(&read.firing, &view, now);
        fc.unwritten.extend(changes);
        self.write_fleet(me, token);
    }

    /// Writes the changes made since the last write (one write at a time).
    fn write_fleet(&mut self, me: Addr<AlertsActor>, token: LeaseToken) {
        let (Some(fc), Some(sh)) = (self.fleet.as_mut(), self.shared.as_ref()) else {
            return;
        };
        if fc.writing || fc.unwritten.is_empty() {
            return;
        }
        fc.writing = true;
        let changes = std::mem::take(&mut fc.unwritten);
        // the latest state of each incident touched
        let latest: BTreeMap<String, Incident> = changes
            .iter()
            .map(|c| (c.incident.id.clone(), c.incident.clone()))
            .collect();
        let incidents: Vec<Incident> = latest.into_values().collect();
        let store = sh.store.clone();
        let t = token.clone();
        off_thread(
            me,
            move || match store.write_incidents(&t, &incidents) {
                Ok(()) => Ok(None),
                Err(e) if is_fenced_store(&e) => Ok(Some(e.to_string())),
                Err(e) => Err(e),
            },
            move |result| FleetWritten {
                token,
                changes,
                result,
            },
        );
    }

    fn fleet_written(
        &mut self,
        me: Addr<AlertsActor>,
        token: LeaseToken,
        changes: Vec<IncidentChange>,
        result: Result<Option<String>, String>,
    ) {
        let Some(fc) = self.fleet.as_mut() else { return };
        fc.writing = false;
        match result {
            Ok(None) => {
                self.stats.fleet_incident_writes.fetch_add(1, Ordering::Relaxed);
                let now = common::time::now_ms();
                self.handle_changes(&[], &changes, now);
                // changes made while this write was out
                self.write_fleet(me, token);
            }
            Ok(Some(fenced)) => {
                fc.leadership.refused(&token, &fenced);
                fc.stop();
            }
            Err(e) => {
                self.stats.shared_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, changes = changes.len(), "fleet-wide incidents not written; trying again at the next read");
                let later = std::mem::replace(&mut fc.unwritten, changes);
                fc.unwritten.extend(later);
            }
        }
    }
}

/// This instance takes part in the fleet-wide correlation (several instances: the server
/// sends it when the store is shared).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CorrelateFleet(pub Leadership);

impl Handler<CorrelateFleet> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: CorrelateFleet, ctx: &mut Context<Self>) {
        if self.shared.is_none() || self.fleet.is_some() {
            return;
        }
        self.fleet = Some(FleetCorrelation::new(m.0, self.corr.config().clone()));
        ctx.run_interval(FLEET_EVERY, |act, ctx| act.correlate_fleet(ctx.address()));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct FleetRead {
    token: LeaseToken,
    result: Result<FleetAlerts, String>,
}

impl Handler<FleetRead> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: FleetRead, ctx: &mut Context<Self>) {
        self.fleet_read(ctx.address(), m.token, m.result);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct FleetWritten {
    token: LeaseToken,
    changes: Vec<IncidentChange>,
    /// Some: refused by the fence (why).
    result: Result<Option<String>, String>,
}

impl Handler<FleetWritten> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: FleetWritten, ctx: &mut Context<Self>) {
        self.fleet_written(ctx.address(), m.token, m.changes, m.result);
    }
}
