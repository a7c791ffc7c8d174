//! Calls, their attempts and timelines, conversions and de-dupe marks.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use sqlx::AnyConnection;

use super::{
    Backend, SqlStore,
    cluster::{Newsroom, publish},
    enum_text, finish, from_json, parse_id, parse_stored, timestamp, to_json,
};
use crate::{
    domain::{
        call::{Attempt, CallRecord, CallSid, Caller, Conversion},
        capacity::LoadChange,
        cluster::News,
        dedupe::{MarkBatch, Touch, Touched},
        money::Money,
        phone::E164,
        postback::Postback,
        timeline::TimelineEntry,
    },
    store::{CallChange, CallFilter, CallStore, Saved, StoreError, SupervisionStore},
};

fn ms(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn optional_timestamp(ms: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    ms.map(timestamp).transpose()
}

#[async_trait]
impl CallStore for SqlStore {
    async fn save_call(&self, change: &CallChange<'_>) -> Result<Saved, StoreError> {
        self.call_writers.save(change).await
    }

    async fn call(&self, sid: &CallSid) -> Result<Option<CallRecord>, StoreError> {
        // Nearly every call asked for is new: one statement answers that, where a snapshot
        // of the call and its attempts takes a transaction.
        let known: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM calls WHERE call_sid = $1")
            .bind(sid.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Ok(None);
        }
        let mut tx = self.read_tx().await?;
        let result = load_in(&mut tx, sid).await;
        finish(tx, result).await
    }

    async fn timeline(&self, sid: &CallSid) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT detail FROM call_events WHERE call_sid = $1 ORDER BY seq")
                .bind(sid.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|(detail,)| from_json("call_events.detail", detail))
            .collect()
    }

    async fn dedupe_marks(&self, each: &mut (dyn FnMut(MarkBatch) + Send)) -> Result<(), StoreError> {
        self.dedupe_marks_by(super::marks::MARK_BATCH, each).await
    }

    async fn unended_before(&self, before: Timestamp, limit: u32) -> Result<Vec<CallSid>, StoreError> {
        let filter = CallFilter {
            live: true,
            to: Some(before),
            limit,
            ..CallFilter::default()
        };
        let calls = SupervisionStore::calls(self, &filter).await?;
        Ok(calls.into_iter().map(|call| call.call_sid).collect())
    }

    async fn unsettled(
        &self,
        since: Timestamp,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<CallSid>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT call_sid FROM calls
             WHERE publisher_id IS NOT NULL AND publisher_payout_cents IS NULL AND state = 'ended'
               AND ended_at_ms >= $1 AND ended_at_ms < $2
             ORDER BY ended_at_ms LIMIT $3",
        )
        .bind(since.as_millisecond())
        .bind(before.as_millisecond())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(sid,)| CallSid::parse(&sid).map_err(StoreError::Corrupt))
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.ready().await
    }
}

