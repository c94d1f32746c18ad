//! The estate: retailers, their stores, and the machines in each store. A store is what a
//! machine reports as its `site` (the agent's config, `SITE=` of a provisioning bundle): a
//! machine joins the store whose id equals its site; a site no store has is listed
//! ([`Estate::unknown_sites`]), never dropped. Availability per machine, store and retailer
//! over any period, excluding closed hours and maintenance windows, is computed here too.
//!
//! # Layout
//! - this file: retailers and stores as written ([`Retailer`], [`StoreFile`]) and validated
//!   ([`Store`], every problem naming its field), the whole estate and the join with machines
//! - [`hours`]: opening hours per weekday, their text form, the instants they cover (pure)
//! - [`availability`]: interval arithmetic and the availability definition (pure)
//! - [`csv`]: the stores CSV file of `fleetctl estate import` / `export` (pure)
//! - [`store`]: the [`store::EstateStore`] trait and its sled implementation; [`pg`]: on
//!   PostgreSQL (`retailers`, `stores`)
//! - [`report`]: gathering an availability report (machines, alerts, windows) and its CSV and
//!   HTML forms; [`pdf`]: its PDF form
//! - [`http`]: the routes under `/api/v1/estate`
//!
//! # Scoped access
//! A token's scope ([`crate::auth::Scope`]) names a store or a retailer; [`Estate::sites_in`]
//! is the one place it becomes the set of store ids (sites) it covers, and
//! [`Estate::restricted`] the estate such a token sees. `crate::http::scope` applies both on
//! every route.

pub mod availability;
pub mod csv;
pub mod hours;
pub mod http;
pub mod pdf;
pub mod pg;
pub mod report;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use self::hours::{DAYS, DayHours, OpeningHours};

/// Longest id (a store's id is a site: the installer's rule, `[A-Za-z0-9 ._-]{1,64}`).
pub const MAX_ID_LEN: usize = common::ids::SITE_ID_MAX_LEN;
/// Longest name or address.
pub const MAX_TEXT_LEN: usize = 256;

/// A retailer: a chain that owns stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retailer {
    pub id: String,
    pub name: String,
}

/// A store's opening hours as written: one text per weekday ([`hours`] module docs); a day left
/// out is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekFile {
    #[serde(default)]
    pub mon: Option<String>,
    #[serde(default)]
    pub tue: Option<String>,
    #[serde(default)]
    pub wed: Option<String>,
    #[serde(default)]
    pub thu: Option<String>,
    #[serde(default)]
    pub fri: Option<String>,
    #[serde(default)]
    pub sat: Option<String>,
    #[serde(default)]
    pub sun: Option<String>,
}

impl WeekFile {
    pub fn days(&self) -> [&Option<String>; 7] {
        [
            &self.mon, &self.tue, &self.wed, &self.thu, &self.fri, &self.sat, &self.sun,
        ]
    }

    /// From the seven texts, Monday first.
    pub fn from_days(d: [Option<String>; 7]) -> WeekFile {
        let [mon, tue, wed, thu, fri, sat, sun] = d;
        WeekFile {
            mon,
            tue,
            wed,
            thu,
            fri,
            sat,
            sun,
        }
    }
}

/// A store as the API takes and shows it, and as both stores keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// The `site` its machines report.
    pub id: String,
    pub name: String,
    /// The retailer's id.
    pub retailer: String,
    #[serde(default)]
    pub address: String,
    /// IANA name (`Europe/Oslo`).
    pub time_zone: String,
    #[serde(default)]
    pub hours: WeekFile,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// A validated store.
#[derive(Debug, Clone)]
pub struct Store {
    pub file: StoreFile,
    pub time_zone: TimeZone,
    pub hours: OpeningHours,
}

/// Checks an id: `[A-Za-z0-9 ._-]{1,64}`, the rule of a site.
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if common::ids::is_site_id(id) {
        Ok(())
    } else {
        Err(format!(
            "{field}: {id:?} is not 1 to {MAX_ID_LEN} of letters, digits, space, '.', '_', '-'"
        ))
    }
}

fn check_text(field: &str, v: &str, required: bool, p: &mut Vec<String>) {
    if required && v.trim().is_empty() {
        p.push(format!("{field}: must not be empty"));
    }
    if v.len() > MAX_TEXT_LEN {
        p.push(format!("{field}: longer than {MAX_TEXT_LEN} bytes"));
    }
}

