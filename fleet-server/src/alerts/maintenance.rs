//! Maintenance windows as alerting applies them (pure: every call takes `now_ms`): the windows
//! of `[[notify.maintenance]]` and those added through the API (persisted with the alert
//! state), and which notifications they mute. A window itself (scope, days, hours, the
//! wall-clock rule across daylight-saving changes) is [`crate::notify::maintenance`].
//!
//! # What is muted ([`verdict`], [`MaintenanceBook::incident_muted_by`])
//! - The firing of an alert about a machine an open window covers is not sent; the alert is
//!   still recorded, and marked with the window ([`Alert::muted_by`]).
//! - An escalation is not sent while the machine is in a window, nor ever for a muted alert.
//! - The resolution of a muted alert is not sent: nobody was told it fired. The resolution of
//!   an alert whose firing went out before the window opened is sent: it closes what people
//!   (and PagerDuty) already have.
//! - When the window closes and a muted alert still fires, its firing is sent then, as when a
//!   silence ends (the actor asks [`MaintenanceBook::muted_by`] again every tick).
//! - An incident is muted when its site is in an open window, or every machine in it is; its
//!   resolution is then not sent either.

use serde::{Deserialize, Serialize};

use super::alert::{Alert, DeviceInfo, Transition, TransitionKind};
use crate::notify::maintenance::{Window, WindowFile, Windows};

/// Windows the API may add at most.
pub const MAX_API_WINDOWS: usize = 1_000;

/// A window added through the API, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedWindow {
    pub window: WindowFile,
    pub created_by: String,
    pub created_ms: i64,
    #[serde(default)]
    pub comment: String,
}

/// A window as the API and the web view list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowView {
    /// `name`, `sites`, `tags`, `time_zone`, `days`, `from`, `to`.
    #[serde(flatten)]
    pub window: WindowFile,
    /// `config` (`[[notify.maintenance]]`) or `api`.
    pub source: &'static str,
    /// Open at the time of the request.
    pub open_now: bool,
    pub created_by: Option<String>,
    pub created_ms: Option<i64>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Every problem, each naming its field.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("a window named {0:?} exists already")]
    Duplicate(String),
    #[error("no window {0:?}")]
    Unknown(String),
    #[error("window {0:?} is in the config file ([[notify.maintenance]]); change it there")]
    FromConfig(String),
    #[error("at most {MAX_API_WINDOWS} windows can be added")]
    TooMany,
}

/// Every window alerting knows. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceBook {
    config: Vec<Window>,
    added: Vec<(AddedWindow, Window)>,
}

impl MaintenanceBook {
    pub fn new(config: Windows) -> MaintenanceBook {
        MaintenanceBook {
            config: config.windows,
            added: Vec::new(),
        }
    }

    /// Takes back windows the API added before a restart. One that does not validate any
    /// more (its time zone is gone from the system) or clashes with a config window's name is
    /// left out: the problems, to log.
    pub fn restore(&mut self, added: Vec<AddedWindow>) -> Vec<String> {
        let mut problems = Vec::new();
        for a in added {
            let name = a.window.name.clone().unwrap_or_default();
            if let Err(e) = self.add(a) {
                problems.push(format!("maintenance window {name:?} not restored: {e}"));
            }
        }
        problems
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.config
            .iter()
            .chain(self.added.iter().map(|(_, w)| w))
            .map(|w| w.name.as_str())
    }

    /// Adds a window (it needs a name, unique among all windows); problems name the field
    /// (`window.time_zone: ...`).
    pub fn add(&mut self, a: AddedWindow) -> Result<WindowView, WindowError> {
        let name = a.window.name.clone().unwrap_or_default();
        if name.trim().is_empty() {
            return Err(WindowError::Invalid(vec![
                "window.name: a window added through the API needs a name".into(),
            ]));
        }
        if self.names().any(|n| n == name) {
            return Err(WindowError::Duplicate(name));
        }
        if self.added.len() >= MAX_API_WINDOWS {
            return Err(WindowError::TooMany);
        }
        let w = a.window.validate("window", 0).map_err(WindowError::Invalid)?;
        self.added.push((a, w));
        let (a, w) = &self.added[self.added.len() - 1];
        Ok(view(w, Some(a), a.created_ms))
    }

    /// Removes a window the API added.
    pub fn remove(&mut self, name: &str) -> Result<AddedWindow, WindowError> {
        if self.config.iter().any(|w| w.name == name) {
            return Err(WindowError::FromConfig(name.into()));
        }
        let i = self
            .added
            .iter()
            .position(|(_, w)| w.name == name)
            .ok_or_else(|| WindowError::Unknown(name.into()))?;
        Ok(self.added.remove(i).0)
    }

