//! PSPNet pyramid pooling module (MODELS.md 5): adaptive average pooling to
//! each bin size, 1x1 conv + batch norm + ReLU reducing channels to
//! C / bins, bilinear upsampling back, concatenation with the input.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use super::conv::{ConvBnAct, ConvConfig};
use super::resize::{adaptive_avg_pool2d, resize_bilinear};

#[derive(Debug, Clone)]
pub struct PyramidPooling {
    bins: Vec<usize>,
    stages: Vec<ConvBnAct>,
    out_channels: usize,
}

impl PyramidPooling {
    /// Bins 1, 2, 3, 6 in PSPNet.
    pub fn load(vb: VarBuilder, in_channels: usize, bins: &[usize]) -> Result<PyramidPooling> {
        if bins.is_empty() || bins.contains(&0) {
            candle_core::bail!("pyramid pooling: bins must be positive sizes, got {bins:?}");
        }
        let reduced = (in_channels / bins.len()).max(1);
        let stages = (0..bins.len())
            .map(|i| ConvBnAct::load(vb.pp(format!("stages.{i}")), in_channels, reduced, ConvConfig::same(1, 1, 1, false), true))
            .collect::<Result<Vec<_>>>()?;
        Ok(PyramidPooling { bins: bins.to_vec(), stages, out_channels: in_channels + reduced * bins.len() })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
}

impl ModuleT for PyramidPooling {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut parts = vec![x.clone()];
        for (b, stage) in self.bins.iter().zip(&self.stages) {
            let pooled = stage.forward_t(&adaptive_avg_pool2d(x, *b, *b)?, train)?;
            parts.push(resize_bilinear(&pooled, h, w)?);
        }
        Tensor::cat(&parts, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn shapes_bin1_is_global_average_and_gradients() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let ppm = PyramidPooling::load(vb.clone(), 8, &[1, 2, 3, 6])?;
        // seeded: an unseeded draw can put a ReLU kink inside the finite-difference step
        crate::models::init::seeded_init(&vm, 3)?;
        assert_eq!(ppm.out_channels(), 16);
        let x = det_tensor(&[2, 8, 7, 9], 1);
        let y = ppm.forward_t(&x, false)?;
        assert_eq!(y.dims(), &[2, 16, 7, 9]);
        // eval mode with fresh running stats (mean 0, var 1): bin 1 = relu(w . mean(x) / sqrt(1 + eps)) everywhere
        let w = vb.get((2, 8, 1, 1), "stages.0.conv.weight")?.reshape((2, 8))?;
        let mean = x.get(0)?.flatten_from(1)?.mean(1)?;
        let want = (w.matmul(&mean.unsqueeze(1)?)?.flatten_all()? / (1.0f64 + 1e-5).sqrt())?.relu()?.to_vec1::<f64>()?;
        let got = y.get(0)?.narrow(0, 8, 2)?;
        for c in 0..2 {
            let v = got.get(c)?.flatten_all()?.to_vec1::<f64>()?;
            assert!(v.iter().all(|g| (g - want[c]).abs() < 1e-9), "{v:?} vs {}", want[c]);
        }
        let t = det_tensor(&[2, 16, 7, 9], 2);
        assert!(gradcheck(&x, |x| (ppm.forward_t(x, false)? * &t)?.sum_all())? < 1e-5);
        Ok(())
    }
}
