//! The `user-service` command: serve (default), check-config, migrate, user create.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;
use user_service_example::domain::Registration;
use user_service_example::model::ADMIN_ROLE;
use user_service_example::settings::{Settings, Sources};

#[derive(Parser)]
#[command(
    name = "user-service",
    version,
    about = "Example user service for the auth service's remote user store"
)]
struct Cli {
    /// TOML configuration file (also USERS_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
    /// Apply pending database migrations (serve does this too).
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match Settings::load(&Sources::process(cli.config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("user-service: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => check_config(&settings),
        Command::Migrate => user_service_example::server::migrate(&settings).map(|applied| {
            if applied.is_empty() {
                println!("the database is up to date");
            } else {
                println!("applied migrations: {}", applied.join(", "));
            }
        }),
        Command::User(UserCommand::Create {
            username,
            email,
            admin,
        }) => create_user(&settings, username, email, admin),
        Command::Serve => serve(&settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("user-service: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(settings: &Settings) -> Result<(), String> {
    settings.service_credential().map_err(|e| e.to_string())?;
    print!("{}", settings.summary());
    Ok(())
}

fn serve(settings: &Settings) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let server = user_service_example::server::start(settings)?;
        server.await.map_err(|e| e.to_string())
    })
}

fn create_user(
    settings: &Settings,
    username: String,
    email: Option<String>,
    admin: bool,
) -> Result<(), String> {
    let password = read_password()?;
    user_service_example::server::migrate(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let user = runtime.block_on(async {
        let users = user_service_example::server::users(settings)?;
        let roles = if admin {
            vec![ADMIN_ROLE.to_string()]
        } else {
            Vec::new()
        };
        users
            .register(
                Registration {
                    username,
                    email,
                    password,
                },
                &roles,
            )
            .await
            .map_err(|e| user_service_example::error::cause_chain(&e))
    })?;
    println!(
        "created user {} (id {}) with roles {}",
        user.username,
        user.id,
        user.roles.join(",")
    );
    Ok(())
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
