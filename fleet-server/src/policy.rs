//! Who may do what on the broker, decided from the certificate identity alone.
//!
//! Pure functions, applied by the embedded broker's hooks ([`crate::broker`]) and mirrored in
//! the Mosquitto ACL that `fleetctl broker-config` writes.
//!
//! | identity (certificate CN) | connect | publish | subscribe |
//! | --- | --- | --- | --- |
//! | `fleet-server` | yes | anything | anything |
//! | `reader-NAME` | yes, no last will | nothing | filters within `fleet/v1/` |
//! | device id | yes; will only on its own `state` topic | its own agent topics | within `rvm/v1/{id}/` |
//! | anything else, or no certificate | no | - | - |
//!
//! Three holes of the broker are closed here (each has a regression test): a last will skips
//! the publish ACL, so the will topic is checked at connect; a certificate without a CN would
//! keep the username the client sent, so the CN must be present and equal the username; a
//! client id is global, so a client may only use its own CN as client id, or `CN:suffix`
//! (`:` appears in no identity, so one identity can never take another's client id).

use common::ids::Identity;
use common::topics::{self, Kind, Topic};

/// Why a connection was refused (logged and counted by the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCertificateCn,
    UnknownIdentity,
    UsernameMismatch,
    ClientIdNotOwned,
    WillNotAllowed,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificateCn => "no_certificate_cn",
            Refusal::UnknownIdentity => "unknown_identity",
            Refusal::UsernameMismatch => "username_mismatch",
            Refusal::ClientIdNotOwned => "client_id_not_owned",
            Refusal::WillNotAllowed => "will_not_allowed",
        }
    }
}

/// Separator between an identity and a client id suffix.
pub const CLIENT_ID_SEPARATOR: char = ':';

/// Decides a CONNECT. `cn` is the verified certificate's CN, `username` what the broker will
/// use as username (the CN when it replaces the client's), `will_topic` the last will's topic.
pub fn authorize_connect(
    cn: Option<&str>,
    username: Option<&str>,
    client_id: &str,
    will_topic: Option<&str>,
) -> Result<Identity, Refusal> {
    let cn = cn.filter(|c| !c.is_empty()).ok_or(Refusal::NoCertificateCn)?;
    let identity = Identity::from_common_name(cn).ok_or(Refusal::UnknownIdentity)?;
    if username != Some(cn) {
        return Err(Refusal::UsernameMismatch);
    }
    let owned = client_id == cn
        || client_id
            .strip_prefix(cn)
            .is_some_and(|rest| rest.starts_with(CLIENT_ID_SEPARATOR));
    if !owned {
        return Err(Refusal::ClientIdNotOwned);
    }
    if let Some(will) = will_topic
        && !may_publish(&identity, will)
    {
        return Err(Refusal::WillNotAllowed);
    }
    Ok(identity)
}

/// Whether `identity` may publish on `topic`.
pub fn may_publish(identity: &Identity, topic: &str) -> bool {
    match identity {
        Identity::Server => true,
        Identity::Reader(_) => false,
        Identity::Device(me) => matches!(
            Topic::parse(topic),
            Ok(Topic::Device { device, kind }) if &device == me && kind.is_from_agent()
        ),
    }
}

/// Whether `identity` may subscribe to `filter`.
pub fn may_subscribe(identity: &Identity, filter: &str) -> bool {
    match identity {
        Identity::Server => true,
        Identity::Reader(_) => topics::filter_within(filter, topics::FLEET_ROOT),
        Identity::Device(me) => topics::filter_within(filter, &format!("{}/{me}", topics::DEVICE_ROOT)),
    }
}

