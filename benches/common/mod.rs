//! What the end-to-end benchmarks share: the real server on its own thread.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use switchboard::{
    config::Settings,
    plan::{DEMO_PLAN, Plan},
    startup::Application,
    store::{PlanStore, SqlStore},
};

/// The server on loopback, on its own thread and actix system, over a fresh SQLite database
/// holding the demo plan, with `settings` besides. Returns its address, its database file,
/// and the directory holding it (deleted when dropped).
#[allow(dead_code)] // Not every benchmark uses every helper.
pub fn start_server(settings: &[(&str, &str)]) -> (SocketAddr, PathBuf, tempfile::TempDir) {
    start_server_with_plan(DEMO_PLAN.to_owned(), settings)
}

/// As [`start_server`], with a plan of the benchmark's own.
pub fn start_server_with_plan(
    plan: String,
    settings: &[(&str, &str)],
) -> (SocketAddr, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("bench.db");
    let url = format!("sqlite://{}", file.display());
    let mut environment: Vec<(String, String)> = vec![("BIND".into(), "127.0.0.1:0".into())];
    environment.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let store = SqlStore::connect_and_migrate(&url).await.expect("the store");
            let plan = Plan::parse(&plan).expect("the plan");
            store.import_plan(&plan).await.expect("the plan imported");
            let settings = Settings::from_sources(None, environment).expect("settings");
            let app = Application::build(&settings, Arc::new(store))
                .await
                .expect("the server");
            sender.send(app.address()).expect("the bench is waiting");
            app.run_until_stopped().await.expect("the server runs");
        });
    });
    let address = receiver.recv().expect("the server started");
    (address, file, dir)
}
