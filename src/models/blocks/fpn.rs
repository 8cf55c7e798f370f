//! Feature pyramid network (MODELS.md 2, S3): lateral 1x1 projections, top-down
//! pathway (nearest upsampling of the coarser map added to the finer lateral),
//! 3x3 smoothing, and P6 as a stride-2 subsample of P5 (torchvision's
//! `LastLevelMaxPool`). Names follow torchvision (`inner_blocks.i`, `layer_blocks.i`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::conv::{Conv2d, ConvConfig};
use super::pool::{max_pool2d, Pool2dConfig};
use super::resize::resize_nearest;

#[derive(Debug, Clone)]
pub struct Fpn {
    inner: Vec<Conv2d>,
    layer: Vec<Conv2d>,
    extra_p6: bool,
}

impl Fpn {
    /// `in_channels`: channels of C2..C5 (finest first); every output has `out_channels`.
    pub fn load(vb: VarBuilder, in_channels: &[usize], out_channels: usize, extra_p6: bool) -> Result<Fpn> {
        let mut inner = Vec::new();
        let mut layer = Vec::new();
        for (i, &c) in in_channels.iter().enumerate() {
            inner.push(Conv2d::load(vb.pp(format!("inner_blocks.{i}")), c, out_channels, ConvConfig::same(1, 1, 1, true))?);
            layer.push(Conv2d::load(vb.pp(format!("layer_blocks.{i}")), out_channels, out_channels, ConvConfig::same(3, 1, 1, true))?);
        }
        Ok(Fpn { inner, layer, extra_p6 })
    }

    /// P2..P5 (and P6), finest first, from C2..C5.
    pub fn forward(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        if feats.len() != self.inner.len() {
            candle_core::bail!("fpn: expected {} feature maps, got {}", self.inner.len(), feats.len());
        }
        let n = feats.len();
        let mut outs = vec![None; n];
        let mut top = self.inner[n - 1].forward(&feats[n - 1])?;
        outs[n - 1] = Some(self.layer[n - 1].forward(&top)?);
        for i in (0..n - 1).rev() {
            let lateral = self.inner[i].forward(&feats[i])?;
            let (_, _, h, w) = lateral.dims4()?;
            top = (lateral + resize_nearest(&top, &[h, w])?)?;
            outs[i] = Some(self.layer[i].forward(&top)?);
        }
        let mut outs: Vec<Tensor> = outs.into_iter().map(|t| t.expect("every level set")).collect();
        if self.extra_p6 {
            let p6 = max_pool2d(&outs[n - 1], &Pool2dConfig { kernel: 1, stride: 2, padding: 0 })?;
            outs.push(p6);
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn shapes_and_top_down_values() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let fpn = Fpn::load(vb.clone(), &[2, 3], 2, true)?;
        let c2 = det_tensor(&[1, 2, 5, 6], 1);
        let c3 = det_tensor(&[1, 3, 3, 3], 2);
        let p = fpn.forward(&[c2.clone(), c3.clone()])?;
        let dims: Vec<&[usize]> = p.iter().map(|t| t.dims()).collect();
        assert_eq!(dims, vec![&[1, 2, 5, 6][..], &[1, 2, 3, 3], &[1, 2, 2, 2]]);
        // P2 by hand: layer0(inner0(c2) + nearest(inner1(c3)))
        let inner1 = Conv2d::load(vb.pp("inner_blocks.1"), 3, 2, ConvConfig::same(1, 1, 1, true))?;
        let inner0 = Conv2d::load(vb.pp("inner_blocks.0"), 2, 2, ConvConfig::same(1, 1, 1, true))?;
        let layer0 = Conv2d::load(vb.pp("layer_blocks.0"), 2, 2, ConvConfig::same(3, 1, 1, true))?;
        let t = inner1.forward(&c3)?;
        let up = t.index_select(&Tensor::new(&[0u32, 0, 1, 1, 2], &Device::Cpu)?, 2)?.index_select(&Tensor::new(&[0u32, 0, 1, 1, 2, 2], &Device::Cpu)?, 3)?;
        let want = layer0.forward(&(inner0.forward(&c2)? + up)?)?;
        let diff = (&p[0] - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12);
        // P6 = P5 at even positions
        assert_eq!(p[2].flatten_all()?.to_vec1::<f64>()?[3], p[1].get(0)?.get(0)?.get(2)?.get(2)?.to_scalar::<f64>()?);
        let t = det_tensor(&[1, 2, 5, 6], 3);
        assert!(gradcheck(&c2, |c2| (fpn.forward(&[c2.clone(), c3.clone()])?[0].clone() * &t)?.sum_all())? < 1e-6);
        let t = det_tensor(&[1, 2, 2, 2], 4);
        assert!(gradcheck(&c3, |c3| (fpn.forward(&[c2.clone(), c3.clone()])?[2].clone() * &t)?.sum_all())? < 1e-6);
        Ok(())
    }
}
