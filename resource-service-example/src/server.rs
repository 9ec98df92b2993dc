//! Assembles the posts service from its settings and runs its listener.

use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{App, HttpServer, web};

use crate::demo::DemoPage;
use crate::http::configure;
use crate::posts::PostStore;
use crate::settings::{Settings, SettingsError};

/// Binds the listener and returns the running server (await it to serve until SIGTERM).
pub fn start(settings: &Settings) -> Result<actix_web::dev::Server, SettingsError> {
    let verify = web::Data::new(settings.verify_client()?);
    let store = web::Data::new(PostStore::default());
    let demo = web::Data::new(DemoPage::new(&settings.demo.auth_url));
    let workers = settings
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(verify.clone())
            .app_data(store.clone())
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            // Peer, request line, status, size, time: no headers, so no token reaches the log.
            .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
            .configure(crate::demo::configure(demo.clone()))
            .configure(configure)
    })
    .workers(workers)
    .bind(&settings.server.addr)
    .map_err(|e| {
        SettingsError(format!(
            "server.addr: cannot listen on {}: {e}",
            settings.server.addr
        ))
    })?;
    for addr in server.addrs() {
        log::info!(
            "listening on http://{addr}, verifying tokens with {}",
            settings.auth.verify_url
        );
    }
    if !settings.auth.cache_ttl.is_zero() {
        log::warn!(
            "positive /verify answers are cached for {}: a revoked token is still accepted for up to that long",
            humantime::format_duration(settings.auth.cache_ttl)
        );
    }
    Ok(server.run())
}
