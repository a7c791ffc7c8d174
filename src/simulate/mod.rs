//! `switchboard simulate`: a Twilio-compatible provider in a box, to see Switchboard work
//! without a telephony account and to measure it.
//!
//! It places calls on tracking numbers as a provider would: a signed incoming webhook, then
//! whatever the TwiML says (`<Dial>`: the buyer answers, is busy, does not answer or fails, by
//! the weights given; `<Redirect>`; the end), with the dial's action and the status callbacks a
//! provider posts. A buyer that answers runs its whisper document (and presses 1 at a prompt,
//! or not), and a recorded dial's recording is reported. It reports what happened and how fast
//! Switchboard answered.

mod call;
mod report;
pub mod twiml;

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use secrecy::SecretString;
use tokio::{sync::Semaphore, task::JoinSet};

pub use self::report::{Counts, Ended, Report, percentile};
use self::{call::Call, report::CallReport};

/// What to simulate.
#[derive(Debug, Clone, clap::Args)]
pub struct Scenario {
    /// The Switchboard to call: where it listens. Repeat it for several nodes: calls and RTB
    /// pings are spread over them in turn, and a callback whose node does not answer goes to
    /// the next one, as a load balancer would send it.
    #[arg(long = "url", default_values_t = ["http://127.0.0.1:8080".to_owned()])]
    pub urls: Vec<String>,
    /// Switchboard's `PUBLIC_URL`, when it is not `--url` (behind a proxy): webhooks are signed
    /// for it, as the provider would sign them. With several nodes, one per `--url`, in order.
    #[arg(long = "public-url")]
    pub public_urls: Vec<String>,
    /// The provider account's auth token, to sign webhooks with. Without it they go unsigned
    /// (Switchboard must then run with `WEBHOOK_SIGNATURES=off`).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<SecretString>,
    /// How many calls to place.
    #[arg(long, default_value_t = 100)]
    pub calls: u32,
    /// How many calls are in progress at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: u32,
    /// The tracking numbers called, in turn (repeat the flag for several).
    #[arg(long = "to", default_values_t = ["+18005550100".to_owned(), "+18885550100".to_owned()])]
    pub numbers: Vec<String>,
    /// The share of calls (0 to 1) from a caller who already called in this run.
    #[arg(long, default_value_t = 0.3)]
    pub repeat_share: f64,
    /// How a dialed buyer responds, as weights: `answered,busy,no-answer,failed`.
    #[arg(long, default_value = "70,10,15,5")]
    pub outcomes: Outcomes,
    /// One buyer's own weights: `NUMBER=answered,busy,no-answer,failed` (repeatable).
    #[arg(long = "buyer", value_name = "NUMBER=WEIGHTS")]
    pub buyers: Vec<BuyerOutcomes>,
    /// At a buyer's press-1 prompt, the share of calls (0 to 1) it accepts by pressing 1; the
    /// others it lets time out.
    #[arg(long = "press-1", default_value_t = 0.8)]
    pub press_1: f64,
    /// Of the answers to a buyer screened by answering machine detection, the share (0 to 1)
    /// a machine gives.
    #[arg(long, default_value_t = 0.1)]
    pub machines: f64,
    /// The mean time an answered call talks, in seconds (exponentially distributed), as the
    /// dial's action reports it.
    #[arg(long, default_value_t = 120.0)]
    pub talk_seconds: f64,
    /// Post each call's status callbacks in a shuffled order, after its last answer.
    #[arg(long)]
    pub reorder: bool,
    /// How long, in milliseconds of real time, each dialed leg stays up before it ends (the
    /// talk time reported is simulated): legs then overlap, as buyers' concurrency caps see
    /// them on a real network.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// Ping this RTB key before each call (with `--publisher`).
    #[arg(long)]
    pub rtb_key: Option<String>,
    /// The publisher named in RTB pings.
    #[arg(long, default_value = "pub-001")]
    pub publisher: String,
    /// A supervisor (or admin) token: the summary then adds Switchboard's own counts of the
    /// calls made in the run (conversions, duplicates avoided, drops by reason).
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Fixes every random draw (callers, answers, talk times).
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Weights of what a dialed buyer does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcomes {
    pub answered: f64,
    pub busy: f64,
    pub no_answer: f64,
    pub failed: f64,
}

impl FromStr for Outcomes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let weights: Vec<f64> = (text.split(','))
            .map(|w| w.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("`{text}` is not four numbers: answered,busy,no-answer,failed"))?;
        let [answered, busy, no_answer, failed] = weights[..] else {
            return Err(format!(
                "`{text}` is not four numbers: answered,busy,no-answer,failed"
            ));
        };
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(format!("`{text}`: weights are not negative, and not all zero"));
        }
        Ok(Self {
            answered,
            busy,
            no_answer,
            failed,
        })
    }
}

