//! Scoped access: what a token limited to a store or a retailer ([`crate::auth::Scope`]) may
//! see, applied by every route through [`authorize_scoped`] and one [`Visible`].
//!
//! The rule, in one place: a machine is in scope when its `site` is a store the scope covers
//! ([`crate::estate::Estate::sites_in`]: the store itself, or every store of the retailer);
//! a machine whose site no store has is in no scope. Anything about a machine outside the
//! scope answers 404 exactly as a machine that does not exist would (never a partial leak);
//! what spans the whole fleet and cannot be cut to a scope (token management, the estate's
//! writes, notification channels, `/metrics`) answers 403 to a scoped token.
//!
//! The scope is resolved at each request (the estate and the machines' sites as they are
//! now), so a store added to a retailer or a machine moved to another site counts at once.
//! An unscoped token pays nothing: [`Visible::all`] reads neither.

use std::collections::BTreeSet;

use actix_web::{HttpRequest, web};
use common::DeviceId;

use super::auth::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::auth::{Principal, Role};
use crate::estate::Estate;
use crate::fleet::actor::ListDevices;
use crate::fleet::state::DeviceSummary;

/// What one principal may see: everything, or the machines of some stores.
#[derive(Debug, Clone, Default)]
pub struct Visible {
    /// None: the whole fleet.
    scoped: Option<Scoped>,
}

#[derive(Debug, Clone, Default)]
struct Scoped {
    /// The store ids (sites) the scope covers.
    sites: BTreeSet<String>,
    /// The machines at those sites now.
    devices: BTreeSet<String>,
}

impl Visible {
    /// The whole fleet (an unscoped token).
    pub fn all() -> Visible {
        Visible { scoped: None }
    }

    /// Limited to `sites`, whose machines among `devices` are in scope (pure: tests build it).
    pub fn of_sites(sites: BTreeSet<String>, devices: &[DeviceSummary]) -> Visible {
        let devices = devices
            .iter()
            .filter(|d| d.site.as_ref().is_some_and(|s| sites.contains(s)))
            .map(|d| d.id.to_string())
            .collect();
        Visible {
            scoped: Some(Scoped { sites, devices }),
        }
    }

    pub fn is_scoped(&self) -> bool {
        self.scoped.is_some()
    }

    /// The store ids in scope; None: every store.
    pub fn sites(&self) -> Option<&BTreeSet<String>> {
        self.scoped.as_ref().map(|s| &s.sites)
    }

    /// The machines in scope now; None: every machine.
    pub fn devices(&self) -> Option<&BTreeSet<String>> {
        self.scoped.as_ref().map(|s| &s.devices)
    }

    /// Whether the machine `id` is in scope.
    pub fn device(&self, id: &str) -> bool {
        self.scoped.as_ref().is_none_or(|s| s.devices.contains(id))
    }

    /// Whether the store (site) `id` is in scope.
    pub fn site(&self, id: &str) -> bool {
        self.scoped.as_ref().is_none_or(|s| s.sites.contains(id))
    }

    /// Whether the alert `id` (`{rule}:{device}:{generation}`) is about a machine in scope.
    pub fn alert(&self, id: &str) -> bool {
        !self.is_scoped() || crate::incidents::incident::alert_device(id).is_some_and(|d| self.device(d))
    }

    /// 404, as for a machine that does not exist, unless `id` is in scope.
    pub fn require_device(&self, id: &DeviceId) -> Result<(), ApiError> {
        if self.device(id.as_str()) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no device {id}")))
        }
    }

    /// 403 for a scoped token: `what` spans the whole fleet.
    pub fn require_unscoped(&self, what: &str) -> Result<(), ApiError> {
        if self.is_scoped() {
            return Err(ApiError::Refused(format!(
                "{what} spans the whole fleet: a token limited to a store or retailer cannot use it"
            )));
        }
        Ok(())
    }

    /// The estate as this principal sees it.
    pub fn estate(&self, estate: Estate) -> Estate {
        match &self.scoped {
            None => estate,
            Some(s) => estate.restricted(&s.sites),
        }
    }

    /// Keeps the machines in scope.
    pub fn retain_devices(&self, list: &mut Vec<DeviceSummary>) {
        if self.is_scoped() {
            list.retain(|d| self.device(d.id.as_str()));
        }
    }

    /// Keeps the JSON objects whose `key` names a machine in scope (commands: `device`).
    pub fn retain_json(&self, list: &mut Vec<serde_json::Value>, key: &str) {
        if self.is_scoped() {
            list.retain(|v| v[key].as_str().is_some_and(|d| self.device(d)));
        }
    }
}

/// The estate as stored (rows that no longer validate are skipped and logged).
pub async fn load_estate(state: &AppState) -> Result<Estate, ApiError> {
    let store = state.estate.clone();
    let (r, s) = web::block(move || store.load())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
    let (estate, bad) = Estate::from_rows(r, s);
    for b in bad {
        tracing::warn!(problem = %b, "stored estate row skipped");
    }
    Ok(estate)
}

/// What `who` may see now (module docs).
pub async fn visible(state: &AppState, who: &Principal) -> Result<Visible, ApiError> {
    let Some(scope) = &who.scope else {
        return Ok(Visible::all());
    };
    let sites = load_estate(state).await?.sites_in(scope);
    let devices = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(format!("fleet actor: {e}")))?;
    Ok(Visible::of_sites(sites, &devices))
}

/// [`authorize`], then what the caller may see: every route that shows or touches machines
/// starts here.
pub async fn authorize_scoped(
    req: &HttpRequest,
    state: &AppState,
    min: Role,
) -> Result<(Principal, Visible), ApiError> {
    let who = authorize(req, state, min)?;
    let vis = visible(state, &who).await?;
    Ok((who, vis))
}

/// [`authorize`] for a route that spans the whole fleet: 403 to a scoped token (no estate
/// read needed: the token's scope alone decides).
pub fn authorize_unscoped(
    req: &HttpRequest,
    state: &AppState,
    min: Role,
    what: &str,
) -> Result<Principal, ApiError> {
    let who = authorize(req, state, min)?;
    if who.scope.is_some() {
        return Err(ApiError::Refused(format!(
            "{what} spans the whole fleet: a token limited to a store or retailer cannot use it"
        )));
    }
    Ok(who)
}
