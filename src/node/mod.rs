//! The node's line, in the order data flows through it (`ainode serve`
//! wires it here): `dimse::scp` commits each instance to the `spool`, then
//!
//! 1. [`assembly`]: `StudyAssembler` decides when a study is complete;
//! 2. [`routing`]: `Router` turns its content and the rules into actions;
//! 3. [`jobs`]: `JobQueue` holds those actions durably (SQLite);
//! 4. [`analyze`]: the analysis worker runs pipelines on `analyze` jobs and
//!    queues `results` jobs;
//! 5. [`export`]: one worker per peer sends `forward` and `results` jobs;
//! 6. [`retention`]: the sweep that removes expired studies;
//!
//! and [`http`] with [`overview`]: the status page and JSON API over all of it.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub mod analyze;
pub mod assembly;
pub mod export;
pub mod http;
pub mod jobs;
pub mod overview;
pub mod retention;
pub mod routing;

use crate::config::Config;
use crate::dimse::scp::Scp;
use crate::metrics::Metrics;
use crate::spool::Spool;
use assembly::StudyAssembler;
use jobs::JobQueue;

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let spool = Spool::open(&cfg.node.data_dir, cfg.node.duplicates)?;
    let jobs = JobQueue::new(spool.index.clone());
    let recovered = spool.recover().context("recovering the spool")?;
    let resumed = jobs.resume_interrupted()?;
    if recovered + resumed > 0 {
        info!(recovered, resumed, "recovered after an unclean stop");
    }
    let addr = format!("{}:{}", cfg.node.bind, cfg.node.port);
    let listener = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    info!(
        ae_title = %cfg.node.ae_title, %addr, data_dir = %cfg.node.data_dir.display(),
        rules = cfg.rules.len(), peers = cfg.peers.len(), "ainode listening"
    );

    let metrics = Arc::new(Metrics::default());
    let pipelines = Arc::new(analyze::PipelineCache::default());
    if cfg.http.enabled {
        let addr = format!("{}:{}", cfg.http.bind, cfg.http.port);
        let http = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr} (http; set http.enabled = false or another http.port)"))?;
        info!(%addr, "status page, /api, /health and /metrics");
        let state = http::HttpState::new(cfg.clone(), spool.clone(), jobs.clone(), metrics.clone(), pipelines.clone());
        tokio::spawn(http::serve(state, http));
    }
    let scp = Scp::new(cfg.clone(), spool.clone(), metrics.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        if let Err(e) = scp.run(listener).await {
            warn!("SCP stopped: {e}");
        }
    });
    tasks.spawn(StudyAssembler::new(cfg.clone(), spool.index.clone(), jobs.clone()).run());
    for peer in cfg.peers.clone() {
        tasks.spawn(export::run_destination(cfg.clone(), spool.index.clone(), jobs.clone(), peer, metrics.clone()));
    }
    if cfg.rules.iter().any(|r| r.analyze.is_some()) {
        tasks.spawn(analyze::run_analysis_worker(cfg.clone(), spool.clone(), jobs.clone(), pipelines.clone(), metrics.clone()));
    }
    tasks.spawn(retention::run_retention(cfg.clone(), spool.clone()));

    shutdown_signal().await;
    info!("shutting down; every accepted instance and job is on disk and resumes at the next start");
    tasks.abort_all();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
