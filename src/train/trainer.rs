//! The training loop shared by all models.
//!
//! Per epoch: a batch order derived from (seed, epoch) alone, so a resumed
//! run repeats it without saved RNG state; each nominal batch is split into
//! micro-batches that fit in memory, their gradients weighted by size and
//! summed (the update equals the one of the whole batch); gradients clipped
//! by global norm; learning rate from the warm-up + cosine schedule; AdamW.
//! Then validation, the best weights kept, a checkpoint written, one line
//! per epoch and per validation appended to the JSON-lines run log.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::DType;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use super::checkpoint::{BestRecord, CheckpointState, RunDir, CHECKPOINT_VERSION};
use super::metrics::Metrics;
use super::optim::{accumulate_grads, clip_grad_norm, global_grad_norm, named_vars, AdamW, LrSchedule, NamedGrads};
use super::task::{StepContext, TrainConfig, TrainTask};
use crate::models::weights::{compare_config, utc_timestamp};
use crate::train::data::batch::{epoch_batches, steps_per_epoch};
use crate::train::data::Split;

/// How this invocation runs (not part of the recipe).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `RUN/last/`. Without it, a run folder that already holds
    /// a checkpoint is refused rather than overwritten.
    pub resume: bool,
    /// Stop after this many completed epochs (1-based count), as if
    /// interrupted: the schedule still spans `epochs`.
    pub stop_after: Option<usize>,
    /// Progress bar on stderr: `None` = when stderr is a terminal.
    pub progress: Option<bool>,
    /// Device name for the run log.
    pub device: String,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub epochs_done: usize,
    pub steps: usize,
    pub best: Option<BestRecord>,
    pub last_metrics: Option<Metrics>,
    /// Mean training loss of each epoch run in this invocation.
    pub epoch_losses: Vec<f64>,
}

struct RunLog {
    file: std::fs::File,
}

impl RunLog {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening run log {}", path.display()))?;
        Ok(RunLog { file })
    }

    fn write(&mut self, mut line: Value) -> anyhow::Result<()> {
        line["time"] = json!(utc_timestamp());
        let mut s = serde_json::to_string(&line)?;
        s.push('\n');
        self.file.write_all(s.as_bytes())?;
        // one fsync per epoch: the log must not lose what the checkpoint knows
        self.file.sync_data()?;
        Ok(())
    }
}

/// The value of a loss tensor (a scalar, or a one-element tensor).
fn scalar(t: &candle_core::Tensor) -> anyhow::Result<f64> {
    if t.elem_count() != 1 {
        bail!("a loss must be a scalar, got shape {:?}", t.dims());
    }
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0])
}

