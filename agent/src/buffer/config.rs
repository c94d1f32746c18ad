//! The `[buffer]` section of `agent.toml`: where the buffer lives, its caps, and when it is
//! flushed to disk.

use std::path::PathBuf;

use serde::Deserialize;

use super::FullPolicy;
use crate::shared::problem::ConfigProblem;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSection {
    #[serde(default = "default_buffer_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_max_records")]
    pub max_records: u64,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_full_policy")]
    pub full_policy: FullPolicy,
    /// `every_record` or `batched`.
    #[serde(default = "default_flush")]
    pub flush: FlushMode,
    /// With `batched`: the power-loss window.
    #[serde(default = "default_flush_ms")]
    pub flush_ms: u64,
    #[serde(default = "default_thin")]
    pub thin_keep_every: u64,
}

impl Default for BufferSection {
    fn default() -> Self {
        Self {
            dir: default_buffer_dir(),
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            full_policy: default_full_policy(),
            flush: default_flush(),
            flush_ms: default_flush_ms(),
            thin_keep_every: default_thin(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushMode {
    EveryRecord,
    Batched,
}

fn default_buffer_dir() -> PathBuf {
    PathBuf::from("/var/lib/rvm-agent/buffer")
}
fn default_max_records() -> u64 {
    500_000
}
fn default_max_bytes() -> u64 {
    256 << 20
}
fn default_full_policy() -> FullPolicy {
    FullPolicy::DropOldest
}
fn default_flush() -> FlushMode {
    FlushMode::Batched
}
fn default_flush_ms() -> u64 {
    500
}
fn default_thin() -> u64 {
    4
}

impl BufferSection {
    /// Every problem, each with its key path under `prefix` (`buffer`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(ConfigProblem {
                key: format!("{prefix}.{key}"),
                message,
            })
        };
        if self.max_records == 0 {
            bad("max_records", "must be at least 1".into());
        }
        if self.max_bytes < 64 * 1024 {
            bad("max_bytes", format!("{} is below 65536", self.max_bytes));
        }
        if !(10..=60_000).contains(&self.flush_ms) {
            bad("flush_ms", format!("{} is outside 10..=60000", self.flush_ms));
        }
        if self.thin_keep_every == 0 {
            bad("thin_keep_every", "must be at least 1 (1 = no thinning)".into());
        }
        p
    }
}
