//! What a provider request (or the reaper) tells the state machine.

use jiff::Timestamp;

use crate::domain::{
    call::{CallStatus, CallbackKey, DialStatus, RecordingStatus},
    plan::CampaignId,
};

/// What the provider said (or the reaper found) about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The call arrived on a tracking number.
    Incoming { from: String, to: String },
    /// The provider could not get TwiML from Switchboard (an error, a timeout) and asks the
    /// number's fallback URL instead: the call goes on from where it stands, or starts.
    Fallback { error_code: Option<String> },
    /// A `<Dial>` ended: its action URL.
    DialEnded {
        attempt: u32,
        status: DialStatus,
        connected_seconds: u32,
        /// The caller had hung up (the request's `CallStatus` is final).
        call_over: bool,
        /// `DialBridged`, when the provider sends it: whether the buyer's leg was put through
        /// to the caller.
        bridged: Option<bool>,
    },
    /// The buyer of an attempt picked up, and the provider asks what to play it before the
    /// caller is put through (the `<Number url>` whisper document). With answering machine
    /// detection, it says who answered (`AnsweredBy`).
    Whisper {
        attempt: u32,
        answered_by: Option<String>,
    },
    /// Answering machine detection's verdict on an attempt's leg (its `amdStatusCallback`).
    Detected { attempt: u32, answered_by: String },
    /// The buyer answered the press-1 prompt (`Digits`, empty when it pressed nothing).
    Screened { attempt: u32, digits: String },
    /// A recording of an attempt's `<Dial>` changed (its recording status callback).
    Recorded {
        attempt: u32,
        recording: RecordingReport,
    },
    /// A buyer's leg changed state: its status callback.
    LegStatus {
        attempt: u32,
        /// `None` if the provider sent none it documents.
        status: Option<CallStatus>,
        /// `SequenceNumber`, when the provider sends it.
        sequence: Option<u32>,
        /// `CallDuration` of a leg that ended, when the provider sends it.
        leg_seconds: Option<u32>,
        /// `Timestamp`: when it happened, as the provider stamped it.
        at: Option<Timestamp>,
    },
    /// The provider followed a `<Redirect>` into another campaign.
    Redirected { campaign: CampaignId },
    /// The parent call's status callback.
    CallStatus {
        /// `None` if the provider sent none it documents.
        status: Option<CallStatus>,
        sequence: Option<u32>,
    },
    /// Not a webhook: the reaper found the call past the longest a call can last.
    TimedOut,
    /// Not a webhook: settle what the call owes and has not settled (its publisher's payout,
    /// when the index did not answer before), and tell what changed since the store's record
    /// took in what was decided without it (see `Facts::news_since`).
    Settle,
}

impl Input {
    /// The attempt a request is about (its URL names it).
    pub fn attempt(&self) -> Option<u32> {
        match *self {
            Self::DialEnded { attempt, .. }
            | Self::Whisper { attempt, .. }
            | Self::Detected { attempt, .. }
            | Self::Screened { attempt, .. }
            | Self::Recorded { attempt, .. }
            | Self::LegStatus { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    /// What tells this status callback from a retry of it, if the provider numbered it.
    pub fn callback_key(&self) -> Option<CallbackKey> {
        match *self {
            Self::CallStatus { sequence, .. } => Some(CallbackKey {
                leg: 0,
                sequence: sequence?,
            }),
            Self::LegStatus {
                attempt, sequence, ..
            } => Some(CallbackKey {
                leg: attempt,
                sequence: sequence?,
            }),
            _ => None,
        }
    }
}

/// A recording status callback's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingReport {
    pub sid: String,
    pub url: String,
    pub status: RecordingStatus,
    pub duration_seconds: Option<u32>,
    pub channels: Option<u32>,
}
