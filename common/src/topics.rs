//! Every MQTT topic, built and parsed here and nowhere else.
//!
//! | topic | direction |
//! | --- | --- |
//! | `rvm/v1/{device}/telemetry`, `health`, `event`, `state`, `cmd/result` | agent -> server |
//! | `rvm/v1/{device}/cmd` | server -> agent |
//! | `fleet/v1/devices/{device}/{kind}` | server -> anyone (JSON) |
//! | `fleet/v1/alerts`, `fleet/v1/incidents` | server -> anyone (JSON) |

use std::fmt;

use crate::ids::DeviceId;

pub const DEVICE_ROOT: &str = "rvm/v1";
pub const FLEET_ROOT: &str = "fleet/v1";

/// The kinds of topic under a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Telemetry,
    Health,
    Event,
    State,
    Cmd,
    CmdResult,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Telemetry,
        Kind::Health,
        Kind::Event,
        Kind::State,
        Kind::Cmd,
        Kind::CmdResult,
    ];

    /// The path after the device level.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Telemetry => "telemetry",
            Kind::Health => "health",
            Kind::Event => "event",
            Kind::State => "state",
            Kind::Cmd => "cmd",
            Kind::CmdResult => "cmd/result",
        }
    }

    fn from_suffix(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.suffix() == s)
    }

    /// Whether a device may publish on this kind (everything but `cmd`).
    pub fn is_from_agent(self) -> bool {
        self != Kind::Cmd
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `rvm/v1/{device}/{kind}`
    Device { device: DeviceId, kind: Kind },
    /// `fleet/v1/devices/{device}/{kind}`
    FleetDevice { device: DeviceId, kind: Kind },
    /// `fleet/v1/alerts`
    FleetAlerts,
    /// `fleet/v1/incidents`
    FleetIncidents,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic:?} is not an RVM Fleet topic: {why}")]
pub struct TopicError {
    pub topic: String,
    pub why: &'static str,
}

impl Topic {
    pub fn device(device: &DeviceId, kind: Kind) -> String {
        format!("{DEVICE_ROOT}/{device}/{}", kind.suffix())
    }

    pub fn fleet_device(device: &DeviceId, kind: Kind) -> String {
        format!("{FLEET_ROOT}/devices/{device}/{}", kind.suffix())
    }

    pub fn build(&self) -> String {
        match self {
            Topic::Device { device, kind } => Topic::device(device, *kind),
            Topic::FleetDevice { device, kind } => Topic::fleet_device(device, *kind),
            Topic::FleetAlerts => format!("{FLEET_ROOT}/alerts"),
            Topic::FleetIncidents => format!("{FLEET_ROOT}/incidents"),
        }
    }

    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let err = |why| TopicError {
            topic: topic.chars().take(200).collect(),
            why,
        };
        if let Some(rest) = topic.strip_prefix("rvm/v1/") {
            let (dev, suffix) = rest.split_once('/').ok_or_else(|| err("no kind"))?;
            let device = DeviceId::new(dev).map_err(|_| err("bad device id"))?;
            let kind = Kind::from_suffix(suffix).ok_or_else(|| err("unknown kind"))?;
            return Ok(Topic::Device { device, kind });
        }
        if let Some(rest) = topic.strip_prefix("fleet/v1/") {
            return match rest {
                "alerts" => Ok(Topic::FleetAlerts),
                "incidents" => Ok(Topic::FleetIncidents),
                _ => {
                    let rest = rest.strip_prefix("devices/").ok_or_else(|| err("unknown"))?;
                    let (dev, suffix) = rest.split_once('/').ok_or_else(|| err("no kind"))?;
                    let device = DeviceId::new(dev).map_err(|_| err("bad device id"))?;
                    let kind = Kind::from_suffix(suffix).ok_or_else(|| err("unknown kind"))?;
                    Ok(Topic::FleetDevice { device, kind })
                }
            };
        }
        Err(err("unknown root"))
    }
}

/// A device topic with the device level replaced by `level`: an MQTT wildcard (`+`) or a
/// broker ACL placeholder (Mosquitto's `%u`). `level` is not validated.
pub fn device_template(level: &str, kind: Kind) -> String {
    format!("{DEVICE_ROOT}/{level}/{}", kind.suffix())
}

