//! `[commands]`: which actions are disruptive and wait for a second operator's approval.

use std::collections::BTreeSet;

use serde::Deserialize;

/// Every action name the allow-list knows (`common::command::Action::name`).
pub const ACTION_NAMES: [&str; 8] = [
    "restart_unit",
    "restart_process",
    "drop_caches",
    "clean_temp",
    "restart_network",
    "reboot",
    "collect_diagnostics",
    "reset_camera",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    /// Actions (by name) that are sent only once an operator other than the requester
    /// approved them. Default `["reboot"]`; `[]` turns approvals off.
    #[serde(default = "default_approval_required")]
    pub approval_required: Vec<String>,
}

fn default_approval_required() -> Vec<String> {
    vec!["reboot".into()]
}

impl Default for CommandsSection {
    fn default() -> Self {
        Self {
            approval_required: default_approval_required(),
        }
    }
}

/// `[commands]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsConfig {
    pub approval_required: BTreeSet<String>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            approval_required: default_approval_required().into_iter().collect(),
        }
    }
}

impl CommandsConfig {
    /// Whether `action` (its [`common::command::Action::name`]) waits for an approval.
    pub fn needs_approval(&self, action: &str) -> bool {
        self.approval_required.contains(action)
    }
}

impl CommandsSection {
    pub fn validate(&self, key: &str) -> Result<CommandsConfig, Vec<String>> {
        let bad: Vec<String> = self
            .approval_required
            .iter()
            .filter(|a| !ACTION_NAMES.contains(&a.as_str()))
            .map(|a| {
                format!(
                    "{key}.approval_required: {a:?} is not an action (one of {})",
                    ACTION_NAMES.join(", ")
                )
            })
            .collect();
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(CommandsConfig {
            approval_required: self.approval_required.iter().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use common::command::Action;

    use super::*;

    #[test]
    fn reboot_needs_approval_by_default_and_an_unknown_action_is_named() {
        let c = CommandsSection::default().validate("commands").unwrap();
        assert!(c.needs_approval(Action::Reboot.name()));
        assert!(!c.needs_approval(Action::DropCaches.name()));
        let e = CommandsSection {
            approval_required: vec!["reboot".into(), "format_disk".into()],
        }
        .validate("commands")
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("commands.approval_required") && e[0].contains("format_disk"),
            "{e:?}"
        );
    }

    #[test]
    fn the_action_names_are_the_allow_list() {
        for a in [
            Action::RestartUnit { unit: "u".into() },
            Action::RestartProcess { name: "p".into() },
            Action::DropCaches,
            Action::CleanTemp,
            Action::RestartNetwork {
                interface: "i".into(),
            },
            Action::Reboot,
            Action::CollectDiagnostics,
            Action::ResetCamera { camera: "c".into() },
        ] {
            assert!(ACTION_NAMES.contains(&a.name()), "{}", a.name());
        }
    }
}
