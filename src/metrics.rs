//! Process-wide counters: plain atomics that the SCP, the export workers
//! and the analysis worker bump, and `/metrics` reads. Below every layer
//! that counts, so counting never imports the HTTP side.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters, shared by reference.
#[derive(Default)]
pub struct Metrics {
    pub associations_accepted: AtomicU64,
    pub associations_rejected: AtomicU64,
    pub associations_aborted: AtomicU64,
    pub associations_active: AtomicU64,
    pub instances_stored: AtomicU64,
    pub instances_duplicate: AtomicU64,
    pub instances_refused: AtomicU64,
    pub bytes_received: AtomicU64,
    pub instances_forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub analyses_done: AtomicU64,
    pub analyses_failed: AtomicU64,
    pub results_written: AtomicU64,
}

/// One counter as it is published: its name (Prometheus adds `_total`),
/// what it counts, and its value now.
pub struct CounterValue {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter, in the order `/metrics` and `/api/status` list them.
    pub fn counters(&self) -> Vec<CounterValue> {
        let c = |name, help, a: &AtomicU64| CounterValue { name, help, value: a.load(Ordering::Relaxed) };
        vec![
            c("associations_accepted", "Associations accepted.", &self.associations_accepted),
            c("associations_rejected", "Associations rejected (A-ASSOCIATE-RJ).", &self.associations_rejected),
            c("associations_aborted", "Associations ended by an abort or a broken connection.", &self.associations_aborted),
            c("instances_stored", "Instances stored (fsync'd and indexed).", &self.instances_stored),
            c("instances_duplicate", "Instances received again with an already stored SOP Instance UID.", &self.instances_duplicate),
            c("instances_refused", "C-STORE requests answered with a failure status.", &self.instances_refused),
            c("received_bytes", "Data set bytes received.", &self.bytes_received),
            c("instances_forwarded", "Instances delivered to a destination.", &self.instances_forwarded),
            c("forward_failures", "Failed forward attempts.", &self.forward_failures),
            c("analyses", "Analyze jobs finished.", &self.analyses_done),
            c("analysis_failures", "Failed analysis attempts.", &self.analyses_failed),
            c("results_written", "Result objects (SR, PR, SEG) written by analyses.", &self.results_written),
        ]
    }
}
