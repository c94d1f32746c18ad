//! The tegrastats line parser (pure): one line in, a [`TegraSample`] or a [`ParseError`] out.
//! See the module doc of [`crate::collect::gpu::tegrastats`] for the formats it reads and its
//! invariants.

use common::{GpuBackendKind, GpuStats, PowerRail, Reading};

use crate::collect::gpu::{is_placeholder_sensor, mark_unsupported, metric, normalize_sensor_name};

/// Longest value quoted in a [`ParseError`].
const ERROR_VALUE_MAX_CHARS: usize = 64;

/// One tegrastats line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TegraSample {
    /// `MM-DD-YYYY HH:MM:SS` when tegrastats printed one.
    pub timestamp: Option<String>,
    pub ram_used_mb: u64,
    pub ram_total_mb: u64,
    /// Largest free block: count and block size (`lfb 15152x4MB`).
    pub ram_lfb_blocks: Option<u64>,
    pub ram_lfb_block_kb: Option<u64>,
    pub swap_used_mb: Option<u64>,
    pub swap_total_mb: Option<u64>,
    pub swap_cached_mb: Option<u64>,
    pub iram_used_kb: Option<u64>,
    pub iram_total_kb: Option<u64>,
    pub iram_lfb_kb: Option<u64>,
    pub cpus: Vec<CpuCore>,
    pub emc_pct: Option<f32>,
    pub emc_freq_mhz: Option<f32>,
    /// GPU load: the highest of `GR3D_FREQ` and `GR3D2_FREQ`.
    pub gr3d_pct: Option<f32>,
    /// GPU clock per GPC (`GR3D_FREQ N%@[F,F]`, or one each from `GR3D_FREQ` and `GR3D2_FREQ`).
    pub gr3d_freqs_mhz: Vec<f32>,
    pub mts_fg_pct: Option<f32>,
    pub mts_bg_pct: Option<f32>,
    pub engines: Vec<Engine>,
    /// Temperatures by normalised name (`cpu`, `gpu`, `soc0`, `tj`, `tboard`), degrees C.
    pub temperatures: Vec<TegraTemp>,
    /// Sensors printed as offline (`CV0@-256C`, `cv0@NC`), normalised names.
    pub offline_sensors: Vec<String>,
    /// Power rails, `NC` rails left out.
    pub rails: Vec<TegraRail>,
    /// Tokens the parser did not recognise.
    pub unknown: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuCore {
    pub online: bool,
    /// `None` for an `off` core.
    pub load_pct: Option<f32>,
    /// `None` for an `off` core or when tegrastats printed no `@freq`.
    pub freq_mhz: Option<f32>,
}

/// An engine field such as `APE 174`, `VIC_FREQ 0%@729` or `NVENC off`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Engine {
    pub name: String,
    pub on: bool,
    pub load_pct: Option<f32>,
    pub freq_mhz: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TegraTemp {
    pub name: String,
    pub cur_c: f64,
    /// JetPack 7 prints `cur/max`.
    pub max_c: Option<f64>,
}

/// tegrastats gives power only: voltage and current are not known.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TegraRail {
    pub name: String,
    pub cur_mw: f64,
    pub avg_mw: Option<f64>,
    /// JetPack 7 prints `cur/avg/max`.
    pub max_mw: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty tegrastats line")]
    Empty,
    #[error("not a tegrastats line: no RAM field")]
    NoRam,
    #[error("tegrastats field {field} has no value")]
    MissingValue { field: String },
    #[error("tegrastats field {field} has a bad value {value:?}")]
    BadValue { field: String, value: String },
}

pub(super) fn bad(field: &str, value: &str) -> ParseError {
    ParseError::BadValue {
        field: field.chars().take(ERROR_VALUE_MAX_CHARS).collect(),
        value: value.chars().take(ERROR_VALUE_MAX_CHARS).collect(),
    }
}

fn missing(field: &str) -> ParseError {
    ParseError::MissingValue {
        field: field.chars().take(ERROR_VALUE_MAX_CHARS).collect(),
    }
}