/// Subscription filter for one kind across every device: `rvm/v1/+/{kind}`.
pub fn all_devices_filter(kind: Kind) -> String {
    format!("{DEVICE_ROOT}/+/{}", kind.suffix())
}

/// What the server subscribes to: every kind an agent publishes.
pub fn server_filters() -> Vec<String> {
    Kind::ALL
        .into_iter()
        .filter(|k| k.is_from_agent())
        .map(all_devices_filter)
        .collect()
}

/// What a read-only subscriber may read: `fleet/v1/#`.
pub fn reader_filter() -> String {
    format!("{FLEET_ROOT}/#")
}

/// Matches an MQTT topic filter (`+`, `#`) against a topic name.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic matched by `filter` is under `prefix/` (a filter confined to a subtree).
/// `prefix` has no wildcards. `fleet/v1/#` is within `fleet/v1`; `+/v1/#` is not.
pub fn filter_within(filter: &str, prefix: &str) -> bool {
    let mut f = filter.split('/');
    for p in prefix.split('/') {
        match f.next() {
            Some(level) if level == p => {}
            _ => return false,
        }
    }
    // `prefix/#` also matches `prefix` itself, which is fine: nothing is published there.
    f.next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn every_topic_round_trips() {
        let mut all = vec![Topic::FleetAlerts, Topic::FleetIncidents];
        for kind in Kind::ALL {
            all.push(Topic::Device {
                device: d("rvm1"),
                kind,
            });
            all.push(Topic::FleetDevice {
                device: d("rvm1"),
                kind,
            });
        }
        for t in all {
            assert_eq!(Topic::parse(&t.build()).unwrap(), t, "{}", t.build());
        }
    }

    #[test]
    fn topics_have_the_documented_shape() {
        assert_eq!(
            Topic::device(&d("rvm1"), Kind::Telemetry),
            "rvm/v1/rvm1/telemetry"
        );
        assert_eq!(
            Topic::device(&d("rvm1"), Kind::CmdResult),
            "rvm/v1/rvm1/cmd/result"
        );
        assert_eq!(
            Topic::fleet_device(&d("rvm1"), Kind::Health),
            "fleet/v1/devices/rvm1/health"
        );
        assert_eq!(Topic::FleetAlerts.build(), "fleet/v1/alerts");
    }

    #[test]
    fn bad_topics_are_rejected() {
        for t in [
            "",
            "rvm/v1",
            "rvm/v1/rvm1",
            "rvm/v1/rvm1/bogus",
            "rvm/v1/rv-m1/telemetry",
            "rvm/v1/+/telemetry",
            "rvm/v2/rvm1/telemetry",
            "rvm/v1/rvm1/telemetry/extra",
            "fleet/v1/devices/rvm1",
            "fleet/v1/other",
            "/rvm/v1/rvm1/telemetry",
        ] {
            assert!(Topic::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn server_filters_cover_every_agent_kind() {
        let f = server_filters();
        assert_eq!(f.len(), 5);
        for kind in Kind::ALL.into_iter().filter(|k| k.is_from_agent()) {
            let t = Topic::device(&d("x9"), kind);
            assert!(f.iter().any(|f| filter_matches(f, &t)), "{t}");
        }
        assert!(!f.iter().any(|f| filter_matches(f, "rvm/v1/x9/cmd")));
    }

    #[test]
    fn device_templates_put_the_level_where_the_device_goes() {
        assert_eq!(device_template("%u", Kind::CmdResult), "rvm/v1/%u/cmd/result");
        assert_eq!(
            device_template("+", Kind::Health),
            all_devices_filter(Kind::Health)
        );
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("a/b", "a/c"));
    }

    #[test]
    fn filter_within_confines_to_a_subtree() {
        assert!(filter_within("fleet/v1/#", "fleet/v1"));
        assert!(filter_within("fleet/v1/devices/+/telemetry", "fleet/v1"));
        assert!(!filter_within("#", "fleet/v1"));
        assert!(!filter_within("+/v1/#", "fleet/v1"));
        assert!(!filter_within("fleet/+/#", "fleet/v1"));
        assert!(!filter_within("fleet/v1", "fleet/v1"));
        assert!(filter_within("rvm/v1/a/cmd", "rvm/v1/a"));
        assert!(!filter_within("rvm/v1/+/cmd", "rvm/v1/a"));
    }
}
