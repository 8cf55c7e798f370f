//! Analysis pipelines: one file per analysis, study -> findings.
//! Rules name a pipeline with `analyze = "NAME"`; config validation accepts
//! only names listed here.

pub mod hip_geometry;

/// Names of the pipelines this build can run.
pub fn names() -> Vec<&'static str> {
    // Each analysis registers here when it lands (see MODELS.md).
    Vec::new()
}
