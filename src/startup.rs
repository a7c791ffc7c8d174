//! Assembling the service: the store, the live-call actors, the HTTP server and the shared
//! state they need.

use std::{collections::HashMap, io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use actix::{Addr, Arbiter, ArbiterHandle};
use actix_web::{App, HttpServer, dev::Server, web};
use tracing_actix_web::TracingLogger;

use crate::{
    calls::{CallDeps, CallTimings, Calls},
    clock::{Clock, SystemClock},
    cluster,
    config::{ConfigError, PublicUrl, Settings},
    conversions::Conversions,
    decide::{Capacity, CapacityActor, Decider, Dedupe, DedupeActor, PlanCache, PlanTimings, slots},
    domain::twiml::{TemplateError, TemplateName, Templates},
    http::{
        self,
        auth::{AccessTokens, AuthFailures},
        health::Readiness,
        rate_limit::RateLimiter,
        rtb::PingLimit,
        voice::Voice,
    },
    postbacks,
    rtb::{self, Rtb},
    store::{SoleWriter, Store, StoreError, Stores, TokenStore},
    supervision::{CloseStreams, EventHub, Supervision},
    telemetry::RequestSpans,
};

/// How long a routing plan is used before the store is asked whether it changed elsewhere.
const PLAN_MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("a TwiML template is invalid: {0}")]
    Template(#[from] TemplateError),
    #[error("cannot read the TwiML templates in {dir}: {source}")]
    TemplateDir { dir: String, source: io::Error },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Settings(#[from] ConfigError),
    #[error("cannot listen: {0}")]
    Listen(#[from] io::Error),
}

/// What tests and simulations may choose about how calls are handled.
#[derive(Clone)]
pub struct Runtime {
    pub clock: Arc<dyn Clock>,
    pub timings: CallTimings,
    /// Fixes the draws between buyers of equal priority; random by default.
    pub routing_seed: u64,
    /// Where call actors run; unset (the default), on the worker that received the call's
    /// first webhook. (Tests hold a thread of their own up.)
    pub call_actors: Option<ArbiterHandle>,
    /// How postbacks reach receivers (tests resolve names and connect their own way).
    pub postback_network: postbacks::Network,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            timings: CallTimings::default(),
            routing_seed: rand::random(),
            call_actors: None,
            postback_network: postbacks::Network::default(),
        }
    }
}

/// Bound and ready to serve; nothing is served until [`Application::run_until_stopped`].
pub struct Application {
    server: Server,
    address: SocketAddr,
    public_url: PublicUrl,
    calls: Calls,
    rtb: Rtb,
    hub: Addr<EventHub>,
    readiness: Arc<Readiness>,
    drain: Duration,
    /// The de-dupe and capacity indexes (tests hold them up).
    dedupe: Dedupe,
    capacity: Capacity,
    stopper: Stopper,
    /// Held until the server stopped and wrote what it owed (see `store::sql::sole_writer`).
    sole_writer: Option<SoleWriter>,
}

/// Stops a running [`Application`] as SIGTERM does, drain included (tests restart a server
/// this way; a process has only one SIGTERM).
#[derive(Clone, Default)]
pub struct Stopper(Arc<tokio::sync::Notify>);

impl Stopper {
    pub fn stop(&self) {
        // A permit is kept if the server is not waiting yet: a stop is never missed.
        self.0.notify_one();
    }
}

impl Application {
    /// Binds `settings.bind` (port 0 picks a free port, which tests use).
    pub async fn build(settings: &Settings, store: Arc<dyn Store>) -> Result<Self, StartupError> {
        Self::build_with(settings, Stores::of(store), Runtime::default()).await
    }