/// Saves several calls' changes in four or five statements whatever their number: each table's
/// rows go to the database as one JSON array (bound as `$1`), which the statement reads as
/// rows. A statement costs far more than a row, so this is what lets a group commit grow.
///
/// Within one statement a row may be changed once only (PostgreSQL refuses more), so the rows
/// are merged first: a call's latest save wins, entries and conversions are kept once, and a
/// caller's touches in a scope are reduced to the latest of each kind.
///
/// In the same transaction, the capacity slots of legs and calls that ended are freed (so a
/// buyer's count of calls and of slots changes at once for every node), and other nodes are
/// sent the news (see [`News`]).
pub(super) async fn save_all(
    conn: &mut AnyConnection,
    backend: Backend,
    newsroom: &Newsroom,
    changes: &[CallChange<'_>],
) -> Result<Written, StoreError> {
    match backend {
        Backend::Sqlite => save_on_sqlite(conn, changes).await,
        Backend::Postgres => save_on_postgres(conn, newsroom, changes).await.map(Written::Done),
    }
}

/// What a save wrote.
pub(super) enum Written {
    /// Everything but the fresh calls the store held already, which are named.
    Done(HashSet<CallSid>),
    /// The fresh calls named were stored already, and changes of theirs were written: the
    /// transaction must be rolled back and the save made again without them.
    Undo(HashSet<CallSid>),
}

/// On SQLite, in one statement: a fresh call the store held already is only found out once
/// its changes are written with the others' (rarely: a first webhook retried across a restart),
/// and then the whole is written again without it.
async fn save_on_sqlite(conn: &mut AnyConnection, changes: &[CallChange<'_>]) -> Result<Written, StoreError> {
    let rows = Rows::of(changes)?;
    // Bound in the order the statement reads them (`$1` to `$8`).
    let inserted: Vec<String> = sqlx::query_scalar(SAVE_ON_SQLITE)
        .bind(to_json(&fresh_rows(changes)?)?)
        .bind(to_json(&rows.calls)?)
        .bind(to_json(&rows.attempts)?)
        .bind(to_json(&rows.events)?)
        .bind(to_json(&rows.conversions)?)
        .bind(to_json(&rows.marks)?)
        .bind(to_json(&rows.postbacks)?)
        .bind(to_json(&saved_sids(changes))?)
        .bind(to_json(&unheld(changes))?)
        .fetch_all(&mut *conn)
        .await?;
    let existed = not_inserted(changes, &inserted);
    Ok(if existed.is_empty() {
        Written::Done(existed)
    } else {
        Written::Undo(existed)
    })
}

/// On PostgreSQL, a statement per table: the fresh calls first, so that what the store held
/// already is left out of the rest.
async fn save_on_postgres(
    conn: &mut AnyConnection,
    newsroom: &Newsroom,
    changes: &[CallChange<'_>],
) -> Result<HashSet<CallSid>, StoreError> {
    let fresh = fresh_rows(changes)?;
    let inserted: Vec<String> = if fresh.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar(INSERT_FRESH_CALLS)
            .bind(to_json(&fresh)?)
            .fetch_all(&mut *conn)
            .await?
    };
    let existed = not_inserted(changes, &inserted);
    let kept: Vec<CallChange<'_>> = (changes.iter())
        .filter(|change| !(change.inserts_new() && existed.contains(&change.call.sid)))
        .copied()
        .collect();
    let changes = kept.as_slice();
    let rows = Rows::of(changes)?;
    // Parents first: attempts and entries refer to their call.
    over_rows(conn, UPSERT_CALLS, &rows.calls).await?;
    over_rows(conn, UPSERT_ATTEMPTS, &rows.attempts).await?;
    over_rows(conn, INSERT_EVENTS, &rows.events).await?;
    over_rows(conn, INSERT_CONVERSIONS, &rows.conversions).await?;
    over_rows(conn, UPSERT_MARKS, &rows.marks).await?;
    over_rows(conn, INSERT_POSTBACKS, &rows.postbacks).await?;
    over_rows(conn, FREE_SLOTS, &saved_sids(changes)).await?;
    over_rows(conn, GIVE_BACK_SLOTS, &unheld(changes)).await?;
    let news = changes.iter().flat_map(|change| {
        let touched = (!change.touched.is_empty()).then(|| News::Touched(change.touched.to_vec()));
        let load = (!change.load.is_empty()).then(|| News::Load(change.load.to_vec()));
        touched.into_iter().chain(load)
    });
    publish(conn, newsroom, news).await?;
    Ok(existed)
}

/// The rows of the calls taken for new (see [`Write::InsertNew`]), inserted only where the
/// store has no such call: that is how a call's first webhook learns whether the call is new
/// without a read of its own before routing. The question rides on the commit the answer
/// waits for anyway.
fn fresh_rows<'a>(changes: &[CallChange<'a>]) -> Result<Vec<CallJson<'a>>, StoreError> {
    (changes.iter())
        .filter(|change| change.inserts_new())
        .map(|change| CallJson::of(change.call))
        .collect()
}

/// The fresh calls not among those `inserted`: the store held them already.
fn not_inserted(changes: &[CallChange<'_>], inserted: &[String]) -> HashSet<CallSid> {
    let inserted: HashSet<&str> = inserted.iter().map(String::as_str).collect();
    (changes.iter())
        .filter(|change| change.inserts_new() && !inserted.contains(change.call.sid.as_str()))
        .map(|change| change.call.sid.clone())
        .collect()
}

/// Slots held for legs that were not dialed to their buyer (see [`LoadChange::Unheld`]).
fn unheld<'a>(changes: &[CallChange<'a>]) -> Vec<UnheldJson<'a>> {
    (changes.iter())
        .flat_map(|change| change.load)
        .filter_map(|load| match load {
            LoadChange::Unheld { buyer, leg } => Some(UnheldJson {
                call_sid: leg.call.as_str(),
                attempt: i64::from(leg.attempt),
                buyer_id: buyer.to_string(),
            }),
            _ => None,
        })
        .collect()
}

#[derive(Serialize)]
struct UnheldJson<'a> {
    call_sid: &'a str,
    attempt: i64,
    buyer_id: String,
}

/// Every call saved, whose ended legs' slots are freed.
fn saved_sids<'a>(changes: &[CallChange<'a>]) -> Vec<SidJson<'a>> {
    let mut seen = HashSet::new();
    (changes.iter())
        .filter(|change| seen.insert(change.call.sid.as_str()))
        .map(|change| SidJson {
            call_sid: change.call.sid.as_str(),
        })
        .collect()
}

/// The rows that saving `changes` writes, each table's merged.
struct Rows<'a> {
    calls: Vec<CallJson<'a>>,
    attempts: Vec<AttemptJson<'a>>,
    events: Vec<EventJson<'a>>,
    conversions: Vec<ConversionJson<'a>>,
    marks: Vec<MarkRow<'a>>,
    postbacks: Vec<PostbackJson<'a>>,
}

