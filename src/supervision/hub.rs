//! The live event hub: the calls in progress that this process handles, and the supervisors'
//! streams that want to hear of every change.

use std::{collections::HashMap, sync::Arc, time::Duration};

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult};
use actix_web_lab::sse;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;

use super::Metrics;
use crate::{
    clock::Clock,
    domain::{
        access::{Grant, Lens},
        call::CallSid,
        plan::CampaignId,
        portal,
        supervision::CallSummary,
    },
};

/// Events a stream may fall behind by before it is cut off; the client reconnects and starts
/// again from the snapshot, rather than the hub holding memory for a reader that does not read.
const STREAM_BACKLOG: usize = 1024;

/// How long an ended call is remembered, so that a late summary of it (from an actor that
/// resumed it without the store) cannot bring it back to life.
const ENDED_MEMORY: SignedDuration = SignedDuration::from_mins(10);

/// A call unchanged for longer is taken for one whose end was never reported, and no longer
/// shown as live: providers cap a call at four hours.
const LONGEST_SILENCE: SignedDuration = SignedDuration::from_mins(4 * 60 + 5);

const SWEEP: Duration = Duration::from_secs(60);

pub struct EventHub {
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    live: HashMap<CallSid, CallSummary>,
    /// Calls that ended lately: their last version, and when the hub heard of the end.
    ended: HashMap<CallSid, (u32, Timestamp)>,
    streams: Vec<Stream>,
}

struct Stream {
    sender: mpsc::Sender<sse::Event>,
    campaign_id: Option<CampaignId>,
    /// Whose calls it hears of, and how much of them.
    grant: Grant,
}

impl Stream {
    fn wants(&self, call: &CallSummary) -> bool {
        self.grant.reaches(&call.owner())
            && self
                .campaign_id
                .is_none_or(|id| call.entry_campaign_id == Some(id) || call.campaign_id == Some(id))
    }

    /// Sends the change of `call` (as encoded for this stream's lens by `events`) if the stream
    /// wants it; whether the stream can still take events.
    fn send(&self, call: &CallSummary, events: &mut Encoded) -> bool {
        if !self.wants(call) {
            return !self.sender.is_closed();
        }
        match events.for_lens(call, self.grant.lens()) {
            Some(event) => self.sender.try_send(event.clone()).is_ok(),
            None => true,
        }
    }
}

/// A change encoded at most once per lens, however many streams hear of it (and not at all
/// if none does).
#[derive(Default)]
struct Encoded {
    staff: Option<Option<sse::Event>>,
    publisher: Option<Option<sse::Event>>,
    buyer: Option<Option<sse::Event>>,
}

impl Encoded {
    fn for_lens(&mut self, call: &CallSummary, lens: Lens) -> Option<&sse::Event> {
        let slot = match lens {
            Lens::Staff { .. } => &mut self.staff,
            Lens::Publisher => &mut self.publisher,
            Lens::Buyer => &mut self.buyer,
        };
        slot.get_or_insert_with(|| event(call, lens)).as_ref()
    }
}

/// A call's change as a server-sent event: `event: call`, the summary (as the lens shows it)
/// as data, and an id that orders changes of one call.
fn event(call: &CallSummary, lens: Lens) -> Option<sse::Event> {
    // Staff see the summary as it is: encoded straight (a partner's lens reads it as a JSON
    // value first, four times the work, only for partners' streams).
    let data = match lens {
        Lens::Staff { .. } => sse::Data::new_json(call),
        partner => serde_json::to_value(call)
            .map(|value| portal::summary(value, partner))
            .and_then(sse::Data::new_json),
    };
    match data {
        Ok(data) => Some(
            data.event("call")
                .id(format!("{}:{}", call.call_sid, call.version))
                .into(),
        ),
        Err(error) => {
            tracing::error!(%error, call_sid = %call.call_sid, "a call summary could not be encoded");
            None
        }
    }
}

impl EventHub {
    pub fn new(metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        Self {
            metrics,
            clock,
            live: HashMap::new(),
            ended: HashMap::new(),
            streams: Vec::new(),
        }
    }

    /// Forgets ended calls once no late summary can come, and live ones never heard of again.
    fn sweep(&mut self) {
        let now = self.clock.now();
        self.ended
            .retain(|_, (_, at)| now.duration_since(*at) < ENDED_MEMORY);
        let before = self.live.len();
        self.live
            .retain(|_, call| now.duration_since(call.state_changed_at) < LONGEST_SILENCE);
        if self.live.len() < before {
            tracing::warn!(
                calls = before - self.live.len(),
                "live calls unchanged for over four hours are no longer shown as live"
            );
        }
        self.metrics.set_live_calls(self.live.len());
    }
}

impl Actor for EventHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        ctx.run_interval(SWEEP, |hub, _| hub.sweep());
    }
}

/// A call changed.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Changed(pub CallSummary);

impl Handler<Changed> for EventHub {
    type Result = ();

