//! Encoding and decoding of wire payloads.
//!
//! bincode 2 (serde, standard config: little endian, varint) on the wire; JSON, from the same
//! types, for third parties. Decoding untrusted bytes never panics: a payload over
//! [`MAX_PAYLOAD`], a length prefix that would allocate past it, an unknown schema version,
//! a malformed body or trailing bytes are all errors. bincode is reached only through this
//! module, so it can be swapped (it carries a RustSec "unmaintained" notice).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::body::{Telemetry, TelemetryV1};
use crate::envelope::{Envelope, MIN_SCHEMA_VERSION, SCHEMA_VERSION};

/// Largest payload accepted on any topic (and the decoder's allocation limit).
pub const MAX_PAYLOAD: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("payload is {len} bytes, the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown schema version {found} (this build speaks {expected})")]
    UnknownSchema { found: u16, expected: u16 },
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
    #[error("could not encode: {0}")]
    Encode(String),
    #[error("invalid JSON: {0}")]
    Json(String),
}

impl CodecError {
    /// Short stable label for counters (`too_large`, `unknown_schema`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            CodecError::TooLarge { .. } => "too_large",
            CodecError::UnknownSchema { .. } => "unknown_schema",
            CodecError::Malformed(_) => "malformed",
            CodecError::TrailingBytes(_) => "trailing_bytes",
            CodecError::Encode(_) => "encode",
            CodecError::Json(_) => "json",
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Encodes any wire value (an envelope, or a bare value such as a signed command).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes =
        bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(bytes)
}

/// Decodes a bare value: size limit, no trailing bytes.
pub fn decode_bare<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes a value at the head of `bytes` and returns it with the number of bytes it used
/// (a signed command's payload carries its options after the command).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decodes an envelope: the schema version is checked before the body is looked at.
///
/// Every body but the telemetry has one layout in all known schemas; a telemetry is decoded
/// with [`decode_telemetry`], which knows the older layout.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, CodecError> {
    known_schema(bytes)?;
    decode_bare(bytes)
}

/// Decodes a telemetry envelope of any known schema: a schema-1 body (an old agent, or a
/// record buffered before the agent was upgraded) is read as [`TelemetryV1`] and converted,
/// so its `detail` is empty. The envelope keeps the schema it arrived with.
pub fn decode_telemetry(bytes: &[u8]) -> Result<Envelope<Telemetry>, CodecError> {
    match known_schema(bytes)? {
        1 => {
            let e: Envelope<TelemetryV1> = decode_bare(bytes)?;
            Ok(Envelope {
                schema: e.schema,
                device: e.device,
                seq: e.seq,
                ts_ms: e.ts_ms,
                body: e.body.into(),
            })
        }
        _ => decode_bare(bytes),
    }
}

