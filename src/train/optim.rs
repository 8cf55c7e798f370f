//! AdamW with decoupled weight decay, learning-rate schedule (linear warm-up,
//! cosine decay to a floor) and gradient clipping by global L2 norm.
//!
//! candle_nn's AdamW keeps its state in private fields keyed by position, so
//! a run could not be checkpointed and resumed; this one keys everything by
//! the `VarMap` name, in sorted order, so that state files are stable and
//! floating-point sums run in the same order in every process (needed for a
//! resumed run to equal an uninterrupted one).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

/// Gradients by variable name (sorted, so reductions over them are deterministic).
pub type NamedGrads = BTreeMap<String, Tensor>;

/// The variables of a `VarMap`, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Adds the gradients of `store` for `vars` into `into` (gradient accumulation
/// over micro-batches). Variables without a gradient (e.g. batch-norm running
/// statistics, or a head unused by this batch) are left out.
pub fn accumulate_grads(store: &GradStore, vars: &[(String, Var)], into: &mut NamedGrads) -> candle_core::Result<()> {
    for (name, var) in vars {
        if let Some(g) = store.get(var.as_tensor()) {
            // A gradient still references the forward graph it came from;
            // keeping it attached would keep every step's activations alive.
            let g = g.detach();
            let sum = match into.remove(name) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            into.insert(name.clone(), sum);
        }
    }
    Ok(())
}

