//! What a partner sees of a call: the network's view of it, narrowed by allow-lists (never by
//! removing what is known to be secret: a field added later stays hidden from partners until it
//! is named here).
//!
//! A publisher sees its calls, its payout, whether they were duplicates and how long they
//! lasted, never revenue nor which buyer took a call. A buyer sees the calls it took, its own
//! dials and recordings and the caller, never the publisher, its payout or the tracking number.

use serde_json::{Map, Value};

use super::{
    access::{Grant, Lens, Owner, Scope},
    plan::BuyerId,
    supervision::CallSummary,
};

const PUBLISHER_SUMMARY: &[&str] = &[
    "call_sid",
    "caller",
    "called",
    "caller_state",
    "company_id",
    "entry_campaign_id",
    "campaign_id",
    "publisher_id",
    "state",
    "outcome",
    "drop_reason",
    "converted",
    "duplicate",
    "publisher_duplicate",
    "publisher_payout",
    "started_at",
    "state_changed_at",
    "ended_at",
    "version",
    "in_state_ms",
];

const BUYER_SUMMARY: &[&str] = &[
    "call_sid",
    "caller",
    "caller_state",
    "buyer_id",
    "state",
    "outcome",
    "converted",
    "duplicate",
    "started_at",
    "state_changed_at",
    "ended_at",
    "version",
    "in_state_ms",
];

/// A dial as a publisher sees it: how it went, not to whom.
const PUBLISHER_DIAL: &[&str] = &[
    "number",
    "status",
    "duplicate",
    "connected_seconds",
    "converted",
    "started_at",
    "answered_at",
    "ended_at",
];

/// A buyer's own dial.
const BUYER_DIAL: &[&str] = &[
    "number",
    "buyer_id",
    "status",
    "duplicate",
    "connected_seconds",
    "bridged_seconds",
    "converted",
    "started_at",
    "answered_at",
    "ended_at",
    "screening",
];

/// Timeline entries a publisher reads, and their fields.
const PUBLISHER_STORY: &[(&str, &[&str])] = &[
    (
        "dial_ended",
        &[
            "at",
            "kind",
            "attempt",
            "status",
            "connected_seconds",
            "duplicate",
            "converted",
        ],
    ),
    (
        "publisher_settled",
        &["at", "kind", "publisher_id", "payout", "duplicate"],
    ),
    ("ended", &["at", "kind", "outcome", "drop_reason"]),
];

/// Timeline entries a buyer reads (of its own dials only), and their fields.
const BUYER_STORY: &[(&str, &[&str])] = &[
    ("answered", &["at", "kind", "attempt", "buyer_id"]),
    ("whispered", &["at", "kind", "attempt", "buyer_id", "press_1"]),
    ("screened", &["at", "kind", "attempt", "buyer_id", "screening"]),
    (
        "recorded",
        &[
            "at",
            "kind",
            "attempt",
            "recording_sid",
            "status",
            "duration_seconds",
        ],
    ),
    (
        "dial_ended",
        &[
            "at",
            "kind",
            "attempt",
            "buyer_id",
            "status",
            "connected_seconds",
            "duplicate",
            "converted",
        ],
    ),
    ("ended", &["at", "kind", "outcome"]),
];

impl CallSummary {
    /// Whose the call is: its company's, the publisher's that sent it, the buyer's that took it.
    pub fn owner(&self) -> Owner {
        Owner {
            company: self.company_id,
            publisher: self.publisher_id,
            buyer: self.buyer_id,
        }
    }
}

/// `value` (an object) with only the fields named.
pub fn only(value: Value, fields: &[&str]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| fields.contains(&key.as_str()))
                .collect::<Map<_, _>>(),
        ),
        _ => Value::Null,
    }
}

/// A call's summary (as serialized) as the lens shows it.
pub fn summary(summary: Value, lens: Lens) -> Value {
    match lens {
        Lens::Staff { .. } => summary,
        Lens::Publisher => only(summary, PUBLISHER_SUMMARY),
        Lens::Buyer => only(summary, BUYER_SUMMARY),
    }
}

/// The buyers whose dials a grant sees: all (`None`) for everyone but a buyer.
fn own_buyers(grant: &Grant) -> Option<Vec<BuyerId>> {
    match grant.scope() {
        Scope::Buyers(ids) => Some(ids.iter().copied().collect()),
        _ => None,
    }
}

/// One call's detail (as `GET /calls/{sid}` writes it: the summary's fields, `dials`,
/// `recordings`, `timeline`, …) as the grant sees it.
pub fn call_detail(detail: Value, grant: &Grant) -> Value {
    let lens = grant.lens();
    if let Lens::Staff { .. } = lens {
        return detail;
    }
    let Value::Object(mut detail) = detail else {
        return Value::Null;
    };
    let field = |detail: &mut Map<String, Value>, name: &str| detail.remove(name).unwrap_or(Value::Null);
    let dials = array(field(&mut detail, "dials"));
    let recordings = array(field(&mut detail, "recordings"));
    let timeline = array(field(&mut detail, "timeline"));
    let mut seen = match summary(Value::Object(detail), lens) {
        Value::Object(seen) => seen,
        _ => Map::new(),
    };
    let mine = own_buyers(grant);
    let is_mine = |dial: &Value| {
        mine.as_ref().is_none_or(|mine| {
            (dial.get("buyer_id").and_then(Value::as_str))
                .is_some_and(|id| mine.iter().any(|own| own.to_string() == id))
        })
    };
    let own_dials: Vec<&Value> = dials.iter().filter(|dial| is_mine(dial)).collect();
    let own_attempts: Vec<u64> = (own_dials.iter())
        .filter_map(|dial| dial.get("number").and_then(Value::as_u64))
        .collect();
    let (dial_fields, story) = match lens {
        Lens::Buyer => (BUYER_DIAL, BUYER_STORY),
        _ => (PUBLISHER_DIAL, PUBLISHER_STORY),
    };
    seen.insert(
        "dials".into(),
        Value::Array(
            own_dials
                .into_iter()
                .map(|dial| only(dial.clone(), dial_fields))
                .collect(),
        ),
    );
    // Recordings are the buyer's: a publisher hears none.
    let recordings = match lens {
        Lens::Buyer => recordings
            .into_iter()
            .filter(|recording| of_attempts(recording, "attempt", &own_attempts))
            .collect(),
        _ => Vec::new(),
    };
    seen.insert("recordings".into(), Value::Array(recordings));
    let timeline = timeline
        .into_iter()
        .filter_map(|entry| {
            let kind = entry.get("kind").and_then(Value::as_str)?;
            let (_, fields) = story.iter().find(|(named, _)| *named == kind)?;
            // A buyer reads of its own dials (and the call's end) only.
            let own = lens != Lens::Buyer
                || entry.get("attempt").is_none()
                || of_attempts(&entry, "attempt", &own_attempts);
            own.then(|| only(entry, fields))
        })
        .collect();
    seen.insert("timeline".into(), Value::Array(timeline));
    Value::Object(seen)
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

fn of_attempts(value: &Value, field: &str, attempts: &[u64]) -> bool {
    (value.get(field).and_then(Value::as_u64)).is_some_and(|attempt| attempts.contains(&attempt))
}
