//! Rule files that several suites use as they are, written once. A suite whose rules differ
//! (another threshold, a correlation section) keeps its own beside its scenario.

/// The text of [`INFERENCE_SLOW`], a literal so that `concat!` can join it.
macro_rules! inference_slow {
    () => {
        r#"
[[rules]]
name = "inference_slow"
metric = "app.inference_ms"
op = ">"
threshold = 150
clear = 120
for_s = 1
severity = "warning"
summary = "inference slower than 150 ms per frame"
"#
    };
}

/// Inference slower than 150 ms per frame for a second, a warning:
/// `fleetctl_api`, `server_supervision`.
pub const INFERENCE_SLOW: &str = inference_slow!();

/// A machine offline, and [`INFERENCE_SLOW`]: `alert_filters`, `browser`.
pub const OFFLINE_AND_INFERENCE_SLOW: &str = concat!(
    r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"
summary = "device is offline"
"#,
    inference_slow!()
);
