//! Operations endpoints: `/health` (JSON, for load balancers and monitors),
//! `/metrics` (Prometheus text format) and `/` (a small status page).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::jobs::JobQueue;
use crate::spool::Spool;

#[derive(Clone)]
struct AppState {
    cfg: Arc<Config>,
    spool: Spool,
    jobs: JobQueue,
    metrics: Arc<Metrics>,
    started: Instant,
}

pub async fn serve(cfg: Arc<Config>, spool: Spool, jobs: JobQueue, metrics: Arc<Metrics>, listener: tokio::net::TcpListener) {
    let state = AppState { cfg, spool, jobs, metrics, started: Instant::now() };
    let app = Router::new().route("/health", get(health)).route("/metrics", get(metrics_text)).route("/", get(status_page)).with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("HTTP server stopped: {e}");
    }
}

fn job_counts(jobs: &JobQueue) -> Vec<(String, String, i64)> {
    jobs.counts().unwrap_or_default()
}

async fn health(State(s): State<AppState>) -> Response {
    let free = s.spool.free_bytes().unwrap_or(0);
    let floor = s.cfg.node.min_free_disk_mb * 1024 * 1024;
    let disk_ok = free >= floor;
    let dead: i64 = job_counts(&s.jobs).iter().filter(|(_, st, _)| st == "dead").map(|(_, _, n)| n).sum();
    let body = serde_json::json!({
        "status": if disk_ok { "ok" } else { "disk_pressure" },
        "version": env!("CARGO_PKG_VERSION"),
        "ae_title": s.cfg.node.ae_title,
        "uptime_seconds": s.started.elapsed().as_secs(),
        "disk_free_mb": free / 1_048_576,
        "associations_active": s.metrics.associations_active.load(Ordering::Relaxed),
        "dead_letters": dead,
    });
    let code = if disk_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!("# HELP ainode_{name} {help}\n# TYPE ainode_{name} counter\nainode_{name} {v}\n"));
    };
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter("associations_accepted_total", "Associations accepted.", l(&m.associations_accepted));
    counter("associations_rejected_total", "Associations rejected (A-ASSOCIATE-RJ).", l(&m.associations_rejected));
    counter("associations_aborted_total", "Associations ended by an abort or a broken connection.", l(&m.associations_aborted));
    counter("instances_stored_total", "Instances stored (fsync'd and indexed).", l(&m.instances_stored));
    counter("instances_duplicate_total", "Instances received again with an already stored SOP Instance UID.", l(&m.instances_duplicate));
    counter("instances_refused_total", "C-STORE requests answered with a failure status.", l(&m.instances_refused));
    counter("received_bytes_total", "Data set bytes received.", l(&m.bytes_received));
    counter("instances_forwarded_total", "Instances delivered to a destination.", l(&m.instances_forwarded));
    counter("forward_failures_total", "Failed forward attempts.", l(&m.forward_failures));
    counter("analyses_total", "Analyze jobs finished.", l(&m.analyses_done));
    counter("analysis_failures_total", "Failed analysis attempts.", l(&m.analyses_failed));
    counter("results_written_total", "Result objects (SR, PR, SEG) written by analyses.", l(&m.results_written));
    out.push_str("# HELP ainode_associations_active Associations open now.\n# TYPE ainode_associations_active gauge\n");
    out.push_str(&format!("ainode_associations_active {}\n", l(&m.associations_active)));
    out.push_str("# HELP ainode_disk_free_bytes Free bytes on the spool's file system.\n# TYPE ainode_disk_free_bytes gauge\n");
    out.push_str(&format!("ainode_disk_free_bytes {}\n", s.spool.free_bytes().unwrap_or(0)));
    out.push_str("# HELP ainode_jobs Jobs by kind and state.\n# TYPE ainode_jobs gauge\n");
    for (kind, state, n) in job_counts(&s.jobs) {
        out.push_str(&format!("ainode_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn status_page(State(s): State<AppState>) -> Html<String> {
    let jobs = s.jobs.recent(50).unwrap_or_default();
    let mut rows = String::new();
    for j in &jobs {
        let target = if j.kind == "forward" { &j.destination } else { &j.pipeline };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            j.id,
            esc(&j.kind),
            esc(target),
            esc(&j.state),
            j.attempts,
            j.instances,
            esc(&j.study_uid),
            esc(j.last_error.as_deref().unwrap_or(""))
        ));
    }
    let m = &s.metrics;
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>ainode {ae}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}</style></head>\
         <body><h1>ainode {ae}</h1><p>version {ver} · up {up} s · {free} MB free · {act} associations open · \
         {stored} stored · {refused} refused · {fwd} forwarded</p>\
         <h2>Recent jobs</h2><table><tr><th>id</th><th>kind</th><th>target</th><th>state</th><th>attempts</th>\
         <th>instances</th><th>study</th><th>last error</th></tr>{rows}</table>\
         <p><a href=/metrics>metrics</a> · <a href=/health>health</a></p></body></html>",
        ae = esc(&s.cfg.node.ae_title),
        ver = env!("CARGO_PKG_VERSION"),
        up = s.started.elapsed().as_secs(),
        free = s.spool.free_bytes().unwrap_or(0) / 1_048_576,
        act = l(&m.associations_active),
        stored = l(&m.instances_stored),
        refused = l(&m.instances_refused),
        fwd = l(&m.instances_forwarded),
    ))
}
