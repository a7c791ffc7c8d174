//! Applying a plan file: records are matched by name, created when missing, updated when
//! different, and left alone (timestamps included) when equal.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::{SqlEntity, campaigns, find_by_name, insert_in, update_in};
use crate::{
    domain::{
        ids::Id,
        plan::{BuyerId, Campaign, CampaignId, CompanyId},
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
    company: Option<CompanyId>,
    spec: &T,
) -> Result<(Id<T>, Outcome), StoreError> {
    match find_by_name::<T>(conn, company, spec.name()).await? {
        None => Ok((insert_in(conn, company, spec).await?.id, Outcome::Created)),
        Some(existing) => {
            let (record, changed) = update_in(conn, existing.id, spec).await?;
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

pub(super) async fn apply(conn: &mut AnyConnection, plan: &Plan) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport::default();
    for (c, entry) in plan.companies.iter().enumerate() {
        let path = format!("companies[{c}]");
        let (company_id, outcome) = upsert(conn, None, &entry.company())
            .await
            .map_err(at(path.clone()))?;
        report.companies.add(outcome);
        let company = Some(company_id);

        for (i, publisher) in entry.publishers.iter().enumerate() {
            let (_, outcome) = upsert(conn, company, publisher)
                .await
                .map_err(at(format!("{path}.publishers[{i}]")))?;
            report.publishers.add(outcome);
        }
        let mut buyer_ids = HashMap::new();
        for (i, buyer) in entry.buyers.iter().enumerate() {
            let (id, outcome) = upsert(conn, company, buyer)
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
        apply_campaigns(
            conn,
            company_id,
            campaigns.collect(),
            &buyer_ids,
            &mut report.campaigns,
        )
        .await?;
    }
    Ok(report)
}

/// Campaigns can redirect to each other in a cycle and can trade tracking numbers, so they are
/// applied in three passes: release numbers the plan moves away, create the missing campaigns,
/// then bring every campaign to the plan with all references resolvable.
async fn apply_campaigns(
    conn: &mut AnyConnection,
    company_id: CompanyId,
    entries: Vec<(String, &PlanCampaign)>,
    buyer_ids: &HashMap<&Name, BuyerId>,
    tally: &mut Tally,
) -> Result<(), StoreError> {
    let company = Some(company_id);
    let buyer_id = |name: &Name| buyer_ids[name];
    let mut ids: HashMap<&Name, CampaignId> = HashMap::new();
    let mut outcomes: HashMap<CampaignId, Outcome> = HashMap::new();

    for (_, entry) in &entries {
        if let Some(existing) = find_by_name::<Campaign>(conn, company, &entry.name).await? {
            ids.insert(&entry.name, existing.id);
            let mut released = existing.spec.clone();
            released.numbers = existing
                .spec
                .numbers
                .as_slice()
                .iter()
                .filter(|number| entry.numbers.as_slice().contains(number))
                .cloned()
                .collect::<Vec<_>>()
                .try_into()
                .map_err(StoreError::Corrupt)?;
            let (_, changed) = update_in(conn, existing.id, &released).await?;
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
    for (path, entry) in &entries {
        if !ids.contains_key(&entry.name) {
            let spec = entry.to_campaign(buyer_id, |name| ids.get(name).copied());
            let record = insert_in(conn, company, &spec).await.map_err(at(path.clone()))?;
            ids.insert(&entry.name, record.id);
            outcomes.insert(record.id, Outcome::Created);
        }
    }
    for (path, entry) in &entries {
        let id = ids[&entry.name];
        let spec = entry.to_campaign(buyer_id, |name| ids.get(name).copied());
        let (_, mut changed) = update_in(conn, id, &spec).await.map_err(at(path.clone()))?;
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
