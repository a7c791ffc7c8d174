//! What a simulation saw, call by call and in sum.

use std::{collections::BTreeMap, fmt, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::Latencies;

/// How a call ended, as the provider saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ended {
    /// A buyer answered.
    Connected,
    /// Told nobody is available, then hung up (the explicit end).
    ExplicitEnd,
    /// Hung up without a word.
    HungUp,
    /// Refused (a number of no campaign).
    Rejected,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::ExplicitEnd => "explicit end",
            Self::HungUp => "hung up",
            Self::Rejected => "rejected",
        }
    }
}

/// One dial: the buyer's number, what the buyer did, how long it talked.
#[derive(Debug, Clone)]
pub struct Dialed {
    pub number: String,
    /// `DialCallStatus`.
    pub status: &'static str,
    pub talk_seconds: u32,
    pub leg_sid: String,
    /// Whether the caller was put through (an answered buyer may refuse at the whisper).
    pub bridged: bool,
    /// At a press-1 prompt: whether the buyer pressed 1.
    pub screened: Option<bool>,
    pub recorded: bool,
}

impl Dialed {
    /// What came of the dial, as the summary counts it: the status, or `screened-out` for a
    /// buyer that answered and refused the call.
    pub fn outcome(&self) -> &'static str {
        if self.status == "completed" && !self.bridged {
            "screened-out"
        } else {
            self.status
        }
    }
}

/// One call.
#[derive(Debug, Default)]
pub struct CallReport {
    pub ended: Option<Ended>,
    pub dials: Vec<Dialed>,
    pub redirects: u32,
    /// Why the call could not be followed: an error status, invalid TwiML, no answer.
    pub failure: Option<String>,
    pub latencies: Latencies,
}

impl CallReport {
    pub fn connected(&self) -> bool {
        self.dials.iter().any(|d| d.status == "completed" && d.bridged)
    }

    pub fn latency(&mut self, kind: &'static str, took: Duration) {
        self.latencies.entry(kind).or_default().push(took);
    }
}

/// The whole run.
#[derive(Debug)]
pub struct Report {
    pub calls: u32,
    pub elapsed: Duration,
    pub concurrency: u32,
    pub ended: BTreeMap<Ended, u32>,
    /// Dials by what came of them (see [`Dialed::outcome`]).
    pub dials: BTreeMap<&'static str, u32>,
    /// Press-1 prompts the buyers pressed 1 at, and did not.
    pub screened: (u32, u32),
    pub redirects: u32,
    /// Each failed call's reason (the first few are printed).
    pub failures: Vec<String>,
    pub latencies: Latencies,
    /// Switchboard's own counts of the run's calls, when a token was given.
    pub switchboard: Option<Result<Counts, String>>,
    /// The most legs up at once, by buyer number (as the buyer saw them: from the `<Dial>` to
    /// the leg's end, which Switchboard hears of only after).
    pub peak_legs: BTreeMap<String, u32>,
    /// Requests that went to another node than the one their URL names, which did not answer.
    pub failovers: u32,
}

/// What Switchboard counted over the run (its campaign statistics, summed).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    /// Not ended yet, by Switchboard's account.
    pub live: u64,
    pub converted: u64,
    pub duplicates_avoided: u64,
    pub fallback_used: u64,
    pub redirected: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl Report {
    pub fn new(
        reports: Vec<CallReport>,
        elapsed: Duration,
        concurrency: u32,
        switchboard: Option<Result<Counts, String>>,
    ) -> Self {
        let mut report = Self {
            calls: reports.len() as u32,
            elapsed,
            concurrency,
            ended: BTreeMap::new(),
            dials: BTreeMap::new(),
            screened: (0, 0),
            redirects: 0,
            failures: Vec::new(),
            latencies: Latencies::new(),
            switchboard,
            peak_legs: BTreeMap::new(),
            failovers: 0,
        };
        for call in reports {
            if let Some(ended) = call.ended {
                *report.ended.entry(ended).or_default() += 1;
            }
            for dial in &call.dials {
                *report.dials.entry(dial.outcome()).or_default() += 1;
                match dial.screened {
                    Some(true) => report.screened.0 += 1,
                    Some(false) => report.screened.1 += 1,
                    None => {}
                }
            }
            report.redirects += call.redirects;
            report.failures.extend(call.failure);
            for (kind, mut samples) in call.latencies {
                report.latencies.entry(kind).or_default().append(&mut samples);
            }
        }
        for samples in report.latencies.values_mut() {
            samples.sort_unstable();
        }
        report
    }

    /// Whether every call was followed to its end without an error or invalid TwiML.
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }

    /// The `q` quantile (0–1) of a webhook kind's latencies.
    pub fn percentile(&self, kind: &str, q: f64) -> Option<Duration> {
        percentile(self.latencies.get(kind)?, q)
    }
}

