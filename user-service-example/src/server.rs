//! Assembles the service from its settings: migrations, the pool, the hashing slots, the
//! notification sender, and the listener.

use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{App, HttpServer, web};

use crate::domain::Users;
use crate::http::extract::{AdminToken, ServiceCredential};
use crate::http::{AppState, configure};
use crate::outbox::Sender;
use crate::passwords::Passwords;
use crate::settings::Settings;
use crate::storage::{Store, open_connection, run_migrations};

/// Applies pending migrations on a connection of its own; returns the versions applied.
pub fn migrate(settings: &Settings) -> Result<Vec<String>, String> {
    let mut conn = open_connection(settings)?;
    run_migrations(&mut conn)
}

/// The operations over a fresh pool and hashing slots.
pub fn users(settings: &Settings) -> Result<Users, String> {
    let store = Store::new(settings).map_err(|e| e.to_string())?;
    let passwords = Passwords::new(&settings.password)?;
    Ok(Users::new(store, passwords))
}

/// Migrates, binds the listener, starts the notification sender (when `auth.url` is set)
/// and returns the running server. Call inside the actix system; await the server to serve
/// until SIGTERM.
pub fn start(settings: &Settings) -> Result<actix_web::dev::Server, String> {
    let service = settings.service_credential().map_err(|e| e.to_string())?;
    let admin = settings.admin_token().map_err(|e| e.to_string())?;
    let applied = migrate(settings)?;
    if !applied.is_empty() {
        log::info!("applied migrations: {}", applied.join(", "));
    }
    let users = users(settings)?;
    match (
        &settings.auth.url,
        settings.auth_credential().map_err(|e| e.to_string())?,
    ) {
        (Some(url), Some(credential)) => {
            let sender = Sender::new(
                users.store().clone(),
                users.outbox_signal(),
                url,
                &credential,
                settings.auth.timeout,
                settings.auth.poll_interval,
            )?;
            actix_web::rt::spawn(sender.run());
        }
        _ => log::warn!(
            "auth.url is unset: notifications for the auth service are kept in the outbox, \
             not sent"
        ),
    }
    if admin.is_none() {
        log::info!("admin.token is unset: the admin API is off");
    }
    let state = web::Data::new(AppState {
        users,
        service: ServiceCredential::new(&service),
        admin: AdminToken::new(admin.as_deref()),
    });
    let workers = settings
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let server = HttpServer::new(move || {
        App::new()
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            // Peer, request line, status, size, time: no headers, so no credential is logged.
            .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
            .configure(configure(state.clone()))
    })
    .workers(workers)
    .bind(&settings.server.addr)
    .map_err(|e| {
        format!(
            "server.addr: cannot listen on {}: {e}",
            settings.server.addr
        )
    })?;
    for addr in server.addrs() {
        log::info!(
            "listening on http://{addr} ({} database)",
            settings.database_url().map_or("unknown", |u| u.backend())
        );
    }
    Ok(server.run())
}