/// Parses one tegrastats line.
pub fn parse_line(line: &str) -> Result<TegraSample, ParseError> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut s = TegraSample::default();
    let mut saw_ram = false;
    let mut i = 0;
    if let [date, time, ..] = tokens.as_slice()
        && is_date(date)
        && is_time(time)
    {
        s.timestamp = Some(format!("{date} {time}"));
        i = 2;
    }
    while i < tokens.len() {
        let tok = tokens[i];
        let next = tokens.get(i + 1).copied();
        i += 1;
        match tok {
            "RAM" => {
                let (value, group) = value_and_group(&tokens, &mut i).ok_or_else(|| missing("RAM"))?;
                let (used, total) = parse_used_total_kb(&value).ok_or_else(|| bad("RAM", &value))?;
                s.ram_used_mb = used / 1024;
                s.ram_total_mb = total / 1024;
                if let Some(group) = group {
                    let (blocks, block_kb) = parse_lfb(&group).ok_or_else(|| bad("RAM lfb", &group))?;
                    s.ram_lfb_blocks = Some(blocks);
                    s.ram_lfb_block_kb = Some(block_kb);
                }
                saw_ram = true;
            }
            "SWAP" => {
                let (value, group) = value_and_group(&tokens, &mut i).ok_or_else(|| missing("SWAP"))?;
                let (used, total) = parse_used_total_kb(&value).ok_or_else(|| bad("SWAP", &value))?;
                s.swap_used_mb = Some(used / 1024);
                s.swap_total_mb = Some(total / 1024);
                if let Some(group) = group {
                    let cached = group
                        .strip_prefix("cached")
                        .and_then(|v| parse_size_kb(v.trim()))
                        .ok_or_else(|| bad("SWAP cached", &group))?;
                    s.swap_cached_mb = Some(cached / 1024);
                }
            }
            "IRAM" => {
                let (value, group) = value_and_group(&tokens, &mut i).ok_or_else(|| missing("IRAM"))?;
                let (used, total) = parse_used_total_kb(&value).ok_or_else(|| bad("IRAM", &value))?;
                s.iram_used_kb = Some(used);
                s.iram_total_kb = Some(total);
                if let Some(group) = group {
                    let lfb = group
                        .strip_prefix("lfb")
                        .and_then(|v| parse_size_kb(v.trim()))
                        .ok_or_else(|| bad("IRAM lfb", &group))?;
                    s.iram_lfb_kb = Some(lfb);
                }
            }
            // `CPU` is also a rail name on AGX Xavier (`CPU 311/311`): only a list is the CPU field.
            "CPU" if next.is_some_and(|n| n.starts_with('[')) => {
                let list = bracket_list(&tokens, &mut i);
                s.cpus = parse_cpus(&list).ok_or_else(|| bad("CPU", &list))?;
            }
            "EMC_FREQ" => {
                let value = *tokens.get(i).ok_or_else(|| missing("EMC_FREQ"))?;
                i += 1;
                let lf = parse_load_freq(value).ok_or_else(|| bad("EMC_FREQ", value))?;
                s.emc_pct = lf.pct;
                s.emc_freq_mhz = max_of(&lf.freqs);
            }
            "GR3D_FREQ" | "GR3D2_FREQ" => {
                let value = *tokens.get(i).ok_or_else(|| missing(tok))?;
                i += 1;
                let lf = parse_load_freq(value).ok_or_else(|| bad(tok, value))?;
                if let Some(pct) = lf.pct {
                    s.gr3d_pct = Some(s.gr3d_pct.map_or(pct, |p| p.max(pct)));
                }
                s.gr3d_freqs_mhz.extend(lf.freqs);
            }
            "MTS" => {
                // `MTS fg 0% bg 0%`
                while let (Some(which), Some(value)) = (tokens.get(i), tokens.get(i + 1)) {
                    let pct = match *which {
                        "fg" | "bg" => parse_pct(value).ok_or_else(|| bad("MTS", value))?,
                        _ => break,
                    };
                    if *which == "fg" {
                        s.mts_fg_pct = Some(pct);
                    } else {
                        s.mts_bg_pct = Some(pct);
                    }
                    i += 2;
                }
            }
            _ if is_temperature_token(tok) => parse_temperature(tok, &mut s)?,
            _ if next.is_some_and(is_rail_value) => {
                let value = next.unwrap_or_default();
                i += 1;
                let rail = parse_rail(tok, value).ok_or_else(|| bad(tok, value))?;
                if tok != "NC" {
                    s.rails.push(rail);
                }
            }
            _ if is_engine_name(tok) && next.is_some_and(is_engine_value) => {
                let value = next.unwrap_or_default();
                i += 1;
                let lf = parse_load_freq(value).ok_or_else(|| bad(tok, value))?;
                s.engines.push(Engine {
                    name: tok.to_string(),
                    on: value != "off",
                    load_pct: lf.pct,
                    freq_mhz: max_of(&lf.freqs),
                });
            }
            _ => s.unknown.push(tok.to_string()),
        }
    }
    if !saw_ram {
        return Err(ParseError::NoRam);
    }
    Ok(s)
}

impl TegraSample {
    /// Highest GPC clock: on boards with several GPCs an idle one reports 0 while the others run.
    pub fn gpu_freq_mhz(&self) -> Option<f32> {
        max_of(&self.gr3d_freqs_mhz)
    }

