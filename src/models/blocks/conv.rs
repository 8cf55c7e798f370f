//! 2D convolution safe to train with any stride, plus conv + batch norm + ReLU.
//!
//! candle 0.11's conv2d backward rebuilds the input gradient with a transposed
//! convolution whose single `output_padding` serves both H and W; when the rows
//! or columns the last window never reaches differ between H and W (e.g. stride
//! 2 on a 7x8 map), the gradient has the wrong shape and training fails. We crop
//! those unused trailing rows/columns before convolving: the output is
//! identical, the cropped cells get a zero gradient (they do not influence the
//! output), and the transposed convolution needs no output padding at all.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::batch_norm::BatchNorm;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub bias: bool,
}

impl ConvConfig {
    /// A "same" convolution for odd kernels (padding = dilation * (k - 1) / 2).
    pub fn same(kernel: usize, stride: usize, dilation: usize, bias: bool) -> ConvConfig {
        ConvConfig { kernel, stride, padding: dilation * (kernel - 1) / 2, dilation, bias }
    }
}

/// Functional conv2d of `x` (N, C, H, W) with `w` (O, C, k, k) that trains at any stride.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &ConvConfig) -> Result<Tensor> {
    conv2d_act(x, w, bias, cfg, false)
}

/// `conv2d` followed by a ReLU when `relu`: one pass on the CPU.
pub fn conv2d_act(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &ConvConfig, relu: bool) -> Result<Tensor> {
    if super::im2col::supported(x, w, bias) {
        // CPU: im2col + gemm with bias and ReLU in the same pass, with its own backward (blocks/im2col.rs)
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let params = super::im2col::KernelParams { kernel: cfg.kernel, stride: cfg.stride, padding: cfg.padding, dilation: cfg.dilation };
        let op = super::im2col::Im2ColConv2d::new(params, relu);
        let tracked = x.track_op() || w.track_op() || bias.is_some_and(|b| b.track_op());
        return match (bias, tracked) {
            (None, true) => x.apply_op2(&w, op),
            (None, false) => x.apply_op2_no_bwd(&w, &op),
            (Some(b), true) => x.apply_op3(&w, &b.contiguous()?, op),
            (Some(b), false) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op),
        };
    }
    let y = conv2d_reference(x, w, bias, cfg)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// candle's conv2d (elsewhere than on the CPU), cropped so that it trains at any stride.
fn conv2d_reference(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &ConvConfig) -> Result<Tensor> {
    let y = if cfg.stride > 1 {
        let (_, _, h, wd) = x.dims4()?;
        let span = cfg.dilation * (cfg.kernel - 1) + 1;
        let p = cfg.padding;
        if h.min(wd) + 2 * p < span {
            candle_core::bail!("conv2d: input {h}x{wd} with padding {p} is smaller than the dilated kernel {span}");
        }
        // pad explicitly, then keep only the rows/columns some window reaches
        let used = |n: usize| ((n + 2 * p - span) / cfg.stride) * cfg.stride + span;
        let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let xp = xp.narrow(2, 0, used(h))?.narrow(3, 0, used(wd))?;
        xp.conv2d(w, 0, cfg.stride, cfg.dilation, 1)?
    } else {
        x.conv2d(w, cfg.padding, cfg.stride, cfg.dilation, 1)?
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: ConvConfig,
}

impl Conv2d {
    /// Weights `weight` (out, in, k, k) and optional `bias`, Kaiming-uniform
    /// initialised like PyTorch.
    pub fn load(vb: VarBuilder, in_c: usize, out_c: usize, cfg: ConvConfig) -> Result<Conv2d> {
        let bound = 1.0 / ((in_c * cfg.kernel * cfg.kernel) as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        let weight = vb.get_with_hints((out_c, in_c, cfg.kernel, cfg.kernel), "weight", init)?;
        let bias = if cfg.bias { Some(vb.get_with_hints(out_c, "bias", init)?) } else { None };
        Ok(Conv2d { weight, bias, cfg })
    }

    /// A convolution over given tensors (for heads with their own initialisation).
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: ConvConfig) -> Conv2d {
        Conv2d { weight, bias, cfg }
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The convolution then a ReLU, in one pass on the CPU.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        conv2d_act(x, &self.weight, self.bias.as_ref(), &self.cfg, true)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, self.bias.as_ref(), &self.cfg)
    }
}

