//! Every route of the server with its least role: the table the security suite checks roles
//! against (`tests/tests/security.rs`) and the scope test walks with a store-scoped token
//! (`tests/tests/scope.rs`). [`registered_routes`] reads the routes from the server's source,
//! so a route added there without an entry here fails both.

use std::collections::BTreeSet;
use std::path::Path;

use fleet_server::auth::Role;
use serde_json::{Value, json};

/// One route: method, path pattern as registered, a concrete path, the least role, a body.
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub path: &'static str,
    pub min: Option<Role>,
    pub body: Option<Value>,
}

fn route(
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    min: Option<Role>,
    body: Option<Value>,
) -> Route {
    Route {
        method,
        pattern,
        path,
        min,
        body,
    }
}

/// Every route of the server. `min: None`: open (no token needed).
pub fn routes() -> Vec<Route> {
    use Role::*;
    vec![
        route("GET", "/", "/", None, None),
        route("GET", "/ui/{file:.*}", "/ui/app.js", None, None),
        route("GET", "/metrics", "/metrics", None, None),
        route("GET", "/api/v1/health", "/api/v1/health", None, None),
        route("GET", "/api/v1/cluster", "/api/v1/cluster", Some(Viewer), None),
        route("GET", "/api/v1/devices", "/api/v1/devices", Some(Viewer), None),
        route(
            "GET",
            "/api/v1/devices/{id}",
            "/api/v1/devices/secdev",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/devices/{id}/metrics",
            "/api/v1/devices/secdev/metrics?name=cpu.usage_pct",
            Some(Viewer),
            None,
        ),
        route(
            "POST",
            "/api/v1/devices/{id}/commands",
            "/api/v1/devices/secdev/commands",
            Some(Operator),
            Some(json!({"action": "drop_caches", "reason": "security test"})),
        ),
        route(
            "GET",
            "/api/v1/devices/{id}/commands",
            "/api/v1/devices/secdev/commands",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/commands/{id}",
            "/api/v1/commands/c1",
            Some(Viewer),
            None,
        ),
        route(
            "POST",
            "/api/v1/rollouts",
            "/api/v1/rollouts",
            Some(Operator),
            Some(
                json!({"action": "collect_diagnostics", "target": "all", "per_minute": 5, "abort_failed_pct": 10, "reason": "security test"}),
            ),
        ),
        route(
            "GET",
            "/api/v1/rollouts/{id}",
            "/api/v1/rollouts/r1",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/commands",
            "/api/v1/commands?state=awaiting_approval",
            Some(Viewer),
            None,
        ),
        route(
            "POST",
            "/api/v1/commands/{id}/approve",
            "/api/v1/commands/c1/approve",
            Some(Operator),
            None,
        ),
        route("GET", "/api/v1/rollouts", "/api/v1/rollouts", Some(Viewer), None),
        route(
            "POST",
            "/api/v1/rollouts/{id}/resume",
            "/api/v1/rollouts/r1/resume",
            Some(Operator),
            None,
        ),
        route(
            "POST",
            "/api/v1/rollouts/{id}/abort",
            "/api/v1/rollouts/r1/abort",
            Some(Operator),
            None,
        ),
        route("GET", "/api/v1/audit", "/api/v1/audit", Some(Operator), None),
        route("GET", "/api/v1/tokens", "/api/v1/tokens", Some(Admin), None),
        route(
            "POST",
            "/api/v1/tokens",
            "/api/v1/tokens",
            Some(Admin),
            Some(json!({"name": "made-by-security-test", "role": "viewer"})),
        ),
        route("GET", "/api/v1/whoami", "/api/v1/whoami", Some(Viewer), None),
        route("GET", "/api/v1/alerts", "/api/v1/alerts", Some(Viewer), None),
        route(
            "POST",
            "/api/v1/alerts/{id}/ack",
            "/api/v1/alerts/cpu_high:secdev:1/ack",
            Some(Operator),
            Some(json!({"comment": "security test"})),
        ),
        route(
            "POST",
            "/api/v1/alerts/{id}/resolve",
            "/api/v1/alerts/cpu_high:secdev:1/resolve",
            Some(Operator),
            Some(json!({"comment": "security test"})),
        ),
        route("GET", "/api/v1/silences", "/api/v1/silences", Some(Viewer), None),
        route(
            "POST",
            "/api/v1/silences",
            "/api/v1/silences",
            Some(Operator),
            Some(
                json!({"matchers": [{"label": "site", "value": "nowhere"}], "duration_s": 60, "comment": "security test"}),
            ),
        ),
        route(
            "DELETE",
            "/api/v1/silences/{id}",
            "/api/v1/silences/s1",
            Some(Operator),
            None,
        ),
        route(
            "GET",
            "/api/v1/incidents",
            "/api/v1/incidents",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/maintenance",
            "/api/v1/maintenance",
            Some(Viewer),
            None,
        ),
        route(
            "POST",
            "/api/v1/maintenance",
            "/api/v1/maintenance",
            Some(Operator),
            Some(json!({"name": "security-test", "sites": ["nowhere"], "comment": "security test"})),
        ),
        route(
            "DELETE",
            "/api/v1/maintenance/{name}",
            "/api/v1/maintenance/security-test",
            Some(Operator),
            None,
        ),
        // the estate: written in order (retailer, store), read, then deleted (store, retailer)
        route("GET", "/api/v1/estate", "/api/v1/estate", Some(Viewer), None),
        route(
            "PUT",
            "/api/v1/estate/retailers/{id}",
            "/api/v1/estate/retailers/sec-r",
            Some(Operator),
            Some(json!({"name": "Security retailer"})),
        ),
        route(
            "PUT",
            "/api/v1/estate/stores/{id}",
            "/api/v1/estate/stores/sec-s",
            Some(Operator),
            Some(json!({"id": "sec-s", "name": "Security store", "retailer": "sec-r", "time_zone": "UTC"})),
        ),
        route(
            "GET",
            "/api/v1/estate/retailers/{id}",
            "/api/v1/estate/retailers/sec-r",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/estate/stores/{id}",
            "/api/v1/estate/stores/sec-s",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/estate/unknown-sites",
            "/api/v1/estate/unknown-sites",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/estate/map",
            "/api/v1/estate/map",
            Some(Viewer),
            None,
        ),
        route(
            "GET",
            "/api/v1/estate/availability",
            "/api/v1/estate/availability?format=pdf",
            Some(Viewer),
            None,
        ),
        route(
            "DELETE",
            "/api/v1/estate/stores/{id}",
            "/api/v1/estate/stores/sec-s",
            Some(Operator),
            None,
        ),
        route(
            "DELETE",
            "/api/v1/estate/retailers/{id}",
            "/api/v1/estate/retailers/sec-r",
            Some(Operator),
            None,
        ),
        route("GET", "/api/v1/notify", "/api/v1/notify", Some(Viewer), None),
        route(
            "GET",
            "/api/v1/notify/outbox",
            "/api/v1/notify/outbox",
            Some(Viewer),
            None,
        ),
        route(
            "POST",
            "/api/v1/notify/channels/{name}/test",
            "/api/v1/notify/channels/log/test",
            Some(Operator),
            None,
        ),
        route(
            "GET",
            "/api/v1/export",
            "/api/v1/export?format=json",
            Some(Viewer),
            None,
        ),
        route("GET", "/api/v1/report", "/api/v1/report", Some(Viewer), None),
        route("GET", "/api/v1/stream", "/api/v1/stream", Some(Viewer), None),
    ]
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `(METHOD, pattern)` of every `.route(...)` in `fleet-server/src/**/*.rs` (the route table
/// in `http/` and the handlers in the feature folders); routes of the `/api/v1` scope get its
/// prefix.
pub fn registered_routes() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet-server/src");
    const ROOT_LEVEL: [&str; 3] = ["/", "/ui/{file:.*}", "/metrics"];
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let mut out = BTreeSet::new();
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let src = src.split("#[cfg(test)]").next().unwrap_or("");
        let mut rest = src;
        while let Some(i) = rest.find(".route(\"") {
            rest = &rest[i + 8..];
            let Some(end) = rest.find('"') else { break };
            let pattern = &rest[..end];
            let Some(w) = rest.find("web::") else { break };
            let method: String = rest[w + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let full = if ROOT_LEVEL.contains(&pattern) {
                pattern.to_string()
            } else {
                format!("/api/v1{pattern}")
            };
            out.insert((method.to_uppercase(), full));
            rest = &rest[end..];
        }
    }
    out
}
