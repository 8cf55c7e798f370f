//! Training checkpoints in a run folder:
//!
//! ```text
//! RUN/last/   weights.safetensors  optimizer.safetensors  state.json   (every epoch)
//! RUN/best/   weights.safetensors  state.json                          (when validation improves)
//! RUN/log.jsonl                                                        (trainer's run log)
//! ```
//!
//! A checkpoint is a folder whose files must agree with each other, so it is
//! replaced as a whole: written into `.NAME.tmp/` (each file fsync'd), the
//! old folder renamed to `.NAME.old/`, the new one renamed into place, the
//! run folder fsync'd, the old one removed. A crash at any point leaves
//! either the previous or the new checkpoint readable (`.NAME.old/` is used
//! when `NAME/` is missing).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::optim::AdamW;
use super::task::MetricGoal;
use crate::models::weights::{self, load_tensors_into, save_tensors_atomic, varmap_tensors, write_atomic};

/// Layout version of `state.json`.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The validation result that made a checkpoint the best one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// 1-based epoch after which the weights were kept.
    pub epoch: usize,
    pub value: f64,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format_version: u32,
    pub task: String,
    /// Epochs completed (the next run starts with epoch index `epochs_done`).
    pub epochs_done: usize,
    /// Optimiser steps done (the schedule's position).
    pub step: usize,
    pub metric: MetricGoal,
    /// Best validation so far (for `best/`: this checkpoint's own).
    pub best: Option<BestRecord>,
    /// Validation summary of the last validated epoch, if any.
    pub last_metrics: Option<Value>,
    /// The trainer's config (`TrainConfig`) as JSON.
    pub train_config: Value,
    /// The network's config.
    pub architecture: Value,
    pub data_hash: String,
    /// UTC, ISO 8601.
    pub saved: String,
}

const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }

    fn slot(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The readable folder of checkpoint `name` (`last` / `best`), if any.
    fn existing(&self, name: &str) -> Option<PathBuf> {
        let main = self.slot(name);
        let old = self.root.join(format!(".{name}.old"));
        [main, old].into_iter().find(|p| p.join(STATE).is_file())
    }

    pub fn has_last(&self) -> bool {
        self.existing("last").is_some()
    }

    pub fn has_best(&self) -> bool {
        self.existing("best").is_some()
    }

    /// Writes `last/` (weights, optimiser state, state.json) atomically.
    pub fn save_last(&self, varmap: &VarMap, opt: &AdamW, state: &CheckpointState) -> anyhow::Result<()> {
        self.replace_slot("last", |dir| {
            save_tensors_atomic(&varmap_tensors(varmap, None)?, &dir.join(WEIGHTS))?;
            opt.save(&dir.join(OPTIMIZER))?;
            write_state(dir, state)
        })
    }

    /// Writes `best/` (weights, state.json) atomically.
    pub fn save_best(&self, varmap: &VarMap, state: &CheckpointState) -> anyhow::Result<()> {
        self.replace_slot("best", |dir| {
            save_tensors_atomic(&varmap_tensors(varmap, None)?, &dir.join(WEIGHTS))?;
            write_state(dir, state)
        })
    }

    pub fn read_state(&self, name: &str) -> anyhow::Result<CheckpointState> {
        let dir = self.existing(name).with_context(|| format!("no `{name}` checkpoint in {}", self.root.display()))?;
        read_state(&dir)
    }

    /// Loads `last/` into the model's variables and the optimiser.
    pub fn restore_last(&self, varmap: &VarMap, opt: &mut AdamW) -> anyhow::Result<CheckpointState> {
        let dir = self.existing("last").with_context(|| format!("no checkpoint to resume in {}", self.root.display()))?;
        let state = read_state(&dir)?;
        load_tensors_into(&dir.join(WEIGHTS), varmap)?;
        opt.load(&dir.join(OPTIMIZER))?;
        Ok(state)
    }

    /// Loads `best/` into the model's variables.
    pub fn restore_best(&self, varmap: &VarMap) -> anyhow::Result<CheckpointState> {
        let dir = self.existing("best").with_context(|| format!("no best checkpoint in {}", self.root.display()))?;
        let state = read_state(&dir)?;
        load_tensors_into(&dir.join(WEIGHTS), varmap)?;
        Ok(state)
    }

    fn replace_slot(&self, name: &str, write: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let ctx = || format!("writing checkpoint {}", self.slot(name).display());
        std::fs::create_dir_all(&self.root).with_context(ctx)?;
        let tmp = self.root.join(format!(".{name}.tmp"));
        let old = self.root.join(format!(".{name}.old"));
        let target = self.slot(name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(ctx)?;
        }
        std::fs::create_dir(&tmp).with_context(ctx)?;
        write(&tmp).with_context(ctx)?;
        std::fs::File::open(&tmp).and_then(|d| d.sync_all()).with_context(ctx)?;
        if target.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).with_context(ctx)?;
            }
            std::fs::rename(&target, &old).with_context(ctx)?;
        }
        std::fs::rename(&tmp, &target).with_context(ctx)?;
        weights::sync_parent(&target).with_context(ctx)?;
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(ctx)?;
        }
        Ok(())
    }
}

