//! Settings: from the environment and an optional TOML file (the environment wins), with
//! defaults for everything so the service starts with none of them set.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::{domain::outbound::OutboundRules, http::rate_limit::Rate, postbacks::Delivery, store::Backend};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://switchboard.db";
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// Every setting, by its environment variable; a settings file uses the same names in lower case.
pub const KEYS: [&str; 23] = [
    "DATABASE_URL",
    "BIND",
    "PUBLIC_URL",
    "ADMIN_TOKEN",
    "SUPERVISOR_TOKENS",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WEBHOOK_SHARED_KEYS",
    "WEBHOOK_SIGNATURES",
    "LOG_FORMAT",
    "TWIML_TEMPLATES_DIR",
    "END_MESSAGE",
    "DRAIN_SECONDS",
    "STUCK_CALL_SECONDS",
    "DECISION_BUDGET_MS",
    "BENCH_FLOOR",
    "POSTBACK_TIMEOUT_MS",
    "POSTBACK_RETRY_BASE_MS",
    "POSTBACK_MAX_TRIES",
    "POSTBACK_ALLOW_HTTP",
    "POSTBACK_ALLOW_PRIVATE_NETWORKS",
    "SECRETS_KEY",
    "RTB_RATE_PER_SECOND",
    "RTB_RATE_BURST",
];

/// A call this old whose end was never reported is ended: four hours, the longest a provider
/// lets a call last, and time to ring and redirect.
pub const DEFAULT_STUCK_CALL_SECONDS: u64 = 4 * 3600 + 30 * 60;

/// From a webhook's arrival to its answer, at most, by default: well inside the 15 s a
/// provider waits.
pub const DEFAULT_DECISION_BUDGET_MS: u64 = 2000;

/// How long a stopping server goes on serving with `/readyz` failing, by default.
pub const DEFAULT_DRAIN_SECONDS: u64 = 5;

pub const DEFAULT_END_MESSAGE: &str =
    "We are sorry, nobody is available to take your call right now. Please try again later.";

#[derive(Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub bind: SocketAddr,
    /// The base URL the telephony provider reaches us on: callback URLs and signatures use it,
    /// never the socket address (which a proxy hides).
    /// Unset: derived from the address actually bound (for local use only).
    pub public_url: Option<PublicUrl>,
    /// Unset: the API refuses every change (supervisor tokens may still read).
    pub admin_token: Option<SecretString>,
    /// Read-only tokens for supervisors (status API, live events, dashboard, metrics). Several
    /// may be valid at once, so one can be rotated without locking anyone out.
    pub supervisor_tokens: Vec<SecretString>,
    pub twilio_auth_token: Option<SecretString>,
    /// The secrets of the account's webhook shared keys (one, or two while rotating): webhooks a
    /// Twilio Webhook Rule signs carry `X-Twilio-Webhooks-Signature-Settings` and are checked
    /// with these, never with the auth token.
    pub twilio_webhook_shared_keys: Vec<SecretString>,
    /// Whether webhooks must carry a valid signature; off only when asked for by name.
    pub webhook_signatures: WebhookSignatures,
    pub log_format: LogFormat,
    /// TwiML templates that replace the built-in ones, file by file.
    pub twiml_templates_dir: Option<PathBuf>,
    /// Said before hanging up when no buyer, fallback or redirect is left.
    pub end_message: String,
    /// On SIGTERM, how long to go on serving with `/readyz` failing, so that load balancers
    /// send new calls elsewhere before the listener closes.
    pub drain: std::time::Duration,
    /// A call started this long ago whose end was never reported is ended as timed out.
    pub stuck_call_after: std::time::Duration,
    /// A routing webhook is answered this long after it arrived at the latest (see
    /// [`crate::decide::Decider::decision_budget`]).
    pub decision_budget: std::time::Duration,
    /// Serves `POST /voice/floor`, fixed TwiML without routing, for the load benchmark to
    /// measure the server's floor against.
    pub bench_floor: bool,
    /// How postbacks are delivered: each try's timeout, the backoff, the tries.
    pub postbacks: Delivery,
    /// Where postbacks may go: `https` to public addresses, unless these allow more.
    pub outbound: OutboundRules,
    /// The keys stored secrets are encrypted with: the first seals, any opens (the others are
    /// former keys, kept while a rotation re-encrypts). Unset: see [`crate::store::sealing`].
    pub secrets_keys: Vec<SecretsKey>,
    /// RTB pings taken per RTB key.
    pub rtb_rate: Rate,
}

