//! Trained weights for inference: finding them, checking their metadata,
//! loading them frozen into a network, and their SHA-256 for the results.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::models::weights::{WeightsMeta, WeightsPaths};

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
