//! The store, on both engines: what it keeps, and what it refuses.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use switchboard::fresh::Generate;
use switchboard::{
    domain::{
        access::KeyDigest,
        call::CallSid,
        ids::Id,
        money::Money,
        phone::E164,
        plan::{Buyer, Campaign, Company, Publisher, Record},
        rtb::{PingOutcome, PingRecord, PingStatus, Reservation, RtbWrite},
    },
    store::{CallStore, ListFilter, PingFilter, PlanStore, PlanTable, RtbStore, StoreError, TokenStore},
};
use uuid::Uuid;

use crate::helpers::{TestStore, on_both_engines};

fn company(name: &str) -> Company {
    serde_json::from_value(json!({ "name": name })).unwrap()
}

fn buyer(name: &str, destination: &str) -> Buyer {
    serde_json::from_value(json!({ "name": name, "destination": destination })).unwrap()
}

fn campaign(value: serde_json::Value) -> Campaign {
    serde_json::from_value(value).unwrap()
}

async fn new_company(s: &TestStore, name: &str) -> Record<Company> {
    s.store.insert(None, &company(name)).await.unwrap()
}

fn all() -> ListFilter {
    ListFilter {
        limit: 1000,
        ..ListFilter::default()
    }
}

on_both_engines! {
    async fn companies_round_trip_and_their_names_are_unique(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        assert!(!acme.spec.duplicate_caller_handling, "off unless turned on");
        let read: Record<Company> = s.store.get(acme.id).await.unwrap();
        assert_eq!(read, acme);

        let err = PlanTable::<Company>::insert(&s.store, None, &company("Acme")).await.unwrap_err();
        assert!(matches!(&err, StoreError::Conflict { field: Some(f), .. } if f == "name"), "{err}");
        let listed: Vec<Record<Company>> = s.store.list(&all()).await.unwrap();
        assert_eq!(listed, vec![acme]);
    }

    async fn a_buyer_keeps_every_field(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let spec: Buyer = serde_json::from_value(json!({
            "name": "Night Owl",
            "destination": "sip:intake@pbx.example.com;transport=tls",
            "ring_timeout_seconds": 45,
            "conversion_seconds": 120,
            "dedupe_seconds": 2_592_000,
            "duplicate_after": "connected",
            "dedupe_group": "Owl Group",
            "payout": 7.5,
            "revenue": "14.25",
            "caps": { "concurrency": 3, "hourly": 10, "daily": 50, "monthly": 900, "lifetime": 10000, "counted_on": "connected" },
            "time_zone": "America/Los_Angeles",
            "business_hours": {
                "monday": { "open": "18:00", "close": "06:00" },
                "sunday": { "open": "00:00", "close": "24:00" }
            },
            "sip_auth": { "username": "switchboard", "password": "pbx-secret-1" },
            "screen": "machine-detection",
            "paused": true
        }))
        .unwrap();
        let stored = s.store.insert(Some(acme.id), &spec).await.unwrap();
        let read: Record<Buyer> = s.store.get(stored.id).await.unwrap();
        assert_eq!(read.spec, spec);
        assert_eq!(read.company_id, Some(acme.id));
    }

    async fn an_update_that_changes_nothing_leaves_the_record_alone(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let original = s.store.insert(Some(acme.id), &buyer("A", "+14155550101")).await.unwrap();
        let same = s.store.update(original.id, &original.spec, None).await.unwrap();
        assert_eq!(same, original, "updated_at must not move when nothing changed");

        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut changed = original.spec.clone();
        changed.paused = true;
        let updated = s.store.update(original.id, &changed, None).await.unwrap();
        assert!(updated.updated_at > original.updated_at);
        assert_eq!(updated.created_at, original.created_at);
        assert!(PlanTable::<Buyer>::get(&s.store, original.id).await.unwrap().spec.paused);
    }

    async fn an_update_based_on_a_stale_read_is_refused(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let read = s.store.insert(Some(acme.id), &buyer("A", "+14155550101")).await.unwrap();
        let mut theirs = read.spec.clone();
        theirs.paused = true;
        s.store.update(read.id, &theirs, Some(&read.spec)).await.unwrap();

        let mut mine = read.spec.clone();
        mine.payout = switchboard::domain::money::Money::from_cents(500).unwrap();
        let err = s.store.update(read.id, &mine, Some(&read.spec)).await.unwrap_err();
        assert!(matches!(err, StoreError::Stale), "{err}");
        let stored: Record<Buyer> = s.store.get(read.id).await.unwrap();
        assert!(stored.spec.paused, "the other change survives");
        assert_eq!(stored.spec.payout.cents(), 0);
    }

    async fn a_tracking_number_belongs_to_one_campaign(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let first = s.store
            .insert(Some(acme.id), &campaign(json!({ "name": "First", "numbers": ["+18005550100", "+18885550100"] })))
            .await
            .unwrap();
        let err = s.store
            .insert(Some(acme.id), &campaign(json!({ "name": "Second", "numbers": ["+1 800 555 0100"] })))
            .await
            .unwrap_err();
        match &err {
            StoreError::Conflict { field: Some(field), message } => {
                assert_eq!(field, "numbers");
                assert!(message.contains("+18005550100") && message.contains("First"), "{message}");
            }
            other => panic!("expected a conflict, got {other}"),
        }

        let mut released = first.spec.clone();
        released.numbers = serde_json::from_value(json!(["+18885550100"])).unwrap();
        s.store.update(first.id, &released, None).await.unwrap();
        let second = s.store
            .insert(Some(acme.id), &campaign(json!({ "name": "Second", "numbers": ["+18005550100"] })))
            .await
            .unwrap();
        let read: Record<Campaign> = s.store.get(second.id).await.unwrap();
        assert_eq!(read.spec.numbers.as_slice()[0].as_str(), "+18005550100");
    }

    async fn a_campaign_keeps_its_buyer_order_and_references(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let a = s.store.insert(Some(acme.id), &buyer("A", "+14155550101")).await.unwrap();
        let b = s.store.insert(Some(acme.id), &buyer("B", "+14155550102")).await.unwrap();
        let fallback = s.store.insert(Some(acme.id), &buyer("F", "+14155550199")).await.unwrap();
        let overflow = s.store.insert(Some(acme.id), &campaign(json!({ "name": "Overflow" }))).await.unwrap();
        let spec = campaign(json!({
            "name": "Main",
            "duplicate_caller_handling": "new_convertible_handler",
            "buyers": [
                { "buyer_id": b.id, "priority": 2, "weight": 5 },
                { "buyer_id": a.id },
            ],
            "fallback_buyer_id": fallback.id,
            "redirect_campaign_id": overflow.id,
            "rtb_reservation_seconds": 90,
            "rtb_caller_number_optional": true,
        }));
        let main = s.store.insert(Some(acme.id), &spec).await.unwrap();
        let read: Record<Campaign> = s.store.get(main.id).await.unwrap();
        assert_eq!(read.spec, spec);
        let order: Vec<_> = read.spec.buyers.as_slice().iter().map(|l| l.buyer_id).collect();
        assert_eq!(order, vec![b.id, a.id]);
    }

    async fn references_must_stay_inside_the_company(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let other = new_company(&s, "Other").await;
        let foreign = s.store.insert(Some(other.id), &buyer("Theirs", "+14155550109")).await.unwrap();
        let foreign_campaign = s.store.insert(Some(other.id), &campaign(json!({ "name": "Theirs" }))).await.unwrap();

        let cases = [
            (json!({ "name": "C", "buyers": [{ "buyer_id": foreign.id }] }), "buyers[0].buyer_id"),
            (json!({ "name": "C", "fallback_buyer_id": foreign.id }), "fallback_buyer_id"),
            (json!({ "name": "C", "redirect_campaign_id": foreign_campaign.id }), "redirect_campaign_id"),
        ];
        for (spec, expected) in cases {
            let err = s.store.insert(Some(acme.id), &campaign(spec)).await.unwrap_err();
            assert!(matches!(&err, StoreError::InvalidReference { field, .. } if field == expected), "{err}");
        }

        let own = s.store.insert(Some(acme.id), &campaign(json!({ "name": "Self" }))).await.unwrap();
        let mut looping = own.spec.clone();
        looping.redirect_campaign_id = Some(own.id);
        let err = s.store.update(own.id, &looping, None).await.unwrap_err();
        assert!(err.to_string().contains("cannot redirect to itself"), "{err}");

        let missing_company = switchboard::domain::ids::Id::generate();
        let err = s.store.insert(Some(missing_company), &buyer("X", "+14155550101")).await.unwrap_err();
        assert!(matches!(&err, StoreError::InvalidReference { field, .. } if field == "company_id"), "{err}");
    }

    async fn records_in_use_cannot_be_deleted(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let a = s.store.insert(Some(acme.id), &buyer("A", "+14155550101")).await.unwrap();
        let f = s.store.insert(Some(acme.id), &buyer("F", "+14155550199")).await.unwrap();
        let overflow = s.store.insert(Some(acme.id), &campaign(json!({ "name": "Overflow" }))).await.unwrap();
        let main = s.store
            .insert(Some(acme.id), &campaign(json!({
                "name": "Main", "buyers": [{ "buyer_id": a.id }],
                "fallback_buyer_id": f.id, "redirect_campaign_id": overflow.id,
            })))
            .await
            .unwrap();

        for err in [
            PlanTable::<Buyer>::delete(&s.store, a.id).await.unwrap_err(),
            PlanTable::<Buyer>::delete(&s.store, f.id).await.unwrap_err(),
            PlanTable::<Campaign>::delete(&s.store, overflow.id).await.unwrap_err(),
            PlanTable::<Company>::delete(&s.store, acme.id).await.unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        }
        assert!(PlanTable::<Buyer>::get(&s.store, a.id).await.is_ok(), "a refused delete removes nothing");

        PlanTable::<Campaign>::delete(&s.store, main.id).await.unwrap();
        PlanTable::<Buyer>::delete(&s.store, a.id).await.unwrap();
        PlanTable::<Buyer>::delete(&s.store, f.id).await.unwrap();
        PlanTable::<Campaign>::delete(&s.store, overflow.id).await.unwrap();
        PlanTable::<Company>::delete(&s.store, acme.id).await.unwrap();
        let err = PlanTable::<Company>::get(&s.store, acme.id).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { kind: "company", .. }), "{err}");
        let err = PlanTable::<Company>::delete(&s.store, acme.id).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    }

    async fn publishers_external_ids_are_unique_per_company(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let other = new_company(&s, "Other").await;
        let publisher = |name: &str| -> Publisher {
            serde_json::from_value(json!({ "name": name, "external_id": "pub-001" })).unwrap()
        };
        s.store.insert(Some(acme.id), &publisher("Search")).await.unwrap();
        let err = s.store.insert(Some(acme.id), &publisher("Social")).await.unwrap_err();
        assert!(matches!(&err, StoreError::Conflict { field: Some(f), .. } if f == "external_id"), "{err}");
        s.store.insert(Some(other.id), &publisher("Search")).await.expect("another company may reuse it");
    }

    async fn lists_page_in_creation_order_and_filter_by_company(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let other = new_company(&s, "Other").await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(s.store.insert(Some(acme.id), &buyer(&format!("B{i}"), "+14155550101")).await.unwrap().id);
        }
        s.store.insert(Some(other.id), &buyer("Elsewhere", "+14155550101")).await.unwrap();

        let mut filter = ListFilter { company_id: Some(acme.id), after: None, limit: 2 };
        let mut seen = Vec::new();
        loop {
            let page: Vec<Record<Buyer>> = s.store.list(&filter).await.unwrap();
            seen.extend(page.iter().map(|r| r.id));
            match page.last() {
                Some(last) if page.len() == 2 => filter.after = Some(last.id.as_uuid()),
                _ => break,
            }
        }
        assert_eq!(seen, ids);
    }

    async fn rtb_keys_are_kept_as_digests_and_unique(s: TestStore) {
        let acme = new_company(&s, "Acme").await;
        let one = s.store.insert(Some(acme.id), &campaign(json!({ "name": "One" }))).await.unwrap();
        let two = s.store.insert(Some(acme.id), &campaign(json!({ "name": "Two" }))).await.unwrap();
        assert!(!s.store.has_rtb_key(one.id).await.unwrap());
        let digest = "a".repeat(64);
        s.store.set_rtb_key(one.id, Some(&digest)).await.unwrap();
        assert!(s.store.has_rtb_key(one.id).await.unwrap());
        let keys = s.store.rtb_keys().await.unwrap();
        assert_eq!(keys, [(one.id, KeyDigest::from_hex(&digest).unwrap())]);
        let err = s.store.set_rtb_key(two.id, Some(&digest)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        s.store.set_rtb_key(one.id, None).await.unwrap();
        assert!(!s.store.has_rtb_key(one.id).await.unwrap());
        let missing = switchboard::domain::ids::Id::generate();
        let err = s.store.set_rtb_key(missing, Some(&"b".repeat(64))).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { kind: "campaign", .. }), "{err}");
    }

    async fn api_tokens_are_kept_as_digests_rotated_in_one_step_and_revoked(s: TestStore) {
        use switchboard::domain::access::{Grant, IssuedToken, Role, Scope, TokenName, TokenSecret};
        let at: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let token = |name: &str, grant: Grant, created_at, expires_at| IssuedToken {
            id: Uuid::now_v7(),
            name: TokenName::try_from(name.to_owned()).unwrap(),
            grant,
            created_at,
            expires_at,
            revoked_at: None,
        };
        let later = at + SignedDuration::from_hours(24);
        let (grafana, secret) = (token("grafana", Grant::install_supervisor(), at, Some(later)), TokenSecret::generate());
        s.store.issue_token(&grafana, &secret.digest(), None).await.unwrap();
        assert_eq!(s.store.api_tokens().await.unwrap(), [(grafana.clone(), secret.digest())]);
        let err = (s.store)
            .issue_token(&token("again", Grant::install_admin(), at, None), &secret.digest(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

        // Rotation: the new token exists and the old one expires at the end of its grace, in
        // one transaction; a grace past the old token's own expiry leaves that expiry alone.
        let minute = at + SignedDuration::from_mins(1);
        let (next, next_secret) = (token("grafana", Grant::install_supervisor(), minute, Some(later)), TokenSecret::generate());
        s.store.issue_token(&next, &next_secret.digest(), Some((grafana.id, minute))).await.unwrap();
        let stored = s.store.api_tokens().await.unwrap();
        assert_eq!(stored[0], (next.clone(), next_secret.digest()), "newest first");
        assert_eq!(stored[1].0.expires_at, Some(minute));
        let third = token("grafana", Grant::install_supervisor(), minute, None);
        let far = later + SignedDuration::from_hours(24);
        s.store.issue_token(&third, &TokenSecret::generate().digest(), Some((next.id, far))).await.unwrap();
        assert_eq!(s.store.api_tokens().await.unwrap()[1].0.expires_at, Some(later));

        let revoked = s.store.revoke_token(grafana.id, minute).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(minute));
        let again = s.store.revoke_token(grafana.id, later).await.unwrap();
        assert_eq!(again.revoked_at, Some(minute), "a second revocation changes nothing");
        // A revoked token cannot be rotated, and nothing is issued in the attempt.
        let orphan = token("orphan", Grant::install_admin(), later, None);
        let err = (s.store)
            .issue_token(&orphan, &TokenSecret::generate().digest(), Some((grafana.id, later)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { kind: "token", .. }), "{err}");
        // A scope is kept as issued: a publisher's token reads back as that publisher's.
        let publisher = switchboard::domain::ids::Id::generate();
        let portal = Grant::new(Role::Publisher, Scope::Publishers([publisher].into())).unwrap();
        let (portal, portal_secret) = (token("portal", portal, far, None), TokenSecret::generate());
        s.store.issue_token(&portal, &portal_secret.digest(), None).await.unwrap();
        let stored = s.store.api_tokens().await.unwrap();
        assert_eq!(stored[0], (portal.clone(), portal_secret.digest()));
        assert_eq!(stored[0].0.grant.scope(), &Scope::Publishers([publisher].into()));
        assert_eq!(s.store.api_tokens().await.unwrap().len(), 4);
        let err = s.store.revoke_token(Uuid::now_v7(), at).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { kind: "token", .. }), "{err}");
    }

    async fn rtb_writes_are_idempotent_and_held_reservations_reload(s: TestStore) {
        let at: Timestamp = "2026-11-24T20:00:00Z".parse().unwrap();
        let number = |n: &str| E164::from_provider(n).unwrap();
        let reservation = |caller: Option<&str>, seconds| Reservation {
            uuid: Uuid::now_v7(),
            campaign_id: Id::generate(),
            caller: caller.map(number),
            buyer_id: Id::generate(),
            publisher_id: Some(Id::generate()),
            payout: Money::from_cents(1050).unwrap(),
            seconds: 90,
            inbound_number: number("+18005550100"),
            reserved_at: at,
            expires_at: Reservation::expiry(at, seconds),
        };
        let (held, claimed, short, anonymous) = (
            reservation(Some("+14155550101"), 60),
            reservation(Some("+14155550102"), 60),
            reservation(Some("+14155550103"), 5),
            reservation(None, 60),
        );
        let ping = PingRecord {
            id: held.uuid,
            received_at: at,
            campaign_id: held.campaign_id,
            publisher_id: Some(Id::generate()),
            caller_number: held.caller.clone(),
            request: [("zip".to_owned(), "10001".to_owned())].into(),
            outcome: PingOutcome::Reserved,
            cached: false,
            reason: None,
            reservation: Some(held.uuid),
            answer: serde_json::to_value(held.bid(false)).unwrap(),
        };
        let call_sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
        let writes: Vec<RtbWrite> = [&held, &claimed, &short, &anonymous]
            .into_iter()
            .map(|r| RtbWrite::Reserved(Box::new(r.clone())))
            .chain([
                RtbWrite::Ping(Box::new(ping.clone())),
                RtbWrite::Ping(Box::new(PingRecord { id: claimed.uuid, reservation: Some(claimed.uuid), ..ping.clone() })),
                RtbWrite::Claimed { reservation: Box::new(claimed.clone()), call_sid: call_sid.clone(), at },
            ])
            .collect();
        // Written twice, as a retried batch would be: once is what counts.
        s.store.save_rtb(&writes).await.unwrap();
        s.store.save_rtb(&writes).await.unwrap();

        let reload = s.store.held_reservations(at + SignedDuration::from_secs(10)).await.unwrap();
        assert_eq!(
            reload,
            [(held.clone(), None), (claimed.clone(), Some(call_sid.clone()))],
            "with the call that claimed them; not the expired, nor the one without a caller"
        );

        let filter = PingFilter {
            campaign_id: None, publisher_id: None, caller: None, status: None, from: None, to: None,
            before: None, limit: 10, at,
        };
        let logged = s.store.rtb_pings(&filter).await.unwrap();
        assert_eq!(logged.len(), 2, "newest first");
        assert_eq!(logged[1].ping, ping);
        let shown = logged[1].held.as_ref().unwrap();
        assert_eq!((shown.buyer_id, shown.expires_at, shown.claimed_at), (held.buyer_id, held.expires_at, None));
        let expired = PingFilter { status: Some(PingStatus::Expired), at: held.expires_at, ..filter.clone() };
        assert_eq!(s.store.rtb_pings(&expired).await.unwrap().len(), 1);
        let live = PingFilter { status: Some(PingStatus::Reserved), ..filter.clone() };
        assert_eq!(s.store.rtb_pings(&live).await.unwrap()[0].ping, ping);
        let taken = PingFilter { status: Some(PingStatus::Claimed), ..filter };
        let taken = s.store.rtb_pings(&taken).await.unwrap();
        assert_eq!(taken.len(), 1);
        let shown = taken[0].held.as_ref().unwrap();
        assert_eq!((shown.uuid, shown.claimed_at, shown.call_sid.clone()), (claimed.uuid, Some(at), Some(call_sid)));
    }

    async fn migrating_again_is_harmless(s: TestStore) {
        new_company(&s, "Acme").await;
        s.store.migrate().await.unwrap();
        let again = switchboard::store::SqlStore::connect_and_migrate(&s.db.url).await.unwrap();
        assert_eq!(PlanTable::<Company>::list(&again, &all()).await.unwrap().len(), 1);
        again.ping().await.unwrap();
    }
}
