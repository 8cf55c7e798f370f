//! Retention: studies whose last instance is older than `retention.keep_seconds`
//! are removed from the spool (files, index rows, jobs' deliveries), swept
//! every `retention.sweep_seconds`. `keep_seconds = 0` keeps everything.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::spool::Spool;

pub async fn run_retention(cfg: Arc<Config>, spool: Spool) {
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
