//! Phone numbers in E.164 form.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form: `+`, a country code, and at most 15 digits in all.
///
/// Two ways in, because the two sources deserve different trust:
/// - [`E164::normalise`] for what operators type: formatting is removed and the number is checked
///   against the numbering plan, so a typo is caught when the plan is edited, not when a call fails.
/// - [`E164::from_provider`] for what the telephony provider sends, and for what the store gives
///   back: already E.164, checked for shape only (cheap; a call to a number the metadata does not
///   know must still route; and stored data stays readable whatever the metadata says later).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("`{0}` has no country code: write it in international form, e.g. +14155550100")]
    NoCountryCode(String),
    #[error("`{0}` is not a phone number")]
    NotANumber(String),
    #[error("`{0}` is not a valid number in its country's numbering plan")]
    Invalid(String),
}

impl E164 {
    /// Normalises an operator-entered number such as `+1 (415) 555-0100` to `+14155550100`.
    pub fn normalise(input: &str) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if !trimmed.starts_with('+') {
            return Err(if phonenumber::is_viable(trimmed) {
                PhoneError::NoCountryCode(trimmed.to_owned())
            } else {
                PhoneError::NotANumber(trimmed.to_owned())
            });
        }
        let number =
            phonenumber::parse(None, trimmed).map_err(|_| PhoneError::NotANumber(trimmed.to_owned()))?;
        if number.extension().is_some() || !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid(trimmed.to_owned()));
        }
        Self::from_provider(&number.format().mode(phonenumber::Mode::E164).to_string())
            .map_err(|_| PhoneError::Invalid(trimmed.to_owned()))
    }

    /// Accepts exactly `+` followed by 2 to 15 digits, the first not zero.
    pub fn from_provider(text: &str) -> Result<Self, PhoneError> {
        Self::digits_of(text).map(|_| Self(text.to_owned()))
    }

    /// What [`E164::from_provider`] accepts, as [`E164::digits`], without making a number of
    /// it: millions of stored numbers are read so at start-up.
    pub fn digits_of(text: &str) -> Result<u64, PhoneError> {
        let not_a_number = || PhoneError::NotANumber(text.to_owned());
        let digits = text.strip_prefix('+').ok_or_else(not_a_number)?;
        let well_formed = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return Err(not_a_number());
        }
        digits.parse().map_err(|_| not_a_number())
    }

    /// The digits as one integer. At most 15 digits, the first not zero: no two numbers share
    /// it, and it fits a `u64` (the de-dupe index's key).
    pub fn digits(&self) -> u64 {
        // Checked on the way in.
        self.0[1..].parse().unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number a call was made to, from `To` as the provider sent it: the number itself, or
    /// for a call arriving through a SIP domain (`sip:+18005550100@example.sip.twilio.com`),
    /// the URI's user part, with or without its `+`.
    pub fn of_called(to: &str) -> Option<Self> {
        let to = to.trim();
        let lower = to.get(..5).unwrap_or(to).to_ascii_lowercase();
        let Some(rest) = ["sip:", "sips:"]
            .iter()
            .find_map(|scheme| lower.starts_with(scheme).then(|| &to[scheme.len()..]))
        else {
            return Self::from_provider(to).ok();
        };
        let user = rest.split(['@', ';', '?']).next()?;
        Self::from_provider(user)
            .or_else(|_| Self::from_provider(&format!("+{user}")))
            .ok()
    }
}

impl TryFrom<String> for E164 {
    type Error = PhoneError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::normalise(&text)
    }
}

impl From<E164> for String {
    fn from(number: E164) -> Self {
        number.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_through_a_sip_domain_was_made_to_its_uris_user_part() {
        let number = |to: &str| E164::of_called(to).map(|n| n.as_str().to_owned());
        assert_eq!(number("+18005550100").as_deref(), Some("+18005550100"));
        assert_eq!(
            number("sip:+18005550100@acme.sip.twilio.com").as_deref(),
            Some("+18005550100")
        );
        assert_eq!(
            number("sip:18005550100@acme.sip.twilio.com;transport=tls").as_deref(),
            Some("+18005550100")
        );
        assert_eq!(
            number("SIPS:+18005550100@acme.sip.twilio.com").as_deref(),
            Some("+18005550100")
        );
        for not_a_number in [
            "sip:sales@acme.sip.twilio.com",
            "sip:@acme.example",
            "client:alice",
            "",
            "sip:",
        ] {
            assert_eq!(number(not_a_number), None, "{not_a_number}");
        }
    }

    #[test]
    fn operator_formatting_is_normalised() {
        for input in [
            "+14155550100",
            "+1 (415) 555-0100",
            " +1.415.555.0100 ",
            "+1-415-555-0100",
        ] {
            assert_eq!(
                E164::normalise(input).unwrap().as_str(),
                "+14155550100",
                "{input}"
            );
        }
        assert_eq!(
            E164::normalise("+44 20 7183 8750").unwrap().as_str(),
            "+442071838750"
        );
    }

    #[test]
    fn national_numbers_are_rejected_with_a_hint() {
        let err = E164::normalise("(415) 555-0100").unwrap_err();
        assert_eq!(err, PhoneError::NoCountryCode("(415) 555-0100".into()));
        assert!(err.to_string().contains("+14155550100"));
    }

    #[test]
    fn numbers_outside_the_numbering_plan_are_rejected() {
        assert!(matches!(
            E164::normalise("+15555550100"),
            Err(PhoneError::Invalid(_))
        ));
        assert!(matches!(
            E164::normalise("+1415555010"),
            Err(PhoneError::Invalid(_))
        ));
        assert!(matches!(
            E164::normalise("+1 415 555 0100 ext. 12"),
            Err(PhoneError::Invalid(_))
        ));
        assert!(matches!(E164::normalise("pizza"), Err(PhoneError::NotANumber(_))));
        assert!(matches!(E164::normalise(""), Err(PhoneError::NotANumber(_))));
    }

    #[test]
    fn provider_numbers_are_checked_for_shape_only() {
        assert!(E164::from_provider("+15555550100").is_ok());
        for bad in [
            "anonymous",
            "",
            "client:alice",
            "+",
            "+0123",
            "14155550100",
            "+1415555010012345",
            "+1 415",
        ] {
            assert!(E164::from_provider(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deserialising_normalises() {
        let number: E164 = serde_json::from_str(r#""+1 (415) 555-0100""#).unwrap();
        assert_eq!(serde_json::to_string(&number).unwrap(), r#""+14155550100""#);
    }
}
