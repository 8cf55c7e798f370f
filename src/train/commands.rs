//! `ainode train` and `ainode eval`, as library functions (main.rs only
//! parses arguments).
//!
//! `train NAME --out weights/NAME` runs the trainer in the run folder
//! `weights/NAME.run/` (checkpoints, log), then exports the best weights as
//! `weights/NAME.safetensors` + `.json`, evaluates them on the test split and
//! renders the model card `weights/NAME.md`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::checkpoint::RunDir;
use super::metrics::Metrics;
use super::registry::Registry;
use super::task::TrainTask;
use super::task::{TaskOptions, TrainConfig};
use super::trainer::{self, RunOptions, TrainSummary};
use crate::models::device::{device_name, DeviceSpec};
use crate::models::weights::{self, render_model_card, write_atomic, ModelCardInput, StorageDtype, WeightsMeta, WeightsPaths, FORMAT_VERSION};
use crate::train::data::Split;

#[derive(Debug, Clone)]
pub struct TrainCommand {
    pub name: String,
    pub data: PathBuf,
    /// Weights prefix `DIR/NAME`.
    pub out: PathBuf,
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub micro_batch: Option<usize>,
    pub seed: Option<u64>,
    pub device: DeviceSpec,
    pub resume: bool,
    /// Run folder (default: `OUT.run`).
    pub run_dir: Option<PathBuf>,
    /// Architecture config (JSON file) overriding the model's default.
    pub config: Option<PathBuf>,
    /// Training recipe (JSON file, `TrainConfig` fields) merged over the model's.
    pub recipe: Option<PathBuf>,
    pub storage: StorageDtype,
    pub model_version: String,
    /// Stop after this many epochs (testing an interruption).
    pub stop_after: Option<usize>,
    pub progress: Option<bool>,
}

/// What `train_command` produced.
#[derive(Debug)]
pub struct TrainOutcome {
    pub summary: TrainSummary,
    /// `None` when the run stopped before its last epoch (nothing exported).
    pub weights: Option<WeightsPaths>,
    pub test_metrics: Option<Metrics>,
}

