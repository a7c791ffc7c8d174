//! Bearer-token authentication of the API, and the one place a request's grant is checked:
//! every handler takes a [`Caller`] and asks it whether it may do what it is about to, on whose
//! data.
//!
//! Tokens come from two places: the settings (`ADMIN_TOKEN`, the install's administrator, and
//! `SUPERVISOR_TOKENS`, install-wide supervisors), which bootstrap a deployment, and the API
//! (`/api/v1/tokens`), which issues, rotates and revokes tokens of any role and scope, kept in the
//! store. Either way only SHA-256 digests are held.

use std::{
    future::{Ready, ready},
    sync::{PoisonError, RwLock},
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    error::ApiError,
    rate_limit::{Rate, RateLimiter},
};
use crate::{
    clock::Clock,
    domain::{
        access::{Action, Grant, IssuedToken, KeyDigest, Lens, Owner},
        plan::CompanyId,
    },
    store::{StoreError, TokenStore},
};

/// Every token that opens the API, as digests: comparing digests in constant time reveals
/// neither a token's content nor its length.
pub struct AccessTokens {
    configured: Vec<(Caller, KeyDigest)>,
    /// Issued through the API: a copy of the store's, changed with every change made here and
    /// reloaded every [`AccessTokens::RELOAD_EVERY`] (for changes made on another node).
    issued: RwLock<Vec<(IssuedToken, KeyDigest)>>,
    /// One reload or change at a time, each reading the store after the one before it has put
    /// its copy in place: a reload that read the store before a revocation cannot land after
    /// it and bring the token back.
    reloading: tokio::sync::Mutex<()>,
}

/// The issued tokens, as held.
pub type HeldTokens = Vec<(IssuedToken, KeyDigest)>;

impl AccessTokens {
    pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn new(admin: Option<&SecretString>, supervisors: &[SecretString]) -> Self {
        let admin = admin.map(|token| {
            let caller = Caller::configured("ADMIN_TOKEN".into(), Grant::install_admin());
            (caller, KeyDigest::of(token.expose_secret()))
        });
        let supervisors = supervisors.iter().enumerate().map(|(i, token)| {
            let caller = Caller::configured(format!("SUPERVISOR_TOKENS[{i}]"), Grant::install_supervisor());
            (caller, KeyDigest::of(token.expose_secret()))
        });
        Self {
            configured: admin.into_iter().chain(supervisors).collect(),
            issued: RwLock::default(),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes the issued tokens as the store has them now.
    pub async fn reload(&self, store: &dyn TokenStore) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let issued = store.api_tokens().await?;
        *self.issued.write().unwrap_or_else(PoisonError::into_inner) = issued;
        Ok(())
    }

    /// After a change made through this node and stored: applies it here at once, then takes
    /// the store's copy (if the store cannot be read now, the change holds all the same).
    pub async fn changed(&self, store: &dyn TokenStore, change: impl FnOnce(&mut HeldTokens)) {
        let _one_at_a_time = self.reloading.lock().await;
        change(&mut self.issued.write().unwrap_or_else(PoisonError::into_inner));
        match store.api_tokens().await {
            Ok(issued) => *self.issued.write().unwrap_or_else(PoisonError::into_inner) = issued,
            Err(error) => tracing::warn!(%error, "could not reload the API tokens; the change holds"),
        }
    }

    fn caller_of(&self, presented: &str, at: Timestamp) -> Option<Caller> {
        let presented = KeyDigest::of(presented);
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        // Every token is compared, so the time taken does not tell which one matched.
        let mut matched = None;
        for (caller, digest) in &self.configured {
            if *digest == presented {
                matched.get_or_insert_with(|| caller.clone());
            }
        }
        for (token, digest) in issued.iter() {
            if (*digest == presented) & token.is_valid_at(at) {
                matched.get_or_insert_with(|| Caller::issued(token));
            }
        }
        matched
    }

    fn is_empty(&self) -> bool {
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        self.configured.is_empty() && issued.is_empty()
    }
}

/// Who is asking, and what their token grants: take it as a handler argument, then ask before
/// each thing done.
#[derive(Debug, Clone)]
pub struct Caller {
    grant: Grant,
    /// How the audit log names them: the setting their token came from, or the issued token's
    /// name.
    name: String,
    token_id: Option<Uuid>,
}

impl Caller {
    fn configured(name: String, grant: Grant) -> Self {
        Self {
            grant,
            name,
            token_id: None,
        }
    }

