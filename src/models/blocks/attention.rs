//! Attention modules: CBAM (MODELS.md 5) and the spatial channel aggregation
//! module of the liver U-Net (MODELS.md 4): a channel gate and an attention gate
//! on the skip connection. The gates work on (N, C, ...) of any spatial rank.

use candle_core::{Module, Result, Tensor};
use candle_nn::ops::sigmoid;
use candle_nn::{Linear, VarBuilder};

use super::conv::{Conv2d, ConvConfig, Pointwise};
use super::resize::resize_nearest;

/// Mean and max over all spatial positions: two (N, C) tensors.
fn spatial_avg_max(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let flat = x.flatten_from(2)?;
    Ok((flat.mean(2)?, flat.max(2)?))
}

/// Shared two-layer MLP with reduction `r` (CBAM's channel MLP, the channel gate's FC).
#[derive(Debug, Clone)]
struct ReductionMlp {
    fc1: Linear,
    fc2: Linear,
}

impl ReductionMlp {
    fn load(vb: VarBuilder, channels: usize, reduction: usize, bias: bool) -> Result<ReductionMlp> {
        let hidden = (channels / reduction).max(1);
        let lin = |vb: VarBuilder, i, o| if bias { candle_nn::linear(i, o, vb) } else { candle_nn::linear_no_bias(i, o, vb) };
        Ok(ReductionMlp { fc1: lin(vb.pp("fc1"), channels, hidden)?, fc2: lin(vb.pp("fc2"), hidden, channels)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}

/// Broadcasts per-(N, C) weights over the spatial dims of `x`.
fn scale_channels(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut shape = w.dims().to_vec();
    shape.resize(x.rank(), 1);
    x.broadcast_mul(&w.reshape(shape)?)
}

/// CBAM: channel attention (avg- and max-pooled descriptors through a shared
/// MLP, added, sigmoid) then spatial attention (channel mean and max,
/// concatenated, 7x7 conv, sigmoid). 2D.
#[derive(Debug, Clone)]
pub struct Cbam {
    mlp: ReductionMlp,
    spatial: Conv2d,
}

impl Cbam {
    pub fn load(vb: VarBuilder, channels: usize, reduction: usize, spatial_kernel: usize) -> Result<Cbam> {
        let mlp = ReductionMlp::load(vb.pp("channel"), channels, reduction, false)?;
        let spatial = Conv2d::load(vb.pp("spatial"), 2, 1, ConvConfig::same(spatial_kernel, 1, 1, false))?;
        Ok(Cbam { mlp, spatial })
    }
}

impl Module for Cbam {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (avg, max) = spatial_avg_max(x)?;
        let ca = sigmoid(&(self.mlp.forward(&avg)? + self.mlp.forward(&max)?)?)?;
        let x = scale_channels(x, &ca)?;
        let desc = Tensor::cat(&[x.mean_keepdim(1)?, x.max_keepdim(1)?], 1)?;
        let sa = sigmoid(&self.spatial.forward(&desc)?)?;
        x.broadcast_mul(&sa)
    }
}

/// Channel gate: global average pool -> FC (reduction r) -> ReLU -> FC -> sigmoid -> scale.
#[derive(Debug, Clone)]
pub struct ChannelGate {
    mlp: ReductionMlp,
}

impl ChannelGate {
    pub fn load(vb: VarBuilder, channels: usize, reduction: usize) -> Result<ChannelGate> {
        Ok(ChannelGate { mlp: ReductionMlp::load(vb, channels, reduction, true)? })
    }
}

impl Module for ChannelGate {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (avg, _) = spatial_avg_max(x)?;
        scale_channels(x, &sigmoid(&self.mlp.forward(&avg)?)?)
    }
}

/// Attention gate q = sigmoid(psi(relu(Wx*x + Wg*up(g)))), returns x * q; the
/// gating signal `g` comes from the coarser level and is upsampled (nearest) to x.
#[derive(Debug, Clone)]
pub struct AttentionGate {
    wx: Pointwise,
    wg: Pointwise,
    psi: Pointwise,
}

impl AttentionGate {
    pub fn load(vb: VarBuilder, x_channels: usize, g_channels: usize, inter_channels: usize) -> Result<AttentionGate> {
        Ok(AttentionGate {
            wx: Pointwise::load(vb.pp("wx"), x_channels, inter_channels, false)?,
            wg: Pointwise::load(vb.pp("wg"), g_channels, inter_channels, true)?,
            psi: Pointwise::load(vb.pp("psi"), inter_channels, 1, true)?,
        })
    }

    /// The attention coefficients q (N, 1, ...x's spatial dims).
    pub fn coefficients(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        let size = &x.dims()[2..];
        let g = resize_nearest(&self.wg.forward(g)?, size)?;
        sigmoid(&self.psi.forward(&(self.wx.forward(x)? + g)?.relu()?)?)
    }

    pub fn forward(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.coefficients(x, g)?)
    }
}

