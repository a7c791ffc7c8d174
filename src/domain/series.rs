//! Calls over time, for charts: per campaign, counts in whole UTC minutes or hours.
//!
//! The database counts the calls of each non-empty bucket; this module decides which buckets a
//! request covers and lays the counts out as one dense series per campaign, so a chart needs
//! no arithmetic on dates: value `i` is the bucket starting `i` buckets after `from`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::plan::CampaignId;

/// How long each point of a series lasts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    #[default]
    Minute,
    Hour,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
        }
    }

    /// What a request that names no `from` covers: the last hour by minute, the last day by
    /// hour.
    pub fn default_span(self) -> SignedDuration {
        match self {
            Self::Minute => SignedDuration::from_hours(1),
            Self::Hour => SignedDuration::from_hours(24),
        }
    }
}

/// At most this many buckets in one answer (a day by minute, two months by hour): the answer
/// stays small enough for a page to fetch every few seconds.
pub const MAX_BUCKETS: i64 = 1_440;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("must be before `to`")]
    Empty,
    #[error("covers more than {MAX_BUCKETS} buckets; ask for a shorter range or a longer bucket")]
    TooLong,
    #[error("is out of range")]
    OutOfRange,
}

/// A time range rounded out to whole buckets: `from` down, `to` up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    bucket: Bucket,
    from: Timestamp,
    to: Timestamp,
}

impl Window {
    pub fn new(bucket: Bucket, from: Timestamp, to: Timestamp) -> Result<Self, WindowError> {
        if from >= to {
            return Err(WindowError::Empty);
        }
        let size = bucket.millis();
        let first = from.as_millisecond().div_euclid(size);
        let last = to.as_millisecond().div_euclid(size) + i64::from(to.as_millisecond() % size != 0);
        if last - first > MAX_BUCKETS {
            return Err(WindowError::TooLong);
        }
        let at = |n: i64| Timestamp::from_millisecond(n * size).map_err(|_| WindowError::OutOfRange);
        Ok(Self {
            bucket,
            from: at(first)?,
            to: at(last)?,
        })
    }

    pub fn bucket(&self) -> Bucket {
        self.bucket
    }

    /// The start of the first bucket.
    pub fn from(&self) -> Timestamp {
        self.from
    }

    /// The end of the last bucket.
    pub fn to(&self) -> Timestamp {
        self.to
    }

    pub fn len(&self) -> usize {
        let span = self.to.as_millisecond() - self.from.as_millisecond();
        usize::try_from(span / self.bucket.millis()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which bucket a start falls in, if the window covers it.
    fn index(&self, start: Timestamp) -> Option<usize> {
        let offset = start.as_millisecond() - self.from.as_millisecond();
        if offset < 0 || start >= self.to {
            return None;
        }
        usize::try_from(offset / self.bucket.millis()).ok()
    }

    /// One dense series per campaign with calls, ordered by campaign; buckets without calls
    /// are zeros. Counts outside the window (there should be none) are left out.
    pub fn series(&self, counted: impl IntoIterator<Item = BucketCounts>) -> Vec<CampaignSeries> {
        let mut series: BTreeMap<CampaignId, CampaignSeries> = BTreeMap::new();
        for row in counted {
            let Some(i) = self.index(row.start) else {
                continue;
            };
            let campaign = (series.entry(row.campaign_id))
                .or_insert_with(|| CampaignSeries::zeros(row.campaign_id, self.len()));
            campaign.add(i, row.counts);
        }
        series.into_values().collect()
    }
}

/// What happened to the calls that started in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    /// A buyer answered.
    pub connected: u64,
    pub converted: u64,
    /// Buyers skipped because the call would have been a duplicate for them.
    pub duplicates_avoided: u64,
    /// Ended by Switchboard with nobody left to take the call.
    pub dropped: u64,
}

/// One campaign's counts for the bucket starting at `start`, as the store reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCounts {
    pub campaign_id: CampaignId,
    pub start: Timestamp,
    pub counts: Counts,
}

/// A campaign's calls over a window, one value per bucket (calls counted in the campaign of the
/// number dialed, as in the campaign statistics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CampaignSeries {
    pub campaign_id: CampaignId,
    /// Calls that started in each bucket.
    pub calls: Vec<u64>,
    /// Of those, the calls a buyer answered.
    pub connected: Vec<u64>,
    pub converted: Vec<u64>,
    /// Buyers skipped because the call would have been a duplicate for them.
    pub duplicates_avoided: Vec<u64>,
    /// Calls ended by Switchboard with nobody left to take them.
    pub dropped: Vec<u64>,
}

