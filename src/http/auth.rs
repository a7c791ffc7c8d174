//! Bearer-token authentication of the admin API.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The configured admin token, kept only as a digest: comparing digests in constant time
/// reveals neither the token's content nor its length.
#[derive(Clone)]
pub struct AdminToken {
    digest: Option<[u8; 32]>,
}

impl AdminToken {
    pub fn new(token: Option<&SecretString>) -> Self {
        Self {
            digest: token.map(|t| digest(t.expose_secret())),
        }
    }

    fn accepts(&self, presented: &str) -> bool {
        self.digest
            .is_some_and(|expected| bool::from(expected.ct_eq(&digest(presented))))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Proof that the request carries the admin token: take it as a handler argument.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Admin, ApiError> {
    let Some(token) = req.app_data::<web::Data<AdminToken>>() else {
        return Err(ApiError::Internal);
    };
    if token.digest.is_none() {
        return Err(ApiError::Unauthorized(
            "the admin API is disabled: start Switchboard with ADMIN_TOKEN set",
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
            "send the admin token as `Authorization: Bearer <token>`",
        ))?;
    if token.accepts(presented.trim()) {
        Ok(Admin)
    } else {
        Err(ApiError::Unauthorized("the token is not valid"))
    }
}