    fn handle(&mut self, Changed(call): Changed, _: &mut Self::Context) {
        // Changes of one call arrive in order (its actor sends them one webhook at a time), but
        // a call's actor can be replaced: an older version never overwrites a newer one.
        let known = (self.live.get(&call.call_sid).map(|c| c.version))
            .or_else(|| self.ended.get(&call.call_sid).map(|(version, _)| *version));
        if known.is_some_and(|version| version > call.version) {
            return;
        }
        let mut events = Encoded::default();
        self.streams.retain(|stream| stream.send(&call, &mut events));
        if call.is_live() {
            self.live.insert(call.call_sid.clone(), call);
        } else {
            self.live.remove(&call.call_sid);
            let heard = self.clock.now();
            self.ended.insert(call.call_sid, (call.version, heard));
        }
        self.metrics.set_live_calls(self.live.len());
    }
}

/// Ends every stream (the server is stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStreams;

impl Handler<CloseStreams> for EventHub {
    type Result = ();

    fn handle(&mut self, _: CloseStreams, _: &mut Self::Context) {
        self.streams.clear();
    }
}

/// A new stream: the calls in progress now, then every change.
#[derive(Message)]
#[rtype(result = "mpsc::Receiver<sse::Event>")]
pub struct Subscribe {
    /// Only calls that arrived in or are routed in this campaign.
    pub campaign_id: Option<CampaignId>,
    /// Only calls it reaches, as its lens shows them.
    pub grant: Grant,
}

impl Handler<Subscribe> for EventHub {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        let (sender, receiver) = mpsc::channel(STREAM_BACKLOG.max(self.live.len() + 1));
        let stream = Stream {
            sender,
            campaign_id: msg.campaign_id,
            grant: msg.grant,
        };
        let mut snapshot: Vec<&CallSummary> = self.live.values().collect();
        snapshot.sort_by_key(|call| call.started_at);
        let open = (snapshot.into_iter()).all(|call| stream.send(call, &mut Encoded::default()));
        if open {
            self.streams.push(stream);
        }
        MessageResult(receiver)
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::domain::call::{CallRecord, Caller};
    use crate::fresh::Generate;

    fn call(n: u32, campaign: CampaignId) -> CallSummary {
        let sid = CallSid::parse(&format!("CA{n:032x}")).unwrap();
        let mut record = CallRecord::new(
            sid,
            Caller::from_provider("+14155550123"),
            "+18005550100".into(),
            Timestamp::UNIX_EPOCH,
        );
        record.enter_campaign(None, campaign);
        CallSummary::of(&record)
    }

    fn sid_of(event: &sse::Event) -> String {
        let sse::Event::Data(data) = event else {
            panic!("not data: {event:?}")
        };
        format!("{data:?}")
    }

    #[actix_web::test]
    async fn a_stream_opens_with_its_campaigns_live_calls_and_never_hears_an_older_version() {
        let hub = EventHub::new(Arc::new(Metrics::new()), Arc::new(crate::clock::SystemClock)).start();
        let (main, other) = (CampaignId::generate(), CampaignId::generate());
        hub.send(Changed(call(1, main))).await.unwrap();
        hub.send(Changed(call(2, other))).await.unwrap();
        let mut stream = hub
            .send(Subscribe {
                campaign_id: Some(main),
                grant: Grant::install_supervisor(),
            })
            .await
            .unwrap();
        assert!(sid_of(&stream.recv().await.unwrap()).contains(&format!("{:032x}", 1)));

        let mut newer = call(1, main);
        newer.version = 5;
        hub.send(Changed(newer.clone())).await.unwrap();
        let mut older = newer.clone();
        older.version = 4;
        hub.send(Changed(older)).await.unwrap();
        hub.send(Changed(call(3, other))).await.unwrap();
        let id = format!("{}:5", newer.call_sid);
        assert!(
            sid_of(&stream.recv().await.unwrap()).contains(&id),
            "the newer version"
        );
        assert!(
            stream.try_recv().is_err(),
            "neither the older version nor another campaign's call"
        );
    }

    #[actix_web::test]
    async fn a_stream_that_does_not_read_is_cut_off_rather_than_buffered_without_end() {
        let hub = EventHub::new(Arc::new(Metrics::new()), Arc::new(crate::clock::SystemClock)).start();
        let campaign = CampaignId::generate();
        let mut stream = hub
            .send(Subscribe {
                campaign_id: None,
                grant: Grant::install_supervisor(),
            })
            .await
            .unwrap();
        for n in 0..=STREAM_BACKLOG as u32 {
            hub.send(Changed(call(n, campaign))).await.unwrap();
        }
        let mut received = 0;
        while stream.recv().await.is_some() {
            received += 1;
        }
        assert_eq!(
            received, STREAM_BACKLOG,
            "then the stream ends, and the client reconnects"
        );
    }

    #[actix_web::test]
    async fn an_ended_call_is_not_brought_back_by_a_late_older_summary() {
        let hub = EventHub::new(Arc::new(Metrics::new()), Arc::new(crate::clock::SystemClock)).start();
        let campaign = CampaignId::generate();
        let mut ended = call(1, campaign);
        ended.state = crate::domain::call::CallState::Ended;
        ended.version = 7;
        hub.send(Changed(ended)).await.unwrap();
        let mut late = call(1, campaign);
        late.version = 3;
        hub.send(Changed(late)).await.unwrap();
        let mut stream = hub
            .send(Subscribe {
                campaign_id: None,
                grant: Grant::install_supervisor(),
            })
            .await
            .unwrap();
        assert!(stream.try_recv().is_err(), "no live call in the snapshot");
    }
}
