//! The `auth-service` command line: `serve` (the default), `migrate`, `check-config`, `user`
//! and `prune`. Operator commands work on the database directly over one connection, with
//! the same rules and audit trail as the HTTP API; a running server picks up the sessions
//! they end within `revocation.poll_interval`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::config::{Settings, Sources};
use crate::domain::{Clock, SystemClock, admin, maintenance};
use crate::security::keys::Keys;
use crate::security::passwords::Passwords;
use crate::storage::{DbConn, open_connection, run_migrations};

#[derive(Parser)]
#[command(
    version,
    about = "Token service: login, rotating refresh tokens, /verify"
)]
pub struct Cli {
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
    /// Validate the configuration and the key material, and print the configuration with
    /// secrets redacted. Writes nothing.
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

/// Parses the command line, loads the settings and runs the command. Exit codes: 0 done,
/// 1 the command failed, 2 the configuration is invalid.
pub fn main() -> ExitCode {
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
        Command::CheckConfig => match check_config(&settings) {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("auth-service: {e}");
                return ExitCode::from(2);
            }
        },
        Command::User(cmd) => user(&settings, cmd),
        Command::Prune => prune(&settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth-service: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error with its whole cause chain: on the command line there is no client to hide the
/// cause from.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

fn serve(settings: Settings) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let server = crate::server::start(settings)
            .await
            .map_err(|e| describe(&e))?;
        server.wait().await.map_err(|e| e.to_string())
    })
}

fn check_config(settings: &Settings) -> Result<(), String> {
    let keys = Keys::check(settings).map_err(|e| describe(&e))?;
    print!("{}", settings.render_redacted());
    println!("# active access-token key: kid={}", keys.access.signing.kid);
    Ok(())
}

/// One migrated connection for an operator command.
fn connect(settings: &Settings) -> Result<DbConn, String> {
    let mut conn = open_connection(settings).map_err(|e| describe(&e))?;
    run_migrations(&mut conn).map_err(|e| describe(&e))?;
    Ok(conn)
}

fn migrate(settings: &Settings) -> Result<(), String> {
    let mut conn = open_connection(settings).map_err(|e| describe(&e))?;
    let applied = run_migrations(&mut conn).map_err(|e| describe(&e))?;
    let backend = conn.backend_name();
    if applied.is_empty() {
        println!("no pending migrations ({backend})");
    } else {
        println!("applied migrations ({backend}): {}", applied.join(", "));
    }
    Ok(())
}

fn prune(settings: &Settings) -> Result<(), String> {
    let mut conn = connect(settings)?;
    let p =
        maintenance::prune_now(&mut conn, settings, SystemClock.now()).map_err(|e| describe(&e))?;
    println!(
        "pruned {} audit event(s), {} refresh token(s), {} session(s)",
        p.audit_events, p.refresh_tokens, p.sessions
    );
    Ok(())
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
                roles.push(crate::model::roles::ADMIN.into());
            }
            let password = read_password()?;
            let passwords = Passwords::new(&settings.password).map_err(|e| describe(&e))?;
            let mut conn = connect(settings)?;
            let user = maintenance::create_user(
                &mut conn,
                &passwords,
                &username,
                email.as_deref(),
                &password,
                &roles,
                SystemClock.now(),
            )
            .map_err(|e| describe(&e))?;
            println!(
                "created user {} (id {}) with roles {}",
                user.username, user.id, user.roles
            );
            Ok(())
        }
        UserCommand::GrantRole { username, role } => {
            let mut conn = connect(settings)?;
            let change =
                admin::change_role_by_login(&mut conn, &username, &role, true, SystemClock.now())
                    .map_err(|e| describe(&e))?;
            println!(
                "{} now has roles {}",
                change.after.username, change.after.roles
            );
            Ok(())
        }
        UserCommand::RevokeRole { username, role } => {
            let mut conn = connect(settings)?;
            let change =
                admin::change_role_by_login(&mut conn, &username, &role, false, SystemClock.now())
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
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    if read == 0 {
        return Err(
            "no password was given: write it as one line on standard input (or run the command \
             on a terminal to be prompted)"
                .into(),
        );
    }
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    Ok(SecretString::from(password.to_string()))
}
