//! 3D convolution built from conv2d over depth slices (candle has no conv3d).
//! Output depth slice `od` is the sum over kernel depth `kd` of a 2D
//! convolution of input slice `od * stride_d - pad_d + kd * dil_d` with the
//! kernel's depth slice `kd`; out-of-range input slices are the zero padding.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::conv::{conv2d, ConvConfig};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv3dConfig {
    /// Kernel size (depth, height = width).
    pub kernel: (usize, usize),
    /// Stride (depth, in-plane).
    pub stride: (usize, usize),
    /// Zero padding (depth, in-plane).
    pub padding: (usize, usize),
    /// Dilation (depth, in-plane).
    pub dilation: (usize, usize),
    pub bias: bool,
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Conv3dConfig { kernel: (3, 3), stride: (1, 1), padding: (1, 1), dilation: (1, 1), bias: true }
    }
}

#[derive(Debug, Clone)]
pub struct Conv3d {
    /// (out, in, kd, kh, kw)
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv3dConfig,
}

impl Conv3d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv3dConfig) -> Conv3d {
        Conv3d { weight, bias, cfg }
    }

    pub fn load(vb: VarBuilder, in_c: usize, out_c: usize, cfg: Conv3dConfig) -> Result<Conv3d> {
        let (kd, k) = cfg.kernel;
        let fan_in = (in_c * kd * k * k) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = vb.get_with_hints((out_c, in_c, kd, k, k), "weight", Init::Uniform { lo: -bound, up: bound })?;
        let bias = if cfg.bias { Some(vb.get_with_hints(out_c, "bias", Init::Uniform { lo: -bound, up: bound })?) } else { None };
        Ok(Conv3d { weight, bias, cfg })
    }
}

/// Functional 3D convolution of `x` (N, C, D, H, W) with `w` (O, C, kD, kH, kW).
pub fn conv3d(x: &Tensor, w: &Tensor, cfg: &Conv3dConfig) -> Result<Tensor> {
    let (n, _c, d, _h, _w) = x.dims5()?;
    let (o, _, kd, _, _) = w.dims5()?;
    let (sd, s) = cfg.stride;
    let (pd, p) = cfg.padding;
    let (dd, dl) = cfg.dilation;
    let span = dd * (kd - 1) + 1;
    if d + 2 * pd < span {
        candle_core::bail!("conv3d: depth {d} with padding {pd} is smaller than the dilated kernel depth {span}");
    }
    let out_d = (d + 2 * pd - span) / sd + 1;
    // Depth slices become batch entries: one conv2d per kernel depth over all
    // output slices at once, instead of one per (output slice, kernel depth).
    let (_, c, _, h, wd) = x.dims5()?;
    let xs = x.pad_with_zeros(2, pd, pd)?.transpose(1, 2)?.contiguous()?; // (N, D', C, H, W)
    let plane = ConvConfig { kernel: w.dim(3)?, stride: s, padding: p, dilation: dl, bias: false };
    let mut acc: Option<Tensor> = None;
    for k in 0..kd {
        let idx: Vec<u32> = (0..out_d).map(|od| (od * sd + k * dd) as u32).collect();
        let planes = xs.index_select(&Tensor::new(idx.as_slice(), x.device())?, 1)?.reshape((n * out_d, c, h, wd))?;
        let y = conv2d(&planes, &w.narrow(2, k, 1)?.squeeze(2)?.contiguous()?, None, &plane)?;
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    let y = acc.expect("kernel depth >= 1");
    let (_, _, oh, ow) = y.dims4()?;
    y.reshape((n, out_d, o, oh, ow))?.transpose(1, 2)?.contiguous()
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv3d(x, &self.weight, &self.cfg)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dims1()?, 1, 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};

    #[test]
    fn identity_kernel_and_shapes() -> Result<()> {
        let x = det_tensor(&[1, 1, 4, 5, 6], 1);
        // a 1x1x1 kernel of value 1: output equals input
        let w = Tensor::ones((1, 1, 1, 1, 1), candle_core::DType::F64, &candle_core::Device::Cpu)?;
        let cfg = Conv3dConfig { kernel: (1, 1), padding: (0, 0), ..Default::default() };
        let y = conv3d(&x, &w, &cfg)?;
        assert_eq!(y.dims(), x.dims());
        let diff = (y - &x)?.abs()?.sum_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12);
        // stride 2, padding 1, dilation 2 in depth
        let w = det_tensor(&[3, 1, 3, 3, 3], 2);
        let cfg = Conv3dConfig { kernel: (3, 3), stride: (2, 2), padding: (1, 1), dilation: (2, 1), bias: false };
        let y = conv3d(&x, &w, &cfg)?;
        // depth: (4 + 2 - 5) / 2 + 1 = 1; plane: (5 + 2 - 3)/2 + 1 = 3, (6 + 2 - 3)/2 + 1 = 3
        assert_eq!(y.dims(), &[1, 3, 1, 3, 3]);
        Ok(())
    }

    #[test]
    fn matches_direct_sum() -> Result<()> {
        // one output voxel computed by hand: sum over the 3x3x3 window
        let x = det_tensor(&[1, 2, 3, 3, 3], 3);
        let w = det_tensor(&[1, 2, 3, 3, 3], 4);
        let cfg = Conv3dConfig { kernel: (3, 3), padding: (0, 0), ..Default::default() };
        let y = conv3d(&x, &w, &cfg)?.flatten_all()?.to_vec1::<f64>()?;
        let direct = (&x * &w)?.sum_all()?.to_scalar::<f64>()?;
        assert!((y[0] - direct).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn gradients() -> Result<()> {
        let x = det_tensor(&[1, 2, 3, 4, 4], 5);
        let w = det_tensor(&[2, 2, 3, 3, 3], 6);
        let cfg = Conv3dConfig { kernel: (3, 3), stride: (1, 2), padding: (1, 1), dilation: (1, 1), bias: false };
        let t = det_tensor(&[1, 2, 3, 2, 2], 7);
        let ex = gradcheck(&x, |x| (conv3d(x, &w, &cfg)? * &t)?.sum_all())?;
        let ew = gradcheck(&w, |w| (conv3d(&x, w, &cfg)? * &t)?.sum_all())?;
        assert!(ex < 1e-5 && ew < 1e-5, "input {ex}, weight {ew}");
        Ok(())
    }
}
