//! Call saves through the store's group commit: many calls' saves share a transaction, and
//! what each caller is told is true of its own save.

use futures_util::future::join_all;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sqlx::Executor;
use switchboard::fresh::Generate;
use switchboard::{
    domain::{
        call::{AttemptKind, CallRecord, CallSid, CallState, Caller, DialStatus, Outcome},
        capacity::{Leg, LoadChange},
        dedupe::{DedupeIndex, Scope, Touch, Touched},
        ids::Id,
        phone::E164,
        plan::{Buyer, Company, Publisher, Record},
        postback::{EndpointRef, Postback, PostbackEvent, PostbackOwner, PostbackStatus},
        timeline::{Event, TimelineEntry},
    },
    store::{
        BlindTurn, CallChange, CallStore, ClusterStore, PlanTable, PostbackFilter, PostbackStore, Saved,
        SlotHold, SqlStore, StoreError, Tried, TryFailed, TryOutcome, Write,
    },
};

use crate::helpers::{TestStore, on_both_engines, stored_marks, stored_marks_by};

fn sid(n: usize) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).unwrap()
}

fn new_call(n: usize, caller: &str) -> CallRecord {
    CallRecord::new(
        sid(n),
        Caller::from_provider(caller),
        "+18005550100".into(),
        Timestamp::now(),
    )
}

fn entry(reason: &str) -> TimelineEntry {
    TimelineEntry {
        at: Timestamp::now(),
        event: Event::Ignored {
            reason: reason.to_owned(),
        },
    }
}

/// `call` as its actor saves it after adding `entries` to its timeline.
async fn save(
    store: &impl CallStore,
    call: &mut CallRecord,
    entries: &[&str],
    touched: &[Touched],
) -> Result<(), StoreError> {
    let timeline: Vec<_> = entries.iter().map(|reason| entry(reason)).collect();
    call.timeline_len += timeline.len() as u32;
    store
        .save_call(&CallChange {
            call,
            timeline: &timeline,
            conversions: &[],
            touched,
            load: &[],
            postbacks: &[],
            write: Write::Replace,
        })
        .await
        .map(|_| ())
}

fn reasons(timeline: &[TimelineEntry]) -> Vec<String> {
    timeline
        .iter()
        .map(|entry| match &entry.event {
            Event::Ignored { reason } => reason.clone(),
            other => panic!("unexpected entry {other:?}"),
        })
        .collect()
}