fn known_schema(bytes: &[u8]) -> Result<u16, CodecError> {
    let found = schema_of(bytes)?;
    if !(MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&found) {
        return Err(CodecError::UnknownSchema {
            found,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Reads only the schema version at the head of an encoded envelope.
pub fn schema_of(bytes: &[u8]) -> Result<u16, CodecError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    let (schema, _): (u16, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(format!("no schema version: {e}")))?;
    Ok(schema)
}

pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(|e| CodecError::Json(e.to_string()))
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| CodecError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::body::*;
    use crate::command::{Action, CommandResult, CommandStatus, SignedCommand};
    use crate::ids::DeviceId;

    fn dev() -> DeviceId {
        DeviceId::new("rvm0042").unwrap()
    }

    pub(crate) fn build_telemetry() -> Telemetry {
        Telemetry {
            interval_ms: 1000,
            uptime_s: 3600,
            cpu: CpuStats {
                usage_pct: 12.5,
                per_core_pct: vec![10.0, 15.0],
                freq_mhz: vec![1510, 729],
                load1: 0.5,
                load5: 0.4,
                load15: 0.3,
            },
            memory: MemoryStats {
                total_bytes: 7_990_000_000,
                used_bytes: 3_000_000_000,
                available_bytes: 4_990_000_000,
                swap_total_bytes: 1 << 30,
                swap_used_bytes: 0,
            },
            disks: vec![DiskStats {
                mount: "/".into(),
                fs: "ext4".into(),
                total_bytes: 64 << 30,
                used_bytes: 20 << 30,
                inodes_total: Some(1000),
                inodes_used: Some(10),
                read_bytes_per_s: Some(1.5),
                write_bytes_per_s: None,
            }],
            net: vec![NetStats {
                iface: "eth0".into(),
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
                rx_errors: 0,
                tx_errors: 0,
                rx_bytes_per_s: 100.0,
                tx_bytes_per_s: 50.0,
            }],
            temperatures: vec![Reading::new("cpu-thermal", 47.5)],
            processes: vec![ProcessStats {
                name: "vision".into(),
                pid: 42,
                running: true,
                watched: true,
                cpu_pct: 80.0,
                rss_bytes: 1 << 28,
                state: "R".into(),
                restarts_seen: 1,
            }],
            gpu: Some(GpuStats {
                backend: GpuBackendKind::JetsonSysfs,
                load_pct: Some(61.3),
                freq_mhz: Some(612.0),
                min_freq_mhz: Some(306.0),
                max_freq_mhz: Some(918.0),
                emc_pct: None,
                emc_freq_mhz: None,
                temperatures: vec![Reading::new("gpu", 51.2)],
                rails: vec![PowerRail {
                    name: "VDD_IN".into(),
                    voltage_mv: Some(5160.0),
                    current_ma: Some(1000.0),
                    power_mw: 5160.0,
                    avg_power_mw: None,
                }],
                fan_pct: Some(23.5),
                memory_used_bytes: None,
                nvpmodel: Some("15W".into()),
                board: Some("NVIDIA Jetson Orin Nano Developer Kit".into()),
                l4t: Some("36.4.3".into()),
                jetpack: Some("6.2".into()),
                unsupported: vec!["emc".into()],
            }),
            app: vec![Reading::new("items_recognised", 12.0)],
            detail: crate::Detail {
                procs: crate::ProcessTable {
                    total: 200,
                    threads: Some(900),
                    zombies: 1,
                    scanned: true,
                    top_cpu: vec![crate::ProcessInfo {
                        pid: 42,
                        name: "vision".into(),
                        user: "rvm".into(),
                        state: "Run".into(),
                        threads: Some(12),
                        fds: Some(40),
                        cpu_pct: 80.0,
                        rss_bytes: 1 << 28,
                        read_bytes_per_s: Some(10.0),
                        write_bytes_per_s: None,
                        start_time_s: 1_700_000_000,
                    }],
                    ..Default::default()
                },
                block: vec![crate::BlockDevice {
                    name: "mmcblk0".into(),
                    wear_pct: Some(30.0),
                    pre_eol: Some(1),
                    ..Default::default()
                }],
                ..Default::default()
            },
        }
    }

    fn round_trip<T>(body: T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + Debug + Clone,
    {
        let env = Envelope::new(dev(), 7, 1_700_000_000_000, body);
        let bytes = encode(&env).unwrap();
        let back: Envelope<T> = decode(&bytes).unwrap();
        assert_eq!(back, env, "bincode");
        let json = to_json(&env).unwrap();
        let back: Envelope<T> = from_json(&json).unwrap();
        assert_eq!(back, env, "json");
    }

    #[test]
    fn telemetry_round_trips_in_both_codecs() {
        round_trip(build_telemetry());
        round_trip(Telemetry::default());
    }

    #[test]
    fn health_report_round_trips_in_both_codecs() {
        round_trip(HealthReport {
            status: HealthStatus::Warn,
            checks: vec![CheckResult {
                name: "disk".into(),
                status: HealthStatus::Warn,
                message: "/ is 91 % full".into(),
            }],
            actors: vec![ActorStatus {
                name: "collector".into(),
                alive: true,
                restarts: 2,
                last_exit: Some("panic: boom".into()),
            }],
        });
    }

    #[test]
    fn every_event_kind_round_trips_in_both_codecs() {
        let kinds = vec![
            EventKind::AgentStarted {
                previous_exit: Some("restart limit".into()),
            },
            EventKind::ActorRestarted {
                actor: "collector".into(),
                reason: "panic".into(),
            },
            EventKind::Recovery {
                action: "restart_unit".into(),
                target: "vision.service".into(),
                outcome: ActionOutcome::Refused,
                detail: "interlock".into(),
            },
            EventKind::RecordsDropped {
                count: 5,
                first_seq: 1,
                last_seq: 9,
                reason: "cap".into(),
            },
            EventKind::StoreReset {
                moved_to: "/x.corrupt".into(),
                error: "bad".into(),
            },
            EventKind::ClockJump { delta_ms: -5000 },
            EventKind::Note,
            EventKind::GpuSourceChanged {
                from: "gpu:nvml".into(),
                to: "gpu:jetson_sysfs".into(),
            },
        ];
        for kind in kinds {
            round_trip(Event {
                severity: Severity::Warning,
                kind,
                message: "m".into(),
            });
        }
    }

    #[test]
    fn presence_round_trips_in_both_codecs() {
        round_trip(DeviceState::Online(Birth {
            boot_id: "b".into(),
            agent_version: "0.1.0".into(),
            hostname: "h".into(),
            site: Some("s1".into()),
            tags: vec!["pilot".into()],
            board: None,
            jetpack: Some("6.2".into()),
            vision_model_version: Some("v3".into()),
            capabilities: vec!["gpu:jetson_sysfs".into()],
            started_ms: 5,
            simulated: true,
        }));
        round_trip(DeviceState::Offline(LastWill {
            boot_id: "b".into(),
            reason: "connection lost".into(),
        }));
    }

    #[test]
    fn command_result_round_trips_in_both_codecs() {
        for status in [
            CommandStatus::Accepted,
            CommandStatus::Running,
            CommandStatus::Succeeded,
            CommandStatus::Failed,
            CommandStatus::Rejected,
        ] {
            round_trip(CommandResult {
                command_id: "c1".into(),
                status,
                output: "ok".into(),
                reason: None,
            });
        }
    }

    #[test]
    fn signed_command_round_trips_bare_in_both_codecs() {
        let sc = SignedCommand {
            payload: vec![1, 2, 3],
            signature: vec![9; 64],
        };
        assert_eq!(decode_bare::<SignedCommand>(&encode(&sc).unwrap()).unwrap(), sc);
        assert_eq!(from_json::<SignedCommand>(&to_json(&sc).unwrap()).unwrap(), sc);
        for a in [
            Action::RestartUnit { unit: "u".into() },
            Action::RestartProcess { name: "p".into() },
            Action::DropCaches,
            Action::CleanTemp,
            Action::RestartNetwork {
                interface: "eth0".into(),
            },
            Action::Reboot,
            Action::CollectDiagnostics,
            Action::ResetCamera {
                camera: "front".into(),
            },
        ] {
            assert_eq!(decode_bare::<Action>(&encode(&a).unwrap()).unwrap(), a);
            assert_eq!(from_json::<Action>(&to_json(&a).unwrap()).unwrap(), a);
        }
    }

    #[test]
    fn a_schema_1_telemetry_still_decodes_and_a_schema_2_one_keeps_its_detail() {
        let mut v2 = build_telemetry();
        let old = TelemetryV1 {
            interval_ms: v2.interval_ms,
            uptime_s: v2.uptime_s,
            cpu: v2.cpu.clone(),
            memory: v2.memory.clone(),
            disks: v2.disks.clone(),
            net: v2.net.clone(),
            temperatures: v2.temperatures.clone(),
            processes: v2.processes.clone(),
            gpu: v2.gpu.clone(),
            app: v2.app.clone(),
        };
        let mut env1 = Envelope::new(dev(), 7, 1000, old);
        env1.schema = 1;
        let bytes1 = encode(&env1).unwrap();
        let back = decode_telemetry(&bytes1).unwrap();
        assert_eq!(back.schema, 1);
        assert_eq!(back.seq, 7);
        assert_eq!(back.body.cpu, v2.cpu);
        assert_eq!(back.body.detail, crate::Detail::default());
        // the plain decoder cannot read an old telemetry as the new layout: a clear error
        assert!(matches!(
            decode::<Telemetry>(&bytes1),
            Err(CodecError::Malformed(_))
        ));

        v2.detail.procs.zombies = 3;
        v2.detail.procs.scanned = true;
        let bytes2 = encode(&Envelope::new(dev(), 8, 1000, v2.clone())).unwrap();
        assert_eq!(decode_telemetry(&bytes2).unwrap().body, v2);
        assert_eq!(decode::<Telemetry>(&bytes2).unwrap().body, v2);
    }

    #[test]
    fn unknown_schema_is_refused() {
        let mut env = Envelope::new(dev(), 1, 0, Telemetry::default());
        env.schema = 99;
        let bytes = encode(&env).unwrap();
        let refused = Err(CodecError::UnknownSchema {
            found: 99,
            expected: SCHEMA_VERSION,
        });
        assert_eq!(decode::<Telemetry>(&bytes), refused);
        assert_eq!(decode_telemetry(&bytes), refused);
        env.schema = 0;
        assert!(matches!(
            decode_telemetry(&encode(&env).unwrap()),
            Err(CodecError::UnknownSchema { found: 0, .. })
        ));
    }

    #[test]
    fn oversized_and_truncated_and_padded_payloads_are_refused() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert!(matches!(
            decode::<Telemetry>(&big),
            Err(CodecError::TooLarge { .. })
        ));
        let bytes = encode(&Envelope::new(dev(), 1, 0, build_telemetry())).unwrap();
        assert!(matches!(
            decode::<Telemetry>(&bytes[..bytes.len() - 3]),
            Err(CodecError::Malformed(_))
        ));
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(decode::<Telemetry>(&padded), Err(CodecError::TrailingBytes(1)));
    }

    #[test]
    fn an_invalid_device_id_inside_an_envelope_is_refused() {
        #[derive(Serialize)]
        struct Raw {
            schema: u16,
            device: String,
            seq: u64,
            ts_ms: i64,
            body: Event,
        }
        let raw = Raw {
            schema: SCHEMA_VERSION,
            device: "a/b".into(),
            seq: 1,
            ts_ms: 0,
            body: Event {
                severity: Severity::Info,
                kind: EventKind::Note,
                message: String::new(),
            },
        };
        let bytes = encode(&raw).unwrap();
        assert!(matches!(decode::<Event>(&bytes), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // schema 1, device id with a length prefix of u64::MAX (varint 0xFD + 8 bytes).
        let mut bytes = vec![1u8, 0xFD];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Telemetry>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode::<Telemetry>(&bytes);
            let _ = decode::<HealthReport>(&bytes);
            let _ = decode::<Event>(&bytes);
            let _ = decode::<DeviceState>(&bytes);
            let _ = decode::<CommandResult>(&bytes);
            let _ = decode_bare::<SignedCommand>(&bytes);
            let _ = from_json::<Envelope<Telemetry>>(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_valid_payloads(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode(&Envelope::new(dev(), 3, 5, build_telemetry())).unwrap();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b;
            }
            let cut = cut.index(bytes.len() + 1);
            let _ = decode::<Telemetry>(&bytes[..cut]);
        }
    }
}
