//! Bearer-token authentication of the API: admin tokens may do everything, supervisor tokens
//! may only read.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The configured tokens, kept only as digests: comparing digests in constant time reveals
/// neither a token's content nor its length.
#[derive(Clone)]
pub struct AccessTokens {
    admin: Option<[u8; 32]>,
    supervisors: Vec<[u8; 32]>,
}

/// What a presented token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Supervisor,
}

impl AccessTokens {
    pub fn new(admin: Option<&SecretString>, supervisors: &[SecretString]) -> Self {
        Self {
            admin: admin.map(|t| digest(t.expose_secret())),
            supervisors: supervisors.iter().map(|t| digest(t.expose_secret())).collect(),
        }
    }

    fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = digest(presented);
        let matches = |expected: &[u8; 32]| bool::from(expected.ct_eq(&presented));
        if self.admin.as_ref().is_some_and(matches) {
            return Some(Role::Admin);
        }
        // Every supervisor token is compared, so the time taken does not tell which matched.
        let supervisor = (self.supervisors.iter()).fold(false, |found, expected| found | matches(expected));
        supervisor.then_some(Role::Supervisor)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Proof that the request carries the admin token: take it as a handler argument.
pub struct Admin;

/// Proof that the request may read: an admin or a supervisor token.
pub struct Reader;

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
        ready(authenticate(req).map(|_| Reader))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Role, ApiError> {
    let Some(tokens) = req.app_data::<web::Data<AccessTokens>>() else {
        return Err(ApiError::Internal);
    };
    if tokens.admin.is_none() && tokens.supervisors.is_empty() {
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
        .role_of(presented.trim())
        .ok_or(ApiError::Unauthorized("the token is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_has_its_role_and_nothing_else_has_one() {
        let admin = SecretString::from("admin-token-0123456789");
        let supervisors = [
            SecretString::from("supervisor-token-0001"),
            SecretString::from("supervisor-token-0002"),
        ];
        let tokens = AccessTokens::new(Some(&admin), &supervisors);
        assert_eq!(tokens.role_of("admin-token-0123456789"), Some(Role::Admin));
        assert_eq!(tokens.role_of("supervisor-token-0002"), Some(Role::Supervisor));
        assert_eq!(tokens.role_of("supervisor-token-000"), None);
        assert_eq!(tokens.role_of(""), None);
        let none = AccessTokens::new(None, &[]);
        assert_eq!(none.role_of(""), None);
    }
}