impl<'a> Rows<'a> {
    fn of(changes: &[CallChange<'a>]) -> Result<Self, StoreError> {
        let mut calls = Vec::new();
        let mut attempts = Vec::new();
        let mut seen_calls = HashSet::new();
        for change in changes.iter().rev() {
            let call = change.call;
            if seen_calls.insert(call.sid.as_str()) {
                // A fresh call's row was inserted already (see `insert_fresh`).
                if !change.inserts_new() {
                    calls.push(CallJson::of(call)?);
                }
                for attempt in &call.attempts {
                    attempts.push(AttemptJson::of(&call.sid, attempt)?);
                }
            }
        }
        let mut events = Vec::new();
        let mut seen_events = HashSet::new();
        let mut conversions = Vec::new();
        let mut seen_conversions = HashSet::new();
        let mut postbacks = Vec::new();
        let mut seen_postbacks = HashSet::new();
        // Ordered: writers on PostgreSQL lock marks in the same order, and so never deadlock.
        let mut marks: BTreeMap<(&str, String), MarkJson> = BTreeMap::new();
        for change in changes {
            let sid = change.call.sid.as_str();
            let first_seq = i64::from(change.call.timeline_len) - change.timeline.len() as i64;
            for (seq, entry) in (first_seq..).zip(change.timeline) {
                if seen_events.insert((sid, seq)) {
                    events.push(EventJson {
                        call_sid: sid,
                        seq,
                        at_ms: ms(entry.at),
                        kind: entry.event.kind(),
                        detail: to_json(entry)?,
                    });
                }
            }
            for conversion in change.conversions {
                if seen_conversions.insert((conversion.call_sid.as_str(), conversion.attempt)) {
                    conversions.push(ConversionJson::of(conversion));
                }
            }
            for touched in change.touched {
                let key = (touched.caller.as_str(), touched.scope.key());
                marks.entry(key).or_default().add(touched);
            }
            for postback in change.postbacks {
                if seen_postbacks.insert((postback.event_key.as_str(), postback.endpoint)) {
                    postbacks.push(PostbackJson::of(postback));
                }
            }
        }
        let marks = (marks.into_iter())
            .map(|((caller_number, scope), mark)| MarkRow {
                caller_number,
                scope,
                mark,
            })
            .collect();
        Ok(Self {
            calls,
            attempts,
            events,
            conversions,
            marks,
            postbacks,
        })
    }
}

/// Runs one of the PostgreSQL statements below over `rows`, as a JSON array.
async fn over_rows<T: Serialize>(
    conn: &mut AnyConnection,
    sql: &'static str,
    rows: &[T],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(sql).bind(to_json(&rows)?).execute(&mut *conn).await?;
    Ok(())
}

/// A statement that reads rows from a JSON array, each element as `j.value`: on SQLite, the
/// array bound to `$param` (the statements of a save run as one, each with its own array); on
/// PostgreSQL, the array bound to `$1`. The rows go between `$before` and `$after`.
macro_rules! over_json_rows {
    (sqlite, $param:literal, $before:expr, $after:expr) => {
        concat!($before, " jsonb_each(", $param, ") AS j ", $after)
    };
    (postgres, $param:literal, $before:expr, $after:expr) => {
        concat!(
            $before,
            " json_array_elements(CAST($1 AS json)) AS j(value) ",
            $after
        )
    };
}

/// An `INSERT … SELECT` over rows from JSON (see `over_json_rows`). (`WHERE true` tells
/// SQLite's parser that `ON CONFLICT` belongs to the insert, not the select.)
macro_rules! from_json_rows {
    ($engine:ident, $key:literal, $insert:expr, $conflict:expr) => {
        over_json_rows!(
            $engine,
            $key,
            concat!($insert, " FROM"),
            concat!("WHERE true ", $conflict)
        )
    };
}

/// A call row from the JSON array's element `j.value`.
macro_rules! insert_calls {
    () => {
        "INSERT INTO calls (call_sid, caller, caller_number, called, company_id, campaign_id,
        visited_campaigns, state, outcome, drop_reason, buyer_id, duplicate, converted, attempts,
        duplicate_buyers, used_fallback, redirects, timeline_len, started_at_ms,
        state_changed_at_ms, ended_at_ms, entry_campaign_id, duplicates_avoided, status_callbacks,
        caller_state, recordings, publisher_id, publisher_duplicate, publisher_payout_cents,
        bid_payout_cents, dialed_before, blind_turns)
     SELECT j.value ->> 'call_sid', j.value ->> 'caller', j.value ->> 'caller_number',
        j.value ->> 'called', j.value ->> 'company_id', j.value ->> 'campaign_id',
        j.value ->> 'visited_campaigns', j.value ->> 'state', j.value ->> 'outcome',
        j.value ->> 'drop_reason', j.value ->> 'buyer_id', CAST(j.value ->> 'duplicate' AS BIGINT),
        CAST(j.value ->> 'converted' AS BIGINT), CAST(j.value ->> 'attempts' AS BIGINT),
        j.value ->> 'duplicate_buyers', CAST(j.value ->> 'used_fallback' AS BIGINT),
        CAST(j.value ->> 'redirects' AS BIGINT), CAST(j.value ->> 'timeline_len' AS BIGINT),
        CAST(j.value ->> 'started_at_ms' AS BIGINT), CAST(j.value ->> 'state_changed_at_ms' AS BIGINT),
        CAST(j.value ->> 'ended_at_ms' AS BIGINT), j.value ->> 'entry_campaign_id',
        CAST(j.value ->> 'duplicates_avoided' AS BIGINT), j.value ->> 'status_callbacks',
        j.value ->> 'caller_state', j.value ->> 'recordings', j.value ->> 'publisher_id',
        CAST(j.value ->> 'publisher_duplicate' AS BIGINT),
        CAST(j.value ->> 'publisher_payout_cents' AS BIGINT), CAST(j.value ->> 'bid_payout_cents' AS BIGINT),
        j.value ->> 'dialed_before', j.value ->> 'blind_turns'"
    };
}