fn write_state(dir: &Path, state: &CheckpointState) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(state)? + "\n";
    Ok(write_atomic(&dir.join(STATE), json.as_bytes())?)
}

fn read_state(dir: &Path) -> anyhow::Result<CheckpointState> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let s: CheckpointState = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if s.format_version > CHECKPOINT_VERSION {
        bail!("{}: format_version {} is newer than this program's {CHECKPOINT_VERSION}", path.display(), s.format_version);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{AdamWConfig, NamedGrads};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::Init;

    fn model() -> VarMap {
        let vm = VarMap::new();
        vm.get((2, 2), "w", Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        vm
    }

    fn state(epochs_done: usize) -> CheckpointState {
        CheckpointState {
            format_version: CHECKPOINT_VERSION,
            task: "toy".into(),
            epochs_done,
            step: epochs_done * 3,
            metric: MetricGoal::higher("dice.mean"),
            best: Some(BestRecord { epoch: 1, value: 0.5 }),
            last_metrics: None,
            train_config: serde_json::json!({"epochs": 4}),
            architecture: serde_json::json!({"width": 2}),
            data_hash: "sha256:ab".into(),
            saved: weights::utc_timestamp(),
        }
    }

    fn w(vm: &VarMap) -> Vec<f32> {
        vm.data().lock().unwrap()["w"].flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn last_round_trips_weights_optimizer_and_state() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let run = RunDir::new(dir.path().join("run"));
        assert!(!run.has_last());
        let vm = model();
        let mut opt = AdamW::new(&vm, AdamWConfig::default());
        let g = NamedGrads::from([("w".to_string(), Tensor::new(&[[1f32, -1.0], [0.5, 2.0]], &Device::Cpu)?)]);
        opt.step(&g, 0.1)?;
        run.save_last(&vm, &opt, &state(1))?;
        // a second save replaces the first as a whole and leaves no temporaries
        opt.step(&g, 0.1)?;
        run.save_last(&vm, &opt, &state(2))?;
        let names: Vec<String> = std::fs::read_dir(run.root())?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["last"]);

        let vm2 = model();
        let mut opt2 = AdamW::new(&vm2, AdamWConfig::default());
        let st = run.restore_last(&vm2, &mut opt2)?;
        assert_eq!(st, state(2).clone_with_saved(&st.saved));
        assert_eq!(w(&vm), w(&vm2));
        // both optimisers continue identically
        opt.step(&g, 0.1)?;
        opt2.step(&g, 0.1)?;
        assert_eq!(w(&vm), w(&vm2));
        Ok(())
    }

    #[test]
    fn a_crash_between_the_renames_leaves_the_old_checkpoint_readable() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let run = RunDir::new(dir.path());
        let vm = model();
        run.save_best(&vm, &state(1))?;
        // simulate: old renamed away, new not yet in place
        std::fs::rename(dir.path().join("best"), dir.path().join(".best.old"))?;
        std::fs::create_dir(dir.path().join(".best.tmp"))?;
        assert!(run.has_best());
        assert_eq!(run.read_state("best")?.epochs_done, 1);
        // the next save cleans up both
        run.save_best(&vm, &state(2))?;
        assert_eq!(run.read_state("best")?.epochs_done, 2);
        assert!(!dir.path().join(".best.old").exists() && !dir.path().join(".best.tmp").exists());
        Ok(())
    }

    #[test]
    fn restoring_into_another_model_names_the_tensor() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let run = RunDir::new(dir.path());
        run.save_best(&model(), &state(1))?;
        let other = VarMap::new();
        other.get((3, 2), "w", Init::Const(0.0), DType::F32, &Device::Cpu)?;
        let e = run.restore_best(&other).unwrap_err();
        assert!(format!("{e:#}").contains("tensor w: expected shape [3, 2], found [2, 2]"), "{e:#}");
        Ok(())
    }

    impl CheckpointState {
        fn clone_with_saved(&self, saved: &str) -> Self {
            CheckpointState { saved: saved.to_string(), ..self.clone() }
        }
    }
}