on_both_engines! {
    async fn every_one_of_many_concurrent_saves_is_stored(s: TestStore) {
        let mut calls: Vec<_> = (0..300).map(|n| new_call(n, &format!("+1415555{n:04}"))).collect();
        let saves = calls.iter_mut().map(|call| save(&s.store, call, &["first", "second"], &[]));
        for result in join_all(saves).await {
            result.unwrap();
        }
        for n in 0..300 {
            let stored = s.store.call(&sid(n)).await.unwrap().expect("the call is stored");
            assert_eq!(stored.caller.raw(), format!("+1415555{n:04}"));
            assert_eq!(stored.timeline_len, 2);
            assert_eq!(reasons(&s.store.timeline(&sid(n)).await.unwrap()), ["first", "second"]);
        }
    }

    async fn fresh_saves_insert_new_calls_and_leave_a_stored_one_untouched(s: TestStore) {
        let mut stored = new_call(1, "+14155550100");
        save(&s.store, &mut stored, &["stored"], &[]).await.unwrap();
        // Taken for new, all at once (so that they share commits): one of them is stored.
        let mut calls: Vec<_> = (1..40).map(|n| new_call(n, &format!("+1415555{n:04}"))).collect();
        for call in &mut calls {
            call.state = CallState::Dialing;
            call.timeline_len = 1;
        }
        let (timeline, store) = ([entry("fresh")], &s.store);
        let saves = calls.iter().map(|call| {
            let change = CallChange { call, timeline: &timeline, conversions: &[], touched: &[], load: &[], postbacks: &[], write: Write::InsertNew };
            async move { store.save_call(&change).await }
        });
        let outcomes: Vec<Saved> = join_all(saves).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(outcomes[0], Saved::Existed, "call 1 was stored already");
        assert!(outcomes[1..].iter().all(|o| *o == Saved::Saved), "{outcomes:?}");
        let one = s.store.call(&sid(1)).await.unwrap().unwrap();
        assert_eq!((one.state, one.caller.raw()), (CallState::Routing, "+14155550100"), "untouched");
        assert_eq!(reasons(&s.store.timeline(&sid(1)).await.unwrap()), ["stored"]);
        for n in 2..40 {
            let call = s.store.call(&sid(n)).await.unwrap().expect("a fresh call is stored");
            assert_eq!(call.state, CallState::Dialing);
            assert_eq!(reasons(&s.store.timeline(&sid(n)).await.unwrap()), ["fresh"]);
        }
    }

    async fn saves_of_one_call_queued_together_keep_their_order(s: TestStore) {
        // Three saves of the same call in flight at once, as a retried save and the next
        // webhook's can be: the last one's state wins, and every entry is kept once.
        let mut call = new_call(1, "+14155550100");
        let mut first = call.clone();
        call.timeline_len = 1;
        call.state = CallState::Dialing;
        let mut second = call.clone();
        call.timeline_len = 2;
        call.end(Outcome::Abandoned, None, Timestamp::now());
        let mut third = call.clone();
        third.timeline_len = 2;
        let saved = join_all([
            Box::pin(save(&s.store, &mut first, &["routed"], &[])),
            Box::pin(save(&s.store, &mut second, &["dialed"], &[])),
            Box::pin(save(&s.store, &mut third, &["ended"], &[])),
        ])
        .await;
        assert!(saved.iter().all(Result::is_ok), "{saved:?}");
        let stored = s.store.call(&sid(1)).await.unwrap().unwrap();
        assert_eq!(stored.state, CallState::Ended);
        assert_eq!(stored.outcome, Some(Outcome::Abandoned));
        assert_eq!(reasons(&s.store.timeline(&sid(1)).await.unwrap()), ["routed", "dialed", "ended"]);
    }

    async fn touches_of_one_caller_saved_together_keep_the_latest_of_each(s: TestStore) {
        let caller = E164::from_provider("+14155550100").unwrap();
        let scope = Scope::Buyer(Id::generate());
        let earlier = Timestamp::now() - SignedDuration::from_mins(10);
        let later = Timestamp::now();
        let touch = |touch, at| Touched { caller: caller.clone(), scope: scope.clone(), touch, at };
        // The later connection is queued first: order within a commit must not matter.
        let (mut one, mut two) = (new_call(1, caller.as_str()), new_call(2, caller.as_str()));
        let saved = join_all([
            Box::pin(save(&s.store, &mut one, &[], &[touch(Touch::Connected, later)])),
            Box::pin(save(&s.store, &mut two, &[], &[touch(Touch::Converted, earlier)])),
        ])
        .await;
        assert!(saved.iter().all(Result::is_ok), "{saved:?}");
        let marks = stored_marks(&s.store).await;
        assert_eq!(marks.len(), 1, "{marks:?}");
        let ms = |at: Timestamp| Some(Timestamp::from_millisecond(at.as_millisecond()).unwrap());
        assert_eq!(marks[0].mark.last_connected, ms(later));
        assert_eq!(marks[0].mark.last_converted, ms(earlier));

        // And news older than what is stored never wins.
        let mut three = new_call(3, caller.as_str());
        save(&s.store, &mut three, &[], &[touch(Touch::Connected, earlier)]).await.unwrap();
        assert_eq!(stored_marks(&s.store).await[0].mark.last_connected, ms(later));
    }

    async fn marks_are_read_back_whole_a_batch_at_a_time(s: TestStore) {
        let scopes = [
            Scope::Buyer(Id::generate()),
            // Text that JSON must escape, and that sorts among the others.
            Scope::Group { company: Id::generate(), name: "Parent \"Co\", \\ été\n".into() },
            Scope::Publisher(Id::generate()),
        ];
        let base = Timestamp::from_millisecond(1_700_000_000_000).unwrap();
        let mut touched = Vec::new();
        // 19 marks: callers with one, two or three scopes; half of them converted.
        for n in 0..10_i64 {
            let caller = E164::from_provider(&format!("+1415555{n:04}")).unwrap();
            for (k, scope) in (0..).zip(scopes.iter().take(1 + n as usize % 3)) {
                let at = base + SignedDuration::from_millis(1000 * n + k);
                let touch = if (n + k) % 2 == 0 { Touch::Converted } else { Touch::Connected };
                touched.push(Touched { caller: caller.clone(), scope: scope.clone(), touch, at });
                let earlier = at - SignedDuration::from_mins(5);
                touched.push(Touched { caller: caller.clone(), scope: scope.clone(), touch: Touch::Connected, at: earlier });
            }
        }
        save(&s.store, &mut new_call(1, "+14155550000"), &[], &touched).await.unwrap();
        let mut expected = DedupeIndex::default();
        for touch in &touched {
            expected.record(&touch.caller, &touch.scope, touch.touch, touch.at);
        }
        assert_eq!(expected.len(), 19);

        // Batches of one, short ones, ones that end exactly with the table, and a single one.
        for size in [1, 3, 19, 1000] {
            let (batches, marks) = stored_marks_by(&s.store, size).await;
            assert_eq!(batches.len(), 19_usize.div_ceil(size as usize), "batches of {size}");
            assert!(batches.iter().all(|batch| batch.marks.len() <= size as usize));
            let mut index = DedupeIndex::default();
            for batch in &batches {
                index.load(batch);
            }
            assert_eq!(marks.len(), 19, "batches of {size}");
            assert_eq!(index.len(), 19, "batches of {size}");
            for stored in &marks {
                let mark = expected.mark(&stored.caller, &stored.scope);
                assert_eq!(stored.mark, mark, "{stored:?}, batches of {size}");
                assert_eq!(index.mark(&stored.caller, &stored.scope), mark);
            }
        }
    }

    async fn a_corrupt_mark_is_reported_by_its_column(s: TestStore) {
        let mut db = s.db.connect().await;
        db.execute(
            "INSERT INTO dedupe_marks (caller_number, scope, last_connected_ms, last_converted_ms)
             VALUES ('+14155550100', 'buyer:0192f3a4-5b6c-7d8e-9f00-000000000001', 1, NULL),
                    ('anonymous', 'buyer:0192f3a4-5b6c-7d8e-9f00-000000000001', 1, NULL)",
        )
        .await
        .unwrap();
        let error = s.store.dedupe_marks(&mut |_| {}).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(message) if message.starts_with("dedupe_marks.caller_number")),
            "{error:?}"
        );
    }

    async fn a_save_the_database_refuses_fails_alone(s: TestStore) {
        // The database refuses one caller's calls; saves queued with it must not fail with it.
        let mut db = s.db.connect().await;
        if s.db.url.starts_with("sqlite") {
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.caller = '+14155559999'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .await
            .unwrap();
        } else {
            db.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.caller = '+14155559999' THEN RAISE EXCEPTION 'refused'; END IF;
                 RETURN NEW; END $$",
            )
            .await
            .unwrap();
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON calls FOR EACH ROW EXECUTE FUNCTION refuse()")
                .await
                .unwrap();
        }
        let mut calls: Vec<_> = (0..50)
            .map(|n| new_call(n, if n == 25 { "+14155559999" } else { "+14155550100" }))
            .collect();
        let saves = calls.iter_mut().map(|call| save(&s.store, call, &["routed"], &[]));
        let results = join_all(saves).await;
        for (n, result) in results.iter().enumerate() {
            let stored = s.store.call(&sid(n)).await.unwrap();
            if n == 25 {
                assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
                assert!(stored.is_none());
            } else {
                assert!(result.is_ok(), "call {n}: {result:?}");
                assert!(stored.is_some(), "call {n} is stored");
            }
        }
    }
}

