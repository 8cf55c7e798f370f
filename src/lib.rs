//! ainode: a DICOM node that receives studies, routes them by rule,
//! forwards them and runs analyses. See ARCHITECTURE.md for the map.

pub mod clock;
pub mod config;
pub mod dicom_uids;
pub mod dimse;
pub mod encode;
pub mod findings;
pub mod imaging;
pub mod metrics;
pub mod models;
pub mod node;
pub mod part10;
pub mod pipelines;
pub mod rng;
pub mod spool;
pub mod synth;
pub mod train;

/// An error and its sources, `: `-separated. dicom-rs errors (snafu) keep
/// the cause out of their own message, so a bare `to_string` would drop it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