/// A buyer's number and its own weights.
#[derive(Debug, Clone, PartialEq)]
pub struct BuyerOutcomes {
    pub number: String,
    pub outcomes: Outcomes,
}

impl FromStr for BuyerOutcomes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (number, weights) = (text.split_once('='))
            .ok_or_else(|| format!("`{text}` is not NUMBER=answered,busy,no-answer,failed"))?;
        Ok(Self {
            number: number.trim().to_owned(),
            outcomes: weights.parse()?,
        })
    }
}

/// Everything the calls share.
struct Provider {
    scenario: Scenario,
    client: reqwest::Client,
    seed: u64,
    /// Legs up now and at most, by buyer number: what a buyer saw of its concurrency.
    legs: Mutex<HashMap<String, (u32, u32)>>,
    /// Requests sent to another node than the one their URL names (it did not answer).
    failovers: AtomicU32,
}

/// Places the scenario's calls and reports on them. An error means the simulation could not
/// be run at all; calls that failed (an error status, invalid TwiML) are in the report.
pub async fn run(scenario: Scenario) -> anyhow::Result<Report> {
    if scenario.numbers.is_empty() {
        bail!("give at least one tracking number to call (--to)");
    }
    if !(0.0..=1.0).contains(&scenario.repeat_share) {
        bail!("--repeat-share is a share, from 0 to 1");
    }
    if !(0.0..=1.0).contains(&scenario.press_1) {
        bail!("--press-1 is a share, from 0 to 1");
    }
    if !(0.0..=1.0).contains(&scenario.machines) {
        bail!("--machines is a share, from 0 to 1");
    }
    if scenario.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if scenario.urls.is_empty() {
        bail!("give Switchboard's address (--url)");
    }
    if !scenario.public_urls.is_empty() && scenario.public_urls.len() != scenario.urls.len() {
        bail!("give one --public-url per --url, in the same order");
    }
    let client = reqwest::Client::builder()
        // As a provider waits: 5 s to connect, 15 s for the answer.
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .context("cannot make an HTTP client")?;
    let started_at = jiff::Timestamp::now();
    let provider = Arc::new(Provider {
        seed: scenario.seed.unwrap_or_else(rand::random),
        scenario,
        client,
        legs: Mutex::default(),
        failovers: AtomicU32::new(0),
    });
    let scenario = &provider.scenario;
    let progress = if scenario.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(scenario.calls)).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {per_sec}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };

    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(scenario.concurrency as usize));
    let mut calls = JoinSet::new();
    let mut reports = Vec::with_capacity(scenario.calls as usize);
    let mut failed = 0;
    let mut collect = |report: CallReport, progress: &ProgressBar| {
        if report.failure.is_some() {
            failed += 1;
            progress.set_message(format!("{failed} failed"));
        }
        progress.inc(1);
        reports.push(report);
    };
    // Callers are drawn here, in order, so that a seed gives the same calls from the same
    // callers however the calls' tasks happen to be scheduled.
    let mut draws = StdRng::seed_from_u64(provider.seed);
    let mut callers: Vec<String> = Vec::new();
    for n in 0..scenario.calls {
        let caller = if !callers.is_empty() && draws.random_bool(scenario.repeat_share) {
            callers[draws.random_range(0..callers.len())].clone()
        } else {
            let caller = call::new_caller(&mut draws);
            callers.push(caller.clone());
            caller
        };
        let slot = (slots.clone().acquire_owned().await).context("the call slots closed")?;
        let provider = provider.clone();
        calls.spawn(async move {
            let report = Call::new(&provider, n, caller).place().await;
            drop(slot);
            report
        });
        while let Some(done) = calls.try_join_next() {
            collect(done.context("a simulated call panicked")?, &progress);
        }
    }
    while let Some(done) = calls.join_next().await {
        collect(done.context("a simulated call panicked")?, &progress);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();

    let switchboard = match &scenario.token {
        Some(token) => {
            let url = &scenario.urls[0];
            Some(report::switchboard_counts(&provider.client, url, token, started_at).await)
        }
        None => None,
    };
    let mut report = Report::new(reports, elapsed, scenario.concurrency, switchboard);
    report.peak_legs = (provider.legs.lock().map(|legs| legs.clone()).unwrap_or_default())
        .into_iter()
        .map(|(number, (_, peak))| (number, peak))
        .collect();
    report.failovers = provider.failovers.load(Ordering::Relaxed);
    Ok(report)
}