impl Retailer {
    /// Every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if let Err(e) = check_id("id", &self.id) {
            p.push(e);
        }
        check_text("name", &self.name, true, &mut p);
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

impl StoreFile {
    /// Every problem, each naming its field (`hours.sat`, `latitude`, ...).
    pub fn validate(&self) -> Result<Store, Vec<String>> {
        let mut p = Vec::new();
        for (field, v) in [("id", &self.id), ("retailer", &self.retailer)] {
            if let Err(e) = check_id(field, v) {
                p.push(e);
            }
        }
        check_text("name", &self.name, true, &mut p);
        check_text("address", &self.address, false, &mut p);
        let time_zone = TimeZone::get(&self.time_zone).unwrap_or_else(|e| {
            p.push(format!(
                "time_zone: {:?} is not an IANA time zone ({e})",
                self.time_zone
            ));
            TimeZone::UTC
        });
        let mut hours = OpeningHours::default();
        for (i, d) in self.hours.days().into_iter().enumerate() {
            if let Some(text) = d {
                match DayHours::parse(text) {
                    Ok(h) => hours.0[i] = h,
                    Err(e) => p.push(format!("hours.{}: {e}", DAYS[i])),
                }
            }
        }
        match (self.latitude, self.longitude) {
            (Some(_), None) => p.push("longitude: needed with latitude".into()),
            (None, Some(_)) => p.push("latitude: needed with longitude".into()),
            _ => {}
        }
        if let Some(v) = self
            .latitude
            .filter(|v| !(-90.0..=90.0).contains(v) || !v.is_finite())
        {
            p.push(format!("latitude: {v} is not from -90 to 90"));
        }
        if let Some(v) = self
            .longitude
            .filter(|v| !(-180.0..=180.0).contains(v) || !v.is_finite())
        {
            p.push(format!("longitude: {v} is not from -180 to 180"));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Store {
            file: self.clone(),
            time_zone,
            hours,
        })
    }
}

/// Errors of the estate's store layer and its rules.
#[derive(Debug, thiserror::Error)]
pub enum EstateError {
    /// Every problem, each naming its field.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("no retailer {0:?}")]
    UnknownRetailer(String),
    #[error("retailer {0:?} still has stores ({1}); delete or move them first")]
    RetailerInUse(String, String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Every retailer and store, read at once (thousands at most: small).
#[derive(Debug, Clone, Default)]
pub struct Estate {
    pub retailers: BTreeMap<String, Retailer>,
    pub stores: BTreeMap<String, Store>,
}

/// A site machines report that no store has, with its machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownSite {
    pub site: String,
    pub machines: Vec<String>,
}

impl Estate {
    /// From what a store holds; a stored row that no longer validates (an edited database) is
    /// skipped and named in the second value.
    pub fn from_rows(retailers: Vec<Retailer>, stores: Vec<StoreFile>) -> (Estate, Vec<String>) {
        let mut bad = Vec::new();
        let mut e = Estate {
            retailers: retailers.into_iter().map(|r| (r.id.clone(), r)).collect(),
            ..Default::default()
        };
        for s in stores {
            match s.validate() {
                Ok(v) => {
                    e.stores.insert(s.id.clone(), v);
                }
                Err(p) => bad.push(format!("store {:?}: {}", s.id, p.join("; "))),
            }
        }
        (e, bad)
    }

    /// The store a machine at `site` belongs to.
    pub fn store_of(&self, site: Option<&str>) -> Option<&Store> {
        self.stores.get(site?)
    }

    /// The retailer of a machine at `site`.
    pub fn retailer_of(&self, site: Option<&str>) -> Option<&Retailer> {
        self.retailers.get(&self.store_of(site)?.file.retailer)
    }

    /// The sites (store ids) a scope covers: its store if that store exists, or every store
    /// of its retailer. A site no store has is in no scope (its machines are outside every one).
    pub fn sites_in(&self, scope: &crate::auth::Scope) -> BTreeSet<String> {
        use crate::auth::Scope;
        match scope {
            Scope::Site(s) => self
                .stores
                .get(s)
                .map(|s| s.file.id.clone())
                .into_iter()
                .collect(),
            Scope::Retailer(r) => self.stores_of(r).map(|s| s.file.id.clone()).collect(),
        }
    }

