//! Facts about the Jetson itself, shared by every GPU backend: board model, L4T and JetPack
//! release, nvpmodel power mode and NvMap (GPU-mapped) memory.
//!
//! All of them come from files a non-root user can read (`<procfs>/device-tree/model`,
//! `<etc_root>/etc/nv_tegra_release`, `<etc_root>/var/lib/nvpmodel/status` +
//! `<etc_root>/etc/nvpmodel.conf`, `<procfs>/meminfo`). The release and the model are read once;
//! the power mode and NvMap memory are read on every sample (`nvpmodel -m` changes the mode at
//! run time). The parsers are pure functions; a file that is missing or malformed leaves its
//! field `None` and its name in `unsupported`.

use std::fs;
use std::path::PathBuf;

use common::GpuStats;
use tracing::debug;

use super::{GpuPaths, mark_unsupported, metric};

/// Static facts read at start-up plus the paths of the ones re-read each sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub board: Option<String>,
    pub l4t: Option<String>,
    pub jetpack: Option<String>,
    nvpmodel_status: PathBuf,
    nvpmodel_conf: PathBuf,
    meminfo: PathBuf,
}

impl Platform {
    pub fn read(paths: &GpuPaths) -> Self {
        let board = fs::read(paths.procfs.join("device-tree/model"))
            .ok()
            .and_then(|b| parse_model(&b));
        let l4t = fs::read_to_string(paths.etc_root.join("etc/nv_tegra_release"))
            .ok()
            .and_then(|t| parse_nv_tegra_release(&t));
        let jetpack = l4t.as_deref().and_then(jetpack_for_l4t);
        debug!(board = ?board, l4t = ?l4t, jetpack = ?jetpack, "jetson platform read");
        Platform {
            board,
            l4t,
            jetpack,
            nvpmodel_status: paths.etc_root.join("var/lib/nvpmodel/status"),
            nvpmodel_conf: paths.etc_root.join("etc/nvpmodel.conf"),
            meminfo: paths.procfs.join("meminfo"),
        }
    }

    /// Current nvpmodel mode name, e.g. `15W` or `MAXN`.
    pub fn nvpmodel(&self) -> Option<String> {
        let id = parse_nvpmodel_status(&fs::read_to_string(&self.nvpmodel_status).ok()?)?;
        nvpmodel_name(&fs::read_to_string(&self.nvpmodel_conf).ok()?, id)
    }

    /// `NvMapMemUsed` in bytes, when the kernel reports it.
    pub fn nvmap_used_bytes(&self) -> Option<u64> {
        parse_nvmap_used_bytes(&fs::read_to_string(&self.meminfo).ok()?)
    }

    /// Fills board, release, power mode and GPU memory into `stats`, marking what is missing.
    pub fn fill(&self, stats: &mut GpuStats) {
        stats.board = self.board.clone();
        stats.l4t = self.l4t.clone();
        stats.jetpack = self.jetpack.clone();
        stats.nvpmodel = self.nvpmodel();
        if stats.memory_used_bytes.is_none() {
            stats.memory_used_bytes = self.nvmap_used_bytes();
        }
        for (missing, name) in [
            (stats.board.is_none(), metric::BOARD),
            (stats.l4t.is_none(), metric::L4T),
            (stats.jetpack.is_none(), metric::JETPACK),
            (stats.nvpmodel.is_none(), metric::NVPMODEL),
            (stats.memory_used_bytes.is_none(), metric::MEMORY),
        ] {
            if missing {
                mark_unsupported(stats, name);
            }
        }
    }
}

/// Device-tree strings are NUL-terminated (and may hold several NUL-separated values).
pub fn parse_model(bytes: &[u8]) -> Option<String> {
    let first = bytes.split(|b| *b == 0).next().unwrap_or_default();
    let model = String::from_utf8_lossy(first).trim().to_string();
    (!model.is_empty()).then_some(model)
}

/// `# R36 (release), REVISION: 4.3, GCID: ...` -> `36.4.3`.
pub fn parse_nv_tegra_release(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.trim_start().starts_with("# R"))?;
    let after_r = line.trim_start().strip_prefix("# R")?;
    let major: String = after_r.chars().take_while(|c| c.is_ascii_digit()).collect();
    if major.is_empty() {
        return None;
    }
    let revision = line.split("REVISION:").nth(1)?.split(',').next()?.trim();
    let valid = !revision.is_empty()
        && revision
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    valid.then(|| format!("{major}.{revision}"))
}

/// JetPack release for an L4T version. Exact entries come from jtop's table as quoted in
/// `shared/fixtures/jetson/sysfs-orin-nano.md`; anything else gets the major series only
/// (`6.x`), because several JetPack point releases share one L4T minor.
const JETPACK_BY_L4T: &[(&str, &str)] = &[
    ("35.4.1", "5.1.2"),
    ("36.2.0", "6.0"),
    ("36.3.0", "6.0"),
    ("36.4.0", "6.1"),
    ("36.4.3", "6.2"),
    ("36.4.4", "6.2.1"),
    ("36.4.7", "6.2.1"),
    ("39.2.0", "7.2"),
];

const JETPACK_SERIES_BY_L4T_MAJOR: &[(&str, &str)] = &[
    ("32", "4.x"),
    ("34", "5.x"),
    ("35", "5.x"),
    ("36", "6.x"),
    ("38", "7.x"),
    ("39", "7.x"),
];

