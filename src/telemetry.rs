//! Logs and spans through `tracing`: human-readable by default, JSON lines on request.

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter,
    fmt::{self, format::FmtSpan},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::LogFormat;

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