    /// With a clock, timings and routing seed of the caller's choosing (tests, simulations).
    pub async fn build_with(
        settings: &Settings,
        stores: Stores,
        runtime: Runtime,
    ) -> Result<Self, StartupError> {
        let Runtime {
            clock,
            mut timings,
            routing_seed,
            call_actors,
            postback_network,
        } = runtime;
        // Before anything is read: a second server on a SQLite file would count caps and
        // de-dupe callers apart from the first.
        let sole_writer = stores.cluster.claim_sole_writer()?;
        timings.stuck_after = settings.stuck_call_after;
        let clock = cluster::aligned(stores.cluster.clone(), clock).await?;
        let templates = load_templates(settings.twiml_templates_dir.as_deref())?;
        let listener = std::net::TcpListener::bind(settings.bind)?;
        let address = listener.local_addr()?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| PublicUrl::derived_from(address));
        // The indexes' owners take the steps callers could not take in place (see
        // `decide::owned`): on threads of their own, so that one held up holds no other.
        let index_threads = [(); 3].map(|_| Arbiter::new().handle());
        // Both read the whole call history: side by side, each on a connection of its own.
        let (dedupe, capacity) = tokio::try_join!(
            DedupeActor::load(stores.calls.as_ref()),
            CapacityActor::load(stores.capacity.as_ref(), clock.clone())
        )?;
        let dedupe = dedupe.start(&index_threads[0]);
        let capacity = capacity.start(&index_threads[1]);
        let plan_timings = PlanTimings {
            max_age: PLAN_MAX_AGE,
            // Twice at most in a call's first turn (the plan, then an unknown number's second
            // look): half the budget, the other half left for the rest of the decision.
            wait: settings.decision_budget / 4,
        };
        let plan = Arc::new(PlanCache::load(stores.plan.clone(), plan_timings).await?);
        let rtb_actors = rtb::start(stores.rtb.clone(), clock.clone(), &index_threads[2]).await?;
        let supervision = Supervision::start(clock.clone());
        let learning = cluster::Indexes {
            dedupe: dedupe.clone(),
            capacity: capacity.clone(),
            reservations: rtb_actors.reservations.clone(),
            plan: plan.clone(),
            metrics: supervision.metrics.clone(),
        };
        let rereads = cluster::Rereads {
            marks: stores.calls.clone(),
            reservations: stores.rtb.clone(),
        };
        let peers = cluster::join(stores.cluster.clone(), rereads, &public_url, learning).await?;
        plan.report_revision_to(supervision.metrics.plan_revision());
        let outbox = postbacks::start(
            stores.postbacks.clone(),
            settings.postbacks,
            (settings.outbound, postback_network),
            supervision.metrics.clone(),
            clock.clone(),
        )?;
        let decider = Decider {
            plan: plan.clone(),
            dedupe: dedupe.clone(),
            capacity: capacity.clone(),
            slots: slots::gate_for(stores.cluster.clone(), capacity.clone()),
            reservations: rtb_actors.reservations,
            payouts: stores.payouts.clone(),
            clock: clock.clone(),
            routing_seed,
            decision_budget: settings.decision_budget,
        };
        let deps = CallDeps {
            decider: decider.clone(),
            store: stores.calls.clone(),
            supervision: supervision.clone(),
            timings,
            outbox: outbox.clone(),
        };
        let rtb = Rtb::new(decider, supervision.clone(), rtb_actors.log);
        let rtb_for_http = web::Data::new(rtb.clone());
        let calls = Calls::start_placed(deps, call_actors);
        let voice = web::Data::new(Voice {
            calls: calls.clone(),
            templates,
            public_url: public_url.clone(),
            peers,
            end_message: settings.end_message.clone(),
            keys: settings.webhook_keys()?,
            floor: settings.bench_floor,
        });
        let conversions = web::Data::new(Conversions {
            store: stores.conversions.clone(),
            plan: plan.clone(),
            dedupe: dedupe.clone(),
            outbox: outbox.clone(),
            clock: clock.clone(),
        });
        let plan: web::Data<PlanCache> = web::Data::from(plan);
        let tokens = web::Data::new(AccessTokens::new(
            settings.admin_token.as_ref(),
            &settings.supervisor_tokens,
        ));
        tokens.reload(stores.tokens.as_ref()).await?;
        keep_reloading(tokens.clone().into_inner(), stores.tokens.clone());
        let capacity_for_http = web::Data::new(capacity.clone());
        let clock: web::Data<dyn Clock> = web::Data::from(clock);
        let metrics = web::Data::from(supervision.metrics.clone());
        let hub = web::Data::new(supervision.hub.clone());
        let outbox = web::Data::new(outbox);
        let readiness = Arc::new(Readiness::default());
        let readiness_for_http = web::Data::from(readiness.clone());
        let outbound = web::Data::new(settings.outbound);
        let ping_limit = web::Data::new(PingLimit(RateLimiter::new(settings.rtb_rate)));
        let auth_failures = web::Data::new(AuthFailures::new());

        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::<RequestSpans>::new())
                .app_data(web::Data::from(stores.plan.clone()))
                .app_data(web::Data::from(stores.calls.clone()))
                .app_data(web::Data::from(stores.capacity.clone()))
                .app_data(web::Data::from(stores.rtb.clone()))
                .app_data(web::Data::from(stores.supervision.clone()))
                .app_data(web::Data::from(stores.tokens.clone()))
                .app_data(web::Data::from(stores.blocked.clone()))
                .app_data(web::Data::from(stores.postbacks.clone()))
                .app_data(web::Data::from(stores.audit.clone()))
                .app_data(auth_failures.clone())
                .app_data(web::Data::from(stores.conversions.clone()))
                .app_data(conversions.clone())
                .app_data(plan.clone())
                .app_data(tokens.clone())
                .app_data(capacity_for_http.clone())
                .app_data(clock.clone())
                .app_data(metrics.clone())
                .app_data(hub.clone())
                .app_data(outbox.clone())
                .app_data(readiness_for_http.clone())
                .app_data(voice.clone())
                .app_data(rtb_for_http.clone())
                .app_data(outbound.clone())
                .app_data(ping_limit.clone())
                .configure(http::routes)
        })
        .listen(listener)?
        // Long enough for in-flight requests, short enough for a supervisor's stop timeout.
        .shutdown_timeout(10)
        // Stopping is `run_until_stopped`'s: event streams must be closed first.
        .disable_signals()
        .run();
        Ok(Self {
            server,
            address,
            public_url,
            calls,
            rtb,
            hub: supervision.hub,
            readiness,
            drain: settings.drain,
            dedupe,
            capacity,
            stopper: Stopper::default(),
            sole_writer,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL written into callbacks and used to check signatures.
    pub fn public_url(&self) -> &PublicUrl {
        &self.public_url
    }

    /// The de-dupe and capacity indexes. (Tests hold them up, to see calls answered within the
    /// decision budget without them.)
    pub fn indexes(&self) -> (Dedupe, Capacity) {
        (self.dedupe.clone(), self.capacity.clone())
    }

    /// What stops this server without a signal.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// The live calls (tests and supervisors look at them).
    pub fn calls(&self) -> Calls {
        self.calls.clone()
    }

    /// Serves until SIGINT, SIGTERM or its [`Stopper`]. Then `/readyz` fails while the server goes on serving for
    /// the drain time (load balancers send new calls elsewhere, calls in progress go on); what
    /// the store has not taken yet (call changes a database hiccup held back, RTB log lines) is
    /// written; and the requests in flight finish. Then a SQLite file is free for the next
    /// server.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let (server, hub, readiness, drain) = (self.server.handle(), self.hub, self.readiness, self.drain);
        let (calls, stopper) = (self.calls.clone(), self.stopper.clone());
        actix_web::rt::spawn(async move {
            tokio::select! {
                () = stop_signal() => {}
                () = stopper.0.notified() => {}
            }
            readiness.stopping();
            tracing::info!(
                drain_seconds = drain.as_secs(),
                "stopping: /readyz fails; serving on for the drain time"
            );
            actix_web::rt::time::sleep(drain).await;
            tracing::info!("stopping: finishing the requests in flight");
            // Supervisors' event streams never end by themselves; a stop would wait out its
            // whole timeout for them. (Their browsers reconnect to whichever node is up.)
            hub.do_send(CloseStreams);
            // While the workers, where call actors live, still run.
            calls.flush().await;
            server.stop(true).await;
        });
        let served = self.server.await;
        self.rtb.flush().await;
        drop(self.sole_writer);
        tracing::info!("stopped");
        served
    }
}

