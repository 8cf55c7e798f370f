//! What a model provides to be trained and evaluated (`TrainTask`), and the
//! small types the trainer and the task exchange.
//!
//! The trainer owns the loop (order, batching, accumulation, clipping,
//! schedule, optimiser, checkpoints, logs); the task owns everything
//! model-specific: its data, preprocessing and augmentation, the forward
//! pass, the loss and the evaluation. One trait covers the five analyses
//! because they differ only in what a step computes and what is measured:
//! a landmark net returns BCE + MAE, Mask R-CNN the sum of its three heads'
//! losses, SSD its matched CE + smooth L1, the U-Net focal + Dice, PSPNet
//! CE + Dice; each reports its parts for the log through `StepLoss`.

use std::path::PathBuf;

use anyhow::bail;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::data::Split;
use super::metrics::Metrics;
use super::optim::{AdamWConfig, ScheduleConfig};

/// What a constructor gets from the command line.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// The dataset folder (`--data`).
    pub data_dir: PathBuf,
    pub device: Device,
    /// Seeds the validation carve-out and the initial weights.
    pub seed: u64,
    /// Architecture config overriding the model's default: from `--config`
    /// for training, from the weights' `NAME.json` for evaluation.
    pub architecture: Option<Value>,
    /// The splits whose data the run reads (decoded, pre-processed): all
    /// three for training, the evaluated one for `ainode eval`. The others
    /// are only counted.
    pub splits: Vec<Split>,
}

impl TaskOptions {
    pub const ALL_SPLITS: [Split; 3] = [Split::Train, Split::Val, Split::Test];
}

/// One split of a task's data: its items when the run asked for the split
/// ([`TaskOptions::splits`]), else only their number, so that `ainode eval
/// --split test` reads and pre-processes the test data alone.
pub struct SplitData<T> {
    split: Split,
    count: usize,
    items: Option<Vec<T>>,
}

impl<T> SplitData<T> {
    /// `count` items; `load` runs only when `opts` asks for `split`.
    pub fn new(split: Split, count: usize, opts: &TaskOptions, load: impl FnOnce() -> anyhow::Result<Vec<T>>) -> anyhow::Result<SplitData<T>> {
        let items = if opts.splits.contains(&split) { Some(load()?) } else { None };
        Ok(SplitData { split, count: items.as_ref().map_or(count, Vec::len), items })
    }

    pub fn items(&self) -> anyhow::Result<&[T]> {
        self.items.as_deref().ok_or_else(|| anyhow::anyhow!("the {} split was not loaded (TaskOptions::splits)", self.split))
    }

    /// How many items the split has, loaded or not.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `other`'s items (another source of the same split), loaded or not.
    pub fn extend(&mut self, other: SplitData<T>) -> anyhow::Result<()> {
        if other.split != self.split {
            anyhow::bail!("cannot add {} items to the {} split", other.split, self.split);
        }
        self.count += other.count;
        if let (Some(mine), Some(theirs)) = (&mut self.items, other.items) {
            mine.extend(theirs);
        }
        Ok(())
    }
}

/// The recipe of a training run: what a task proposes and `--config` overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Nominal batch size: samples per optimiser step.
    pub batch_size: usize,
    /// Largest number of samples per forward pass; a batch is split into
    /// micro-batches of this size whose gradients are accumulated (0 = the
    /// whole batch at once).
    pub micro_batch: usize,
    /// Seeds the batch order and, through `StepContext`, the augmentations.
    pub seed: u64,
    pub optimizer: AdamWConfig,
    pub schedule: ScheduleConfig,
    /// Clip gradients to this global L2 norm (None = no clipping).
    pub max_grad_norm: Option<f64>,
    /// Drop the last batch of an epoch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Validate every N epochs (and always after the last one).
    pub validate_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 50,
            batch_size: 8,
            micro_batch: 0,
            seed: 0,
            optimizer: AdamWConfig::default(),
            schedule: ScheduleConfig::default(),
            // a guard against a blow-up, not a tuning knob
            max_grad_norm: Some(10.0),
            drop_last: false,
            validate_every: 1,
        }
    }
}

impl TrainConfig {
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.validate_every == 0 {
            bail!("train config: epochs, batch_size and validate_every must be at least 1 (got {}, {}, {})", self.epochs, self.batch_size, self.validate_every);
        }
        if let Some(n) = self.max_grad_norm {
            if !(n > 0.0) {
                bail!("train config: max_grad_norm must be > 0 (got {n})");
            }
        }
        Ok(())
    }
}