    /// The GPU part of this line. Board, release, power mode and GPU memory are not in
    /// tegrastats output: they are `None` here and listed as unsupported (the backend fills them
    /// from [`Platform`](crate::collect::gpu::platform::Platform) files).
    pub fn to_gpu_stats(&self) -> GpuStats {
        let mut stats = GpuStats {
            backend: GpuBackendKind::Tegrastats,
            load_pct: self.gr3d_pct,
            freq_mhz: self.gpu_freq_mhz(),
            emc_pct: self.emc_pct,
            emc_freq_mhz: self.emc_freq_mhz,
            ..GpuStats::default()
        };
        for t in &self.temperatures {
            if is_placeholder_sensor(&t.name) {
                mark_unsupported(&mut stats, &metric::temp(&t.name));
            } else {
                stats.temperatures.push(Reading::new(t.name.clone(), t.cur_c));
            }
        }
        for name in &self.offline_sensors {
            mark_unsupported(&mut stats, &metric::temp(name));
        }
        stats.rails = self
            .rails
            .iter()
            .map(|r| PowerRail {
                name: r.name.clone(),
                voltage_mv: None,
                current_ma: None,
                power_mw: r.cur_mw,
                avg_power_mw: r.avg_mw,
            })
            .collect();
        for (missing, name) in [
            (stats.load_pct.is_none(), metric::LOAD),
            (stats.freq_mhz.is_none(), metric::FREQ),
            (true, metric::MIN_FREQ),
            (true, metric::MAX_FREQ),
            (stats.emc_pct.is_none(), metric::EMC),
            (stats.emc_freq_mhz.is_none(), metric::EMC_FREQ),
            (stats.temperatures.is_empty(), metric::TEMPERATURES),
            (stats.rails.is_empty(), metric::RAILS),
            (true, metric::FAN),
            (true, metric::MEMORY),
            (true, metric::NVPMODEL),
            (true, metric::BOARD),
            (true, metric::L4T),
            (true, metric::JETPACK),
        ] {
            if missing {
                mark_unsupported(&mut stats, name);
            }
        }
        stats
    }
}

fn max_of(values: &[f32]) -> Option<f32> {
    values.iter().copied().reduce(f32::max)
}

fn is_date(t: &str) -> bool {
    // MM-DD-YYYY
    let b = t.as_bytes();
    b.len() == 10
        && b[2] == b'-'
        && b[5] == b'-'
        && b.iter()
            .enumerate()
            .all(|(k, c)| k == 2 || k == 5 || c.is_ascii_digit())
}

fn is_time(t: &str) -> bool {
    // HH:MM:SS
    let b = t.as_bytes();
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && b.iter()
            .enumerate()
            .all(|(k, c)| k == 2 || k == 5 || c.is_ascii_digit())
}

/// The value after a keyword and the parenthesised group that may follow it, glued to it
/// (`0/252kB(lfb 252kB)`) or separate (`1282/62795MB (lfb 15152x4MB)`). The group is returned
/// without its parentheses, inner whitespace collapsed to one space.
fn value_and_group(tokens: &[&str], i: &mut usize) -> Option<(String, Option<String>)> {
    let first = *tokens.get(*i)?;
    *i += 1;
    let (value, group_start) = match first.split_once('(') {
        Some((value, rest)) => (value.to_string(), Some(rest.to_string())),
        None => match tokens.get(*i).and_then(|t| t.strip_prefix('(')) {
            Some(rest) => {
                *i += 1;
                (first.to_string(), Some(rest.to_string()))
            }
            None => (first.to_string(), None),
        },
    };
    let Some(mut group) = group_start else {
        return Some((value, None));
    };
    while !group.contains(')') {
        let Some(t) = tokens.get(*i) else { break };
        *i += 1;
        if !group.is_empty() {
            group.push(' ');
        }
        group.push_str(t);
    }
    let inner = group.split(')').next().unwrap_or_default().trim().to_string();
    Some((value, Some(inner)))
}

/// `[a,b,...]`, possibly split over several tokens; returned without brackets.
fn bracket_list(tokens: &[&str], i: &mut usize) -> String {
    let mut joined = String::new();
    while let Some(t) = tokens.get(*i) {
        *i += 1;
        joined.push_str(t);
        if t.ends_with(']') {
            break;
        }
    }
    let inner = joined.strip_prefix('[').unwrap_or(&joined);
    inner.strip_suffix(']').unwrap_or(inner).to_string()
}