/// Spatial channel aggregation module on a U-Net skip: channel gate on the skip,
/// then the attention gate driven by the deeper decoder features.
#[derive(Debug, Clone)]
pub struct Scam {
    channel: ChannelGate,
    attention: AttentionGate,
}

impl Scam {
    pub fn load(vb: VarBuilder, skip_channels: usize, gating_channels: usize, reduction: usize) -> Result<Scam> {
        Ok(Scam {
            channel: ChannelGate::load(vb.pp("channel_gate"), skip_channels, reduction)?,
            attention: AttentionGate::load(vb.pp("attention_gate"), skip_channels, gating_channels, (skip_channels / 2).max(1))?,
        })
    }

    pub fn forward(&self, skip: &Tensor, gating: &Tensor) -> Result<Tensor> {
        self.attention.forward(&self.channel.forward(skip)?, gating)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn vb(vm: &VarMap) -> VarBuilder<'static> {
        VarBuilder::from_varmap(vm, DType::F64, &Device::Cpu)
    }

    #[test]
    fn cbam_matches_hand_computation_and_has_gradients() -> Result<()> {
        let vm = VarMap::new();
        let cbam = Cbam::load(vb(&vm), 4, 2, 3)?;
        let x = det_tensor(&[2, 4, 5, 5], 1);
        let y = cbam.forward(&x)?;
        assert_eq!(y.dims(), x.dims());
        // by hand for sample 0, channel 2, position (1, 3)
        let v = vb(&vm);
        let w1 = v.get((2, 4), "channel.fc1.weight")?;
        let w2 = v.get((4, 2), "channel.fc2.weight")?;
        let ks = v.get((1, 2, 3, 3), "spatial.weight")?;
        let x0 = x.get(0)?; // (4,5,5)
        let flat = x0.flatten_from(1)?;
        let mlp = |d: &Tensor| -> Result<Tensor> { w2.matmul(&w1.matmul(&d.unsqueeze(1)?)?.relu()?) };
        let ca = sigmoid(&(mlp(&flat.mean(1)?)? + mlp(&flat.max(1)?)?)?)?.flatten_all()?.to_vec1::<f64>()?;
        let xc: Vec<Vec<Vec<f64>>> = (0..4).map(|c| x0.get(c).unwrap().affine(ca[c], 0.0).unwrap().to_vec2::<f64>().unwrap()).collect();
        let kv = ks.flatten_all()?.to_vec1::<f64>()?;
        let mut s = 0.0;
        for dy in 0..3 {
            for dx in 0..3 {
                let (r, c) = (1 + dy as isize - 1, 3 + dx as isize - 1);
                if !(0..5).contains(&r) || !(0..5).contains(&c) {
                    continue;
                }
                let vals: Vec<f64> = (0..4).map(|ch| xc[ch][r as usize][c as usize]).collect();
                let mean = vals.iter().sum::<f64>() / 4.0;
                let max = vals.iter().cloned().fold(f64::MIN, f64::max);
                s += kv[dy * 3 + dx] * mean + kv[9 + dy * 3 + dx] * max;
            }
        }
        let want = xc[2][1][3] / (1.0 + (-s).exp());
        let got = y.get(0)?.get(2)?.get(1)?.get(3)?.to_scalar::<f64>()?;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let t = det_tensor(&[2, 4, 5, 5], 2);
        assert!(gradcheck(&x, |x| (cbam.forward(x)? * &t)?.sum_all())? < 1e-5);
        Ok(())
    }

    #[test]
    fn gates_in_3d_shapes_values_and_gradients() -> Result<()> {
        let vm = VarMap::new();
        let v = vb(&vm);
        let scam = Scam::load(v.clone(), 4, 6, 2)?;
        let skip = det_tensor(&[1, 4, 4, 4, 4], 3);
        let g = det_tensor(&[1, 6, 2, 2, 2], 4);
        let y = scam.forward(&skip, &g)?;
        assert_eq!(y.dims(), skip.dims());
        let q = scam.attention.coefficients(&skip, &g)?;
        assert_eq!(q.dims(), &[1, 1, 4, 4, 4]);
        let qv = q.flatten_all()?.to_vec1::<f64>()?;
        assert!(qv.iter().all(|&v| v > 0.0 && v < 1.0));
        // the channel gate alone: x * sigmoid(fc2(relu(fc1(mean)))), checked per channel
        let gate = ChannelGate::load(v.pp("channel_gate"), 4, 2)?;
        let gx = gate.forward(&skip)?;
        let ratio = (gx.get(0)?.get(1)? / skip.get(0)?.get(1)?)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(ratio.iter().all(|r| (r - ratio[0]).abs() < 1e-9 && *r > 0.0 && *r < 1.0));
        let t = det_tensor(&[1, 4, 4, 4, 4], 5);
        assert!(gradcheck(&skip, |s| (scam.forward(s, &g)? * &t)?.sum_all())? < 1e-5);
        assert!(gradcheck(&g, |g| (scam.forward(&skip, g)? * &t)?.sum_all())? < 1e-5);
        Ok(())
    }
}