/// The `q` quantile (0–1) of sorted samples, by nearest rank; `None` when there are none.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "{} calls in {seconds:.1} s ({:.0} calls/s), {} at a time",
            self.calls,
            f64::from(self.calls) / seconds.max(f64::EPSILON),
            self.concurrency
        )?;
        let ended = |e: Ended| self.ended.get(&e).copied().unwrap_or(0);
        let endings = [
            Ended::Connected,
            Ended::ExplicitEnd,
            Ended::HungUp,
            Ended::Rejected,
        ]
        .map(|e| format!("{} {}", e.as_str(), ended(e)));
        writeln!(
            f,
            "calls      {} · failed {}",
            endings.join(" · "),
            self.failures.len()
        )?;
        let dials: u32 = self.dials.values().sum();
        let by_status: Vec<String> = ["completed", "screened-out", "busy", "no-answer", "failed"]
            .iter()
            .map(|s| format!("{s} {}", self.dials.get(s).copied().unwrap_or(0)))
            .collect();
        writeln!(
            f,
            "dials      {dials} ({}) · redirects {}",
            by_status.join(" · "),
            self.redirects
        )?;
        let recordings = self.latencies.get("recording").map_or(0, Vec::len);
        writeln!(
            f,
            "buyers     screened (press 1, machine detection): put through {} · not {} · recordings reported {recordings}",
            self.screened.0, self.screened.1
        )?;
        match &self.switchboard {
            Some(Ok(counts)) => {
                let dropped: Vec<String> = counts.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
                writeln!(
                    f,
                    "switchboard  calls {} · still live {} · conversions {} · duplicates avoided {} · fallback {} · redirected {} · dropped: {}",
                    counts.calls,
                    counts.live,
                    counts.converted,
                    counts.duplicates_avoided,
                    counts.fallback_used,
                    counts.redirected,
                    if dropped.is_empty() {
                        "none".to_owned()
                    } else {
                        dropped.join(", ")
                    }
                )?;
            }
            Some(Err(error)) => writeln!(f, "switchboard  counts unavailable: {error}")?,
            None => writeln!(
                f,
                "switchboard  (give --token for its own counts of conversions and drops)"
            )?,
        }
        writeln!(
            f,
            "latency ms  {:>11} {:>7} {:>7} {:>7} {:>7}",
            "webhooks", "p50", "p90", "p99", "max"
        )?;
        for kind in [
            "rtb",
            "incoming",
            "dial_action",
            "redirect",
            "leg_status",
            "whisper",
            "screen",
            "recording",
            "status",
        ] {
            let Some(samples) = self.latencies.get(kind) else {
                continue;
            };
            let ms = |q: f64| self.percentile(kind, q).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            writeln!(
                f,
                "{kind:<12} {:>10} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                samples.len(),
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(1.0)
            )?;
        }
        let peaks: Vec<String> = (self.peak_legs.iter())
            .map(|(number, peak)| format!("{number} {peak}"))
            .collect();
        writeln!(
            f,
            "most legs at once  {} · requests failed over to another node {}",
            if peaks.is_empty() {
                "none".to_owned()
            } else {
                peaks.join(" · ")
            },
            self.failovers
        )?;
        for failure in self.failures.iter().take(5) {
            writeln!(f, "failed: {failure}")?;
        }
        Ok(())
    }
}

/// Switchboard's campaign statistics over the calls that started since `from`, summed.
pub async fn switchboard_counts(
    client: &reqwest::Client,
    url: &str,
    token: &SecretString,
    from: jiff::Timestamp,
) -> Result<Counts, String> {
    let to = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    let stats = format!("{}/api/v1/stats/campaigns", url.trim_end_matches('/'));
    let response = (client.get(&stats))
        .query(&[("from", from.to_string()), ("to", to.to_string())])
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let page: Value = response.json().await.map_err(|e| e.to_string())?;
    let mut counts = Counts::default();
    for campaign in page["data"].as_array().into_iter().flatten() {
        let n = |field: &str| campaign[field].as_u64().unwrap_or(0);
        counts.calls += n("calls");
        counts.live += n("live");
        counts.converted += n("converted");
        counts.duplicates_avoided += n("duplicates_avoided");
        counts.fallback_used += n("fallback_used");
        counts.redirected += n("redirected");
        for (reason, dropped) in campaign["dropped"].as_object().into_iter().flatten() {
            *counts.dropped.entry(reason.clone()).or_default() += dropped.as_u64().unwrap_or(0);
        }
    }
    Ok(counts)
}