/// Global L2 norm of all gradients, computed in f64.
pub fn global_grad_norm(grads: &NamedGrads) -> candle_core::Result<f64> {
    let mut sq = 0f64;
    for g in grads.values() {
        sq += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`.
/// Returns the norm before clipping (what the run log records).
pub fn clip_grad_norm(grads: &mut NamedGrads, max_norm: f64) -> candle_core::Result<f64> {
    let norm = global_grad_norm(grads)?;
    if norm.is_finite() && norm > max_norm && norm > 0.0 {
        // exactly max_norm afterwards (PyTorch adds 1e-6 to the divisor; we need not)
        let scale = max_norm / norm;
        for g in grads.values_mut() {
            *g = g.affine(scale, 0.0)?;
        }
    }
    Ok(norm)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay: p ← p·(1 − lr·wd) before the Adam update.
    pub weight_decay: f64,
    /// Apply weight decay to rank-1 tensors (biases, norm scales) too.
    /// PyTorch's AdamW does by default; many recipes exclude them.
    pub decay_rank1: bool,
}

impl Default for AdamWConfig {
    /// PyTorch `torch.optim.AdamW` defaults.
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay_rank1: true }
    }
}

struct ParamState {
    m: Tensor,
    v: Tensor,
    /// Updates applied to this parameter (PyTorch keeps a per-parameter step too).
    step: u64,
}

/// AdamW over the variables of a `VarMap`, with state saveable by name.
pub struct AdamW {
    cfg: AdamWConfig,
    vars: Vec<(String, Var)>,
    state: BTreeMap<String, ParamState>,
}

impl AdamW {
    /// Optimises every variable `varmap` holds now (build the model first).
    pub fn new(varmap: &VarMap, cfg: AdamWConfig) -> Self {
        AdamW { cfg, vars: named_vars(varmap), state: BTreeMap::new() }
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// One update with learning rate `lr` (from the schedule). Variables
    /// without a gradient in `grads` are not touched.
    pub fn step(&mut self, grads: &NamedGrads, lr: f64) -> candle_core::Result<()> {
        let AdamWConfig { beta1, beta2, eps, weight_decay, decay_rank1, .. } = self.cfg;
        for (name, var) in &self.vars {
            let Some(g) = grads.get(name) else { continue };
            let g = g.to_dtype(var.dtype())?.detach();
            if !self.state.contains_key(name) {
                let z = var.as_tensor().zeros_like()?;
                self.state.insert(name.clone(), ParamState { m: z.clone(), v: z, step: 0 });
            }
            let st = self.state.get_mut(name).expect("inserted above");
            st.step += 1;
            // detached: the moments must not chain the steps' graphs together
            st.m = ((&st.m * beta1)? + (&g * (1.0 - beta1))?)?.detach();
            st.v = ((&st.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?.detach();
            let bias1 = 1.0 - beta1.powi(st.step as i32);
            let bias2 = 1.0 - beta2.powi(st.step as i32);
            let decay = if var.rank() <= 1 && !decay_rank1 { 0.0 } else { weight_decay };
            let p = var.as_tensor();
            let p = if decay != 0.0 { (p * (1.0 - lr * decay))? } else { p.clone() };
            // PyTorch: denom = sqrt(v) / sqrt(bias2) + eps; p -= lr / bias1 * m / denom
            let denom = ((st.v.sqrt()? / bias2.sqrt())? + eps)?;
            let update = ((&st.m / denom)? * (lr / bias1))?;
            var.set(&(p - update)?)?;
        }
        Ok(())
    }

    /// The state as named tensors: `m.NAME`, `v.NAME`, `step.NAME` (i64, shape [1]).
    pub fn state_tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, s) in &self.state {
            out.insert(format!("m.{name}"), s.m.clone());
            out.insert(format!("v.{name}"), s.v.clone());
            out.insert(format!("step.{name}"), Tensor::new(&[s.step as i64], &Device::Cpu)?);
        }
        Ok(out)
    }

    /// Restores the state from `state_tensors` output. Every entry must name a
    /// variable of this optimiser with the variable's shape.
    pub fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        let vars: BTreeMap<&str, &Var> = self.vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let mut state = BTreeMap::new();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix("step.") else {
                if !(key.starts_with("m.") || key.starts_with("v.")) {
                    bail!("optimizer state: unexpected tensor `{key}` (expected m.NAME, v.NAME, step.NAME)");
                }
                continue;
            };
            let var = vars.get(name).with_context(|| format!("optimizer state holds `{name}`, which the model does not have"))?;
            let get = |prefix: &str| -> anyhow::Result<Tensor> {
                let t = tensors.get(&format!("{prefix}.{name}")).with_context(|| format!("optimizer state: `{prefix}.{name}` missing"))?;
                if t.dims() != var.dims() {
                    bail!("optimizer state: `{prefix}.{name}` has shape {:?}, the variable {:?}", t.dims(), var.dims());
                }
                Ok(t.to_dtype(var.dtype())?.to_device(var.device())?)
            };
            let step = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            let step = *step.first().with_context(|| format!("optimizer state: `{key}` is empty"))?;
            state.insert(name.to_string(), ParamState { m: get("m")?, v: get("v")?, step: step as u64 });
        }
        let orphan = tensors.keys().filter_map(|k| k.strip_prefix("m.").or_else(|| k.strip_prefix("v."))).find(|n| !state.contains_key(*n));
        if let Some(n) = orphan {
            bail!("optimizer state: moments for `{n}` without `step.{n}`");
        }
        self.state = state;
        Ok(())
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::models::weights::save_tensors_atomic(&self.state_tensors()?, path)
    }

    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("reading {}", path.display()))?;
        self.load_state_tensors(&t).with_context(|| format!("in {}", path.display()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Linear warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// The cosine decays to `floor_ratio × lr`.
    pub floor_ratio: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig { warmup_epochs: 1.0, floor_ratio: 0.01 }
    }
}

/// Learning rate per optimiser step: linear warm-up from lr/warmup to lr over
/// `warmup_steps`, then cosine decay to `floor_lr` at `total_steps`, flat after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub floor_lr: f64,
}

impl LrSchedule {
    pub fn new(base_lr: f64, warmup_steps: usize, total_steps: usize, floor_lr: f64) -> Self {
        LrSchedule { base_lr, warmup_steps, total_steps, floor_lr }
    }

    /// The schedule of a run of `epochs × steps_per_epoch` steps.
    pub fn for_run(lr: f64, cfg: &ScheduleConfig, epochs: usize, steps_per_epoch: usize) -> Self {
        let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize;
        LrSchedule::new(lr, warmup, epochs * steps_per_epoch, lr * cfg.floor_ratio)
    }

    /// Learning rate of step `step` (0-based: the first update is step 0).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.floor_lr + (self.base_lr - self.floor_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Init;

    fn one_var(values: &[f64]) -> (VarMap, Tensor) {
        let vm = VarMap::new();
        let t = vm.get(values.len(), "w", Init::Const(0.0), DType::F64, &Device::Cpu).unwrap();
        vm.data().lock().unwrap()["w"].set(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap();
        (vm, t)
    }

    fn grads(values: &[f64]) -> NamedGrads {
        BTreeMap::from([("w".to_string(), Tensor::new(values, &Device::Cpu).unwrap())])
    }

    /// torch.optim.AdamW's update for one scalar, written out (the reference).
    fn torch_adamw(p: &mut f64, m: &mut f64, v: &mut f64, t: i32, g: f64, lr: f64, c: &AdamWConfig) {
        *p *= 1.0 - lr * c.weight_decay;
        *m = c.beta1 * *m + (1.0 - c.beta1) * g;
        *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let denom = v.sqrt() / bc2.sqrt() + c.eps;
        *p -= lr / bc1 * *m / denom;
    }

    #[test]
    fn gradients_and_moments_hold_no_graph() -> candle_core::Result<()> {
        // a gradient of a nonlinear loss references the forward graph; kept
        // attached in the accumulator or the moments, every step's activations
        // would stay alive (this leaked ~2 GB per step on SSD512)
        let (vm, w) = one_var(&[1.0, -2.0]);
        let vars = named_vars(&vm);
        let store = (w.sqr()? * &w)?.sum_all()?.backward()?;
        assert!(store.get(&w).expect("w has a gradient").track_op());
        let mut acc = NamedGrads::new();
        accumulate_grads(&store, &vars, &mut acc)?;
        accumulate_grads(&store, &vars, &mut acc)?;
        assert!(!acc["w"].track_op());
        let mut opt = AdamW::new(&vm, AdamWConfig::default());
        opt.step(&acc, 1e-3)?;
        let state = opt.state_tensors()?;
        assert!(!state["m.w"].track_op() && !state["v.w"].track_op());
        Ok(())
    }

    #[test]
    fn first_step_matches_hand_numbers() -> candle_core::Result<()> {
        let (vm, w) = one_var(&[1.0, -2.0]);
        let mut opt = AdamW::new(&vm, AdamWConfig { lr: 0.1, weight_decay: 0.01, ..Default::default() });
        opt.step(&grads(&[0.5, -0.1]), 0.1)?;
        // step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps) after decay by (1 − 0.1·0.01)
        let got = w.to_vec1::<f64>()?;
        let want: [f64; 2] = [0.999 - 0.1 * 0.5 / (0.5 + 1e-8), -1.998 + 0.1 * 0.1 / (0.1 + 1e-8)];
        assert!((want[0] - 0.899_000_002).abs() < 1e-9 && (want[1] + 1.898_000_01).abs() < 1e-9);
        for i in 0..2 {
            assert!((got[i] - want[i]).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn three_steps_match_pytorch_formula_and_rank1_exclusion() -> candle_core::Result<()> {
        let cfg = AdamWConfig { lr: 0.05, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.1, decay_rank1: true };
        let (vm, w) = one_var(&[0.3, -0.7, 1.5]);
        let mut opt = AdamW::new(&vm, cfg.clone());
        let gs = [[0.2, -0.4, 0.01], [-0.3, 0.1, 0.02], [0.05, 0.05, -1.0]];
        let lrs = [0.05, 0.04, 0.02];
        let mut p = [0.3, -0.7, 1.5];
        let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
        for (t, (g, lr)) in gs.iter().zip(lrs).enumerate() {
            opt.step(&grads(g), lr)?;
            for i in 0..3 {
                torch_adamw(&mut p[i], &mut m[i], &mut v[i], t as i32 + 1, g[i], lr, &cfg);
            }
        }
        let got = w.to_vec1::<f64>()?;
        for i in 0..3 {
            assert!((got[i] - p[i]).abs() < 1e-12, "{got:?} vs {p:?}");
        }
        // without decay on rank-1 tensors the same run ends elsewhere, by the decay terms only
        let (vm2, w2) = one_var(&[0.3, -0.7, 1.5]);
        let mut opt2 = AdamW::new(&vm2, AdamWConfig { decay_rank1: false, ..cfg.clone() });
        let nodecay = AdamWConfig { weight_decay: 0.0, ..cfg };
        let mut p = [0.3, -0.7, 1.5];
        let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
        for (t, (g, lr)) in gs.iter().zip(lrs).enumerate() {
            opt2.step(&grads(g), lr)?;
            for i in 0..3 {
                torch_adamw(&mut p[i], &mut m[i], &mut v[i], t as i32 + 1, g[i], lr, &nodecay);
            }
        }
        let got = w2.to_vec1::<f64>()?;
        for i in 0..3 {
            assert!((got[i] - p[i]).abs() < 1e-12, "{got:?} vs {p:?}");
        }
        Ok(())
    }

    #[test]
    fn state_round_trip_continues_identically() -> anyhow::Result<()> {
        let gs = [[0.2, -0.4], [-0.3, 0.1], [0.05, 0.05], [0.5, -0.5]];
        let (vm, w) = one_var(&[0.3, -0.7]);
        let mut opt = AdamW::new(&vm, AdamWConfig::default());
        for g in &gs {
            opt.step(&grads(g), 0.01)?;
        }
        let (vm2, w2) = one_var(&[0.3, -0.7]);
        let mut first = AdamW::new(&vm2, AdamWConfig::default());
        for g in &gs[..2] {
            first.step(&grads(g), 0.01)?;
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("opt.safetensors");
        first.save(&path)?;
        let mut resumed = AdamW::new(&vm2, AdamWConfig::default());
        resumed.load(&path)?;
        for g in &gs[2..] {
            resumed.step(&grads(g), 0.01)?;
        }
        assert_eq!(w.to_vec1::<f64>()?, w2.to_vec1::<f64>()?);
        // a state for another model is refused with the name
        let (vm3, _) = one_var(&[0.0, 0.0, 0.0]);
        let e = AdamW::new(&vm3, AdamWConfig::default()).load(&path).unwrap_err();
        assert!(format!("{e:#}").contains("`m.w` has shape [2], the variable [3]"), "{e:#}");
        Ok(())
    }

    #[test]
    fn vars_without_gradient_are_untouched() -> candle_core::Result<()> {
        let (vm, w) = one_var(&[1.0, 2.0]);
        let mut opt = AdamW::new(&vm, AdamWConfig::default());
        opt.step(&NamedGrads::new(), 0.1)?;
        assert_eq!(w.to_vec1::<f64>()?, [1.0, 2.0]);
        assert!(opt.state_tensors()?.is_empty());
        Ok(())
    }

    #[test]
    fn schedule_values_at_key_steps() {
        let s = LrSchedule::new(1e-3, 10, 110, 1e-5);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
        assert!(close(s.lr_at(0), 1e-4));
        assert!(close(s.lr_at(4), 5e-4));
        assert!(close(s.lr_at(9), 1e-3));
        assert!(close(s.lr_at(10), 1e-3));
        // half way through the cosine: the mean of peak and floor
        assert!(close(s.lr_at(60), 1e-5 + (1e-3 - 1e-5) * 0.5));
        // a quarter: floor + (peak − floor)(1 + cos(π/4))/2
        assert!(close(s.lr_at(35), 1e-5 + (1e-3 - 1e-5) * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)));
        assert!(close(s.lr_at(110), 1e-5));
        assert!(close(s.lr_at(500), 1e-5));
        // no warm-up: starts at the peak
        assert!(close(LrSchedule::new(0.1, 0, 10, 0.0).lr_at(0), 0.1));
        let run = LrSchedule::for_run(0.01, &ScheduleConfig { warmup_epochs: 0.5, floor_ratio: 0.1 }, 4, 8);
        assert_eq!(run, LrSchedule::new(0.01, 4, 32, 0.001));
    }

    #[test]
    fn clipping_scales_to_exactly_max_norm() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut g = NamedGrads::new();
        g.insert("a".into(), Tensor::new(&[3.0f64, 0.0], &dev)?);
        g.insert("b".into(), Tensor::new(&[[0.0f64, 4.0]], &dev)?);
        let before = clip_grad_norm(&mut g, 1.0)?;
        assert_eq!(before, 5.0);
        assert!((global_grad_norm(&g)? - 1.0).abs() < 1e-15);
        let a = g["a"].to_vec1::<f64>()?;
        let b = g["b"].to_vec2::<f64>()?;
        assert!((a[0] - 0.6).abs() < 1e-15 && a[1] == 0.0 && b[0][0] == 0.0 && (b[0][1] - 0.8).abs() < 1e-15);
        // below the limit: unchanged
        let before = clip_grad_norm(&mut g, 2.0)?;
        assert!((before - 1.0).abs() < 1e-15);
        assert_eq!(g["a"].to_vec1::<f64>()?, a);
        Ok(())
    }

    #[test]
    fn accumulation_sums_per_name() -> candle_core::Result<()> {
        let (vm, w) = one_var(&[1.0, 2.0]);
        let vars = named_vars(&vm);
        let mut acc = NamedGrads::new();
        for k in [1.0, 3.0] {
            let store = (&w * k)?.sum_all()?.backward()?;
            accumulate_grads(&store, &vars, &mut acc)?;
        }
        assert_eq!(acc["w"].to_vec1::<f64>()?, [4.0, 4.0]);
        Ok(())
    }
}