    fn issued(token: &IssuedToken) -> Self {
        Self {
            grant: token.grant.clone(),
            name: format!("token {}", token.name.as_str()),
            token_id: Some(token.id),
        }
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn token_id(&self) -> Option<Uuid> {
        self.token_id
    }

    pub fn lens(&self) -> Lens {
        self.grant.lens()
    }

    /// Whether it may see secrets (postback secrets, SIP passwords, receivers' error bodies):
    /// admins only.
    pub fn sees_secrets(&self) -> bool {
        self.lens().sees_secrets()
    }

    /// 403 unless the role allows the action.
    pub fn require(&self, action: Action) -> Result<&Self, ApiError> {
        if self.grant.may(action) {
            Ok(self)
        } else {
            Err(ApiError::Forbidden(forbidden(self.grant.role().as_str(), action)))
        }
    }

    /// Whether its scope reaches something owned so.
    pub fn reaches(&self, owner: &Owner) -> bool {
        self.grant.reaches(owner)
    }

    /// The action on one thing it names: 403 unless the role allows the action, and 404 (as
    /// for a thing that does not exist) unless its scope reaches the thing, so that nobody
    /// learns what other companies have.
    pub fn require_on(
        &self,
        action: Action,
        owner: &Owner,
        not_found: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        self.require(action)?;
        if self.reaches(owner) {
            Ok(())
        } else {
            Err(not_found())
        }
    }
}

impl Caller {
    /// The company a list of company-owned records is narrowed to in the store: the one asked
    /// for, which the scope must reach (else 404, as for a company that does not exist), or the
    /// scope's only company. What comes back is still filtered with [`Caller::reaches`].
    pub fn company_to_list(&self, asked: Option<CompanyId>) -> Result<Option<CompanyId>, ApiError> {
        let Some(mine) = self.grant.companies() else {
            return Ok(asked);
        };
        match asked {
            Some(company) if mine.contains(&company) => Ok(Some(company)),
            Some(company) => Err(ApiError::NotFound(format!("no company {company}"))),
            None if mine.len() == 1 => Ok(mine.first().copied()),
            None => Ok(None),
        }
    }
}

fn forbidden(role: &str, action: Action) -> &'static str {
    let _ = role;
    match action {
        Action::WatchCalls => "this token may not read calls",
        Action::ReadOperations => {
            "this token may not read the network's operations (plan, load, RTB log, outbox)"
        }
        Action::ReadMoney => "this token may not read revenue, payouts or exports",
        Action::ReadAudit => "only admins and analysts read the audit log",
        Action::Change => "this token may only read: changes need an admin token",
        Action::ReportConversions => {
            "only a buyer's token (or its company's admin) reports conversions and returns"
        }
        Action::ReadInstall => "install-wide numbers need an install-wide staff token",
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let (Some(tokens), Some(clock)) = (
        req.app_data::<web::Data<AccessTokens>>(),
        req.app_data::<web::Data<dyn Clock>>(),
    ) else {
        return Err(ApiError::Internal);
    };
    if tokens.is_empty() {
        return Err(ApiError::Unauthorized(
            "the API is disabled: start Switchboard with ADMIN_TOKEN or SUPERVISOR_TOKENS set",
        ));
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // Authentication schemes are case-insensitive (RFC 9110).
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token))
        .ok_or_else(|| failed(req, "send a token as `Authorization: Bearer <token>`"))?;
    match tokens.caller_of(presented.trim(), clock.now()) {
        Some(caller) => Ok(caller),
        None => Err(failed(req, "the token is not valid")),
    }
}

/// Token checks that fail from one address: a burst, then one a second. A valid token is never
/// held back (a scanner behind the same proxy as the operators cannot lock them out), and with
/// 256-bit tokens guessing is hopeless anyway: the limit keeps scanners from costing the server
/// and the logs more than that.
pub struct AuthFailures(RateLimiter);

impl AuthFailures {
    pub const RATE: Rate = Rate {
        per_second: 1,
        burst: 30,
    };

