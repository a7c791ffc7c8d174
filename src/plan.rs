//! Plan files: the whole routing plan in TOML, with entities referring to each other by name.
//!
//! A plan is checked completely before it touches the store (every reference must name an
//! entity of the same company in the same file), then applied in one transaction by
//! [`crate::store::Store::import_plan`], matching existing records by name, so importing the same
//! file twice changes nothing and an edited file updates records in place.

use std::{collections::HashSet, fmt};

use serde::{Deserialize, Serialize};

use crate::domain::{
    block::BlockedCaller,
    dialing::{RecordingMode, Whisper},
    payout::PublisherPayout,
    plan::{
        Buyer, BuyerId, Campaign, CampaignBuyer, CampaignId, Company, DuplicateHandling, Publisher,
        TrackingNumbers,
    },
    values::{Name, Priority, ReservationSeconds, RtbKey, Weight},
};

/// The demo plan, built in so `serve --demo` works from any directory.
pub const DEMO_PLAN: &str = include_str!("../examples/demo-plan.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub companies: Vec<PlanCompany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCompany {
    pub name: Name,
    #[serde(default)]
    pub duplicate_caller_handling: bool,
    #[serde(default)]
    pub publishers: Vec<Publisher>,
    #[serde(default)]
    pub buyers: Vec<Buyer>,
    #[serde(default)]
    pub campaigns: Vec<PlanCampaign>,
    /// Callers the company refuses (added by an import, never removed by one).
    #[serde(default)]
    pub blocked_callers: Vec<BlockedCaller>,
}

