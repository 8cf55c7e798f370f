//! `ainode serve`: opens the spool, recovers from a crash, and runs the SCP,
//! the study assembler, the analysis worker, one export worker per peer and
//! the retention sweep.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::assembly::StudyAssembler;
use crate::config::Config;
use crate::dimse::scp::Scp;
use crate::jobs::JobQueue;
use crate::spool::Spool;

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

    let metrics = Arc::new(crate::http::Metrics::default());
    if cfg.http.enabled {
        let addr = format!("{}:{}", cfg.http.bind, cfg.http.port);
        let http = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr} (http; set http.enabled = false or another http.port)"))?;
        info!(%addr, "status page, /health and /metrics");
        tokio::spawn(crate::http::serve(cfg.clone(), spool.clone(), jobs.clone(), metrics.clone(), http));
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
        tasks.spawn(crate::export::run_destination(cfg.clone(), spool.index.clone(), jobs.clone(), peer, metrics.clone()));
    }
    if cfg.rules.iter().any(|r| r.analyze.is_some()) {
        tasks.spawn(crate::analyze::run_analysis_worker(cfg.clone(), spool.clone(), jobs.clone(), metrics.clone()));
    }
    tasks.spawn(retention(cfg.clone(), spool.clone()));

    shutdown_signal().await;
    info!("shutting down; every accepted instance and job is on disk and resumes at the next start");
    tasks.abort_all();
    Ok(())
}

async fn retention(cfg: Arc<Config>, spool: Spool) {
    let r = &cfg.retention;
    if r.keep_seconds == 0 {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(r.sweep_seconds.max(1))).await;
        let s = spool.clone();
        let keep_ms = r.keep_seconds as i64 * 1000;
        let res = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let expired = s.index.expired_studies(keep_ms)?;
            for uid in &expired {
                s.remove_study(uid)?;
                info!(study_uid = %uid, "retention: study removed from the spool");
            }
            Ok(expired.len())
        })
        .await;
        match res {
            Ok(Err(e)) => warn!("retention: {e}"),
            Err(e) => warn!("retention task: {e}"),
            _ => {}
        }
    }
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