/// A company and its buyer with `n` endpoints (`http://127.0.0.1:9/<i>`), as stored: with ids.
async fn buyer_with_endpoints(store: &SqlStore, n: usize) -> Record<Buyer> {
    let company = PlanTable::<Company>::insert(
        store,
        None,
        &serde_json::from_value(json!({"name": "Acme"})).unwrap(),
    )
    .await
    .unwrap();
    let endpoints: Vec<Value> = (0..n)
        .map(|i| json!({"url": format!("http://127.0.0.1:9/{i}"), "secret": format!("whsec_endpoint_{i}_0123456789")}))
        .collect();
    let buyer = json!({"name": "Acme Auto", "destination": "+14155550101", "postbacks": endpoints});
    PlanTable::<Buyer>::insert(store, Some(company.id), &serde_json::from_value(buyer).unwrap())
        .await
        .unwrap()
}

/// A postback of `call`'s `event` to the buyer's endpoint `n`, queued as the call's step
/// queues one.
fn postback(call: &CallRecord, event: PostbackEvent, buyer: &Record<Buyer>, n: usize) -> Postback {
    let endpoint = &buyer.spec.postbacks.as_slice()[n];
    Postback {
        id: uuid::Uuid::now_v7(),
        event_key: format!("{}:{event}:1", call.sid),
        endpoint: EndpointRef {
            owner: PostbackOwner::Buyer(buyer.id),
            id: endpoint.id.unwrap(),
        },
        event,
        call_sid: call.sid.clone(),
        url: endpoint.url.as_str().to_owned(),
        body: format!(r#"{{"n":{n}}}"#),
        created_at: Timestamp::now(),
    }
}

/// A try of `id`, made to `http://127.0.0.1:9/tried`.
fn tried(id: uuid::Uuid, at: Timestamp, outcome: TryOutcome) -> Tried {
    Tried {
        id,
        at,
        url: "http://127.0.0.1:9/tried".into(),
        outcome,
    }
}

on_both_engines! {
    async fn postbacks_are_queued_once_and_leased_to_one_taker_at_a_time(s: TestStore) {
        let store = &s.store;
        let call = new_call(1, "+14155550123");
        let buyer = buyer_with_endpoints(store, 3).await;
        let queued: Vec<Postback> = (0..3).map(|n| postback(&call, PostbackEvent::Converted, &buyer, n)).collect();
        let change = CallChange { call: &call, timeline: &[], conversions: &[], touched: &[], load: &[], postbacks: &queued, write: Write::Replace };
        store.save_call(&change).await.unwrap();
        // The same change saved again (a retry): nothing is queued twice, even under new ids.
        let again: Vec<Postback> = queued.iter().map(|p| Postback { id: uuid::Uuid::now_v7(), ..p.clone() }).collect();
        store.save_call(&CallChange { postbacks: &again, ..change }).await.unwrap();
        let listed = store.postbacks(&PostbackFilter { limit: 10, ..PostbackFilter::default() }).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|p| p.status == PostbackStatus::Pending && p.attempts == 0));

        let now = Timestamp::now();
        let lease = now + SignedDuration::from_secs(30);
        let first = store.lease_due_postbacks(now, lease, 2).await.unwrap();
        let second = store.lease_due_postbacks(now, lease, 2).await.unwrap();
        assert_eq!((first.len(), second.len()), (2, 1), "a leased postback is nobody else's");
        assert!(store.lease_due_postbacks(now, lease, 2).await.unwrap().is_empty());
        assert!(second.iter().all(|due| !first.iter().any(|f| f.id == due.id)));
        let in_flight = store.retry_postback(first[0].id, now).await.unwrap_err();
        assert!(matches!(in_flight, StoreError::Conflict { .. }), "a postback being sent is not queued again: {in_flight}");
        let none = store.retry_postback(uuid::Uuid::now_v7(), now).await.unwrap_err();
        assert!(matches!(none, StoreError::NotFound { .. }), "{none}");

        // One delivered, one to retry later, one whose taker died holding it.
        let retry_at = now + SignedDuration::from_secs(60);
        store.record_tries(&[
            tried(first[0].id, now, TryOutcome::Delivered { status_code: 204 }),
            tried(first[1].id, now, TryOutcome::Failed(TryFailed { error: "the receiver answered 503".into(), status_code: Some(503), retry_at: Some(retry_at) })),
        ]).await.unwrap();
        let later = lease + SignedDuration::from_secs(1);
        let taken_up = store.lease_due_postbacks(later, later + SignedDuration::from_secs(30), 10).await.unwrap();
        assert_eq!(taken_up.iter().map(|d| d.id).collect::<Vec<_>>(), [second[0].id], "the dead taker's lease ran out; the retry is not due yet");
        let due_again = store.lease_due_postbacks(retry_at, retry_at, 10).await.unwrap();
        assert_eq!((due_again.len(), due_again[0].id, due_again[0].attempts), (1, first[1].id, 1));

        let delivered = store.postback(first[0].id).await.unwrap();
        assert_eq!((delivered.status, delivered.attempts, delivered.last_status_code), (PostbackStatus::Delivered, 1, Some(204)));
        assert_eq!(delivered.url, "http://127.0.0.1:9/tried", "where its last try went");
        // Out of tries: failed for good, and no longer leased; a retry queues it again.
        store.record_tries(&[tried(first[1].id, retry_at, TryOutcome::Failed(TryFailed { error: "timeout".into(), status_code: None, retry_at: None }))]).await.unwrap();
        let failed = store.postbacks(&PostbackFilter { status: Some(PostbackStatus::Failed), limit: 10, ..PostbackFilter::default() }).await.unwrap();
        assert_eq!((failed.len(), failed[0].attempts, failed[0].last_error.as_deref()), (1, 2, Some("timeout")));
        let far = retry_at + SignedDuration::from_hours(10);
        assert!(store.lease_due_postbacks(far, far, 10).await.unwrap().iter().all(|d| d.id != first[1].id));
        let requeued = store.retry_postback(first[1].id, far).await.unwrap();
        assert_eq!((requeued.status, requeued.attempts), (PostbackStatus::Pending, 0));
        let due = store.lease_due_postbacks(far, far, 10).await.unwrap();
        assert!(due.iter().any(|d| d.id == first[1].id), "queued again");
    }

    async fn queued_postbacks_follow_their_endpoint_by_id(s: TestStore) {
        let store = &s.store;
        let call = new_call(1, "+14155550123");
        let buyer = buyer_with_endpoints(store, 2).await;
        let (a, b) = (&buyer.spec.postbacks.as_slice()[0], &buyer.spec.postbacks.as_slice()[1]);
        let queued = [
            postback(&call, PostbackEvent::Converted, &buyer, 0),
            postback(&call, PostbackEvent::Converted, &buyer, 1),
            postback(&call, PostbackEvent::Ended, &buyer, 1),
        ];
        let change = CallChange { call: &call, timeline: &[], conversions: &[], touched: &[], load: &[], postbacks: &queued, write: Write::Replace };
        store.save_call(&change).await.unwrap();
        let rewrite = |endpoints: Value| async move {
            let mut spec = serde_json::to_value(&PlanTable::<Buyer>::get(store, buyer.id).await.unwrap().spec).unwrap();
            spec["postbacks"] = endpoints;
            PlanTable::<Buyer>::update(store, buyer.id, &serde_json::from_value(spec).unwrap(), None).await.unwrap()
        };
        let status = |id| async move { store.postback(id).await.unwrap() };

        // Reordered, A's secret rotated and B's URL moved: each postback goes to its own
        // endpoint as it is now.
        rewrite(json!([
            {"id": b.id, "url": "http://127.0.0.1:9/moved", "secret": b.secret.expose()},
            {"id": a.id, "url": a.url.as_str(), "secret": "whsec_rotated_0123456789", "events": ["call.converted"]},
        ]))
        .await;
        let now = Timestamp::now();
        let due = store.lease_due_postbacks(now, now + SignedDuration::from_secs(30), 10).await.unwrap();
        let to = |id| due.iter().find(|d| d.id == id).map(|d| (d.url.as_str(), d.secret.expose())).unwrap();
        assert_eq!(to(queued[0].id), (a.url.as_str(), "whsec_rotated_0123456789"));
        assert_eq!(to(queued[1].id), ("http://127.0.0.1:9/moved", b.secret.expose()));
        assert_eq!(to(queued[2].id), ("http://127.0.0.1:9/moved", b.secret.expose()));
        store.release_postbacks(&due.iter().map(|d| d.id).collect::<Vec<_>>(), now).await.unwrap();

        // B no longer takes the end: its end is cancelled at once, its conversion still goes.
        rewrite(json!([
            {"id": b.id, "url": "http://127.0.0.1:9/moved", "secret": b.secret.expose(), "events": ["call.converted"]},
            {"id": a.id, "url": a.url.as_str(), "secret": "whsec_rotated_0123456789"},
        ]))
        .await;
        let ended = status(queued[2].id).await;
        assert_eq!((ended.status, ended.last_error.as_deref()), (PostbackStatus::Cancelled, Some("cancelled: its endpoint no longer takes call.ended")));
        assert_eq!(status(queued[1].id).await.status, PostbackStatus::Pending);

        // A removed: its postback is cancelled, B's is not; and a retry of it is refused.
        rewrite(json!([{"id": b.id, "url": "http://127.0.0.1:9/moved", "secret": b.secret.expose(), "events": ["call.converted"]}])).await;
        let removed = status(queued[0].id).await;
        assert_eq!((removed.status, removed.last_error.as_deref()), (PostbackStatus::Cancelled, Some("cancelled: its endpoint was removed")));
        assert_eq!(status(queued[1].id).await.status, PostbackStatus::Pending);
        let refused = store.retry_postback(queued[0].id, now).await.unwrap_err();
        assert!(matches!(&refused, StoreError::Conflict { message, .. } if message.contains("its endpoint was removed")), "{refused}");

        // A save that still read the plan from before A's removal queues one more for it: its
        // lease cancels it, and nothing is sent.
        let late = Postback { event_key: format!("{}:call.converted:2", call.sid), ..postback(&call, PostbackEvent::Converted, &buyer, 0) };
        store.save_call(&CallChange { postbacks: std::slice::from_ref(&late), ..change }).await.unwrap();
        let now = Timestamp::now();
        let due = store.lease_due_postbacks(now, now + SignedDuration::from_secs(30), 10).await.unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [queued[1].id], "only B's conversion goes");
        assert_eq!(status(late.id).await.status, PostbackStatus::Cancelled);
        let cancelled = store.postbacks(&PostbackFilter { status: Some(PostbackStatus::Cancelled), limit: 10, ..PostbackFilter::default() }).await.unwrap();
        assert_eq!(cancelled.len(), 3);
        let (pending, failed) = store.outbox_counts().await.unwrap();
        assert_eq!((pending, failed), (1, 0), "a cancelled postback is neither pending nor failed");

        // The buyer removed: what it still had queued is cancelled. A try in flight meanwhile
        // that fails counts for nothing; it stays cancelled.
        PlanTable::<Buyer>::delete(store, buyer.id).await.unwrap();
        let gone = status(queued[1].id).await;
        assert_eq!((gone.status, gone.last_error.as_deref()), (PostbackStatus::Cancelled, Some("cancelled: its buyer or publisher was removed")));
        store.record_tries(&[tried(queued[1].id, now, TryOutcome::Failed(TryFailed { error: "timeout".into(), status_code: None, retry_at: Some(now) }))]).await.unwrap();
        assert_eq!(status(queued[1].id).await.status, PostbackStatus::Cancelled);
    }
}

