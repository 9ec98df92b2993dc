//! Assembles the service from its settings (storage, keys, the domain's services, the HTTP
//! routes) and runs the two listeners and the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Logger, from_fn};
use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::domain::{Services, SharedClock, SystemClock};
use crate::events::{RelayHandle, spawn_relay};
use crate::http::metrics::{Listener, count_requests};
use crate::http::{AppState, configure_internal, configure_public};
use crate::metrics::Metrics;
use crate::security::keys::Keys;
use crate::storage::{Database, claim_single_instance};

/// Why the service could not start; printed with its cause by the command line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    #[error("{0}")]
    Domain(#[from] crate::domain::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("a start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Both listeners, running.
pub struct RunningServer {
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub state: web::Data<AppState>,
    handles: Vec<ServerHandle>,
    tasks: Vec<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
    /// Tells the revocation-feed thread to end.
    stop_feed: Arc<AtomicBool>,
    /// The auth events relay, when events are on.
    relay: Option<RelayHandle>,
    /// SQLite: the lock that keeps a second server off the same file, held while running.
    _instance_lock: Option<std::fs::File>,
}

impl RunningServer {
    /// Resolves when both listeners have stopped (for instance on SIGTERM).
    pub async fn wait(self) -> std::io::Result<()> {
        for task in self.tasks {
            task.await.map_err(std::io::Error::other)??;
        }
        // Then the relay, which gives its lease up so another replica relays at once.
        if let Some(relay) = self.relay {
            relay.stop(std::time::Duration::from_secs(5)).await;
        }
        Ok(())
    }

    /// Asks both listeners to stop; returns once they have.
    pub async fn stop(&self, graceful: bool) {
        self.stop_feed.store(true, Ordering::Relaxed);
        if let Some(relay) = &self.relay {
            relay.signal_stop();
        }
        for h in &self.handles {
            h.stop(graceful).await;
        }
    }

    /// Signals both listeners to stop without waiting.
    pub fn signal_stop(&self) {
        self.stop_feed.store(true, Ordering::Relaxed);
        if let Some(relay) = &self.relay {
            relay.signal_stop();
        }
        for h in &self.handles {
            drop(h.stop(false));
        }
    }
}

/// [`start_with_clock`] with the system clock.
pub async fn start(settings: Settings) -> Result<RunningServer, StartError> {
    start_with_clock(settings, SystemClock::shared()).await
}

/// Connects to the database, applies migrations, loads keys and the revocation index, binds
/// both listeners and starts serving, every operation reading the time from `clock`. Must be
/// called inside an actix (tokio) runtime.
pub async fn start_with_clock(
    settings: Settings,
    clock: SharedClock,
) -> Result<RunningServer, StartError> {
    let (db, keys, instance_lock) = {
        let (settings, now) = (settings.clone(), clock.now());
        tokio::task::spawn_blocking(move || {
            let db = Database::connect(&settings)?;
            let instance_lock = claim_single_instance(&settings)?;
            let applied = db.migrate()?;
            if !applied.is_empty() {
                log::info!("applied migrations: {}", applied.join(", "));
            }
            let keys = Keys::load_at(&settings, now)?;
            Ok::<_, StartError>((db, keys, instance_lock))
        })
        .await??
    };
    log::info!("database backend: {}", db.backend());
    let key_clock = clock.clone();
    let metrics = Arc::new(
        Metrics::new()
            .map_err(|e| StartError::Domain(crate::domain::Error::Internal(Box::new(e))))?,
    );
    let relay_db = db.clone();
    let services = {
        let (settings, metrics) = (settings.clone(), metrics.clone());
        // Building the password hasher computes one hash: off the async workers.
        tokio::task::spawn_blocking(move || Services::new(&settings, db, keys, clock, metrics))
            .await??
    };
    let loaded = services.maintenance.sync_revocations().await?;
    log::info!("revocation index loaded: {loaded} recently revoked session(s)");

    let bind_err = |addr: SocketAddr, source: std::io::Error| StartError::Bind { addr, source };
    // Bound first, so the URLs below can name the ports the OS chose for `:0`.
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.local_addr().map(|a| (l, a)))
            .map_err(|e| bind_err(addr, e))
    };
    let (public_listener, public_addr) = bind(settings.server.public_addr)?;
    let (internal_listener, internal_addr) = bind(settings.server.internal_addr)?;
    // Where clients reach each listener: as configured (without a trailing `/`), else the
    // bound address.
    let url_of = |configured: &Option<String>, bound: std::net::SocketAddr| {
        configured.as_deref().map_or_else(
            || format!("http://{bound}"),
            |u| u.trim_end_matches('/').to_string(),
        )
    };
    let public_url = url_of(&settings.server.public_url, public_addr);
    let internal_url = url_of(&settings.server.internal_url, internal_addr);
    let openapi = crate::http::wellknown::openapi_json()
        .map_err(|e| StartError::Domain(crate::domain::Error::Internal(e.into())))?;
    let state = web::Data::new(AppState {
        services,
        metrics,
        trusted_proxies: settings.server.trusted_proxies.clone(),
        require_verify_client: settings.verify.require_client,
        discovery: crate::http::wellknown::discovery(
            &settings.tokens.issuer,
            &public_url,
            &internal_url,
        ),
        openapi,
        browser: crate::http::browser::BrowserPolicy {
            allowed_origins: settings.cors.allowed_origins.clone(),
            own_origin: crate::http::browser::BrowserPolicy::origin_of(&public_url),
            secure_cookie: settings.cookie.secure,
        },
    });

    let workers = settings
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

    let public_state = state.clone();
    let public_origins = settings.cors.allowed_origins.clone();
    let public = HttpServer::new(move || {
        App::new()
            .app_data(public_state.clone())
            .app_data(Listener("public"))
            .wrap(crate::http::browser::cors(&public_origins))
            .wrap(from_fn(crate::http::browser::cors_gate))
            .wrap(from_fn(count_requests))
            .wrap(no_store())
            // Access log: peer address, request line, status, size, time. No headers, so no
            // token or credential can reach it. /verify (internal) is not logged per call.
            .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
            .configure(configure_public)
    })
    .workers(workers)
    .listen(public_listener)
    .map_err(|e| bind_err(public_addr, e))?;

    let internal_state = state.clone();
    let internal = HttpServer::new(move || {
        App::new()
            .app_data(internal_state.clone())
            .app_data(Listener("internal"))
            .wrap(from_fn(count_requests))
            .wrap(no_store())
            .configure(configure_internal)
    })
    .workers(workers)
    .listen(internal_listener)
    .map_err(|e| bind_err(internal_addr, e))?;

    let public = public.run();
    let internal = internal.run();
    let handles = vec![public.handle(), internal.handle()];
    let tasks = vec![actix_web::rt::spawn(public), actix_web::rt::spawn(internal)];

    // Keep the revocation index current (other instances, the command line) and small.
    let sync_state = state.clone();
    let poll = settings.revocation.poll_interval.get();
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let maintenance = &sync_state.services.maintenance;
            if let Err(e) = maintenance.sync_revocations().await {
                log::warn!("revocation sync failed (index kept as is): {e}");
            }
            if let Err(e) = maintenance.forget_expired().await {
                log::warn!("forgetting expired limits failed: {e}");
            }
        }
    });
    // A key rotation (`keys rotate`, here or on another replica sharing keys.dir), re-read
    // off the async workers: a pending key verifies (and is published) from the first re-read
    // after it was written, and signs from the first re-read at or after its time by this
    // clock, though no file changes then (the signing kid differs, so that is a change too);
    // expired retired keys drop out the same way.
    {
        let (settings, key_state) = (settings.clone(), state.clone());
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (settings, now) = (settings.clone(), key_clock.now());
                let read = tokio::task::spawn_blocking(move || Keys::reload_at(&settings, now));
                match read.await {
                    Ok(Ok(keys)) => {
                        // Tokens checked with the old keys are checked again.
                        if let Some((active, accepted)) =
                            key_state.services.sessions.replace_access_keys(keys.access)
                        {
                            log::info!(
                                "access-token keys changed: signing with kid {active}; \
                                 accepting {}",
                                accepted.join(", ")
                            );
                        }
                    }
                    Ok(Err(e)) => log::warn!("re-reading the keys failed (kept as they are): {e}"),
                    Err(e) => log::warn!("re-reading the keys failed (kept as they are): {e}"),
                }
            }
        });
    }
    // Other replicas' revocations, pushed (PostgreSQL LISTEN/NOTIFY).
    let stop_feed = Arc::new(AtomicBool::new(false));
    {
        let (feed_state, stop) = (state.clone(), stop_feed.clone());
        std::thread::Builder::new()
            .name("revocation-feed".into())
            .spawn(move || feed_state.services.maintenance.follow_revocations(&stop))
            .map_err(|e| StartError::Bind {
                addr: settings.server.internal_addr,
                source: e,
            })?;
    }
    // Retention: old audit rows, expired refresh tokens, dead sessions.
    let prune_state = state.clone();
    let every = settings.retention.interval.get();
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune_state.services.maintenance.prune().await {
                Ok(p) => log::info!(
                    "pruned {} audit event(s), {} refresh token(s), {} session(s)",
                    p.audit_events,
                    p.refresh_tokens,
                    p.sessions
                ),
                Err(e) => log::warn!("pruning failed: {e}"),
            }
        }
    });

    // Auth events: the outbox to the broker, on a task of its own (the broker's trouble
    // never reaches a request).
    let relay = spawn_relay(&settings, relay_db, state.metrics.clone());

    log::info!(
        "public listener on http://{public_addr}, internal listener on http://{internal_addr}"
    );
    Ok(RunningServer {
        public_addr,
        internal_addr,
        state,
        handles,
        tasks,
        stop_feed,
        relay,
        _instance_lock: instance_lock,
    })
}

fn no_store() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::PRAGMA, "no-cache"))
}
