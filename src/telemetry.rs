//! Logs and spans through `tracing`: human-readable by default, JSON lines on request.

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter,
    fmt::{self, format::FmtSpan},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

use crate::config::LogFormat;

/// Request spans: tracing-actix-web's, plus a `call_sid` field that webhook handlers fill, so
/// every line logged while handling a webhook names its call.
pub struct RequestSpans;

impl RootSpanBuilder for RequestSpans {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing_actix_web::root_span!(request, call_sid = tracing::field::Empty)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
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
