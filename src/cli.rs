//! The command line: `serve`, `migrate` and `import`.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    config::Settings,
    plan::{DEMO_PLAN, Plan},
    startup::Application,
    store::{Backend, ClusterStore, PlanStore, SqlStore},
};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Call controller for pay-per-call networks"
)]
pub struct Cli {
    /// A TOML settings file; environment variables override what it sets.
    #[arg(long, short, global = true, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the database up to date, then serve webhooks and the API.
    Serve {
        /// Import the demo plan (examples/demo-plan.toml) first; importing it again changes nothing.
        #[arg(long)]
        demo: bool,
    },
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Apply a plan file: create what is missing, update what changed, leave the rest alone.
    Import {
        /// The plan file (TOML).
        plan: PathBuf,
        /// Only check the plan; touch nothing.
        #[arg(long)]
        check: bool,
    },
    /// Act as the telephony provider against a running Switchboard: place calls, follow the
    /// TwiML, post the callbacks, and report what happened and how fast it answered.
    Simulate(Box<crate::simulate::Scenario>),
}

pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { demo } => serve(settings, demo).await,
        Command::Simulate(scenario) => {
            let report = crate::simulate::run(*scenario).await?;
            println!("{report}");
            if !report.succeeded() {
                anyhow::bail!(
                    "{} of {} calls failed (an error status or TwiML a provider could not follow)",
                    report.failures.len(),
                    report.calls
                );
            }
            Ok(())
        }
        Command::Migrate => {
            let store = connect(&settings).await?;
            store.close().await;
            println!("The database at {} is up to date.", settings.database_url);
            Ok(())
        }
        Command::Import { plan: path, check } => {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let plan =
                Plan::parse(&text).with_context(|| format!("{} is not a valid plan", path.display()))?;
            if check {
                println!("{} is a valid plan.", path.display());
                return Ok(());
            }
            secrets_key_for(&settings)?;
            let store = connect(&settings).await?;
            let report = store
                .import_plan(&plan)
                .await
                .with_context(|| format!("{} was not imported; nothing changed", path.display()))?;
            store.close().await;
            println!("Imported {}: {report}.", path.display());
            Ok(())
        }
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<SqlStore> {
    let store = open(settings).await?;
    migrate(settings, &store).await?;
    Ok(store)
}

/// Serving and importing store secrets. Several nodes share a PostgreSQL database, and every
/// one must read the secrets the others stored: a key of its own (as a SQLite file gets beside
/// it) would not do.
fn secrets_key_for(settings: &Settings) -> anyhow::Result<()> {
    if settings.database_url.backend() == Backend::Postgres && settings.secrets_keys.is_empty() {
        anyhow::bail!(
            "SECRETS_KEY is not set: on PostgreSQL, postback secrets and SIP passwords are stored \
             encrypted with a key every node shares; make one with `openssl rand -base64 32`"
        );
    }
    Ok(())
}

async fn open(settings: &Settings) -> anyhow::Result<SqlStore> {
    SqlStore::connect_with_keys(settings.database_url.expose(), &settings.secrets_keys)
        .await
        .with_context(|| format!("cannot open the database at {}", settings.database_url))
}

async fn migrate(settings: &Settings, store: &SqlStore) -> anyhow::Result<()> {
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database at {}", settings.database_url))
}

async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    // Before anything is touched: a server that cannot check webhooks must not start.
    let unsigned = settings.webhook_keys()?.is_none();
    secrets_key_for(&settings)?;
    let store = open(&settings).await?;
    // Before the schema is touched, too: a server on a SQLite file another serves leaves it
    // as it found it. (The application holds the same claim while it serves.)
    let sole_writer = store.claim_sole_writer()?;
    migrate(&settings, &store).await?;
    if demo {
        let plan = Plan::parse(DEMO_PLAN).context("the built-in demo plan is invalid")?;
        let report = store
            .import_plan(&plan)
            .await
            .context("cannot import the demo plan")?;
        tracing::info!(%report, "demo plan imported");
    }
    if settings.admin_token.is_none() {
        tracing::warn!("ADMIN_TOKEN is not set: the admin API refuses every change");
    }
    if settings.admin_token.is_none() && settings.supervisor_tokens.is_empty() {
        tracing::warn!(
            "neither ADMIN_TOKEN nor SUPERVISOR_TOKENS is set: the API and dashboard refuse every request"
        );
    }
    if unsigned {
        tracing::warn!(
            "WEBHOOK_SIGNATURES=off: webhooks are NOT checked; anyone who reaches this server can place and steer calls"
        );
    }
    let app = Application::build(&settings, Arc::new(store))
        .await
        .with_context(|| format!("cannot start on {}", settings.bind))?;
    drop(sole_writer);
    if settings.public_url.is_none() {
        tracing::warn!(
            public_url = %app.public_url(),
            "PUBLIC_URL is not set: using the bound address, which a telephony provider cannot reach"
        );
    }
    tracing::info!(
        database = %settings.database_url,
        public_url = %app.public_url(),
        "Switchboard listening on http://{}",
        app.address()
    );
    app.run_until_stopped()
        .await
        .context("the server stopped with an error")
}
