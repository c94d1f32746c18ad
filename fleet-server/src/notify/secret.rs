//! Secrets of notification channels (SMTP passwords, provider tokens): read from a file or an
//! environment variable named in the config, never written in the config file itself.
//!
//! Invariants: a [`Secret`] has no `Display`, no `Serialize`, and its `Debug` prints `***`, so
//! it cannot reach a log line, an API response or a `{:?}` of a config by accident; the only
//! way to the text is [`Secret::expose`], called where the secret goes on the wire.
//!
//! Config shape: a secret `NAME` is given by exactly one of `NAME_file = "/path"` (the file's
//! text without its trailing newline; keep it 0600) or `NAME_env = "VARIABLE"`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. See the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The text, for the one place it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// The source named by the keys `{key}_file` and `{key}_env` of a config, each problem
    /// named by its key path (`{prefix}.{key}_file`): both set is an error; neither is `None`.
    pub fn from_keys(
        prefix: &str,
        key: &str,
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<Option<SecretSource>, String> {
        match (file, env) {
            (Some(_), Some(_)) => Err(format!(
                "{prefix}.{key}_file, {prefix}.{key}_env: set one of them, not both"
            )),
            (Some(f), None) if f.as_os_str().is_empty() => {
                Err(format!("{prefix}.{key}_file: must not be empty"))
            }
            (Some(f), None) => Ok(Some(SecretSource::File(f.to_path_buf()))),
            (None, Some(v)) if v.is_empty() || v.contains('=') || v.contains('\0') => Err(format!(
                "{prefix}.{key}_env: {v:?} is not an environment variable name"
            )),
            (None, Some(v)) => Ok(Some(SecretSource::Env(v.to_string()))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret now. A file's trailing newline (`\n` or `\r\n`) is not part of it.
    pub fn load(&self) -> Result<Secret, SecretError> {
        let (text, what) = match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) => (v, format!("environment variable {name}")),
                Err(std::env::VarError::NotPresent) => return Err(SecretError::EnvMissing(name.clone())),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(SecretError::EnvNotUnicode(name.clone()));
                }
            },
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(v) => (v, path.display().to_string()),
                Err(e) => {
                    return Err(SecretError::Read {
                        path: path.clone(),
                        error: e.to_string(),
                    });
                }
            },
        };
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(SecretError::Empty(what));
        }
        Ok(Secret(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)] // read by Debug only
        struct Channel {
            password: Secret,
        }
        let c = Channel { password: s.clone() };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_file_secret_loses_its_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "  pass word \r\n").unwrap();
        let s = SecretSource::File(p.clone()).load().unwrap();
        assert_eq!(s.expose(), "  pass word ");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(SecretSource::File(p).load(), Err(SecretError::Empty(_))));
    }

    #[test]
    fn a_missing_file_or_variable_is_named() {
        let e = SecretSource::File("/nonexistent/pw".into()).load().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let e = SecretSource::Env("RVM_TEST_SECRET_THAT_IS_NOT_SET".into())
            .load()
            .unwrap_err();
        assert_eq!(
            e,
            SecretError::EnvMissing("RVM_TEST_SECRET_THAT_IS_NOT_SET".into())
        );
    }

    #[test]
    fn an_environment_secret_is_read() {
        // PATH is set in every test environment and is not empty.
        let s = SecretSource::Env("PATH".into()).load().unwrap();
        assert_eq!(s.expose(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn exactly_one_source_key_is_accepted() {
        let p = Path::new("/etc/pw");
        assert_eq!(
            SecretSource::from_keys("notify.channels.mail", "password", Some(p), None),
            Ok(Some(SecretSource::File(p.into())))
        );
        assert_eq!(SecretSource::from_keys("x", "password", None, None), Ok(None));
        let e = SecretSource::from_keys("notify.channels.mail", "password", Some(p), Some("PW")).unwrap_err();
        assert!(e.contains("notify.channels.mail.password_file"), "{e}");
        let e = SecretSource::from_keys("c", "token", None, Some("A=B")).unwrap_err();
        assert!(e.contains("c.token_env"), "{e}");
    }
}
