//! Outbound C-STORE: one worker per destination (so one association per
//! destination at a time, no retry storms), batches of instances per
//! association, per-instance delivery records so a retry or a re-trigger
//! sends only what the peer does not have yet.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn, Instrument};

use crate::config::{Config, Peer};
use crate::dimse::scu::{propose_for, Association, ScuOptions};
use crate::dimse::status::{classify_store, StoreResult};
use crate::dimse::RemoteAe;
use crate::metrics::Metrics;
use crate::node::jobs::{Job, JobQueue};
use crate::spool::index::{now_ms, StoredInstance};
use crate::spool::Index;

/// Presentation contexts per association stay well under the 128 limit.
const MAX_PAIRS_PER_ASSOCIATION: usize = 60;

pub fn scu_options(cfg: &Config) -> ScuOptions {
    ScuOptions {
        calling_ae: cfg.node.ae_title.clone(),
        connect_timeout: Duration::from_secs(cfg.export.connect_timeout_seconds),
        dimse_timeout: Duration::from_secs(cfg.export.dimse_timeout_seconds),
        max_pdu: cfg.node.max_pdu,
    }
}

/// Result of sending a list of files on as few associations as possible.
#[derive(Debug, Default)]
pub struct SendReport {
    pub sent: usize,
    pub warnings: usize,
    pub failures: Vec<String>,
    /// C-STORE round trip per instance (request sent .. response read), ms.
    pub round_trips_ms: Vec<f64>,
}

impl SendReport {
    /// The q-quantile (0..=1) of the round trips, in ms.
    pub fn round_trip_quantile(&self, q: f64) -> f64 {
        let mut v = self.round_trips_ms.clone();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

/// Splits files into batches that fit one association each.
fn batches(items: &[StoredInstance], batch_size: usize) -> Vec<&[StoredInstance]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut pairs = BTreeSet::new();
        let mut end = start;
        while end < items.len() && end - start < batch_size {
            let p = (items[end].sop_class.clone(), items[end].transfer_syntax.clone());
            if !pairs.contains(&p) && pairs.len() == MAX_PAIRS_PER_ASSOCIATION {
                break;
            }
            pairs.insert(p);
            end += 1;
        }
        out.push(&items[start..end]);
        start = end;
    }
    out
}

/// Sends instances to a peer. `on_delivered` is called after each instance
/// the peer stored (status success or warning), before the next is sent.
pub async fn send_instances(
    remote: &RemoteAe,
    opts: &ScuOptions,
    items: &[StoredInstance],
    batch_size: usize,
    mut on_delivered: impl FnMut(&StoredInstance, u16),
) -> Result<SendReport, String> {
    let mut report = SendReport::default();
    for batch in batches(items, batch_size) {
        let pairs: BTreeSet<(String, String)> = batch.iter().map(|i| (i.sop_class.clone(), i.transfer_syntax.clone())).collect();
        let mut assoc = Association::connect(remote, opts, &propose_for(&pairs)).await.map_err(|e| e.to_string())?;
        for item in batch {
            let t = std::time::Instant::now();
            let result = assoc.store_file(Path::new(&item.path)).await;
            report.round_trips_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            match result {
                Ok((st, comment)) => match classify_store(st) {
                    StoreResult::Success => {
                        on_delivered(item, st);
                        report.sent += 1;
                    }
                    StoreResult::Warning => {
                        warn!(sop_uid = %item.sop_uid, destination = %remote, "peer stored with warning {st:04X}: {}", comment.as_deref().unwrap_or(""));
                        on_delivered(item, st);
                        report.sent += 1;
                        report.warnings += 1;
                    }
                    StoreResult::Failure => {
                        report.failures.push(format!("{}: status {st:04X} {}", item.sop_uid, comment.unwrap_or_default()));
                    }
                },
                Err(e @ crate::dimse::scu::ScuError::NoContext { .. }) | Err(e @ crate::dimse::scu::ScuError::Encode { .. }) => {
                    report.failures.push(format!("{}: {e}", item.sop_uid));
                }
                Err(e) => {
                    // The association is gone; what was delivered is recorded.
                    return Err(format!("after {} of {} instances: {e}", report.sent, items.len()));
                }
            }
        }
        assoc.release().await;
    }
    Ok(report)
}

/// Runs the jobs of one destination until the process ends: `forward`
/// (the study as received) and `results` (the node's result objects).
pub async fn run_destination(cfg: Arc<Config>, index: Index, jobs: JobQueue, peer: Peer, metrics: Arc<Metrics>) {
    let span = tracing::info_span!("export", destination = %peer.name);
    async move {
        let claim = {
            let (jobs, name) = (jobs.clone(), peer.name.clone());
            move || jobs.claim_any(&["forward", "results"], &name)
        };
        crate::node::jobs::run_jobs(claim, |job| run_send_job(&cfg, &index, &jobs, &peer, job, &metrics)).await
    }
    .instrument(span)
    .await
}

/// Sends what a `forward` job (the study's instances) or a `results` job
/// (the node's result objects of the study) has not delivered yet.
async fn run_send_job(cfg: &Config, index: &Index, jobs: &JobQueue, peer: &Peer, job: Job, metrics: &Metrics) {
    let study = job.study_uid.clone();
    let items = match if job.kind == "results" { index.undelivered_results(&study, &peer.name) } else { index.undelivered(&study, &peer.name) } {
        Ok(v) => v,
        Err(e) => {
            let _ = jobs.fail(job.id, &format!("index: {e}"), 0, Some(now_ms() + 5000));
            return;
        }
    };
    let remote = RemoteAe::from(peer);
    info!(study_uid = %study, job = job.id, kind = %job.kind, attempt = job.attempts, instances = items.len(), "sending to {remote}");
    let idx = index.clone();
    let dest = peer.name.clone();
    let result = send_instances(&remote, &scu_options(cfg), &items, cfg.export.batch_size, |item, st| {
        Metrics::inc(&metrics.instances_forwarded);
        if let Err(e) = idx.mark_delivered(&item.sop_uid, &dest, st) {
            warn!(sop_uid = %item.sop_uid, "cannot record delivery: {e}");
        }
    })
    .await;
    let error = match result {
        Ok(r) if r.failures.is_empty() => {
            info!(study_uid = %study, job = job.id, kind = %job.kind, sent = r.sent, warnings = r.warnings, "sent");
            let _ = jobs.finish(job.id, items.len() as i64);
            return;
        }
        Ok(r) => format!("{} of {} instances refused; first: {}", r.failures.len(), items.len(), r.failures[0]),
        Err(e) => e,
    };
    Metrics::inc(&metrics.forward_failures);
    jobs.fail_or_retry(&job, &error, items.len() as i64, &cfg.export);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(class: &str, ts: &str) -> StoredInstance {
        StoredInstance {
            sop_uid: "1".into(),
            sop_class: class.into(),
            series_uid: "2".into(),
            study_uid: "3".into(),
            transfer_syntax: ts.into(),
            path: "/x".into(),
        }
    }

    #[test]
    fn batches_respect_size_and_context_budget() {
        let items: Vec<_> = (0..10).map(|_| inst("1.2", "1.2.840.10008.1.2")).collect();
        let b = batches(&items, 4);
        assert_eq!(b.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
        let many: Vec<_> = (0..130).map(|i| inst(&format!("1.2.{i}"), "1.2.840.10008.1.2")).collect();
        let b = batches(&many, 1000);
        assert_eq!(b.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![60, 60, 10]);
    }
}
