//! Who may use the API: roles, the digests secrets are kept as, and the tokens issued through
//! the API (whose secret is shown once, when issued, and never stored).

use std::{collections::BTreeSet, fmt};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

use super::plan::{BuyerId, CompanyId, PublisherId};

/// What a token may do; where, its [`Scope`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in its scope: the plan, tokens, block lists, caps, money. Install-wide, it is
    /// the install's administrator (`ADMIN_TOKEN`), the only one who may create companies.
    Admin,
    /// Reads everything in its scope, money included, exports, and the audit log; changes nothing.
    Analyst,
    /// Watches calls: the status API, live events, the dashboard, statistics, exports; changes
    /// nothing, and does not read the audit log.
    Supervisor,
    /// A publisher's portal: its own calls, its payout, whether they were duplicates and how long
    /// they lasted; never revenue, nor which buyer took a call.
    Publisher,
    /// A buyer's portal: the calls it took, what it pays, its recordings and the caller; never the
    /// publisher, its payout or the tracking number. It reports conversions and returns.
    Buyer,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::Analyst,
        Self::Supervisor,
        Self::Publisher,
        Self::Buyer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Analyst => "analyst",
            Self::Supervisor => "supervisor",
            Self::Publisher => "publisher",
            Self::Buyer => "buyer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// The network's own people, as opposed to its partners.
    pub fn is_staff(self) -> bool {
        matches!(self, Self::Admin | Self::Analyst | Self::Supervisor)
    }
}

/// Whose data a token reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every company of the install.
    Install,
    /// These companies and everything they own.
    Companies(BTreeSet<CompanyId>),
    /// The calls these publishers sent.
    Publishers(BTreeSet<PublisherId>),
    /// The calls these buyers took.
    Buyers(BTreeSet<BuyerId>),
}

/// What a call, an RTB ping, a postback or a plan entity belongs to: what a scope is checked
/// against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub company: Option<CompanyId>,
    pub publisher: Option<PublisherId>,
    pub buyer: Option<BuyerId>,
}

impl Owner {
    pub fn company(company: Option<CompanyId>) -> Self {
        Self {
            company,
            ..Self::default()
        }
    }
}

/// Something a token may be allowed to do (each on data its scope reaches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Calls, their stories and live events, statistics (partners: their own, through a lens).
    WatchCalls,
    /// The plan, block lists, caps and load, the RTB log, the postback outbox.
    ReadOperations,
    /// Revenue and payouts, and the CSV exports.
    ReadMoney,
    ReadAudit,
    /// The plan, block lists, caps, RTB keys, postback retries, tokens.
    Change,
    /// A buyer's conversions and returns.
    ReportConversions,
    /// Numbers about the whole install (`/metrics`): install-wide staff only.
    ReadInstall,
}

/// A token's role and scope, checked to fit each other: staff roles reach the install or
/// companies, a publisher its publishers, a buyer its buyers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    role: Role,
    scope: Scope,
}

/// Why a role and a scope do not make a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("a {0} token is scoped to companies (`companies`), or to the whole install (no scope)")]
    StaffScope(&'static str),
    #[error("a publisher token needs `publishers`: the ids of the publishers it speaks for")]
    PublisherScope,
    #[error("a buyer token needs `buyers`: the ids of the buyers it speaks for")]
    BuyerScope,
    #[error("a scope names at least one id")]
    EmptyScope,
    #[error("a token has a `role`: admin, analyst, supervisor, publisher or buyer")]
    NoRole,
    #[error("a token reaches companies, publishers or buyers: name one of them, not several")]
    TwoScopes,
}

impl Grant {
    pub fn new(role: Role, scope: Scope) -> Result<Self, GrantError> {
        let empty = match &scope {
            Scope::Install => false,
            Scope::Companies(ids) => ids.is_empty(),
            Scope::Publishers(ids) => ids.is_empty(),
            Scope::Buyers(ids) => ids.is_empty(),
        };
        if empty {
            return Err(GrantError::EmptyScope);
        }
        match (role, &scope) {
            (Role::Admin | Role::Analyst | Role::Supervisor, Scope::Install | Scope::Companies(_))
            | (Role::Publisher, Scope::Publishers(_))
            | (Role::Buyer, Scope::Buyers(_)) => Ok(Self { role, scope }),
            (Role::Publisher, _) => Err(GrantError::PublisherScope),
            (Role::Buyer, _) => Err(GrantError::BuyerScope),
            (staff, _) => Err(GrantError::StaffScope(staff.as_str())),
        }
    }

