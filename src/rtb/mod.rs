//! RTB pings answered: the campaign found by its key, the caller checked against every buyer's
//! de-dupe history and caps, the bid decided by routing itself, the buyer reserved for the
//! caller, and every ping logged.

mod log;

use std::{collections::HashSet, sync::Arc};

use actix::{Actor, Addr};
use jiff::Timestamp;
use uuid::Uuid;

pub use self::log::{Flush, RtbLog};
use crate::{
    decide::{
        Decider, ReservationActor, Reservations, Write,
        reservations::{Find, Reserve},
    },
    domain::{
        access::KeyDigest,
        geo::{AreaCode, CallerPlace, UsState},
        phone::E164,
        plan::{Buyer, Campaign, PublisherId, Record},
        routing::{Action, CallSituation, RoutingPlan},
        rtb::{
            HeldElsewhere, NoTarget, PingAnswer, PingError, PingOutcome, PingRecord, PingRequest,
            Reservation, RtbWrite, caller_number,
        },
    },
    store::{RtbStore, StoreError},
    supervision::Supervision,
};

/// The RTB actors, started together: the log writer and the reservation book that feeds it.
pub async fn start(
    store: Arc<dyn RtbStore>,
    clock: Arc<dyn crate::clock::Clock>,
    arbiter: &actix::ArbiterHandle,
) -> Result<RtbActors, StoreError> {
    let log = RtbLog::new(store.clone()).start();
    let reservations = ReservationActor::load(store.as_ref(), clock, log.clone().recipient())
        .await?
        .start(arbiter);
    Ok(RtbActors { log, reservations })
}

#[derive(Clone)]
pub struct RtbActors {
    pub log: Addr<RtbLog>,
    pub reservations: Reservations,
}

/// Answers pings. Cheap to clone.
#[derive(Clone)]
pub struct Rtb {
    decider: Decider,
    /// Its metrics count pings.
    supervision: Supervision,
    log: Addr<RtbLog>,
}

/// A ping attributed to a campaign, as it is being answered.
struct Ping<'a> {
    id: Uuid,
    at: Timestamp,
    plan: &'a Arc<RoutingPlan>,
    campaign: &'a Record<Campaign>,
    request: &'a PingRequest,
}

impl Ping<'_> {
    /// The publisher asking, one of the campaign's company's.
    fn publisher(&self) -> Result<PublisherId, PingError> {
        let reference = self
            .request
            .publisher
            .as_deref()
            .ok_or(PingError::MissingPublisher)?;
        (self.campaign.company_id)
            .and_then(|company| self.plan.publisher(company, reference))
            .ok_or_else(|| PingError::UnknownPublisher(reference.to_owned()))
    }

    /// Where the caller is: the `state` the ping gives, else its `zip`'s, else the caller
    /// number's area code's.
    fn place(&self, caller: Option<&E164>) -> Result<CallerPlace, PingError> {
        let area_code = caller.and_then(AreaCode::of);
        let state = match (&self.request.state, &self.request.zip) {
            (Some(state), _) => Some(UsState::parse(state).map_err(PingError::InvalidState)?),
            (None, Some(zip)) => Some(UsState::of_zip(zip).map_err(PingError::InvalidZip)?),
            (None, None) => area_code.and_then(AreaCode::state),
        };
        Ok(CallerPlace { state, area_code })
    }

    /// The caller, if the ping names one (which the campaign may require).
    fn caller(&self) -> Result<Option<E164>, PingError> {
        match self.request.caller_number.as_deref() {
            Some(text) => caller_number(text).map(Some),
            None if self.campaign.spec.rtb_caller_number_optional => Ok(None),
            None => Err(PingError::MissingCallerNumber),
        }
    }
}

/// What answering a ping came to, for its answer and its log line.
struct Answered {
    publisher_id: Option<PublisherId>,
    caller: Option<E164>,
    result: Result<(PingAnswer, Option<Reservation>), PingError>,
}

impl Rtb {
    /// Pings share the call actors' plan, de-dupe index, capacity index and reservation
    /// book (the `decider`).
    pub fn new(decider: Decider, supervision: Supervision, log: Addr<RtbLog>) -> Self {
        Self {
            decider,
            supervision,
            log,
        }
    }