/// Pointwise (1x1) convolution over the channel dimension of a tensor of any
/// rank >= 3 (N, C, ...): 2D and 3D networks share it.
#[derive(Debug, Clone)]
pub struct Pointwise {
    conv: Conv2d,
}

impl Pointwise {
    pub fn load(vb: VarBuilder, in_c: usize, out_c: usize, bias: bool) -> Result<Pointwise> {
        let cfg = ConvConfig { kernel: 1, stride: 1, padding: 0, dilation: 1, bias };
        Ok(Pointwise { conv: Conv2d::load(vb, in_c, out_c, cfg)? })
    }
}

impl Pointwise {
    /// The convolution then a ReLU, in one pass on the CPU.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, true)
    }

    fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (n, c) = (dims[0], dims[1]);
        let rest: usize = dims[2..].iter().product();
        let c2 = &self.conv;
        let y = conv2d_act(&x.reshape((n, c, rest, 1))?, &c2.weight, c2.bias.as_ref(), &c2.cfg, relu)?;
        let mut out = dims;
        out[1] = self.conv.out_channels();
        y.reshape(out)
    }
}

impl Module for Pointwise {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }
}

/// Batch norm over dim 1 of (N, C, ...) with PyTorch's parameter names
/// (`weight`, `bias`, `running_mean`, `running_var`); running statistics are
/// updated in training mode (`batch_norm.rs`).
pub fn batch_norm(vb: VarBuilder, channels: usize) -> Result<BatchNorm> {
    BatchNorm::load(vb, channels)
}

/// conv (no bias) -> batch norm -> optional ReLU; names `conv`, `bn`.
#[derive(Debug, Clone)]
pub struct ConvBnAct {
    conv: Conv2d,
    bn: BatchNorm,
    relu: bool,
}

impl ConvBnAct {
    pub fn load(vb: VarBuilder, in_c: usize, out_c: usize, cfg: ConvConfig, relu: bool) -> Result<ConvBnAct> {
        let conv = Conv2d::load(vb.pp("conv"), in_c, out_c, ConvConfig { bias: false, ..cfg })?;
        let bn = batch_norm(vb.pp("bn"), out_c)?;
        Ok(ConvBnAct { conv, bn, relu })
    }

    /// Builds from separately named conv and bn (torchvision's `conv1`/`bn1`).
    pub fn load_named(vb: &VarBuilder, conv: &str, bn: &str, in_c: usize, out_c: usize, cfg: ConvConfig, relu: bool) -> Result<ConvBnAct> {
        let conv = Conv2d::load(vb.pp(conv), in_c, out_c, ConvConfig { bias: false, ..cfg })?;
        let bn = batch_norm(vb.pp(bn), out_c)?;
        Ok(ConvBnAct { conv, bn, relu })
    }
}