macro_rules! upsert_calls {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$2",
            insert_calls!(),
            "ON CONFLICT (call_sid) DO UPDATE SET
                company_id = excluded.company_id, campaign_id = excluded.campaign_id,
                visited_campaigns = excluded.visited_campaigns, state = excluded.state,
                outcome = excluded.outcome, drop_reason = excluded.drop_reason,
                buyer_id = excluded.buyer_id, duplicate = excluded.duplicate,
                converted = excluded.converted, attempts = excluded.attempts,
                duplicate_buyers = excluded.duplicate_buyers, used_fallback = excluded.used_fallback,
                redirects = excluded.redirects, timeline_len = excluded.timeline_len,
                state_changed_at_ms = excluded.state_changed_at_ms, ended_at_ms = excluded.ended_at_ms,
                entry_campaign_id = excluded.entry_campaign_id,
                duplicates_avoided = excluded.duplicates_avoided,
                status_callbacks = excluded.status_callbacks, recordings = excluded.recordings,
                publisher_id = excluded.publisher_id, publisher_duplicate = excluded.publisher_duplicate,
                publisher_payout_cents = excluded.publisher_payout_cents, bid_payout_cents = excluded.bid_payout_cents,
                dialed_before = excluded.dialed_before, blind_turns = excluded.blind_turns"
        )
    };
}

// Calls taken for new without reading the store: each is inserted unless the store holds it
// already, and the ones inserted are returned.
macro_rules! insert_fresh_calls {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$1",
            insert_calls!(),
            "ON CONFLICT (call_sid) DO NOTHING RETURNING call_sid"
        )
    };
}

// The outbox: a retried save queues nothing twice.
macro_rules! insert_postbacks {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$7",
            "INSERT INTO postbacks (id, event_key, endpoint, owner_kind, owner_id, endpoint_id, event, call_sid,
                url, body, status, attempts, next_attempt_at_ms, created_at_ms)
             SELECT j.value ->> 'id', j.value ->> 'event_key', j.value ->> 'endpoint', j.value ->> 'owner_kind',
                j.value ->> 'owner_id', j.value ->> 'endpoint_id', j.value ->> 'event',
                j.value ->> 'call_sid', j.value ->> 'url', j.value ->> 'body', 'pending',
                0, CAST(j.value ->> 'created_at_ms' AS BIGINT), CAST(j.value ->> 'created_at_ms' AS BIGINT)",
            "ON CONFLICT (event_key, endpoint) DO NOTHING"
        )
    };
}

macro_rules! upsert_attempts {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$3",
            "INSERT INTO call_attempts (call_sid, number, buyer_id, campaign_id, kind, duplicate,
                dial_status, connected_seconds, converted, started_at_ms, answered_at_ms, ended_at_ms,
                screening, leg_seconds, picked_up_at_ms, bridged_at_ms, bridged_seconds)
             SELECT j.value ->> 'call_sid', CAST(j.value ->> 'number' AS BIGINT), j.value ->> 'buyer_id',
                j.value ->> 'campaign_id', j.value ->> 'kind', CAST(j.value ->> 'duplicate' AS BIGINT),
                j.value ->> 'dial_status', CAST(j.value ->> 'connected_seconds' AS BIGINT),
                CAST(j.value ->> 'converted' AS BIGINT), CAST(j.value ->> 'started_at_ms' AS BIGINT),
                CAST(j.value ->> 'answered_at_ms' AS BIGINT), CAST(j.value ->> 'ended_at_ms' AS BIGINT),
                j.value ->> 'screening', CAST(j.value ->> 'leg_seconds' AS BIGINT),
                CAST(j.value ->> 'picked_up_at_ms' AS BIGINT), CAST(j.value ->> 'bridged_at_ms' AS BIGINT),
                CAST(j.value ->> 'bridged_seconds' AS BIGINT)",
            "ON CONFLICT (call_sid, number) DO UPDATE SET
                duplicate = excluded.duplicate, dial_status = excluded.dial_status,
                connected_seconds = excluded.connected_seconds, converted = excluded.converted,
                answered_at_ms = excluded.answered_at_ms, ended_at_ms = excluded.ended_at_ms,
                screening = excluded.screening, leg_seconds = excluded.leg_seconds,
                picked_up_at_ms = excluded.picked_up_at_ms, bridged_at_ms = excluded.bridged_at_ms,
                bridged_seconds = excluded.bridged_seconds"
        )
    };
}

// A retried save must not duplicate entries.
macro_rules! insert_events {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$4",
            "INSERT INTO call_events (call_sid, seq, at_ms, kind, detail)
             SELECT j.value ->> 'call_sid', CAST(j.value ->> 'seq' AS BIGINT),
                CAST(j.value ->> 'at_ms' AS BIGINT), j.value ->> 'kind', j.value ->> 'detail'",
            "ON CONFLICT (call_sid, seq) DO NOTHING"
        )
    };
}

