//! The `resource-service-example` command: serve (default) or check-config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use resource_service_example::settings::{Settings, Sources};

#[derive(Parser)]
#[command(
    version,
    about = "Example posts service that verifies every bearer token with the auth service"
)]
struct Cli {
    /// TOML configuration file (also RS_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the posts API (the default).
    Serve,
    /// Validate the configuration and print it.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match Settings::load(&Sources::process(cli.config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("resource-service-example: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            print!("{}", settings.summary());
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let result = actix_web::rt::System::new().block_on(async move {
                let server = resource_service_example::server::start(&settings)
                    .map_err(|e| e.to_string())?;
                server.await.map_err(|e| e.to_string())
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("resource-service-example: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
