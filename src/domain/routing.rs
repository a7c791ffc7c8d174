//! Routing: where a call goes next, and why every other buyer did not get it.
//!
//! The never-drop chain: the campaign's buyers by priority, skipping those already tried on this
//! call, paused ones, and (when duplicate caller handling is on) those for whom the call would
//! be a duplicate; then the fallback buyer, who takes duplicates; then a redirect to another
//! campaign; and only then an explicit end, with the reason that kept the most buyers out.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    call::{AttemptKind, DropReason},
    phone::E164,
    plan::{Buyer, BuyerId, Campaign, CampaignId, Company, CompanyId, DuplicateHandling, Record},
};

/// How many campaigns one call may pass through: its own and this many redirects.
pub const MAX_REDIRECTS: usize = 5;

/// The routing plan as routing reads it: everything by id, campaigns by tracking number.
#[derive(Debug, Default)]
pub struct RoutingPlan {
    companies: HashMap<CompanyId, Record<Company>>,
    buyers: HashMap<BuyerId, Record<Buyer>>,
    campaigns: HashMap<CampaignId, Record<Campaign>>,
    numbers: HashMap<E164, CampaignId>,
}

impl RoutingPlan {
    pub fn new(
        companies: Vec<Record<Company>>,
        buyers: Vec<Record<Buyer>>,
        campaigns: Vec<Record<Campaign>>,
    ) -> Self {
        let numbers = campaigns
            .iter()
            .flat_map(|c| c.spec.numbers.as_slice().iter().map(move |n| (n.clone(), c.id)))
            .collect();
        Self {
            companies: companies.into_iter().map(|c| (c.id, c)).collect(),
            buyers: buyers.into_iter().map(|b| (b.id, b)).collect(),
            campaigns: campaigns.into_iter().map(|c| (c.id, c)).collect(),
            numbers,
        }
    }

    pub fn campaign_for_number(&self, number: &E164) -> Option<&Record<Campaign>> {
        self.campaigns.get(self.numbers.get(number)?)
    }

    pub fn campaign(&self, id: CampaignId) -> Option<&Record<Campaign>> {
        self.campaigns.get(&id)
    }

    pub fn buyer(&self, id: BuyerId) -> Option<&Record<Buyer>> {
        self.buyers.get(&id)
    }

    pub fn company(&self, id: CompanyId) -> Option<&Record<Company>> {
        self.companies.get(&id)
    }

    /// Whether routing in this campaign skips duplicates: the company must have the feature on
    /// and the campaign must ask for it.
    pub fn skips_duplicates(&self, campaign: &Record<Campaign>) -> bool {
        let company_on = campaign
            .company_id
            .and_then(|id| self.company(id))
            .is_some_and(|c| c.spec.duplicate_caller_handling);
        company_on && campaign.spec.duplicate_caller_handling == DuplicateHandling::NewConvertibleBuyer
    }

    /// Every buyer a call in this campaign might be offered to: its list and its fallback.
    pub fn candidates<'a>(
        &'a self,
        campaign: &'a Record<Campaign>,
    ) -> impl Iterator<Item = &'a Record<Buyer>> + 'a {
        campaign
            .spec
            .buyers
            .as_slice()
            .iter()
            .map(|link| link.buyer_id)
            .chain(campaign.spec.fallback_buyer_id)
            .filter_map(|id| self.buyer(id))
    }

    /// Decides where a call goes next in `campaign`.
    pub fn decide(&self, campaign: &Record<Campaign>, call: &CallSituation<'_>) -> Decision {
        let skip_duplicates = self.skips_duplicates(campaign);
        let mut considered = Vec::new();
        let mut chosen = None;

        let mut list: Vec<_> = campaign.spec.buyers.as_slice().iter().enumerate().collect();
        list.sort_by_key(|(position, link)| (link.priority.get(), *position));
        for (_, link) in list {
            let Some(buyer) = self.buyer(link.buyer_id) else {
                continue;
            };
            let verdict = if call.tried.contains(&buyer.id) {
                Verdict::AlreadyTried
            } else if buyer.spec.paused {
                Verdict::Paused
            } else if skip_duplicates && call.duplicates.contains(&buyer.id) {
                Verdict::Duplicate
            } else if chosen.is_none() {
                chosen = Some((buyer.id, AttemptKind::Buyer));
                Verdict::Chosen
            } else {
                Verdict::Eligible
            };
            considered.push(Considered::new(buyer, Some(link.priority.get()), false, verdict));
        }

        if chosen.is_none()
            && let Some(fallback) = campaign.spec.fallback_buyer_id.and_then(|id| self.buyer(id))
        {
            // The fallback buyer takes duplicates: that is what it is for.
            let verdict = if call.tried.contains(&fallback.id) {
                Verdict::AlreadyTried
            } else if fallback.spec.paused {
                Verdict::Paused
            } else {
                chosen = Some((fallback.id, AttemptKind::Fallback));
                Verdict::Chosen
            };
            considered.push(Considered::new(fallback, None, true, verdict));
        }

        let action = match chosen {
            Some((buyer, kind)) => Action::Dial { buyer, kind },
            None => match self.redirect_target(campaign, call.visited) {
                Some(target) => Action::Redirect { campaign: target },
                None => Action::End {
                    reason: dominant_reason(&considered),
                },
            },
        };
        Decision {
            campaign_id: campaign.id,
            skip_duplicates,
            considered,
            action,
        }
    }

    fn redirect_target(&self, campaign: &Record<Campaign>, visited: &[CampaignId]) -> Option<CampaignId> {
        let target = self.campaign(campaign.spec.redirect_campaign_id?)?;
        let hops_left = visited.len() <= MAX_REDIRECTS;
        (hops_left && !visited.contains(&target.id)).then_some(target.id)
    }
}

