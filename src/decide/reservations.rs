//! The reservation book: the live reservations, owned by an actor and asked by pings (is there
//! one already? keep this one) and by calls arriving (claim it), in place when it is free (see
//! [`owned`](super::owned)). Every reservation kept and claimed is also written to the RTB
//! log, through [`Write`] (the log lives above this layer, in `rtb`).

use std::{collections::HashSet, sync::Arc, time::Duration};

use actix::{ArbiterHandle, Message, Recipient};
use jiff::Timestamp;

use super::owned::{Owned, Step};
use crate::{
    clock::Clock,
    domain::{
        call::CallSid,
        phone::E164,
        plan::{BuyerId, CampaignId, PublisherId},
        rtb::{Claimant, HeldElsewhere, Reservation, ReservationBook, RtbWrite},
    },
    store::{RtbStore, StoreError},
};

/// A line for the RTB log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Write(pub RtbWrite);

pub struct ReservationActor {
    book: ReservationBook,
    log: Recipient<Write>,
    clock: Arc<dyn Clock>,
}

impl ReservationActor {
    /// Rebuilds the book from the store (start-up): a bid made before a restart still holds.
    pub async fn load(
        store: &dyn RtbStore,
        clock: Arc<dyn Clock>,
        log: Recipient<Write>,
    ) -> Result<Self, StoreError> {
        let now = clock.now();
        let mut book = ReservationBook::default();
        for (reservation, claimed) in store.held_reservations(now).await? {
            book.load(reservation, claimed);
        }
        tracing::info!(reservations = book.len(), "RTB reservations loaded");
        Ok(Self { book, log, clock })
    }

    /// Its actor, on `arbiter`, and the handle pings and calls ask it through.
    pub fn start(self, arbiter: &ArbiterHandle) -> Reservations {
        let clock = self.clock;
        // Expired reservations hold nothing already; this only returns their memory.
        let forget: Box<dyn Fn(&mut Booked) + Send> =
            Box::new(move |booked| booked.book.forget_expired(clock.now()));
        let booked = Booked {
            book: self.book,
            log: self.log,
        };
        Owned::start(booked, arbiter, Some((Duration::from_secs(60), forget)))
    }
}

/// The book, and the log that hears of every reservation kept and claimed.
pub struct Booked {
    book: ReservationBook,
    log: Recipient<Write>,
}

/// The reservation book, as pings, calls and other nodes' news reach it.
pub type Reservations = Owned<Booked>;

/// What a ping of `publisher`'s for the caller finds in the campaign: its own live reservation,
/// if it has one, and the buyers other publishers' live reservations hold for the caller.
pub struct Find {
    pub campaign: CampaignId,
    pub caller: E164,
    pub publisher: Option<PublisherId>,
    pub at: Timestamp,
}

#[derive(Debug, Default)]
pub struct Found {
    pub own: Option<Reservation>,
    pub held_for_others: HashSet<BuyerId>,
}

impl Step for Find {
    type Index = Booked;
    type Output = Found;

    fn take(self, booked: &mut Booked) -> Self::Output {
        let book = &booked.book;
        Found {
            own: (book.find(self.campaign, &self.caller, self.publisher, self.at)).cloned(),
            held_for_others: book.held_for_others(self.campaign, &self.caller, self.publisher, self.at),
        }
    }
}

/// Keep a bid's reservation, unless its publisher got one for the caller meanwhile: the one
/// kept, and whether it was there already; refused if another publisher's holds its buyer.
pub struct Reserve {
    pub reservation: Reservation,
    pub at: Timestamp,
}

impl Step for Reserve {
    type Index = Booked;
    type Output = Result<(Reservation, bool), HeldElsewhere>;

    fn take(self, booked: &mut Booked) -> Self::Output {
        let (kept, cached) = booked.book.reserve(self.reservation, self.at)?;
        if !cached {
            (booked.log).do_send(Write(RtbWrite::Reserved(Box::new(kept.clone()))));
        }
        Ok((kept, cached))
    }
}

/// A reservation another node made or claimed (or the store holds): the book learns it, with
/// the call that claimed it, if one did.
pub struct Learned {
    pub reservation: Reservation,
    pub claimed: Option<CallSid>,
}

impl Step for Learned {
    type Index = Booked;
    type Output = ();

    fn take(self, booked: &mut Booked) {
        booked.book.load(self.reservation, self.claimed);
    }
}

/// The caller's call reached the campaign: the live reservation there it may claim, now claimed
/// (once, by this call: asked again, by the same call, the same reservation).
pub struct Claim {
    pub campaign: CampaignId,
    pub caller: E164,
    /// Whose call it is, by the number it dialed: it claims no other publisher's reservation.
    pub claimant: Claimant,
    pub call_sid: CallSid,
    pub at: Timestamp,
}

impl Step for Claim {
    type Index = Booked;
    type Output = Option<Reservation>;

    fn take(self, booked: &mut Booked) -> Self::Output {
        let (claimed, first) = booked.book.claim(
            self.campaign,
            &self.caller,
            &self.claimant,
            &self.call_sid,
            self.at,
        )?;
        if first {
            booked.log.do_send(Write(RtbWrite::Claimed {
                reservation: Box::new(claimed.clone()),
                call_sid: self.call_sid,
                at: self.at,
            }));
        }
        Some(claimed)
    }
}
