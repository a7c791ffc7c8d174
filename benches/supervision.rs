//! What supervision adds to each webhook: the call's summary before and after, what changed
//! for the metrics, and the event sent to supervisors' streams. `cargo bench --bench supervision`.

use std::hint::black_box;
use switchboard::fresh::Generate;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use switchboard::{
    domain::{
        access::Lens,
        call::{AttemptKind, CallRecord, CallSid, Caller, DialStatus},
        plan::{BuyerId, CampaignId},
        portal,
        supervision::CallSummary,
    },
    supervision::Metrics,
};

/// A call two buyers were dialed for, one skipped as a duplicate, now talking to the second.
fn call() -> CallRecord {
    let at = |s| Timestamp::UNIX_EPOCH + SignedDuration::from_secs(s);
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("a call id");
    let mut call = CallRecord::new(
        sid,
        Caller::from_provider("+14155550123"),
        "+18005550100".into(),
        at(0),
    );
    let campaign = CampaignId::generate();
    call.enter_campaign(None, campaign);
    call.avoided_duplicates([BuyerId::generate()]);
    call.begin_attempt(
        BuyerId::generate(),
        campaign,
        AttemptKind::Buyer,
        Some(false),
        at(1),
    );
    call.attempt_ended(1, DialStatus::Busy, 0, Some(false), 60, at(5));
    call.begin_attempt(
        BuyerId::generate(),
        campaign,
        AttemptKind::Buyer,
        Some(false),
        at(6),
    );
    call.leg_answered(2, at(9));
    call.timeline_len = 9;
    call
}

fn supervision(c: &mut Criterion) {
    let metrics = Metrics::new();
    let (before, mut after) = (call(), call());
    after.timeline_len += 2;
    c.bench_function("supervision: summaries, news and metrics of one webhook", |b| {
        b.iter(|| {
            let (before, after) = (
                CallSummary::of(black_box(&before)),
                CallSummary::of(black_box(&after)),
            );
            metrics.observe_call(&after.news_since(Some(&before)));
            black_box(after)
        })
    });
    let summary = CallSummary::of(&after);
    c.bench_function("supervision: the event's JSON, once per change", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&summary))))
    });
    // A partner's stream: the summary read as a JSON value, narrowed by the lens's allow-list
    // (staff streams get the encoding above).
    c.bench_function("supervision: the event's JSON for a publisher's portal", |b| {
        b.iter(|| {
            let value = serde_json::to_value(black_box(&summary)).unwrap_or_default();
            black_box(serde_json::to_string(&portal::summary(value, Lens::Publisher)))
        })
    });
}

criterion_group!(benches, supervision);
criterion_main!(benches);
