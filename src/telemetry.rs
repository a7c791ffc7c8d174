//! Logs and spans through `tracing`: human-readable by default, JSON lines on request.

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter,
    fmt::{self, format::FmtSpan},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use actix_web::HttpMessage;
use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

use crate::{config::LogFormat, domain::rtb::names_a_secret};

/// Request spans: tracing-actix-web's fields (those its end-of-request hook fills included),
/// a `call_sid` field that webhook handlers fill, so every line logged while handling a webhook
/// names its call, and a target whose `key` parameter is hidden: RTB pings may carry their
/// secret key in the query string, and it must not reach the logs.
pub struct RequestSpans;

impl RootSpanBuilder for RequestSpans {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let method = request.method();
        let user_agent = (request.headers().get("User-Agent")).and_then(|h| h.to_str().ok());
        let request_id = request.extensions().get::<RequestId>().copied();
        let client_ip = request.connection_info().realip_remote_addr().map(str::to_owned);
        tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.target = %without_secrets(request.uri()),
            http.client_ip = %client_ip.as_deref().unwrap_or(""),
            http.user_agent = %user_agent.unwrap_or(""),
            http.status_code = tracing::field::Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id.map(|id| id.to_string()).unwrap_or_default(),
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
            call_sid = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The path and query with the value of every secret-named parameter replaced, its name
/// compared as the server reads it (percent-decoded, any case: `%6Bey=` and `Key=` too).
fn without_secrets(uri: &actix_web::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = (query.split('&'))
        .map(|pair| {
            let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let name = url::form_urlencoded::parse(raw_name.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            if names_a_secret(&name) {
                format!("{raw_name}=[REDACTED]")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

/// Installs the global subscriber. `RUST_LOG` filters as usual; the default keeps sqlx's
/// per-statement logging out of the way. A span's close is logged, so every request leaves one
/// line with its method, route, status and duration.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    // Colours for a terminal only: log files and collectors get plain text.
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_span_events(FmtSpan::CLOSE),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_events(FmtSpan::CLOSE),
            )
            .try_init(),
    };
    // Only one subscriber per process: a second call (tests) keeps the first.
    drop(installed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hidden_from_logged_targets() {
        let uri = "/rtbs.json?key=s3cr3t-key-0000000000&publisher_id=p1&monkey=1"
            .parse()
            .unwrap();
        assert_eq!(
            without_secrets(&uri),
            "/rtbs.json?key=[REDACTED]&publisher_id=p1&monkey=1"
        );
        assert_eq!(
            without_secrets(&"/voice/incoming".parse().unwrap()),
            "/voice/incoming"
        );
        for spelling in [
            "%6Bey",
            "Key",
            "KEY",
            "ke%79",
            "%4B%45%59",
            "api_key",
            "Token",
            "key+",
        ] {
            let uri = format!("/rtbs.json?zip=10001&{spelling}=s3cr3t&monkey=1")
                .parse()
                .unwrap();
            let logged = without_secrets(&uri);
            assert_eq!(
                logged,
                format!("/rtbs.json?zip=10001&{spelling}=[REDACTED]&monkey=1"),
                "{spelling}"
            );
        }
        assert_eq!(
            without_secrets(&"/rtbs.json?key".parse().unwrap()),
            "/rtbs.json?key=[REDACTED]",
            "a name without a value is still hidden"
        );
    }
}
