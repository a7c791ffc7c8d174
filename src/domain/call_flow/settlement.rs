//! What a call settles: a conversion, the publisher's payout (once), a dial settled from its leg
//! when its action never came, and the recordings it leaves.

use jiff::Timestamp;

use super::{
    Asked, Question, RecordingReport, Reply, Turn,
    dialing::{DialEnd, dial_ended},
};
use crate::domain::{
    call::{Attempt, CallRecord, Conversion, DialStatus, Recording},
    money::Money,
    payout::Settlement,
    plan::{Buyer, Record},
    timeline::Event,
};

/// The call is over and a dial it answered never reported its end (its action request was
/// lost): settled from what the buyer's leg said of itself, as its action would have.
pub(super) fn settle_from_leg(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<()> {
    let Some((attempt, leg_seconds)) = record.unsettled_by_its_dial() else {
        return Ok(());
    };
    let status = (record.attempt(attempt)).map_or(DialStatus::Completed, |a| {
        a.result_of(DialStatus::Completed, None)
    });
    turn.warn(format!(
        "no dial action came for attempt {attempt}: the dial is settled from its leg ({leg_seconds} s)"
    ));
    let ended = DialEnd {
        attempt,
        status,
        connected_seconds: leg_seconds,
        call_over: true,
    };
    dial_ended(turn, record, ended).map(drop)
}

/// A recording of `attempt`'s dial: kept with the call, whenever it comes (after the call ended
/// too).
pub(super) fn recorded(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, report: &RecordingReport) {
    if record.attempt(attempt).is_none() {
        turn.note(Event::Ignored {
            reason: format!("a recording of attempt {attempt}, which was never made"),
        });
        return;
    }
    let recording = Recording {
        attempt,
        sid: report.sid.clone(),
        url: report.url.clone(),
        status: report.status,
        duration_seconds: report.duration_seconds,
        channels: report.channels,
        at: turn.now,
    };
    if record.add_recording(recording) {
        turn.note(Event::Recorded {
            attempt,
            recording_sid: report.sid.clone(),
            status: report.status,
            duration_seconds: report.duration_seconds,
        });
    }
}

/// Settles what the call earns its publisher, once: when it meets the payout rule (nothing if
/// the caller already earned the publisher a payout inside the window), or when it ends
/// without meeting it.
pub(super) fn settle_publisher(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<()> {
    let Some(publisher_id) = record.publisher_id else {
        return Ok(());
    };
    let terms = turn.plan.publisher_terms_for(record);
    let (payout, duplicate) = match Settlement::of(record, terms.as_ref()) {
        Settlement::Later => return Ok(()),
        Settlement::Unearned => (Money::ZERO, None),
        Settlement::Earned(terms) => {
            // Every payout is asked for, even where nothing can be a repeat (no window, a
            // withheld caller): the answer is the payout's row in the ledger, written once.
            let ask = || Question::PayOnce {
                caller: record.caller.number().cloned(),
                publisher: publisher_id,
                terms,
            };
            // If the store does not say, nothing is settled now: the next request, or the
            // reaper's sweep of calls left unsettled, asks again.
            let duplicate = match turn.ask(ask)? {
                Reply::PaidOnce(Some(first)) => !first,
                _ => return Ok(()),
            };
            let payout = if duplicate { Money::ZERO } else { terms.amount };
            (payout, Some(duplicate))
        }
    };
    record.publisher_payout = Some(payout);
    record.publisher_duplicate = duplicate;
    turn.note(Event::PublisherSettled {
        publisher_id,
        payout,
        duplicate,
    });
    Ok(())
}

pub(super) fn conversion(
    record: &CallRecord,
    attempt: &Attempt,
    buyer: &Record<Buyer>,
    at: Timestamp,
) -> Conversion {
    Conversion {
        call_sid: record.sid.clone(),
        attempt: attempt.number,
        buyer_id: buyer.id,
        campaign_id: attempt.campaign_id,
        caller: record.caller.number().cloned(),
        connected_seconds: attempt.connected_seconds.unwrap_or_default(),
        payout: buyer.spec.payout,
        revenue: buyer.spec.revenue,
        at,
    }
}
