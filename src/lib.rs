//! ainode: a DICOM node that receives studies, routes them by rule,
//! forwards them and runs analyses. See ARCHITECTURE.md for the map.

pub mod analyze;
pub mod assembly;
pub mod clock;
pub mod config;
pub mod dimse;
pub mod encode;
pub mod export;
pub mod findings;
pub mod http;
pub mod imaging;
pub mod jobs;
pub mod models;
pub mod node;
pub mod part10;
pub mod pipelines;
pub mod routing;
pub mod spool;
pub mod synth;
pub mod train;
