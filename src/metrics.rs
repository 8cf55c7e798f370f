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

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
