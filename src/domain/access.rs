//! Who may use the API: roles, the digests secrets are kept as, and the tokens issued through
//! the API (whose secret is shown once, when issued, and never stored).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including changing the plan and issuing tokens.
    Admin,
    /// Reading only: the status API, live events, the dashboard, metrics.
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Supervisor => "supervisor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "supervisor" => Some(Self::Supervisor),
            _ => None,
        }
    }
}

/// The SHA-256 digest of a secret (an RTB key, an API token): what is stored, and what a
/// presented secret is compared with. Equality is constant-time, so neither a lookup nor a
/// comparison tells by its timing how much of a digest matched (and a digest says nothing
/// usable about its secret anyway).
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

// By hand, as `PartialEq` is: equal digests are equal bytes, so they hash alike.
impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The stored form: 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyDigest {}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest([REDACTED])")
    }
}

/// A token issued through the API, as stored and listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ApiToken)]
pub struct IssuedToken {
    pub id: Uuid,
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    pub name: TokenName,
    pub role: Role,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// After this it opens nothing (a rotated token's grace ends here).
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

impl IssuedToken {
    pub fn is_valid_at(&self, at: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| at < expiry)
    }
}

/// What an operator calls a token ("grafana", "night shift"), to tell tokens apart: 1 to 100
/// characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenName(String);

impl TokenName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let name = name.trim().to_owned();
        if (1..=100).contains(&name.chars().count()) && !name.chars().any(char::is_control) {
            Ok(Self(name))
        } else {
            Err("a token's name must be 1 to 100 characters, without control characters".into())
        }
    }
}

/// A new token's secret: 256 random bits, shown once and kept only as its digest. The prefix
/// makes a leaked token easy to recognise (secret scanners, logs).
pub struct TokenSecret(SecretString);

impl TokenSecret {
    pub const PREFIX: &'static str = "sbt_";

    /// The secret made of 256 random bits (see [`crate::fresh`]).
    pub fn of_random(bytes: [u8; 32]) -> Self {
        Self(format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(bytes)).into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.expose())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    #[test]
    fn key_digests_match_the_stored_hex_form() {
        let digest = KeyDigest::of("490530d2-9f24-4be2-894b-a80e971390df");
        let stored = hex::encode(Sha256::digest(b"490530d2-9f24-4be2-894b-a80e971390df"));
        assert_eq!(KeyDigest::from_hex(&stored), Some(digest));
        assert_eq!(digest.to_hex(), stored);
        assert_ne!(KeyDigest::of("another key entirely"), digest);
        assert_eq!(KeyDigest::from_hex("not hex"), None);
    }

    #[test]
    fn secrets_are_random_prefixed_and_never_printed() {
        let (one, two) = (TokenSecret::generate(), TokenSecret::generate());
        assert!(one.expose().starts_with("sbt_"));
        assert_eq!(one.expose().len(), 4 + 43);
        assert_ne!(one.expose(), two.expose());
        assert_eq!(one.digest(), KeyDigest::of(one.expose()));
        assert!(!format!("{one:?}").contains(&one.expose()[4..]));
    }

    #[test]
    fn a_token_opens_nothing_once_revoked_or_expired() {
        let at: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let token = IssuedToken {
            id: Uuid::nil(),
            name: TokenName::try_from("grafana".to_owned()).unwrap(),
            role: Role::Supervisor,
            created_at: at,
            expires_at: Some(at + jiff::SignedDuration::from_secs(60)),
            revoked_at: None,
        };
        assert!(token.is_valid_at(at));
        assert!(!token.is_valid_at(at + jiff::SignedDuration::from_secs(60)));
        let revoked = IssuedToken {
            revoked_at: Some(at),
            expires_at: None,
            ..token
        };
        assert!(!revoked.is_valid_at(at));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            TokenName::try_from(" grafana ".to_owned()).unwrap().as_str(),
            "grafana"
        );
        assert!(TokenName::try_from("".to_owned()).is_err());
        assert!(TokenName::try_from("a\nb".to_owned()).is_err());
        assert!(TokenName::try_from("x".repeat(101)).is_err());
    }
}