    /// The windows the API added, to persist.
    pub fn added(&self) -> Vec<AddedWindow> {
        self.added.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Every window, config first, each saying whether it is open at `now_ms`.
    pub fn list(&self, now_ms: i64) -> Vec<WindowView> {
        self.config
            .iter()
            .map(|w| view(w, None, now_ms))
            .chain(self.added.iter().map(|(a, w)| view(w, Some(a), now_ms)))
            .collect()
    }

    fn windows(&self) -> impl Iterator<Item = &Window> {
        self.config.iter().chain(self.added.iter().map(|(_, w)| w))
    }

    /// The name of the first open window covering `device` at `now_ms`.
    pub fn muted_by(&self, device: &DeviceInfo, now_ms: i64) -> Option<&str> {
        self.windows()
            .find(|w| w.applies_to(device.site.as_deref(), &device.tags) && w.is_open(now_ms))
            .map(|w| w.name.as_str())
    }

    /// The window muting an incident at `site` over `devices` at `now_ms`: an open window of
    /// its site, else the window muting the first machine when every machine is muted.
    pub fn incident_muted_by(&self, site: Option<&str>, devices: &[DeviceInfo], now_ms: i64) -> Option<&str> {
        let of_site = self
            .windows()
            .find(|w| site.is_some_and(|s| w.sites.contains(s)) && w.is_open(now_ms));
        if let Some(w) = of_site {
            return Some(&w.name);
        }
        let first = self.muted_by(devices.first()?, now_ms)?;
        devices[1..]
            .iter()
            .all(|d| self.muted_by(d, now_ms).is_some())
            .then_some(first)
    }
}

fn view(w: &Window, added: Option<&AddedWindow>, now_ms: i64) -> WindowView {
    WindowView {
        window: w.written.clone(),
        source: if added.is_some() { "api" } else { "config" },
        open_now: w.is_open(now_ms),
        created_by: added.map(|a| a.created_by.clone()),
        created_ms: added.map(|a| a.created_ms),
        comment: added.map(|a| a.comment.clone()).filter(|c| !c.is_empty()),
    }
}

/// What becomes of one alert transition's notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Not sent because of `window`; `mark`: record the window on the alert (its firing).
    Mute {
        window: String,
        mark: bool,
    },
}

