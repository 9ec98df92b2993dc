//! The `auth-service` command line: `serve` (the default), `migrate`, `check-config`, `user`,
//! `client`, `keys` and `prune`. Operator commands work on the database directly over one
//! connection, with the same rules and audit trail as the HTTP API; a running server picks up
//! the sessions they end within `revocation.poll_interval`, and a key rotation by itself at
//! the time the new key signs from.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::config::{Settings, Sources};
use crate::domain::audit::Outbox;
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
    /// Manage registered OAuth clients (resource servers, machine clients).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Rotate and list the access-token signing keys kept in keys.dir.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Publish a new access-token key (same algorithm) that signs from a few minutes on:
    /// twice revocation.poll_interval plus the JWKS max-age (300 s), so every server sharing
    /// keys.dir, and every verifier's cached key set, accepts it before any token carries it.
    /// Servers switch to it then by themselves; the old key stays published and accepted
    /// until every token it signed has expired. Refused while a rotation is pending, and
    /// when the key is configured.
    Rotate {
        /// Make the new key sign at once (one instance, or an emergency; a pending key is
        /// retired instead of signing). Servers that have not re-read keys.dir yet refuse its tokens for up to one
        /// revocation.poll_interval, and verifiers with a cached key set meet an unknown kid.
        #[arg(long)]
        now: bool,
    },
    /// List the access-token keys: kid, algorithm and state. Never prints key material.
    List,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client. Its secret is read from standard input (one line, at least 32
    /// characters); with none given (empty input, or a terminal) one is generated and
    /// printed once. Only a keyed hash of it is stored.
    Create {
        #[arg(long)]
        client_id: String,
        /// May call /oauth/introspect.
        #[arg(long)]
        introspect: bool,
        /// May use the client-credentials grant.
        #[arg(long)]
        client_credentials: bool,
        /// May use the password grant (RFC 9700 advises against it).
        #[arg(long)]
        password_grant: bool,
        /// May report user changes (a disabled user, a removed role) on
        /// /internal/user-events: the user service, with `users.source = "remote"`.
        #[arg(long)]
        user_events: bool,
        /// A scope the client-credentials grant may give it (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Read the secret from this file (surrounding whitespace dropped) instead of
        /// standard input, e.g. a Docker secret.
        #[arg(long, value_name = "PATH", conflicts_with = "secret_env")]
        secret_file: Option<std::path::PathBuf>,
        /// Read the secret from this environment variable instead of standard input (for
        /// provisioning, e.g. a docker-compose one-shot service).
        #[arg(long, value_name = "NAME")]
        secret_env: Option<String>,
        /// If the client id is taken, give that client this secret, these permissions and
        /// scopes instead of failing: running the command again converges.
        #[arg(long)]
        update_existing: bool,
    },
    /// List the registered clients and what each may do.
    List,
    /// Remove a client; running servers refuse it within seconds.
    Delete { client_id: String },
    /// Give a client a new secret (from standard input, or generated and printed).
    RotateSecret { client_id: String },
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
        Command::Client(cmd) => client(&settings, cmd),
        Command::Keys(cmd) => keys(&settings, cmd),
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
    if settings.users.source == crate::config::UserSource::Remote {
        return Err(
            "users.source is \"remote\": users are created and changed at the user service".into(),
        );
    }
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
            let account = maintenance::NewAccount {
                username: &username,
                email: email.as_deref(),
                password: &password,
                extra_roles: &roles,
            };
            let user = maintenance::create_user(
                &mut conn,
                &passwords,
                &account,
                SystemClock.now(),
                Outbox::for_settings(settings),
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
            let change = admin::change_role_by_login(
                &mut conn,
                &username,
                &role,
                true,
                SystemClock.now(),
                Outbox::for_settings(settings),
            )
            .map_err(|e| describe(&e))?;
            println!(
                "{} now has roles {}",
                change.after.username, change.after.roles
            );
            Ok(())
        }
        UserCommand::RevokeRole { username, role } => {
            let mut conn = connect(settings)?;
            let change = admin::change_role_by_login(
                &mut conn,
                &username,
                &role,
                false,
                SystemClock.now(),
                Outbox::for_settings(settings),
            )
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

fn keys(settings: &Settings, cmd: KeysCommand) -> Result<(), String> {
    use crate::security::keys::{self, Activation, KeyState};
    let now = SystemClock.now();
    match cmd {
        KeysCommand::Rotate { now: at_once } => {
            let activation = if at_once {
                Activation::Now
            } else {
                Activation::Scheduled
            };
            let r = keys::rotate(settings, now, activation).map_err(|e| describe(&e))?;
            for kid in &r.committed {
                println!("completed the rotation to kid={kid}: its time had come");
            }
            let (alg, dir) = (r.algorithm.as_str(), settings.keys_dir());
            let poll = humantime::format_duration(settings.revocation.poll_interval.get());
            if r.signs_from > now {
                let wait = std::time::Duration::from_secs(r.signs_from.abs_diff(now));
                println!(
                    "pending access-token key: kid={} ({alg}), published now, signs from {} (in {})",
                    r.new_kid,
                    format_time(r.signs_from),
                    humantime::format_duration(wait)
                );
                if let Some((kid, until)) = &r.retired {
                    println!(
                        "then it retires kid={kid}: still published and accepted until {}",
                        format_time(*until)
                    );
                }
                println!(
                    "running servers sharing {} accept it within {poll} and switch to it by \
                     themselves at that time; nothing more to run",
                    dir.display()
                );
            } else {
                println!("new active access-token key: kid={} ({alg})", r.new_kid);
                match &r.retired {
                    Some((kid, until)) => println!(
                        "retired kid={kid}: still published and accepted until {}",
                        format_time(*until)
                    ),
                    None => println!("there was no key before: nothing retired"),
                }
                for kid in &r.discarded {
                    // Retired with the old key, at the same moment: the same window.
                    match &r.retired {
                        Some((_, until)) => println!(
                            "pending kid={kid} will not sign: retired instead, still accepted \
                             until {} (in case a replica with a clock ahead began)",
                            format_time(*until)
                        ),
                        None => println!("pending kid={kid} will not sign: retired instead"),
                    }
                }
                if r.retired.is_some() {
                    println!(
                        "running servers sharing {} switch within {poll}; until then one that has \
                         not re-read the directory refuses tokens signed with the new key",
                        dir.display()
                    );
                }
            }
            for kid in r.dropped {
                println!("dropped expired kid={kid}");
            }
        }
        KeysCommand::List => {
            for key in keys::list(settings, now).map_err(|e| describe(&e))? {
                let state = match key.state {
                    KeyState::Active => "active".to_string(),
                    KeyState::Pending { from } => {
                        format!("pending, signs from {}", format_time(from))
                    }
                    KeyState::Retired { until } => format!("retired until {}", format_time(until)),
                    KeyState::Expired { since } => format!("expired since {}", format_time(since)),
                    KeyState::Configured => "accepted (keys.verification_keys)".to_string(),
                    KeyState::Unreadable(why) => format!("unreadable, ignored ({why})"),
                };
                println!("{}\t{}\t{state}", key.kid, key.algorithm.as_str());
            }
        }
    }
    Ok(())
}

/// Unix seconds as RFC 3339 (UTC).
fn format_time(unix: i64) -> String {
    crate::security::keys::rfc3339(unix)
}

fn client(settings: &Settings, cmd: ClientCommand) -> Result<(), String> {
    use crate::domain::clients::{self, Permissions};
    let secrets = || {
        Keys::load(settings)
            .map(|k| k.client_secrets)
            .map_err(|e| describe(&e))
    };
    let show = |generated: Option<SecretString>| {
        if let Some(secret) = generated {
            println!(
                "secret (shown once): {}",
                secrecy::ExposeSecret::expose_secret(&secret)
            );
        }
    };
    match cmd {
        ClientCommand::Create {
            client_id,
            introspect,
            client_credentials,
            password_grant,
            user_events,
            scopes,
            secret_file,
            secret_env,
            update_existing,
        } => {
            let given = match (secret_file, secret_env) {
                (Some(path), _) => Some(read_secret_file(&path)?),
                (None, Some(name)) => Some(read_secret_env(&name)?),
                (None, None) => read_client_secret()?,
            };
            if user_events && settings.users.source != crate::config::UserSource::Remote {
                eprintln!(
                    "note: users.source is \"local\" in these settings; the service accepts user reports only with users.source = \"remote\""
                );
            }
            let secrets = secrets()?;
            let mut conn = connect(settings)?;
            let permissions = Permissions {
                introspect,
                client_credentials,
                password: password_grant,
                user_events,
            };
            let registered = clients::create_client(
                &mut conn,
                &secrets,
                clients::NewClient {
                    client_id: &client_id,
                    secret: given,
                    permissions,
                    scopes: &scopes,
                    update_existing,
                },
                SystemClock.now(),
            )
            .map_err(|e| describe(&e))?;
            let (client, generated, created) =
                (registered.client, registered.generated, registered.created);
            let verb = if created { "created" } else { "updated" };
            println!("{verb} client {}", describe_client(&client));
            show(generated);
        }
        ClientCommand::List => {
            let mut conn = connect(settings)?;
            for client in clients::list_clients(&mut conn).map_err(|e| describe(&e))? {
                println!("{}", describe_client(&client));
            }
        }
        ClientCommand::Delete { client_id } => {
            let mut conn = connect(settings)?;
            clients::delete_client(&mut conn, &client_id).map_err(|e| describe(&e))?;
            println!("deleted client {client_id}");
        }
        ClientCommand::RotateSecret { client_id } => {
            let given = read_client_secret()?;
            let secrets = secrets()?;
            let mut conn = connect(settings)?;
            let generated = clients::rotate_client_secret(
                &mut conn,
                &secrets,
                &client_id,
                given,
                SystemClock.now(),
            )
            .map_err(|e| describe(&e))?;
            println!("client {client_id} has a new secret");
            show(generated);
        }
    }
    Ok(())
}

fn describe_client(c: &crate::domain::clients::Client) -> String {
    let mut may = Vec::new();
    if c.can_introspect {
        may.push("introspect");
    }
    if c.can_client_credentials {
        may.push("client_credentials");
    }
    if c.can_password {
        may.push("password grant");
    }
    if c.can_user_events {
        may.push("user events");
    }
    let may = if may.is_empty() {
        "refresh and revoke only".to_string()
    } else {
        may.join(", ")
    };
    if c.scopes.is_empty() {
        format!("{} (may: {may})", c.client_id)
    } else {
        format!(
            "{} (may: {may}; scopes: {})",
            c.client_id,
            c.scopes.join(" ")
        )
    }
}

/// A client secret from standard input, or `None` (generate one) when stdin is a terminal
/// or empty.
/// A client secret kept in a file; an empty file is an error, not "generate one".
fn read_secret_file(path: &std::path::Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("the secret file {} is empty", path.display()));
    }
    Ok(SecretString::from(secret.to_string()))
}

/// A client secret in an environment variable; unset or empty is an error.
fn read_secret_env(name: &str) -> Result<SecretString, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
        Ok(_) => Err(format!("the environment variable {name} is empty")),
        Err(_) => Err(format!(
            "the environment variable {name} is not set (or not UTF-8)"
        )),
    }
}

fn read_client_secret() -> Result<Option<SecretString>, String> {
    if std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the secret from standard input: {e}"))?;
    let secret = line.trim_end_matches(['\n', '\r']);
    Ok((!secret.is_empty()).then(|| SecretString::from(secret.to_string())))
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
