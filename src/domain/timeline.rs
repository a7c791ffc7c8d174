//! A call's timeline: every webhook received and every decision taken, in order, so a
//! supervisor can see why a call went where it went.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    call::{DialStatus, DropReason, Outcome, RecordingStatus},
    dialing::Screening,
    money::Money,
    plan::{BuyerId, PublisherId},
    routing::Decision,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A webhook as received: which endpoint, and every parameter.
    Webhook {
        endpoint: String,
        params: BTreeMap<String, String>,
    },
    /// A routing decision, with the verdict on every buyer considered.
    Decision(Decision),
    /// The call reached a campaign where an RTB bid had reserved a buyer for its caller: the
    /// reservation is claimed, and that buyer goes first if it can take the call.
    ReservationClaimed { reservation: Uuid, buyer_id: BuyerId },
    /// The buyer of an attempt answered.
    Answered { attempt: u32, buyer_id: BuyerId },
    /// The buyer of an attempt picked up and is hearing the whisper (and, if it must accept
    /// the call, the press-1 prompt) before the caller is put through.
    Whispered {
        attempt: u32,
        buyer_id: BuyerId,
        press_1: bool,
    },
    /// The buyer answered the press-1 prompt: accepted (the caller is put through), refused, or
    /// pressed nothing (the leg counts as unanswered).
    Screened {
        attempt: u32,
        buyer_id: BuyerId,
        screening: Screening,
    },
    /// A recording of an attempt's dial was made (or failed).
    Recorded {
        attempt: u32,
        recording_sid: String,
        status: RecordingStatus,
        duration_seconds: Option<u32>,
    },
    /// An attempt's `<Dial>` ended, and what it came to.
    DialEnded {
        attempt: u32,
        buyer_id: BuyerId,
        status: DialStatus,
        connected_seconds: u32,
        /// Settled when the leg ended; `None` for an unknown caller.
        duplicate: Option<bool>,
        converted: bool,
    },
    /// What the call earned its publisher: settled once, when it met the payout rule (a
    /// duplicate for the publisher earns nothing) or ended without meeting it.
    PublisherSettled {
        publisher_id: PublisherId,
        payout: Money,
        /// `None`: the call never met the rule, so it was not judged.
        duplicate: Option<bool>,
    },
    /// The buyer reported the call converted (its `conversion_rule` waits for its word).
    ConversionReported {
        attempt: u32,
        buyer_id: BuyerId,
        /// What the buyer pays: the revenue it reported, else its configured one.
        revenue: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
    },
    /// The buyer returned the call's conversion: it and the publisher's payout are reversed.
    ConversionReturned {
        attempt: u32,
        buyer_id: BuyerId,
        reason: String,
        /// What the publisher's payout for the conversion was, now reversed (absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reversed_payout: Option<Money>,
    },
    /// The caller is on the company's block list: the call was refused by this entry.
    Blocked(super::block::BlockedBy),
    /// The call ended.
    Ended {
        outcome: Outcome,
        drop_reason: Option<DropReason>,
    },
    /// A webhook that could not be applied (unknown call, unknown attempt): kept for diagnosis.
    Ignored { reason: String },
}

impl Event {
    /// The stored `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Decision(_) => "decision",
            Self::ReservationClaimed { .. } => "reservation_claimed",
            Self::Answered { .. } => "answered",
            Self::Whispered { .. } => "whispered",
            Self::Screened { .. } => "screened",
            Self::Recorded { .. } => "recorded",
            Self::DialEnded { .. } => "dial_ended",
            Self::PublisherSettled { .. } => "publisher_settled",
            Self::ConversionReported { .. } => "conversion_reported",
            Self::ConversionReturned { .. } => "conversion_returned",
            Self::Blocked(_) => "blocked",
            Self::Ended { .. } => "ended",
            Self::Ignored { .. } => "ignored",
        }
    }
}
