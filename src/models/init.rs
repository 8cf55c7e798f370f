//! Seeded weight initialisation. candle's random initialisers cannot be seeded
//! on the CPU, so a run would not be reproducible; this overwrites the randomly
//! initialised tensors of a `VarMap` from our own generator, by sorted name.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;

use crate::rng::{Purpose, Rng};

/// How weights (tensors of rank >= 2) are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightInit {
    /// PyTorch's default for conv / linear layers, U(-1/sqrt(fan_in),
    /// 1/sqrt(fan_in)): variance 1/(3 fan_in), so a plain ReLU stack loses
    /// a factor 6 of signal power per layer. Fine with batch norm or a
    /// pre-trained start, not for a deep plain network from scratch.
    #[default]
    TorchDefault,
    /// He et al. 2015 for ReLU networks, U(-sqrt(6/fan_in), sqrt(6/fan_in)):
    /// variance 2/fan_in keeps the signal's power through each ReLU layer.
    HeUniform,
}

/// Tensors of rank >= 2 (conv / linear weights) get PyTorch's default
/// Kaiming-uniform init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases (`*.bias`
/// of rank 1 whose layer has such a weight) become zero; everything else
/// (batch-norm affine and running statistics, constants) keeps its
/// deterministic initial value.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    seeded_init_as(varmap, seed, WeightInit::TorchDefault)
}

/// As [`seeded_init`], with the weights drawn as `init` says.
pub fn seeded_init_as(varmap: &VarMap, seed: u64, init: WeightInit) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let var = &data[*name];
        let dims = var.dims().to_vec();
        if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let bound = match init {
                WeightInit::TorchDefault => 1.0,
                WeightInit::HeUniform => 6f64.sqrt(),
            } / (fan_in.max(1) as f64).sqrt();
            let mut rng = Rng::stream(Purpose::Initialization, seed, 0, i as u64);
            let v: Vec<f64> = (0..var.elem_count()).map(|_| rng.range(-bound, bound)).collect();
            var.set(&Tensor::from_vec(v, dims, var.device())?.to_dtype(var.dtype())?)?;
        } else if let Some(layer) = name.strip_suffix(".bias") {
            if data.get(&format!("{layer}.weight")).is_some_and(|w| w.rank() >= 2) {
                var.set(&var.zeros_like()?)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn build(seed: u64) -> Result<VarMap> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _ = crate::models::blocks::conv::ConvBnAct::load(vb.pp("a"), 3, 4, crate::models::blocks::conv::ConvConfig::same(3, 1, 1, false), true)?;
        let _ = candle_nn::linear(4, 2, vb.pp("fc"))?;
        seeded_init(&vm, seed)?;
        Ok(vm)
    }

    fn values(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn same_seed_same_weights_and_bounds() -> Result<()> {
        let (a, b, c) = (build(1)?, build(1)?, build(2)?);
        assert_eq!(values(&a, "a.conv.weight"), values(&b, "a.conv.weight"));
        assert_ne!(values(&a, "a.conv.weight"), values(&c, "a.conv.weight"));
        let bound = 1.0 / 27f32.sqrt();
        assert!(values(&a, "a.conv.weight").iter().all(|v| v.abs() <= bound));
        assert_eq!(values(&a, "fc.bias"), vec![0.0, 0.0]);
        assert_eq!(values(&a, "a.bn.weight"), vec![1.0; 4]);
        assert_eq!(values(&a, "a.bn.running_var"), vec![1.0; 4]);
        // He: six times the variance, same stream
        seeded_init_as(&c, 1, WeightInit::HeUniform)?;
        let he = values(&c, "a.conv.weight");
        for (x, y) in he.iter().zip(values(&a, "a.conv.weight")) {
            assert!((x - y * 6f32.sqrt()).abs() < 1e-6);
        }
        Ok(())
    }
}