    /// Answers a ping: a bid, `no-target`, or why the ping is refused.
    pub async fn ping(&self, request: PingRequest) -> Result<PingAnswer, PingError> {
        // To the millisecond, as stored: a bid reads the same from memory, the log and after a
        // restart.
        let at = crate::clock::to_millisecond(self.decider.clock.now());
        let plan = self.decider.plan.current().await;
        let metrics = &self.supervision.metrics;
        let rejected = |error: PingError| {
            metrics.rtb_ping(PingOutcome::Rejected.as_str(), error.code());
            Err(error)
        };
        let Some(key) = request.key.as_deref() else {
            return rejected(PingError::MissingKey);
        };
        let Some(campaign) = plan.campaign_for_rtb_key(&KeyDigest::of(key)) else {
            // Not logged with the pings: nothing ties it to a campaign, and anyone may send it.
            tracing::warn!(publisher = ?request.publisher, "an RTB ping with an unknown key");
            return rejected(PingError::UnknownKey);
        };
        let ping = Ping {
            id: Uuid::now_v7(),
            at,
            plan: &plan,
            campaign,
            request: &request,
        };
        let answered = self.answer(&ping).await;
        let line = log_line(&ping, &answered);
        metrics.rtb_ping(line.outcome.as_str(), line.reason.as_deref().unwrap_or_default());
        self.log.do_send(Write(RtbWrite::Ping(Box::new(line))));
        answered.result.map(|(answer, _)| answer)
    }

