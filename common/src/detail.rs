//! What schema 2 added to [`crate::Telemetry`]: a look inside the machine (issue 24).
//!
//! The process table (counts, top consumers, watched processes with their threads, open
//! file descriptors and I/O), per-interface packet rates with errors and drops, TCP
//! connections by state, per block device I/O with the eMMC/SD wear indicator, and the
//! health of the path to the broker. It travels as the last field of the telemetry so a
//! schema-1 record is the same bytes without it (see [`crate::body::TelemetryV1`]).
//!
//! A figure the agent could not read is `None` (or an empty list), never a made-up 0.

use serde::{Deserialize, Serialize};

/// Everything schema 2 added; `Default` is "nothing measured" (a schema-1 record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Detail {
    pub procs: ProcessTable,
    pub ifaces: Vec<IfaceRates>,
    /// None when `/proc/net/tcp` could not be read.
    pub tcp: Option<TcpStates>,
    pub block: Vec<BlockDevice>,
    pub broker: BrokerHealth,
}

/// The process table: the watched processes every tick; the counts and top lists only in the
/// record of the full scan that made them (every `scan_every_ms`, 10 s by default). Repeating
/// them in every record made it 2.2x larger (653 to 1,450 bytes) for figures that change
/// once per scan. The server keeps each machine's last scanned table and fills the records
/// between scans from it ([`ProcessTable::take_scan_from`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessTable {
    /// Processes (not threads); 0 when `scanned` is false.
    pub total: u32,
    /// Threads of the whole machine (kernel scheduling entities).
    pub threads: Option<u32>,
    /// Processes in state Z: exited, not yet reaped by their parent.
    pub zombies: u32,
    /// True when the counts and top lists hold a full scan's results: in an agent's record,
    /// only the record of the scan that made them; in the server's latest record, once it
    /// has kept a scan of the machine. False: counts 0, threads None, top lists empty.
    pub scanned: bool,
    /// Top consumers, highest first (at most [`TOP_N`]); empty when not `scanned`.
    pub top_cpu: Vec<ProcessInfo>,
    pub top_mem: Vec<ProcessInfo>,
    /// Watched processes that are running, by name.
    pub watched: Vec<ProcessInfo>,
}

impl ProcessTable {
    /// A record between scans (not `scanned`) takes the counts and top lists of `last`, the
    /// table the machine's previous record held (scanned, or filled this way in turn): moved,
    /// not copied, as `last` is being replaced. A scanned record, or a `last` without a scan,
    /// is left alone; the watched list, read every tick, always stays the record's own.
    pub fn take_scan_from(&mut self, last: &mut ProcessTable) {
        if self.scanned || !last.scanned {
            return;
        }
        self.total = last.total;
        self.threads = last.threads;
        self.zombies = last.zombies;
        self.scanned = true;
        self.top_cpu = std::mem::take(&mut last.top_cpu);
        self.top_mem = std::mem::take(&mut last.top_mem);
    }
}

/// How many processes each top list holds.
pub const TOP_N: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    /// User name, or the numeric uid when it has no name.
    pub user: String,
    /// `Runnable`, `Sleeping`, `Zombie`, ... (sysinfo's names).
    pub state: String,
    pub threads: Option<u32>,
    /// Open file descriptors (None: not ours to read).
    pub fds: Option<u32>,
    pub cpu_pct: f32,
    pub rss_bytes: u64,
    pub read_bytes_per_s: Option<f64>,
    pub write_bytes_per_s: Option<f64>,
    /// Start, seconds since the Unix epoch.
    pub start_time_s: u64,
}

/// One network interface's rates over the last interval and its error and drop counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IfaceRates {
    pub iface: String,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
    pub rx_packets_per_s: f64,
    pub tx_packets_per_s: f64,
    /// Counters since boot.
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_drops: u64,
    pub tx_drops: u64,
}

/// TCP connections (IPv4 and IPv6) by state, from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TcpStates {
    pub established: u32,
    pub syn_sent: u32,
    pub syn_recv: u32,
    pub fin_wait1: u32,
    pub fin_wait2: u32,
    pub time_wait: u32,
    pub close: u32,
    pub close_wait: u32,
    pub last_ack: u32,
    pub listen: u32,
    pub closing: u32,
}