/// A campaign as a plan file writes it: buyers and campaigns named, not numbered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCampaign {
    pub name: Name,
    #[serde(default)]
    pub numbers: TrackingNumbers,
    #[serde(default)]
    pub duplicate_caller_handling: DuplicateHandling,
    #[serde(default)]
    pub buyers: Vec<PlanCampaignBuyer>,
    #[serde(default)]
    pub fallback_buyer: Option<Name>,
    #[serde(default)]
    pub redirect_campaign: Option<Name>,
    #[serde(default)]
    pub rtb_reservation_seconds: ReservationSeconds,
    #[serde(default)]
    pub rtb_caller_number_optional: bool,
    #[serde(default)]
    pub rtb_key: Option<RtbKey>,
    #[serde(default = "yes")]
    pub answer_on_bridge: bool,
    #[serde(default)]
    pub record: RecordingMode,
    #[serde(default)]
    pub whisper: Option<Whisper>,
    /// What publishers sending callers here earn, unless they have terms of their own.
    #[serde(default)]
    pub publisher_payout: Option<PublisherPayout>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCampaignBuyer {
    pub buyer: Name,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub weight: Weight,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Plan {
    /// Parses and checks a plan file.
    pub fn parse(text: &str) -> Result<Self, PlanError> {
        let plan: Plan = toml::from_str(text)?;
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> Result<(), PlanError> {
        let invalid = |path: String, message: String| Err(PlanError::Invalid { path, message });
        unique_names(self.companies.iter().map(|c| &c.name), "companies")?;
        for (c, company) in self.companies.iter().enumerate() {
            let at = format!("companies[{c}]");
            unique_names(
                company.publishers.iter().map(|p| &p.name),
                &format!("{at}.publishers"),
            )?;
            unique_names(company.buyers.iter().map(|b| &b.name), &format!("{at}.buyers"))?;
            unique_names(
                company.campaigns.iter().map(|c| &c.name),
                &format!("{at}.campaigns"),
            )?;
            let mut patterns = HashSet::new();
            for (i, blocked) in company.blocked_callers.iter().enumerate() {
                if !patterns.insert(&blocked.pattern) {
                    return invalid(
                        format!("{at}.blocked_callers[{i}].pattern"),
                        format!("{} is listed twice", blocked.pattern),
                    );
                }
            }
            let buyers: HashSet<&Name> = company.buyers.iter().map(|b| &b.name).collect();
            let campaigns: HashSet<&Name> = company.campaigns.iter().map(|c| &c.name).collect();
            let mut routed = HashSet::new();
            for (k, campaign) in company.campaigns.iter().enumerate() {
                let at = format!("{at}.campaigns[{k}]");
                routed.clear();
                for (b, entry) in campaign.buyers.iter().enumerate() {
                    let path = format!("{at}.buyers[{b}].buyer");
                    if !buyers.contains(&entry.buyer) {
                        return invalid(path, no_such("buyer", &entry.buyer, &company.name));
                    }
                    if !routed.insert(&entry.buyer) {
                        return invalid(path, format!("buyer {:?} is listed twice", entry.buyer.as_str()));
                    }
                }
                if let Some(fallback) = &campaign.fallback_buyer
                    && !buyers.contains(fallback)
                {
                    return invalid(
                        format!("{at}.fallback_buyer"),
                        no_such("buyer", fallback, &company.name),
                    );
                }
                if let Some(redirect) = &campaign.redirect_campaign {
                    if !campaigns.contains(redirect) {
                        return invalid(
                            format!("{at}.redirect_campaign"),
                            no_such("campaign", redirect, &company.name),
                        );
                    }
                    if redirect == &campaign.name {
                        return invalid(
                            format!("{at}.redirect_campaign"),
                            "a campaign cannot redirect to itself".into(),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn no_such(kind: &str, name: &Name, company: &Name) -> String {
    format!(
        "no {kind} named {:?} in company {:?} of this plan",
        name.as_str(),
        company.as_str()
    )
}

fn unique_names<'a>(names: impl Iterator<Item = &'a Name>, path: &str) -> Result<(), PlanError> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(PlanError::Invalid {
                path: format!("{path}[{i}].name"),
                message: format!("{:?} is defined twice", name.as_str()),
            });
        }
    }
    Ok(())
}

impl PlanCompany {
    pub fn company(&self) -> Company {
        Company {
            name: self.name.clone(),
            duplicate_caller_handling: self.duplicate_caller_handling,
        }
    }
}

impl PlanCampaign {
    /// The campaign with names resolved. `buyer_id` must know every buyer the plan names (a
    /// checked plan only names its own); `campaign_id` answers `None` for a campaign not stored
    /// yet, which leaves the redirect to be set once it is.
    pub fn to_campaign(
        &self,
        buyer_id: impl Fn(&Name) -> Option<BuyerId>,
        campaign_id: impl Fn(&Name) -> Option<CampaignId>,
    ) -> Result<Campaign, String> {
        let resolve =
            |name: &Name| buyer_id(name).ok_or_else(|| format!("no buyer named {:?}", name.as_str()));
        let buyers = self
            .buyers
            .iter()
            .map(|entry| {
                Ok(CampaignBuyer {
                    buyer_id: resolve(&entry.buyer)?,
                    priority: entry.priority,
                    weight: entry.weight,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Campaign {
            name: self.name.clone(),
            numbers: self.numbers.clone(),
            duplicate_caller_handling: self.duplicate_caller_handling,
            buyers: buyers.try_into()?,
            fallback_buyer_id: self.fallback_buyer.as_ref().map(resolve).transpose()?,
            redirect_campaign_id: self.redirect_campaign.as_ref().and_then(campaign_id),
            rtb_reservation_seconds: self.rtb_reservation_seconds,
            rtb_caller_number_optional: self.rtb_caller_number_optional,
            answer_on_bridge: self.answer_on_bridge,
            record: self.record,
            whisper: self.whisper.clone(),
            publisher_payout: self.publisher_payout,
        })
    }
}

/// What an import did, per kind of entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub companies: Tally,
    pub publishers: Tally,
    pub buyers: Tally,
    pub campaigns: Tally,
    pub blocked_callers: Tally,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
}

impl ImportReport {
    pub fn changed_anything(&self) -> bool {
        [
            self.companies,
            self.publishers,
            self.buyers,
            self.campaigns,
            self.blocked_callers,
        ]
        .iter()
        .any(|t| t.created + t.updated > 0)
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("companies", self.companies),
            ("publishers", self.publishers),
            ("buyers", self.buyers),
            ("campaigns", self.campaigns),
            ("blocked callers", self.blocked_callers),
        ];
        for (i, (kind, t)) in rows.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(
                f,
                "{sep}{kind}: {} created, {} updated, {} unchanged",
                t.created, t.updated, t.unchanged
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Plan::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_demo_plan_is_valid_and_has_what_the_readme_promises() {
        let plan = Plan::parse(DEMO_PLAN).unwrap();
        let company = &plan.companies[0];
        assert!(company.duplicate_caller_handling);
        let main = &company.campaigns[0];
        assert_eq!(
            main.duplicate_caller_handling,
            DuplicateHandling::NewConvertibleBuyer
        );
        assert_eq!(main.buyers.len(), 3);
        assert!(main.fallback_buyer.is_some() && main.redirect_campaign.is_some());
        let thirty_days = 30 * 24 * 3600;
        assert!(
            company
                .buyers
                .iter()
                .any(|b| b.dedupe_seconds.get() == thirty_days)
        );
    }

    #[test]
    fn references_must_name_something_in_the_same_company() {
        let base = r#"
            [[companies]]
            name = "Acme"
            [[companies.buyers]]
            name = "A"
            destination = "+14155550101"
            [[companies.campaigns]]
            name = "Main"
        "#;
        let err = error(&format!("{base}\nbuyers = [{{ buyer = \"B\" }}]"));
        assert!(
            err.starts_with("companies[0].campaigns[0].buyers[0].buyer: no buyer named \"B\""),
            "{err}"
        );
        let err = error(&format!("{base}\nfallback_buyer = \"Z\""));
        assert!(
            err.starts_with("companies[0].campaigns[0].fallback_buyer"),
            "{err}"
        );
        let err = error(&format!("{base}\nredirect_campaign = \"Main\""));
        assert!(err.contains("cannot redirect to itself"), "{err}");
        let err = error(&format!(
            "{base}\nbuyers = [{{ buyer = \"A\" }}, {{ buyer = \"A\" }}]"
        ));
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn names_are_unique_per_kind_and_company() {
        let err = error(
            r#"
            [[companies]]
            name = "Acme"
            [[companies.publishers]]
            name = "P"
            [[companies.publishers]]
            name = "P"
        "#,
        );
        assert!(err.starts_with("companies[0].publishers[1].name"), "{err}");
    }

    #[test]
    fn a_block_list_names_each_caller_once_and_says_which_entry_is_wrong() {
        let company = "[[companies]]\nname = \"Acme\"\n";
        let err = error(&format!(
            "{company}blocked_callers = [{{ pattern = \"+1900*\" }}, {{ pattern = \"+1 900 *\" }}]\n"
        ));
        assert!(
            err.starts_with("companies[0].blocked_callers[1].pattern: +1900* is listed twice"),
            "{err}"
        );
        let err = error(&format!(
            "{company}blocked_callers = [{{ pattern = \"900*\" }}]\n"
        ));
        assert!(err.contains("not a number prefix"), "{err}");
        let plan = Plan::parse(DEMO_PLAN).unwrap();
        assert_eq!(plan.companies[0].blocked_callers.len(), 2);
    }

    #[test]
    fn typos_and_bad_values_point_at_their_line() {
        let err = error("[[companies]]\nname = \"Acme\"\nduplicate_caller_handlin = true\n");
        assert!(err.contains("line 3") && err.contains("unknown field"), "{err}");
        let err = error(
            "[[companies]]\nname = \"Acme\"\n[[companies.buyers]]\nname = \"A\"\ndestination = \"4155550101\"\n",
        );
        assert!(err.contains("line 5") && err.contains("country code"), "{err}");
    }
}
