//! `--metrics ADDR`: a small HTTP server beside the daemon's loop, serving
//! `/metrics` (Prometheus's text format), `/healthz` (the process answers)
//! and `/readyz` (it is of use: Redis reachable, heartbeats going through,
//! its modules loaded).
//!
//! Invariants: the server never touches the daemon's state; the loop
//! hands it a finished page and a verdict at every heartbeat, so a scrape
//! costs the loop nothing and never waits for it; it listens only where
//! it is told (the default in docs is loopback).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What the loop last handed over.
struct Page {
    metrics: String,
    /// `None` when ready, else why not.
    not_ready: Option<String>,
    /// When the loop last handed it over.
    updated: Instant,
    /// How long without an update makes the daemon not ready: its loop
    /// is stuck, or waits for Redis, and no heartbeat goes out.
    stale_after: Duration,
}

/// The running server; the daemon updates it at every heartbeat.
#[derive(Clone)]
pub struct Monitor {
    page: Arc<Mutex<Page>>,
    addr: SocketAddr,
}

impl Monitor {
    /// Listen on `addr` on a thread of its own. Not ready until the first
    /// [`Monitor::update`], nor once none came for `stale_after`.
    pub fn serve(addr: SocketAddr, stale_after: Duration) -> Result<Monitor> {
        let page = Arc::new(Mutex::new(Page {
            metrics: String::new(),
            not_ready: Some("starting".into()),
            updated: Instant::now(),
            stale_after,
        }));
        let std_listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(page.clone());
        std::thread::Builder::new()
            .name("garden-metrics".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => return eprintln!("metrics server not started: {e}"),
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("metrics server not started: {e}"),
                    };
                    if let Err(e) = axum::serve(listener, app).await {
                        eprintln!("metrics server stopped: {e}");
                    }
                });
            })?;
        Ok(Monitor { page, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `metrics` and `not_ready` (`None`: ready) from now on.
    pub fn update(&self, metrics: String, not_ready: Option<String>) {
        let mut page = self.page.lock().unwrap_or_else(|p| p.into_inner());
        page.metrics = metrics;
        page.not_ready = not_ready;
        page.updated = Instant::now();
    }
}

async fn metrics(State(page): State<Arc<Mutex<Page>>>) -> Response {
    let text = page
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .metrics
        .clone();
    (
        [(header::CONTENT_TYPE, garden_host::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

async fn readyz(State(page): State<Arc<Mutex<Page>>>) -> Response {
    let not_ready = {
        let page = page.lock().unwrap_or_else(|p| p.into_inner());
        let quiet = page.updated.elapsed();
        if quiet > page.stale_after {
            Some(format!(
                "no heartbeat for {:.1} s (Redis unreachable, or the daemon's loop is stuck)",
                quiet.as_secs_f64()
            ))
        } else {
            page.not_ready.clone()
        }
    };
    match not_ready {
        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
