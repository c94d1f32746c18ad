//! Identities on the wire.
//!
//! A device id is `[A-Za-z0-9]{1,64}`: safe as a certificate CN, an MQTT username, a topic level
//! and a file name everywhere. The fleet server and read-only subscribers use identities that
//! contain a `-`, so they can never collide with a device id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest device id accepted.
pub const DEVICE_ID_MAX_LEN: usize = 64;

/// Certificate CN (and MQTT username) of the fleet server's own MQTT client.
pub const SERVER_IDENTITY: &str = "fleet-server";

/// Prefix of the certificate CN of read-only subscribers (`reader-NAME`).
pub const READER_PREFIX: &str = "reader-";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("device id is empty")]
    Empty,
    #[error("device id is {0} characters long, at most {DEVICE_ID_MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("device id {0:?} has a character outside [A-Za-z0-9]")]
    BadChar(String),
}

/// A validated device id. Construct with [`DeviceId::new`] or `parse()`; deserialising validates too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        validate_device_id(&s)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest site (store) id, bytes.
pub const SITE_ID_MAX_LEN: usize = 64;

/// A site (store) id: 1 to [`SITE_ID_MAX_LEN`] of letters, digits, space, '.', '_' and '-',
/// and not only spaces. One rule for the installer, the estate's stores and retailers, and
/// token scopes, so a site accepted by one is accepted by all.
pub fn is_site_id(s: &str) -> bool {
    !s.trim().is_empty()
        && s.len() <= SITE_ID_MAX_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'))
}

/// Checks `[A-Za-z0-9]{1,64}`.
pub fn validate_device_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > DEVICE_ID_MAX_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(IdError::BadChar(s.chars().take(80).collect()));
    }
    Ok(())
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::new(s).map_err(serde::de::Error::custom)
    }
}

/// A random id of `bytes` random bytes, as lowercase hex (boot ids, command ids).
pub fn random_hex(bytes: usize) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is not recoverable in any useful way; fall back to the clock.
    if SystemRandom::new().fill(&mut buf).is_err() {
        let t = crate::time::now_ms().to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = t[i % 8] ^ (i as u8);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a broker client is, from its certificate CN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Server,
    Reader(String),
    Device(DeviceId),
}

impl Identity {
    /// Classifies a certificate CN. `None` for a CN that is none of the three kinds.
    pub fn from_common_name(cn: &str) -> Option<Identity> {
        if cn == SERVER_IDENTITY {
            return Some(Identity::Server);
        }
        if let Some(name) = cn.strip_prefix(READER_PREFIX) {
            if validate_device_id(name).is_ok() {
                return Some(Identity::Reader(name.to_string()));
            }
            return None;
        }
        DeviceId::new(cn).ok().map(Identity::Device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_id_is_letters_digits_space_dot_underscore_dash() {
        for ok in ["site1", "Store 12", "a.b_c-d", &"x".repeat(SITE_ID_MAX_LEN)] {
            assert!(is_site_id(ok), "{ok:?}");
        }
        for bad in ["", "   ", "a/b", "ü", &"x".repeat(SITE_ID_MAX_LEN + 1)] {
            assert!(!is_site_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn valid_ids_are_accepted() {
        for s in ["a", "rvm0042", "ABCxyz123", &"x".repeat(64)] {
            assert!(DeviceId::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn invalid_ids_are_rejected_with_the_reason() {
        assert_eq!(DeviceId::new(""), Err(IdError::Empty));
        assert_eq!(DeviceId::new("x".repeat(65)), Err(IdError::TooLong(65)));
        for s in ["a/b", "a+", "#", "a b", "rvm-1", "é", "a\0"] {
            assert!(matches!(DeviceId::new(s), Err(IdError::BadChar(_))), "{s}");
        }
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<DeviceId>("\"ok1\"").is_ok());
        assert!(serde_json::from_str::<DeviceId>("\"not/ok\"").is_err());
    }

    #[test]
    fn identities_are_classified_from_the_common_name() {
        assert_eq!(Identity::from_common_name("fleet-server"), Some(Identity::Server));
        assert_eq!(
            Identity::from_common_name("reader-grafana"),
            Some(Identity::Reader("grafana".into()))
        );
        assert_eq!(
            Identity::from_common_name("rvm7"),
            Some(Identity::Device(DeviceId::new("rvm7").unwrap()))
        );
        assert_eq!(Identity::from_common_name("reader-"), None);
        assert_eq!(Identity::from_common_name("evil/+"), None);
        assert_eq!(Identity::from_common_name("fleet-server2"), None);
    }
}
