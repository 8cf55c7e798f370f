//! How many CPU threads the networks use, and at what priority. candle and
//! gemm read `RAYON_NUM_THREADS` on every op; our ops run on rayon's global
//! pool; both are set here, once, before any other thread exists. In the node
//! the compute threads are niced, so that the DIMSE side (tokio's threads at
//! normal priority) still answers promptly while an analysis holds the cores.
//! Every command calls `configure` first thing (main.rs).

/// candle's setting for its barrier pool's spin before parking.
const CANDLE_SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Sets the thread count (0 = all cores) and the niceness of the compute
/// threads (0 = unchanged; Linux only, ignored elsewhere). Call once, early:
/// the environment is written and rayon's pool is built here; a second call
/// keeps the first pool.
pub fn configure(threads: usize, nice: i32) {
    let n = if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
    // set_var: called from main before the runtime or any pool starts
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    // candle's own worker pool spins 25 000 times after each op before it
    // parks: ~11 % of a 2-core training step went to that spin while our
    // rayon threads needed the core (perf). A short spin keeps its latency.
    if std::env::var_os(CANDLE_SPIN).is_none() {
        std::env::set_var(CANDLE_SPIN, "1000");
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("compute-{i}"))
        .start_handler(move |_| set_current_thread_nice(nice))
        .build_global();
}

/// Lowers the calling thread's priority by `nice` (Linux: per thread).
pub fn set_current_thread_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id; no memory is touched
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        // relative to where the thread is (a node started under `nice 5`
        // gets 15 with nice = 10), never above the lowest priority
        let target = (current_thread_nice() + nice).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, tid, target) != 0 {
            tracing::debug!("setpriority({target}) failed: {}", std::io::Error::last_os_error());
        }
    }
}

/// The calling thread's niceness (Linux; 0 elsewhere).
pub fn current_thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority reads this thread's priority
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_lower_its_own_priority() {
        let got = std::thread::spawn(|| {
            let before = current_thread_nice();
            set_current_thread_nice(3);
            (before, current_thread_nice())
        })
        .join()
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(got.1, (got.0 + 3).min(19), "{got:?}");
        }
        // the test thread itself is untouched
        assert_eq!(current_thread_nice(), got.0);
    }
}