/// The verdict for transition `t` of an alert about `device` at `now_ms`. See the module docs.
pub fn verdict(book: &MaintenanceBook, t: &Transition, device: &DeviceInfo, now_ms: i64) -> Verdict {
    let a: &Alert = &t.alert;
    let open = || book.muted_by(device, now_ms).map(str::to_string);
    let (window, mark) = match t.kind {
        TransitionKind::Firing | TransitionKind::Unsilenced => (open(), true),
        TransitionKind::Escalated => (a.muted_by.clone().or_else(open), false),
        TransitionKind::Resolved => (a.muted_by.clone(), false),
        TransitionKind::Pending | TransitionKind::Cancelled => (None, false),
    };
    match window {
        Some(window) => Verdict::Mute { window, mark },
        None => Verdict::Send,
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;
    use jiff::Timestamp;

    use super::*;
    use crate::alerts::alert::AlertState;
    use crate::notify::sample;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn build_window(name: &str, site: &str, zone: &str, from: &str, to: &str) -> WindowFile {
        WindowFile {
            name: Some(name.into()),
            sites: vec![site.into()],
            tags: vec![],
            time_zone: zone.into(),
            days: vec![],
            from: from.into(),
            to: to.into(),
        }
    }

    fn build_added(w: WindowFile) -> AddedWindow {
        AddedWindow {
            window: w,
            created_by: "ops".into(),
            created_ms: 1,
            comment: String::new(),
        }
    }

    fn build_device(id: &str, site: &str) -> DeviceInfo {
        DeviceInfo {
            site: Some(site.into()),
            ..DeviceInfo::new(DeviceId::new(id).unwrap())
        }
    }

    /// Oslo's nightly cleaning, 02:00 to 03:00 local time.
    fn build_book() -> MaintenanceBook {
        let config = Windows::from_files(
            "notify.maintenance",
            &[build_window("nightly", "oslo", "Europe/Oslo", "02:00", "03:00")],
        )
        .unwrap();
        MaintenanceBook::new(config)
    }

    fn build_transition(kind: TransitionKind, muted_by: Option<&str>) -> Transition {
        let mut alert = sample::firing_alert(0).alert.unwrap();
        alert.muted_by = muted_by.map(str::to_string);
        alert.state = if kind == TransitionKind::Resolved {
            AlertState::Resolved
        } else {
            AlertState::Firing
        };
        Transition {
            kind,
            at_ms: 0,
            silenced: false,
            alert,
        }
    }

    #[test]
    fn a_firing_inside_an_oslo_window_is_muted_and_marked_and_outside_it_is_sent() {
        let book = build_book();
        let oslo = build_device("rvm1", "oslo");
        let bergen = build_device("rvm2", "bergen");
        let firing = build_transition(TransitionKind::Firing, None);
        // 02:30 in Oslo (CET) is 01:30 UTC
        let inside = ms("2026-01-15T01:30:00Z");
        assert_eq!(
            verdict(&book, &firing, &oslo, inside),
            Verdict::Mute {
                window: "nightly".into(),
                mark: true
            }
        );
        assert_eq!(verdict(&book, &firing, &bergen, inside), Verdict::Send);
        assert_eq!(
            verdict(&book, &firing, &oslo, ms("2026-01-15T02:30:00Z")),
            Verdict::Send,
            "03:30 in Oslo"
        );
    }

    #[test]
    fn the_window_follows_oslo_summer_time_not_utc() {
        let book = build_book();
        let oslo = build_device("rvm1", "oslo");
        // 2026-03-29: clocks go forward at 02:00, so the nightly window does not happen
        assert_eq!(book.muted_by(&oslo, ms("2026-03-29T01:30:00Z")), None);
        // the next night 02:30 CEST is 00:30 UTC; 01:30 UTC is 03:30 CEST
        assert_eq!(book.muted_by(&oslo, ms("2026-03-30T00:30:00Z")), Some("nightly"));
        assert_eq!(book.muted_by(&oslo, ms("2026-03-30T01:30:00Z")), None);
    }

    #[test]
    fn a_muted_alert_resolves_silently_and_a_delivered_one_resolves_aloud_inside_the_window() {
        let book = build_book();
        let oslo = build_device("rvm1", "oslo");
        let inside = ms("2026-01-15T01:30:00Z");
        let muted = build_transition(TransitionKind::Resolved, Some("nightly"));
        assert_eq!(
            verdict(&book, &muted, &oslo, inside),
            Verdict::Mute {
                window: "nightly".into(),
                mark: false
            }
        );
        let told = build_transition(TransitionKind::Resolved, None);
        assert_eq!(verdict(&book, &told, &oslo, inside), Verdict::Send);
        let escalated = build_transition(TransitionKind::Escalated, None);
        assert!(matches!(
            verdict(&book, &escalated, &oslo, inside),
            Verdict::Mute { mark: false, .. }
        ));
    }

    #[test]
    fn windows_added_through_the_api_are_named_unique_listed_and_removable() {
        let mut book = build_book();
        let now = ms("2026-01-15T01:30:00Z");
        let v = book
            .add(build_added(build_window(
                "bergen-night",
                "bergen",
                "UTC",
                "01:00",
                "02:00",
            )))
            .unwrap();
        assert_eq!(
            (v.source, v.window.name.as_deref()),
            ("api", Some("bergen-night"))
        );
        let e = book
            .add(build_added(build_window("nightly", "x", "UTC", "01:00", "02:00")))
            .unwrap_err();
        assert_eq!(e, WindowError::Duplicate("nightly".into()));
        let mut unnamed = build_window("", "x", "UTC", "01:00", "02:00");
        unnamed.name = None;
        assert!(matches!(
            book.add(build_added(unnamed)),
            Err(WindowError::Invalid(_))
        ));
        let e = book
            .add(build_added(build_window(
                "x",
                "x",
                "Mars/Olympus",
                "01:00",
                "02:00",
            )))
            .unwrap_err()
            .to_string();
        assert!(e.contains("window.time_zone"), "{e}");
        let listed: Vec<(String, &str, bool)> = book
            .list(now)
            .into_iter()
            .map(|w| (w.window.name.unwrap(), w.source, w.open_now))
            .collect();
        assert_eq!(
            listed,
            [
                ("nightly".to_string(), "config", true),
                ("bergen-night".to_string(), "api", true)
            ]
        );
        assert_eq!(
            book.remove("nightly"),
            Err(WindowError::FromConfig("nightly".into()))
        );
        assert_eq!(book.remove("nope"), Err(WindowError::Unknown("nope".into())));
        let persisted = book.added();
        book.remove("bergen-night").unwrap();
        assert_eq!(book.list(now).len(), 1);
        assert!(book.restore(persisted).is_empty());
        assert_eq!(book.list(now).len(), 2);
    }

    #[test]
    fn an_incident_is_muted_by_its_site_or_when_every_machine_is_muted() {
        let book = build_book();
        let inside = ms("2026-01-15T01:30:00Z");
        let oslo = [build_device("rvm1", "oslo"), build_device("rvm2", "oslo")];
        let mixed = [build_device("rvm1", "oslo"), build_device("rvm3", "bergen")];
        assert_eq!(book.incident_muted_by(Some("oslo"), &[], inside), Some("nightly"));
        assert_eq!(book.incident_muted_by(None, &oslo, inside), Some("nightly"));
        assert_eq!(book.incident_muted_by(None, &mixed, inside), None);
        assert_eq!(book.incident_muted_by(None, &[], inside), None);
    }
}
