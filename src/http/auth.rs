//! Bearer-token authentication of the API: admin tokens may do everything, supervisor tokens
//! may only read.
//!
//! Tokens come from two places: the settings (`ADMIN_TOKEN`, `SUPERVISOR_TOKENS`), which
//! bootstrap a deployment, and the API (`/api/v1/tokens`), which issues, rotates and revokes
//! tokens kept in the store. Either way only SHA-256 digests are held.

use std::{
    future::{Ready, ready},
    sync::{PoisonError, RwLock},
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use super::error::ApiError;
use crate::{
    clock::Clock,
    domain::access::{IssuedToken, KeyDigest, Role},
    store::{StoreError, TokenStore},
};

/// Every token that opens the API, as digests: comparing digests in constant time reveals
/// neither a token's content nor its length.
pub struct AccessTokens {
    admin: Option<KeyDigest>,
    supervisors: Vec<KeyDigest>,
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
        Self {
            admin: admin.map(|t| KeyDigest::of(t.expose_secret())),
            supervisors: supervisors
                .iter()
                .map(|t| KeyDigest::of(t.expose_secret()))
                .collect(),
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

    fn role_of(&self, presented: &str, at: Timestamp) -> Option<Role> {
        let presented = KeyDigest::of(presented);
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        let configured = (self.admin.iter().map(|digest| (Role::Admin, digest)))
            .chain(self.supervisors.iter().map(|digest| (Role::Supervisor, digest)));
        let issued = (issued.iter())
            .filter(|(token, _)| token.is_valid_at(at))
            .map(|(token, digest)| (token.role, digest));
        // Every token is compared, so the time taken does not tell which one matched.
        let (admin, supervisor) =
            configured
                .chain(issued)
                .fold((false, false), |(admin, supervisor), (role, digest)| {
                    let matched = *digest == presented;
                    (
                        admin | (matched & (role == Role::Admin)),
                        supervisor | (matched & (role == Role::Supervisor)),
                    )
                });
        if admin {
            Some(Role::Admin)
        } else {
            supervisor.then_some(Role::Supervisor)
        }
    }

    fn is_empty(&self) -> bool {
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        self.admin.is_none() && self.supervisors.is_empty() && issued.is_empty()
    }
}

/// Proof that the request carries the admin token: take it as a handler argument.
pub struct Admin;

/// Proof that the request may read: an admin or a supervisor token.
pub struct Reader {
    admin: bool,
}

impl Reader {
    /// Whether it may see secrets (postback secrets, SIP passwords): admins only.
    pub fn sees_secrets(&self) -> bool {
        self.admin
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|role| match role {
            Role::Admin => Ok(Admin),
            Role::Supervisor => Err(ApiError::Forbidden(
                "supervisor tokens are read-only: this needs the admin token",
            )),
        }))
    }
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).map(|role| Reader {
            admin: role == Role::Admin,
        }))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Role, ApiError> {
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
        .ok_or(ApiError::Unauthorized(
            "send a token as `Authorization: Bearer <token>`",
        ))?;
    tokens
        .role_of(presented.trim(), clock.now())
        .ok_or(ApiError::Unauthorized("the token is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::access::TokenName;
    use uuid::Uuid;

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
        assert_eq!(tokens.role_of("admin-token-0123456789", at()), Some(Role::Admin));
        assert_eq!(
            tokens.role_of("supervisor-token-0002", at()),
            Some(Role::Supervisor)
        );
        assert_eq!(tokens.role_of("supervisor-token-000", at()), None);
        assert_eq!(tokens.role_of("", at()), None);
        let none = AccessTokens::new(None, &[]);
        assert_eq!(none.role_of("", at()), None);
        assert!(none.is_empty());
    }

    #[test]
    fn issued_tokens_open_the_api_until_they_expire_or_are_revoked() {
        let tokens = AccessTokens::new(None, &[]);
        let issued = |secret: &str, role, expires_at, revoked_at| {
            let token = IssuedToken {
                id: Uuid::new_v4(),
                name: TokenName::try_from(secret.to_owned()).unwrap(),
                role,
                created_at: at(),
                expires_at,
                revoked_at,
            };
            (token, KeyDigest::of(secret))
        };
        let later = at() + jiff::SignedDuration::from_secs(60);
        *tokens.issued.write().unwrap() = vec![
            issued("issued-admin-token", Role::Admin, None, None),
            issued("issued-grafana-token", Role::Supervisor, Some(later), None),
            issued("issued-revoked-token", Role::Admin, None, Some(at())),
        ];
        assert!(!tokens.is_empty());
        assert_eq!(tokens.role_of("issued-admin-token", at()), Some(Role::Admin));
        assert_eq!(
            tokens.role_of("issued-grafana-token", at()),
            Some(Role::Supervisor)
        );
        assert_eq!(tokens.role_of("issued-grafana-token", later), None);
        assert_eq!(tokens.role_of("issued-revoked-token", at()), None);
    }
}
