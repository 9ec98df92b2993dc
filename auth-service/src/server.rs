//! Assembles the service from its settings and runs the two listeners.

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{App, HttpServer, web};

use crate::db::Database;
use crate::error::Error;
use crate::http::{AppState, configure_internal, configure_public};
use crate::service::AuthService;
use crate::settings::Settings;

/// Both listeners, running.
pub struct RunningServer {
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub state: web::Data<AppState>,
    handles: Vec<ServerHandle>,
    tasks: Vec<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Resolves when both listeners have stopped (for instance on SIGTERM).
    pub async fn wait(self) -> std::io::Result<()> {
        for task in self.tasks {
            task.await.map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// Asks both listeners to stop; returns once they have.
    pub async fn stop(&self, graceful: bool) {
        for h in &self.handles {
            h.stop(graceful).await;
        }
    }

    /// Signals both listeners to stop without waiting.
    pub fn signal_stop(&self) {
        for h in &self.handles {
            drop(h.stop(false));
        }
    }
}

/// Connects to the database, applies migrations, loads keys and the revocation index, binds
/// both listeners and starts serving. Must be called inside an actix (tokio) runtime.
pub async fn start(settings: Settings) -> Result<RunningServer, Error> {
    let db = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || {
            let db = Database::connect(&settings)?;
            let applied = db.migrate()?;
            if !applied.is_empty() {
                log::info!("applied migrations: {}", applied.join(", "));
            }
            Ok::<_, Error>(db)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??
    };
    log::info!("database backend: {}", db.backend());
    let auth = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || AuthService::new(&settings, db))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    let loaded = auth.sync_revocations().await?;
    log::info!("revocation index loaded: {loaded} recently revoked session(s)");

    let state = web::Data::new(AppState {
        auth,
        trusted_proxies: settings
            .server
            .trusted_proxies()
            .map_err(|e| Error::Internal(format!("server.trusted_proxies: {e}")))?,
    });

    let bind_err =
        |addr: &str, e: std::io::Error| Error::Internal(format!("cannot listen on {addr}: {e}"));
    let workers = settings
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

    let public_state = state.clone();
    let public = HttpServer::new(move || {
        App::new()
            .app_data(public_state.clone())
            .wrap(no_store())
            // Access log: peer address, request line, status, size, time. No headers, so no
            // token or credential can reach it. /verify (internal) is not logged per call.
            .wrap(Logger::new("%a \"%r\" %s %b %Dms"))
            .configure(configure_public)
    })
    .workers(workers)
    .bind(&settings.server.public_addr)
    .map_err(|e| bind_err(&settings.server.public_addr, e))?;
    let public_addr = first_addr(&public.addrs(), &settings.server.public_addr)?;

    let internal_state = state.clone();
    let internal = HttpServer::new(move || {
        App::new()
            .app_data(internal_state.clone())
            .wrap(no_store())
            .configure(configure_internal)
    })
    .workers(workers)
    .bind(&settings.server.internal_addr)
    .map_err(|e| bind_err(&settings.server.internal_addr, e))?;
    let internal_addr = first_addr(&internal.addrs(), &settings.server.internal_addr)?;

    let public = public.run();
    let internal = internal.run();
    let handles = vec![public.handle(), internal.handle()];
    let tasks = vec![actix_web::rt::spawn(public), actix_web::rt::spawn(internal)];

    // Keep the revocation index current (other instances, the command line) and small.
    let sync_state = state.clone();
    let poll = settings.revocation.poll_interval;
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sync_state.auth.sync_revocations().await {
                log::warn!("revocation sync failed (index kept as is): {e}");
            }
            sync_state.auth.prune_memory();
        }
    });
    // Retention: old audit rows, expired refresh tokens, dead sessions.
    let prune_state = state.clone();
    let every = settings.retention.interval;
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune_state.auth.prune().await {
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

    log::info!(
        "public listener on http://{public_addr}, internal listener on http://{internal_addr}"
    );
    Ok(RunningServer {
        public_addr,
        internal_addr,
        state,
        handles,
        tasks,
    })
}

fn no_store() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::PRAGMA, "no-cache"))
}

fn first_addr(addrs: &[SocketAddr], configured: &str) -> Result<SocketAddr, Error> {
    addrs
        .first()
        .copied()
        .ok_or_else(|| Error::Internal(format!("no address bound for {configured}")))
}