/// The topic a device's last will must use.
pub fn will_topic_of(device: &common::DeviceId) -> String {
    Topic::device(device, Kind::State)
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;

    fn dev(s: &str) -> Identity {
        Identity::Device(DeviceId::new(s).unwrap())
    }

    #[test]
    fn a_device_connects_with_its_own_cn_client_id_and_will() {
        let id = authorize_connect(Some("rvm1"), Some("rvm1"), "rvm1", Some("rvm/v1/rvm1/state"));
        assert_eq!(id, Ok(dev("rvm1")));
        assert!(authorize_connect(Some("rvm1"), Some("rvm1"), "rvm1:agent", None).is_ok());
    }

    #[test]
    fn no_certificate_cn_is_refused_even_with_a_server_username() {
        assert_eq!(
            authorize_connect(None, Some("fleet-server"), "fleet-server", None),
            Err(Refusal::NoCertificateCn)
        );
        assert_eq!(
            authorize_connect(Some(""), Some("fleet-server"), "x", None),
            Err(Refusal::NoCertificateCn)
        );
    }

    #[test]
    fn a_username_other_than_the_cn_is_refused() {
        assert_eq!(
            authorize_connect(Some("rvm1"), Some("fleet-server"), "rvm1", None),
            Err(Refusal::UsernameMismatch)
        );
    }

    #[test]
    fn a_device_cannot_take_anothers_client_id() {
        for cid in [
            "fleet-server",
            "fleet-server:ingest",
            "rvm2",
            "rvm10",
            "rvm1x",
            "rvm1-x",
        ] {
            assert_eq!(
                authorize_connect(Some("rvm1"), Some("rvm1"), cid, None),
                Err(Refusal::ClientIdNotOwned),
                "{cid}"
            );
        }
        // device "fleet" cannot pose as the server's client id either
        assert_eq!(
            authorize_connect(Some("fleet"), Some("fleet"), "fleet-server", None),
            Err(Refusal::ClientIdNotOwned)
        );
    }

    #[test]
    fn a_device_cannot_plant_a_will_on_another_devices_topic() {
        for will in [
            "rvm/v1/rvm2/state",
            "rvm/v1/rvm2/telemetry",
            "fleet/v1/alerts",
            "rvm/v1/rvm1/cmd",
        ] {
            assert_eq!(
                authorize_connect(Some("rvm1"), Some("rvm1"), "rvm1", Some(will)),
                Err(Refusal::WillNotAllowed),
                "{will}"
            );
        }
    }

    #[test]
    fn readers_connect_without_a_will_only() {
        assert!(authorize_connect(Some("reader-graf"), Some("reader-graf"), "reader-graf", None).is_ok());
        assert_eq!(
            authorize_connect(
                Some("reader-graf"),
                Some("reader-graf"),
                "reader-graf",
                Some("fleet/v1/alerts")
            ),
            Err(Refusal::WillNotAllowed)
        );
    }

    #[test]
    fn unknown_identities_are_refused() {
        for cn in ["bad/cn", "reader-", "server", "fleet-server2"] {
            let r = authorize_connect(Some(cn), Some(cn), cn, None);
            // "server" is a valid device id: it is a device, not the fleet server
            if cn == "server" {
                assert_eq!(r, Ok(dev("server")));
            } else {
                assert_eq!(r, Err(Refusal::UnknownIdentity), "{cn}");
            }
        }
    }

    #[test]
    fn devices_publish_only_their_own_agent_topics() {
        let me = dev("rvm1");
        for t in ["telemetry", "health", "event", "state", "cmd/result"] {
            assert!(may_publish(&me, &format!("rvm/v1/rvm1/{t}")), "{t}");
            assert!(!may_publish(&me, &format!("rvm/v1/rvm2/{t}")), "{t}");
        }
        for t in [
            "rvm/v1/rvm1/cmd",
            "fleet/v1/alerts",
            "rvm/v1/rvm1/other",
            "$SYS/x",
            "rvm/v1/+/telemetry",
        ] {
            assert!(!may_publish(&me, t), "{t}");
        }
    }

    #[test]
    fn readers_never_publish_and_subscribe_only_under_fleet() {
        let r = Identity::Reader("graf".into());
        assert!(!may_publish(&r, "fleet/v1/alerts"));
        assert!(!may_publish(&r, "rvm/v1/rvm1/cmd"));
        assert!(may_subscribe(&r, "fleet/v1/#"));
        assert!(may_subscribe(&r, "fleet/v1/devices/+/telemetry"));
        for f in ["#", "rvm/v1/#", "rvm/v1/+/telemetry", "+/v1/#", "$SYS/#"] {
            assert!(!may_subscribe(&r, f), "{f}");
        }
    }

    #[test]
    fn devices_subscribe_only_within_their_own_namespace() {
        let me = dev("rvm1");
        assert!(may_subscribe(&me, "rvm/v1/rvm1/cmd"));
        for f in ["rvm/v1/rvm2/cmd", "rvm/v1/+/cmd", "#", "rvm/v1/#", "fleet/v1/#"] {
            assert!(!may_subscribe(&me, f), "{f}");
        }
    }

    #[test]
    fn the_server_may_do_anything() {
        assert!(may_publish(&Identity::Server, "rvm/v1/rvm1/cmd"));
        assert!(may_subscribe(&Identity::Server, "rvm/v1/+/telemetry"));
    }
}