/// Trains `task` per `cfg`, writing checkpoints and the run log under `run_dir`.
pub fn train(task: &mut dyn TrainTask, cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions) -> anyhow::Result<TrainSummary> {
    cfg.check()?;
    let run = RunDir::new(run_dir);
    let n = task.num_train();
    if n == 0 {
        bail!("{}: no training samples", task.name());
    }
    let per_epoch = steps_per_epoch(n, cfg.batch_size, cfg.drop_last);
    if per_epoch == 0 {
        bail!("{}: {n} training samples make no full batch of {} (drop_last)", task.name(), cfg.batch_size);
    }
    let schedule = LrSchedule::for_run(cfg.optimizer.lr, &cfg.schedule, cfg.epochs, per_epoch);
    let goal = task.primary_metric();
    let description = task.describe();
    let data_hash = task.data().hash;
    let cfg_json = serde_json::to_value(cfg)?;
    let vars = named_vars(task.varmap());
    let mut opt = AdamW::new(task.varmap(), cfg.optimizer.clone());

    let (mut epochs_done, mut step, mut best, mut last_metrics) = (0usize, 0usize, None::<BestRecord>, None::<Metrics>);
    if run.has_last() {
        if !opts.resume {
            bail!("{} already holds a checkpoint: pass --resume to continue it, or choose another folder", run_dir.display());
        }
        let st = run.read_state("last")?;
        if st.task != task.name() {
            bail!("{}: the checkpoint is of model `{}`, not `{}`", run_dir.display(), st.task, task.name());
        }
        // a field the checkpoint lacks is newer than the program that wrote it,
        // whose model behaved as the field's default: a new field keeps the old behaviour
        let (newer, diffs): (Vec<_>, Vec<_>) = compare_config(&description.architecture, &st.architecture).into_iter().partition(|d| d.found.is_none());
        for d in newer {
            tracing::warn!("resuming a checkpoint that predates a config field: {d}");
        }
        if !diffs.is_empty() {
            let list: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
            bail!("{}: the checkpoint's architecture differs from this model's: {}", run_dir.display(), list.join("; "));
        }
        if st.data_hash != data_hash {
            bail!("{}: the checkpoint was trained on other data (hash {} vs {})", run_dir.display(), st.data_hash, data_hash);
        }
        for d in compare_config(&cfg_json, &st.train_config) {
            tracing::warn!("resuming with a changed training config: {d}");
        }
        let st = run.restore_last(task.varmap(), &mut opt)?;
        (epochs_done, step, best) = (st.epochs_done, st.step, st.best);
        tracing::info!("resuming {} after epoch {epochs_done} (step {step})", task.name());
    } else if opts.resume {
        tracing::warn!("--resume: no checkpoint in {}, starting afresh", run_dir.display());
    }
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut log = RunLog::open(&run.log_path())?;
    log.write(json!({
        "event": if epochs_done > 0 { "resume" } else { "start" },
        "task": task.name(), "epochs_done": epochs_done, "step": step, "num_train": n,
        "steps_per_epoch": per_epoch, "device": opts.device, "config": cfg_json,
        "architecture": description.architecture, "data_hash": data_hash,
    }))?;

    let show = opts.progress.unwrap_or_else(|| std::io::stderr().is_terminal());
    let last_epoch = opts.stop_after.map_or(cfg.epochs, |s| s.min(cfg.epochs));
    let mut epoch_losses = Vec::new();
    for epoch in epochs_done..last_epoch {
        let started = Instant::now();
        let bar = if show { ProgressBar::with_draw_target(Some(per_epoch as u64), ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() };
        bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})").expect("valid template").progress_chars("=> "));
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, cfg.epochs));
        let batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch as u64, true, cfg.drop_last);
        let (mut loss_sum, mut samples) = (0f64, 0usize);
        let mut parts_sum: Vec<(String, f64)> = Vec::new();
        let (mut norm_sum, mut lr) = (0f64, 0f64);
        for batch in &batches {
            let ctx = StepContext { epoch, step, seed: cfg.seed };
            let micro = if cfg.micro_batch == 0 { batch.len() } else { cfg.micro_batch };
            let mut grads = NamedGrads::new();
            for chunk in batch.chunks(micro) {
                let out = task.train_step(chunk, &ctx).with_context(|| format!("{} epoch {} step {step}", task.name(), epoch + 1))?;
                let value = scalar(&out.total)?;
                if !value.is_finite() {
                    bail!("{}: loss is {value} at epoch {} step {step} (samples {chunk:?})", task.name(), epoch + 1);
                }
                let weight = chunk.len() as f64 / batch.len() as f64;
                let store = (out.total * weight)?.backward()?;
                accumulate_grads(&store, &vars, &mut grads)?;
                loss_sum += value * chunk.len() as f64;
                samples += chunk.len();
                for (name, t) in &out.parts {
                    let v = scalar(t)? * chunk.len() as f64;
                    match parts_sum.iter_mut().find(|p| p.0 == *name) {
                        Some(p) => p.1 += v,
                        None => parts_sum.push((name.clone(), v)),
                    }
                }
            }
            let norm = match cfg.max_grad_norm {
                Some(max) => clip_grad_norm(&mut grads, max)?,
                None => global_grad_norm(&grads)?,
            };
            lr = schedule.lr_at(step);
            opt.step(&grads, lr)?;
            norm_sum += norm;
            step += 1;
            let shown_metric = last_metrics.as_ref().and_then(|m| m.get(&goal.name)).map(|v| format!(", {} {v:.4}", goal.name)).unwrap_or_default();
            bar.set_message(format!("loss {:.4} lr {lr:.2e}{shown_metric}", loss_sum / samples as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let steps_this_epoch = per_epoch as f64;
        let train_loss = loss_sum / samples as f64;
        epoch_losses.push(train_loss);
        let parts: serde_json::Map<String, Value> = parts_sum.iter().map(|(k, v)| (k.clone(), json!(v / samples as f64))).collect();
        log.write(json!({
            "event": "epoch", "epoch": epoch + 1, "step": step, "train_loss": train_loss, "loss_parts": parts,
            "lr": lr, "grad_norm_mean": norm_sum / steps_this_epoch, "seconds": started.elapsed().as_secs_f64(),
        }))?;

        let validate = (epoch + 1) % cfg.validate_every == 0 || epoch + 1 == cfg.epochs;
        let mut is_best = false;
        if validate {
            let t = Instant::now();
            let metrics = task.evaluate(Split::Val).with_context(|| format!("{}: validation after epoch {}", task.name(), epoch + 1))?;
            let value = metrics.get(&goal.name).with_context(|| format!("{}: validation metrics have no `{}` (the primary metric)", task.name(), goal.name))?;
            is_best = goal.improves(value, best.map(|b| b.value));
            if is_best {
                best = Some(BestRecord { epoch: epoch + 1, value });
            }
            log.write(json!({
                "event": "validation", "epoch": epoch + 1, "metrics": metrics.to_json()["summary"],
                "primary": {"name": goal.name, "value": value, "higher_is_better": goal.higher_is_better},
                "best": is_best, "seconds": t.elapsed().as_secs_f64(),
            }))?;
            tracing::info!(
                "{} epoch {}/{}: loss {train_loss:.4}, {} {value:.4}{}",
                task.name(),
                epoch + 1,
                cfg.epochs,
                goal.name,
                if is_best { " (best)" } else { "" }
            );
            last_metrics = Some(metrics);
        } else {
            tracing::info!("{} epoch {}/{}: loss {train_loss:.4}", task.name(), epoch + 1, cfg.epochs);
        }
        let state = CheckpointState {
            format_version: CHECKPOINT_VERSION,
            task: task.name().to_string(),
            epochs_done: epoch + 1,
            step,
            metric: goal.clone(),
            best,
            last_metrics: last_metrics.as_ref().map(|m| m.to_json()["summary"].clone()),
            train_config: cfg_json.clone(),
            architecture: description.architecture.clone(),
            data_hash: data_hash.clone(),
            saved: utc_timestamp(),
        };
        // best first: a crash between the two leaves `last` one epoch behind, which resume redoes
        if is_best {
            run.save_best(task.varmap(), &state)?;
        }
        run.save_last(task.varmap(), &opt, &state)?;
        epochs_done = epoch + 1;
    }
    log.write(json!({"event": if epochs_done == cfg.epochs { "end" } else { "stop" }, "epochs_done": epochs_done, "step": step, "best": best}))?;
    Ok(TrainSummary { epochs_done, steps: step, best, last_metrics, epoch_losses })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::MetricGoal;
    use crate::train::toy::ToyTask;

    fn quiet() -> RunOptions {
        RunOptions { progress: Some(false), device: "cpu".into(), ..Default::default() }
    }

    fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .flat_map(|((na, va), (nb, vb))| {
                assert_eq!(na, nb);
                va.iter().zip(vb).map(|(x, y)| (x - y).abs())
            })
            .fold(0.0, f32::max)
    }

    fn log_lines(dir: &Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn loss_goes_down_and_dice_goes_up() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut task = ToyTask::new(1, 16, 4)?;
        let before = task.evaluate(Split::Val)?.get("dice.mean").unwrap();
        let cfg = TrainConfig { epochs: 10, ..task.train_defaults() };
        let s = train(&mut task, &cfg, dir.path(), &quiet())?;
        assert_eq!(s.epochs_done, 10);
        assert_eq!(s.steps, 40);
        let (first, last) = (s.epoch_losses[0], *s.epoch_losses.last().unwrap());
        assert!(last < 0.5 * first, "losses {:?}", s.epoch_losses);
        let after = s.last_metrics.unwrap().get("dice.mean").unwrap();
        assert!(after > 0.8 && after > before, "dice {before} → {after}");
        // the log: start, then epoch + validation lines with lr, loss parts, metrics
        let log = log_lines(dir.path());
        assert_eq!(log[0]["event"], "start");
        let epochs: Vec<&Value> = log.iter().filter(|l| l["event"] == "epoch").collect();
        assert_eq!(epochs.len(), 10);
        assert!(epochs[0]["lr"].as_f64().unwrap() > 0.0 && epochs[0]["loss_parts"]["ce"].as_f64().is_some());
        assert!((epochs[0]["train_loss"].as_f64().unwrap() - first).abs() < 1e-12);
        let vals: Vec<&Value> = log.iter().filter(|l| l["event"] == "validation").collect();
        assert_eq!(vals.len(), 10);
        assert!(vals[9]["metrics"]["dice.square"].as_f64().is_some());
        assert_eq!(log.last().unwrap()["event"], "end");
        Ok(())
    }

    #[test]
    fn resumed_run_equals_uninterrupted_run() -> anyhow::Result<()> {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let mut cfg = ToyTask::new(3, 10, 4)?.train_defaults();
        // 10 samples in batches of 4 (last one of 2), accumulated 2 at a time
        cfg.micro_batch = 2;
        cfg.seed = 11;
        let mut whole = ToyTask::new(3, 10, 4)?;
        train(&mut whole, &cfg, a.path(), &quiet())?;

        let mut first = ToyTask::new(3, 10, 4)?;
        let s = train(&mut first, &cfg, b.path(), &RunOptions { stop_after: Some(2), ..quiet() })?;
        assert_eq!((s.epochs_done, s.steps), (2, 6));
        // a fresh process: new model with the same init, then resume
        let mut resumed = ToyTask::new(3, 10, 4)?;
        let e = train(&mut resumed, &cfg, b.path(), &quiet()).unwrap_err();
        assert!(e.to_string().contains("pass --resume"), "{e}");
        let s = train(&mut resumed, &cfg, b.path(), &RunOptions { resume: true, ..quiet() })?;
        assert_eq!((s.epochs_done, s.steps), (4, 12));
        let d = max_diff(&whole.weights(), &resumed.weights());
        assert!(d <= 1e-6, "weights differ by {d}");
        // and they moved: the test would pass trivially otherwise
        assert!(max_diff(&whole.weights(), &ToyTask::new(3, 10, 4)?.weights()) > 1e-2);
        assert_eq!(log_lines(b.path()).iter().filter(|l| l["event"] == "resume").count(), 1);
        Ok(())
    }

    #[test]
    fn a_checkpoint_predating_a_field_resumes_and_one_of_another_shape_does_not() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = ToyTask::new(3, 8, 4)?.train_defaults();
        train(&mut ToyTask::new(3, 8, 4)?, &cfg, dir.path(), &RunOptions { stop_after: Some(1), ..quiet() })?;
        let state = dir.path().join("last/state.json");
        let edit = |arch: Value| -> anyhow::Result<()> {
            let mut st: Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
            st["architecture"] = arch;
            Ok(std::fs::write(&state, serde_json::to_string(&st)?)?)
        };
        // written by a program that had no `hidden` field yet
        edit(json!({}))?;
        let s = train(&mut ToyTask::new(3, 8, 4)?, &cfg, dir.path(), &RunOptions { resume: true, stop_after: Some(2), ..quiet() })?;
        assert_eq!(s.epochs_done, 2);
        edit(json!({"hidden": 5}))?;
        let e = train(&mut ToyTask::new(3, 8, 4)?, &cfg, dir.path(), &RunOptions { resume: true, ..quiet() }).unwrap_err();
        assert!(e.to_string().contains("architecture differs") && e.to_string().contains("hidden"), "{e}");
        Ok(())
    }

    #[test]
    fn accumulated_micro_batches_equal_the_whole_batch() -> anyhow::Result<()> {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let cfg = TrainConfig { epochs: 2, ..ToyTask::new(5, 12, 4)?.train_defaults() };
        let mut whole = ToyTask::new(5, 12, 4)?;
        train(&mut whole, &cfg, a.path(), &quiet())?;
        let mut micro = ToyTask::new(5, 12, 4)?;
        train(&mut micro, &TrainConfig { micro_batch: 1, ..cfg }, b.path(), &quiet())?;
        let d = max_diff(&whole.weights(), &micro.weights());
        assert!(d < 1e-5, "weights differ by {d}");
        Ok(())
    }

    #[test]
    fn best_checkpoint_is_the_best_validation_epoch() -> anyhow::Result<()> {
        for (goal, scripted, best_epoch) in
            [(MetricGoal::higher("scripted"), vec![0.3, 0.7, 0.5, 0.6], 2usize), (MetricGoal::lower("scripted"), vec![0.5, 0.7, 0.2, 0.4], 3)]
        {
            let dir = tempfile::tempdir()?;
            let mut task = ToyTask::new(2, 8, 4)?;
            task.goal = goal.clone();
            task.scripted_val = Some(scripted.clone());
            let cfg = task.train_defaults();
            let s = train(&mut task, &cfg, dir.path(), &quiet())?;
            assert_eq!(s.best, Some(BestRecord { epoch: best_epoch, value: scripted[best_epoch - 1] }));
            let run = RunDir::new(dir.path());
            let st = run.read_state("best")?;
            assert_eq!(st.epochs_done, best_epoch);
            assert_eq!(st.metric, goal);
            // the best folder holds the weights of that epoch, not the last ones
            let fresh = ToyTask::new(99, 8, 4)?;
            run.restore_best(fresh.varmap())?;
            assert_eq!(max_diff(&fresh.weights(), &task.snapshots[best_epoch - 1]), 0.0);
            assert!(max_diff(&fresh.weights(), &task.snapshots[3]) > 0.0);
            let flags: Vec<bool> = log_lines(dir.path()).iter().filter(|l| l["event"] == "validation").map(|l| l["best"].as_bool().unwrap()).collect();
            let mut want = vec![false; 4];
            let mut b: Option<f64> = None;
            for (i, v) in scripted.iter().enumerate() {
                if goal.improves(*v, b) {
                    want[i] = true;
                    b = Some(*v);
                }
            }
            assert_eq!(flags, want);
        }
        Ok(())
    }

    #[test]
    fn missing_primary_metric_and_bad_config_are_named() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut task = ToyTask::new(2, 8, 4)?;
        task.goal = MetricGoal::higher("nonexistent");
        let cfg = task.train_defaults();
        let e = train(&mut task, &cfg, dir.path(), &quiet()).unwrap_err();
        assert!(format!("{e:#}").contains("no `nonexistent`"), "{e:#}");
        let e = train(&mut task, &TrainConfig { batch_size: 0, ..cfg }, dir.path(), &quiet()).unwrap_err();
        assert!(e.to_string().contains("batch_size"), "{e}");
        Ok(())
    }
}
