//! Importing plan files, on both engines: idempotent, in place, all or nothing.

use switchboard::{
    domain::plan::{Buyer, Campaign, Company, Publisher, Record},
    plan::{DEMO_PLAN, ImportReport, Plan, Tally},
    store::{ListFilter, PlanStore, PlanTable, StoreError},
};

use crate::helpers::{TestStore, on_both_engines};

fn all() -> ListFilter {
    ListFilter {
        limit: 1000,
        ..ListFilter::default()
    }
}

/// Everything stored, to compare before and after.
async fn snapshot(
    s: &TestStore,
) -> (
    Vec<Record<Company>>,
    Vec<Record<Buyer>>,
    Vec<Record<Campaign>>,
    Vec<Record<Publisher>>,
) {
    (
        s.store.list(&all()).await.unwrap(),
        s.store.list(&all()).await.unwrap(),
        s.store.list(&all()).await.unwrap(),
        s.store.list(&all()).await.unwrap(),
    )
}

fn tally(created: u32, updated: u32, unchanged: u32) -> Tally {
    Tally {
        created,
        updated,
        unchanged,
    }
}

const TWO_CAMPAIGNS: &str = r#"
[[companies]]
name = "Acme"

[[companies.buyers]]
name = "A"
destination = "+14155550101"
payout = 10

[[companies.buyers]]
name = "B"
destination = "+14155550102"

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100", "+18885550100"]
buyers = [{ buyer = "A" }, { buyer = "B", priority = 2 }]
redirect_campaign = "Overflow"

[[companies.campaigns]]
name = "Overflow"
numbers = ["+18775550100"]
buyers = [{ buyer = "B" }]
redirect_campaign = "Main"
"#;

