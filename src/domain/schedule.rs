//! A buyer's business hours: one shift per weekday, in the buyer's own time zone.

use std::fmt;

use jiff::{Timestamp, civil::Weekday, tz::TimeZone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Days without a shift are closed. A shift whose close is earlier than its open runs past
/// midnight into the next day (an overnight shift); `00:00`–`24:00` is the whole day. Times
/// are wall-clock times in the buyer's time zone, so a 09:00 opening stays at 09:00 local
/// across a daylight-saving change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
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

impl BusinessHours {
    pub fn shift(&self, day: Weekday) -> Option<Shift> {
        match day {
            Weekday::Monday => self.monday,
            Weekday::Tuesday => self.tuesday,
            Weekday::Wednesday => self.wednesday,
            Weekday::Thursday => self.thursday,
            Weekday::Friday => self.friday,
            Weekday::Saturday => self.saturday,
            Weekday::Sunday => self.sunday,
        }
    }

    /// Whether the buyer takes calls at `at`: today's shift has begun and not closed, or
    /// yesterday's overnight shift is still running. Opening minute included, closing excluded.
    pub fn is_open(&self, at: Timestamp, zone: &TimeZone) -> bool {
        let local = zone.to_datetime(at);
        let minute = u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let today = self.shift(local.weekday()).is_some_and(|shift| {
            minute >= shift.open.minutes && (shift.is_overnight() || minute < shift.close.minutes)
        });
        let yesterday = self
            .shift(local.weekday().previous())
            .is_some_and(|shift| shift.is_overnight() && minute < shift.close.minutes);
        today || yesterday
    }
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

/// An IANA time zone known to the bundled time zone database, e.g. `America/New_York`. The
/// zone's rules are looked up once, when the name is read, not at every routing decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName {
    name: String,
    zone: TimeZone,
}

impl TimeZoneName {
    pub fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            zone: TimeZone::UTC,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }
}

impl Default for TimeZoneName {
    fn default() -> Self {
        Self::utc()
    }
}

impl PartialEq for TimeZoneName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TimeZoneName {}

impl TryFrom<String> for TimeZoneName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match jiff::tz::db().get(&name) {
            Ok(zone) => Ok(Self {
                name: zone.iana_name().unwrap_or(&name).to_owned(),
                zone,
            }),
            Err(_) => Err(format!(
                "`{name}` is not a known time zone (use an IANA name such as America/New_York)"
            )),
        }
    }
}