macro_rules! insert_conversions {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$5",
            "INSERT INTO conversions (call_sid, attempt, buyer_id, campaign_id, caller_number,
                connected_seconds, payout_cents, revenue_cents, converted_at_ms)
             SELECT j.value ->> 'call_sid', CAST(j.value ->> 'attempt' AS BIGINT), j.value ->> 'buyer_id',
                j.value ->> 'campaign_id', j.value ->> 'caller_number',
                CAST(j.value ->> 'connected_seconds' AS BIGINT), CAST(j.value ->> 'payout_cents' AS BIGINT),
                CAST(j.value ->> 'revenue_cents' AS BIGINT), CAST(j.value ->> 'converted_at_ms' AS BIGINT)",
            "ON CONFLICT (call_sid, attempt) DO NOTHING"
        )
    };
}

// Keeps the latest of each touch: older news (a retried or reordered save) never wins.
macro_rules! upsert_marks {
    ($engine:ident) => {
        from_json_rows!(
            $engine,
            "$6",
            "INSERT INTO dedupe_marks (caller_number, scope, last_connected_ms, last_converted_ms)
             SELECT j.value ->> 'caller_number', j.value ->> 'scope',
                CAST(j.value ->> 'last_connected_ms' AS BIGINT), CAST(j.value ->> 'last_converted_ms' AS BIGINT)",
            "ON CONFLICT (caller_number, scope) DO UPDATE SET
                last_connected_ms = CASE
                    WHEN COALESCE(excluded.last_connected_ms, -1) > COALESCE(dedupe_marks.last_connected_ms, -1)
                    THEN excluded.last_connected_ms ELSE dedupe_marks.last_connected_ms END,
                last_converted_ms = CASE
                    WHEN COALESCE(excluded.last_converted_ms, -1) > COALESCE(dedupe_marks.last_converted_ms, -1)
                    THEN excluded.last_converted_ms ELSE dedupe_marks.last_converted_ms END"
        )
    };
}

// The slots of the saved calls' legs that ended, or of calls that ended: free.
macro_rules! free_slots {
    ($engine:ident) => {
        over_json_rows!(
            $engine,
            "$8",
            "DELETE FROM capacity_slots WHERE call_sid IN (SELECT j.value ->> 'call_sid' FROM",
            ") AND (EXISTS (SELECT 1 FROM calls c
                        WHERE c.call_sid = capacity_slots.call_sid AND c.state = 'ended')
                OR EXISTS (SELECT 1 FROM call_attempts a
                        WHERE a.call_sid = capacity_slots.call_sid AND a.number = capacity_slots.attempt
                          AND (a.dial_status IS NOT NULL OR a.ended_at_ms IS NOT NULL)))"
        )
    };
}

// Slots whose hold was never answered, unless another buyer holds the leg since.
macro_rules! give_back_slots {
    ($engine:ident) => {
        over_json_rows!(
            $engine,
            "$9",
            "DELETE FROM capacity_slots WHERE (call_sid, attempt, buyer_id) IN
                (SELECT j.value ->> 'call_sid', CAST(j.value ->> 'attempt' AS BIGINT), j.value ->> 'buyer_id' FROM",
            ")"
        )
    };
}

/// Every statement of a save on SQLite, run as one: one round trip to the connection's thread
/// rather than one per statement. Each reads its table's rows from its own array: `$1` the
/// fresh calls, `$2` calls, `$3` attempts, `$4` entries, `$5` conversions, `$6` marks, `$7`
/// postbacks, `$8` the calls saved (their ended legs' slots freed), `$9` the legs whose slot
/// is given back. The rows that come back are
/// the fresh calls inserted.
static SAVE_ON_SQLITE: &str = concat!(
    insert_fresh_calls!(sqlite),
    ";\n",
    upsert_calls!(sqlite),
    ";\n",
    upsert_attempts!(sqlite),
    ";\n",
    insert_events!(sqlite),
    ";\n",
    insert_conversions!(sqlite),
    ";\n",
    upsert_marks!(sqlite),
    ";\n",
    insert_postbacks!(sqlite),
    ";\n",
    free_slots!(sqlite),
    ";\n",
    give_back_slots!(sqlite),
);

// On PostgreSQL, one statement each (a prepared statement holds one), each over its own array.
static INSERT_FRESH_CALLS: &str = insert_fresh_calls!(postgres);
static UPSERT_CALLS: &str = upsert_calls!(postgres);
static UPSERT_ATTEMPTS: &str = upsert_attempts!(postgres);
static INSERT_EVENTS: &str = insert_events!(postgres);
static INSERT_CONVERSIONS: &str = insert_conversions!(postgres);
static UPSERT_MARKS: &str = upsert_marks!(postgres);
static INSERT_POSTBACKS: &str = insert_postbacks!(postgres);
static FREE_SLOTS: &str = free_slots!(postgres);
static GIVE_BACK_SLOTS: &str = give_back_slots!(postgres);

#[derive(Serialize)]
struct PostbackJson<'a> {
    id: String,
    event_key: &'a str,
    endpoint: String,
    owner_kind: &'static str,
    owner_id: String,
    endpoint_id: String,
    event: &'static str,
    call_sid: &'a str,
    url: &'a str,
    body: &'a str,
    created_at_ms: i64,
}

impl<'a> PostbackJson<'a> {
    fn of(postback: &'a Postback) -> Self {
        Self {
            id: postback.id.to_string(),
            event_key: &postback.event_key,
            endpoint: postback.endpoint.to_string(),
            owner_kind: postback.endpoint.owner.kind(),
            owner_id: postback.endpoint.owner.id().to_string(),
            endpoint_id: postback.endpoint.id.to_string(),
            event: postback.event.as_str(),
            call_sid: postback.call_sid.as_str(),
            url: &postback.url,
            body: &postback.body,
            created_at_ms: ms(postback.created_at),
        }
    }
}

