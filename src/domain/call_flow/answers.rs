//! What the provider is answered: the answer that fits the call as it stands, the explicit end,
//! and the answer when no decision can be made at all.

use super::{
    Asked, Input, Turn,
    dialing::{dial, route_on},
};
use crate::domain::{
    call::{Answer, CallRecord, CallState, DialStatus, DropReason, Outcome},
    timeline::Event,
};

impl Input {
    /// The answer when no call actor can give one: nothing is decided, nobody is put through.
    pub fn answer_without_a_decision(&self) -> Answer {
        match self {
            Self::LegStatus { .. }
            | Self::CallStatus { .. }
            | Self::Recorded { .. }
            | Self::Detected { .. } => Answer::Acknowledge,
            // A buyer's leg nobody can vouch for is not put through.
            Self::Whisper { .. } | Self::Screened { .. } => Answer::Hangup,
            // The conversation is over, or the caller gone.
            Self::DialEnded {
                status, call_over, ..
            } if status.connected() || *call_over => Answer::Hangup,
            // A dial just ended, the caller still there: nobody can route them now.
            Self::DialEnded { .. } => Answer::End,
            Self::Incoming { .. } | Self::Redirected { .. } | Self::Fallback { .. } => Answer::End,
            Self::TimedOut | Self::Settle => Answer::Acknowledge,
        }
    }
}

pub(super) fn drop_call(turn: &mut Turn<'_>, record: &mut CallRecord, reason: DropReason) -> Answer {
    record.end(Outcome::Dropped, Some(reason), turn.now);
    note_end(turn, record);
    Answer::End
}

pub(super) fn note_end(turn: &mut Turn<'_>, record: &CallRecord) {
    if let Some(outcome) = record.outcome {
        turn.note(Event::Ended {
            outcome,
            drop_reason: record.drop_reason,
        });
    }
}

/// The answer that fits the call as it stands (a retried request gets what it got before).
pub(super) fn current_answer(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<Answer> {
    if turn.answered_elsewhere && !record.is_ended() {
        return Ok(drop_call(turn, record, DropReason::Overloaded));
    }
    match (record.state, record.outcome) {
        (CallState::Ended, Some(Outcome::Rejected)) => return Ok(Answer::Reject),
        // Refused unanswered, and so again: `<Hangup/>` would answer (and bill) the call.
        (CallState::Ended, Some(Outcome::Blocked)) => return Ok(Answer::Blocked),
        (CallState::Ended, Some(Outcome::Dropped)) => return Ok(Answer::End),
        (CallState::Ended, _) => return Ok(Answer::Hangup),
        _ => {}
    }
    if let Some(attempt) = record.current_attempt() {
        if attempt.status.is_some_and(DialStatus::connected) || attempt.answered_at.is_some() {
            return Ok(Answer::Hangup);
        }
        if attempt.status.is_none()
            && let Some(buyer) = turn.plan.buyer(attempt.buyer_id)
        {
            return Ok(dial(&turn.plan, record, attempt.number, buyer));
        }
    }
    // Nothing in flight (a redirect the provider has not followed yet): decide again.
    route_on(turn, record)
}
