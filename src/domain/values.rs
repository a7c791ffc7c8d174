//! Small value types of the routing plan, each checked when it is read.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An integer setting with a range and a default, e.g. a ring timeout of 5–600 s, 30 s by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Bounded<const MIN: u32, const MAX: u32, const DEFAULT: u32>(u32);

impl<const MIN: u32, const MAX: u32, const DEFAULT: u32> Bounded<MIN, MAX, DEFAULT> {
    /// The largest value accepted.
    pub const MAX: u32 = MAX;

    pub fn get(self) -> u32 {
        self.0
    }
}

impl<const MIN: u32, const MAX: u32, const DEFAULT: u32> Default for Bounded<MIN, MAX, DEFAULT> {
    fn default() -> Self {
        Self(DEFAULT)
    }
}

impl<const MIN: u32, const MAX: u32, const DEFAULT: u32> TryFrom<u32> for Bounded<MIN, MAX, DEFAULT> {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "{value} is out of range: must be between {MIN} and {MAX}"
            ))
        }
    }
}

impl<const MIN: u32, const MAX: u32, const DEFAULT: u32> From<Bounded<MIN, MAX, DEFAULT>> for u32 {
    fn from(value: Bounded<MIN, MAX, DEFAULT>) -> Self {
        value.0
    }
}

/// How long a buyer's phone may ring (`<Dial timeout>`); Twilio accepts 5–600 s.
pub type RingTimeoutSeconds = Bounded<5, 600, 30>;
/// Connected seconds that make a call a conversion; at most Twilio's 4-hour call limit.
pub type ConversionSeconds = Bounded<0, 14_400, 90>;
/// How long after a call ended its buyer may report it converted: a minute to 90 days, 72 h by
/// default.
pub type ReportWindowSeconds = Bounded<60, 7_776_000, 259_200>;
/// How long after a conversion its buyer may return it: up to 30 days, 90 s by default.
pub type ReturnWindowSeconds = Bounded<0, 2_592_000, 90>;
/// How long a conversion makes the caller a duplicate for the buyer; 0 = accepts duplicates,
/// up to 100 years ("forever").
pub type DedupeSeconds = Bounded<0, 3_153_600_000, 0>;
/// Lower is tried first.
pub type Priority = Bounded<0, 1000, 1>;
/// Share of calls among buyers of equal priority.
pub type Weight = Bounded<1, 10_000, 1>;
/// A cap on calls. At least 1: a buyer that should take no calls is paused, and an absent cap
/// means no limit.
pub type CapLimit = Bounded<1, 1_000_000_000, 1>;
/// How long an RTB bid holds its buyer for the caller.
pub type ReservationSeconds = Bounded<1, 3600, 60>;

/// A human-given name: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    const MAX_CHARS: usize = 200;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Digits a buyer's system expects once it answers (`sendDigits`): `0-9 * #`, `w` = wait 0.5 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SendDigits(String);

impl SendDigits {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SendDigits {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let valid = (1..=32).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'w' | 'W'));
        if valid {
            Ok(Self(text))
        } else {
            Err(format!(
                "`{text}` must be 1 to 32 of 0-9, *, # and w (a half-second wait)"
            ))
        }
    }
}

impl From<SendDigits> for String {
    fn from(digits: SendDigits) -> Self {
        digits.0
    }
}

/// A campaign's RTB key. Only its SHA-256 digest is stored, so a leaked database leaks no key; a
/// lookup hashes the presented key and finds the digest, which also makes the comparison
/// independent of how much of a guessed key was right.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct RtbKey(SecretString);

impl RtbKey {
    /// The key a random UUID spells (see [`crate::fresh`]).
    pub fn of_random(uuid: uuid::Uuid) -> Self {
        Self(uuid.to_string().into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.expose().as_bytes()))
    }
}

impl TryFrom<String> for RtbKey {
    type Error = String;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        if (16..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(key.into()))
        } else {
            Err("an RTB key must be 16 to 200 printable characters without spaces".into())
        }
    }
}

impl fmt::Debug for RtbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RtbKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    #[test]
    fn bounded_settings_default_and_reject_out_of_range() {
        assert_eq!(RingTimeoutSeconds::default().get(), 30);
        assert_eq!(ConversionSeconds::default().get(), 90);
        let err = serde_json::from_str::<RingTimeoutSeconds>("3").unwrap_err();
        assert!(err.to_string().contains("between 5 and 600"), "{err}");
        assert!(serde_json::from_str::<Weight>("0").is_err());
        assert!(serde_json::from_str::<Weight>("-1").is_err());
        assert_eq!(serde_json::from_str::<Priority>("0").unwrap().get(), 0);
    }

    #[test]
    fn names_are_trimmed_and_must_say_something() {
        assert_eq!(
            serde_json::from_str::<Name>(r#""  Acme  ""#).unwrap().as_str(),
            "Acme"
        );
        for bad in [r#""""#, r#""   ""#, r#""a\u0007b""#] {
            assert!(serde_json::from_str::<Name>(bad).is_err(), "{bad}");
        }
        let long = format!("\"{}\"", "x".repeat(201));
        assert!(serde_json::from_str::<Name>(&long).is_err());
    }

    #[test]
    fn rtb_keys_are_hashed_and_never_printed() {
        let key = RtbKey::try_from("490530d2-9f24-4be2-894b-a80e971390df".to_owned()).unwrap();
        assert_eq!(key.sha256_hex().len(), 64);
        assert_ne!(key.sha256_hex(), RtbKey::generate().sha256_hex());
        assert_eq!(format!("{key:?}"), "RtbKey([REDACTED])");
        assert!(RtbKey::try_from("short".to_owned()).is_err());
        assert!(RtbKey::try_from("has a space in the middle".to_owned()).is_err());
    }

    #[test]
    fn send_digits_allow_dtmf_and_waits_only() {
        assert!(SendDigits::try_from("ww1234#".to_owned()).is_ok());
        assert!(SendDigits::try_from("12a".to_owned()).is_err());
        assert!(SendDigits::try_from(String::new()).is_err());
    }
}
