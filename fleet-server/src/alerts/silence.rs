//! Silences: label matchers that mute notifications until they expire. They never stop the
//! state machine: the engine marks the transitions of a silenced alert (`silenced: true`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `label = value`, exact match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    pub label: String,
    pub value: String,
}

/// Mutes notifications of every alert whose labels match all matchers, until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub expires_ms: i64,
    pub created_by: String,
    pub comment: String,
    /// Set by [`AlertEngine::add_silence`](super::engine::AlertEngine::add_silence).
    #[serde(default)]
    pub created_ms: i64,
}

impl Silence {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|m| labels.get(&m.label).is_some_and(|v| *v == m.value))
    }

    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms < self.expires_ms
    }
}

/// The id of a live silence that matches `labels` at `now_ms`, if any.
pub(crate) fn live_silence(
    silences: &BTreeMap<String, Silence>,
    labels: &BTreeMap<String, String>,
    now_ms: i64,
) -> Option<String> {
    silences
        .values()
        .find(|s| s.is_live(now_ms) && s.matches(labels))
        .map(|s| s.id.clone())
}
