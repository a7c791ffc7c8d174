//! The place tables: ZIP codes and area codes by state, derived at build time (see `build.rs`),
//! and the USPS codes of the states and territories routing knows.

include!(concat!(env!("OUT_DIR"), "/places.rs"));

/// The 50 states, the District of Columbia and the inhabited territories, by USPS code.
pub(super) const STATES: [&str; 56] = [
    "AK", "AL", "AR", "AS", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "GU", "HI", "IA", "ID", "IL",
    "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MP", "MS", "MT", "NC", "ND", "NE", "NH",
    "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA", "PR", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VI",
    "VT", "WA", "WI", "WV", "WY",
];

/// The USPS code of a state in [`STATES`] given as two bytes.
fn known(code: [u8; 2]) -> Option<&'static str> {
    STATES.iter().copied().find(|known| known.as_bytes() == code)
}

/// The state an area code's numbers are in (`None` for codes outside the US states and
/// territories, and for codes not tied to a place).
pub(super) fn state_of(area_code: u16) -> Option<&'static str> {
    let index = AREA_CODE_STATES
        .binary_search_by_key(&area_code, |(code, _)| *code)
        .ok()?;
    known(AREA_CODE_STATES[index].1)
}

/// The state of a ZIP code (military and freely associated states' codes have none here).
pub(super) fn state_of_zip(zip: u32) -> Option<&'static str> {
    let index = ZIP_STATES.binary_search_by_key(&zip, |(code, _)| *code).ok()?;
    known(ZIP_STATES[index].1)
}