    /// The install's administrator (`ADMIN_TOKEN`).
    pub fn install_admin() -> Self {
        Self {
            role: Role::Admin,
            scope: Scope::Install,
        }
    }

    /// An install-wide supervisor (`SUPERVISOR_TOKENS`).
    pub fn install_supervisor() -> Self {
        Self {
            role: Role::Supervisor,
            scope: Scope::Install,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn is_install_admin(&self) -> bool {
        self.role == Role::Admin && self.scope == Scope::Install
    }

    /// Whether the role allows the action at all (the scope then says on what).
    pub fn may(&self, action: Action) -> bool {
        use Action::*;
        match self.role {
            Role::Admin => action != ReadInstall || self.scope == Scope::Install,
            Role::Analyst => match action {
                WatchCalls | ReadOperations | ReadMoney | ReadAudit => true,
                ReadInstall => self.scope == Scope::Install,
                Change | ReportConversions => false,
            },
            Role::Supervisor => match action {
                WatchCalls | ReadOperations | ReadMoney => true,
                ReadInstall => self.scope == Scope::Install,
                ReadAudit | Change | ReportConversions => false,
            },
            Role::Publisher => action == WatchCalls,
            Role::Buyer => matches!(action, WatchCalls | ReportConversions),
        }
    }

    /// Whether the scope reaches something owned so.
    pub fn reaches(&self, owner: &Owner) -> bool {
        match &self.scope {
            Scope::Install => true,
            Scope::Companies(ids) => owner.company.is_some_and(|id| ids.contains(&id)),
            Scope::Publishers(ids) => owner.publisher.is_some_and(|id| ids.contains(&id)),
            Scope::Buyers(ids) => owner.buyer.is_some_and(|id| ids.contains(&id)),
        }
    }

    /// Whether this grant may hand `other` out (issue, rotate or revoke a token of it): an admin,
    /// for a scope within its own. `owners` says whose the publishers and buyers of `other` are.
    pub fn may_grant(&self, other: &Grant, company_of: impl Fn(&Scope) -> Vec<Option<CompanyId>>) -> bool {
        if self.role != Role::Admin {
            return false;
        }
        match (&self.scope, &other.scope) {
            (Scope::Install, _) => true,
            (Scope::Companies(_), Scope::Install) => false,
            (Scope::Companies(mine), Scope::Companies(theirs)) => theirs.is_subset(mine),
            (Scope::Companies(mine), partners) => company_of(partners)
                .into_iter()
                .all(|company| company.is_some_and(|id| mine.contains(&id))),
            _ => false,
        }
    }

    /// The companies the scope names, when it names companies (install-wide: none, i.e. all).
    pub fn companies(&self) -> Option<&BTreeSet<CompanyId>> {
        match &self.scope {
            Scope::Companies(ids) => Some(ids),
            _ => None,
        }
    }

    /// How much of what it reaches the grant may see.
    pub fn lens(&self) -> Lens {
        match self.role {
            Role::Admin => Lens::Staff { secrets: true },
            Role::Analyst | Role::Supervisor => Lens::Staff { secrets: false },
            Role::Publisher => Lens::Publisher,
            Role::Buyer => Lens::Buyer,
        }
    }
}

/// How much of a call (or a statistic) a grant sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lens {
    /// Everything; secrets (postback secrets, SIP passwords, receivers' error bodies) for admins
    /// only.
    Staff { secrets: bool },
    /// No revenue, no buyer's identity.
    Publisher,
    /// No publisher, no payout, no tracking number.
    Buyer,
}

impl Lens {
    pub fn sees_secrets(self) -> bool {
        self == Self::Staff { secrets: true }
    }
}

/// The SHA-256 digest of a secret (an RTB key, an API token): what is stored, and what a
/// presented secret is compared with. Equality is constant-time, so neither a lookup nor a
/// comparison tells by its timing how much of a digest matched (and a digest says nothing
/// usable about its secret anyway).
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

// By hand, as `PartialEq` is: equal digests are equal bytes, so they hash alike.
impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The stored form: 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyDigest {}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest([REDACTED])")
    }
}

/// A token issued through the API, as stored and listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = ApiToken)]
pub struct IssuedToken {
    pub id: Uuid,
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    pub name: TokenName,
    /// Its role, and the companies, publishers or buyers it reaches.
    #[serde(flatten)]
    #[schema(inline, value_type = GrantFields)]
    pub grant: Grant,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// After this it opens nothing (a rotated token's grace ends here).
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

/// A grant as the API writes it: the role, and at most one of the scopes (none: the whole
/// install).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct GrantFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The companies a staff token (admin, analyst, supervisor) reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Uuid>>)]
    pub companies: Option<BTreeSet<CompanyId>>,
    /// The publishers a publisher token speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Uuid>>)]
    pub publishers: Option<BTreeSet<PublisherId>>,
    /// The buyers a buyer token speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Uuid>>)]
    pub buyers: Option<BTreeSet<BuyerId>>,
}

