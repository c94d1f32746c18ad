//! The live stream of a scoped token: [`ScopedFilter`] cuts each shared frame down to the
//! machines in scope, or drops it (pure: no IO, unit-tested below).
//!
//! Frames are serialised once for every subscriber ([`super::LiveHub`]); a scoped connection
//! reads each one back, keeps what is about its machines and writes its own copy. Unscoped
//! connections never pay for this. What is kept, by event type:
//! - `devices`: the devices in scope. A device's site arrives with its `meta` (first sight, a
//!   new boot), so membership follows a machine that moves in or out of the scope's stores;
//! - `alert`, `acknowledged`, `command`: when their device is in scope;
//! - `incident`: when it touches a device in scope, cut to those devices
//!   ([`crate::incidents::incident::Incident::restricted`]);
//! - `silences`, `maintenance`, `resync`: as they are (they carry nothing but "refetch");
//! - anything else (a type added later): dropped, so a new event leaks nothing by default.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::incidents::incident::IncidentChange;

/// The scope of one connection: the stores it covers and the machines in them now.
#[derive(Debug, Clone)]
pub struct ScopedFilter {
    sites: BTreeSet<String>,
    devices: BTreeSet<String>,
}

impl ScopedFilter {
    pub fn new(sites: BTreeSet<String>, devices: BTreeSet<String>) -> ScopedFilter {
        ScopedFilter { sites, devices }
    }

    /// The frame this connection gets for `frame` (`data: {json}\n\n`); None: nothing.
    pub fn frame(&mut self, frame: &str) -> Option<String> {
        let json = frame.strip_prefix("data: ")?.trim_end();
        let mut v: Value = serde_json::from_str(json).ok()?;
        let kept = match v["type"].as_str()? {
            "devices" => self.devices(&mut v),
            "alert" | "acknowledged" => self.has(&v["alert"]["device"]),
            "command" => self.has(&v["command"]["device"]),
            "incident" => self.incident(&mut v),
            "silences" | "maintenance" | "resync" => true,
            _ => false,
        };
        kept.then(|| format!("data: {v}\n\n"))
    }

    fn has(&self, device: &Value) -> bool {
        device.as_str().is_some_and(|d| self.devices.contains(d))
    }

    fn devices(&mut self, v: &mut Value) -> bool {
        let Some(list) = v["devices"].as_array_mut() else {
            return false;
        };
        for d in list.iter() {
            let (Some(id), Some(meta)) = (d["id"].as_str(), d.get("meta")) else {
                continue;
            };
            if meta["site"].as_str().is_some_and(|s| self.sites.contains(s)) {
                self.devices.insert(id.to_string());
            } else {
                self.devices.remove(id);
            }
        }
        let devices = &self.devices;
        list.retain(|d| d["id"].as_str().is_some_and(|id| devices.contains(id)));
        !list.is_empty()
    }

    fn incident(&self, v: &mut Value) -> bool {
        // the `type` tag is one more field, which IncidentChange ignores
        let Ok(mut change) = serde_json::from_value::<IncidentChange>(v.clone()) else {
            return false;
        };
        let Some(cut) = change
            .incident
            .restricted(|d| self.devices.contains(d), |s| self.sites.contains(s))
        else {
            return false;
        };
        change.incident = cut;
        change.suppressed.retain(|a| {
            crate::incidents::incident::alert_device(a).is_some_and(|d| self.devices.contains(d))
        });
        let Ok(Value::Object(mut out)) = serde_json::to_value(&change) else {
            return false;
        };
        out.insert("type".into(), Value::from("incident"));
        *v = Value::Object(out);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_filter() -> ScopedFilter {
        ScopedFilter::new(["oslo-1".to_string()].into(), ["a1".to_string()].into())
    }

    #[test]
    fn a_device_batch_keeps_the_machines_in_scope_and_follows_a_moved_one() {
        let mut f = build_filter();
        let frame = r#"data: {"type":"devices","names":["cpu"],"devices":[{"id":"a1","m":[1]},{"id":"b1","m":[2]},{"id":"c1","m":[3],"meta":{"site":"oslo-1"}}]}"#;
        let out = f.frame(&format!("{frame}\n\n")).unwrap();
        assert!(
            out.contains("\"a1\"") && out.contains("\"c1\"") && !out.contains("b1"),
            "{out}"
        );
        // a1 moves to another store: gone from then on
        let moved = "data: {\"type\":\"devices\",\"names\":[],\"devices\":[{\"id\":\"a1\",\"m\":[],\"meta\":{\"site\":\"bergen\"}}]}\n\n";
        assert_eq!(f.frame(moved), None);
        let only_b = "data: {\"type\":\"devices\",\"names\":[],\"devices\":[{\"id\":\"b1\",\"m\":[]}]}\n\n";
        assert_eq!(f.frame(only_b), None);
    }

    #[test]
    fn alerts_and_commands_pass_only_for_machines_in_scope_and_unknown_types_are_dropped() {
        let mut f = build_filter();
        let alert = |d: &str| format!("data: {{\"type\":\"alert\",\"alert\":{{\"device\":\"{d}\"}}}}\n\n");
        assert!(f.frame(&alert("a1")).is_some());
        assert!(f.frame(&alert("b1")).is_none());
        let cmd = "data: {\"type\":\"command\",\"command\":{\"device\":\"b1\"}}\n\n";
        assert!(f.frame(cmd).is_none());
        assert!(f.frame("data: {\"type\":\"silences\"}\n\n").is_some());
        assert!(
            f.frame("data: {\"type\":\"something_new\",\"device\":\"a1\"}\n\n")
                .is_none()
        );
    }
}
