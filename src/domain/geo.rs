//! Where a caller is, as licensing sees it: the US state (from the provider's `FromState`, else
//! the number's area code) and the area code itself; and which callers a buyer licensed only in
//! some states, or buying only some area codes, may take.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{call::Caller, phone::E164};

/// A US state, the District of Columbia or a US territory, by its USPS code (`CA`, `DC`, `PR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UsState(u8);

impl UsState {
    /// Reads a USPS code, in either case.
    pub fn parse(code: &str) -> Result<Self, String> {
        let upper = code.trim().to_ascii_uppercase();
        Self::of_code(&upper).ok_or_else(|| format!("`{}` is not a US state's two-letter code", code.trim()))
    }

    fn of_code(code: &str) -> Option<Self> {
        let index = area_codes::STATES.iter().position(|known| *known == code)?;
        u8::try_from(index).ok().map(Self)
    }

    /// The state a US ZIP code (`94103`, or ZIP+4 `94103-1234`) is in.
    pub fn of_zip(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let five = text.split_once('-').map_or(text, |(five, _)| five);
        let well_formed = five.len() == 5 && five.bytes().all(|b| b.is_ascii_digit());
        let zip = match five.parse::<u32>() {
            Ok(zip) if well_formed => zip,
            _ => return Err(format!("`{text}` is not a ZIP code: five digits, e.g. 94103")),
        };
        (area_codes::state_of_zip(zip).and_then(Self::of_code))
            .ok_or_else(|| format!("no US state has the ZIP code {five}"))
    }

    pub fn code(self) -> &'static str {
        area_codes::STATES[usize::from(self.0)]
    }
}

impl TryFrom<String> for UsState {
    type Error = String;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<UsState> for String {
    fn from(state: UsState) -> Self {
        state.code().to_owned()
    }
}

impl fmt::Display for UsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A North American area code (NPA): three digits, the first 2–9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AreaCode(u16);

impl AreaCode {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let valid =
            text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with(['0', '1']);
        match text.parse() {
            Ok(code) if valid => Ok(Self(code)),
            _ => Err(format!(
                "`{text}` is not an area code: three digits, the first 2 to 9"
            )),
        }
    }

    /// The area code of a North American number (`+1` and ten digits).
    pub fn of(number: &E164) -> Option<Self> {
        let national = number.as_str().strip_prefix("+1")?;
        if national.len() != 10 {
            return None;
        }
        Self::parse(&national[..3]).ok()
    }

    /// The US state its numbers are in; `None` for Canada, the Caribbean, and codes not tied to
    /// a place (toll-free, 5XX, 900).
    pub fn state(self) -> Option<UsState> {
        area_codes::state_of(self.0).and_then(UsState::of_code)
    }
}

impl TryFrom<String> for AreaCode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<AreaCode> for String {
    fn from(code: AreaCode) -> Self {
        code.to_string()
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// Where a caller is: what is known of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallerPlace {
    pub state: Option<UsState>,
    pub area_code: Option<AreaCode>,
}

impl CallerPlace {
    /// The caller's place from the provider's own reading of it (`FromState`, for US callers a
    /// USPS code), else from the number's area code.
    pub fn of(caller: &Caller, from_state: Option<&str>) -> Self {
        let area_code = caller.number().and_then(AreaCode::of);
        let state = (from_state.and_then(|text| UsState::parse(text).ok()))
            .or_else(|| area_code.and_then(AreaCode::state));
        Self { state, area_code }
    }
}

/// The states a buyer takes callers from: at least one, each once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<UsState>", into = "Vec<UsState>")]
pub struct StateList(BTreeSet<UsState>);

impl StateList {
    pub fn contains(&self, state: UsState) -> bool {
        self.0.contains(&state)
    }
}

impl TryFrom<Vec<UsState>> for StateList {
    type Error = String;

    fn try_from(states: Vec<UsState>) -> Result<Self, Self::Error> {
        if states.is_empty() {
            return Err(
                "list at least one state, or leave `states` out to take callers from anywhere".into(),
            );
        }
        let count = states.len();
        let set: BTreeSet<UsState> = states.into_iter().collect();
        if set.len() != count {
            return Err("a state is listed twice".into());
        }
        Ok(Self(set))
    }
}

impl From<StateList> for Vec<UsState> {
    fn from(states: StateList) -> Self {
        states.0.into_iter().collect()
    }
}

/// Area codes a buyer takes callers from (`allow`, when any are listed) and never takes them
/// from (`deny`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AreaCodeRule {
    pub allow: BTreeSet<AreaCode>,
    pub deny: BTreeSet<AreaCode>,
}

