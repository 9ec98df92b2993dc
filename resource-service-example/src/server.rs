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
    let verify = settings.verify_client()?;
    let events = match (
        settings
            .events_config()
            .map_err(|e| SettingsError(format!("events.{e}")))?,
        verify.invalidator(),
    ) {
        (Some(config), Some(cache)) => Some(crate::events::spawn(config, cache)),
        (Some(_), None) => {
            log::warn!(
                "events.url is set but auth.cache_ttl = 0s: no cache to keep current, so no events are read"
            );
            None
        }
        (None, _) => None,
    };
    let events = events.map(web::Data::new);
    let verify = web::Data::new(verify);
    let store = web::Data::new(PostStore::default());
    let demo = web::Data::new(DemoPage::new(&settings.demo.auth_url));
    let workers = settings
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let server = HttpServer::new(move || {
        let mut app = App::new();
        if let Some(events) = &events {
            app = app.app_data(events.clone());
        }
        app.app_data(verify.clone())
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
    let ttl = humantime::format_duration(settings.cache_ttl());
    match (
        settings.cache_ttl().is_zero(),
        settings.events.url.is_some(),
    ) {
        (true, _) => {}
        (false, true) => log::info!(
            "positive /verify answers are cached for {ttl}, dropped as soon as their session ends (auth events; bypassed while not subscribed)"
        ),
        (false, false) => log::warn!(
            "positive /verify answers are cached for {ttl}: a revoked token is still accepted for up to that long"
        ),
    }
    Ok(server.run())
}
