//! The weights format: `weights/NAME.safetensors` (tensors, f32 or f16
//! storage), `NAME.json` (architecture config, class/landmark names,
//! preprocessing constants, version, training data hash, date) and `NAME.md`
//! (model card, rendered as a skeleton from the run and completed by a human).
//!
//! Loading never trusts the file: the caller builds the network from its
//! config on a fresh `VarMap`, and the file must hold exactly those tensors
//! with those shapes, and its JSON the same architecture config; otherwise
//! the error lists every difference (not just the first), since a model that
//! loads "mostly" is the worst outcome.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Version of the layout of `NAME.json` (bumped when its fields change meaning).
pub const FORMAT_VERSION: u32 = 1;

/// Element type of the tensors in `NAME.safetensors`. Loading converts to the
/// working dtype of the model, whatever the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDtype {
    F32,
    F16,
}

impl StorageDtype {
    pub fn dtype(self) -> DType {
        match self {
            StorageDtype::F32 => DType::F32,
            StorageDtype::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for StorageDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(StorageDtype::F32),
            "f16" => Ok(StorageDtype::F16),
            _ => Err(format!("storage dtype `{s}`: expected f32 or f16")),
        }
    }
}

/// Contents of `NAME.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsMeta {
    pub format_version: u32,
    /// Registry name of the model (`ainode train NAME`).
    pub name: String,
    /// Version of these weights (enters result UIDs and the SR's algorithm identity).
    pub model_version: String,
    /// The network's config struct as JSON; loading compares it field by field.
    pub architecture: Value,
    #[serde(default)]
    pub class_names: Vec<String>,
    #[serde(default)]
    pub landmark_names: Vec<String>,
    /// Constants inference must repeat (spacing, window, mean/std, input size...).
    #[serde(default)]
    pub preprocessing: Value,
    /// `training_data_hash` of the files the weights were trained on.
    pub training_data_hash: String,
    /// UTC, ISO 8601.
    pub created: String,
    pub storage_dtype: StorageDtype,
}

/// The three files of one set of weights, from the prefix `weights/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsPaths {
    pub tensors: PathBuf,
    pub meta: PathBuf,
    pub card: PathBuf,
}

impl WeightsPaths {
    /// `prefix` is `DIR/NAME`; a trailing `.safetensors` / `.json` / `.md` is ignored,
    /// so any of the three files may be given.
    pub fn new(prefix: &Path) -> Self {
        let s = prefix.to_string_lossy();
        let base = [".safetensors", ".json", ".md"].iter().find_map(|e| s.strip_suffix(e)).unwrap_or(&s).to_string();
        WeightsPaths {
            tensors: PathBuf::from(format!("{base}.safetensors")),
            meta: PathBuf::from(format!("{base}.json")),
            card: PathBuf::from(format!("{base}.md")),
        }
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one,
/// never a part: temporary file in the same folder, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// `candle_core::safetensors::save`, made atomic like `write_atomic`.
pub fn save_tensors_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let res = (|| -> anyhow::Result<()> {
        candle_core::safetensors::save(tensors, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path)?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// fsync the folder holding `path`, so that a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => File::open(p)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Name → shape of every variable of `varmap` (the model's expected tensors,
/// when the model was just built from its config on this fresh map).
pub fn expected_tensors(varmap: &VarMap) -> BTreeMap<String, Vec<usize>> {
    varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
}

/// Differences between the tensors a model expects and those a file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorMismatch {
    /// Expected by the model, absent from the file: (name, expected shape).
    pub missing: Vec<(String, Vec<usize>)>,
    /// In the file, unknown to the model: (name, shape in file).
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// (name, expected shape, shape in file).
    pub shape_differs: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl TensorMismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_differs.is_empty()
    }
}

pub fn compare_tensors(expected: &BTreeMap<String, Vec<usize>>, found: &BTreeMap<String, Vec<usize>>) -> TensorMismatch {
    let mut m = TensorMismatch::default();
    for (name, shape) in expected {
        match found.get(name) {
            None => m.missing.push((name.clone(), shape.clone())),
            Some(f) if f != shape => m.shape_differs.push((name.clone(), shape.clone(), f.clone())),
            Some(_) => {}
        }
    }
    for (name, shape) in found {
        if !expected.contains_key(name) {
            m.unexpected.push((name.clone(), shape.clone()));
        }
    }
    m
}

/// One field where the file's architecture config differs from the caller's.
/// `None` = the field is absent on that side.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDiff {
    /// JSON path, e.g. `stages[2].filters`.
    pub path: String,
    pub expected: Option<Value>,
    pub found: Option<Value>,
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
        write!(f, "{}: expected {}, found {}", if self.path.is_empty() { "(root)" } else { &self.path }, show(&self.expected), show(&self.found))
    }
}

