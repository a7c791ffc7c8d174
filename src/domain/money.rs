//! Amounts of money per conversion, kept in integer cents so sums never drift.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money {
    cents: i64,
}

/// Far above any per-call payout; it only stops absurd input.
const MAX_CENTS: i64 = 100_000_000;

impl Money {
    pub const ZERO: Money = Money { cents: 0 };

    pub fn from_cents(cents: i64) -> Result<Self, String> {
        if (0..=MAX_CENTS).contains(&cents) {
            Ok(Self { cents })
        } else {
            Err(format!("an amount must be between 0 and {}.00", MAX_CENTS / 100))
        }
    }

    pub fn cents(self) -> i64 {
        self.cents
    }

    /// Parses a decimal amount such as `10`, `10.5` or `10.25`; no more than two decimals.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not an amount with at most two decimals");
        let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 12 || !digits(whole) || fraction.len() > 2 || !digits(fraction) {
            return Err(invalid());
        }
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
        Self::from_cents(whole * 100 + fraction)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

/// A JSON number (`10.5`), the form API clients and plan files write by hand.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.cents as f64 / 100.0)
    }
}

/// A sum of amounts (a month of a campaign's revenue): unlike one amount, it has no ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Total {
    cents: i64,
}

impl Total {
    pub fn from_cents(cents: i64) -> Self {
        Self { cents }
    }
}

/// A JSON number, as [`Money`] is written.
impl Serialize for Total {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.cents as f64 / 100.0)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount such as 10 or 12.50")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                Money::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Money::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                // Rust prints the shortest text that reads back as `v`: the digits the user wrote.
                Money::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_exactly() {
        for (json, cents) in [
            ("10", 1000),
            ("10.5", 1050),
            ("0.07", 7),
            ("\"12.34\"", 1234),
            ("19.99", 1999),
        ] {
            let money: Money = serde_json::from_str(json).unwrap();
            assert_eq!(money.cents(), cents, "{json}");
        }
    }

    #[test]
    fn amounts_are_written_as_numbers() {
        assert_eq!(
            serde_json::to_string(&Money::from_cents(1050).unwrap()).unwrap(),
            "10.5"
        );
        assert_eq!(Money::from_cents(1005).unwrap().to_string(), "10.05");
    }

    #[test]
    fn fractions_of_cents_negative_and_absurd_amounts_are_rejected() {
        for json in ["10.005", "-1", "\"ten\"", "1e9", "\"\"", "\".5\""] {
            assert!(serde_json::from_str::<Money>(json).is_err(), "{json}");
        }
    }
}
