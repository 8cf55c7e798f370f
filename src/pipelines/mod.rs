//! Analysis pipelines: one file per analysis, study files -> findings and
//! overlays (no DICOM is written here; `encode::results` does that).
//! Rules name a pipeline with `analyze = "NAME"`; config validation accepts
//! only names listed in [`names`].

pub mod hip_geometry;
pub mod hip_tha;
pub mod lung_lesions;
mod report;
mod trained;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use report::{PipelineOutput, Report};
pub use trained::resolve_weights;

/// Names of the pipelines this build can run.
pub fn names() -> Vec<&'static str> {
    vec![hip_tha::NAME, lung_lesions::NAME]
}

/// `[pipelines]` in the node config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// auto, cpu or cuda:N (auto = the first GPU when built with CUDA, else CPU).
    pub device: String,
    /// CPU threads of the networks (0 = all cores).
    pub threads: usize,
    /// Niceness of the analysis threads (0-19): the DIMSE side keeps
    /// answering while an analysis holds the cores.
    pub nice: i32,
    #[serde(rename = "hip-tha")]
    pub hip_tha: hip_tha::HipThaSettings,
    #[serde(rename = "lung-lesions")]
    pub lung_lesions: lung_lesions::LungLesionsSettings,
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        PipelinesConfig { device: "auto".into(), threads: 0, nice: 10, hip_tha: Default::default(), lung_lesions: Default::default() }
    }
}

/// A loaded pipeline (weights in memory), ready for studies.
pub enum Pipeline {
    HipTha(hip_tha::HipThaPipeline),
    LungLesions(lung_lesions::LungLesionsPipeline),
}

impl Pipeline {
    /// Loads `name` with its settings from the config.
    pub fn load(name: &str, cfg: &PipelinesConfig) -> anyhow::Result<Pipeline> {
        let device = crate::models::device::parse_device(&cfg.device)?;
        match name {
            hip_tha::NAME => Ok(Pipeline::HipTha(hip_tha::HipThaPipeline::load(&cfg.hip_tha, &device)?)),
            lung_lesions::NAME => Ok(Pipeline::LungLesions(lung_lesions::LungLesionsPipeline::load(&cfg.lung_lesions, &device)?)),
            other => anyhow::bail!("unknown pipeline `{other}`; available: [{}]", names().join(", ")),
        }
    }

    /// Who made the results: name, weights version and SHA-256.
    pub fn algorithm(&self) -> &crate::findings::AlgorithmIdentity {
        match self {
            Pipeline::HipTha(p) => &p.algorithm,
            Pipeline::LungLesions(p) => &p.algorithm,
        }
    }

    /// Analyses the files of one study.
    pub fn analyze(&self, files: &[PathBuf]) -> anyhow::Result<PipelineOutput> {
        match self {
            Pipeline::HipTha(p) => p.analyze(files),
            Pipeline::LungLesions(p) => p.analyze(files),
        }
    }
}