    pub fn new() -> Self {
        Self(RateLimiter::new(Self::RATE))
    }
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::new()
    }
}

/// A failed token check: 401, or 429 once its address has failed too often. Keyed by the
/// connection's address (not a forwarded one, which a client could make up).
fn failed(req: &HttpRequest, why: &'static str) -> ApiError {
    let (Some(failures), Some(address)) = (req.app_data::<web::Data<AuthFailures>>(), req.peer_addr()) else {
        return ApiError::Unauthorized(why);
    };
    match failures.0.check(address.ip().to_string().as_bytes()) {
        Ok(()) => ApiError::Unauthorized(why),
        Err(limited) => {
            tracing::warn!(client = %address.ip(), "too many failed token checks");
            ApiError::TooManyFailures(limited.retry_after.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::access::TokenName;
    use uuid::Uuid;

    fn grant(tokens: &AccessTokens, presented: &str) -> Option<Grant> {
        tokens.caller_of(presented, at()).map(|caller| caller.grant)
    }

    fn at() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn each_token_has_its_role_and_nothing_else_has_one() {
        let admin = SecretString::from("admin-token-0123456789");
        let supervisors = [
            SecretString::from("supervisor-token-0001"),
            SecretString::from("supervisor-token-0002"),
        ];
        let tokens = AccessTokens::new(Some(&admin), &supervisors);
        assert_eq!(
            grant(&tokens, "admin-token-0123456789"),
            Some(Grant::install_admin())
        );
        let second = tokens.caller_of("supervisor-token-0002", at()).unwrap();
        assert_eq!(second.grant(), &Grant::install_supervisor());
        assert_eq!(second.name(), "SUPERVISOR_TOKENS[1]");
        assert_eq!(grant(&tokens, "supervisor-token-000"), None);
        assert_eq!(grant(&tokens, ""), None);
        let none = AccessTokens::new(None, &[]);
        assert_eq!(grant(&none, ""), None);
        assert!(none.is_empty());
    }

    #[test]
    fn issued_tokens_open_the_api_until_they_expire_or_are_revoked() {
        let tokens = AccessTokens::new(None, &[]);
        let issued = |secret: &str, grant, expires_at, revoked_at| {
            let token = IssuedToken {
                id: Uuid::new_v4(),
                name: TokenName::try_from(secret.to_owned()).unwrap(),
                grant,
                created_at: at(),
                expires_at,
                revoked_at,
            };
            (token, KeyDigest::of(secret))
        };
        let later = at() + jiff::SignedDuration::from_secs(60);
        *tokens.issued.write().unwrap() = vec![
            issued("issued-admin-token", Grant::install_admin(), None, None),
            issued(
                "issued-grafana-token",
                Grant::install_supervisor(),
                Some(later),
                None,
            ),
            issued("issued-revoked-token", Grant::install_admin(), None, Some(at())),
        ];
        assert!(!tokens.is_empty());
        let admin = tokens.caller_of("issued-admin-token", at()).unwrap();
        assert_eq!(admin.grant(), &Grant::install_admin());
        assert_eq!(admin.name(), "token issued-admin-token");
        assert!(admin.token_id().is_some());
        assert_eq!(
            grant(&tokens, "issued-grafana-token"),
            Some(Grant::install_supervisor())
        );
        assert_eq!(
            tokens.caller_of("issued-grafana-token", later).map(|c| c.grant),
            None
        );
        assert_eq!(grant(&tokens, "issued-revoked-token"), None);
    }
}