on_both_engines! {
    async fn importing_the_demo_plan_twice_changes_nothing_the_second_time(s: TestStore) {
        let plan = Plan::parse(DEMO_PLAN).unwrap();
        let first = s.store.import_plan(&plan).await.unwrap();
        assert_eq!(first, ImportReport {
            companies: tally(1, 0, 0),
            publishers: tally(2, 0, 0),
            buyers: tally(5, 0, 0),
            campaigns: tally(2, 0, 0),
            blocked_callers: tally(2, 0, 0),
        });
        let before = snapshot(&s).await;

        let second = s.store.import_plan(&plan).await.unwrap();
        assert!(!second.changed_anything(), "{second}");
        assert_eq!(second.buyers, tally(0, 0, 5));
        assert_eq!(snapshot(&s).await, before, "not even updated_at may move");
    }

    async fn an_edited_plan_updates_records_in_place(s: TestStore) {
        s.store.import_plan(&Plan::parse(TWO_CAMPAIGNS).unwrap()).await.unwrap();
        let (_, buyers_before, campaigns_before, _) = snapshot(&s).await;

        // A's payout changes, a number moves from Main to Overflow, and Main drops buyer B.
        let edited = TWO_CAMPAIGNS
            .replace("payout = 10", "payout = 12.5")
            .replace(r#"numbers = ["+18005550100", "+18885550100"]"#, r#"numbers = ["+18005550100"]"#)
            .replace(r#"numbers = ["+18775550100"]"#, r#"numbers = ["+18775550100", "+18885550100"]"#)
            .replace(r#"buyers = [{ buyer = "A" }, { buyer = "B", priority = 2 }]"#, r#"buyers = [{ buyer = "A" }]"#);
        let report = s.store.import_plan(&Plan::parse(&edited).unwrap()).await.unwrap();
        assert_eq!(report.buyers, tally(0, 1, 1));
        assert_eq!(report.campaigns, tally(0, 2, 0));
        assert_eq!(report.companies, tally(0, 0, 1));

        let (_, buyers, campaigns, _) = snapshot(&s).await;
        let ids = |records: &[Record<Campaign>]| records.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&campaigns), ids(&campaigns_before), "updated in place, same ids");
        assert_eq!(buyers.iter().map(|b| b.id).collect::<Vec<_>>(), buyers_before.iter().map(|b| b.id).collect::<Vec<_>>());
        let a = buyers.iter().find(|b| b.spec.name.as_str() == "A").unwrap();
        assert_eq!(a.spec.payout.cents(), 1250);
        let overflow = campaigns.iter().find(|c| c.spec.name.as_str() == "Overflow").unwrap();
        let numbers: Vec<_> = overflow.spec.numbers.as_slice().iter().map(|n| n.as_str()).collect();
        assert_eq!(numbers, ["+18775550100", "+18885550100"]);
        let main = campaigns.iter().find(|c| c.spec.name.as_str() == "Main").unwrap();
        assert_eq!(main.spec.buyers.as_slice().len(), 1);
        assert_eq!(main.spec.redirect_campaign_id, Some(overflow.id), "redirects that form a cycle resolve");
        assert_eq!(overflow.spec.redirect_campaign_id, Some(main.id));

        let again = s.store.import_plan(&Plan::parse(&edited).unwrap()).await.unwrap();
        assert!(!again.changed_anything(), "{again}");
    }

    async fn a_plan_that_fails_changes_nothing(s: TestStore) {
        s.store.import_plan(&Plan::parse(TWO_CAMPAIGNS).unwrap()).await.unwrap();
        let before = snapshot(&s).await;
        // A second company claims a number Acme's campaign holds: the whole import is refused,
        // including the company and buyer it would have created first.
        let clash = r#"
            [[companies]]
            name = "Newcomer"
            [[companies.buyers]]
            name = "N"
            destination = "+14155550150"
            [[companies.campaigns]]
            name = "Grab"
            numbers = ["+18005550100"]
        "#;
        let err = s.store.import_plan(&Plan::parse(clash).unwrap()).await.unwrap_err();
        match &err {
            StoreError::Conflict { field: Some(field), message } => {
                assert_eq!(field, "companies[0].campaigns[0].numbers");
                assert!(message.contains("Main"), "{message}");
            }
            other => panic!("expected a conflict, got {other}"),
        }
        assert_eq!(snapshot(&s).await, before);
    }

    async fn a_number_can_move_to_another_company_in_one_import(s: TestStore) {
        s.store.import_plan(&Plan::parse(TWO_CAMPAIGNS).unwrap()).await.unwrap();
        let moved = format!(
            "{}\n{}",
            TWO_CAMPAIGNS.replace(r#"numbers = ["+18775550100"]"#, "numbers = []"),
            r#"
            [[companies]]
            name = "Newcomer"
            [[companies.campaigns]]
            name = "Taken Over"
            numbers = ["+18775550100"]
            "#
        );
        let report = s.store.import_plan(&Plan::parse(&moved).unwrap()).await.unwrap();
        assert_eq!(report.campaigns, tally(1, 1, 1));
        let campaigns: Vec<Record<Campaign>> = s.store.list(&all()).await.unwrap();
        let taker = campaigns.iter().find(|c| c.spec.name.as_str() == "Taken Over").unwrap();
        assert_eq!(taker.spec.numbers.as_slice()[0].as_str(), "+18775550100");
    }

    async fn imports_running_at_once_all_succeed(s: TestStore) {
        // Several nodes started with `serve --demo` at the same moment.
        let plan = Plan::parse(DEMO_PLAN).unwrap();
        let store = std::sync::Arc::new(s.store.clone());
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let (store, plan) = (store.clone(), plan.clone());
                actix_web::rt::spawn(async move { store.import_plan(&plan).await })
            })
            .collect();
        let mut created = 0;
        for run in runs {
            let report = run.await.unwrap().expect("every import succeeds");
            created += report.campaigns.created;
        }
        assert_eq!(created, 2, "exactly one import created the campaigns");
        assert_eq!(PlanTable::<Campaign>::list(&s.store, &all()).await.unwrap().len(), 2);
    }

    async fn rtb_keys_from_a_plan_are_set_once(s: TestStore) {
        let plan = Plan::parse(DEMO_PLAN).unwrap();
        s.store.import_plan(&plan).await.unwrap();
        let campaigns: Vec<Record<Campaign>> = s.store.list(&all()).await.unwrap();
        let main = campaigns.iter().find(|c| c.spec.name.as_str() == "Auto Insurance Quotes").unwrap();
        assert!(s.store.has_rtb_key(main.id).await.unwrap());

        let rotated = DEMO_PLAN.replace("demo-rtb-key-auto-insurance-0001", "demo-rtb-key-auto-insurance-0002");
        let report = s.store.import_plan(&Plan::parse(&rotated).unwrap()).await.unwrap();
        assert_eq!(report.campaigns, tally(0, 1, 1), "a new key is a change");
    }

    async fn re_importing_a_plan_keeps_its_postback_endpoints_ids(s: TestStore) {
        let with_endpoints = |endpoints: &str| {
            TWO_CAMPAIGNS.replace("payout = 10\n", &format!("payout = 10\npostbacks = [{endpoints}]\n"))
        };
        let a = r#"{ url = "https://a.example/hook", secret = "whsec_a_0123456789abcdef" }"#;
        let b = r#"{ url = "https://b.example/hook", secret = "whsec_b_0123456789abcdef" }"#;
        let endpoints_of_a = |buyers: &[Record<Buyer>]| {
            let a = buyers.iter().find(|b| b.spec.name.as_str() == "A").unwrap();
            (a.spec.postbacks.as_slice().iter())
                .map(|e| (e.url.as_str().to_owned(), e.id.expect("every stored endpoint has an id")))
                .collect::<Vec<_>>()
        };
        let plan = with_endpoints(&format!("{a}, {b}"));
        s.store.import_plan(&Plan::parse(&plan).unwrap()).await.unwrap();
        let (_, buyers, _, _) = snapshot(&s).await;
        let first = endpoints_of_a(&buyers);
        assert_ne!(first[0].1, first[1].1);

        // The same file again: the endpoints are the same ones, so nothing changes.
        let before = snapshot(&s).await;
        let again = s.store.import_plan(&Plan::parse(&plan).unwrap()).await.unwrap();
        assert!(!again.changed_anything(), "{again}");
        assert_eq!(snapshot(&s).await, before);

        // Reordered in the file: each endpoint keeps its id (matched by URL).
        let reordered = s.store.import_plan(&Plan::parse(&with_endpoints(&format!("{b}, {a}"))).unwrap()).await.unwrap();
        assert_eq!(reordered.buyers, tally(0, 1, 1));
        let (_, buyers, _, _) = snapshot(&s).await;
        assert_eq!(endpoints_of_a(&buyers), [first[1].clone(), first[0].clone()]);

        // A file may name an endpoint's id: then it stays that endpoint through a new URL.
        let moved = format!(r#"{{ id = "{}", url = "https://a2.example/hook", secret = "whsec_a_0123456789abcdef" }}"#, first[0].1);
        s.store.import_plan(&Plan::parse(&with_endpoints(&format!("{moved}, {b}"))).unwrap()).await.unwrap();
        let (_, buyers, _, _) = snapshot(&s).await;
        assert_eq!(endpoints_of_a(&buyers), [("https://a2.example/hook".to_owned(), first[0].1), first[1].clone()]);
    }
}
