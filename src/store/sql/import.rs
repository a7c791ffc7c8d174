//! Applying a plan file: records are matched by name, created when missing, updated when
//! different, and left alone (timestamps included) when equal.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::{
    SqlEntity,
    blocked::{self, Upserted},
    campaigns, find_by_name, insert_in,
    sealing::Sealer,
    update_in,
};
use crate::{
    domain::{
        ids::Id,
        plan::{BuyerId, Campaign, CampaignId, Company, CompanyId},
        values::Name,
    },
    plan::{ImportReport, Plan, PlanCampaign, Tally},
    store::StoreError,
};

/// Where in the plan an error arose, so the operator can find the entry.
fn at(path: String) -> impl FnOnce(StoreError) -> StoreError {
    move |error| match error {
        StoreError::Conflict { field, message } => StoreError::Conflict {
            field: Some(join(&path, field)),
            message,
        },
        StoreError::InvalidReference { field, message } => StoreError::InvalidReference {
            field: join(&path, Some(field)),
            message,
        },
        StoreError::Invalid { field, message } => StoreError::Invalid {
            field: join(&path, Some(field)),
            message,
        },
        other => other,
    }
}

fn join(path: &str, field: Option<String>) -> String {
    match field {
        Some(field) => format!("{path}.{field}"),
        None => path.to_owned(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
        }
    }
}

async fn upsert<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    company: Option<CompanyId>,
    spec: &T,
) -> Result<(Id<T>, Outcome), StoreError> {
    match find_by_name::<T>(conn, seal, company, spec.name()).await? {
        None => Ok((insert_in(conn, seal, company, spec).await?.id, Outcome::Created)),
        Some(existing) => {
            let (record, changed) = update_in(conn, seal, existing.id, spec, None).await?;
            Ok((
                record.id,
                if changed {
                    Outcome::Updated
                } else {
                    Outcome::Unchanged
                },
            ))
        }
    }
}

pub(super) async fn apply(
    conn: &mut AnyConnection,
    seal: &Sealer,
    plan: &Plan,
) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport::default();
    let mut campaign_outcomes = release_numbers(conn, seal, plan).await?;
    for (c, entry) in plan.companies.iter().enumerate() {
        let path = format!("companies[{c}]");
        let (company_id, outcome) = upsert(conn, seal, None, &entry.company())
            .await
            .map_err(at(path.clone()))?;
        report.companies.add(outcome);
        let company = Some(company_id);

        for (i, publisher) in entry.publishers.iter().enumerate() {
            let (_, outcome) = upsert(conn, seal, company, publisher)
                .await
                .map_err(at(format!("{path}.publishers[{i}]")))?;
            report.publishers.add(outcome);
        }
        for (i, blocked) in entry.blocked_callers.iter().enumerate() {
            let upserted = blocked::upsert_in(conn, company_id, blocked)
                .await
                .map_err(at(format!("{path}.blocked_callers[{i}]")))?;
            report.blocked_callers.add(match upserted {
                Upserted::Created => Outcome::Created,
                Upserted::Updated => Outcome::Updated,
                Upserted::Unchanged => Outcome::Unchanged,
            });
        }
        let mut buyer_ids = HashMap::new();
        for (i, buyer) in entry.buyers.iter().enumerate() {
            let (id, outcome) = upsert(conn, seal, company, buyer)
                .await
                .map_err(at(format!("{path}.buyers[{i}]")))?;
            buyer_ids.insert(&buyer.name, id);
            report.buyers.add(outcome);
        }
        let campaigns = entry
            .campaigns
            .iter()
            .enumerate()
            .map(|(i, campaign)| (format!("{path}.campaigns[{i}]"), campaign));
        let context = CampaignContext {
            company_id,
            buyer_ids: &buyer_ids,
        };
        apply_campaigns(
            conn,
            seal,
            &context,
            campaigns.collect(),
            &mut campaign_outcomes,
            &mut report.campaigns,
        )
        .await?;
    }
    Ok(report)
}

/// Tracking numbers may move between campaigns, even between companies: every number the plan
/// takes away from a stored campaign is freed before any campaign claims one.
async fn release_numbers(
    conn: &mut AnyConnection,
    seal: &Sealer,
    plan: &Plan,
) -> Result<HashMap<CampaignId, Outcome>, StoreError> {
    let mut outcomes = HashMap::new();
    for entry in &plan.companies {
        let Some(company) = find_by_name::<Company>(conn, seal, None, &entry.name).await? else {
            continue;
        };
        for campaign in &entry.campaigns {
            let Some(existing) =
                find_by_name::<Campaign>(conn, seal, Some(company.id), &campaign.name).await?
            else {
                continue;
            };
            let mut released = existing.spec.clone();
            released.numbers = existing
                .spec
                .numbers
                .as_slice()
                .iter()
                .filter(|number| campaign.numbers.as_slice().contains(number))
                .cloned()
                .collect::<Vec<_>>()
                .try_into()
                .map_err(StoreError::Corrupt)?;
            let (_, changed) = update_in(conn, seal, existing.id, &released, None).await?;
            outcomes.insert(
                existing.id,
                if changed {
                    Outcome::Updated
                } else {
                    Outcome::Unchanged
                },
            );
        }
    }
    Ok(outcomes)
}

struct CampaignContext<'a> {
    company_id: CompanyId,
    buyer_ids: &'a HashMap<&'a Name, BuyerId>,
}

/// Campaigns can redirect to each other in a cycle, so the missing ones are created first and
/// every campaign is then brought to the plan with all references resolvable.
async fn apply_campaigns(
    conn: &mut AnyConnection,
    seal: &Sealer,
    context: &CampaignContext<'_>,
    entries: Vec<(String, &PlanCampaign)>,
    outcomes: &mut HashMap<CampaignId, Outcome>,
    tally: &mut Tally,
) -> Result<(), StoreError> {
    let company = Some(context.company_id);
    let buyer_id = |name: &Name| context.buyer_ids.get(name).copied();
    let mut ids: HashMap<&Name, CampaignId> = HashMap::new();
    for (_, entry) in &entries {
        if let Some(existing) = find_by_name::<Campaign>(conn, seal, company, &entry.name).await? {
            ids.insert(&entry.name, existing.id);
        }
    }
    for (path, entry) in &entries {
        if !ids.contains_key(&entry.name) {
            let spec = entry
                .to_campaign(buyer_id, |name| ids.get(name).copied())
                .map_err(StoreError::Corrupt)?;
            let record = insert_in(conn, seal, company, &spec)
                .await
                .map_err(at(path.clone()))?;
            ids.insert(&entry.name, record.id);
            outcomes.insert(record.id, Outcome::Created);
        }
    }
    for (path, entry) in &entries {
        let id = ids[&entry.name];
        let spec = entry
            .to_campaign(buyer_id, |name| ids.get(name).copied())
            .map_err(StoreError::Corrupt)?;
        let (_, mut changed) = update_in(conn, seal, id, &spec, None)
            .await
            .map_err(at(path.clone()))?;
        if let Some(key) = &entry.rtb_key {
            let digest = key.sha256_hex();
            if campaigns::rtb_key_sha256(conn, id).await?.as_deref() != Some(digest.as_str()) {
                campaigns::set_rtb_key(conn, id, Some(&digest))
                    .await
                    .map_err(at(path.clone()))?;
                changed = true;
            }
        }
        let outcome = outcomes.entry(id).or_insert(Outcome::Unchanged);
        if changed && *outcome == Outcome::Unchanged {
            *outcome = Outcome::Updated;
        }
        tally.add(*outcome);
    }
    Ok(())
}