/// What routing needs to know about the call so far.
#[derive(Debug)]
pub struct CallSituation<'a> {
    /// Buyers for whom the call would be a duplicate (empty when the caller is unknown).
    pub duplicates: &'a HashSet<BuyerId>,
    /// Buyers already dialed on this call.
    pub tried: &'a HashSet<BuyerId>,
    /// Campaigns the call has been routed in, the current one included.
    pub visited: &'a [CampaignId],
}

/// The reason that kept the most buyers out; with no buyer at all, `NoBuyer`.
fn dominant_reason(considered: &[Considered]) -> DropReason {
    let count = |reason| {
        considered
            .iter()
            .filter(|c| c.verdict.drop_reason() == Some(reason))
            .count()
    };
    // On a tie the earlier wins: the reason an operator can act on first.
    let mut dominant = (DropReason::NoBuyer, 0);
    for reason in [DropReason::Duplicate, DropReason::Unanswered, DropReason::NoBuyer] {
        let n = count(reason);
        if n > dominant.1 {
            dominant = (reason, n);
        }
    }
    dominant.0
}

/// Where a call goes next, and the verdict on every buyer considered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub campaign_id: CampaignId,
    /// Whether duplicate caller handling was in force.
    pub skip_duplicates: bool,
    pub considered: Vec<Considered>,
    pub action: Action,
}

impl Decision {
    /// The buyers this decision skipped because the call would be a duplicate for them.
    pub fn skipped_as_duplicates(&self) -> impl Iterator<Item = BuyerId> + '_ {
        self.considered
            .iter()
            .filter(|c| c.verdict == Verdict::Duplicate)
            .map(|c| c.buyer_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Dial { buyer: BuyerId, kind: AttemptKind },
    Redirect { campaign: CampaignId },
    End { reason: DropReason },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Considered {
    pub buyer_id: BuyerId,
    pub name: String,
    /// Its priority in the campaign's list; none for the fallback buyer.
    pub priority: Option<u32>,
    pub fallback: bool,
    pub verdict: Verdict,
}

impl Considered {
    fn new(buyer: &Record<Buyer>, priority: Option<u32>, fallback: bool, verdict: Verdict) -> Self {
        Self {
            buyer_id: buyer.id,
            name: buyer.spec.name.as_str().to_owned(),
            priority,
            fallback,
            verdict,
        }
    }
}

/// What routing made of one buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Dialed now.
    Chosen,
    /// Could take the call, but a buyer ahead of it got it.
    Eligible,
    /// Skipped: already dialed on this call.
    AlreadyTried,
    /// Skipped: paused by the operator.
    Paused,
    /// Skipped: the call would be a duplicate for this buyer.
    Duplicate,
}

impl Verdict {
    fn drop_reason(self) -> Option<DropReason> {
        match self {
            Self::Chosen | Self::Eligible => None,
            Self::AlreadyTried => Some(DropReason::Unanswered),
            Self::Paused => Some(DropReason::NoBuyer),
            Self::Duplicate => Some(DropReason::Duplicate),
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::domain::ids::Id;

    /// A company with the feature on, a campaign with buyers A (priority 1), B (priority 2) and
    /// C (priority 1, listed last), fallback F, redirect to Overflow (buyer O).
    struct Fixture {
        plan: RoutingPlan,
        main: CampaignId,
        overflow: CampaignId,
        a: BuyerId,
        b: BuyerId,
        c: BuyerId,
        f: BuyerId,
        o: BuyerId,
    }

    fn record<T: crate::domain::plan::PlanEntity>(
        company: Option<CompanyId>,
        spec: serde_json::Value,
    ) -> Record<T> {
        Record {
            id: Id::generate(),
            company_id: company,
            spec: serde_json::from_value(spec).unwrap(),
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn fixture(company_on: bool, mode: &str, fallback: bool, redirect: bool) -> Fixture {
        let company: Record<Company> = record(
            None,
            json!({"name": "Acme", "duplicate_caller_handling": company_on}),
        );
        let owner = Some(company.id);
        let buyer = |name: &str| -> Record<Buyer> {
            record(owner, json!({"name": name, "destination": "+14155550101"}))
        };
        let (a, b, c, f, o) = (buyer("A"), buyer("B"), buyer("C"), buyer("F"), buyer("O"));
        let overflow: Record<Campaign> =
            record(owner, json!({"name": "Overflow", "buyers": [{"buyer_id": o.id}]}));
        let main: Record<Campaign> = record(
            owner,
            json!({
                "name": "Main",
                "duplicate_caller_handling": mode,
                "buyers": [{"buyer_id": a.id, "priority": 1}, {"buyer_id": b.id, "priority": 2}, {"buyer_id": c.id, "priority": 1}],
                "fallback_buyer_id": if fallback { Some(f.id) } else { None },
                "redirect_campaign_id": if redirect { Some(overflow.id) } else { None },
            }),
        );
        Fixture {
            main: main.id,
            overflow: overflow.id,
            a: a.id,
            b: b.id,
            c: c.id,
            f: f.id,
            o: o.id,
            plan: RoutingPlan::new(vec![company], vec![a, b, c, f, o], vec![main, overflow]),
        }
    }

    fn decide(
        fx: &Fixture,
        campaign: CampaignId,
        duplicates: &[BuyerId],
        tried: &[BuyerId],
        visited: &[CampaignId],
    ) -> Decision {
        let duplicates = duplicates.iter().copied().collect();
        let tried = tried.iter().copied().collect();
        let situation = CallSituation {
            duplicates: &duplicates,
            tried: &tried,
            visited,
        };
        fx.plan.decide(fx.plan.campaign(campaign).unwrap(), &situation)
    }

    fn verdicts(decision: &Decision) -> Vec<(&str, Verdict)> {
        decision
            .considered
            .iter()
            .map(|c| (c.name.as_str(), c.verdict))
            .collect()
    }

    #[test]
    fn buyers_go_by_priority_then_list_order() {
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let decision = decide(&fx, fx.main, &[], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.a,
                kind: AttemptKind::Buyer
            }
        );
        assert_eq!(
            verdicts(&decision),
            [
                ("A", Verdict::Chosen),
                ("C", Verdict::Eligible),
                ("B", Verdict::Eligible)
            ]
        );
        let decision = decide(&fx, fx.main, &[], &[fx.a, fx.c], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.b,
                kind: AttemptKind::Buyer
            }
        );
    }

    #[test]
    fn duplicates_are_skipped_only_when_company_and_campaign_both_say_so() {
        for (company_on, mode, skips) in [
            (true, "new_convertible_buyer", true),
            (false, "new_convertible_buyer", false),
            (true, "off", false),
        ] {
            let fx = fixture(company_on, mode, true, true);
            let decision = decide(&fx, fx.main, &[fx.a], &[], &[fx.main]);
            let expected = if skips { fx.c } else { fx.a };
            assert_eq!(
                decision.action,
                Action::Dial {
                    buyer: expected,
                    kind: AttemptKind::Buyer
                },
                "{company_on} {mode}"
            );
            assert_eq!(decision.skip_duplicates, skips);
            assert_eq!(decision.skipped_as_duplicates().count(), usize::from(skips));
        }
    }

    #[test]
    fn when_every_buyer_is_a_duplicate_the_fallback_takes_the_call() {
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c, fx.f], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.f,
                kind: AttemptKind::Fallback
            }
        );
        assert_eq!(decision.considered.last().unwrap().verdict, Verdict::Chosen);
        assert!(decision.considered.last().unwrap().fallback);
    }