/// One key of `SECRETS_KEY`: 32 bytes, given in base64.
#[derive(Clone)]
pub struct SecretsKey(pub [u8; 32]);

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

impl SecretsKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "is not base64 (make one with `openssl rand -base64 32`)".to_owned())?;
        let key: [u8; 32] = (bytes.try_into()).map_err(|_| {
            "must be 32 bytes, in base64 (make one with `openssl rand -base64 32`)".to_owned()
        })?;
        Ok(Self(key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings: {0}")]
    Source(#[from] config::ConfigError),
    #[error("{key} is invalid: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key} is not set: {message}")]
    Missing {
        key: &'static str,
        message: &'static str,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WebhookSignatures {
    /// Every webhook must be signed with `TWILIO_AUTH_TOKEN` (which must then be set).
    #[default]
    Checked,
    /// Webhooks are taken unsigned: for local testing, and start-up warns.
    Off,
}

fn invalid(key: &'static str) -> impl FnOnce(String) -> ConfigError {
    move |message| ConfigError::Invalid { key, message }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    database_url: Option<String>,
    bind: Option<String>,
    public_url: Option<String>,
    admin_token: Option<SecretString>,
    /// Comma-separated.
    supervisor_tokens: Option<SecretString>,
    twilio_auth_token: Option<SecretString>,
    /// Comma-separated.
    twilio_webhook_shared_keys: Option<SecretString>,
    webhook_signatures: Option<String>,
    log_format: Option<String>,
    twiml_templates_dir: Option<PathBuf>,
    end_message: Option<String>,
    drain_seconds: Option<String>,
    stuck_call_seconds: Option<String>,
    decision_budget_ms: Option<String>,
    bench_floor: Option<String>,
    postback_timeout_ms: Option<String>,
    postback_retry_base_ms: Option<String>,
    postback_max_tries: Option<String>,
    postback_allow_http: Option<String>,
    postback_allow_private_networks: Option<String>,
    /// Comma-separated: the current key first, then former ones.
    secrets_key: Option<SecretString>,
    rtb_rate_per_second: Option<String>,
    rtb_rate_burst: Option<String>,
}

impl Settings {
    /// Reads the process environment and, if given, the settings file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(file, std::env::vars())
    }

    pub fn from_sources(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // Only our own variables, so a typo in the file is reported rather than ignored.
        let ours: config::Map<String, String> = environment
            .into_iter()
            .filter(|(key, value)| KEYS.contains(&key.as_str()) && !value.is_empty())
            .collect();
        let mut builder = Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let raw: Raw = builder
            .add_source(Environment::default().source(Some(ours)))
            .build()?
            .try_deserialize()?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let bind_text = raw.bind.as_deref().unwrap_or(DEFAULT_BIND);
        let bind: SocketAddr = bind_text
            .parse()
            .map_err(|_| format!("`{bind_text}` is not an address:port such as {DEFAULT_BIND}"))
            .map_err(invalid("BIND"))?;
        let database_url = DatabaseUrl::parse(raw.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL))
            .map_err(invalid("DATABASE_URL"))?;
        let public_url = raw
            .public_url
            .map(|text| PublicUrl::parse(&text).map_err(invalid("PUBLIC_URL")))
            .transpose()?;
        if let Some(token) = &raw.admin_token
            && token.expose_secret().len() < 16
        {
            return Err(invalid("ADMIN_TOKEN")(
                "must be at least 16 characters long".into(),
            ));
        }
        let supervisor_tokens = supervisor_tokens(raw.supervisor_tokens.as_ref(), raw.admin_token.as_ref())
            .map_err(invalid("SUPERVISOR_TOKENS"))?;
        let twilio_webhook_shared_keys = shared_keys(raw.twilio_webhook_shared_keys.as_ref())
            .map_err(invalid("TWILIO_WEBHOOK_SHARED_KEYS"))?;
        let webhook_signatures = match raw.webhook_signatures.as_deref() {
            None | Some("check") => WebhookSignatures::Checked,
            Some("off") => WebhookSignatures::Off,
            Some(other) => {
                return Err(invalid("WEBHOOK_SIGNATURES")(format!(
                    "`{other}` is neither `check` nor `off`"
                )));
            }
        };
        let drain_seconds = number(
            raw.drain_seconds.as_deref(),
            ("DRAIN_SECONDS", "seconds"),
            DEFAULT_DRAIN_SECONDS,
            0..=300,
        )?;
        let stuck_call_seconds = number(
            raw.stuck_call_seconds.as_deref(),
            ("STUCK_CALL_SECONDS", "seconds"),
            DEFAULT_STUCK_CALL_SECONDS,
            60..=7 * 24 * 3600,
        )?;
        let decision_budget_ms = number(
            raw.decision_budget_ms.as_deref(),
            ("DECISION_BUDGET_MS", "milliseconds"),
            DEFAULT_DECISION_BUDGET_MS,
            // With the wait for an actor that took a webhook up, well inside the provider's 15 s.
            100..=5_000,
        )?;
        let bench_floor = match raw.bench_floor.as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(invalid("BENCH_FLOOR")(format!(
                    "`{other}` is neither `on` nor `off`"
                )));
            }
        };
        let defaults = Delivery::default();
        let postbacks = Delivery {
            timeout: std::time::Duration::from_millis(number(
                raw.postback_timeout_ms.as_deref(),
                ("POSTBACK_TIMEOUT_MS", "milliseconds"),
                defaults.timeout.as_millis() as u64,
                100..=60_000,
            )?),
            retry_base: std::time::Duration::from_millis(number(
                raw.postback_retry_base_ms.as_deref(),
                ("POSTBACK_RETRY_BASE_MS", "milliseconds"),
                defaults.retry_base.as_millis() as u64,
                10..=3_600_000,
            )?),
            max_tries: number(
                raw.postback_max_tries.as_deref(),
                ("POSTBACK_MAX_TRIES", "tries"),
                u64::from(defaults.max_tries),
                1..=50,
            )? as u32,
        };
        let outbound = OutboundRules {
            allow_http: flag(raw.postback_allow_http.as_deref(), "POSTBACK_ALLOW_HTTP")?,
            allow_private_networks: flag(
                raw.postback_allow_private_networks.as_deref(),
                "POSTBACK_ALLOW_PRIVATE_NETWORKS",
            )?,
        };
        let secrets_keys = secrets_keys(raw.secrets_key.as_ref()).map_err(invalid("SECRETS_KEY"))?;
        let per_second = number(
            raw.rtb_rate_per_second.as_deref(),
            ("RTB_RATE_PER_SECOND", "pings a second"),
            u64::from(Rate::RTB_DEFAULT.per_second),
            1..=1_000_000,
        )?;
        let rtb_rate = Rate {
            per_second: per_second as u32,
            burst: number(
                raw.rtb_rate_burst.as_deref(),
                ("RTB_RATE_BURST", "pings"),
                u64::from(Rate::RTB_DEFAULT.burst),
                1..=1_000_000,
            )? as u32,
        };
        let log_format = match raw.log_format.as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid("LOG_FORMAT")(format!(
                    "`{other}` is neither `human` nor `json`"
                )));
            }
        };
        Ok(Self {
            database_url,
            bind,
            public_url,
            admin_token: raw.admin_token,
            supervisor_tokens,
            twilio_auth_token: raw.twilio_auth_token,
            twilio_webhook_shared_keys,
            webhook_signatures,
            log_format,
            twiml_templates_dir: raw.twiml_templates_dir,
            end_message: raw.end_message.unwrap_or_else(|| DEFAULT_END_MESSAGE.to_owned()),
            drain: std::time::Duration::from_secs(drain_seconds),
            stuck_call_after: std::time::Duration::from_secs(stuck_call_seconds),
            decision_budget: std::time::Duration::from_millis(decision_budget_ms),
            bench_floor,
            postbacks,
            outbound,
            secrets_keys,
            rtb_rate,
        })
    }
}

