//! Per-layer timing of the CPU ops for `ainode bench cpu`: each op of
//! `blocks/` with a CPU fast path (convolution, pooling) reports its wall
//! time and floating-point operations under a key naming its kind, shape and
//! direction. Off unless a benchmark switches it on; when off, an op pays one
//! relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static STATS: Mutex<BTreeMap<String, OpStat>> = Mutex::new(BTreeMap::new());

/// What one key accumulated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpStat {
    pub calls: u64,
    pub seconds: f64,
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: f64,
}

/// Starts recording from zero (`on`), or stops.
pub fn enable(on: bool) {
    STATS.lock().expect("profile lock").clear();
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether ops should report.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Runs `f`, recording its time and `flops` under `key()` when enabled.
pub fn record<R>(key: impl FnOnce() -> String, flops: f64, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let seconds = t.elapsed().as_secs_f64();
    let mut stats = STATS.lock().expect("profile lock");
    let s = stats.entry(key()).or_default();
    s.calls += 1;
    s.seconds += seconds;
    s.flops += flops;
    r
}

/// Everything recorded since `enable(true)`, most time first.
pub fn snapshot() -> Vec<(String, OpStat)> {
    let mut v: Vec<(String, OpStat)> = STATS.lock().expect("profile lock").iter().map(|(k, s)| (k.clone(), *s)).collect();
    v.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled() {
        // one test owns the global switch (tests run in parallel threads)
        assert_eq!(record(|| "off".into(), 1.0, || 3), 3);
        enable(true);
        record(|| "a".into(), 10.0, || ());
        record(|| "a".into(), 5.0, || ());
        let snap = snapshot();
        enable(false);
        let a = snap.iter().find(|(k, _)| k == "a").expect("recorded").1;
        assert_eq!((a.calls, a.flops), (2, 15.0));
        assert!(!snap.iter().any(|(k, _)| k == "off"));
    }
}