    /// The estate as a token limited to `sites` sees it: those stores, and the retailers that
    /// have one of them.
    pub fn restricted(mut self, sites: &BTreeSet<String>) -> Estate {
        self.stores.retain(|id, _| sites.contains(id));
        let keep: BTreeSet<String> = self.stores.values().map(|s| s.file.retailer.clone()).collect();
        self.retailers.retain(|id, _| keep.contains(id));
        self
    }

    /// The stores of a retailer.
    pub fn stores_of<'a>(&'a self, retailer: &'a str) -> impl Iterator<Item = &'a Store> + 'a {
        self.stores.values().filter(move |s| s.file.retailer == retailer)
    }

    /// Sites of `machines` (id, site) that no store has, each with its machines; machines
    /// without a site are listed under the empty site.
    pub fn unknown_sites<'a>(
        &self,
        machines: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Vec<UnknownSite> {
        let mut by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, site) in machines {
            if self.store_of(site).is_none() {
                by.entry(site.unwrap_or("").to_string())
                    .or_default()
                    .insert(id.to_string());
            }
        }
        by.into_iter()
            .map(|(site, m)| UnknownSite {
                site,
                machines: m.into_iter().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn build_store(id: &str, retailer: &str) -> StoreFile {
        StoreFile {
            id: id.into(),
            name: format!("Store {id}"),
            retailer: retailer.into(),
            address: "Storgata 1, Oslo".into(),
            time_zone: "Europe/Oslo".into(),
            hours: WeekFile::from_days(std::array::from_fn(|i| {
                Some(if i < 6 {
                    "08:00-20:00".into()
                } else {
                    "closed".into()
                })
            })),
            latitude: Some(59.91),
            longitude: Some(10.75),
        }
    }

    #[test]
    fn a_store_validates_and_every_bad_field_is_named() {
        assert!(build_store("oslo-1", "coop").validate().is_ok());
        let mut s = build_store("oslo/1", "coop");
        s.time_zone = "Mars/Olympus".into();
        s.hours.sat = Some("9-17".into());
        s.latitude = Some(91.0);
        s.longitude = None;
        s.name = " ".into();
        let p = s.validate().unwrap_err();
        let fields: Vec<&str> = p.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            ["id", "name", "time_zone", "hours.sat", "longitude", "latitude"],
            "{p:?}"
        );
    }

    #[test]
    fn machines_join_stores_by_site_and_unknown_sites_are_listed() {
        let (e, bad) = Estate::from_rows(
            vec![Retailer {
                id: "coop".into(),
                name: "Coop".into(),
            }],
            vec![build_store("oslo-1", "coop")],
        );
        assert!(bad.is_empty());
        assert_eq!(
            e.retailer_of(Some("oslo-1")).map(|r| r.name.as_str()),
            Some("Coop")
        );
        let u = e.unknown_sites([
            ("m1", Some("oslo-1")),
            ("m2", Some("bergen")),
            ("m3", None),
            ("m4", Some("bergen")),
        ]);
        assert_eq!(
            u,
            vec![
                UnknownSite {
                    site: "".into(),
                    machines: vec!["m3".into()]
                },
                UnknownSite {
                    site: "bergen".into(),
                    machines: vec!["m2".into(), "m4".into()]
                },
            ]
        );
    }

    #[test]
    fn a_scope_covers_its_store_or_its_retailers_stores_and_nothing_unknown() {
        use crate::auth::Scope;
        let r = |id: &str| Retailer {
            id: id.into(),
            name: id.into(),
        };
        let (e, bad) = Estate::from_rows(
            vec![r("coop"), r("rema")],
            vec![
                build_store("oslo-1", "coop"),
                build_store("bergen-2", "coop"),
                build_store("rema-9", "rema"),
            ],
        );
        assert!(bad.is_empty());
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(e.sites_in(&Scope::Site("oslo-1".into())), set(&["oslo-1"]));
        assert_eq!(
            e.sites_in(&Scope::Site("nowhere".into())),
            set(&[]),
            "a site no store has"
        );
        assert_eq!(
            e.sites_in(&Scope::Retailer("coop".into())),
            set(&["bergen-2", "oslo-1"])
        );
        assert_eq!(e.sites_in(&Scope::Retailer("lidl".into())), set(&[]));
        let seen = e.clone().restricted(&set(&["rema-9"]));
        assert_eq!(seen.stores.keys().collect::<Vec<_>>(), ["rema-9"]);
        assert_eq!(seen.retailers.keys().collect::<Vec<_>>(), ["rema"]);
        assert!(e.restricted(&set(&[])).retailers.is_empty());
    }
}