#[derive(Serialize)]
struct SidJson<'a> {
    call_sid: &'a str,
}

/// A `calls` row, as the JSON the upsert reads: what a call is read back from, and the
/// summary columns derived from it for supervision's queries.
#[derive(Serialize)]
struct CallJson<'a> {
    #[serde(flatten)]
    row: CallRow,
    caller_number: Option<&'a str>,
    buyer_id: Option<String>,
    duplicate: Option<i64>,
    converted: i64,
    attempts: i64,
    used_fallback: i64,
    redirects: i64,
    entry_campaign_id: Option<String>,
    duplicates_avoided: i64,
}

impl<'a> CallJson<'a> {
    fn of(call: &'a CallRecord) -> Result<Self, StoreError> {
        let reached = call.connected_attempt().or(call.current_attempt());
        Ok(Self {
            row: CallRow {
                call_sid: call.sid.as_str().to_owned(),
                caller: call.caller.raw().to_owned(),
                called: call.called.clone(),
                company_id: call.company_id.map(|id| id.to_string()),
                campaign_id: call.campaign_id.map(|id| id.to_string()),
                visited_campaigns: to_json(&call.visited)?,
                state: enum_text(&call.state)?,
                outcome: call.outcome.as_ref().map(enum_text).transpose()?,
                drop_reason: call.drop_reason.as_ref().map(enum_text).transpose()?,
                duplicate_buyers: to_json(&call.duplicate_buyers)?,
                timeline_len: i64::from(call.timeline_len),
                status_callbacks: to_json(&call.status_callbacks)?,
                caller_state: call.caller_state.map(String::from),
                recordings: to_json(&call.recordings)?,
                publisher_id: call.publisher_id.map(|id| id.to_string()),
                publisher_duplicate: call.publisher_duplicate.map(i64::from),
                publisher_payout_cents: call.publisher_payout.map(Money::cents),
                bid_payout_cents: call.bid_payout.map(Money::cents),
                dialed_before: to_json(&call.dialed_before)?,
                blind_turns: to_json(&call.blind_turns)?,
                started_at_ms: ms(call.started_at),
                state_changed_at_ms: ms(call.state_changed_at),
                ended_at_ms: call.ended_at.map(ms),
            },
            caller_number: call.caller.number().map(E164::as_str),
            buyer_id: reached.map(|a| a.buyer_id.to_string()),
            duplicate: call.duplicate().map(i64::from),
            converted: i64::from(call.converted()),
            attempts: call.attempts.len() as i64,
            used_fallback: i64::from(call.used_fallback()),
            redirects: call.redirects() as i64,
            entry_campaign_id: call.visited.first().map(|id| id.to_string()),
            duplicates_avoided: call.duplicate_buyers.len() as i64,
        })
    }
}

/// A `call_attempts` row, as the JSON the upsert reads.
#[derive(Serialize)]
struct AttemptJson<'a> {
    call_sid: &'a str,
    #[serde(flatten)]
    row: AttemptRow,
}

impl<'a> AttemptJson<'a> {
    fn of(sid: &'a CallSid, attempt: &Attempt) -> Result<Self, StoreError> {
        Ok(Self {
            call_sid: sid.as_str(),
            row: AttemptRow {
                number: i64::from(attempt.number),
                buyer_id: attempt.buyer_id.to_string(),
                campaign_id: attempt.campaign_id.to_string(),
                kind: enum_text(&attempt.kind)?,
                duplicate: attempt.duplicate.map(i64::from),
                dial_status: attempt.status.as_ref().map(enum_text).transpose()?,
                connected_seconds: attempt.connected_seconds.map(i64::from),
                converted: i64::from(attempt.converted),
                started_at_ms: ms(attempt.started_at),
                answered_at_ms: attempt.answered_at.map(ms),
                ended_at_ms: attempt.ended_at.map(ms),
                screening: attempt.screening.as_ref().map(enum_text).transpose()?,
                leg_seconds: attempt.leg_seconds.map(i64::from),
                picked_up_at_ms: attempt.picked_up_at.map(ms),
                bridged_at_ms: attempt.bridged_at.map(ms),
                bridged_seconds: attempt.bridged_seconds.map(i64::from),
            },
        })
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    call_sid: &'a str,
    seq: i64,
    at_ms: i64,
    kind: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct ConversionJson<'a> {
    call_sid: &'a str,
    attempt: i64,
    buyer_id: String,
    campaign_id: String,
    caller_number: Option<&'a str>,
    connected_seconds: i64,
    payout_cents: i64,
    revenue_cents: i64,
    converted_at_ms: i64,
}

impl<'a> ConversionJson<'a> {
    fn of(conversion: &'a Conversion) -> Self {
        Self {
            call_sid: conversion.call_sid.as_str(),
            attempt: i64::from(conversion.attempt),
            buyer_id: conversion.buyer_id.to_string(),
            campaign_id: conversion.campaign_id.to_string(),
            caller_number: conversion.caller.as_ref().map(E164::as_str),
            connected_seconds: i64::from(conversion.connected_seconds),
            payout_cents: conversion.payout.cents(),
            revenue_cents: conversion.revenue.cents(),
            converted_at_ms: ms(conversion.at),
        }
    }
}

/// The latest touches of one caller in one scope among the changes saved together.
#[derive(Default, Serialize)]
struct MarkJson {
    last_connected_ms: Option<i64>,
    last_converted_ms: Option<i64>,
}

impl MarkJson {
    fn add(&mut self, touched: &Touched) {
        let at = Some(ms(touched.at));
        // A conversion is also a connection.
        self.last_connected_ms = self.last_connected_ms.max(at);
        if touched.touch == Touch::Converted {
            self.last_converted_ms = self.last_converted_ms.max(at);
        }
    }
}

#[derive(Serialize)]
struct MarkRow<'a> {
    caller_number: &'a str,
    scope: String,
    #[serde(flatten)]
    mark: MarkJson,
}