impl CampaignSeries {
    fn zeros(campaign_id: CampaignId, len: usize) -> Self {
        Self {
            campaign_id,
            calls: vec![0; len],
            connected: vec![0; len],
            converted: vec![0; len],
            duplicates_avoided: vec![0; len],
            dropped: vec![0; len],
        }
    }

    fn add(&mut self, i: usize, counts: Counts) {
        self.calls[i] += counts.calls;
        self.connected[i] += counts.connected;
        self.converted[i] += counts.converted;
        self.duplicates_avoided[i] += counts.duplicates_avoided;
        self.dropped[i] += counts.dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn campaign(n: u128) -> CampaignId {
        CampaignId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_window_is_rounded_out_to_whole_buckets() {
        let window = Window::new(
            Bucket::Minute,
            at("2026-12-04T10:00:30Z"),
            at("2026-12-04T10:05:01Z"),
        )
        .unwrap();
        assert_eq!(
            (window.from(), window.to()),
            (at("2026-12-04T10:00:00Z"), at("2026-12-04T10:06:00Z"))
        );
        assert_eq!(window.len(), 6);

        let exact = Window::new(
            Bucket::Hour,
            at("2026-12-04T00:00:00Z"),
            at("2026-12-05T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(
            (exact.from(), exact.to(), exact.len()),
            (at("2026-12-04T00:00:00Z"), at("2026-12-05T00:00:00Z"), 24)
        );
    }

    #[test]
    fn buckets_are_aligned_to_utc_also_before_1970() {
        let window = Window::new(
            Bucket::Hour,
            at("1969-12-31T23:30:00Z"),
            at("1970-01-01T00:30:00Z"),
        )
        .unwrap();
        assert_eq!(
            (window.from(), window.to()),
            (at("1969-12-31T23:00:00Z"), at("1970-01-01T01:00:00Z"))
        );
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn an_empty_or_oversized_window_is_refused() {
        let noon = at("2026-12-04T12:00:00Z");
        assert_eq!(Window::new(Bucket::Minute, noon, noon), Err(WindowError::Empty));
        let day = noon.checked_add(SignedDuration::from_hours(24)).unwrap();
        assert!(
            Window::new(Bucket::Minute, noon, day).is_ok(),
            "a day by minute is the most"
        );
        let later = day.checked_add(SignedDuration::from_secs(1)).unwrap();
        assert_eq!(
            Window::new(Bucket::Minute, noon, later),
            Err(WindowError::TooLong)
        );
        assert!(Window::new(Bucket::Hour, noon, later).is_ok());
    }

    #[test]
    fn series_are_dense_per_campaign_and_leave_out_what_the_window_does_not_cover() {
        let window = Window::new(
            Bucket::Minute,
            at("2026-12-04T10:00:00Z"),
            at("2026-12-04T10:03:00Z"),
        )
        .unwrap();
        let counts = |calls, converted| Counts {
            calls,
            connected: calls,
            converted,
            duplicates_avoided: 1,
            dropped: 0,
        };
        let rows = [
            BucketCounts {
                campaign_id: campaign(2),
                start: at("2026-12-04T10:02:00Z"),
                counts: counts(4, 1),
            },
            BucketCounts {
                campaign_id: campaign(1),
                start: at("2026-12-04T10:00:00Z"),
                counts: counts(3, 2),
            },
            BucketCounts {
                campaign_id: campaign(1),
                start: at("2026-12-04T10:03:00Z"),
                counts: counts(9, 9),
            },
            BucketCounts {
                campaign_id: campaign(1),
                start: at("2026-12-04T09:59:00Z"),
                counts: counts(9, 9),
            },
        ];
        let series = window.series(rows);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].campaign_id, campaign(1));
        assert_eq!(series[0].calls, [3, 0, 0]);
        assert_eq!(series[0].converted, [2, 0, 0]);
        assert_eq!(series[0].duplicates_avoided, [1, 0, 0]);
        assert_eq!(series[1].calls, [0, 0, 4]);
        assert_eq!(series[1].dropped, [0, 0, 0]);
    }
}