impl ModuleT for ConvBnAct {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let y = self.conv.forward(x)?;
            return if self.relu { self.bn.forward_relu_t(&y, true) } else { self.bn.forward_t(&y, true) };
        }
        // inference: batch norm folded into the convolution (one pass less)
        let (scale, shift) = self.bn.scale_shift()?;
        let w = self.conv.weight.broadcast_mul(&scale.to_dtype(self.conv.weight.dtype())?.reshape(((), 1, 1, 1))?)?;
        let b = match &self.conv.bias {
            Some(b) => ((b * &scale)? + &shift)?,
            None => shift,
        };
        conv2d_act(x, &w, Some(&b.to_dtype(w.dtype())?), &self.conv.cfg, self.relu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn im2col_path_equals_candle_conv2d_forward_and_backward() -> Result<()> {
        // our CPU op against candle's conv2d (forward) and candle's own backward
        // where candle gets it right (stride 1); stride 2 is covered by the gradient checks
        for (n, c, h, w, o, k, stride, pad, dil) in [
            (2, 3, 9, 11, 4, 3, 1, 1, 1),
            (1, 2, 8, 7, 3, 3, 2, 1, 1),
            (1, 4, 13, 13, 2, 3, 1, 6, 6),
            (1, 3, 4, 4, 5, 4, 1, 1, 1),
            (2, 5, 6, 9, 3, 1, 1, 0, 1),
            (1, 2, 9, 9, 2, 3, 3, 0, 2),
            (1, 1, 5, 6, 2, 3, 2, 2, 1),
        ] {
            let case = (n, c, h, w, o, k, stride, pad, dil);
            let x = candle_core::Var::from_tensor(&det_tensor(&[n, c, h, w], 3))?;
            let wt = candle_core::Var::from_tensor(&det_tensor(&[o, c, k, k], 4))?;
            let cfg = ConvConfig { kernel: k, stride, padding: pad, dilation: dil, bias: false };
            let ours = conv2d(&x, &wt, None, &cfg)?;
            let reference = x.conv2d(&wt, pad, stride, dil, 1)?;
            assert_eq!(ours.dims(), reference.dims(), "{case:?}");
            let diff = (&ours - &reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "{case:?}: {diff}");
            // f32 inference (no gradient) gives the same numbers
            let (x32, w32) = (x.as_tensor().to_dtype(DType::F32)?, wt.as_tensor().to_dtype(DType::F32)?);
            let diff32 = (conv2d(&x32, &w32, None, &cfg)?.to_dtype(DType::F64)? - &reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            assert!(diff32 < 1e-4, "{case:?}: {diff32}");
            if stride == 1 {
                let g = det_tensor(ours.dims(), 7);
                let ga = (ours * &g)?.sum_all()?.backward()?;
                let gb = (reference * &g)?.sum_all()?.backward()?;
                for v in [&x, &wt] {
                    let d = (ga.get(v).unwrap() - gb.get(v).unwrap())?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                    assert!(d < 1e-10, "{case:?}: gradient differs by {d}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bias_in_the_same_pass_forward_and_gradients() -> Result<()> {
        for (k, stride, pad) in [(3, 1, 1), (1, 1, 0), (3, 2, 1)] {
            let cfg = ConvConfig { kernel: k, stride, padding: pad, dilation: 1, bias: true };
            let x = det_tensor(&[2, 3, 7, 6], 21);
            let w = det_tensor(&[4, 3, k, k], 22);
            let b = det_tensor(&[4], 23);
            let want = x.conv2d(&w, pad, stride, 1, 1)?.broadcast_add(&b.reshape((1, 4, 1, 1))?)?;
            let got = conv2d(&x, &w, Some(&b), &cfg)?;
            assert!((&got - &want)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12, "{cfg:?}");
            let t = det_tensor(want.dims(), 24);
            let eb = gradcheck(&b, |b| (conv2d(&x, &w, Some(b), &cfg)? * &t)?.sum_all())?;
            let ex = gradcheck(&x, |x| (conv2d(x, &w, Some(&b), &cfg)? * &t)?.sum_all())?;
            let ew = gradcheck(&w, |w| (conv2d(&x, w, Some(&b), &cfg)? * &t)?.sum_all())?;
            assert!(eb.max(ex).max(ew) < 1e-5, "{cfg:?}: bias {eb}, x {ex}, w {ew}");
        }
        Ok(())
    }

    #[test]
    fn same_output_as_candle_and_trains_at_mixed_parity() -> Result<()> {
        // 7x8 input, stride 2: candle's own backward fails on this shape
        let x = det_tensor(&[1, 2, 7, 8], 1);
        let w = det_tensor(&[3, 2, 3, 3], 2);
        for (pad, stride, dil) in [(1, 2, 1), (0, 2, 1), (2, 2, 2), (1, 3, 1), (3, 2, 1), (0, 1, 1)] {
            let cfg = ConvConfig { kernel: 3, stride, padding: pad, dilation: dil, bias: false };
            let want = x.conv2d(&w, pad, stride, dil, 1)?;
            let got = conv2d(&x, &w, None, &cfg)?;
            assert_eq!(got.dims(), want.dims(), "{cfg:?}");
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "{cfg:?}: {diff}");
            let t = det_tensor(want.dims(), 3);
            assert!(gradcheck(&x, |x| (conv2d(x, &w, None, &cfg)? * &t)?.sum_all())? < 1e-6, "{cfg:?}");
            assert!(gradcheck(&w, |w| (conv2d(&x, w, None, &cfg)? * &t)?.sum_all())? < 1e-6, "{cfg:?}");
        }
        Ok(())
    }

    #[test]
    fn pointwise_on_3d_equals_per_voxel_matmul() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let pw = Pointwise::load(vb.clone(), 3, 2, true)?;
        let x = det_tensor(&[2, 3, 2, 3, 4], 5);
        let y = pw.forward(&x)?;
        assert_eq!(y.dims(), &[2, 2, 2, 3, 4]);
        let w = vb.get((2, 3, 1, 1), "weight")?.reshape((2, 3))?;
        let b = vb.get(2, "bias")?;
        let xv = x.narrow(0, 1, 1)?.narrow(2, 1, 1)?.narrow(3, 2, 1)?.narrow(4, 3, 1)?.flatten_all()?;
        let want = (w.matmul(&xv.unsqueeze(1)?)?.squeeze(1)? + b)?;
        let got = y.narrow(0, 1, 1)?.narrow(2, 1, 1)?.narrow(3, 2, 1)?.narrow(4, 3, 1)?.flatten_all()?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12);
        Ok(())
    }

    #[test]
    fn batch_norm_normalises_tracks_stats_and_has_gradients() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let bn = batch_norm(vb.clone(), 2)?;
        let x = (det_tensor(&[4, 2, 3, 3], 7) * 3.0)?.affine(1.0, 5.0)?;
        let y = bn.forward_t(&x, true)?;
        // per-channel mean 0, biased variance 1
        let yc = y.transpose(0, 1)?.flatten_from(1)?;
        let m = yc.mean_keepdim(1)?.flatten_all()?.to_vec1::<f64>()?;
        let v = yc.sqr()?.mean_keepdim(1)?.flatten_all()?.to_vec1::<f64>()?;
        for c in 0..2 {
            assert!(m[c].abs() < 1e-9 && (v[c] - 1.0).abs() < 1e-3, "{m:?} {v:?}");
        }
        let rm = vb.get(2, "running_mean")?.to_vec1::<f64>()?;
        let xm = x.transpose(0, 1)?.flatten_from(1)?.mean_keepdim(1)?.flatten_all()?.to_vec1::<f64>()?;
        for c in 0..2 {
            assert!((rm[c] - 0.1 * xm[c]).abs() < 1e-9);
        }
        // eval mode uses the running statistics, so a single sample is fine
        let _ = bn.forward_t(&x.narrow(0, 0, 1)?, false)?;
        let t = det_tensor(&[4, 2, 3, 3], 8);
        let x0 = det_tensor(&[4, 2, 3, 3], 9);
        let vm2 = VarMap::new();
        let bn2 = batch_norm(VarBuilder::from_varmap(&vm2, DType::F64, &Device::Cpu), 2)?;
        assert!(gradcheck(&x0, |x| (bn2.forward_t(x, true)? * &t)?.sum_all())? < 1e-5);
        Ok(())
    }

    #[test]
    fn folded_inference_equals_conv_then_batch_norm() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let m = ConvBnAct::load(vb, 3, 4, ConvConfig::same(3, 2, 1, false), true)?;
        // non-trivial statistics and affine parameters
        {
            let data = vm.data().lock().unwrap();
            data["bn.running_mean"].set(&det_tensor(&[4], 1))?;
            data["bn.running_var"].set(&det_tensor(&[4], 2).abs()?.affine(1.0, 0.5)?)?;
            data["bn.weight"].set(&det_tensor(&[4], 3))?;
            data["bn.bias"].set(&det_tensor(&[4], 4))?;
        }
        let x = det_tensor(&[2, 3, 9, 8], 5);
        let unfolded = m.bn.forward_t(&m.conv.forward(&x)?, false)?.relu()?;
        let folded = m.forward_t(&x, false)?;
        assert!((folded - unfolded)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-10);
        Ok(())
    }

    #[test]
    fn conv_bn_act_shapes() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = ConvBnAct::load(vb, 3, 8, ConvConfig::same(3, 2, 1, false), true)?;
        let y = m.forward_t(&Tensor::zeros((2, 3, 9, 10), DType::F32, &Device::Cpu)?, true)?;
        assert_eq!(y.dims(), &[2, 8, 5, 5]);
        Ok(())
    }
}