/// The validation metric that selects the kept weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricGoal {
    /// A name in `Metrics::summary` (e.g. `dice.mean`, `mre_mm`, `loss`).
    pub name: String,
    pub higher_is_better: bool,
}

impl MetricGoal {
    pub fn higher(name: &str) -> Self {
        MetricGoal { name: name.into(), higher_is_better: true }
    }

    pub fn lower(name: &str) -> Self {
        MetricGoal { name: name.into(), higher_is_better: false }
    }

    /// Whether `value` is strictly better than `best` (a first finite value
    /// always is; NaN never is, so a diverged epoch is never kept).
    pub fn improves(&self, value: f64, best: Option<f64>) -> bool {
        if !value.is_finite() {
            return false;
        }
        match best {
            None => true,
            Some(b) if self.higher_is_better => value > b,
            Some(b) => value < b,
        }
    }
}

/// What `train_step` returns: the scalar loss to differentiate (mean over
/// the step's samples, so that the trainer can weight micro-batches by their
/// size), and named parts for the log (detached, scalars).
pub struct StepLoss {
    pub total: Tensor,
    pub parts: Vec<(String, Tensor)>,
}

impl StepLoss {
    pub fn new(total: Tensor) -> Self {
        StepLoss { total, parts: Vec::new() }
    }

    /// Adds a named part (e.g. "bce", "mae"); it is detached here.
    pub fn with_part(mut self, name: &str, part: &Tensor) -> Self {
        self.parts.push((name.to_string(), part.detach()));
        self
    }
}

/// Where in the run a training step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepContext {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based optimiser step (micro-batches of one step share it).
    pub step: usize,
    /// The run's seed: with `epoch` and the sample index it seeds the
    /// augmentation of that sample, so a resumed run sees the same data.
    pub seed: u64,
}

/// What the weights file records about the network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDescription {
    /// The network's config struct as JSON (loading compares it field by field).
    pub architecture: Value,
    pub class_names: Vec<String>,
    pub landmark_names: Vec<String>,
    /// Constants inference must repeat (spacing, window, normalisation, input size).
    pub preprocessing: Value,
    /// One paragraph for the model card (which MODELS.md analysis, which part).
    pub summary: String,
}

/// What the model card and the checkpoint record about the data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataDescription {
    /// Dataset name and folder.
    pub source: String,
    /// How train / val / test were formed.
    pub split: String,
    /// Samples per split.
    pub counts: Vec<(String, usize)>,
    /// Licence of the training data (from the dataset's README).
    pub licence: String,
    /// `weights::training_data_hash` of the training files.
    pub hash: String,
}

/// A model with its data, ready to be trained by `trainer::train` and
/// evaluated by `ainode eval`. Built by a registry constructor
/// (`TaskOptions`).
pub trait TrainTask {
    /// Registry name (`ainode train NAME`), also the weights' file name.
    fn name(&self) -> &str;

    /// All variables of the network, trainable or not (batch-norm running
    /// statistics live here too; the optimiser skips what has no gradient).
    fn varmap(&self) -> &VarMap;

    /// Number of training samples; `train_step` receives indices in `0..num_train()`.
    fn num_train(&self) -> usize;

    /// Forward pass in training mode on the samples `samples` (augmented
    /// deterministically from `ctx.seed`, `ctx.epoch` and the index) and the
    /// loss, averaged over those samples. The trainer calls `backward`.
    fn train_step(&mut self, samples: &[usize], ctx: &StepContext) -> anyhow::Result<StepLoss>;

    /// Evaluation in inference mode on a split: the task's metrics
    /// (MODELS.md), including the primary metric on `Split::Val`.
    fn evaluate(&mut self, split: Split) -> anyhow::Result<Metrics>;

    /// The validation metric that picks the kept weights.
    fn primary_metric(&self) -> MetricGoal;

    fn describe(&self) -> ModelDescription;

    fn data(&self) -> DataDescription;

    /// The model's training recipe (batch size, lr, epochs...); the command
    /// line overrides parts of it.
    fn train_defaults(&self) -> TrainConfig {
        TrainConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_goal_direction_and_nan() {
        let hi = MetricGoal::higher("dice.mean");
        assert!(hi.improves(0.5, None));
        assert!(hi.improves(0.6, Some(0.5)));
        assert!(!hi.improves(0.5, Some(0.5)));
        assert!(!hi.improves(f64::NAN, None));
        let lo = MetricGoal::lower("loss");
        assert!(lo.improves(0.4, Some(0.5)));
        assert!(!lo.improves(0.6, Some(0.5)));
        assert!(!lo.improves(f64::INFINITY, None));
    }
}
