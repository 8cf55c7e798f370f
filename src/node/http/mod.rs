//! The node's HTTP face: the status page at `/` (one static HTML file that
//! reads the JSON API itself and re-reads it every `http.refresh_seconds`),
//! the JSON API under `/api/` ([`api`], documented in the README), `/health`
//! (for load balancers and monitors) and `/metrics` (Prometheus text).
//!
//! Every handler does a bounded amount of work: pages of studies and jobs,
//! counts of unfinished jobs through the state index, never a scan of the
//! whole index.

mod api;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::analyze::PipelineCache;
use super::jobs::JobQueue;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::spool::Spool;

/// What the handlers read; cheap to clone (all shared).
#[derive(Clone)]
pub struct HttpState {
    cfg: Arc<Config>,
    spool: Spool,
    jobs: JobQueue,
    metrics: Arc<Metrics>,
    pipelines: Arc<PipelineCache>,
    started: Instant,
}

impl HttpState {
    pub fn new(cfg: Arc<Config>, spool: Spool, jobs: JobQueue, metrics: Arc<Metrics>, pipelines: Arc<PipelineCache>) -> HttpState {
        HttpState { cfg, spool, jobs, metrics, pipelines, started: Instant::now() }
    }

    /// Free bytes on the spool's file system and whether they are above the
    /// floor under which the SCP refuses associations.
    fn disk(&self) -> (u64, u64, bool) {
        let free = self.spool.free_bytes().unwrap_or(0);
        let floor = self.cfg.node.min_free_disk_mb * 1024 * 1024;
        (free, floor, free >= floor)
    }

    fn dead_letters(&self) -> i64 {
        self.jobs.open_counts().unwrap_or_default().iter().filter(|(_, st, _)| st == "dead").map(|(_, _, n)| n).sum()
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(api::status))
        .route("/api/studies", get(api::studies))
        .route("/api/studies/{study_uid}", get(api::study))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}/retry", post(api::retry))
        .with_state(state)
}

pub async fn serve(state: HttpState, listener: tokio::net::TcpListener) {
    // the peer address decides who may act (`http.remote_actions`)
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("HTTP server stopped: {e}");
    }
}

/// The page is static: everything on it comes from `/api/...`, so the page
/// and scripts read one source.
async fn status_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], include_str!("page.html")).into_response()
}

async fn health(State(s): State<HttpState>) -> Response {
    let (free, _, disk_ok) = s.disk();
    let body = serde_json::json!({
        "status": if disk_ok { "ok" } else { "disk_pressure" },
        "version": env!("CARGO_PKG_VERSION"),
        "ae_title": s.cfg.node.ae_title,
        "uptime_seconds": s.started.elapsed().as_secs(),
        "disk_free_mb": free / 1_048_576,
        "associations_active": s.metrics.associations_active.load(Ordering::Relaxed),
        "dead_letters": s.dead_letters(),
    });
    let code = if disk_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    let m = &s.metrics;
    let mut out = String::new();
    for c in m.counters() {
        out.push_str(&format!("# HELP ainode_{0}_total {1}\n# TYPE ainode_{0}_total counter\nainode_{0}_total {2}\n", c.name, c.help, c.value));
    }
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    out.push_str("# HELP ainode_associations_active Associations open now.\n# TYPE ainode_associations_active gauge\n");
    out.push_str(&format!("ainode_associations_active {}\n", l(&m.associations_active)));
    out.push_str("# HELP ainode_disk_free_bytes Free bytes on the spool's file system.\n# TYPE ainode_disk_free_bytes gauge\n");
    out.push_str(&format!("ainode_disk_free_bytes {}\n", s.disk().0));
    out.push_str("# HELP ainode_jobs Unfinished jobs (pending, running, retry) and dead letters by kind and state.\n# TYPE ainode_jobs gauge\n");
    for (kind, state, n) in s.jobs.open_counts().unwrap_or_default() {
        out.push_str(&format!("ainode_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