/// A database whose schema stops before postback endpoints had ids.
struct BeforeEndpointIds {
    db: crate::helpers::TestDb,
}

impl BeforeEndpointIds {
    const LAST_MIGRATION_WITHOUT: i64 = 20261205000002;

    async fn start(engine: crate::helpers::Engine) -> Option<Self> {
        let db = crate::helpers::TestDb::create(engine).await?;
        let (dir, url) = match engine {
            crate::helpers::Engine::Sqlite => ("migrations/sqlite", format!("{}?mode=rwc", db.url)),
            crate::helpers::Engine::Postgres => ("migrations/postgres", db.url.clone()),
        };
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(dir))
            .await
            .unwrap();
        migrator
            .run_to(Self::LAST_MIGRATION_WITHOUT, &mut conn)
            .await
            .unwrap();
        Some(Self { db })
    }
}

on_both_engines! {
    async fn postbacks_queued_before_endpoint_ids_still_go_to_their_endpoint(old: BeforeEndpointIds) {
        let mut db = old.db.connect().await;
        let (company, buyer, publisher, gone) = (Id::<()>::generate(), Id::<()>::generate(), Id::<()>::generate(), Id::<()>::generate());
        let hook = |path: &str| format!("http://127.0.0.1:9/{path}");
        let endpoint = |path: &str, events: &[&str]| json!({"url": hook(path), "secret": format!("whsec_{path}_0123456789abcdef"), "events": events});
        let buyers_endpoints = json!([endpoint("a", &["call.converted"]), endpoint("b", &["call.converted", "call.ended"])]);
        sqlx::query("INSERT INTO companies (id, name, created_at_ms, updated_at_ms) VALUES ($1, 'Acme', 0, 0)")
            .bind(company.to_string()).execute(&mut db).await.unwrap();
        sqlx::query(
            "INSERT INTO buyers (id, company_id, name, destination, ring_timeout_seconds, conversion_seconds,
                dedupe_seconds, duplicate_after, payout_cents, revenue_cents, caps_counted_on, created_at_ms,
                updated_at_ms, postbacks)
             VALUES ($1, $2, 'Acme Auto', '+14155550101', 30, 90, 0, 'converted', 0, 0, 'converted', 0, 0, $3)",
        )
        .bind(buyer.to_string()).bind(company.to_string()).bind(buyers_endpoints.to_string())
        .execute(&mut db).await.unwrap();
        sqlx::query("INSERT INTO publishers (id, company_id, name, created_at_ms, updated_at_ms, postbacks) VALUES ($1, $2, 'Search', 0, 0, $3)")
            .bind(publisher.to_string()).bind(company.to_string()).bind(json!([endpoint("p", &["call.converted", "call.ended"])]).to_string())
            .execute(&mut db).await.unwrap();
        // As the outbox held them: each names its endpoint by position, with the URL and secret
        // it had when queued.
        let queued = [
            ("a at 0", format!("buyer:{buyer}:0"), "a", "pending"),
            ("b at 1", format!("buyer:{buyer}:1"), "b", "pending"),
            // Queued when b was first; the list was reordered since.
            ("b at 0", format!("buyer:{buyer}:0"), "b", "pending"),
            // Its endpoint's URL was changed since (or it was removed: nothing tells which).
            ("edited", format!("buyer:{buyer}:1"), "old", "pending"),
            ("publisher", format!("publisher:{publisher}:0"), "p", "pending"),
            ("owner gone", format!("buyer:{gone}:0"), "x", "pending"),
            ("delivered", format!("buyer:{buyer}:0"), "a", "delivered"),
        ];
        let mut ids = std::collections::HashMap::new();
        for (name, endpoint, path, status) in &queued {
            let id = uuid::Uuid::now_v7();
            ids.insert(*name, id);
            sqlx::query(
                "INSERT INTO postbacks (id, event_key, endpoint, event, call_sid, url, secret, body, status,
                    attempts, next_attempt_at_ms, created_at_ms)
                 VALUES ($1, $2, $3, 'call.converted', 'CA00000000000000000000000000000001', $4, $5, '{}', $6, 0, 0, 0)",
            )
            .bind(id.to_string()).bind(format!("CA00000000000000000000000000000001:call.converted:{name}"))
            .bind(endpoint).bind(hook(path)).bind(format!("whsec_{path}_queued_0123456789")).bind(*status)
            .execute(&mut db).await.unwrap();
        }

        let store = SqlStore::connect_and_migrate(&old.db.url).await.unwrap();
        let acme = PlanTable::<Buyer>::get(&store, buyer.to_string().parse().unwrap()).await.unwrap();
        let stored = acme.spec.postbacks.as_slice();
        assert_eq!(stored.iter().map(|e| e.url.as_str()).collect::<Vec<_>>(), [hook("a"), hook("b")], "in their order");
        assert!(stored.iter().all(|e| e.id.is_some()) && stored[0].id != stored[1].id, "each endpoint has an id of its own");
        let search = PlanTable::<Publisher>::get(&store, publisher.to_string().parse().unwrap()).await.unwrap();
        assert!(search.spec.postbacks.as_slice()[0].id.is_some());

        let now = Timestamp::now();
        let due = store.lease_due_postbacks(now, now + SignedDuration::from_secs(30), 10).await.unwrap();
        let to = |name: &str| {
            (due.iter().find(|d| d.id == ids[name]))
                .map(|d| (d.url.clone(), d.secret.expose().to_owned()))
                .unwrap_or_else(|| panic!("{name} is due: {due:#?}"))
        };
        let now_of = |path: &str| (hook(path), format!("whsec_{path}_0123456789abcdef"));
        assert_eq!(to("a at 0"), now_of("a"));
        assert_eq!(to("b at 1"), now_of("b"));
        assert_eq!(to("b at 0"), now_of("b"), "by the URL it was queued to, not its stale position");
        assert_eq!(to("edited"), (hook("old"), "whsec_old_queued_0123456789".to_owned()), "as before ids");
        assert_eq!(to("publisher"), now_of("p"));
        assert_eq!(due.len(), 5, "{due:#?}");
        let status = |name: &str| {
            let store = &store;
            let id = ids[name];
            async move { store.postback(id).await.unwrap() }
        };
        // The endpoint holds the secret; the outbox keeps a copy only where it has no endpoint.
        let kept: Vec<(String, Option<String>)> = sqlx::query_as("SELECT id, secret FROM postbacks").fetch_all(&mut db).await.unwrap();
        for (id, secret) in kept {
            let edited = id == ids["edited"].to_string() || id == ids["owner gone"].to_string();
            assert_eq!(secret.is_some(), edited, "{id}: {secret:?}");
        }
        let gone = status("owner gone").await;
        assert_eq!((gone.status, gone.last_error.as_deref()), (PostbackStatus::Cancelled, Some("cancelled: its buyer or publisher was removed")));
        assert_eq!(status("delivered").await.status, PostbackStatus::Delivered);

        // Once given their ids, they follow their endpoint: its secret rotated, b's postbacks
        // are signed with the new one.
        let mut spec = serde_json::to_value(&acme.spec).unwrap();
        spec["postbacks"][1]["secret"] = "whsec_b_rotated_0123456789".into();
        PlanTable::<Buyer>::update(&store, acme.id, &serde_json::from_value(spec).unwrap(), None).await.unwrap();
        let leased: Vec<uuid::Uuid> = due.iter().map(|d| d.id).collect();
        store.release_postbacks(&leased, now).await.unwrap();
        let due = store.lease_due_postbacks(now, now + SignedDuration::from_secs(30), 10).await.unwrap();
        let b_at_0 = due.iter().find(|d| d.id == ids["b at 0"]).unwrap();
        assert_eq!(b_at_0.secret.expose(), "whsec_b_rotated_0123456789");
    }
}

