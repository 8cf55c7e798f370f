//! What every pipeline returns: reports per set of sources, which
//! `encode::results` turns into SR, SEG and presentation states.

use std::path::PathBuf;

use crate::findings::{Findings, Overlay, Segmentation};

/// What a pipeline reports about a set of source instances: one image
/// (hip-tha) or one series (lung-lesions).
#[derive(Debug, Clone)]
pub struct Report {
    /// The instances the report is about (the SR's evidence, the SEG's sources).
    pub sources: Vec<PathBuf>,
    /// Becomes a TID 1500 SR.
    pub findings: Option<Findings>,
    /// Becomes a presentation state on the overlay's image.
    pub overlay: Option<Overlay>,
    /// Becomes a SEG on the sources.
    pub segmentation: Option<Segmentation>,
    /// The pipeline's own account (JSON), printed by `ainode run`.
    pub summary: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct PipelineOutput {
    pub pipeline: String,
    /// Version of the weights; enters the result UIDs.
    pub model_version: String,
    pub reports: Vec<Report>,
}