pub fn default_run_dir(out: &Path) -> PathBuf {
    let base = WeightsPaths::new(out).tensors;
    PathBuf::from(base.to_string_lossy().trim_end_matches(".safetensors").to_string() + ".run")
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `from` over `into`: objects merged field by field, anything else replaced.
fn merge_json(into: &mut serde_json::Value, from: &serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge_json(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// `overrides` (a JSON object of `TrainConfig` fields, nested objects merged
/// field by field) over `base`; unknown fields are refused.
pub fn merge_recipe(base: &TrainConfig, overrides: &serde_json::Value) -> anyhow::Result<TrainConfig> {
    anyhow::ensure!(overrides.is_object(), "a recipe is a JSON object of training settings");
    let mut v = serde_json::to_value(base)?;
    merge_json(&mut v, overrides);
    let cfg: TrainConfig = serde_json::from_value(v)?;
    cfg.check()?;
    Ok(cfg)
}

pub fn train_command(registry: &Registry, cmd: &TrainCommand) -> anyhow::Result<TrainOutcome> {
    let entry = registry.get(&cmd.name)?;
    let device = cmd.device.open()?;
    let architecture = cmd.config.as_deref().map(read_json).transpose()?;
    let opts =
        TaskOptions { data_dir: cmd.data.clone(), device: device.clone(), seed: cmd.seed.unwrap_or(0), architecture, splits: TaskOptions::ALL_SPLITS.to_vec() };
    let mut task = (entry.build)(&opts).with_context(|| format!("building model {} on {}", cmd.name, cmd.data.display()))?;
    let mut cfg = task.train_defaults();
    if let Some(path) = &cmd.recipe {
        cfg = merge_recipe(&cfg, &read_json(path)?).with_context(|| format!("training recipe {}", path.display()))?;
    }
    cfg.epochs = cmd.epochs.unwrap_or(cfg.epochs);
    cfg.batch_size = cmd.batch.unwrap_or(cfg.batch_size);
    cfg.micro_batch = cmd.micro_batch.unwrap_or(cfg.micro_batch);
    cfg.seed = cmd.seed.unwrap_or(cfg.seed);
    let run_dir = cmd.run_dir.clone().unwrap_or_else(|| default_run_dir(&cmd.out));
    let run_opts = RunOptions { resume: cmd.resume, stop_after: cmd.stop_after, progress: cmd.progress, device: device_name(&device) };
    let summary = trainer::train(task.as_mut(), &cfg, &run_dir, &run_opts)?;
    if summary.epochs_done < cfg.epochs {
        return Ok(TrainOutcome { summary, weights: None, test_metrics: None });
    }

    // export the kept weights (best validation; the last ones if never validated finite)
    let run = RunDir::new(&run_dir);
    let selection = if run.has_best() {
        let st = run.restore_best(task.varmap())?;
        let b = st.best.expect("a best checkpoint records its value");
        format!("epoch {} of {}, validation {} = {:.4}", b.epoch, cfg.epochs, st.metric.name, b.value)
    } else {
        format!("last epoch ({}; no finite validation value)", cfg.epochs)
    };
    let test_metrics = match task.evaluate(Split::Test) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("{}: no test evaluation for the model card: {e:#}", cmd.name);
            None
        }
    };
    let d = task.describe();
    let data = task.data();
    let meta = WeightsMeta {
        format_version: FORMAT_VERSION,
        name: cmd.name.clone(),
        model_version: cmd.model_version.clone(),
        architecture: d.architecture.clone(),
        class_names: d.class_names.clone(),
        landmark_names: d.landmark_names.clone(),
        preprocessing: d.preprocessing.clone(),
        training_data_hash: data.hash.clone(),
        created: weights::utc_timestamp(),
        storage_dtype: cmd.storage,
    };
    let paths = weights::save_weights(task.varmap(), &meta, &cmd.out)?;
    let card = render_model_card(&ModelCardInput {
        meta: Some(meta),
        summary: d.summary,
        data_source: data.source,
        split: data.split,
        split_counts: data.counts,
        data_licence: data.licence,
        training: serde_json::to_value(&cfg)?,
        selection,
        test_split: "test".into(),
        test_metrics: test_metrics.as_ref().map(|m| m.to_string()).unwrap_or_default(),
    });
    write_atomic(&paths.card, card.as_bytes()).with_context(|| format!("writing {}", paths.card.display()))?;
    Ok(TrainOutcome { summary, weights: Some(paths), test_metrics })
}

#[derive(Debug, Clone)]
pub struct EvalCommand {
    pub name: String,
    pub data: PathBuf,
    pub split: Split,
    /// Weights prefix (default `weights/NAME`).
    pub weights: Option<PathBuf>,
    pub device: DeviceSpec,
    pub seed: Option<u64>,
    /// Also write the metrics here as JSON.
    pub json: Option<PathBuf>,
    /// Merged over the weights' architecture config for this evaluation
    /// (operating points such as score thresholds; recorded in the JSON).
    pub overrides: Option<serde_json::Value>,
}

/// Builds the model from its weights' architecture config, loads the weights
/// (checked against it) and evaluates a split.
pub fn eval_command(registry: &Registry, cmd: &EvalCommand) -> anyhow::Result<Metrics> {
    let entry = registry.get(&cmd.name)?;
    let prefix = cmd.weights.clone().unwrap_or_else(|| Path::new("weights").join(&cmd.name));
    let meta = weights::read_meta(&prefix)?;
    if meta.name != cmd.name {
        tracing::warn!("{} holds weights of model `{}`, evaluated as `{}`", prefix.display(), meta.name, cmd.name);
    }
    let device = cmd.device.open()?;
    let mut architecture = meta.architecture.clone();
    if let Some(o) = &cmd.overrides {
        anyhow::ensure!(o.is_object(), "--set: a JSON object of architecture settings, got {o}");
        merge_json(&mut architecture, o);
    }
    let opts = TaskOptions { data_dir: cmd.data.clone(), device, seed: cmd.seed.unwrap_or(0), architecture: Some(architecture), splits: vec![cmd.split] };
    let mut task: Box<dyn TrainTask> = (entry.build)(&opts).with_context(|| format!("building model {} on {}", cmd.name, cmd.data.display()))?;
    // the model was built from the file's own config (fields it predates take
    // their defaults), so only its tensors can disagree with it
    weights::load_weights(&prefix, task.varmap(), &meta.architecture)?;
    let metrics = task.evaluate(cmd.split).with_context(|| format!("evaluating {} on the {} split", cmd.name, cmd.split))?;
    if let Some(path) = &cmd.json {
        let doc = json!({
            "model": cmd.name, "model_version": meta.model_version, "weights": WeightsPaths::new(&prefix).tensors,
            "training_data_hash": meta.training_data_hash, "data": cmd.data, "split": cmd.split,
            "evaluated": weights::utc_timestamp(), "overrides": cmd.overrides, "metrics": metrics.to_json(),
        });
        write_atomic(path, (serde_json::to_string_pretty(&doc)? + "\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::registry::ModelEntry;

    fn registry() -> Registry {
        Registry::with(vec![ModelEntry { name: "toy-squares", summary: "test model", build: crate::train::toy::build }])
    }

    #[test]
    fn a_recipe_merges_field_by_field_and_refuses_unknown_fields() {
        let base = TrainConfig::default();
        let cfg = merge_recipe(&base, &json!({"optimizer": {"lr": 0.01}, "schedule": {"warmup_epochs": 3.0}, "epochs": 7})).unwrap();
        assert_eq!((cfg.optimizer.lr, cfg.optimizer.beta1, cfg.schedule.warmup_epochs, cfg.epochs), (0.01, base.optimizer.beta1, 3.0, 7));
        assert_eq!(cfg.schedule.floor_ratio, base.schedule.floor_ratio);
        let e = merge_recipe(&base, &json!({"optimiser": {"lr": 0.01}})).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `optimiser`"), "{e:#}");
        assert!(merge_recipe(&base, &json!({"batch_size": 0})).is_err());
    }

    #[test]
    fn train_exports_weights_and_card_and_eval_reloads_them() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("weights/toy-squares");
        let cmd = TrainCommand {
            name: "toy-squares".into(),
            data: dir.path().to_path_buf(),
            out: out.clone(),
            epochs: Some(3),
            batch: None,
            micro_batch: None,
            seed: Some(4),
            device: DeviceSpec::Cpu,
            resume: false,
            run_dir: None,
            config: None,
            recipe: None,
            storage: StorageDtype::F16,
            model_version: "0.1".into(),
            stop_after: None,
            progress: Some(false),
        };
        let outcome = train_command(&registry(), &cmd)?;
        let paths = outcome.weights.expect("exported");
        assert!(dir.path().join("weights/toy-squares.run/last/state.json").is_file());
        let card = std::fs::read_to_string(&paths.card)?;
        assert!(card.contains("**Not for clinical use.**") && card.contains("dice.mean") && card.contains("Kept weights: epoch"), "{card}");
        let test = outcome.test_metrics.expect("evaluated");

        let json_out = dir.path().join("eval.json");
        let eval = EvalCommand {
            name: "toy-squares".into(),
            data: dir.path().to_path_buf(),
            split: Split::Test,
            weights: Some(out.clone()),
            device: DeviceSpec::Cpu,
            seed: None,
            json: Some(json_out.clone()),
            overrides: None,
        };
        let m = eval_command(&registry(), &eval)?;
        // f16 storage moves the weights a little; the label maps barely
        assert!((m.get("dice.mean").unwrap() - test.get("dice.mean").unwrap()).abs() < 0.02);
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_out)?)?;
        assert_eq!(doc["split"], "test");
        assert_eq!(doc["metrics"]["summary"]["dice.mean"].as_f64(), m.get("dice.mean"));

        // --set reaches the model's config (here a shape the tensors do not fit); only objects merge
        let e = eval_command(&registry(), &EvalCommand { overrides: Some(json!({"hidden": 6})), ..eval.clone() }).unwrap_err();
        assert!(e.to_string().contains("expected shape [6, 1, 3, 3]"), "{e}");
        assert!(eval_command(&registry(), &EvalCommand { overrides: Some(json!(6)), ..eval.clone() }).is_err());
        // unknown model, and weights of another architecture
        let e = eval_command(&registry(), &EvalCommand { name: "nope".into(), ..eval.clone() }).unwrap_err();
        assert_eq!(e.to_string(), "unknown model nope; known: toy-squares");
        let mut meta = weights::read_meta(&out)?;
        meta.architecture = serde_json::json!({"hidden": 6});
        std::fs::write(&paths.meta, serde_json::to_string(&meta)?)?;
        let e = eval_command(&registry(), &eval).unwrap_err();
        // the model is built from NAME.json (hidden 6), so the tensors do not fit
        assert!(e.to_string().contains("tensor conv1.weight: expected shape [6, 1, 3, 3], found [4, 1, 3, 3]"), "{e}");
        Ok(())
    }

    #[test]
    fn run_dir_defaults_beside_the_weights() {
        assert_eq!(default_run_dir(Path::new("weights/ceph")), Path::new("weights/ceph.run"));
        assert_eq!(default_run_dir(Path::new("weights/ceph.safetensors")), Path::new("weights/ceph.run"));
    }
}