pub fn jetpack_for_l4t(l4t: &str) -> Option<String> {
    // `36.3` and `36.3.0` are the same release.
    let padded = if l4t.split('.').count() == 2 {
        format!("{l4t}.0")
    } else {
        l4t.to_string()
    };
    if let Some((_, jp)) = JETPACK_BY_L4T.iter().find(|(v, _)| *v == padded) {
        return Some((*jp).to_string());
    }
    let major = l4t.split('.').next()?;
    JETPACK_SERIES_BY_L4T_MAJOR
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, jp)| (*jp).to_string())
}

/// `pmode:0002 fmode:fan_mode_quiet` -> 2.
pub fn parse_nvpmodel_status(text: &str) -> Option<u32> {
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("pmode:"))
        .and_then(|id| id.parse().ok())
}

/// Name of power mode `id` in an nvpmodel.conf (`< POWER_MODEL ID=0 NAME=15W >`).
pub fn nvpmodel_name(conf: &str, id: u32) -> Option<String> {
    conf.lines()
        .filter_map(|line| {
            let inner = line.trim().strip_prefix('<')?.strip_suffix('>')?;
            let mut fields = inner.split_whitespace();
            if fields.next()? != "POWER_MODEL" {
                return None;
            }
            let (mut mode_id, mut name) = (None, None);
            for field in fields {
                if let Some(v) = field.strip_prefix("ID=") {
                    mode_id = v.parse::<u32>().ok();
                } else if let Some(v) = field.strip_prefix("NAME=") {
                    name = Some(v.to_string());
                }
            }
            Some((mode_id?, name?))
        })
        .find(|(mode_id, _)| *mode_id == id)
        .map(|(_, name)| name)
}

/// `NvMapMemUsed:  204800 kB` -> bytes.
pub fn parse_nvmap_used_bytes(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("NvMapMemUsed:")?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        let factor = match parts.next() {
            Some("kB") | None => 1024,
            Some("MB") => 1024 * 1024,
            Some(_) => return None,
        };
        value.checked_mul(factor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_stops_at_the_first_nul() {
        assert_eq!(
            parse_model(b"NVIDIA Jetson AGX Orin Developer Kit\0"),
            Some("NVIDIA Jetson AGX Orin Developer Kit".into())
        );
        assert_eq!(parse_model(b"a\0b\0"), Some("a".into()));
        assert_eq!(parse_model(b"\0"), None);
        assert_eq!(parse_model(b""), None);
    }

    #[test]
    fn nv_tegra_release_gives_the_l4t_version() {
        let jp62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, \
                    DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n";
        assert_eq!(parse_nv_tegra_release(jp62), Some("36.4.3".into()));
        let jp512 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, \
                     DATE: Tue Aug  1 19:57:35 UTC 2023";
        assert_eq!(parse_nv_tegra_release(jp512), Some("35.4.1".into()));
        let jp721 = "# R39 (release), REVISION: 2.1, GCID: 46758480, BOARD: generic, EABI: aarch64";
        assert_eq!(parse_nv_tegra_release(jp721), Some("39.2.1".into()));
        assert_eq!(parse_nv_tegra_release("garbage"), None);
        assert_eq!(parse_nv_tegra_release("# R36 (release), REVISION: x.y,"), None);
        assert_eq!(parse_nv_tegra_release("# R (release), REVISION: 4.3,"), None);
    }

    #[test]
    fn jetpack_comes_from_the_table_or_the_major_series() {
        assert_eq!(jetpack_for_l4t("36.4.3").as_deref(), Some("6.2"));
        assert_eq!(jetpack_for_l4t("36.4.4").as_deref(), Some("6.2.1"));
        assert_eq!(jetpack_for_l4t("36.3").as_deref(), Some("6.0"));
        assert_eq!(jetpack_for_l4t("35.4.1").as_deref(), Some("5.1.2"));
        assert_eq!(jetpack_for_l4t("36.4.9").as_deref(), Some("6.x"));
        assert_eq!(jetpack_for_l4t("32.7.4").as_deref(), Some("4.x"));
        assert_eq!(jetpack_for_l4t("39.2.1").as_deref(), Some("7.x"));
        assert_eq!(jetpack_for_l4t("28.2"), None);
    }

    #[test]
    fn nvpmodel_mode_name_is_looked_up_by_id() {
        let conf = "< PARAM TYPE=FILE NAME=CPU_ONLINE >\n< POWER_MODEL ID=0 NAME=15W >\n\
                    < POWER_MODEL ID=1 NAME=25W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n\
                    < PM_CONFIG DEFAULT=1 >\n";
        assert_eq!(parse_nvpmodel_status("pmode:0001\n"), Some(1));
        assert_eq!(parse_nvpmodel_status("pmode:0002 fmode:fan_mode_quiet"), Some(2));
        assert_eq!(parse_nvpmodel_status("fmode:quiet"), None);
        assert_eq!(nvpmodel_name(conf, 1).as_deref(), Some("25W"));
        assert_eq!(nvpmodel_name(conf, 2).as_deref(), Some("MAXN_SUPER"));
        assert_eq!(nvpmodel_name(conf, 7), None);
    }

    #[test]
    fn nvmap_memory_is_converted_to_bytes() {
        assert_eq!(
            parse_nvmap_used_bytes("MemTotal: 1 kB\nNvMapMemUsed:     204800 kB\n"),
            Some(204_800 * 1024)
        );
        assert_eq!(parse_nvmap_used_bytes("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_nvmap_used_bytes("NvMapMemUsed: lots kB\n"), None);
    }
}
