//! The API's one error type and its mapping to HTTP, done here and nowhere else.

use actix_web::{HttpResponse, ResponseError, http::StatusCode, http::header};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{domain::rtb::PingError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Too many failed token checks from one address: try again after this many seconds.
    #[error("too many requests with tokens that are not valid; try again in {0} s")]
    TooManyFailures(u64),
    /// A valid token that may not do this (a supervisor's, for a change).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { field: Option<String>, message: String },
    /// A well-formed request whose content is invalid (422), with the offending field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A body that is not JSON at all (400).
    #[error("{0}")]
    Malformed(String),
    #[error("the database is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
    /// An RTB ping refused: its own codes, which publishers branch on.
    #[error("{0}")]
    Ping(#[from] PingError),
    /// An error the HTTP layer answered by itself (a body too large, a method not routed).
    #[error("{}", .0.canonical_reason().unwrap_or("request refused"))]
    Http(StatusCode),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::TooManyFailures(_) => "rate_limited",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } => "validation_failed",
            Self::Malformed(_) => "malformed_body",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Ping(error) => error.code(),
            Self::Http(status) => match status.as_u16() {
                404 => "not_found",
                405 => "method_not_allowed",
                413 => "payload_too_large",
                415 => "unsupported_media_type",
                400..=499 => "bad_request",
                _ => "internal",
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { .. } => Self::NotFound(error.to_string()),
            StoreError::Conflict { field, message } => Self::Conflict { field, message },
            StoreError::InvalidReference { field, message } | StoreError::Invalid { field, message } => {
                Self::Invalid { field, message }
            }
            StoreError::Stale => Self::Conflict {
                field: None,
                message: "the record kept changing while this change was being made; read it and try again"
                    .into(),
            },
            StoreError::Unavailable(ref cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::Unavailable
            }
            other => {
                tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "store failure");
                Self::Internal
            }
        }
    }
}

/// An error, as every operation answers one.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(super) struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
struct Detail<'a> {
    /// A stable code: `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `validation_failed`, `malformed_body`, `unavailable`, `internal`…
    #[schema(value_type = String)]
    code: &'static str,
    /// For a person to read.
    message: String,
    /// The parameter or field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    field: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Ping(PingError::MissingKey | PingError::UnknownKey) => StatusCode::UNAUTHORIZED,
            Self::Ping(PingError::Malformed(_)) => StatusCode::BAD_REQUEST,
            Self::Ping(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Http(status) => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Ping(error) = self {
            // As it is logged with the ping.
            return HttpResponse::build(self.status_code()).json(error.body());
        }
        let (field, message) = match self {
            Self::Invalid { field, message } => (Some(field.as_str()), message.clone()),
            Self::Conflict { field, message } => (field.as_deref(), message.clone()),
            other => (None, other.to_string()),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::TooManyFailures(seconds) => {
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            _ => {}
        }
        response.json(Body {
            error: Detail {
                code: self.code(),
                message,
                field,
            },
        })
    }
}
