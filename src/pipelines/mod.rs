//! Analysis pipelines: one file per analysis, study files -> findings and
//! overlays (no DICOM is written here; `encode::results` does that).
//! Rules name a pipeline with `analyze = "NAME"`; config validation accepts
//! only names listed in [`names`].

pub mod hip_geometry;
pub mod hip_tha;
pub mod lung_lesions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::models::weights::{WeightsMeta, WeightsPaths};

use crate::findings::{Findings, Overlay, Segmentation};

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
    #[serde(rename = "hip-tha")]
    pub hip_tha: hip_tha::HipThaSettings,
    #[serde(rename = "lung-lesions")]
    pub lung_lesions: lung_lesions::LungLesionsSettings,
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        PipelinesConfig { device: "auto".into(), hip_tha: Default::default(), lung_lesions: Default::default() }
    }
}

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

    /// Analyses the files of one study.
    pub fn analyze(&self, files: &[PathBuf]) -> anyhow::Result<PipelineOutput> {
        match self {
            Pipeline::HipTha(p) => p.analyze(files),
            Pipeline::LungLesions(p) => p.analyze(files),
        }
    }
}

/// Finds a weights prefix: as given, or relative to the crate root for a
/// binary run from elsewhere (`cargo run` in a subdirectory, tests).
pub fn resolve_weights(prefix: &Path) -> PathBuf {
    if prefix.is_absolute() || WeightsPaths::new(prefix).meta.exists() {
        return prefix.to_path_buf();
    }
    let in_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join(prefix);
    if WeightsPaths::new(&in_repo).meta.exists() {
        in_repo
    } else {
        prefix.to_path_buf()
    }
}

/// A pipeline's trained weights, checked and frozen for inference.
pub(crate) struct TrainedWeights {
    pub meta: WeightsMeta,
    /// Constant tensors by name, for `VarBuilder::from_tensors`.
    pub tensors: HashMap<String, Tensor>,
    /// SHA-256 of the tensor file (hex), recorded in the result objects.
    pub sha256: String,
}

/// The metadata of `name`'s weights at `prefix` (resolved as
/// [`resolve_weights`]); an error says how to make them.
pub(crate) fn read_weights_meta(name: &str, prefix: &Path) -> anyhow::Result<(PathBuf, WeightsMeta)> {
    let prefix = resolve_weights(prefix);
    let meta = crate::models::weights::read_meta(&prefix)
        .with_context(|| format!("{name}: no trained weights at {} (train them with `ainode train {name}`, see docs/training.md)", prefix.display()))?;
    if meta.name != name {
        bail!("{}: weights of `{}`, not {name}", prefix.display(), meta.name);
    }
    Ok((prefix, meta))
}

/// Loads the tensors at `prefix` into the network that `build` makes from a
/// `VarBuilder` (every tensor and config mismatch is listed), and returns
/// them frozen with the file's SHA-256.
pub(crate) fn load_trained(
    prefix: &Path,
    meta: WeightsMeta,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> anyhow::Result<TrainedWeights> {
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    crate::models::weights::load_weights(prefix, &varmap, &meta.architecture)?;
    let path = WeightsPaths::new(prefix).tensors;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(TrainedWeights { meta, tensors: crate::models::weights::frozen(&varmap), sha256: hex_sha256(&bytes) })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