/// A record of call `n` built without the stored one: it knows attempt `number` (to `buyer`)
/// from a callback's trail, and dials `fallback` as a blind attempt.
fn blind_call(n: usize, buyer: Id<Buyer>, number: u32, fallback: Id<Buyer>) -> CallRecord {
    let campaign = Id::generate();
    let mut call = new_call(n, "+14155550100");
    call.enter_campaign(None, campaign);
    call.begin_attempt_numbered(
        number,
        buyer,
        campaign,
        AttemptKind::Buyer,
        None,
        Timestamp::now(),
    );
    call.attempt_ended(number, DialStatus::NoAnswer, 0, None, 90, Timestamp::now());
    let blind = call.next_blind_attempt_number();
    call.begin_attempt_numbered(
        blind,
        fallback,
        campaign,
        AttemptKind::Fallback,
        None,
        Timestamp::now(),
    );
    call
}

/// Saves `call` as a merge of the turns given (each a key and its entries).
async fn merge(store: &impl CallStore, call: &CallRecord, turns: &[(u128, &[&str])]) -> Saved {
    let timeline: Vec<_> = turns
        .iter()
        .flat_map(|(_, entries)| entries.iter().map(|r| entry(r)))
        .collect();
    let turns: Vec<BlindTurn> = (turns.iter())
        .map(|(key, entries)| BlindTurn {
            key: uuid::Uuid::from_u128(*key),
            entries: entries.len(),
        })
        .collect();
    let mut call = call.clone();
    call.timeline_len = timeline.len() as u32;
    let change = CallChange {
        call: &call,
        timeline: &timeline,
        conversions: &[],
        touched: &[],
        load: &[],
        postbacks: &[],
        write: Write::Merge { turns: &turns },
    };
    store.save_call(&change).await.unwrap()
}

