use std::process::ExitCode;

use clap::Parser;
use switchboard::{cli, config::Settings, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("switchboard: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    match cli::run(args.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            ExitCode::FAILURE
        }
    }
}