/// `4MB` -> 4096, `128kB` -> 128, `1GB` -> 1048576.
fn parse_size_kb(s: &str) -> Option<u64> {
    let (num, factor) = if let Some(n) = s.strip_suffix("kB") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix("MB") {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("GB") {
        (n, 1024 * 1024)
    } else {
        return None;
    };
    num.parse::<u64>().ok()?.checked_mul(factor)
}

/// `1282/62795MB` (one unit for both) -> kB.
fn parse_used_total_kb(s: &str) -> Option<(u64, u64)> {
    let (used, total) = s.split_once('/')?;
    let total_kb = parse_size_kb(total)?;
    let unit_len = total.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let unit = total.get(total.len().checked_sub(unit_len)?..)?;
    let used_kb = parse_size_kb(&format!("{used}{unit}"))?;
    Some((used_kb, total_kb))
}

/// `lfb 15152x4MB` -> (15152, 4096).
fn parse_lfb(group: &str) -> Option<(u64, u64)> {
    let value = group.strip_prefix("lfb")?.trim();
    let (blocks, size) = value.split_once('x')?;
    Some((blocks.parse().ok()?, parse_size_kb(size)?))
}

fn parse_pct(s: &str) -> Option<f32> {
    let v: f32 = s.strip_suffix('%')?.parse().ok()?;
    v.is_finite().then_some(v)
}

fn parse_mhz(s: &str) -> Option<f32> {
    let v: f32 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn parse_cpus(list: &str) -> Option<Vec<CpuCore>> {
    if list.trim().is_empty() {
        return Some(Vec::new());
    }
    list.split(',')
        .map(|core| {
            if core == "off" {
                return Some(CpuCore::default());
            }
            let lf = parse_load_freq(core)?;
            // A core field always has a load: `@F` alone is not a CPU entry.
            lf.pct?;
            if lf.freqs.len() > 1 {
                return None;
            }
            Some(CpuCore {
                online: true,
                load_pct: lf.pct,
                freq_mhz: lf.freqs.first().copied(),
            })
        })
        .collect()
}

#[derive(Debug, Default)]
struct LoadFreq {
    pct: Option<f32>,
    freqs: Vec<f32>,
}

/// `off`, `N%`, `N%@F`, `N%@[F,F]`, `@[F,F]`, `F`.
fn parse_load_freq(s: &str) -> Option<LoadFreq> {
    if s == "off" {
        return Some(LoadFreq::default());
    }
    let (pct_part, freq_part) = match s.split_once('@') {
        Some((p, f)) => (p, Some(f)),
        None if s.ends_with('%') => (s, None),
        // A bare number is an engine clock (`APE 174`, `VIC_FREQ 729`).
        None => ("", Some(s)),
    };
    let pct = match pct_part {
        "" => None,
        p => Some(parse_pct(p)?),
    };
    let freqs = match freq_part {
        None => Vec::new(),
        Some(f) => match f.strip_prefix('[') {
            Some(list) => {
                let list = list.strip_suffix(']')?;
                if list.is_empty() {
                    Vec::new()
                } else {
                    list.split(',').map(parse_mhz).collect::<Option<Vec<_>>>()?
                }
            }
            None => vec![parse_mhz(f)?],
        },
    };
    if pct.is_none() && freqs.is_empty() {
        return None;
    }
    Some(LoadFreq { pct, freqs })
}

/// `name@value` where every `/`-separated value ends in `C` (`42.5C`, `-256C`, `NC`).
fn is_temperature_token(tok: &str) -> bool {
    let Some((name, value)) = tok.split_once('@') else {
        return false;
    };
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !value.is_empty()
        && value.split('/').all(|v| v.ends_with('C'))
}

/// Offline sensors: JetPack 5 prints `-256C`, JetPack 7 `NC`.
const OFFLINE_TEMP_C: f64 = -256.0;

fn parse_temperature(tok: &str, s: &mut TegraSample) -> Result<(), ParseError> {
    let (raw_name, value) = tok.split_once('@').ok_or_else(|| bad("temperature", tok))?;
    let name = normalize_sensor_name(raw_name);
    let mut parts = value.split('/');
    let cur = parts.next().unwrap_or_default();
    let max = parts.next();
    if parts.next().is_some() {
        return Err(bad(raw_name, value));
    }
    let parse_c = |v: &str| -> Result<Option<f64>, ParseError> {
        if v == "NC" {
            return Ok(None);
        }
        let c: f64 = v
            .strip_suffix('C')
            .and_then(|n| n.parse().ok())
            .filter(|c: &f64| c.is_finite())
            .ok_or_else(|| bad(raw_name, value))?;
        Ok((c > OFFLINE_TEMP_C).then_some(c))
    };
    let cur_c = parse_c(cur)?;
    let max_c = match max {
        Some(m) => parse_c(m)?,
        None => None,
    };
    match cur_c {
        Some(cur_c) => s.temperatures.push(TegraTemp { name, cur_c, max_c }),
        None => s.offline_sensors.push(name),
    }
    Ok(())
}

/// `2399mW/2399mW`, `4067/4067`, `3462mW/3522mW/3582mW`.
fn is_rail_value(v: &str) -> bool {
    let parts: Vec<&str> = v.split('/').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            let n = p.strip_suffix("mW").unwrap_or(p);
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
}

fn parse_rail(name: &str, value: &str) -> Option<TegraRail> {
    let mut parts = value.split('/').map(|p| -> Option<f64> {
        let v: f64 = p.strip_suffix("mW").unwrap_or(p).parse().ok()?;
        v.is_finite().then_some(v)
    });
    let cur_mw = parts.next()??;
    let avg_mw = parts.next()??;
    let max_mw = match parts.next() {
        Some(max) => Some(max?),
        None => None,
    };
    Some(TegraRail {
        name: name.to_string(),
        cur_mw,
        avg_mw: Some(avg_mw),
        max_mw,
    })
}

/// Engine names are uppercase identifiers: `APE`, `VIC_FREQ`, `NVJPG1`, `PVA0_FREQ`.
fn is_engine_name(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && t.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_engine_value(v: &str) -> bool {
    v == "off" || v.starts_with('@') || v.chars().next().is_some_and(|c| c.is_ascii_digit())
}
#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;

    use super::*;

    pub(crate) fn fixtures_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tegrastats")
    }

    /// Every data line of every fixture file, with its file name and line number.
    fn fixture_lines() -> Vec<(String, usize, String)> {
        let mut files: Vec<PathBuf> = fs::read_dir(fixtures_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 9, "fixture files: {files:?}");
        let mut out = Vec::new();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            for (n, line) in fs::read_to_string(&file).unwrap().lines().enumerate() {
                if !line.trim().is_empty() && !line.starts_with('#') {
                    out.push((name.clone(), n + 1, line.to_string()));
                }
            }
        }
        out
    }

    /// The data lines of one fixture file.
    pub(crate) fn lines_of(file: &str) -> Vec<String> {
        fixture_lines()
            .into_iter()
            .filter(|(f, _, _)| f == file)
            .map(|(_, _, l)| l)
            .collect()
    }

    fn temp(s: &TegraSample, name: &str) -> Option<f64> {
        s.temperatures.iter().find(|t| t.name == name).map(|t| t.cur_c)
    }

    fn rail<'a>(s: &'a TegraSample, name: &str) -> &'a TegraRail {
        s.rails
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rail {name} in {:?}", s.rails))
    }

    #[test]
    fn every_fixture_line_parses_with_no_unknown_tokens() {
        let lines = fixture_lines();
        assert_eq!(lines.len(), 87, "the fixtures README counts 87 real lines");
        for (file, n, line) in &lines {
            let s = parse_line(line).unwrap_or_else(|e| panic!("{file}:{n}: {e}\n{line}"));
            assert!(s.unknown.is_empty(), "{file}:{n}: unknown tokens {:?}", s.unknown);
            assert!(s.ram_total_mb > 0, "{file}:{n}");
            assert!(!s.cpus.is_empty(), "{file}:{n}");
            assert!(!s.temperatures.is_empty(), "{file}:{n}");
            let stats = s.to_gpu_stats();
            assert_eq!(stats.backend, GpuBackendKind::Tegrastats);
            assert!(stats.temperatures.iter().all(|t| t.value > -100.0), "{file}:{n}");
        }
    }

    #[test]
    fn agx_orin_jp5_line_has_exact_values_and_no_offline_sensor_readings() {
        let line = &lines_of("agx-orin-jp5.txt")[0];
        let s = parse_line(line).unwrap();
        assert_eq!(s.timestamp.as_deref(), Some("04-24-2023 00:01:24"));
        assert_eq!((s.ram_used_mb, s.ram_total_mb), (1282, 62795));
        assert_eq!((s.ram_lfb_blocks, s.ram_lfb_block_kb), (Some(15152), Some(4096)));
        assert_eq!(
            (s.swap_used_mb, s.swap_total_mb, s.swap_cached_mb),
            (Some(0), Some(31398), Some(0))
        );
        assert_eq!(s.cpus.len(), 12);
        assert!(s.cpus.iter().all(|c| c.online && c.freq_mhz == Some(729.0)));
        assert_eq!((s.emc_pct, s.emc_freq_mhz), (Some(0.0), Some(2133.0)));
        // GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0: two GPCs, both clocks 0.
        assert_eq!(s.gr3d_pct, Some(0.0));
        assert_eq!(s.gr3d_freqs_mhz, vec![0.0, 0.0]);
        assert_eq!(temp(&s, "tj"), Some(42.593));
        assert_eq!(temp(&s, "cpu"), Some(42.593));
        assert_eq!(temp(&s, "tboard"), Some(32.0));
        assert_eq!(temp(&s, "soc2"), Some(39.343));
        for offline in ["cv0", "cv1", "cv2", "gpu"] {
            assert_eq!(temp(&s, offline), None, "{offline}");
            assert!(s.offline_sensors.contains(&offline.to_string()), "{offline}");
        }
        let r = rail(&s, "VDD_GPU_SOC");
        assert_eq!((r.cur_mw, r.avg_mw, r.max_mw), (2399.0, Some(2399.0), None));
        assert_eq!(rail(&s, "VDDQ_VDD2_1V8AO").cur_mw, 301.0);
        assert!(s.rails.iter().all(|r| r.name != "NC"), "NC rails are skipped");
        assert_eq!(s.rails.len(), 4);
        let engines: Vec<_> = s.engines.iter().map(|e| (e.name.as_str(), e.freq_mhz)).collect();
        assert_eq!(engines, vec![("VIC_FREQ", Some(729.0)), ("APE", Some(174.0))]);

        let stats = s.to_gpu_stats();
        assert_eq!(stats.load_pct, Some(0.0));
        assert_eq!(stats.freq_mhz, Some(0.0));
        assert!(stats.temperatures.iter().all(|t| t.name != "cv0"));
        assert!(stats.unsupported.contains(&"temp:cv0".to_string()));
        assert!(stats.unsupported.contains(&"temp:gpu".to_string()));
        // No `gpu` reading: the hottest zone stands in.
        assert_eq!(stats.gpu_temp_c(), Some(42.593));
        let total = stats.total_power_mw().unwrap();
        assert!(
            (total - (2399.0 + 400.0 + 4032.0 + 301.0)).abs() < 1e-9,
            "{total}"
        );
    }

    #[test]
    fn agx_orin_jp5_bracketed_gpc_line_reads_both_gpcs() {
        let s = parse_line(&lines_of("agx-orin-jp5.txt")[3]).unwrap();
        assert_eq!(s.gr3d_freqs_mhz, vec![0.0, 0.0]);
        assert_eq!(s.swap_used_mb, Some(19));
        assert_eq!(temp(&s, "tj"), Some(44.343));
    }

    #[test]
    fn agx_orin_jp6_lines_read_gpcs_off_cores_and_irregular_spaces() {
        let lines = lines_of("agx-orin-jp6.txt");
        let s = parse_line(&lines[0]).unwrap();
        assert_eq!(s.gr3d_pct, Some(39.0));
        assert_eq!(s.gr3d_freqs_mhz, vec![305.0, 0.0]);
        assert_eq!(s.gpu_freq_mhz(), Some(305.0));
        assert_eq!(s.cpus.len(), 12);
        assert_eq!(s.cpus.iter().filter(|c| !c.online).count(), 4);
        assert_eq!(
            s.cpus[0],
            CpuCore {
                online: true,
                load_pct: Some(7.0),
                freq_mhz: Some(1728.0)
            }
        );
        assert_eq!(
            s.cpus[11],
            CpuCore {
                online: false,
                load_pct: None,
                freq_mhz: None
            }
        );
        assert_eq!((s.emc_pct, s.emc_freq_mhz), (Some(12.0), Some(204.0)));
        let nvenc = s.engines.iter().find(|e| e.name == "NVENC").unwrap();
        assert!(!nvenc.on);
        assert_eq!(temp(&s, "gpu"), Some(40.093));

        // Non-root: no EMC, no GR3D clock.
        let s = parse_line(&lines[15]).unwrap();
        assert_eq!(s.timestamp.as_deref(), Some("09-01-2025 10:55:25"));
        assert_eq!((s.gr3d_pct, s.gpu_freq_mhz(), s.emc_pct), (Some(0.0), None, None));
        let stats = s.to_gpu_stats();
        for name in ["freq", "emc", "emc_freq"] {
            assert!(
                stats.unsupported.contains(&name.to_string()),
                "{name}: {:?}",
                stats.unsupported
            );
        }
        assert!(!stats.unsupported.contains(&"load".to_string()));

        // DataDog r36Sample: irregular runs of spaces, no timestamp.
        let s = parse_line(&lines[17]).unwrap();
        assert_eq!(s.timestamp, None);
        assert_eq!((s.ram_used_mb, s.ram_total_mb), (29114, 30697));
        assert_eq!(s.swap_cached_mb, Some(1));
        assert_eq!(s.gr3d_freqs_mhz, vec![305.0, 305.0]);
        assert_eq!(temp(&s, "gpu"), Some(47.812));
        assert_eq!(rail(&s, "VDD_CPU_CV").cur_mw, 4405.0);
        assert_eq!(s.engines.len(), 10);
    }

    #[test]
    fn orin_nano_jp6_root_and_non_root_lines() {
        let lines = lines_of("orin-nano-jp6.txt");
        let s = parse_line(&lines[0]).unwrap();
        assert_eq!((s.ram_lfb_blocks, s.ram_lfb_block_kb), (Some(8), Some(2048)));
        assert_eq!(s.gr3d_pct, Some(63.0));
        assert_eq!(s.gr3d_freqs_mhz, vec![621.0]);
        assert_eq!((s.emc_pct, s.emc_freq_mhz), (Some(43.0), Some(2133.0)));
        assert_eq!(temp(&s, "soc0"), Some(50.75));
        let r = rail(&s, "VDD_IN");
        assert_eq!((r.cur_mw, r.avg_mw), (12479.0, Some(12479.0)));
        let stats = s.to_gpu_stats();
        assert_eq!(stats.total_power_mw(), Some(12479.0));
        assert_eq!(stats.gpu_temp_c(), Some(53.343));
        assert_eq!(stats.rails[0].voltage_mv, None);
        assert_eq!(stats.rails[0].current_ma, None);

        // Non-root line with a trailing space, as in the source.
        assert!(lines[4].ends_with(' '));
        let s = parse_line(&lines[4]).unwrap();
        assert_eq!(
            s.cpus[0],
            CpuCore {
                online: true,
                load_pct: Some(1.0),
                freq_mhz: Some(729.0)
            }
        );
        assert_eq!(rail(&s, "VDD_IN").avg_mw, Some(4778.0));
        // After `sudo jetson_clocks`: CPU locked at 1344 MHz.
        let s = parse_line(lines.last().unwrap()).unwrap();
        assert!(s.cpus.iter().all(|c| c.freq_mhz == Some(1344.0)));
        assert_eq!(rail(&s, "VDD_SOC").avg_mw, Some(2380.0));
    }

    #[test]
    fn orin_nx_lines_read_cv_sensors_in_both_casings() {
        let lines = lines_of("orin-nx.txt");
        let s = parse_line(&lines[0]).unwrap();
        assert_eq!(temp(&s, "cv0"), Some(45.812));
        assert_eq!(s.gr3d_freqs_mhz, vec![611.0]);
        let s = parse_line(&lines[2]).unwrap();
        assert_eq!(temp(&s, "cv1"), Some(47.968));
        assert_eq!(s.swap_total_mb, Some(24212));
        assert_eq!(rail(&s, "VDD_IN").cur_mw, 7956.0);
    }

    #[test]
    fn xavier_nx_lines_read_lfb_units_and_unitless_power() {
        let lines = lines_of("xavier-nx.txt");
        let s = parse_line(&lines[0]).unwrap();
        assert_eq!((s.emc_pct, s.emc_freq_mhz), (Some(0.0), None));
        assert_eq!(s.gr3d_pct, Some(22.0));
        assert_eq!(s.cpus[4], CpuCore::default());
        let s = parse_line(&lines[9]).unwrap();
        assert_eq!((s.ram_lfb_blocks, s.ram_lfb_block_kb), (Some(2), Some(128)));
        let s = parse_line(&lines[14]).unwrap();
        assert_eq!((s.ram_lfb_blocks, s.ram_lfb_block_kb), (Some(1), Some(1024)));
        let s = parse_line(lines.last().unwrap()).unwrap();
        assert_eq!((s.mts_fg_pct, s.mts_bg_pct), (Some(0.0), Some(0.0)));
        assert_eq!(s.gr3d_freqs_mhz, vec![306.0]);
        let r = rail(&s, "VDD_IN");
        assert_eq!((r.cur_mw, r.avg_mw), (4067.0, Some(4067.0)));
        // PMIC@100C is a placeholder, not a reading.
        let stats = s.to_gpu_stats();
        assert!(stats.temperatures.iter().all(|t| t.name != "pmic"));
        assert!(stats.unsupported.contains(&"temp:pmic".to_string()));
        assert_eq!(stats.gpu_temp_c(), Some(43.0));
    }

    #[test]
    fn nano_jp4_lines_read_iram_and_pom_rails_and_tolerate_no_rails() {
        let lines = lines_of("nano-jp4.txt");
        let s = parse_line(&lines[0]).unwrap();
        assert_eq!(
            (s.iram_used_kb, s.iram_total_kb, s.iram_lfb_kb),
            (Some(0), Some(252), Some(252))
        );
        assert_eq!(s.cpus[0].freq_mhz, Some(102.0));
        assert_eq!(temp(&s, "pll"), Some(24.0));
        assert_eq!(rail(&s, "POM_5V_IN").cur_mw, 920.0);
        assert_eq!(s.to_gpu_stats().total_power_mw(), Some(920.0));
        let s = parse_line(&lines[12]).unwrap();
        assert_eq!(s.gr3d_freqs_mhz, vec![921.0]);
        assert_eq!(s.gr3d_pct, Some(99.0));
        // Non-root Nano: no rails at all.
        let s = parse_line(lines.last().unwrap()).unwrap();
        assert!(s.rails.is_empty());
        assert_eq!(s.cpus[2], CpuCore::default());
        let stats = s.to_gpu_stats();
        assert!(stats.unsupported.contains(&"rails".to_string()));
        assert_eq!(stats.total_power_mw(), None);
    }

    #[test]
    fn older_boards_read_rails_without_vdd_prefix_and_lines_without_gr3d() {
        let s = parse_line(&lines_of("agx-xavier.txt")[0]).unwrap();
        let names: Vec<_> = s.rails.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]);
        assert_eq!(rail(&s, "SYS5V").cur_mw, 1482.0);
        assert_eq!(s.cpus.len(), 8);
        assert_eq!(temp(&s, "thermal"), Some(36.9));

        let s = parse_line(&lines_of("tx1.txt")[0]).unwrap();
        assert_eq!(s.swap_total_mb, None);
        assert_eq!(rail(&s, "VDD_IN").avg_mw, Some(2698.0));

        let tx2 = lines_of("tx2.txt");
        let s = parse_line(&tx2[0]).unwrap();
        assert_eq!((s.gr3d_pct, s.emc_pct), (None, None));
        assert_eq!(temp(&s, "bcpu"), Some(35.0));
        let stats = s.to_gpu_stats();
        assert_eq!(stats.load_pct, None);
        assert!(stats.unsupported.contains(&"load".to_string()));
        assert_eq!(stats.total_power_mw(), Some(3624.0));
        let s = parse_line(tx2.last().unwrap()).unwrap();
        assert_eq!(rail(&s, "VDD_SYS_GPU").cur_mw, 152.0);
        assert_eq!((s.cpus[1].online, s.cpus[0].freq_mhz), (false, Some(345.0)));
    }

    // Synthetic lines (not captured on a board): written from section 4 of
    // shared/fixtures/jetson/sysfs-orin-nano.md, which describes JetPack 7 output
    // (cur/avg/max power, cur/max temperatures, `X@NC/NC`) and Thor's `GR3D_FREQ @[..]`.
    const SYNTHETIC_JP7_AGX: &str = "01-10-2026 12:00:00 RAM 5210/62841MB (lfb 12x4MB) SWAP 0/31420MB \
        (cached 0MB) CPU [3%@1728,1%@1728,0%@1728,2%@1728,off,off,off,off,off,off,off,off] \
        EMC_FREQ 4%@2133 GR3D_FREQ 12%@[1300,1300] NVENC off APE 174 cpu@45.375C/45.812C \
        soc2@41.5C/42C cv0@NC/NC gpu@44.25C/44.9C tj@45.375C/46.1C \
        VDD_GPU_SOC 3462mW/3522mW/3582mW VDD_CPU_CV 800mW/812mW/1204mW VIN_SYS_5V0 4025mW/4025mW/4100mW";
    const SYNTHETIC_THOR: &str = "RAM 9000/125000MB (lfb 100x4MB) SWAP 0/0MB (cached 0MB) \
        CPU [1%@972,2%@972] GR3D_FREQ @[1000,1000,1000] cpu@50C gpu@49.5C cv1@NC VDD_GPU 5000mW/4900mW/5600mW";

    #[test]
    fn jetpack7_synthetic_line_reads_max_power_and_max_temperatures() {
        let s = parse_line(SYNTHETIC_JP7_AGX).unwrap();
        assert!(s.unknown.is_empty(), "{:?}", s.unknown);
        let r = rail(&s, "VDD_GPU_SOC");
        assert_eq!(
            (r.cur_mw, r.avg_mw, r.max_mw),
            (3462.0, Some(3522.0), Some(3582.0))
        );
        let cpu = s.temperatures.iter().find(|t| t.name == "cpu").unwrap();
        assert_eq!((cpu.cur_c, cpu.max_c), (45.375, Some(45.812)));
        assert_eq!(temp(&s, "soc2"), Some(41.5));
        assert_eq!(temp(&s, "cv0"), None);
        assert_eq!(s.offline_sensors, vec!["cv0".to_string()]);
        assert_eq!(s.gr3d_freqs_mhz, vec![1300.0, 1300.0]);
        let stats = s.to_gpu_stats();
        assert_eq!(stats.rails[0].avg_power_mw, Some(3522.0));
        assert_eq!(stats.freq_mhz, Some(1300.0));
        assert!(stats.unsupported.contains(&"temp:cv0".to_string()));
    }

    #[test]
    fn thor_synthetic_line_has_clocks_without_load() {
        let s = parse_line(SYNTHETIC_THOR).unwrap();
        assert_eq!(s.gr3d_pct, None);
        assert_eq!(s.gr3d_freqs_mhz, vec![1000.0, 1000.0, 1000.0]);
        assert_eq!(s.offline_sensors, vec!["cv1".to_string()]);
        let stats = s.to_gpu_stats();
        assert_eq!((stats.load_pct, stats.freq_mhz), (None, Some(1000.0)));
        assert!(stats.unsupported.contains(&"load".to_string()));
    }

    #[test]
    fn lines_that_are_not_tegrastats_are_errors_naming_the_problem() {
        assert_eq!(parse_line(""), Err(ParseError::Empty));
        assert_eq!(parse_line("   \t "), Err(ParseError::Empty));
        assert_eq!(parse_line("hello world"), Err(ParseError::NoRam));
        assert_eq!(
            parse_line("RAM"),
            Err(ParseError::MissingValue { field: "RAM".into() })
        );
        assert_eq!(
            parse_line("RAM lots/ofMB"),
            Err(ParseError::BadValue {
                field: "RAM".into(),
                value: "lots/ofMB".into()
            })
        );
        let err = parse_line("RAM 1/2MB CPU [x%@1]").unwrap_err();
        assert_eq!(err.to_string(), "tegrastats field CPU has a bad value \"x%@1\"");
        let err = parse_line("RAM 1/2MB GR3D_FREQ 5%@[a]").unwrap_err();
        assert!(err.to_string().contains("GR3D_FREQ"), "{err}");
        let err = parse_line("RAM 1/2MB cpu@hotC").unwrap_err();
        assert!(err.to_string().contains("cpu"), "{err}");
    }

    #[test]
    fn unknown_tokens_are_kept_not_fatal() {
        let s = parse_line("RAM 1/2MB FUTURE_THING some-value cpu@40C").unwrap();
        assert_eq!(
            s.unknown,
            vec!["FUTURE_THING".to_string(), "some-value".to_string()]
        );
        assert_eq!(temp(&s, "cpu"), Some(40.0));
    }

    proptest! {
        #[test]
        fn parse_line_never_panics_on_arbitrary_strings(line in "\\PC*") {
            let _ = parse_line(&line);
        }

        #[test]
        fn parse_line_never_panics_on_tegrastats_like_tokens(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("RAM".to_string()), Just("SWAP".to_string()), Just("IRAM".to_string()),
                    Just("CPU".to_string()), Just("EMC_FREQ".to_string()), Just("GR3D_FREQ".to_string()),
                    Just("MTS".to_string()), Just("fg".to_string()), Just("NC".to_string()),
                    "[0-9%@\\[\\],/.()a-zA-Z-]{0,12}",
                ],
                0..24,
            )
        ) {
            let _ = parse_line(&tokens.join(" "));
        }
    }
}
