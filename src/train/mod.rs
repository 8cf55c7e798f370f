//! Training and evaluation harness shared by the five analyses (MODELS.md):
//! the `TrainTask` a model implements, data sets and augmentations (`data`), the trainer loop (AdamW, warm-up +
//! cosine schedule, clipping, gradient accumulation, validation, best kept,
//! checkpoint + resume, progress bar, JSON-lines log), metrics, the model
//! registry and the `train` / `eval` commands.

pub mod bench;
pub mod checkpoint;
pub mod commands;
pub mod data;
pub mod metrics;
pub mod optim;
pub mod registry;
pub mod task;
pub mod tasks;
pub mod trainer;

#[cfg(test)]
pub mod toy;

pub use metrics::Metrics;
pub use task::{MetricGoal, SplitData, StepContext, StepLoss, TaskOptions, TrainConfig, TrainTask};
pub use trainer::{train, RunOptions, TrainSummary};
