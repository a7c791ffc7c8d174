//! Call saves through the store's group commit: many calls' saves share a transaction, and
//! what each caller is told is true of its own save.

use futures_util::future::join_all;
use jiff::{SignedDuration, Timestamp};
use sqlx::Executor;
use switchboard::{
    domain::{
        call::{CallRecord, CallSid, CallState, Caller, Outcome},
        dedupe::{Scope, Touch, Touched},
        ids::Id,
        phone::E164,
        timeline::{Event, TimelineEntry},
    },
    store::{CallChange, CallStore, StoreError},
};

use crate::helpers::{TestStore, on_both_engines};

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
        })
        .await
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
        let marks = s.store.dedupe_marks().await.unwrap();
        assert_eq!(marks.len(), 1, "{marks:?}");
        let ms = |at: Timestamp| Some(Timestamp::from_millisecond(at.as_millisecond()).unwrap());
        assert_eq!(marks[0].mark.last_connected, ms(later));
        assert_eq!(marks[0].mark.last_converted, ms(earlier));

        // And news older than what is stored never wins.
        let mut three = new_call(3, caller.as_str());
        save(&s.store, &mut three, &[], &[touch(Touch::Connected, earlier)]).await.unwrap();
        assert_eq!(s.store.dedupe_marks().await.unwrap()[0].mark.last_connected, ms(later));
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