impl GrantFields {
    /// The grant these fields describe, checked.
    pub fn grant(self) -> Result<Grant, GrantError> {
        let role = self.role.ok_or(GrantError::NoRole)?;
        let scope = match (self.companies, self.publishers, self.buyers) {
            (None, None, None) => Scope::Install,
            (Some(ids), None, None) => Scope::Companies(ids),
            (None, Some(ids), None) => Scope::Publishers(ids),
            (None, None, Some(ids)) => Scope::Buyers(ids),
            _ => return Err(GrantError::TwoScopes),
        };
        Grant::new(role, scope)
    }

    pub fn of(grant: &Grant) -> Self {
        let mut fields = Self {
            role: Some(grant.role),
            ..Self::default()
        };
        match &grant.scope {
            Scope::Install => {}
            Scope::Companies(ids) => fields.companies = Some(ids.clone()),
            Scope::Publishers(ids) => fields.publishers = Some(ids.clone()),
            Scope::Buyers(ids) => fields.buyers = Some(ids.clone()),
        }
        fields
    }
}

impl Serialize for Grant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        GrantFields::of(self).serialize(serializer)
    }
}

impl IssuedToken {
    pub fn is_valid_at(&self, at: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| at < expiry)
    }
}

/// What an operator calls a token ("grafana", "night shift"), to tell tokens apart: 1 to 100
/// characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct TokenName(String);

impl TokenName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let name = name.trim().to_owned();
        if (1..=100).contains(&name.chars().count()) && !name.chars().any(char::is_control) {
            Ok(Self(name))
        } else {
            Err("a token's name must be 1 to 100 characters, without control characters".into())
        }
    }
}

/// A new token's secret: 256 random bits, shown once and kept only as its digest. The prefix
/// makes a leaked token easy to recognise (secret scanners, logs).
pub struct TokenSecret(SecretString);

impl TokenSecret {
    pub const PREFIX: &'static str = "sbt_";

    /// The secret made of 256 random bits (see [`crate::fresh`]).
    pub fn of_random(bytes: [u8; 32]) -> Self {
        Self(format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(bytes)).into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.expose())
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    #[test]
    fn key_digests_match_the_stored_hex_form() {
        let digest = KeyDigest::of("490530d2-9f24-4be2-894b-a80e971390df");
        let stored = hex::encode(Sha256::digest(b"490530d2-9f24-4be2-894b-a80e971390df"));
        assert_eq!(KeyDigest::from_hex(&stored), Some(digest));
        assert_eq!(digest.to_hex(), stored);
        assert_ne!(KeyDigest::of("another key entirely"), digest);
        assert_eq!(KeyDigest::from_hex("not hex"), None);
    }

    #[test]
    fn secrets_are_random_prefixed_and_never_printed() {
        let (one, two) = (TokenSecret::generate(), TokenSecret::generate());
        assert!(one.expose().starts_with("sbt_"));
        assert_eq!(one.expose().len(), 4 + 43);
        assert_ne!(one.expose(), two.expose());
        assert_eq!(one.digest(), KeyDigest::of(one.expose()));
        assert!(!format!("{one:?}").contains(&one.expose()[4..]));
    }

    #[test]
    fn a_token_opens_nothing_once_revoked_or_expired() {
        let at: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let token = IssuedToken {
            id: Uuid::nil(),
            name: TokenName::try_from("grafana".to_owned()).unwrap(),
            grant: Grant::install_supervisor(),
            created_at: at,
            expires_at: Some(at + jiff::SignedDuration::from_secs(60)),
            revoked_at: None,
        };
        assert!(token.is_valid_at(at));
        assert!(!token.is_valid_at(at + jiff::SignedDuration::from_secs(60)));
        let revoked = IssuedToken {
            revoked_at: Some(at),
            expires_at: None,
            ..token
        };
        assert!(!revoked.is_valid_at(at));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            TokenName::try_from(" grafana ".to_owned()).unwrap().as_str(),
            "grafana"
        );
        assert!(TokenName::try_from("".to_owned()).is_err());
        assert!(TokenName::try_from("a\nb".to_owned()).is_err());
        assert!(TokenName::try_from("x".repeat(101)).is_err());
    }
}
