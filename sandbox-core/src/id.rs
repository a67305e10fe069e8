//! Validated identifiers. A value of these types has passed its rule; constructing one from a
//! string is the only place the rule is checked.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::validate;

/// Longest sandbox or snapshot id.
pub const ID_MAX_LEN: usize = 128;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`; the error names the field and the rule.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                let check: fn(&str, &str) -> Result<()> = $check;
                check($field, &value)?;
                Ok(Self(value))
            }

            /// Like [`Self::new`], naming `field` in the error instead of the default.
            pub fn new_for_field(field: &str, value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                let check: fn(&str, &str) -> Result<()> = $check;
                check(field, &value)?;
                Ok(Self(value))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// The control plane's session id: a lowercase DNS-1123 label (at most 63 characters), so
    /// it can name Kubernetes objects and label every resource. It is also the idempotency key
    /// of `create`: creating twice for one session id returns the same live sandbox.
    ///
    /// ```
    /// use sandbox_core::SessionId;
    /// assert!(SessionId::new("sess-42").is_ok());
    /// assert!(SessionId::new("Sess_42").is_err());
    /// ```
    SessionId,
    "session_id",
    validate::dns_label
);

id_type!(
    /// A sandbox id. Ids made by this library are `sbx-` followed by 26 random lowercase
    /// base-32 characters (a DNS label); ids a provider made are accepted when they are 1 to
    /// 128 characters of letters, digits, `.`, `_`, `:`, `-`, starting with a letter or digit.
    SandboxId,
    "sandbox_id",
    |field, value| validate::identifier(field, value, ID_MAX_LEN)
);

id_type!(
    /// A snapshot id (same rule as [`SandboxId`]; ids made here start with `snap-`).
    SnapshotId,
    "snapshot_id",
    |field, value| validate::identifier(field, value, ID_MAX_LEN)
);

id_type!(
    /// The key of a warm pool template: a lowercase DNS-1123 label.
    TemplateKey,
    "template_key",
    validate::dns_label
);

impl SandboxId {
    /// A fresh random id: `sbx-` and 26 lowercase base-32 characters (130 random bits).
    pub fn generate() -> Self {
        Self(format!("sbx-{}", random_token()))
    }
}

impl SnapshotId {
    /// A fresh random id: `snap-` and 26 lowercase base-32 characters.
    pub fn generate() -> Self {
        Self(format!("snap-{}", random_token()))
    }
}

/// 26 characters of lowercase RFC 4648 base-32 (without padding) from 130 random bits.
pub(crate) fn random_token() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 26];
    // getrandom fails only when the OS has no entropy source at all; nothing sensible can
    // continue without one, and ids must not silently become predictable.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_dns_labels_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = SandboxId::generate();
            validate::dns_label("id", id.as_str()).unwrap();
            assert!(seen.insert(id));
        }
        SnapshotId::new(SnapshotId::generate().into_string()).unwrap();
    }

    #[test]
    fn parsing_validates_and_names_the_field() {
        let e = SessionId::new("Bad Id").unwrap_err();
        assert_eq!(e.invalid_field(), Some("session_id"));
        let e = SessionId::new_for_field("spec.session_id", "x;y").unwrap_err();
        assert_eq!(e.invalid_field(), Some("spec.session_id"));
        assert!(TemplateKey::new("python-3-12").is_ok());
        assert!(SandboxId::new("../etc").is_err());
        assert!("sbx-1".parse::<SandboxId>().is_ok());
    }

    #[test]
    fn serde_round_trips_and_rejects_invalid() {
        let id = SessionId::new("s-1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"s-1\"");
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SessionId>("\"S 1\"").is_err());
    }
}