impl TcpStates {
    /// `(state name, count)` in a fixed order: the flat metric names are `tcp.<state>`.
    pub fn named(&self) -> [(&'static str, u32); 11] {
        [
            ("established", self.established),
            ("syn_sent", self.syn_sent),
            ("syn_recv", self.syn_recv),
            ("fin_wait1", self.fin_wait1),
            ("fin_wait2", self.fin_wait2),
            ("time_wait", self.time_wait),
            ("close", self.close),
            ("close_wait", self.close_wait),
            ("last_ack", self.last_ack),
            ("listen", self.listen),
            ("closing", self.closing),
        ]
    }
}

/// One block device (`/proc/diskstats`), rates over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BlockDevice {
    pub name: String,
    pub read_bytes_per_s: f64,
    pub write_bytes_per_s: f64,
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    /// Share of the interval the device was busy (`io_ticks`), percent.
    pub util_pct: f32,
    /// eMMC/SD wear: the worse of `life_time`'s two estimates (type A and B cells) in
    /// percent of the rated life used, from its 10 % steps (0x01 = 0-10 % -> 10, 0x0B =
    /// exceeded -> 110). None where the device has no such node.
    pub wear_pct: Option<f32>,
    /// `pre_eol_info`: 1 normal, 2 warning (80 % of reserved blocks used), 3 urgent.
    pub pre_eol: Option<u8>,
}

/// The path to the broker, measured by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct BrokerHealth {
    /// PINGREQ -> PINGRESP of the MQTT keep-alive, milliseconds (the latest one).
    pub rtt_ms: Option<f32>,
    /// How long resolving the broker's host name took (None for an IP address or before
    /// the first try).
    pub dns_ms: Option<f32>,
    /// Whether the last resolution gave at least one address.
    pub dns_ok: Option<bool>,
}

