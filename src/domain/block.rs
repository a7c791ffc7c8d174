//! A company's block list: callers refused before any buyer hears of them (known fraud,
//! harassment, test lines, premium-rate ranges), answered with `<Reject>` and recorded as
//! `blocked`.

use std::{collections::HashMap, fmt};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{phone::E164, plan::CompanyId, values::Name};

/// Who a block list entry stops: one number, or every number that starts with a prefix,
/// written with a trailing `*` (`+1900*`: every US premium-rate number).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CallerPattern {
    Number(E164),
    /// `+` and 1 to 14 digits, the first not zero.
    Prefix(String),
}

impl CallerPattern {
    pub fn matches(&self, caller: &E164) -> bool {
        match self {
            Self::Number(number) => number == caller,
            Self::Prefix(prefix) => caller.as_str().starts_with(prefix.as_str()),
        }
    }
}

impl TryFrom<String> for CallerPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let trimmed = text.trim();
        let Some(prefix) = trimmed.strip_suffix('*') else {
            return E164::normalise(trimmed)
                .map(Self::Number)
                .map_err(|e| format!("{e}; a prefix ends with `*`, e.g. +1900*"));
        };
        // Formatting is removed as from a number: `+1 (900) *` is `+1900*`.
        let prefix: String = prefix
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = prefix.strip_prefix('+').unwrap_or_default();
        let valid = prefix.starts_with('+')
            && (1..=14).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self::Prefix(prefix))
        } else {
            Err(format!(
                "`{trimmed}` is not a number prefix: write `+`, a country code and up to 14 digits in \
                 all, then `*` (e.g. +1900*)"
            ))
        }
    }
}

impl From<CallerPattern> for String {
    fn from(pattern: CallerPattern) -> Self {
        pattern.to_string()
    }
}

impl fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => f.write_str(number.as_str()),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// An entry as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockedCaller {
    pub pattern: CallerPattern,
    /// Why, for the next operator to read.
    #[serde(default)]
    pub reason: Option<Name>,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockEntry {
    pub id: Uuid,
    pub company_id: CompanyId,
    #[serde(flatten)]
    pub blocked: BlockedCaller,
    pub created_at: Timestamp,
}

/// Every company's block list, as routing checks it: a number in one probe, prefixes by
/// length (a handful of lengths, however many prefixes).
#[derive(Debug, Default)]
pub struct BlockLists {
    numbers: HashMap<CompanyId, HashMap<E164, BlockedBy>>,
    prefixes: HashMap<CompanyId, PrefixSet>,
}

/// The entry of a block list that refused a caller, as the call's record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedBy {
    pub entry_id: Uuid,
    /// As the operator wrote it: `+14155550666`, `+1900*`.
    pub pattern: String,
    pub reason: Option<String>,
}

impl BlockedBy {
    fn of(entry: &BlockEntry) -> Self {
        let pattern = match &entry.blocked.pattern {
            CallerPattern::Number(number) => number.as_str().to_owned(),
            CallerPattern::Prefix(prefix) => format!("{prefix}*"),
        };
        Self {
            entry_id: entry.id,
            pattern,
            reason: entry.blocked.reason.as_ref().map(|reason| reason.to_string()),
        }
    }
}

#[derive(Debug, Default)]
struct PrefixSet {
    prefixes: HashMap<String, BlockedBy>,
    /// The lengths present, so a caller is looked up once per length.
    lengths: Vec<usize>,
}

impl BlockLists {
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a BlockEntry>) -> Self {
        let mut lists = Self::default();
        for entry in entries {
            match &entry.blocked.pattern {
                CallerPattern::Number(number) => {
                    (lists.numbers.entry(entry.company_id).or_default())
                        .insert(number.clone(), BlockedBy::of(entry));
                }
                CallerPattern::Prefix(prefix) => {
                    let set = lists.prefixes.entry(entry.company_id).or_default();
                    if !set.lengths.contains(&prefix.len()) {
                        set.lengths.push(prefix.len());
                    }
                    set.prefixes.insert(prefix.clone(), BlockedBy::of(entry));
                }
            }
        }
        lists
    }

    /// Whether `company` blocks `caller`.
    pub fn blocks(&self, company: CompanyId, caller: &E164) -> bool {
        self.blocker(company, caller).is_some()
    }

    /// The entry by which `company` blocks `caller`, if it does (its number before a prefix).
    pub fn blocker(&self, company: CompanyId, caller: &E164) -> Option<&BlockedBy> {
        if let Some(entry) = self.numbers.get(&company).and_then(|numbers| numbers.get(caller)) {
            return Some(entry);
        }
        let set = self.prefixes.get(&company)?;
        let number = caller.as_str();
        (set.lengths.iter())
            .filter_map(|&length| number.get(..length))
            .find_map(|prefix| set.prefixes.get(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    fn pattern(text: &str) -> Result<CallerPattern, String> {
        CallerPattern::try_from(text.to_owned())
    }

    fn number(text: &str) -> E164 {
        E164::from_provider(text).unwrap()
    }

    #[test]
    fn patterns_are_numbers_or_prefixes_written_as_operators_write_them() {
        assert_eq!(
            pattern(" +1 (415) 555-0666 ").unwrap(),
            CallerPattern::Number(number("+14155550666"))
        );
        assert_eq!(pattern("+1 900 *").unwrap().to_string(), "+1900*");
        assert_eq!(pattern("+1900*").unwrap(), pattern("+1-900*").unwrap());
        for bad in [
            "",
            "*",
            "+*",
            "1900*",
            "+0900*",
            "+1900x*",
            "+123456789012345*",
            "4155550666",
        ] {
            assert!(pattern(bad).is_err(), "{bad:?}");
        }
        let err = pattern("+15555550100").unwrap_err();
        assert!(err.contains("numbering plan") && err.contains("+1900*"), "{err}");
    }

    #[test]
    fn a_company_blocks_its_numbers_and_prefixes_only() {
        let (acme, other) = (CompanyId::generate(), CompanyId::generate());
        let entry = |company, text: &str| BlockEntry {
            id: Uuid::now_v7(),
            company_id: company,
            blocked: BlockedCaller {
                pattern: pattern(text).unwrap(),
                reason: None,
            },
            created_at: Timestamp::UNIX_EPOCH,
        };
        let entries = [
            entry(acme, "+14155550666"),
            entry(acme, "+1900*"),
            entry(acme, "+4420*"),
            entry(other, "+1212*"),
        ];
        let lists = BlockLists::new(&entries);
        assert!(lists.blocks(acme, &number("+14155550666")));
        assert!(!lists.blocks(acme, &number("+14155550667")));
        assert!(lists.blocks(acme, &number("+19005550100")));
        assert!(lists.blocks(acme, &number("+442071838750")));
        assert!(
            !lists.blocks(acme, &number("+12125550100")),
            "another company's entry"
        );
        assert!(lists.blocks(other, &number("+12125550100")));
        assert!(!lists.blocks(other, &number("+14155550666")));
    }
}
