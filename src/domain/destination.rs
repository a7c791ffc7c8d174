//! Where a buyer takes calls: a phone number or a SIP address.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::phone::{E164, PhoneError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    Phone(E164),
    Sip(SipUri),
}

/// What a SIP buyer's endpoint asks a caller for (digest authentication), as `<Sip username
/// password>` sends it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipAuth {
    pub username: SipCredential,
    /// Shown only to admin tokens (others read `********`).
    pub password: SipCredential,
}

// The password never reaches a log.
impl fmt::Debug for SipAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipAuth")
            .field("username", &self.username.0)
            .field("password", &"…")
            .finish()
    }
}

impl SipAuth {
    /// As readers who may not see secrets get it.
    pub fn redacted(&self) -> Self {
        Self {
            username: self.username.clone(),
            password: SipCredential(REDACTED.to_owned()),
        }
    }
}

/// What a secret reads as for those who may not see it.
pub const REDACTED: &str = "********";

/// A SIP username or password: 1 to 128 visible ASCII characters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SipCredential(String);

impl SipCredential {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SipCredential {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(text))
        } else {
            Err("must be 1 to 128 visible ASCII characters".into())
        }
    }
}

impl From<SipCredential> for String {
    fn from(credential: SipCredential) -> Self {
        credential.0
    }
}

/// A `sip:user@host` (or `sips:`) address, as `<Dial><Sip>` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error("`{0}` is not a SIP address of the form sip:user@host")]
    Sip(String),
}

const MAX_SIP_URI_LEN: usize = 255;

impl SipUri {
    pub fn parse(text: &str) -> Result<Self, DestinationError> {
        let invalid = || DestinationError::Sip(text.to_owned());
        let (scheme, rest) = text.split_once(':').ok_or_else(invalid)?;
        let scheme = scheme.to_ascii_lowercase();
        // Characters that would break out of the TwiML text or the URI itself.
        let allowed = |c: char| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"');
        if !matches!(scheme.as_str(), "sip" | "sips")
            || text.len() > MAX_SIP_URI_LEN
            || !rest.chars().all(allowed)
        {
            return Err(invalid());
        }
        // user@host, optionally followed by ;params or ?headers, which the provider passes on.
        let address = rest.split([';', '?']).next().unwrap_or_default();
        match address.split_once('@') {
            Some((user, host)) if !user.is_empty() && !host.is_empty() && !host.contains('@') => {
                Ok(Self(format!("{scheme}:{rest}")))
            }
            _ => Err(invalid()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Destination {
    pub fn parse(text: &str) -> Result<Self, DestinationError> {
        let trimmed = text.trim();
        let lower = trimmed.get(..5).unwrap_or(trimmed).to_ascii_lowercase();
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            SipUri::parse(trimmed).map(Self::Sip)
        } else {
            Ok(Self::Phone(E164::normalise(trimmed)?))
        }
    }
}

impl Destination {
    /// A destination read back from the store: it was fully checked when written, so a phone
    /// number is only checked for shape (see [`E164::from_provider`]).
    pub fn from_stored(text: &str) -> Result<Self, DestinationError> {
        if text.starts_with("sip:") || text.starts_with("sips:") {
            SipUri::parse(text).map(Self::Sip)
        } else {
            Ok(Self::Phone(E164::from_provider(text)?))
        }
    }
}

impl TryFrom<String> for Destination {
    type Error = DestinationError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Destination> for String {
    fn from(destination: Destination) -> Self {
        destination.to_string()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phone(number) => f.write_str(number.as_str()),
            Self::Sip(uri) => f.write_str(uri.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_destinations_are_normalised() {
        assert_eq!(
            Destination::parse("+1 (415) 555-0101").unwrap(),
            Destination::Phone(E164::normalise("+14155550101").unwrap())
        );
    }

    #[test]
    fn sip_destinations_keep_their_parameters() {
        for (input, stored) in [
            ("sip:agent@pbx.example.com", "sip:agent@pbx.example.com"),
            (
                "SIP:agent@10.0.0.7:5060;transport=tls",
                "sip:agent@10.0.0.7:5060;transport=tls",
            ),
            (
                "sips:queue-7@buyer.example?X-Campaign=7",
                "sips:queue-7@buyer.example?X-Campaign=7",
            ),
        ] {
            assert_eq!(Destination::parse(input).unwrap().to_string(), stored);
        }
    }

    #[test]
    fn malformed_sip_addresses_are_rejected() {
        for bad in [
            "sip:pbx.example.com",
            "sip:@pbx.example.com",
            "sip:agent@",
            "sip:agent@pbx example.com",
            "sip:a<b>@pbx.example.com",
            "sip:\"x\"@host",
        ] {
            assert!(
                matches!(Destination::parse(bad), Err(DestinationError::Sip(_))),
                "{bad:?} should be rejected"
            );
        }
        let long = format!("sip:{}@example.com", "a".repeat(300));
        assert!(Destination::parse(&long).is_err());
    }

    #[test]
    fn anything_else_must_be_a_phone_number() {
        assert!(matches!(
            Destination::parse("http://buyer.example"),
            Err(DestinationError::Phone(_))
        ));
    }
}
