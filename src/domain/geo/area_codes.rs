//! The place tables: ZIP codes and area codes by state, derived at build time (see `build.rs`),
//! and the USPS codes of the states and territories routing knows.

include!(concat!(env!("OUT_DIR"), "/places.rs"));

/// The 50 states, the District of Columbia and the inhabited territories, by USPS code.
pub(super) const STATES: [(&str, &str); 56] = [
    ("AL", "Alabama"),
    ("AK", "Alaska"),
    ("AS", "American Samoa"),
    ("AZ", "Arizona"),
    ("AR", "Arkansas"),
    ("CA", "California"),
    ("CO", "Colorado"),
    ("CT", "Connecticut"),
    ("DE", "Delaware"),
    ("DC", "District of Columbia"),
    ("FL", "Florida"),
    ("GA", "Georgia"),
    ("GU", "Guam"),
    ("HI", "Hawaii"),
    ("ID", "Idaho"),
    ("IL", "Illinois"),
    ("IN", "Indiana"),
    ("IA", "Iowa"),
    ("KS", "Kansas"),
    ("KY", "Kentucky"),
    ("LA", "Louisiana"),
    ("ME", "Maine"),
    ("MD", "Maryland"),
    ("MA", "Massachusetts"),
    ("MI", "Michigan"),
    ("MN", "Minnesota"),
    ("MS", "Mississippi"),
    ("MO", "Missouri"),
    ("MT", "Montana"),
    ("NE", "Nebraska"),
    ("NV", "Nevada"),
    ("NH", "New Hampshire"),
    ("NJ", "New Jersey"),
    ("NM", "New Mexico"),
    ("NY", "New York"),
    ("NC", "North Carolina"),
    ("ND", "North Dakota"),
    ("MP", "Northern Mariana Islands"),
    ("OH", "Ohio"),
    ("OK", "Oklahoma"),
    ("OR", "Oregon"),
    ("PA", "Pennsylvania"),
    ("PR", "Puerto Rico"),
    ("RI", "Rhode Island"),
    ("SC", "South Carolina"),
    ("SD", "South Dakota"),
    ("TN", "Tennessee"),
    ("TX", "Texas"),
    ("VI", "U.S. Virgin Islands"),
    ("UT", "Utah"),
    ("VT", "Vermont"),
    ("VA", "Virginia"),
    ("WA", "Washington"),
    ("WV", "West Virginia"),
    ("WI", "Wisconsin"),
    ("WY", "Wyoming"),
];

/// The USPS code of a state in [`STATES`] given as two bytes.
fn known(code: [u8; 2]) -> Option<&'static str> {
    STATES
        .iter()
        .map(|(known, _)| *known)
        .find(|known| known.as_bytes() == code)
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