/// Follows tokens issued or revoked on other nodes (this node's own changes apply at once).
fn keep_reloading(tokens: Arc<AccessTokens>, store: Arc<dyn TokenStore>) {
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(AccessTokens::RELOAD_EVERY);
        loop {
            every.tick().await;
            if let Err(error) = tokens.reload(store.as_ref()).await {
                tracing::warn!(%error, "could not reload the API tokens; keeping the ones in hand");
            }
        }
    });
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; stop with SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The built-in templates, each replaced by a file of the same name in `dir` if there is one.
/// Any other `.xml` file there is an error: a misspelt override would otherwise be ignored.
pub fn load_templates(dir: Option<&Path>) -> Result<Templates, StartupError> {
    let Some(dir) = dir else {
        return Ok(Templates::builtin()?);
    };
    let unreadable = |source| StartupError::TemplateDir {
        dir: dir.display().to_string(),
        source,
    };
    let mut overrides = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_none_or(|ext| ext != "xml") {
            continue;
        }
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(name) = TemplateName::from_file_name(file) else {
            return Err(StartupError::Template(TemplateError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: format!(
                    "no template is called {file}; the templates are {}",
                    TemplateName::ALL.map(TemplateName::file_name).join(", ")
                ),
            }));
        };
        let text = std::fs::read_to_string(&path).map_err(unreadable)?;
        overrides.insert(name, (path.display().to_string(), text));
    }
    Ok(Templates::parse(|name| {
        overrides.remove(&name).unwrap_or_else(|| {
            (
                format!("(built in) {}", name.file_name()),
                name.builtin().to_owned(),
            )
        })
    })?)
}