on_both_engines! {
    async fn a_record_built_without_the_stored_one_is_merged_into_it_once(s: TestStore) {
        let (a, f) = (Id::generate(), Id::generate());
        // Stored: attempt 1 to A, ringing, two entries.
        let mut stored = new_call(1, "+14155550100");
        let campaign = Id::generate();
        stored.enter_campaign(None, campaign);
        stored.begin_attempt(a, campaign, AttemptKind::Buyer, Some(false), Timestamp::now());
        save(&s.store, &mut stored, &["arrived", "dialed A"], &[]).await.unwrap();
        let stored = s.store.call(&sid(1)).await.unwrap().unwrap();

        let blind = blind_call(1, a, 1, f);
        let saved = merge(&s.store, &blind, &[(7, &["A no answer", "fallback"])]).await;
        let Saved::Merged { stored: before, merged } = saved else { panic!("merged: {saved:?}") };
        assert_eq!(before.as_deref(), Some(&stored), "the call as it was stored");
        let read = s.store.call(&sid(1)).await.unwrap().unwrap();
        let dials_of = |call: &CallRecord| -> Vec<_> { call.attempts.iter().map(|d| (d.number, d.buyer_id, d.status, d.duplicate)).collect() };
        assert_eq!(dials_of(&merged), dials_of(&read), "the call as it is stored now");
        assert_eq!((merged.timeline_len, &merged.blind_turns), (read.timeline_len, &read.blind_turns));
        let dials = dials_of(&read);
        assert_eq!(dials, [(1, a, Some(DialStatus::NoAnswer), Some(false)), (1001, f, None, None)]);
        assert_eq!(reasons(&s.store.timeline(&sid(1)).await.unwrap()), ["arrived", "dialed A", "A no answer", "fallback"]);

        // The same merge again (its answer was lost), and with a turn more: each turn's
        // entries once.
        merge(&s.store, &blind, &[(7, &["A no answer", "fallback"])]).await;
        merge(&s.store, &blind, &[(7, &["A no answer", "fallback"]), (8, &["leg ended"])]).await;
        assert_eq!(
            reasons(&s.store.timeline(&sid(1)).await.unwrap()),
            ["arrived", "dialed A", "A no answer", "fallback", "leg ended"]
        );
        assert_eq!(s.store.call(&sid(1)).await.unwrap().unwrap().timeline_len, 5);
    }

    async fn a_record_built_without_the_store_is_inserted_when_the_store_has_none(s: TestStore) {
        let blind = blind_call(2, Id::generate(), 3, Id::generate());
        let saved = merge(&s.store, &blind, &[(9, &["dial ended", "fallback"])]).await;
        assert!(matches!(&saved, Saved::Merged { stored: None, .. }), "{saved:?}");
        let read = s.store.call(&sid(2)).await.unwrap().unwrap();
        assert_eq!(read.attempts.iter().map(|d| d.number).collect::<Vec<_>>(), [3, 1001]);
        assert_eq!(read.blind_turns.len(), 1);
        // Merged again: nothing twice.
        merge(&s.store, &blind, &[(9, &["dial ended", "fallback"])]).await;
        assert_eq!(reasons(&s.store.timeline(&sid(2)).await.unwrap()), ["dial ended", "fallback"]);
    }

    async fn two_merges_of_one_call_in_one_commit_each_add_their_own_entries(s: TestStore) {
        let blind = blind_call(3, Id::generate(), 1, Id::generate());
        let (one, two) = futures_util::join!(
            merge(&s.store, &blind, &[(1, &["first"])]),
            merge(&s.store, &blind, &[(1, &["first"]), (2, &["second"])]),
        );
        assert!(matches!(one, Saved::Merged { .. }) && matches!(two, Saved::Merged { .. }));
        assert_eq!(reasons(&s.store.timeline(&sid(3)).await.unwrap()), ["first", "second"]);
    }

    async fn a_slot_whose_hold_went_unanswered_is_given_back_to_nobody_else(s: TestStore) {
        let acme = s.store.insert(None, &serde_json::from_value::<Company>(serde_json::json!({"name": "Acme"})).unwrap()).await.unwrap();
        let buyer = |name: &str| serde_json::from_value::<Buyer>(serde_json::json!({"name": name, "destination": "+14155550101", "caps": {"concurrency": 5}})).unwrap();
        let (x, y) = (s.store.insert(Some(acme.id), &buyer("X")).await.unwrap(), s.store.insert(Some(acme.id), &buyer("Y")).await.unwrap());
        let leg = |n: usize| Leg { call: sid(n), attempt: 1 };
        let at = Timestamp::now();
        for (n, holder) in [(4, &x), (5, &x)] {
            assert_eq!(s.store.hold_slot(&SlotHold { buyer: holder, leg: &leg(n), at }).await.unwrap(), None);
        }
        let slots = || async {
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT call_sid, attempt FROM capacity_slots ORDER BY call_sid")
                .fetch_all(&mut s.db.connect().await)
                .await
                .unwrap();
            rows.into_iter().map(|(call, _)| call).collect::<Vec<_>>()
        };
        let call = new_call(4, "+14155550100");
        let give_back = |buyer: Id<Buyer>, n: usize| vec![LoadChange::Unheld { buyer, leg: leg(n) }];
        for (load, left) in [
            // Another buyer's give-back frees nothing.
            (give_back(y.id, 4), vec![sid(4).to_string(), sid(5).to_string()]),
            (give_back(x.id, 4), vec![sid(5).to_string()]),
        ] {
            s.store
                .save_call(&CallChange { call: &call, timeline: &[], conversions: &[], touched: &[], load: &load, postbacks: &[], write: Write::Replace })
                .await
                .unwrap();
            assert_eq!(slots().await, left);
        }
    }
}
