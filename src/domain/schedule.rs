//! A buyer's business hours: one shift per weekday, in the buyer's own time zone.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Days without a shift are closed. A shift whose close is earlier than its open runs past
/// midnight into the next day (an overnight shift); `00:00`–`24:00` is the whole day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    pub time_zone: TimeZoneName,
    #[serde(default)]
    pub monday: Option<Shift>,
    #[serde(default)]
    pub tuesday: Option<Shift>,
    #[serde(default)]
    pub wednesday: Option<Shift>,
    #[serde(default)]
    pub thursday: Option<Shift>,
    #[serde(default)]
    pub friday: Option<Shift>,
    #[serde(default)]
    pub saturday: Option<Shift>,
    #[serde(default)]
    pub sunday: Option<Shift>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawShift", into = "RawShift")]
pub struct Shift {
    open: ClockTime,
    close: ClockTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    open: ClockTime,
    close: ClockTime,
}

impl Shift {
    pub fn new(open: ClockTime, close: ClockTime) -> Result<Self, String> {
        if open == close {
            return Err(format!(
                "open and close are both {open}: use 00:00 to 24:00 for a whole day"
            ));
        }
        if open.minutes == ClockTime::END_OF_DAY {
            return Err("a shift cannot open at 24:00".into());
        }
        Ok(Self { open, close })
    }

    pub fn open(self) -> ClockTime {
        self.open
    }

    pub fn close(self) -> ClockTime {
        self.close
    }

    pub fn is_overnight(self) -> bool {
        self.close < self.open
    }
}

impl TryFrom<RawShift> for Shift {
    type Error = String;

    fn try_from(raw: RawShift) -> Result<Self, Self::Error> {
        Self::new(raw.open, raw.close)
    }
}

impl From<Shift> for RawShift {
    fn from(shift: Shift) -> Self {
        Self {
            open: shift.open,
            close: shift.close,
        }
    }
}

/// A wall-clock time `HH:MM`, from `00:00` to `24:00` (the end of the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime {
    minutes: u16,
}

impl ClockTime {
    const END_OF_DAY: u16 = 24 * 60;

    pub fn minutes_since_midnight(self) -> u16 {
        self.minutes
    }
}

impl TryFrom<String> for ClockTime {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let invalid = || format!("`{text}` is not a time of day HH:MM between 00:00 and 24:00");
        let (hours, minutes) = text.split_once(':').ok_or_else(invalid)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(invalid());
        }
        let hours: u16 = hours.parse().map_err(|_| invalid())?;
        let minutes: u16 = minutes.parse().map_err(|_| invalid())?;
        let total = hours * 60 + minutes;
        if minutes >= 60 || total > Self::END_OF_DAY {
            return Err(invalid());
        }
        Ok(Self { minutes: total })
    }
}

impl From<ClockTime> for String {
    fn from(time: ClockTime) -> Self {
        time.to_string()
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// An IANA time zone name known to the bundled time zone database, e.g. `America/New_York`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TimeZoneName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match jiff::tz::db().get(&name) {
            Ok(zone) => Ok(Self(zone.iana_name().unwrap_or(&name).to_owned())),
            Err(_) => Err(format!(
                "`{name}` is not a known time zone (use an IANA name such as America/New_York)"
            )),
        }
    }
}

impl From<TimeZoneName> for String {
    fn from(name: TimeZoneName) -> Self {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(json: &str) -> Result<BusinessHours, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_week_with_closed_days_and_an_overnight_shift_reads_back() {
        let week = hours(
            r#"{"time_zone":"America/New_York",
                "monday":{"open":"09:00","close":"17:30"},
                "friday":{"open":"20:00","close":"02:00"},
                "sunday":{"open":"00:00","close":"24:00"}}"#,
        )
        .unwrap();
        assert_eq!(week.time_zone.as_str(), "America/New_York");
        assert_eq!(
            week.monday.unwrap().close().minutes_since_midnight(),
            17 * 60 + 30
        );
        assert!(week.friday.unwrap().is_overnight());
        assert!(!week.sunday.unwrap().is_overnight());
        assert_eq!(week.tuesday, None);
        let again: BusinessHours = serde_json::from_value(serde_json::to_value(&week).unwrap()).unwrap();
        assert_eq!(again, week);
    }

    #[test]
    fn bad_times_zones_and_empty_shifts_are_rejected_with_a_reason() {
        let cases = [
            (r#"{"time_zone":"Mars/Olympus"}"#, "not a known time zone"),
            (
                r#"{"time_zone":"UTC","monday":{"open":"9:00","close":"17:00"}}"#,
                "not a time of day",
            ),
            (
                r#"{"time_zone":"UTC","monday":{"open":"09:00","close":"24:01"}}"#,
                "not a time of day",
            ),
            (
                r#"{"time_zone":"UTC","monday":{"open":"09:60","close":"17:00"}}"#,
                "not a time of day",
            ),
            (
                r#"{"time_zone":"UTC","monday":{"open":"09:00","close":"09:00"}}"#,
                "whole day",
            ),
            (
                r#"{"time_zone":"UTC","monday":{"open":"24:00","close":"09:00"}}"#,
                "cannot open at 24:00",
            ),
            (
                r#"{"time_zone":"UTC","mon":{"open":"09:00","close":"17:00"}}"#,
                "unknown field `mon`",
            ),
        ];
        for (json, expected) in cases {
            let err = hours(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
