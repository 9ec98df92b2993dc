//! What the service counts, for Prometheus (`GET /metrics` on the internal listener). One
//! registry per running server, no global state; every layer may count here (like `model`,
//! it depends on nothing else in the crate). Gauges of current state (pool, queue, index,
//! cache) are read at scrape time by the HTTP layer from the domain.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Counters of the `/verify` path, resolved once: counting there is one atomic add.
pub struct HotCounters {
    pub verify_active: IntCounter,
    pub verify_expired: IntCounter,
    pub verify_revoked: IntCounter,
    pub verify_invalid: IntCounter,
    pub cache_hit: IntCounter,
    pub cache_miss: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    /// Requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency in seconds by route pattern and status.
    pub http_latency: HistogramVec,
    /// `/verify` answers: active, expired, revoked, invalid.
    pub verify_outcomes: IntCounterVec,
    /// The cache of verified tokens: hit, miss.
    pub verify_cache: IntCounterVec,
    /// Logins: ok, failed, throttled, overloaded, unavailable.
    pub logins: IntCounterVec,
    /// Refreshes: rotated, replayed, reused (a theft detected), refused.
    pub refreshes: IntCounterVec,
    /// Seconds from a revocation on another replica until it reached this one's index.
    pub revocation_feed_lag: Histogram,
    /// Current state, set at scrape time: name → value (see `http::metrics`).
    pub state: IntGaugeVec,
    pub hot: HotCounters,
    /// Auth events waiting in the outbox for the broker, as the relay last counted them.
    pub events_outbox_depth: IntGauge,
    /// Events the broker acknowledged: `stored`, or `duplicate` (it had the id already).
    pub events_published: IntCounterVec,
    /// Relay failures by stage: `connect`, `stream`, `publish`, `storage`.
    pub events_relay_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("auth".into()), None)?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let verify_outcomes = counter(
            "verify_total",
            "Access-token verifications by outcome",
            &["outcome"],
        )?;
        let verify_cache = counter(
            "verify_cache_total",
            "Lookups in the cache of verified tokens",
            &["result"],
        )?;
        let hot = HotCounters {
            verify_active: verify_outcomes.with_label_values(&["active"]),
            verify_expired: verify_outcomes.with_label_values(&["expired"]),
            verify_revoked: verify_outcomes.with_label_values(&["revoked"]),
            verify_invalid: verify_outcomes.with_label_values(&["invalid"]),
            cache_hit: verify_cache.with_label_values(&["hit"]),
            cache_miss: verify_cache.with_label_values(&["miss"]),
        };
        let m = Metrics {
            hot,
            verify_outcomes,
            verify_cache,
            http_requests: counter(
                "http_requests_total",
                "HTTP requests by route pattern, method and status",
                &["listener", "route", "method", "status"],
            )?,
            http_latency: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP request latency by route pattern and status",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["listener", "route", "status"],
            )?,
            logins: counter("logins_total", "Login attempts by outcome", &["outcome"])?,
            refreshes: counter("refreshes_total", "Refreshes by outcome", &["outcome"])?,
            revocation_feed_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "revocation_feed_lag_seconds",
                    "From a revocation on another replica until this replica applied it",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            )?,
            state: IntGaugeVec::new(
                Opts::new(
                    "state",
                    "Current state: pool connections, queue, index, cache",
                ),
                &["of"],
            )?,
            events_outbox_depth: IntGauge::new(
                "events_outbox_depth",
                "Auth events waiting in the outbox for the message broker",
            )?,
            events_published: counter(
                "events_published_total",
                "Auth events acknowledged by the message broker",
                &["result"],
            )?,
            events_relay_errors: counter(
                "events_relay_errors_total",
                "Failures of the auth events relay by stage",
                &["stage"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry.register(Box::new(m.http_latency.clone()))?;
        m.registry.register(Box::new(m.verify_outcomes.clone()))?;
        m.registry.register(Box::new(m.verify_cache.clone()))?;
        m.registry.register(Box::new(m.logins.clone()))?;
        m.registry.register(Box::new(m.refreshes.clone()))?;
        m.registry
            .register(Box::new(m.revocation_feed_lag.clone()))?;
        m.registry.register(Box::new(m.state.clone()))?;
        m.registry
            .register(Box::new(m.events_outbox_depth.clone()))?;
        m.registry.register(Box::new(m.events_published.clone()))?;
        m.registry
            .register(Box::new(m.events_relay_errors.clone()))?;
        Ok(m)
    }

    /// Counts one occurrence of `label` in `family`.
    pub fn count(family: &IntCounterVec, label: &str) {
        family.with_label_values(&[label]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::new().unwrap();
        Metrics::count(&m.logins, "ok");
        Metrics::count(&m.logins, "ok");
        m.state.with_label_values(&["db_pool_idle"]).set(3);
        let text = m.render().unwrap();
        assert!(
            text.contains("auth_logins_total{outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("auth_state{of=\"db_pool_idle\"} 3"), "{text}");
    }
}
