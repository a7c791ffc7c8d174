//! Rate limits per key (an RTB key; a client's address for failed token checks): a burst,
//! then a steady rate, each key apart from the others.
//!
//! The generic cell rate algorithm: each key keeps only the time its next request is due
//! (its "theoretical arrival time"), so a limiter costs one timestamp per key seen recently.
//! Keys are held as SHA-256 digests: a limiter keyed by secrets keeps none of them.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use actix_web::{HttpResponse, http::header};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Requests taken per key: `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    /// Pings per RTB key: a publisher pinging for every caller it has stays well inside it,
    /// a loop or a flood does not.
    pub const RTB_DEFAULT: Self = Self {
        per_second: 50,
        burst: 100,
    };

    /// The time between two requests at the steady rate.
    fn interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second.max(1)
    }
}

/// How often keys that are no longer limited are forgotten, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A rate limit for many keys. Shared across HTTP workers (`web::Data`).
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    /// Each key's theoretical arrival time: when its next request would be on time.
    due: DashMap<[u8; 32], Instant>,
    swept: Mutex<Instant>,
}

/// A request over the limit: how long until one would be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// `429 Too Many Requests` with `Retry-After` (whole seconds, at least one) and the API's
    /// error body.
    pub fn response(&self) -> HttpResponse {
        let seconds = self.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, seconds.to_string()))
            .json(serde_json::json!({
                "error": {
                    "code": "rate_limited",
                    "message": format!("too many requests with this key; try again in {seconds} s"),
                }
            }))
    }
}

impl RateLimiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            due: DashMap::new(),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Takes one request for `key` now, or says when one would be taken.
    pub fn check(&self, key: &[u8]) -> Result<(), Limited> {
        self.check_at(key, Instant::now())
    }

    /// As [`RateLimiter::check`], at `now`.
    pub fn check_at(&self, key: &[u8], now: Instant) -> Result<(), Limited> {
        self.sweep(now);
        let interval = self.rate.interval();
        // A full burst may run this far ahead of the steady rate.
        let tolerance = interval * self.rate.burst.saturating_sub(1);
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut due = self.due.entry(digest).or_insert(now);
        let on_time = (*due).max(now);
        let ahead = on_time - now;
        if ahead > tolerance {
            return Err(Limited {
                retry_after: ahead - tolerance,
            });
        }
        *due = on_time + interval;
        Ok(())
    }

    /// Forgets keys whose requests are all on time again (they would start afresh anyway).
    fn sweep(&self, now: Instant) {
        let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(*swept) < SWEEP_EVERY {
            return;
        }
        *swept = now;
        drop(swept);
        self.due.retain(|_, due| *due > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate_each_key_apart() {
        let limiter = RateLimiter::new(Rate {
            per_second: 10,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(b"a", t0), Ok(()));
        }
        let limited = limiter.check_at(b"a", t0).unwrap_err();
        assert_eq!(limited.retry_after, Duration::from_millis(100));
        assert_eq!(limiter.check_at(b"b", t0), Ok(()), "another key is not held up");
        // A tenth of a second later, one more.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check_at(b"a", later), Ok(()));
        assert!(limiter.check_at(b"a", later).is_err());
        // After a quiet second, a whole burst again.
        let quiet = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            assert_eq!(limiter.check_at(b"a", quiet), Ok(()));
        }
    }

    #[test]
    fn a_refusal_says_when_to_come_back() {
        let response = Limited {
            retry_after: Duration::from_millis(20),
        }
        .response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }
}
