//! Assembling the service: the store, the HTTP server and the shared state they need.

use std::{io, net::SocketAddr, sync::Arc};

use actix_web::{App, HttpServer, dev::Server, middleware::NormalizePath, web};
use tracing_actix_web::TracingLogger;

use crate::{config::Settings, http, http::auth::AdminToken, store::Store};

/// Bound and ready to serve; nothing is served until [`Application::run_until_stopped`].
pub struct Application {
    server: Server,
    address: SocketAddr,
}

impl Application {
    /// Binds `settings.bind` (port 0 picks a free port, which tests use).
    pub fn build(settings: &Settings, store: Arc<dyn Store>) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(settings.bind)?;
        let address = listener.local_addr()?;
        let store: web::Data<dyn Store> = web::Data::from(store);
        let admin_token = web::Data::new(AdminToken::new(settings.admin_token.as_ref()));
        let server = HttpServer::new(move || {
            App::new()
                // `/api/v1/buyers/` is `/api/v1/buyers`.
                .wrap(NormalizePath::trim())
                .wrap(TracingLogger::default())
                .app_data(store.clone())
                .app_data(admin_token.clone())
                .configure(http::routes)
        })
        .listen(listener)?
        // Long enough for in-flight requests, short enough for a supervisor's stop timeout.
        .shutdown_timeout(10)
        .run();
        Ok(Self { server, address })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT or SIGTERM, then finishes the requests in flight.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.server.await
    }
}
