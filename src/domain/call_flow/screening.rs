//! Screening the buyer who picked up: its whisper, the press-1 prompt, answering machine
//! detection; only the call's ringing attempt is ever put through.

use super::{Turn, answers::note_end};
use crate::domain::{
    call::{Answer, CallRecord, Trail},
    dialing::{Screen, Screening, whisper_for},
    timeline::Event,
};

/// The buyer of `attempt` picked up: what it hears before the caller is put through. Only the
/// call's ringing attempt is put through; any other leg is hung up. A buyer screened by
/// answering machine detection is judged first, by who answered.
pub(super) fn whisper(
    turn: &mut Turn<'_>,
    record: &mut CallRecord,
    attempt: u32,
    answered_by: Option<&str>,
) -> Answer {
    let current = record.current_attempt().filter(|a| a.number == attempt);
    let Some(dialed) = current
        .filter(|a| a.status.is_none() && !record.is_ended())
        .cloned()
    else {
        turn.note(Event::Ignored {
            reason: format!("attempt {attempt} is not ringing: its buyer is not put through"),
        });
        return Answer::Hangup;
    };
    if let Some(ringing) = record.attempts.iter_mut().find(|a| a.number == attempt) {
        ringing.picked_up(turn.now);
    }
    let plan = turn.plan.clone();
    let buyer = plan.buyer(dialed.buyer_id);
    let detects = buyer.is_some_and(|b| b.spec.screen == Screen::MachineDetection);
    if detects && dialed.screening == Some(Screening::Pending) {
        judge(turn, record, attempt, Screening::of_answered_by(answered_by));
    }
    let screening = record.attempt(attempt).and_then(|a| a.screening);
    let press_1 = match screening {
        None => false,
        Some(Screening::Pending) => true,
        // Detection put the buyer through: its whisper, if any, then the caller.
        Some(Screening::Accepted) if detects => false,
        // A retried request after the buyer answered the prompt: as it answered.
        Some(Screening::Accepted) => return Answer::Connect,
        Some(Screening::Refused | Screening::NoKey | Screening::Machine | Screening::CallerGone) => {
            return Answer::Hangup;
        }
    };
    let campaign = plan.campaign(dialed.campaign_id);
    let announcement = buyer
        .and_then(|buyer| whisper_for(buyer, campaign))
        .map(|w| w.for_campaign(campaign.map_or("", |c| c.spec.name.as_str())));
    turn.note(Event::Whispered {
        attempt,
        buyer_id: dialed.buyer_id,
        press_1,
    });
    if announcement.is_none() && !press_1 {
        record.bridge(attempt, turn.now);
        return Answer::Connect;
    }
    if !press_1 && let Some(announcement) = &announcement {
        // The caller is put through once the buyer has heard its whisper.
        record.bridge(attempt, turn.now + announcement.estimated_length());
    }
    Answer::Whisper {
        attempt,
        announcement,
        press_1,
        trail: Trail::of(record),
    }
}

/// Answering machine detection's verdict came by its own callback: the attempt is judged, if
/// it was not already (by the whisper request, which carries the same verdict).
pub(super) fn detected(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, answered_by: &str) {
    let pending = record
        .attempt(attempt)
        .is_some_and(|a| a.screening == Some(Screening::Pending) && a.status.is_none());
    if pending {
        let verdict = Screening::of_answered_by(Some(answered_by));
        judge(turn, record, attempt, verdict);
    }
}

/// Settles a screened attempt (a key pressed, a machine heard), noting it if it is news.
pub(super) fn judge(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, result: Screening) {
    let outcome = record.outcome;
    if let Some(screening) = record.screened(attempt, result, turn.now)
        && let Some(buyer_id) = record.attempt(attempt).map(|a| a.buyer_id)
    {
        turn.note(Event::Screened {
            attempt,
            buyer_id,
            screening,
        });
        if record.outcome != outcome {
            note_end(turn, record);
        }
    }
}

/// The buyer of `attempt` answered the press-1 prompt (`digits`): put through on 1, else hung
/// up, and the dial's result routes on. A retried or late answer changes nothing.
pub(super) fn screened(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, digits: &str) -> Answer {
    if record.is_ended() {
        // The caller is gone (the provider's news of it raced the buyer's key): nobody to put
        // the buyer through to, and nothing left to judge.
        turn.note(Event::Ignored {
            reason: format!("attempt {attempt}'s buyer answered the prompt after the call ended"),
        });
        return Answer::Hangup;
    }
    judge(turn, record, attempt, Screening::of_digits(digits));
    match record.attempt(attempt) {
        Some(a) if a.screening == Some(Screening::Accepted) && a.status.is_none() => {
            record.bridge(attempt, turn.now);
            Answer::Connect
        }
        Some(a) if a.screening.is_some() => Answer::Hangup,
        _ => {
            turn.note(Event::Ignored {
                reason: format!("attempt {attempt} has no press-1 prompt"),
            });
            Answer::Hangup
        }
    }
}