/// A call as stored: read back, and (with its summary columns) written.
#[derive(sqlx::FromRow, Serialize)]
struct CallRow {
    call_sid: String,
    caller: String,
    called: String,
    company_id: Option<String>,
    campaign_id: Option<String>,
    visited_campaigns: String,
    state: String,
    outcome: Option<String>,
    drop_reason: Option<String>,
    duplicate_buyers: String,
    timeline_len: i64,
    status_callbacks: String,
    caller_state: Option<String>,
    recordings: String,
    publisher_id: Option<String>,
    publisher_duplicate: Option<i64>,
    publisher_payout_cents: Option<i64>,
    bid_payout_cents: Option<i64>,
    dialed_before: String,
    blind_turns: String,
    started_at_ms: i64,
    state_changed_at_ms: i64,
    ended_at_ms: Option<i64>,
}

/// An attempt as stored: read back, and (with its call) written.
#[derive(sqlx::FromRow, Serialize)]
struct AttemptRow {
    number: i64,
    buyer_id: String,
    campaign_id: String,
    kind: String,
    duplicate: Option<i64>,
    dial_status: Option<String>,
    connected_seconds: Option<i64>,
    converted: i64,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    ended_at_ms: Option<i64>,
    screening: Option<String>,
    leg_seconds: Option<i64>,
    picked_up_at_ms: Option<i64>,
    bridged_at_ms: Option<i64>,
    bridged_seconds: Option<i64>,
}

fn small(column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} is out of range")))
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> Result<Self, Self::Error> {
        Ok(Self {
            number: small("number", row.number)?,
            buyer_id: parse_id(&row.buyer_id)?,
            campaign_id: parse_id(&row.campaign_id)?,
            kind: parse_stored("kind", row.kind.into())?,
            duplicate: row.duplicate.map(|d| d != 0),
            status: row
                .dial_status
                .map(|s| parse_stored("dial_status", s.into()))
                .transpose()?,
            connected_seconds: row
                .connected_seconds
                .map(|s| small("connected_seconds", s))
                .transpose()?,
            converted: row.converted != 0,
            started_at: timestamp(row.started_at_ms)?,
            answered_at: optional_timestamp(row.answered_at_ms)?,
            ended_at: optional_timestamp(row.ended_at_ms)?,
            screening: parse_stored("screening", row.screening.into())?,
            leg_seconds: row.leg_seconds.map(|s| small("leg_seconds", s)).transpose()?,
            picked_up_at: optional_timestamp(row.picked_up_at_ms)?,
            bridged_at: optional_timestamp(row.bridged_at_ms)?,
            bridged_seconds: (row.bridged_seconds)
                .map(|s| small("bridged_seconds", s))
                .transpose()?,
        })
    }
}

/// A call row's columns, as read back.
macro_rules! select_call {
    () => {
        "SELECT call_sid, caller, called, company_id, campaign_id, visited_campaigns, state, outcome,
                drop_reason, duplicate_buyers, timeline_len, status_callbacks, caller_state,
                recordings, publisher_id, publisher_duplicate, publisher_payout_cents,
                bid_payout_cents, dialed_before, blind_turns, started_at_ms, state_changed_at_ms,
                ended_at_ms
         FROM calls WHERE call_sid = $1"
    };
}

/// The call as stored, in a transaction that is about to write it: on PostgreSQL its row is
/// locked until the transaction ends, so that nobody changes it between the read and the write
/// (SQLite's writer holds the whole database from `BEGIN IMMEDIATE`).
pub(super) async fn load_for_update(
    conn: &mut AnyConnection,
    backend: Backend,
    sid: &CallSid,
) -> Result<Option<CallRecord>, StoreError> {
    let select = match backend {
        Backend::Sqlite => select_call!(),
        Backend::Postgres => concat!(select_call!(), " FOR UPDATE"),
    };
    load_with(conn, select, sid).await
}

async fn load_in(conn: &mut AnyConnection, sid: &CallSid) -> Result<Option<CallRecord>, StoreError> {
    load_with(conn, select_call!(), sid).await
}