    #[test]
    fn then_the_redirect_campaign_then_an_explicit_end() {
        let fx = fixture(true, "new_convertible_buyer", false, true);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Redirect {
                campaign: fx.overflow
            }
        );

        let in_overflow = decide(&fx, fx.overflow, &[fx.o], &[], &[fx.main, fx.overflow]);
        assert_eq!(
            in_overflow.action,
            Action::Dial {
                buyer: fx.o,
                kind: AttemptKind::Buyer
            },
            "feature off in Overflow"
        );

        let fx = fixture(true, "new_convertible_buyer", false, false);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
    }

    #[test]
    fn a_redirect_never_revisits_a_campaign() {
        let fx = fixture(true, "new_convertible_buyer", false, true);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c], &[], &[fx.overflow, fx.main]);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
    }

    #[test]
    fn the_drop_reason_is_what_kept_most_buyers_out() {
        let fx = fixture(true, "new_convertible_buyer", false, false);
        let unanswered = decide(&fx, fx.main, &[fx.a], &[fx.b, fx.c], &[fx.main]);
        assert_eq!(
            unanswered.action,
            Action::End {
                reason: DropReason::Unanswered
            }
        );
        let mostly_duplicates = decide(&fx, fx.main, &[fx.a, fx.c], &[fx.b], &[fx.main]);
        assert_eq!(
            mostly_duplicates.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
        assert_eq!(dominant_reason(&[]), DropReason::NoBuyer);
    }

    #[test]
    fn paused_buyers_and_the_already_tried_fallback_are_skipped() {
        let mut fx = fixture(true, "new_convertible_buyer", true, false);
        for id in [fx.a, fx.b, fx.c] {
            let buyer = fx.plan.buyers.get_mut(&id).unwrap();
            buyer.spec.paused = true;
        }
        let decision = decide(&fx, fx.main, &[], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.f,
                kind: AttemptKind::Fallback
            }
        );
        let decision = decide(&fx, fx.main, &[], &[fx.f], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::NoBuyer
            }
        );
    }
}