/// `true` or `false` (unset: `false`).
fn flag(text: Option<&str>, key: &'static str) -> Result<bool, ConfigError> {
    match text.map(str::trim) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(key)(format!("`{other}` is neither `true` nor `false`"))),
    }
}

/// Keys are separated by commas, the current one first; messages name a key by its position.
fn secrets_keys(list: Option<&SecretString>) -> Result<Vec<SecretsKey>, String> {
    let Some(list) = list else { return Ok(Vec::new()) };
    (list.expose_secret().split(','))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .enumerate()
        .map(|(position, key)| SecretsKey::parse(key).map_err(|e| format!("key {}: {e}", position + 1)))
        .collect()
}

/// A number (of `unit`s) within `range`, or `default` when unset.
fn number(
    text: Option<&str>,
    (key, unit): (&'static str, &str),
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(text) = text else { return Ok(default) };
    (text.trim().parse::<u64>().ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            invalid(key)(format!(
                "`{text}` is not a number of {unit} from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

/// The secrets webhook signatures are checked with.
#[derive(Debug, Clone)]
pub struct WebhookKeys {
    /// For webhooks without signature settings (Twilio's default).
    pub auth_token: Option<SecretString>,
    /// For webhooks a Webhook Rule signed: any of them passing is enough.
    pub shared_keys: Vec<SecretString>,
}

impl Settings {
    /// What webhooks are checked with, or `None` when checking is off by name. Only serving
    /// needs it: `migrate` and `import` run without.
    pub fn webhook_keys(&self) -> Result<Option<WebhookKeys>, ConfigError> {
        if self.webhook_signatures == WebhookSignatures::Off {
            return Ok(None);
        }
        if self.twilio_auth_token.is_none() && self.twilio_webhook_shared_keys.is_empty() {
            return Err(ConfigError::Missing {
                key: "TWILIO_AUTH_TOKEN",
                message: "webhook signatures are checked with the provider account's auth token (and, for \
                          webhooks a Webhook Rule signs, TWILIO_WEBHOOK_SHARED_KEYS); set it, or set \
                          WEBHOOK_SIGNATURES=off to take unsigned webhooks (local testing only)",
            });
        }
        Ok(Some(WebhookKeys {
            auth_token: self.twilio_auth_token.clone(),
            shared_keys: self.twilio_webhook_shared_keys.clone(),
        }))
    }
}

/// At most two secrets (the current one and the next, while rotating), comma-separated, each
/// at least 16 characters. Messages name a secret by its position, never by its value.
fn shared_keys(list: Option<&SecretString>) -> Result<Vec<SecretString>, String> {
    let Some(list) = list else { return Ok(Vec::new()) };
    let keys: Vec<&str> = (list.expose_secret().split(','))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .collect();
    if keys.len() > 2 {
        return Err(format!(
            "{} secrets given; at most two (the current one and the next)",
            keys.len()
        ));
    }
    if let Some(position) = keys.iter().position(|key| key.len() < 16) {
        return Err(format!(
            "secret {} must be at least 16 characters long",
            position + 1
        ));
    }
    Ok(keys
        .into_iter()
        .map(|key| SecretString::from(key.to_owned()))
        .collect())
}

/// Tokens are separated by commas; each is as long as an admin token must be, and none may be the
/// admin token (a supervisor's token must not open the admin API).
fn supervisor_tokens(
    list: Option<&SecretString>,
    admin: Option<&SecretString>,
) -> Result<Vec<SecretString>, String> {
    let Some(list) = list else { return Ok(Vec::new()) };
    let tokens: Vec<&str> = (list.expose_secret().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    // Messages say which token by position: the value itself is a secret.
    for (position, token) in tokens.iter().enumerate() {
        if token.len() < 16 {
            return Err(format!(
                "token {} must be at least 16 characters long",
                position + 1
            ));
        }
        if admin.is_some_and(|admin| admin.expose_secret() == *token) {
            return Err(format!(
                "token {} is the admin token; give supervisors their own",
                position + 1
            ));
        }
    }
    Ok(tokens
        .into_iter()
        .map(|t| SecretString::from(t.to_owned()))
        .collect())
}

/// A database URL; it may hold a password, so it is shown only with the password removed.
pub struct DatabaseUrl {
    url: SecretString,
    backend: Backend,
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let backend = Backend::of_url(text)
            .ok_or_else(|| "must start with sqlite: (embedded) or postgres: (shared)".to_owned())?;
        if backend == Backend::Postgres {
            Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
        }
        Ok(Self {
            url: text.to_owned().into(),
            backend,
        })
    }

    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Scheme, user, host, port and database only: a password may sit in the authority or in the
/// query (`?password=`), and neither is ever shown.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(self.expose()) {
            Ok(mut url) if url.has_host() => {
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                f.write_str(url.as_str())
            }
            // `sqlite://file.db`: a file name, no secrets; options are dropped all the same.
            _ => f.write_str(self.expose().split('?').next().unwrap_or_default()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The externally visible base URL, without a trailing slash (a path prefix is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        // The value is not repeated in messages: it could hold credentials.
        let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err("must be an http:// or https:// URL with a host".into());
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err("must not carry credentials, a query or a fragment".into());
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// For local use only: an unspecified bind address is reached through loopback.
    pub fn derived_from(bind: SocketAddr) -> Self {
        let mut address = bind;
        if address.ip().is_unspecified() {
            address.set_ip(if bind.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Self(format!("http://{address}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An absolute URL for `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn from_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_sources(None, vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn nothing_is_required() {
        let settings = from_env(&[("PATH", "/usr/bin"), ("HOME", "/root")]).unwrap();
        assert_eq!(settings.bind.to_string(), DEFAULT_BIND);
        assert_eq!(settings.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(settings.database_url.backend(), Backend::Sqlite);
        assert_eq!(settings.public_url, None);
        assert!(settings.admin_token.is_none());
        assert_eq!(settings.log_format, LogFormat::Human);
        assert_eq!(
            settings.outbound,
            OutboundRules::default(),
            "https to public addresses only"
        );
        assert!(settings.secrets_keys.is_empty());
        assert_eq!(settings.rtb_rate, Rate::RTB_DEFAULT);
    }

    #[test]
    fn secrets_keys_are_32_bytes_in_base64_current_first() {
        let current = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let former = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
        let settings = from_env(&[("SECRETS_KEY", &format!("{current}, {former}"))]).unwrap();
        let keys: Vec<u8> = settings.secrets_keys.iter().map(|key| key.0[0]).collect();
        assert_eq!(keys, [0, 32]);
        let err = from_env(&[("SECRETS_KEY", &format!("{current},AAEC"))]).unwrap_err();
        assert!(err.to_string().contains("key 2"), "{err}");
        assert!(!format!("{settings:?}").contains(current), "never shown");
    }

    #[test]
    fn the_public_url_keeps_its_path_prefix_or_is_derived_from_the_bound_address() {
        let settings = from_env(&[("PUBLIC_URL", "https://calls.example.com/sb/")]).unwrap();
        assert_eq!(
            settings.public_url.unwrap().join("/voice/incoming"),
            "https://calls.example.com/sb/voice/incoming"
        );
        let bound: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(PublicUrl::derived_from(bound).as_str(), "http://127.0.0.1:9000");
    }

    #[test]
    fn a_bad_value_is_reported_by_its_name() {
        let cases = [
            ("BIND", "localhost", "BIND is invalid"),
            ("DATABASE_URL", "mysql://db/x", "DATABASE_URL is invalid"),
            ("PUBLIC_URL", "ftp://example.com", "PUBLIC_URL is invalid"),
            ("PUBLIC_URL", "https://example.com/?a=1", "PUBLIC_URL is invalid"),
            ("ADMIN_TOKEN", "short", "ADMIN_TOKEN is invalid"),
            (
                "SUPERVISOR_TOKENS",
                "supervisor-token-0001,short",
                "SUPERVISOR_TOKENS is invalid",
            ),
            ("LOG_FORMAT", "xml", "LOG_FORMAT is invalid"),
            ("WEBHOOK_SIGNATURES", "no", "WEBHOOK_SIGNATURES is invalid"),
            ("DRAIN_SECONDS", "forever", "DRAIN_SECONDS is invalid"),
            ("DRAIN_SECONDS", "301", "DRAIN_SECONDS is invalid"),
            ("STUCK_CALL_SECONDS", "5", "STUCK_CALL_SECONDS is invalid"),
            ("DECISION_BUDGET_MS", "50", "DECISION_BUDGET_MS is invalid"),
            ("DECISION_BUDGET_MS", "5001", "DECISION_BUDGET_MS is invalid"),
            ("BENCH_FLOOR", "yes", "BENCH_FLOOR is invalid"),
            ("POSTBACK_ALLOW_HTTP", "yes", "POSTBACK_ALLOW_HTTP is invalid"),
            (
                "POSTBACK_ALLOW_PRIVATE_NETWORKS",
                "1",
                "POSTBACK_ALLOW_PRIVATE_NETWORKS is invalid",
            ),
            ("SECRETS_KEY", "c2hvcnQ=", "SECRETS_KEY is invalid"),
            ("SECRETS_KEY", "not base64!", "SECRETS_KEY is invalid"),
            ("RTB_RATE_PER_SECOND", "0", "RTB_RATE_PER_SECOND is invalid"),
        ];
        for (key, value, expected) in cases {
            let err = from_env(&[(key, value)]).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{key}={value}: {err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = from_env(&[
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            ("TWILIO_AUTH_TOKEN", "twilio-secret-abc"),
            (
                "SUPERVISOR_TOKENS",
                "supervisor-token-0001, supervisor-token-0002",
            ),
            (
                "DATABASE_URL",
                "postgres://sb:hunter2@db.internal:5433/switchboard?sslmode=require",
            ),
        ])
        .unwrap();
        let shown = format!("{settings:?} {}", settings.database_url);
        assert_eq!(settings.supervisor_tokens.len(), 2);
        for secret in [
            "admin-token-0123456789",
            "twilio-secret-abc",
            "hunter2",
            "supervisor-token-0001",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(
            shown.contains("postgres://sb@db.internal:5433/switchboard"),
            "{shown}"
        );

        let in_query = DatabaseUrl::parse("postgres://sb@db.internal/switchboard?password=s3cretpw").unwrap();
        assert_eq!(in_query.to_string(), "postgres://sb@db.internal/switchboard");
        let err = from_env(&[("PUBLIC_URL", "https://user:s3cretpw@example.com/")]).unwrap_err();
        assert!(!err.to_string().contains("s3cretpw"), "{err}");
    }

    #[test]
    fn serving_needs_the_auth_token_unless_signatures_are_off_by_name() {
        let unsigned = from_env(&[]).unwrap();
        let err = unsigned.webhook_keys().unwrap_err().to_string();
        assert!(
            err.contains("TWILIO_AUTH_TOKEN is not set") && err.contains("WEBHOOK_SIGNATURES=off"),
            "{err}"
        );
        let off = from_env(&[
            ("WEBHOOK_SIGNATURES", "off"),
            ("TWILIO_AUTH_TOKEN", "twilio-secret-abc"),
        ])
        .unwrap();
        assert!(off.webhook_keys().unwrap().is_none(), "off wins over a token");
        let checked = from_env(&[("TWILIO_AUTH_TOKEN", "twilio-secret-abc")]).unwrap();
        let keys = checked.webhook_keys().unwrap().unwrap();
        assert!(keys.auth_token.is_some() && keys.shared_keys.is_empty());
        let rules_only = from_env(&[("TWILIO_WEBHOOK_SHARED_KEYS", "shared-key-secret-0001")]).unwrap();
        let keys = rules_only.webhook_keys().unwrap().unwrap();
        assert_eq!((keys.auth_token.is_none(), keys.shared_keys.len()), (true, 1));
    }

    #[test]
    fn shared_keys_are_one_or_two_long_secrets() {
        let two = from_env(&[(
            "TWILIO_WEBHOOK_SHARED_KEYS",
            "shared-key-secret-0001, shared-key-secret-0002",
        )])
        .unwrap();
        assert_eq!(two.twilio_webhook_shared_keys.len(), 2);
        for (value, needle) in [
            (
                "a-b-c-d-e-f-g-h-i,j-k-l-m-n-o-p-q-r,s-t-u-v-w-x-y-z-0",
                "at most two",
            ),
            ("shared-key-secret-0001,short", "secret 2 must be at least 16"),
        ] {
            let err = from_env(&[("TWILIO_WEBHOOK_SHARED_KEYS", value)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("TWILIO_WEBHOOK_SHARED_KEYS") && err.contains(needle),
                "{err}"
            );
            assert!(
                !err.contains("shared-key-secret-0001"),
                "no secret in a message: {err}"
            );
        }
    }

    #[test]
    fn a_supervisor_token_cannot_be_the_admin_token() {
        let err = from_env(&[
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            (
                "SUPERVISOR_TOKENS",
                "supervisor-token-0001,admin-token-0123456789",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("token 2 is the admin token"), "{err}");
        assert!(!err.contains("admin-token-0123456789"), "{err}");
    }

    #[test]
    fn a_settings_file_is_read_and_the_environment_overrides_it() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        writeln!(file, "bind = \"127.0.0.1:7000\"\nlog_format = \"json\"").unwrap();
        let settings = Settings::from_sources(
            Some(file.path()),
            [("BIND".to_owned(), "127.0.0.1:7001".to_owned())],
        )
        .unwrap();
        assert_eq!(settings.bind.port(), 7001);
        assert_eq!(settings.log_format, LogFormat::Json);

        let mut typo = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        writeln!(typo, "bnd = \"127.0.0.1:7000\"").unwrap();
        let err = Settings::from_sources(Some(typo.path()), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnd"), "{err}");
    }
}