async fn load_with(
    conn: &mut AnyConnection,
    select: &'static str,
    sid: &CallSid,
) -> Result<Option<CallRecord>, StoreError> {
    let row: Option<CallRow> = sqlx::query_as(select)
        .bind(sid.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT number, buyer_id, campaign_id, kind, duplicate, dial_status, connected_seconds,
                converted, started_at_ms, answered_at_ms, ended_at_ms, screening, leg_seconds,
                picked_up_at_ms, bridged_at_ms, bridged_seconds
         FROM call_attempts WHERE call_sid = $1 ORDER BY number",
    )
    .bind(sid.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(CallRecord {
        sid: parse_stored("call_sid", row.call_sid.into())?,
        caller: Caller::from_provider(&row.caller),
        called: row.called,
        company_id: row.company_id.as_deref().map(parse_id).transpose()?,
        campaign_id: row.campaign_id.as_deref().map(parse_id).transpose()?,
        visited: from_json("visited_campaigns", &row.visited_campaigns)?,
        state: parse_stored("state", row.state.into())?,
        outcome: row
            .outcome
            .map(|o| parse_stored("outcome", o.into()))
            .transpose()?,
        drop_reason: row
            .drop_reason
            .map(|r| parse_stored("drop_reason", r.into()))
            .transpose()?,
        attempts: attempts
            .into_iter()
            .map(Attempt::try_from)
            .collect::<Result<_, _>>()?,
        duplicate_buyers: from_json("duplicate_buyers", &row.duplicate_buyers)?,
        started_at: timestamp(row.started_at_ms)?,
        state_changed_at: timestamp(row.state_changed_at_ms)?,
        ended_at: optional_timestamp(row.ended_at_ms)?,
        timeline_len: small("timeline_len", row.timeline_len)?,
        status_callbacks: from_json("status_callbacks", &row.status_callbacks)?,
        caller_state: parse_stored("caller_state", row.caller_state.into())?,
        recordings: from_json("recordings", &row.recordings)?,
        publisher_id: row.publisher_id.as_deref().map(parse_id).transpose()?,
        publisher_duplicate: row.publisher_duplicate.map(|d| d != 0),
        publisher_payout: (row.publisher_payout_cents)
            .map(|cents| Money::from_cents(cents).map_err(StoreError::Corrupt))
            .transpose()?,
        bid_payout: (row.bid_payout_cents)
            .map(|cents| Money::from_cents(cents).map_err(StoreError::Corrupt))
            .transpose()?,
        dialed_before: from_json("dialed_before", &row.dialed_before)?,
        blind_turns: from_json("blind_turns", &row.blind_turns)?,
    }))
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::domain::{call::Outcome, dedupe::Scope, ids::Id, timeline::Event};
    use crate::fresh::Generate;
    use crate::store::Write;

    fn call(at: Timestamp) -> CallRecord {
        let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
        CallRecord::new(
            sid,
            Caller::from_provider("+14155550100"),
            "+18005550100".into(),
            at,
        )
    }

    fn entries(reasons: &[&str], at: Timestamp) -> Vec<TimelineEntry> {
        (reasons.iter())
            .map(|reason| TimelineEntry {
                at,
                event: Event::Ignored {
                    reason: (*reason).to_owned(),
                },
            })
            .collect()
    }

    fn change<'a>(
        call: &'a CallRecord,
        timeline: &'a [TimelineEntry],
        touched: &'a [Touched],
    ) -> CallChange<'a> {
        CallChange {
            call,
            timeline,
            conversions: &[],
            touched,
            load: &[],
            postbacks: &[],
            write: Write::Replace,
        }
    }

    #[test]
    fn a_calls_latest_save_wins_and_each_entry_is_written_once() {
        let at = Timestamp::now();
        let mut routed = call(at);
        routed.timeline_len = 1;
        let mut ended = routed.clone();
        ended.timeline_len = 3;
        ended.end(Outcome::Abandoned, None, at);
        let (first, rest) = (entries(&["routed"], at), entries(&["dialed", "ended"], at));
        // The second save is a retry of the first (same entry, same number), queued before
        // the next webhook's save.
        let saves = [
            change(&routed, &first, &[]),
            change(&routed, &first, &[]),
            change(&ended, &rest, &[]),
        ];
        let rows = Rows::of(&saves).unwrap();
        assert_eq!(rows.calls.len(), 1);
        assert_eq!(rows.calls[0].row.state, "ended");
        assert_eq!(rows.calls[0].row.timeline_len, 3);
        let seqs: Vec<_> = rows.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
    }

    #[test]
    fn one_callers_touches_in_a_scope_become_one_mark_holding_the_latest_of_each() {
        let later = Timestamp::now();
        let earlier = later - SignedDuration::from_mins(10);
        let caller = E164::from_provider("+14155550100").unwrap();
        let scope = Scope::Buyer(Id::generate());
        let touch = |touch, at| Touched {
            caller: caller.clone(),
            scope: scope.clone(),
            touch,
            at,
        };
        let (one, two) = (
            [touch(Touch::Connected, later)],
            [touch(Touch::Converted, earlier)],
        );
        let record = call(earlier);
        let rows = Rows::of(&[change(&record, &[], &one), change(&record, &[], &two)]).unwrap();
        assert_eq!(rows.marks.len(), 1);
        assert_eq!(rows.marks[0].mark.last_connected_ms, Some(later.as_millisecond()));
        assert_eq!(
            rows.marks[0].mark.last_converted_ms,
            Some(earlier.as_millisecond())
        );
    }
}