impl Provider {
    /// The base URL webhooks are signed for, on the `n`th node.
    fn public_url(&self, n: usize) -> &str {
        let scenario = &self.scenario;
        (scenario.public_urls.get(n))
            .unwrap_or(&scenario.urls[n])
            .trim_end_matches('/')
    }

    /// Where to send a request for `url` (an absolute URL Switchboard wrote, under a node's
    /// public URL), and the URL to sign: the node it names first, then every other (as a load
    /// balancer passes a node that is down).
    fn targets(&self, url: &str) -> Vec<(String, String)> {
        let nodes = self.scenario.urls.len();
        let named = (0..nodes).find_map(|n| Some((n, url.strip_prefix(self.public_url(n))?)));
        let Some((first, path)) = named else {
            return vec![(url.to_owned(), url.to_owned())];
        };
        (0..nodes)
            .map(|k| (first + k) % nodes)
            .map(|n| {
                let node = self.scenario.urls[n].trim_end_matches('/');
                (format!("{node}{path}"), url.to_owned())
            })
            .collect()
    }

    /// A leg to `number` is up.
    fn leg_up(&self, number: &str) {
        if let Ok(mut legs) = self.legs.lock() {
            let (now, peak) = legs.entry(number.to_owned()).or_default();
            *now += 1;
            *peak = (*peak).max(*now);
        }
    }

    /// A leg to `number` ended.
    fn leg_down(&self, number: &str) {
        if let Ok(mut legs) = self.legs.lock()
            && let Some((now, _)) = legs.get_mut(number)
        {
            *now = now.saturating_sub(1);
        }
    }
}

/// Webhooks by kind, for latency figures.
pub type Latencies = HashMap<&'static str, Vec<Duration>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_read_and_checked() {
        let read: Outcomes = "70, 10,15,5".parse().unwrap();
        assert_eq!(
            read,
            Outcomes {
                answered: 70.0,
                busy: 10.0,
                no_answer: 15.0,
                failed: 5.0
            }
        );
        for bad in ["70,10,15", "a,b,c,d", "-1,1,1,1", "0,0,0,0", "1,1,1,1,1"] {
            assert!(bad.parse::<Outcomes>().is_err(), "{bad}");
        }
        let buyer: BuyerOutcomes = "+14155550101=0,1,0,0".parse().unwrap();
        assert_eq!(
            (buyer.number.as_str(), buyer.outcomes.busy),
            ("+14155550101", 1.0)
        );
        assert!("+14155550101".parse::<BuyerOutcomes>().is_err());
    }
}