/// Field-by-field comparison of two JSON configs (objects recursively,
/// arrays element-wise when their lengths agree). Numbers compare by value,
/// so `1` equals `1.0`.
pub fn compare_config(expected: &Value, found: &Value) -> Vec<ConfigDiff> {
    let mut out = Vec::new();
    diff_into("", expected, found, &mut out);
    out
}

fn diff_into(path: &str, e: &Value, f: &Value, out: &mut Vec<ConfigDiff>) {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (e, f) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_into(&join(k), x, y, out),
                    (x, y) => out.push(ConfigDiff { path: join(k), expected: x.cloned(), found: y.cloned() }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_into(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        _ if e == f => {}
        _ => out.push(ConfigDiff { path: path.to_string(), expected: Some(e.clone()), found: Some(f.clone()) }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{}", mismatch_message(.path, .config, .tensors))]
    Mismatch { path: PathBuf, config: Vec<ConfigDiff>, tensors: TensorMismatch },
}

fn shape_str(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

fn mismatch_message(path: &Path, config: &[ConfigDiff], t: &TensorMismatch) -> String {
    let mut s = format!("{} does not fit the model built from the config:", path.display());
    for d in config {
        s += &format!("\n  config {d}");
    }
    for (n, sh) in &t.missing {
        s += &format!("\n  missing tensor {n} {}", shape_str(sh));
    }
    for (n, sh) in &t.unexpected {
        s += &format!("\n  unexpected tensor {n} {}", shape_str(sh));
    }
    for (n, e, f) in &t.shape_differs {
        s += &format!("\n  tensor {n}: expected shape {}, found {}", shape_str(e), shape_str(f));
    }
    s
}

/// Reads `NAME.json`.
pub fn read_meta(prefix: &Path) -> Result<WeightsMeta, WeightsError> {
    let path = WeightsPaths::new(prefix).meta;
    let text = std::fs::read_to_string(&path).map_err(|error| WeightsError::Io { path: path.clone(), error })?;
    let meta: WeightsMeta = serde_json::from_str(&text).map_err(|e| WeightsError::Format { path: path.clone(), msg: e.to_string() })?;
    if meta.format_version > FORMAT_VERSION {
        return Err(WeightsError::Format { path, msg: format!("format_version {} is newer than this program's {FORMAT_VERSION}", meta.format_version) });
    }
    Ok(meta)
}

/// Writes the tensors of `varmap` (converted to `meta.storage_dtype`) and
/// `NAME.json`, each atomically. The model card is written separately
/// (`render_model_card` + `write_atomic`), since it needs the test metrics.
pub fn save_weights(varmap: &VarMap, meta: &WeightsMeta, prefix: &Path) -> anyhow::Result<WeightsPaths> {
    let paths = WeightsPaths::new(prefix);
    if let Some(dir) = paths.tensors.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tensors = varmap_tensors(varmap, Some(meta.storage_dtype.dtype()))?;
    save_tensors_atomic(&tensors, &paths.tensors)?;
    let json = serde_json::to_string_pretty(meta)? + "\n";
    write_atomic(&paths.meta, json.as_bytes()).with_context(|| format!("writing {}", paths.meta.display()))?;
    Ok(paths)
}

/// Loads weights into the variables of `varmap`, a map on which the caller
/// has just built the model from `architecture`. Checks the file's
/// architecture config and tensor names/shapes first and reports every
/// mismatch; only a file that fits exactly is loaded. Tensors are converted
/// to each variable's dtype and device.
pub fn load_weights(prefix: &Path, varmap: &VarMap, architecture: &Value) -> Result<WeightsMeta, WeightsError> {
    let paths = WeightsPaths::new(prefix);
    let meta = read_meta(prefix)?;
    let config = compare_config(architecture, &meta.architecture);
    load_checked(&paths.tensors, varmap, config)?;
    Ok(meta)
}

/// The variables of `varmap` as constants (detached from any gradient), for
/// a model that only infers: rebuilt on `VarBuilder::from_tensors(frozen(..))`,
/// its forward pass records no backward graph (nothing keeps activations alive,
/// and `blocks::conv` runs its op without a backward).
pub fn frozen(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
}

/// Loads a safetensors file into the variables of `varmap` after checking
/// that it holds exactly the expected names and shapes (used for training
/// checkpoints, which carry no `NAME.json`).
pub fn load_tensors_into(path: &Path, varmap: &VarMap) -> Result<(), WeightsError> {
    load_checked(path, varmap, Vec::new())
}

fn load_checked(path: &Path, varmap: &VarMap, config: Vec<ConfigDiff>) -> Result<(), WeightsError> {
    let bytes = std::fs::read(path).map_err(|error| WeightsError::Io { path: path.to_path_buf(), error })?;
    let file =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| WeightsError::Format { path: path.to_path_buf(), msg: e.to_string() })?;
    let found: BTreeMap<String, Vec<usize>> = file.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
    let tensors = compare_tensors(&expected_tensors(varmap), &found);
    if !config.is_empty() || !tensors.is_empty() {
        return Err(WeightsError::Mismatch { path: path.to_path_buf(), config, tensors });
    }
    let data = varmap.data().lock().unwrap();
    for (name, var) in data.iter() {
        let set = || -> candle_core::Result<()> { var.set(&file[name].to_dtype(var.dtype())?.to_device(var.device())?) };
        set().map_err(|e| WeightsError::Format { path: path.to_path_buf(), msg: format!("tensor {name}: {e}") })?;
    }
    Ok(())
}

/// The variables of `varmap` as named tensors (CPU), for saving.
pub fn varmap_tensors(varmap: &VarMap, storage: Option<DType>) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let t = var.as_tensor();
        let t = match storage {
            Some(d) if t.dtype().is_float() => t.to_dtype(d)?,
            _ => t.clone(),
        };
        tensors.insert(name.clone(), t.to_device(&Device::Cpu)?);
    }
    Ok(tensors)
}

/// SHA-256 over the training files: for each file in order of its path
/// relative to `root` (with `/` separators, so the hash does not depend on
/// where the data lives): the path, a NUL, the length (u64 LE), the bytes.
/// Duplicates count once. Returned as `sha256:HEX`.
pub fn training_data_hash(root: &Path, files: &[PathBuf]) -> anyhow::Result<String> {
    let mut rel: Vec<(String, PathBuf)> = files
        .iter()
        .map(|f| {
            let full = if f.is_absolute() { f.clone() } else { root.join(f) };
            let r = full.strip_prefix(root).unwrap_or(&full);
            let name = r.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
            (name, full)
        })
        .collect();
    rel.sort();
    rel.dedup_by(|a, b| a.0 == b.0);
    let mut h = Sha256::new();
    for (name, full) in &rel {
        let mut f = File::open(full).with_context(|| format!("hashing training data: {}", full.display()))?;
        let len = f.metadata()?.len();
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(len.to_le_bytes());
        let copied = io::copy(&mut f, &mut h).with_context(|| format!("hashing training data: {}", full.display()))?;
        anyhow::ensure!(copied == len, "{} changed while it was hashed", full.display());
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

/// Now in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp() -> String {
    format_utc(crate::clock::now_secs() as u64)
}

fn format_utc(secs: u64) -> String {
    let [y, m, d, hh, mm, ss] = crate::clock::utc_parts(secs as i64);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// What the model card skeleton is rendered from.
#[derive(Debug, Clone, Default)]
pub struct ModelCardInput {
    pub meta: Option<WeightsMeta>,
    /// One paragraph: which analysis (MODELS.md section) this model implements.
    pub summary: String,
    /// Where the training data came from (folder, dataset name).
    pub data_source: String,
    /// How it was split (e.g. "fixed split from split.csv; 10 % of train held out for validation, seed 7").
    pub split: String,
    /// Samples per split.
    pub split_counts: Vec<(String, usize)>,
    /// Licence of the training data; empty = to be completed.
    pub data_licence: String,
    /// Training settings (the trainer's config) as JSON.
    pub training: Value,
    /// Epoch of the kept weights and its validation metric line.
    pub selection: String,
    /// Name of the evaluated split and the metrics table as text.
    pub test_split: String,
    pub test_metrics: String,
}

const TO_COMPLETE: &str = "_(to be completed)_";

/// A model card in Markdown from the run. Sections a human must write
/// (intended use, limitations) are marked; the "not for clinical use" line
/// is always there.
pub fn render_model_card(c: &ModelCardInput) -> String {
    let or_todo = |s: &str| if s.trim().is_empty() { TO_COMPLETE.to_string() } else { s.to_string() };
    let name = c.meta.as_ref().map(|m| m.name.as_str()).unwrap_or("model");
    let mut s = format!("# Model card: {name}\n\n**Not for clinical use.** Research software; outputs are not a diagnosis.\n\n");
    s += &format!("## Summary\n\n{}\n\n", or_todo(&c.summary));
    if let Some(m) = &c.meta {
        s += "## Model\n\n";
        s += &format!(
            "- version: {}\n- created: {}\n- storage: {}\n- weights format version: {}\n",
            m.model_version,
            m.created,
            serde_json::to_value(m.storage_dtype).unwrap().as_str().unwrap_or(""),
            m.format_version
        );
        if !m.class_names.is_empty() {
            s += &format!("- classes: {}\n", m.class_names.join(", "));
        }
        if !m.landmark_names.is_empty() {
            s += &format!("- landmarks ({}): {}\n", m.landmark_names.len(), m.landmark_names.join(", "));
        }
        s += &format!("\nArchitecture config:\n\n```json\n{}\n```\n\n", serde_json::to_string_pretty(&m.architecture).unwrap_or_default());
        if !m.preprocessing.is_null() {
            s += &format!("Preprocessing:\n\n```json\n{}\n```\n\n", serde_json::to_string_pretty(&m.preprocessing).unwrap_or_default());
        }
    }
    s += "## Training data\n\n";
    s += &format!("- source: {}\n", or_todo(&c.data_source));
    s += &format!("- licence: {}\n", or_todo(&c.data_licence));
    if let Some(m) = &c.meta {
        s += &format!("- training data hash: `{}`\n", m.training_data_hash);
    }
    s += &format!("- split: {}\n", or_todo(&c.split));
    for (split, n) in &c.split_counts {
        s += &format!("  - {split}: {n}\n");
    }
    s += "\n## Training\n\n";
    if !c.training.is_null() {
        s += &format!("```json\n{}\n```\n\n", serde_json::to_string_pretty(&c.training).unwrap_or_default());
    }
    if !c.selection.is_empty() {
        s += &format!("Kept weights: {}\n\n", c.selection);
    }
    s += &format!("## Evaluation ({} split)\n\n", or_todo(&c.test_split));
    if c.test_metrics.trim().is_empty() {
        s += &format!("{TO_COMPLETE}\n\n");
    } else {
        s += &format!("```\n{}\n```\n\n", c.test_metrics.trim_end());
    }
    s += &format!("## Intended use\n\n{TO_COMPLETE}\n\n## Limitations\n\n{TO_COMPLETE}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Init, VarBuilder};
    use serde_json::json;

    /// A two-layer "model" whose tensor set depends on its config.
    fn build(vm: &VarMap, hidden: usize, with_bias: bool) -> candle_core::Result<()> {
        let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
        vb.pp("l1").get_with_hints((hidden, 3), "weight", Init::Const(0.5))?;
        if with_bias {
            vb.pp("l1").get_with_hints(hidden, "bias", Init::Const(0.25))?;
        }
        vb.pp("l2").get_with_hints((1, hidden), "weight", Init::Const(-1.0))?;
        Ok(())
    }

    fn meta(arch: Value, storage: StorageDtype) -> WeightsMeta {
        WeightsMeta {
            format_version: FORMAT_VERSION,
            name: "toy".into(),
            model_version: "1.0".into(),
            architecture: arch,
            class_names: vec!["background".into(), "kidney".into()],
            landmark_names: vec![],
            preprocessing: json!({"mean": 0.5}),
            training_data_hash: "sha256:00".into(),
            created: utc_timestamp(),
            storage_dtype: storage,
        }
    }

    fn set_values(vm: &VarMap) {
        for (name, var) in vm.data().lock().unwrap().iter() {
            let n = var.elem_count();
            // 1/3 and friends are not representable in f16: the round trip must round
            let v: Vec<f32> = (0..n).map(|i| (i as f32 + 1.0) / 3.0 * if name.contains("l2") { -1.0 } else { 1.0 }).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }

    fn values(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn f32_and_f16_round_trips() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let arch = json!({"hidden": 4, "bias": true});
        for storage in [StorageDtype::F32, StorageDtype::F16] {
            let src = VarMap::new();
            build(&src, 4, true)?;
            set_values(&src);
            let prefix = dir.path().join(format!("w/{storage:?}"));
            let paths = save_weights(&src, &meta(arch.clone(), storage), &prefix)?;
            assert!(paths.tensors.exists() && paths.meta.exists());
            let stored = candle_core::safetensors::load(&paths.tensors, &Device::Cpu)?;
            assert_eq!(stored["l1.weight"].dtype(), storage.dtype());

            let dst = VarMap::new();
            build(&dst, 4, true)?;
            let m = load_weights(&paths.meta, &dst, &arch)?;
            assert_eq!(m.storage_dtype, storage);
            assert_eq!(m.class_names, ["background", "kidney"]);
            for name in ["l1.weight", "l1.bias", "l2.weight"] {
                let (a, b) = (values(&src, name), values(&dst, name));
                assert_eq!(dst.data().lock().unwrap()[name].dtype(), DType::F32);
                for (x, y) in a.iter().zip(&b) {
                    match storage {
                        StorageDtype::F32 => assert_eq!(x, y),
                        // f16 keeps 11 significant bits: relative error ≤ 2^-11
                        StorageDtype::F16 => {
                            let rounded = Tensor::new(&[*x], &Device::Cpu)?.to_dtype(DType::F16)?.to_dtype(DType::F32)?.to_vec1::<f32>()?[0];
                            assert_eq!(*y, rounded);
                            assert!((x - y).abs() <= x.abs() * 4.9e-4, "{x} {y}");
                        }
                    }
                }
            }
            // 1/3 really was rounded in f16
            if storage == StorageDtype::F16 {
                assert_ne!(values(&dst, "l1.weight")[0], 1.0 / 3.0);
            }
        }
        Ok(())
    }

    #[test]
    fn every_tensor_mismatch_kind_is_reported_by_name_and_shape() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let prefix = dir.path().join("toy");
        let src = VarMap::new();
        build(&src, 4, false)?;
        let arch = json!({"hidden": 4});
        save_weights(&src, &meta(arch.clone(), StorageDtype::F32), &prefix)?;
        // the caller's model has a bias (missing in file) and hidden 5 (shapes differ);
        // and we add an extra tensor to the file (unexpected)
        let mut file = candle_core::safetensors::load(WeightsPaths::new(&prefix).tensors, &Device::Cpu)?;
        file.insert("extra.scale".into(), Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?);
        save_tensors_atomic(&file, &WeightsPaths::new(&prefix).tensors)?;
        let dst = VarMap::new();
        build(&dst, 5, true)?;
        let before = values(&dst, "l1.weight");
        let e = load_weights(&prefix, &dst, &arch).unwrap_err();
        let WeightsError::Mismatch { config, tensors, .. } = &e else { panic!("{e}") };
        assert!(config.is_empty());
        assert_eq!(tensors.missing, [("l1.bias".to_string(), vec![5])]);
        assert_eq!(tensors.unexpected, [("extra.scale".to_string(), vec![2, 2])]);
        assert_eq!(tensors.shape_differs, [("l1.weight".to_string(), vec![5, 3], vec![4, 3]), ("l2.weight".to_string(), vec![1, 5], vec![1, 4])]);
        let msg = e.to_string();
        for line in [
            "missing tensor l1.bias [5]",
            "unexpected tensor extra.scale [2, 2]",
            "tensor l1.weight: expected shape [5, 3], found [4, 3]",
            "tensor l2.weight: expected shape [1, 5], found [1, 4]",
        ] {
            assert!(msg.contains(line), "{line} not in {msg}");
        }
        // nothing was loaded
        assert_eq!(values(&dst, "l1.weight"), before);
        Ok(())
    }

    #[test]
    fn config_mismatch_is_reported_field_by_field() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let prefix = dir.path().join("toy");
        let src = VarMap::new();
        build(&src, 4, true)?;
        let file_arch = json!({"hidden": 4, "bias": true, "stages": [3, 4, 6], "head": {"act": "relu", "extra": 1}});
        save_weights(&src, &meta(file_arch, StorageDtype::F32), &prefix)?;
        let dst = VarMap::new();
        build(&dst, 4, true)?;
        let caller = json!({"hidden": 4.0, "bias": true, "stages": [3, 8, 6], "head": {"act": "gelu", "dropout": 0.1}});
        let e = load_weights(&prefix, &dst, &caller).unwrap_err();
        let WeightsError::Mismatch { config, tensors, .. } = &e else { panic!("{e}") };
        assert!(tensors.is_empty());
        let lines: Vec<String> = config.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "head.act: expected \"gelu\", found \"relu\"",
                "head.dropout: expected 0.1, found (absent)",
                "head.extra: expected (absent), found 1",
                "stages[1]: expected 8, found 4",
            ]
        );
        assert!(e.to_string().contains("config stages[1]: expected 8, found 4"));
        // arrays of different length differ as a whole
        assert_eq!(compare_config(&json!({"a": [1, 2]}), &json!({"a": [1]})).len(), 1);
        Ok(())
    }

    #[test]
    fn missing_files_and_newer_format_are_named() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let e = load_weights(&dir.path().join("nope"), &VarMap::new(), &Value::Null).unwrap_err();
        assert!(e.to_string().contains("nope.json"), "{e}");
        let mut m = meta(json!({}), StorageDtype::F32);
        m.format_version = FORMAT_VERSION + 1;
        std::fs::write(dir.path().join("new.json"), serde_json::to_string(&m)?)?;
        let e = read_meta(&dir.path().join("new")).unwrap_err();
        assert!(e.to_string().contains("newer than this program"), "{e}");
        Ok(())
    }

    #[test]
    fn paths_from_any_of_the_three_files() {
        let p = WeightsPaths::new(Path::new("weights/ceph.safetensors"));
        assert_eq!(p, WeightsPaths::new(Path::new("weights/ceph")));
        assert_eq!(p.meta, Path::new("weights/ceph.json"));
        assert_eq!(WeightsPaths::new(Path::new("weights/ceph.md")).tensors, Path::new("weights/ceph.safetensors"));
    }

    #[test]
    fn data_hash_depends_on_names_and_contents_not_location_or_order() -> anyhow::Result<()> {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("img"))?;
            std::fs::write(d.join("img/1.png"), b"one")?;
            std::fs::write(d.join("labels.csv"), b"x,y\n")?;
        }
        let files = |d: &Path| vec![d.join("labels.csv"), d.join("img/1.png")];
        let h = training_data_hash(a.path(), &files(a.path()))?;
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64);
        assert_eq!(h, training_data_hash(b.path(), &files(b.path()))?);
        assert_eq!(h, training_data_hash(a.path(), &[PathBuf::from("img/1.png"), PathBuf::from("labels.csv"), PathBuf::from("img/1.png")])?);
        std::fs::write(b.path().join("img/1.png"), b"One")?;
        assert_ne!(h, training_data_hash(b.path(), &files(b.path()))?);
        std::fs::rename(a.path().join("img/1.png"), a.path().join("img/2.png"))?;
        assert_ne!(h, training_data_hash(a.path(), &[a.path().join("labels.csv"), a.path().join("img/2.png")])?);
        // hand value: the empty list is the SHA-256 of nothing
        assert_eq!(training_data_hash(a.path(), &[])?, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        Ok(())
    }

    #[test]
    fn utc_formatting_hand_values() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn model_card_has_the_run_and_the_required_lines() {
        let card = render_model_card(&ModelCardInput {
            meta: Some(meta(json!({"hidden": 4}), StorageDtype::F16)),
            data_source: "data/kidney-us-masks".into(),
            split: "split.csv".into(),
            split_counts: vec![("train".into(), 427), ("test".into(), 107)],
            test_split: "test".into(),
            test_metrics: "dice_kidney  0.9100".into(),
            ..Default::default()
        });
        for needle in [
            "# Model card: toy",
            "**Not for clinical use.**",
            "- storage: f16",
            "- classes: background, kidney",
            "\"hidden\": 4",
            "- source: data/kidney-us-masks",
            "- licence: _(to be completed)_",
            "  - train: 427",
            "## Evaluation (test split)",
            "dice_kidney  0.9100",
            "## Limitations",
        ] {
            assert!(card.contains(needle), "{needle} not in\n{card}");
        }
    }
}
