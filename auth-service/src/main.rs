//! The `auth-service` command: serve (default), migrate, check-config, user, prune.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use auth_service::commands;
use auth_service::db::{DbConn, open_connection, run_migrations};
use auth_service::settings::{Settings, Sources};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

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
    /// Manage users directly in the database (e.g. create the first administrator).
    #[command(subcommand)]
    User(UserCommand),
    /// Delete old audit rows, expired refresh tokens and dead sessions, then exit.
    Prune,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from standard input (one line) or, on a
    /// terminal, prompted for; never from the command line.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// Also grant the admin role.
        #[arg(long)]
        admin: bool,
        /// A further role to grant (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Grant a role to a user (by username or email). Takes effect at the user's next refresh.
    GrantRole {
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
    },
    /// Remove a role from a user (by username or email); ends all of the user's sessions.
    RevokeRole {
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
    },
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
        Command::CheckConfig => match auth_service::keys::Keys::check(&settings) {
            Ok(keys) => {
                print!("{}", settings.redacted_summary());
                println!("# active access-token key: kid={}", keys.access.signing.kid);
                Ok(())
            }
            Err(e) => {
                eprintln!("auth-service: {e}");
                return ExitCode::from(2);
            }
        },
        Command::User(cmd) => user(&settings, cmd),
        Command::Prune => commands::prune(&settings)
            .map(|p| {
                println!(
                    "pruned {} audit event(s), {} refresh token(s), {} session(s)",
                    p.audit_events, p.refresh_tokens, p.sessions
                )
            })
            .map_err(|e| describe(&e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-service: {e}");
            ExitCode::FAILURE
        }
    }
}

fn user(settings: &Settings, cmd: UserCommand) -> Result<(), String> {
    match cmd {
        UserCommand::Create {
            username,
            email,
            admin,
            mut roles,
        } => {
            if admin {
                roles.push("admin".into());
            }
            let password = read_password()?;
            let user =
                commands::create_user(settings, &username, email.as_deref(), password, &roles)
                    .map_err(|e| describe(&e))?;
            println!(
                "created user {} (id {}) with roles {}",
                user.username,
                user.id,
                user.roles.join(",")
            );
            Ok(())
        }
        UserCommand::GrantRole { username, role } => {
            let change = commands::change_role(settings, &username, &role, true)
                .map_err(|e| describe(&e))?;
            println!(
                "{} now has roles {}",
                change.after.username, change.after.roles
            );
            Ok(())
        }
        UserCommand::RevokeRole { username, role } => {
            let change = commands::change_role(settings, &username, &role, false)
                .map_err(|e| describe(&e))?;
            println!(
                "{} now has roles {}; {} session(s) ended",
                change.after.username,
                change.after.roles,
                change.ended_sessions.len()
            );
            Ok(())
        }
    }
}

/// Reads a password: prompted twice without echo on a terminal, else one line of stdin.
fn read_password() -> Result<SecretString, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Repeat password: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("passwords do not match".into());
        }
        return Ok(SecretString::from(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    Ok(SecretString::from(password.to_string()))
}

fn migrate(settings: &Settings) -> Result<(), String> {
    let mut conn = open_connection(settings).map_err(|e| describe(&e))?;
    let applied = run_migrations(&mut conn).map_err(|e| describe(&e))?;
    let backend = match conn {
        DbConn::Sqlite(_) => "sqlite",
        DbConn::Pg(_) => "postgres",
    };
    if applied.is_empty() {
        println!("no pending migrations ({backend})");
    } else {
        println!("applied migrations ({backend}): {}", applied.join(", "));
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