/// Characters outside `[A-Za-z0-9_-]` become `_`: a name that is safe inside a metric name.
pub fn metric_safe(name: &str, out: &mut String) {
    // nearly every name is safe already: one copy instead of a push per character (this ran
    // for every name of every record, 6 % of the server's ingest instructions)
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        out.push_str(name);
        return;
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

impl Detail {
    /// The flat metrics of the detail, in the vocabulary of [`crate::Telemetry::flat_metrics`]:
    /// - `proc.count`, `proc.threads`, `proc.zombies` (after the first scan);
    /// - `proc.<name>.rss_bytes`, `proc.<name>.fds`, `proc.<name>.threads` for each watched
    ///   process (the leak rules' inputs);
    /// - `proc.top_cpu.<name>` (CPU %) and `proc.top_mem.<name>` (RSS bytes) for each entry
    ///   of the top lists: the compact form history keeps of them;
    /// - `net.<iface>.{rx,tx}_{bytes,packets}_per_s`, `net.<iface>.errors` and `.drops` (both
    ///   directions, counters since boot);
    /// - `tcp.established` always, `tcp.<state>` for the other states while they occur;
    /// - `disk.<dev>.{read,write}_bytes_per_s`, `disk.<dev>.{reads,writes}_per_s`,
    ///   `disk.<dev>.util_pct`, `disk.<dev>.wear_pct`, `disk.<dev>.pre_eol`, and
    ///   `disk.wear_max_pct` (the worst device: the wear rule's input);
    /// - `broker.rtt_ms`, `broker.dns_ms`, `broker.dns_ok` (1 or 0).
    pub fn visit_metrics(&self, name: &mut String, f: &mut impl FnMut(&str, f64)) {
        let p = &self.procs;
        if p.scanned {
            f("proc.count", p.total as f64);
            f("proc.zombies", p.zombies as f64);
            if let Some(t) = p.threads {
                f("proc.threads", t as f64);
            }
        }
        let mut named = |prefix: &str, who: &str, suffix: &str, v: f64, f: &mut dyn FnMut(&str, f64)| {
            name.clear();
            name.push_str(prefix);
            metric_safe(who, name);
            name.push_str(suffix);
            f(name.as_str(), v);
        };
        for w in &p.watched {
            named("proc.", &w.name, ".rss_bytes", w.rss_bytes as f64, f);
            if let Some(n) = w.fds {
                named("proc.", &w.name, ".fds", n as f64, f);
            }
            if let Some(n) = w.threads {
                named("proc.", &w.name, ".threads", n as f64, f);
            }
        }
        for t in &p.top_cpu {
            named("proc.top_cpu.", &t.name, "", t.cpu_pct as f64, f);
        }
        for t in &p.top_mem {
            named("proc.top_mem.", &t.name, "", t.rss_bytes as f64, f);
        }
        for i in &self.ifaces {
            named("net.", &i.iface, ".rx_bytes_per_s", i.rx_bytes_per_s, f);
            named("net.", &i.iface, ".tx_bytes_per_s", i.tx_bytes_per_s, f);
            named("net.", &i.iface, ".rx_packets_per_s", i.rx_packets_per_s, f);
            named("net.", &i.iface, ".tx_packets_per_s", i.tx_packets_per_s, f);
            // counters since boot, both directions together: one number each says whether
            // they move (the record has them per direction)
            named(
                "net.",
                &i.iface,
                ".errors",
                i.rx_errors.saturating_add(i.tx_errors) as f64,
                f,
            );
            named(
                "net.",
                &i.iface,
                ".drops",
                i.rx_drops.saturating_add(i.tx_drops) as f64,
                f,
            );
        }
        if let Some(t) = &self.tcp {
            // established always (a chart needs its zeros); the other states while they occur
            for (state, n) in t.named() {
                if n > 0 || state == "established" {
                    named("tcp.", state, "", n as f64, f);
                }
            }
        }
        let mut wear_max: Option<f64> = None;
        for d in &self.block {
            named("disk.", &d.name, ".read_bytes_per_s", d.read_bytes_per_s, f);
            named("disk.", &d.name, ".write_bytes_per_s", d.write_bytes_per_s, f);
            named("disk.", &d.name, ".reads_per_s", d.reads_per_s, f);
            named("disk.", &d.name, ".writes_per_s", d.writes_per_s, f);
            named("disk.", &d.name, ".util_pct", d.util_pct as f64, f);
            if let Some(w) = d.wear_pct {
                named("disk.", &d.name, ".wear_pct", w as f64, f);
                wear_max = Some(wear_max.map_or(w as f64, |m| m.max(w as f64)));
            }
            if let Some(e) = d.pre_eol {
                named("disk.", &d.name, ".pre_eol", e as f64, f);
            }
        }
        if let Some(w) = wear_max {
            f("disk.wear_max_pct", w);
        }
        let b = &self.broker;
        if let Some(v) = b.rtt_ms {
            f("broker.rtt_ms", v as f64);
        }
        if let Some(v) = b.dns_ms {
            f("broker.dns_ms", v as f64);
        }
        if let Some(ok) = b.dns_ok {
            f("broker.dns_ok", if ok { 1.0 } else { 0.0 });
        }
    }
}

/// Decodes the two hex estimates of an eMMC `life_time` node (`0x01 0x02`) into the worse
/// one, in percent of the rated life used. 0x00 means "not defined" and is skipped.
pub fn parse_life_time(text: &str) -> Option<f32> {
    text.split_whitespace()
        .filter_map(|w| u8::from_str_radix(w.trim_start_matches("0x").trim_start_matches("0X"), 16).ok())
        .filter(|v| *v > 0)
        .map(|v| v as f32 * 10.0)
        .fold(None, |m: Option<f32>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// Decodes `pre_eol_info` (`0x01`): 1 normal, 2 warning, 3 urgent; 0 or garbage is None.
pub fn parse_pre_eol(text: &str) -> Option<u8> {
    let w = text.split_whitespace().next()?;
    u8::from_str_radix(w.trim_start_matches("0x").trim_start_matches("0X"), 16)
        .ok()
        .filter(|v| (1..=3).contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_safe_keeps_safe_names_and_replaces_each_other_character() {
        let safe = |n: &str| {
            let mut out = String::from("proc.");
            metric_safe(n, &mut out);
            out
        };
        assert_eq!(safe("vision-svc_2"), "proc.vision-svc_2");
        assert_eq!(safe("kworker/u8:2"), "proc.kworker_u8_2");
        assert_eq!(safe("caméra"), "proc.cam_ra", "one _ per character, not per byte");
    }

    #[test]
    fn life_time_takes_the_worse_estimate_and_skips_undefined() {
        assert_eq!(parse_life_time("0x01 0x02\n"), Some(20.0));
        assert_eq!(parse_life_time("0x0b 0x00"), Some(110.0));
        assert_eq!(parse_life_time("0x00 0x00"), None);
        assert_eq!(parse_life_time("garbage"), None);
        assert_eq!(parse_pre_eol("0x02\n"), Some(2));
        assert_eq!(parse_pre_eol("0x00"), None);
    }

    #[test]
    fn detail_metrics_name_watched_processes_devices_and_the_worst_wear() {
        let d = Detail {
            procs: ProcessTable {
                total: 120,
                threads: Some(400),
                zombies: 2,
                scanned: true,
                watched: vec![ProcessInfo {
                    name: "vision svc".into(),
                    fds: Some(64),
                    rss_bytes: 1000,
                    ..Default::default()
                }],
                ..Default::default()
            },
            block: vec![
                BlockDevice {
                    name: "mmcblk0".into(),
                    wear_pct: Some(90.0),
                    ..Default::default()
                },
                BlockDevice {
                    name: "sda".into(),
                    ..Default::default()
                },
            ],
            tcp: Some(TcpStates {
                established: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut m = Vec::new();
        d.visit_metrics(&mut String::new(), &mut |n, v| m.push((n.to_string(), v)));
        let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("proc.zombies"), Some(2.0));
        assert_eq!(get("proc.threads"), Some(400.0));
        assert_eq!(get("proc.vision_svc.fds"), Some(64.0));
        assert_eq!(get("proc.vision_svc.rss_bytes"), Some(1000.0));
        assert_eq!(get("disk.wear_max_pct"), Some(90.0));
        assert_eq!(get("disk.sda.wear_pct"), None);
        assert_eq!(get("tcp.established"), Some(3.0));
        assert_eq!(
            get("tcp.listen"),
            None,
            "a state that does not occur is not a metric"
        );
        assert_eq!(get("broker.rtt_ms"), None);
    }

    #[test]
    fn before_the_first_scan_no_process_counts_are_claimed() {
        let mut m = Vec::new();
        Detail::default().visit_metrics(&mut String::new(), &mut |n, v| m.push((n.to_string(), v)));
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn a_record_between_scans_takes_the_last_scan_and_keeps_its_own_watched_list() {
        let info = |name: &str, rss: u64| ProcessInfo {
            name: name.into(),
            rss_bytes: rss,
            ..Default::default()
        };
        let scan = ProcessTable {
            total: 120,
            threads: Some(400),
            zombies: 2,
            scanned: true,
            top_cpu: vec![info("ffmpeg", 1)],
            top_mem: vec![info("vision", 9)],
            watched: vec![info("vision", 9)],
        };
        let mut between = ProcessTable {
            watched: vec![info("vision", 12)],
            ..Default::default()
        };
        between.take_scan_from(&mut scan.clone());
        assert_eq!(
            between,
            ProcessTable {
                watched: vec![info("vision", 12)],
                ..scan.clone()
            }
        );
        // and hands it on to the next one
        let mut next = ProcessTable::default();
        next.take_scan_from(&mut between);
        assert_eq!((next.total, next.threads, next.zombies), (120, Some(400), 2));
        assert_eq!(next.top_mem, scan.top_mem);
        // a fresh scan wins over the kept one; nothing kept fills nothing
        let mut fresh = ProcessTable {
            total: 7,
            scanned: true,
            ..Default::default()
        };
        fresh.take_scan_from(&mut scan.clone());
        assert_eq!((fresh.total, fresh.zombies), (7, 0));
        let mut none = ProcessTable::default();
        none.take_scan_from(&mut ProcessTable::default());
        assert_eq!(none, ProcessTable::default());
    }
}
