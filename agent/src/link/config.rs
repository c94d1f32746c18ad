//! The `[mqtt]` section of `agent.toml`: the brokers, the device's TLS identity, keep-alive
//! and the in-flight window.
//!
//! `broker` is one `"host:port"` (as always) or a list of them (`["a:8883", "b:8883"]`): the
//! instances of one fleet, which the link fails over between ([`super::brokers`]).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::brokers::Broker;
use crate::shared::problem::ConfigProblem;

/// `[mqtt] broker`: one `host:port` or a list of them, as written (validated by
/// [`MqttSection::validate`], which names the bad entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSetting {
    One(String),
    List(Vec<String>),
}

impl BrokerSetting {
    /// The entries as written, in order.
    pub fn entries(&self) -> &[String] {
        match self {
            BrokerSetting::One(s) => std::slice::from_ref(s),
            BrokerSetting::List(v) => v,
        }
    }

    /// The brokers, in order; the entries that are not `host:port` are left out (validation
    /// reports them).
    pub fn brokers(&self) -> Vec<Broker> {
        self.entries().iter().filter_map(|s| Broker::parse(s)).collect()
    }

    /// Every problem, each under `key` (`mqtt.broker`, or `mqtt.broker[1]` for a list's entry).
    fn validate(&self, key: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let name = |i: usize| match self {
            BrokerSetting::One(_) => key.to_string(),
            BrokerSetting::List(_) => format!("{key}[{i}]"),
        };
        if self.entries().is_empty() {
            p.push(ConfigProblem {
                key: key.into(),
                message: "an empty list: give at least one host:port".into(),
            });
        }
        let mut seen: Vec<(Broker, usize)> = Vec::new();
        for (i, s) in self.entries().iter().enumerate() {
            match Broker::parse(s) {
                None => p.push(ConfigProblem {
                    key: name(i),
                    message: format!("{s:?} is not host:port"),
                }),
                Some(b) => match seen.iter().find(|(o, _)| *o == b) {
                    Some((_, j)) => p.push(ConfigProblem {
                        key: name(i),
                        message: format!("{s:?} repeats {}", name(*j)),
                    }),
                    None => seen.push((b, i)),
                },
            }
        }
        p
    }
}

impl<'de> Deserialize<'de> for BrokerSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BrokerSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a "host:port" string or a list of them"#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BrokerSetting, E> {
                Ok(BrokerSetting::One(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BrokerSetting, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(BrokerSetting::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `host:port` of the broker, or a list of them to fail over between.
    pub broker: BrokerSetting,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Records published and not yet acknowledged, at most.
    #[serde(default = "default_window")]
    pub inflight_window: usize,
}

fn default_keep_alive_s() -> u64 {
    30
}
fn default_window() -> usize {
    64
}

impl MqttSection {
    /// Every problem, each with its key path under `prefix` (`mqtt`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(ConfigProblem {
                key: format!("{prefix}.{key}"),
                message,
            })
        };
        let brokers = self.broker.validate(&format!("{prefix}.broker"));
        for (key, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if !path.exists() {
                bad(key, format!("{} does not exist", path.display()));
            }
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            bad(
                "keep_alive_s",
                format!("{} is outside 5..=3600", self.keep_alive_s),
            );
        }
        if !(1..=4096).contains(&self.inflight_window) {
            bad(
                "inflight_window",
                format!("{} is outside 1..=4096", self.inflight_window),
            );
        }
        brokers.into_iter().chain(p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_section(broker: &str) -> Result<MqttSection, toml::de::Error> {
        toml::from_str(&format!(
            "broker = {broker}\nca = \"/dev/null\"\ncert = \"/dev/null\"\nkey = \"/dev/null\"\n"
        ))
    }

    fn problems(broker: &str) -> Vec<String> {
        build_section(broker)
            .unwrap()
            .validate("mqtt")
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn a_single_broker_string_is_still_accepted() {
        let s = build_section(r#""fleet.example.com:8883""#).unwrap();
        assert_eq!(s.broker, BrokerSetting::One("fleet.example.com:8883".into()));
        assert_eq!(s.broker.brokers(), [Broker::new("fleet.example.com", 8883)]);
        assert!(s.validate("mqtt").is_empty());
    }

    #[test]
    fn a_list_of_brokers_is_taken_in_order() {
        let s = build_section(r#"["a.example:8883", "b.example:8884", "[::1]:8883"]"#).unwrap();
        assert_eq!(
            s.broker.brokers(),
            [
                Broker::new("a.example", 8883),
                Broker::new("b.example", 8884),
                Broker::new("::1", 8883)
            ]
        );
        assert!(s.validate("mqtt").is_empty());
    }

    #[test]
    fn a_bad_entry_of_a_list_is_named_by_its_index() {
        assert_eq!(
            problems(r#"["a:8883", "b", "c:0"]"#),
            [
                r#"mqtt.broker[1]: "b" is not host:port"#,
                r#"mqtt.broker[2]: "c:0" is not host:port"#
            ]
        );
        assert_eq!(
            problems(r#""nohost""#),
            [r#"mqtt.broker: "nohost" is not host:port"#]
        );
    }

    #[test]
    fn an_empty_list_and_a_repeated_broker_are_refused() {
        assert_eq!(
            problems("[]"),
            ["mqtt.broker: an empty list: give at least one host:port"]
        );
        assert_eq!(
            problems(r#"["a:8883", "b:8883", "a:8883"]"#),
            [r#"mqtt.broker[2]: "a:8883" repeats mqtt.broker[0]"#]
        );
    }

    #[test]
    fn a_broker_of_another_type_is_a_parse_error_that_says_what_is_expected() {
        let e = build_section("8883").unwrap_err().to_string();
        assert!(e.contains(r#"a "host:port" string or a list of them"#), "{e}");
        let e = build_section("[8883]").unwrap_err().to_string();
        assert!(e.contains("broker"), "{e}");
    }
}
