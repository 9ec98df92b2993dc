//! The `auth-service` command: serve (default), migrate, check-config.

use std::path::PathBuf;
use std::process::ExitCode;

use auth_service::db::Database;
use auth_service::settings::{Settings, Sources};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Token service: login, rotating refresh tokens, /verify"
)]
struct Cli {
    /// TOML configuration file (also AUTH_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the public and internal listeners (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match Settings::load(&Sources::process(cli.config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("auth-service: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Migrate => migrate(&settings),
        Command::CheckConfig => {
            print!("{}", settings.redacted_summary());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-service: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(settings: &Settings) -> Result<(), String> {
    let db = Database::connect(settings).map_err(|e| describe(&e))?;
    let applied = db.migrate().map_err(|e| describe(&e))?;
    if applied.is_empty() {
        println!("no pending migrations ({})", db.backend());
    } else {
        println!(
            "applied migrations ({}): {}",
            db.backend(),
            applied.join(", ")
        );
    }
    Ok(())
}

fn serve(settings: Settings) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let server = auth_service::server::start(settings)
            .await
            .map_err(|e| describe(&e))?;
        server.wait().await.map_err(|e| e.to_string())
    })
}

/// Start-up errors are printed with their cause: there is no client to hide it from.
fn describe(e: &auth_service::error::Error) -> String {
    use auth_service::error::Error;
    match e {
        Error::Internal(cause) | Error::Unavailable(cause) => cause.clone(),
        other => other.to_string(),
    }
}