impl From<TimeZoneName> for String {
    fn from(name: TimeZoneName) -> Self {
        name.name
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
            r#"{"monday":{"open":"09:00","close":"17:30"},
                "friday":{"open":"20:00","close":"02:00"},
                "sunday":{"open":"00:00","close":"24:00"}}"#,
        )
        .unwrap();
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
            (
                r#"{"monday":{"open":"9:00","close":"17:00"}}"#,
                "not a time of day",
            ),
            (
                r#"{"monday":{"open":"09:00","close":"24:01"}}"#,
                "not a time of day",
            ),
            (
                r#"{"monday":{"open":"09:60","close":"17:00"}}"#,
                "not a time of day",
            ),
            (r#"{"monday":{"open":"09:00","close":"09:00"}}"#, "whole day"),
            (
                r#"{"monday":{"open":"24:00","close":"09:00"}}"#,
                "cannot open at 24:00",
            ),
            (
                r#"{"mon":{"open":"09:00","close":"17:00"}}"#,
                "unknown field `mon`",
            ),
        ];
        for (json, expected) in cases {
            let err = hours(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let zone: Result<TimeZoneName, _> = serde_json::from_str(r#""Mars/Olympus""#);
        assert!(zone.unwrap_err().to_string().contains("not a known time zone"));
    }

    fn zone(name: &str) -> TimeZoneName {
        TimeZoneName::try_from(name.to_owned()).unwrap()
    }

    /// Whether `week` is open at a local wall-clock time in `zone`.
    fn open_at(week: &BusinessHours, zone_name: &str, local: &str) -> bool {
        let zone = zone(zone_name);
        let at = local
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned_datetime(zone.zone().clone())
            .unwrap()
            .timestamp();
        week.is_open(at, zone.zone())
    }

    #[test]
    fn a_shift_opens_on_its_opening_minute_and_closes_on_its_closing_minute() {
        // 2026-11-23 is a Monday.
        let week = hours(r#"{"monday":{"open":"09:00","close":"17:30"}}"#).unwrap();
        let ny = "America/New_York";
        assert!(!open_at(&week, ny, "2026-11-23T08:59:59"));
        assert!(open_at(&week, ny, "2026-11-23T09:00"));
        assert!(open_at(&week, ny, "2026-11-23T17:29:59"));
        assert!(!open_at(&week, ny, "2026-11-23T17:30"));
        assert!(!open_at(&week, ny, "2026-11-24T10:00"), "Tuesday has no shift");
    }

    #[test]
    fn an_overnight_shift_runs_into_the_next_day_even_a_closed_one() {
        // Friday 20:00 to Saturday 02:00; Saturday itself has no shift.
        let week = hours(r#"{"friday":{"open":"20:00","close":"02:00"}}"#).unwrap();
        assert!(!open_at(&week, "UTC", "2026-11-27T19:59"));
        assert!(open_at(&week, "UTC", "2026-11-27T23:59"));
        assert!(open_at(&week, "UTC", "2026-11-28T00:00"));
        assert!(open_at(&week, "UTC", "2026-11-28T01:59"));
        assert!(!open_at(&week, "UTC", "2026-11-28T02:00"));
        assert!(
            !open_at(&week, "UTC", "2026-11-26T23:00"),
            "Thursday night is closed"
        );
        let whole = hours(r#"{"sunday":{"open":"00:00","close":"24:00"}}"#).unwrap();
        assert!(open_at(&whole, "UTC", "2026-11-29T00:00"));
        assert!(open_at(&whole, "UTC", "2026-11-29T23:59:59"));
        assert!(!open_at(&whole, "UTC", "2026-11-30T00:00"));
    }

    #[test]
    fn hours_are_the_buyers_local_time_whatever_the_instant_in_utc() {
        let week = hours(r#"{"monday":{"open":"09:00","close":"17:00"}}"#).unwrap();
        let instant: Timestamp = "2026-11-23T14:30:00Z".parse().unwrap();
        // 09:30 in New York, 06:30 in Los Angeles, 23:30 in Tokyo.
        assert!(week.is_open(instant, zone("America/New_York").zone()));
        assert!(!week.is_open(instant, zone("America/Los_Angeles").zone()));
        assert!(!week.is_open(instant, zone("Asia/Tokyo").zone()));
    }

    #[test]
    fn opening_stays_at_local_time_across_a_daylight_saving_change() {
        // New York moved its clocks back on Sunday 2026-11-01: 09:00 local was 13:00 UTC on the
        // Monday before and 14:00 UTC on the Monday after.
        let week = hours(r#"{"monday":{"open":"09:00","close":"17:00"}}"#).unwrap();
        let ny = zone("America/New_York");
        let at = |utc: &str| week.is_open(utc.parse().unwrap(), ny.zone());
        assert!(at("2026-10-26T13:00:00Z"));
        assert!(!at("2026-11-02T13:00:00Z"));
        assert!(at("2026-11-02T14:00:00Z"));
        // A shift starting inside the skipped hour opens when the clocks jump (2026-03-08, 02:00
        // became 03:00).
        let sunday = hours(r#"{"sunday":{"open":"02:30","close":"05:00"}}"#).unwrap();
        assert!(!sunday.is_open("2026-03-08T06:59:59Z".parse().unwrap(), ny.zone()));
        assert!(sunday.is_open("2026-03-08T07:00:00Z".parse().unwrap(), ny.zone()));
    }
}
