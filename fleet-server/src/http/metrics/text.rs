//! The server's families, written by the shared `exposition` crate (over `prometheus-client`,
//! the agent's `/metrics` uses it too): a family's type and help come from
//! [`FAMILIES`](super::families::FAMILIES).

use exposition::{Exposition, Family, Kind, Value};

use super::families::FAMILIES;

/// An empty family of `name`, typed and described as [`FAMILIES`] says.
pub(super) fn family(name: &'static str) -> Family {
    debug_assert!(FAMILIES.iter().any(|f| f.0 == name), "{name} is not in FAMILIES");
    let (kind, help) = FAMILIES
        .iter()
        .find(|f| f.0 == name)
        .map_or((Kind::Untyped, ""), |f| (kind_of(f.1), f.2));
    Family::new(name, kind, help)
}

fn kind_of(kind: &str) -> Kind {
    match kind {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        _ => Kind::Untyped,
    }
}

/// A family of one unlabelled sample.
pub(super) fn one(x: &mut Exposition, name: &'static str, value: impl Into<Value>) {
    let mut f = family(name);
    f.add(&[], value);
    x.push(f);
}
