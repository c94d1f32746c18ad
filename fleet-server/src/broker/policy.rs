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

use common::ids::{IdError, Identity};
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

/// Mosquitto's placeholder for the username (the certificate CN with
/// `use_identity_as_username`) in `pattern` lines.
pub const MOSQUITTO_USER: &str = "%u";

/// A device id that stands for every device when the ACL is derived from this policy.
const PROBE_DEVICE: &str = "probe0";

/// Why no ACL file was generated.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("reader name {name:?}: {source}")]
    Reader { name: String, source: IdError },
    #[error("the probe device id {PROBE_DEVICE:?}: {0}")]
    Probe(IdError),
}

/// The Mosquitto ACL (`acl_file`) of this policy, for `fleetctl broker-config`.
///
/// The lines are derived by asking [`may_publish`] and [`may_subscribe`], so the ACL follows
/// the policy when it changes:
/// - `user fleet-server`: `topic readwrite #`;
/// - one `user reader-NAME` block per name in `readers`: `topic read fleet/v1/#`, and
///   `topic deny rvm/v1/#` (patterns apply to every user: without it a reader could write
///   `rvm/v1/reader-NAME/telemetry`). The ACL file has no wildcard users, so readers are
///   listed one by one (from the reader certificates issued; rerun `fleetctl broker-config`
///   and reload Mosquitto after adding one). A reader not listed can connect but gets nothing;
/// - `pattern` lines with `%u` for every device: write on each topic a device publishes,
///   read on each topic the server sends it (`cmd`). Narrower than [`may_subscribe`], which
///   lets a device subscribe anywhere in its own namespace: reading back its own records is
///   not needed. For the server the patterns add nothing (it may do everything).
///
/// Differences from the embedded broker that the ACL cannot express (see
/// `config/mosquitto/README.md`): a denied subscribe is granted and then filtered at delivery,
/// a denied QoS 1 publish is acknowledged and dropped, a last will on a foreign topic is
/// accepted at connect and dropped when it would be published.
pub fn mosquitto_acl(readers: &[String]) -> Result<String, AclError> {
    let mut readers: Vec<&String> = readers.iter().collect();
    readers.sort();
    readers.dedup();
    for r in &readers {
        common::ids::validate_device_id(r).map_err(|source| AclError::Reader {
            name: r.to_string(),
            source,
        })?;
    }
    let probe = common::DeviceId::new(PROBE_DEVICE).map_err(AclError::Probe)?;
    let device = Identity::Device(probe.clone());
    let server = common::ids::SERVER_IDENTITY;
    let everything = "#";
    let fleet = topics::reader_filter();
    let mut out = String::new();
    out.push_str(
        "# RVM Fleet broker ACL for Mosquitto, generated by `fleetctl broker-config` from\n\
         # fleet-server/src/broker/policy.rs. Do not edit: generate it again (also after issuing a reader\n\
         # certificate) and reload Mosquitto (`systemctl reload mosquitto`, or SIGHUP).\n\
         # Usernames are certificate CNs (`use_identity_as_username true`). No match = denied.\n\n",
    );
    if may_publish(&Identity::Server, everything) && may_subscribe(&Identity::Server, everything) {
        out.push_str(&format!(
            "# the fleet server: everything\nuser {server}\ntopic readwrite {everything}\n\n"
        ));
    }
    out.push_str(&format!(
        "# read-only subscribers (certificates CN=reader-NAME): {fleet} only\n"
    ));
    if readers.is_empty() {
        out.push_str("# (none issued yet: `fleetctl certs client NAME --read-only`)\n");
    }
    for name in readers {
        let who = Identity::Reader(name.clone());
        if may_subscribe(&who, &fleet) {
            out.push_str(&format!(
                "user {}{name}\ntopic deny {}/#\ntopic read {fleet}\n",
                common::ids::READER_PREFIX,
                topics::DEVICE_ROOT
            ));
        }
    }
    out.push_str(
        "\n# devices (certificate CN = device id = %u): their own topics only. Patterns apply to\n\
         # every user: readers have `topic deny rvm/v1/#` above for that reason\n",
    );
    for kind in Kind::ALL {
        let topic = Topic::device(&probe, kind);
        if may_publish(&device, &topic) {
            out.push_str(&format!(
                "pattern write {}\n",
                topics::device_template(MOSQUITTO_USER, kind)
            ));
        } else if !kind.is_from_agent() && may_subscribe(&device, &topic) {
            out.push_str(&format!(
                "pattern read {}\n",
                topics::device_template(MOSQUITTO_USER, kind)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use common::DeviceId;
    use proptest::prelude::*;

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

    /// Mosquitto's `acl_file` semantics as far as [`mosquitto_acl`] uses them: `user` blocks of
    /// `topic` lines, `pattern` lines for every user with `%u` substituted, no match = denied.
    fn acl_allows(acl: &str, username: &str, topic: &str, write: bool) -> bool {
        // (access, filter) of every line that applies to `username`
        let mut user: Option<&str> = None;
        let mut rules = Vec::new();
        for line in acl.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.splitn(3, ' ').collect();
            match parts[..] {
                ["user", u] => user = Some(u),
                ["topic", access, filter] if user == Some(username) => {
                    rules.push((access, filter.to_string()))
                }
                ["topic", _, _] => {}
                ["pattern", access, filter] => rules.push((access, filter.replace(MOSQUITTO_USER, username))),
                _ => panic!("unexpected ACL line {line:?}"),
            }
        }
        // denials first, then grants
        if rules
            .iter()
            .any(|(a, f)| *a == "deny" && topics::filter_matches(f, topic))
        {
            return false;
        }
        rules.iter().any(|(access, f)| {
            let grants = match *access {
                "read" => !write,
                "write" => write,
                "readwrite" => true,
                "deny" => false,
                other => panic!("unexpected access {other:?}"),
            };
            grants && topics::filter_matches(f, topic)
        })
    }

    fn build_acl() -> String {
        mosquitto_acl(&["graf".into(), "erp".into(), "graf".into()]).unwrap()
    }

    #[test]
    fn the_mosquitto_acl_has_the_expected_lines() {
        let acl = build_acl();
        let lines: Vec<&str> = acl
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(
            lines,
            [
                "user fleet-server",
                "topic readwrite #",
                "user reader-erp",
                "topic deny rvm/v1/#",
                "topic read fleet/v1/#",
                "user reader-graf",
                "topic deny rvm/v1/#",
                "topic read fleet/v1/#",
                "pattern write rvm/v1/%u/telemetry",
                "pattern write rvm/v1/%u/health",
                "pattern write rvm/v1/%u/event",
                "pattern write rvm/v1/%u/state",
                "pattern read rvm/v1/%u/cmd",
                "pattern write rvm/v1/%u/cmd/result",
            ],
            "{acl}"
        );
        let none = mosquitto_acl(&[]).unwrap();
        assert!(!none.contains("user reader-"), "{none}");
        assert!(none.contains("fleetctl certs client NAME --read-only"), "{none}");
    }

    #[test]
    fn a_bad_reader_name_is_refused_naming_it() {
        let e = mosquitto_acl(&["ok".into(), "bad name".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"bad name\""), "{e}");
    }

    #[test]
    fn no_mosquitto_acl_line_lets_a_device_write_a_command() {
        let acl = build_acl();
        for line in acl.lines() {
            if line.starts_with("pattern write") || line.starts_with("pattern readwrite") {
                assert!(!line.ends_with("/cmd"), "{line}");
                assert!(!line.contains('#') && !line.contains('+'), "{line}");
            }
        }
        for me in ["rvm1", "rvm2"] {
            for victim in ["rvm1", "rvm2"] {
                let cmd = format!("rvm/v1/{victim}/cmd");
                assert!(!acl_allows(&acl, me, &cmd, true), "{me} writes {cmd}");
            }
            assert!(acl_allows(&acl, me, &format!("rvm/v1/{me}/cmd"), false));
            assert!(!acl_allows(&acl, me, "rvm/v1/rvm3/cmd", false));
            assert!(!acl_allows(&acl, me, "fleet/v1/alerts", false));
        }
        assert!(!acl_allows(&acl, "reader-graf", "rvm/v1/rvm1/cmd", true));
        assert!(!acl_allows(&acl, "reader-graf", "fleet/v1/alerts", true));
        assert!(acl_allows(&acl, "reader-graf", "fleet/v1/alerts", false));
        assert!(!acl_allows(&acl, "reader-nobody", "fleet/v1/alerts", false));
    }

    fn arb_topic() -> impl Strategy<Value = String> {
        let dev = prop::sample::select(vec![
            "rvm1",
            "rvm2",
            "probe0",
            "fleet-server",
            "reader-graf",
            "+",
            "#",
        ]);
        let kind = prop::sample::select(
            Kind::ALL
                .iter()
                .map(|k| k.suffix().to_string())
                .chain(["other".to_string(), "cmd/x".to_string()])
                .collect::<Vec<_>>(),
        );
        prop_oneof![
            (dev.clone(), kind.clone()).prop_map(|(d, k)| format!("rvm/v1/{d}/{k}")),
            (dev, kind).prop_map(|(d, k)| format!("fleet/v1/devices/{d}/{k}")),
            prop::sample::select(vec![
                "fleet/v1/alerts",
                "fleet/v1/incidents",
                "$SYS/x",
                "a/b",
                "rvm/v2/rvm1/telemetry"
            ])
            .prop_map(str::to_string),
        ]
    }

    proptest! {
        /// The ACL never grants more than the policy; what it writes it grants exactly as the
        /// policy does, and so does it read for the server, listed readers and commands.
        #[test]
        fn the_mosquitto_acl_agrees_with_the_policy(
            who in prop::sample::select(vec!["fleet-server", "reader-graf", "reader-nobody", "rvm1", "rvm2", "probe0"]),
            topic in arb_topic(),
        ) {
            let acl = build_acl();
            let id = Identity::from_common_name(who).unwrap();
            // a topic name has no wildcards; one with them is only a subscription filter
            let is_name = !topic.contains('+') && !topic.contains('#');
            let acl_write = acl_allows(&acl, who, &topic, true);
            let acl_read = acl_allows(&acl, who, &topic, false);
            if is_name {
                prop_assert_eq!(acl_write, may_publish(&id, &topic), "write {} {}", who, topic);
            }
            if acl_read && is_name {
                prop_assert!(may_subscribe(&id, &topic), "read {} {}", who, topic);
            }
            let exact_read = match &id {
                Identity::Server => true,
                Identity::Reader(n) => n == "graf",
                Identity::Device(_) => topic.ends_with("/cmd"),
            };
            if exact_read && is_name {
                prop_assert_eq!(acl_read, may_subscribe(&id, &topic), "read {} {}", who, topic);
            }
        }
    }
}
