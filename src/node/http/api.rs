//! `/api/...`: the status page's data as JSON, for the page and for
//! scripts alike (README, "HTTP API"). Errors are `{"error": "..."}` with
//! the HTTP status that says what kind (400, 403, 404, 409, 500).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::HttpState;
use crate::node::overview;

/// The job states a listing may ask for.
const JOB_STATES: [&str; 5] = ["pending", "running", "retry", "done", "dead"];

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    limit: Option<usize>,
    offset: Option<usize>,
    state: Option<String>,
}

impl PageQuery {
    /// The page asked for, at most `http.page_size` rows.
    fn page(&self, s: &HttpState) -> (usize, usize) {
        let max = s.cfg.http.page_size;
        (self.limit.unwrap_or(max).clamp(1, max), self.offset.unwrap_or(0))
    }
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Runs index queries on a blocking thread (SQLite under a mutex) and turns
/// a failure into a 500 that says what failed.
async fn blocking<T: serde::Serialize + Send + 'static>(what: &'static str, f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: index query failed: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}")),
    }
}

/// `GET /api/status`: the node, its disk and floor, open job counts,
/// counters, and whether each pipeline's weights are loaded.
pub(super) async fn status(State(s): State<HttpState>) -> Response {
    let (free, floor, disk_ok) = s.disk();
    let mut counters: serde_json::Map<String, serde_json::Value> = s.metrics.counters().into_iter().map(|c| (c.name.to_string(), c.value.into())).collect();
    counters.insert("associations_active".into(), s.metrics.associations_active.load(Ordering::Relaxed).into());
    let node = json!({
        "ae_title": s.cfg.node.ae_title,
        "version": env!("CARGO_PKG_VERSION"),
        "dimse": format!("{}:{}", s.cfg.node.bind, s.cfg.node.port),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "quiet_seconds": s.cfg.assembly.quiet_seconds,
    });
    let disk = json!({ "free_mb": free / 1_048_576, "min_free_mb": floor / 1_048_576, "ok": disk_ok });
    let page = json!({ "page_size": s.cfg.http.page_size, "refresh_seconds": s.cfg.http.refresh_seconds, "remote_actions": s.cfg.http.remote_actions });
    let pipelines = s.pipelines.status(&s.cfg);
    let jobs = s.jobs.clone();
    blocking("status", move || {
        let open: Vec<_> = jobs.open_counts()?.into_iter().map(|(kind, state, count)| json!({ "kind": kind, "state": state, "count": count })).collect();
        Ok(json!({ "node": node, "disk": disk, "counters": counters, "jobs": open, "pipelines": pipelines, "page": page }))
    })
    .await
}

/// `GET /api/studies?limit=N&offset=M`: recent studies with their state,
/// jobs and results; `more` says whether another page follows.
pub(super) async fn studies(State(s): State<HttpState>, Query(q): Query<PageQuery>) -> Response {
    let (limit, offset) = q.page(&s);
    blocking("studies", move || overview::recent_studies(&s.spool.index, &s.jobs, limit, offset)).await
}

/// `GET /api/studies/{study_uid}`.
pub(super) async fn study(State(s): State<HttpState>, Path(study_uid): Path<String>) -> Response {
    let uid = study_uid.clone();
    match tokio::task::spawn_blocking(move || overview::study(&s.spool.index, &s.jobs, &uid)).await {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("study {study_uid} is not in the index")),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("study {study_uid}: index query failed: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("study {study_uid}: {e}")),
    }
}

/// `GET /api/jobs?state=dead&limit=N&offset=M` (state defaults to dead).
pub(super) async fn jobs(State(s): State<HttpState>, Query(q): Query<PageQuery>) -> Response {
    let state = q.state.clone().unwrap_or_else(|| "dead".into());
    if !JOB_STATES.contains(&state.as_str()) {
        return error(StatusCode::BAD_REQUEST, format!("state `{state}`: one of {}", JOB_STATES.join(", ")));
    }
    let (limit, offset) = q.page(&s);
    blocking("jobs", move || {
        let mut jobs = s.jobs.in_state(&state, limit + 1, offset)?;
        let more = jobs.len() > limit;
        jobs.truncate(limit);
        Ok(json!({ "jobs": jobs, "state": state, "limit": limit, "offset": offset, "more": more }))
    })
    .await
}

/// `POST /api/jobs/{id}/retry`: a dead letter (or a job waiting to retry)
/// back in the queue with fresh attempts, as `ainode jobs retry ID`.
pub(super) async fn retry(State(s): State<HttpState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    if let Err(why) = may_act(&s, peer, &headers) {
        tracing::warn!(job = id, %peer, "retry refused: {why}");
        return error(StatusCode::FORBIDDEN, why);
    }
    let jobs = s.jobs.clone();
    let outcome = tokio::task::spawn_blocking(move || -> rusqlite::Result<Result<serde_json::Value, (StatusCode, String)>> {
        let Some(job) = jobs.job(id)? else { return Ok(Err((StatusCode::NOT_FOUND, format!("job {id} does not exist")))) };
        if !jobs.retry(id)? {
            return Ok(Err((StatusCode::CONFLICT, format!("job {id} is {}: only dead, retry or done jobs are queued again", job.state))));
        }
        tracing::info!(job = id, study_uid = %job.study_uid, kind = %job.kind, "queued again from the status page");
        Ok(Ok(json!({ "id": id, "state": "pending", "study_uid": job.study_uid })))
    })
    .await;
    match outcome {
        Ok(Ok(Ok(v))) => Json(v).into_response(),
        Ok(Ok(Err((code, msg)))) => error(code, msg),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("job {id}: index query failed: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("job {id}: {e}")),
    }
}

/// Who may act: a client on the node's own host (unless
/// `http.remote_actions`), and never a page of another origin acting
/// through the operator's browser (cross-site request forgery).
fn may_act(s: &HttpState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), String> {
    if !s.cfg.http.remote_actions && !peer.ip().is_loopback() {
        return Err(format!("actions are accepted from the node's own host only; {} is not (set http.remote_actions = true to allow)", peer.ip()));
    }
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" && site != "none" {
            return Err(format!("a {site} request may not act (Sec-Fetch-Site)"));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or_default();
        let same = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|o| o.eq_ignore_ascii_case(&host));
        if !same {
            return Err(format!("origin {origin} is not this page's ({host})"));
        }
    }
    Ok(())
}
