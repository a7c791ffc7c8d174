//! The reservation book as an actor: one owner of the live reservations, asked by pings (is
//! there one already? keep this one) and by calls arriving (claim it).

use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, MessageResult};
use jiff::Timestamp;

use super::log::{RtbLog, Write};
use crate::{
    clock::Clock,
    domain::{
        call::CallSid,
        phone::E164,
        plan::CampaignId,
        rtb::{Reservation, ReservationBook, RtbWrite},
    },
    store::{Store, StoreError},
};

pub struct ReservationActor {
    book: ReservationBook,
    log: Addr<RtbLog>,
    clock: Arc<dyn Clock>,
}

impl ReservationActor {
    /// Rebuilds the book from the store (start-up): a bid made before a restart still holds.
    pub async fn load(
        store: &dyn Store,
        clock: Arc<dyn Clock>,
        log: Addr<RtbLog>,
    ) -> Result<Self, StoreError> {
        let now = clock.now();
        let mut book = ReservationBook::default();
        for (reservation, claimed) in store.held_reservations(now).await? {
            book.load(reservation, claimed);
        }
        tracing::info!(reservations = book.len(), "RTB reservations loaded");
        Ok(Self { book, log, clock })
    }
}

impl Actor for ReservationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every ping and every arriving call asks it; a burst must queue, not fail.
        ctx.set_mailbox_capacity(4096);
        // Expired reservations hold nothing already; this only returns their memory.
        ctx.run_interval(std::time::Duration::from_secs(60), |actor, _| {
            actor.book.forget_expired(actor.clock.now());
        });
    }
}

/// The caller's live reservation in the campaign, if it has one.
#[derive(Message)]
#[rtype(result = "Option<Reservation>")]
pub struct Find {
    pub campaign: CampaignId,
    pub caller: E164,
    pub at: Timestamp,
}

impl Handler<Find> for ReservationActor {
    type Result = Option<Reservation>;

    fn handle(&mut self, msg: Find, _: &mut Self::Context) -> Self::Result {
        self.book.find(msg.campaign, &msg.caller, msg.at).cloned()
    }
}

/// Keep a bid's reservation, unless the caller got one meanwhile: the one kept, and whether it
/// was there already.
#[derive(Message)]
#[rtype(result = "(Reservation, bool)")]
pub struct Reserve {
    pub reservation: Reservation,
    pub at: Timestamp,
}

impl Handler<Reserve> for ReservationActor {
    type Result = MessageResult<Reserve>;

    fn handle(&mut self, msg: Reserve, _: &mut Self::Context) -> Self::Result {
        let (kept, cached) = self.book.reserve(msg.reservation, msg.at);
        if !cached {
            self.log
                .do_send(Write(RtbWrite::Reserved(Box::new(kept.clone()))));
        }
        MessageResult((kept, cached))
    }
}

/// A reservation another node made or claimed (or the store holds): the book learns it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Learned {
    pub reservation: Reservation,
    pub claimed: bool,
}

impl Handler<Learned> for ReservationActor {
    type Result = ();

    fn handle(&mut self, msg: Learned, _: &mut Self::Context) {
        self.book.load(msg.reservation, msg.claimed);
    }
}

/// The caller's call reached the campaign: its live reservation there, now claimed (once).
#[derive(Message)]
#[rtype(result = "Option<Reservation>")]
pub struct Claim {
    pub campaign: CampaignId,
    pub caller: E164,
    pub call_sid: CallSid,
    pub at: Timestamp,
}

impl Handler<Claim> for ReservationActor {
    type Result = Option<Reservation>;

    fn handle(&mut self, msg: Claim, _: &mut Self::Context) -> Self::Result {
        let claimed = self.book.claim(msg.campaign, &msg.caller, msg.at)?;
        self.log.do_send(Write(RtbWrite::Claimed {
            reservation: Box::new(claimed.clone()),
            call_sid: msg.call_sid,
            at: msg.at,
        }));
        Some(claimed)
    }
}