    async fn answer(&self, ping: &Ping<'_>) -> Answered {
        let publisher = ping.publisher();
        let caller = ping.caller();
        let place = caller
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|c| ping.place(c.as_ref()));
        let result = match (&publisher, &caller, place) {
            (Ok(publisher), Ok(caller), Ok(place)) => {
                Ok(self.bid(ping, *publisher, caller.as_ref(), place).await)
            }
            (Err(error), _, _) | (_, Err(error), _) => Err(error.clone()),
            (_, _, Err(error)) => Err(error),
        };
        Answered {
            publisher_id: publisher.ok(),
            caller: caller.ok().flatten(),
            result,
        }
    }

    /// The publisher's live reservation for the caller (the ping shield), else a new bid as
    /// routing decides it. Another publisher's reservation for the caller is not this one's to
    /// answer with, and the buyer it holds is not bid again: a buyer is promised to one
    /// publisher per caller (a second promise would be one it cannot keep for both).
    async fn bid(
        &self,
        ping: &Ping<'_>,
        publisher: PublisherId,
        caller: Option<&E164>,
        place: CallerPlace,
    ) -> (PingAnswer, Option<Reservation>) {
        let campaign = ping.campaign;
        let mut held = HashSet::new();
        if let Some(caller) = caller {
            let find = Find {
                campaign: campaign.id,
                caller: caller.clone(),
                publisher: Some(publisher),
                at: ping.at,
            };
            if let Ok(found) = self.decider.reservations.ask(find).await {
                if let Some(own) = found.own {
                    return (own.bid(true), Some(own));
                }
                held = found.held_for_others;
            }
        }
        let no_target = |reason| {
            let answer = PingAnswer::NoTarget {
                uuid: ping.id,
                reason,
            };
            (answer, None)
        };
        if caller.is_some_and(|caller| ping.plan.blocks(campaign, caller)) {
            return no_target(NoTarget::Blocked);
        }
        let plan = ping.plan;
        let Some(inbound_number) = plan.rtb_inbound_number(campaign, publisher) else {
            return no_target(NoTarget::NoTrackingNumber);
        };

        let candidates: Vec<&Record<Buyer>> = plan.candidates(campaign).collect();
        // A publisher waits on the answer as a caller would: the same budget.
        let by = tokio::time::Instant::now() + self.decider.decision_budget;
        let duplicates = self
            .decider
            .duplicates_among(caller, &candidates, ping.at, by)
            .await;
        let blocked = self.decider.blocked_among(plan, &candidates, ping.at, by).await;
        let (Some(duplicates), Some(blocked)) = (duplicates, blocked) else {
            // No bid on a guess: a duplicate or a buyer over its cap must never be bid for.
            return no_target(NoTarget::Overloaded);
        };
        let mut random = self.decider.random_for(ping.id);
        loop {
            // Buyers held for the caller by other publishers' bids are passed over, as buyers
            // already tried on a call are.
            let situation = CallSituation {
                at: ping.at,
                duplicates: &duplicates,
                blocked: &blocked,
                tried: &held,
                visited: &[campaign.id],
                reserved: None,
                place,
            };
            let decision = plan.bid(campaign, &situation, &mut random);
            let buyer = match decision.action {
                Action::Dial { buyer, .. } => plan.buyer(buyer),
                Action::End { reason } => {
                    // When only the holds kept every buyer out, that is the reason given.
                    let only_held = !held.is_empty() && {
                        let unheld = CallSituation {
                            tried: &HashSet::new(),
                            ..situation
                        };
                        let unheld = plan.bid(campaign, &unheld, &mut self.decider.random_for(ping.id));
                        matches!(unheld.action, Action::Dial { .. })
                    };
                    return no_target(if only_held { NoTarget::Held } else { reason.into() });
                }
                // A bid is never redirected (see `RoutingPlan::bid`).
                Action::Redirect { .. } => None,
            };
            let Some(buyer) = buyer else {
                return no_target(NoTarget::NoBuyer);
            };
            let seconds = campaign.spec.rtb_reservation_seconds.get();
            let reservation = Reservation {
                uuid: ping.id,
                campaign_id: campaign.id,
                caller: caller.cloned(),
                buyer_id: buyer.id,
                publisher_id: Some(publisher),
                payout: buyer.spec.payout,
                seconds: buyer.spec.conversion_seconds.get(),
                inbound_number: inbound_number.clone(),
                reserved_at: ping.at,
                expires_at: Reservation::expiry(ping.at, seconds),
            };
            let reserve = Reserve {
                reservation: reservation.clone(),
                at: ping.at,
            };
            match self.decider.reservations.ask(reserve).await {
                Ok(Ok((kept, cached))) => return (kept.bid(cached), Some(kept)),
                // Another publisher's ping took the buyer for the caller meanwhile: decided
                // again without it (each round passes over one more buyer, so this ends).
                Ok(Err(HeldElsewhere(taken))) => {
                    if !held.insert(taken) {
                        return no_target(NoTarget::Held);
                    }
                }
                Err(error) => {
                    // The bid stands (the publisher may still send the call; it routes as
                    // usual), but nothing holds the buyer for it. The log still shows what was
                    // bid, until when.
                    tracing::error!(%error, "the reservation book did not answer; the bid is not held");
                    let bid = Box::new(reservation.clone());
                    self.log.do_send(Write(RtbWrite::Reserved(bid)));
                    return (reservation.bid(false), Some(reservation));
                }
            }
        }
    }

    /// Waits until every ping answered so far is in the store (for reading the log).
    pub async fn flush(&self) {
        if let Err(error) = self.log.send(Flush).await {
            tracing::error!(%error, "the RTB log writer did not answer");
        }
    }
}

fn log_line(ping: &Ping<'_>, answered: &Answered) -> PingRecord {
    let (outcome, cached, reason, reservation, answer) = match &answered.result {
        Ok((answer, held)) => {
            let json = serde_json::to_value(answer).unwrap_or_default();
            // The reason as the answer wrote it.
            let reason = json["reason"].as_str().map(str::to_owned);
            let (outcome, cached) = match answer {
                PingAnswer::Reserved { cached, .. } => (PingOutcome::Reserved, *cached),
                PingAnswer::NoTarget { .. } => (PingOutcome::NoTarget, false),
            };
            (outcome, cached, reason, held.as_ref().map(|h| h.uuid), json)
        }
        Err(error) => (
            PingOutcome::Rejected,
            false,
            Some(error.code().to_owned()),
            None,
            error.body(),
        ),
    };
    PingRecord {
        id: ping.id,
        received_at: ping.at,
        campaign_id: ping.campaign.id,
        publisher_id: answered.publisher_id,
        caller_number: answered.caller.clone(),
        request: ping.request.logged(),
        outcome,
        cached,
        reason,
        reservation,
        answer,
    }
}