impl AreaCodeRule {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Whether a buyer with these limits may take a caller from `place`. A caller whose state (or
/// area code) is not known is taken only by buyers that do not limit it: licensing is not a
/// guess.
pub fn admits(states: Option<&StateList>, area_codes: &AreaCodeRule, place: &CallerPlace) -> bool {
    let state_ok = states.is_none_or(|states| place.state.is_some_and(|s| states.contains(s)));
    let allowed = area_codes.allow.is_empty()
        || place
            .area_code
            .is_some_and(|code| area_codes.allow.contains(&code));
    let denied = place
        .area_code
        .is_some_and(|code| area_codes.deny.contains(&code));
    state_ok && allowed && !denied
}

mod area_codes;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn place(state: Option<&str>, area: Option<&str>) -> CallerPlace {
        CallerPlace {
            state: state.map(|s| UsState::parse(s).unwrap()),
            area_code: area.map(|a| AreaCode::parse(a).unwrap()),
        }
    }

    #[test]
    fn states_are_usps_codes_in_either_case() {
        assert_eq!(UsState::parse("ca").unwrap().code(), "CA");
        assert_eq!(UsState::parse(" TX ").unwrap().code(), "TX");
        assert_eq!(UsState::parse("DC").unwrap().code(), "DC");
        assert_eq!(UsState::parse("PR").unwrap().code(), "PR");
        for bad in ["XX", "", "Cal", "ON", "C"] {
            assert!(UsState::parse(bad).is_err(), "{bad:?}");
        }
        let err = serde_json::from_value::<StateList>(json!(["CA", "ZZ"])).unwrap_err();
        assert!(err.to_string().contains("`ZZ` is not a US state"), "{err}");
        assert!(serde_json::from_value::<StateList>(json!([])).is_err());
        assert!(serde_json::from_value::<StateList>(json!(["CA", "ca"])).is_err());
    }

    #[test]
    fn area_codes_come_from_north_american_numbers_only() {
        let number = |text: &str| E164::from_provider(text).unwrap();
        assert_eq!(AreaCode::of(&number("+14155550100")).unwrap().to_string(), "415");
        assert_eq!(AreaCode::of(&number("+442071838750")), None);
        assert_eq!(AreaCode::of(&number("+1415555010")), None);
        for bad in ["015", "115", "41", "4155", "abc"] {
            assert!(AreaCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_area_code_tells_its_state() {
        let state = |code: &str| AreaCode::parse(code).unwrap().state().map(UsState::code);
        assert_eq!(state("415"), Some("CA"));
        assert_eq!(state("212"), Some("NY"));
        assert_eq!(state("713"), Some("TX"));
        assert_eq!(state("305"), Some("FL"));
        assert_eq!(state("202"), Some("DC"));
        assert_eq!(state("787"), Some("PR"));
        assert_eq!(state("416"), None, "Toronto is not in a US state");
        assert_eq!(state("800"), None, "toll-free is nowhere");
    }

    #[test]
    fn a_zip_code_tells_its_state() {
        assert_eq!(UsState::of_zip("94103").unwrap().code(), "CA");
        assert_eq!(UsState::of_zip("10001-1234").unwrap().code(), "NY");
        assert_eq!(UsState::of_zip("00501").unwrap().code(), "NY");
        assert_eq!(UsState::of_zip("00901").unwrap().code(), "PR");
        for bad in ["9410", "941030", "abcde", "", "94103x"] {
            let err = UsState::of_zip(bad).unwrap_err();
            assert!(err.contains("not a ZIP code"), "{bad:?}: {err}");
        }
        assert!(UsState::of_zip("00000").unwrap_err().contains("no US state"));
    }

    #[test]
    fn the_providers_state_wins_over_the_area_code() {
        let caller = Caller::from_provider("+14155550123");
        assert_eq!(
            CallerPlace::of(&caller, Some("NV")),
            place(Some("NV"), Some("415"))
        );
        assert_eq!(CallerPlace::of(&caller, None), place(Some("CA"), Some("415")));
        // Twilio sends an empty or a foreign region: the area code decides.
        assert_eq!(CallerPlace::of(&caller, Some("")), place(Some("CA"), Some("415")));
        assert_eq!(
            CallerPlace::of(&caller, Some("ON")),
            place(Some("CA"), Some("415"))
        );
        let withheld = Caller::from_provider("anonymous");
        assert_eq!(CallerPlace::of(&withheld, None), CallerPlace::default());
        assert_eq!(CallerPlace::of(&withheld, Some("TX")), place(Some("TX"), None));
    }

    #[test]
    fn a_buyer_takes_callers_from_its_states_and_area_codes() {
        let states: StateList = serde_json::from_value(json!(["CA", "TX"])).unwrap();
        let none = AreaCodeRule::default();
        assert!(admits(Some(&states), &none, &place(Some("CA"), Some("415"))));
        assert!(!admits(Some(&states), &none, &place(Some("NY"), Some("212"))));
        assert!(
            !admits(Some(&states), &none, &CallerPlace::default()),
            "an unknown state is not a licensed one"
        );
        assert!(admits(None, &none, &CallerPlace::default()));

        let rule: AreaCodeRule = serde_json::from_value(json!({"deny": ["212"]})).unwrap();
        assert!(!admits(None, &rule, &place(Some("NY"), Some("212"))));
        assert!(admits(None, &rule, &place(Some("NY"), Some("917"))));
        assert!(admits(None, &rule, &CallerPlace::default()));
        let rule: AreaCodeRule = serde_json::from_value(json!({"allow": ["415", "650"]})).unwrap();
        assert!(admits(None, &rule, &place(Some("CA"), Some("650"))));
        assert!(!admits(None, &rule, &place(Some("CA"), Some("213"))));
        assert!(!admits(None, &rule, &CallerPlace::default()));
    }
}
