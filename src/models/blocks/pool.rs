//! Max and average pooling with padding and any kernel/stride (candle's
//! pooling backward only works when kernel == stride). On the CPU the custom
//! ops of `cpu_pool.rs` run (one pass forward, one backward; checked against
//! the general path below). Elsewhere each kernel offset is
//! gathered with `index_select` (differentiable), then reduced elementwise.
//! Non-overlapping windows without padding take a fast path on the input
//! cropped to whole windows: candle's avg_pool2d (exact backward there) and a
//! max over reshaped window axes (candle's max_pool2d backward is wrong).

use candle_core::{Result, Tensor};

use super::cpu_pool;

pub use super::cpu_pool::Pool2dConfig;

fn out_len(n: usize, cfg: &Pool2dConfig) -> Result<usize> {
    if n + 2 * cfg.padding < cfg.kernel {
        candle_core::bail!("pool: size {n} with padding {} is smaller than the kernel {}", cfg.padding, cfg.kernel);
    }
    Ok((n + 2 * cfg.padding - cfg.kernel) / cfg.stride + 1)
}

/// The windows of a padded (N, C, H, W) tensor: one tensor per kernel offset.
fn windows(xp: &Tensor, oh: usize, ow: usize, cfg: &Pool2dConfig) -> Result<Vec<Tensor>> {
    let dev = xp.device();
    let mut out = Vec::with_capacity(cfg.kernel * cfg.kernel);
    for ky in 0..cfg.kernel {
        let rows: Vec<u32> = (0..oh).map(|o| (ky + o * cfg.stride) as u32).collect();
        let r = xp.index_select(&Tensor::new(rows.as_slice(), dev)?, 2)?;
        for kx in 0..cfg.kernel {
            let cols: Vec<u32> = (0..ow).map(|o| (kx + o * cfg.stride) as u32).collect();
            out.push(r.index_select(&Tensor::new(cols.as_slice(), dev)?, 3)?);
        }
    }
    Ok(out)
}

/// Average pooling; padding counts as zeros (PyTorch's count_include_pad).
/// The input cropped to whole windows when candle's own pooling is exact
/// (kernel == stride, no padding); None otherwise.
fn native_input(x: &Tensor, cfg: &Pool2dConfig, oh: usize, ow: usize) -> Result<Option<Tensor>> {
    if cfg.kernel != cfg.stride || cfg.padding != 0 || cfg.kernel == 1 {
        return Ok(None);
    }
    Ok(Some(x.narrow(2, 0, oh * cfg.kernel)?.narrow(3, 0, ow * cfg.kernel)?.contiguous()?))
}

pub fn avg_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    if cpu_pool::supported(x) {
        return cpu_pool::apply(x, cpu_pool::AvgPool2d(*cfg));
    }
    avg_pool2d_general(x, cfg)
}

fn avg_pool2d_general(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (out_len(h, cfg)?, out_len(w, cfg)?);
    if let Some(xc) = native_input(x, cfg, oh, ow)? {
        return xc.avg_pool2d(cfg.kernel);
    }
    let xp = x.pad_with_zeros(2, cfg.padding, cfg.padding)?.pad_with_zeros(3, cfg.padding, cfg.padding)?;
    let mut it = windows(&xp, oh, ow, cfg)?.into_iter();
    let mut acc = it.next().expect("kernel >= 1");
    for t in it {
        acc = (acc + t)?;
    }
    acc.affine(1.0 / (cfg.kernel * cfg.kernel) as f64, 0.0)
}

/// Max pooling; padding never wins (it is -1e30 before the max).
pub fn max_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    if cpu_pool::supported(x) {
        return cpu_pool::apply(x, cpu_pool::MaxPool2d::new(*cfg));
    }
    max_pool2d_general(x, cfg)
}

fn max_pool2d_general(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (out_len(h, cfg)?, out_len(w, cfg)?);
    if let Some(xc) = native_input(x, cfg, oh, ow)? {
        // not candle's max_pool2d: its backward multiplies where it should
        // divide by the tie count (gradient 1/k^2 of the truth); a max over
        // reshaped window axes has an exact backward
        let (n, c, _, _) = xc.dims4()?;
        let k = cfg.kernel;
        return xc.reshape((n, c, oh, k, ow, k))?.max(5)?.max(3);
    }
    let p = cfg.padding;
    let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let xp = if p > 0 {
        // a constant offset on the border: gradients still reach x unchanged
        let inside = x.ones_like()?.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
        let border = inside.affine(-1.0, 1.0)?;
        (xp + border.affine(-1e30, 0.0)?)?
    } else {
        xp
    };
    let mut it = windows(&xp, oh, ow, cfg)?.into_iter();
    let mut acc = it.next().expect("kernel >= 1");
    for t in it {
        acc = acc.maximum(&t)?;
    }
    Ok(acc)
}

/// 3D pooling window: (depth, in-plane) kernel, stride and padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool3dConfig {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

/// Pools (N, C, D, H, W): in-plane with the 2D pool over (N, C*D) slices, then
/// along depth over windows of whole slices. Max and mean are separable, so the
/// result equals a direct 3D pool.
fn pool3d(x: &Tensor, cfg: &Pool3dConfig, max: bool) -> Result<Tensor> {
    let (n, c, d, h, w) = x.dims5()?;
    let plane = Pool2dConfig { kernel: cfg.kernel.1, stride: cfg.stride.1, padding: cfg.padding.1 };
    let flat = x.reshape((n, c * d, h, w))?;
    let y = if max { max_pool2d(&flat, &plane)? } else { avg_pool2d(&flat, &plane)? };
    let (_, _, oh, ow) = y.dims4()?;
    let y = y.reshape((n, c, d, oh * ow))?;
    // depth: the same window logic as in-plane, on a (N, C, D, 1) view
    let depth = Pool2dConfig { kernel: cfg.kernel.0, stride: cfg.stride.0, padding: cfg.padding.0 };
    let od = out_len(d, &depth)?;
    let p = depth.padding;
    let mut yp = y.pad_with_zeros(2, p, p)?;
    if max && p > 0 {
        let inside = y.ones_like()?.pad_with_zeros(2, p, p)?;
        yp = (yp + inside.affine(1e30, -1e30)?)?;
    }
    let mut acc: Option<Tensor> = None;
    for kz in 0..depth.kernel {
        let idx: Vec<u32> = (0..od).map(|o| (kz + o * depth.stride) as u32).collect();
        let t = yp.index_select(&Tensor::new(idx.as_slice(), x.device())?, 2)?;
        acc = Some(match acc {
            None => t,
            Some(a) if max => a.maximum(&t)?,
            Some(a) => (a + t)?,
        });
    }
    let mut y = acc.expect("kernel >= 1");
    if !max {
        y = y.affine(1.0 / depth.kernel as f64, 0.0)?;
    }
    y.reshape((n, c, od, oh, ow))
}

/// 3D max pooling (padding counts as -inf).
pub fn max_pool3d(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    pool3d(x, cfg, true)
}

/// 3D average pooling (padding counts as zeros, PyTorch's count_include_pad).
pub fn avg_pool3d(x: &Tensor, cfg: &Pool3dConfig) -> Result<Tensor> {
    pool3d(x, cfg, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::Device;

    #[test]
    fn values_and_shapes() -> Result<()> {
        let x = Tensor::new(&[[1f64, 2., 3.], [4., 5., 6.], [7., 8., 9.]], &Device::Cpu)?.reshape((1, 1, 3, 3))?;
        let cfg = Pool2dConfig { kernel: 2, stride: 1, padding: 0 };
        assert_eq!(max_pool2d(&x, &cfg)?.flatten_all()?.to_vec1::<f64>()?, vec![5., 6., 8., 9.]);
        assert_eq!(avg_pool2d(&x, &cfg)?.flatten_all()?.to_vec1::<f64>()?, vec![3., 4., 6., 7.]);
        // kernel 3, stride 2, padding 1: the ResNet stem pool
        let cfg = Pool2dConfig { kernel: 3, stride: 2, padding: 1 };
        assert_eq!(max_pool2d(&x, &cfg)?.flatten_all()?.to_vec1::<f64>()?, vec![5., 6., 8., 9.]);
        // avg with zero padding: top-left window sums 1+2+4+5 over 9
        let a = avg_pool2d(&x, &cfg)?.flatten_all()?.to_vec1::<f64>()?;
        assert!((a[0] - 12.0 / 9.0).abs() < 1e-12);
        // all-negative input: padding must not win the max
        let neg = x.neg()?;
        assert_eq!(max_pool2d(&neg, &cfg)?.flatten_all()?.to_vec1::<f64>()?[0], -1.0);
        Ok(())
    }

    #[test]
    fn gradients() -> Result<()> {
        let x = det_tensor(&[1, 2, 5, 4], 41);
        let cfg = Pool2dConfig { kernel: 3, stride: 2, padding: 1 };
        let t = det_tensor(&[1, 2, 3, 2], 42);
        assert!(gradcheck(&x, |x| (avg_pool2d(x, &cfg)? * &t)?.sum_all())? < 1e-6);
        assert!(gradcheck(&x, |x| (max_pool2d(x, &cfg)? * &t)?.sum_all())? < 1e-6);
        Ok(())
    }

    #[test]
    fn non_overlapping_windows_on_odd_sizes_match_the_general_path() -> Result<()> {
        let x = det_tensor(&[2, 3, 7, 9], 61);
        let cfg = Pool2dConfig { kernel: 2, stride: 2, padding: 0 };
        let windows_max = |x: &Tensor| -> Result<Tensor> {
            let w = windows(x, 3, 4, &cfg)?;
            w[0].maximum(&w[1])?.maximum(&w[2])?.maximum(&w[3])
        };
        let fast = max_pool2d(&x, &cfg)?;
        assert_eq!(fast.dims(), &[2, 3, 3, 4]);
        let diff = (fast - windows_max(&x)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff == 0.0);
        let t = det_tensor(&[2, 3, 3, 4], 62);
        assert!(gradcheck(&x, |x| (max_pool2d(x, &cfg)? * &t)?.sum_all())? < 1e-6);
        assert!(gradcheck(&x, |x| (avg_pool2d(x, &cfg)? * &t)?.sum_all())? < 1e-6);
        Ok(())
    }

    #[test]
    fn cpu_ops_equal_the_general_path_forward_and_backward() -> Result<()> {
        for (h, w, k, s, p) in [(7, 9, 2, 2, 0), (5, 4, 3, 2, 1), (8, 8, 3, 1, 1), (6, 7, 3, 3, 0), (9, 6, 4, 2, 2), (4, 4, 1, 1, 0)] {
            let cfg = Pool2dConfig { kernel: k, stride: s, padding: p };
            let x = det_tensor(&[2, 3, h, w], 71);
            for max in [true, false] {
                let (fast, general) =
                    if max { (max_pool2d(&x, &cfg)?, max_pool2d_general(&x, &cfg)?) } else { (avg_pool2d(&x, &cfg)?, avg_pool2d_general(&x, &cfg)?) };
                assert_eq!(fast.dims(), general.dims(), "{cfg:?}");
                let diff = (&fast - &general)?.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(diff < 1e-12, "{cfg:?} max={max}: {diff}");
                let t = det_tensor(fast.dims(), 72);
                let pool = |x: &Tensor| if max { max_pool2d(x, &cfg) } else { avg_pool2d(x, &cfg) };
                let e = gradcheck(&x, |x| (pool(x)? * &t)?.sum_all())?;
                assert!(e < 1e-5, "{cfg:?} max={max}: {e}");
            }
        }
        // f32 runs the same op
        let x = det_tensor(&[1, 2, 6, 6], 73);
        let cfg = Pool2dConfig { kernel: 3, stride: 2, padding: 1 };
        let d = (max_pool2d(&x.to_dtype(candle_core::DType::F32)?, &cfg)?.to_dtype(candle_core::DType::F64)? - max_pool2d_general(&x, &cfg)?)?;
        assert!(d.abs()?.max_all()?.to_scalar::<f64>()? < 1e-6);
        Ok(())
    }

    #[test]
    fn max_pool_propagates_nan() -> Result<()> {
        let v = [1.0, f64::NAN, 3.0, 2.0, 5.0, 4.0, 0.0, -1.0, 7.0];
        for cfg in [Pool2dConfig { kernel: 2, stride: 2, padding: 0 }, Pool2dConfig { kernel: 3, stride: 1, padding: 1 }] {
            let x = Tensor::from_vec(v.to_vec(), (1, 1, 3, 3), &Device::Cpu)?;
            let y = max_pool2d(&x, &cfg)?.flatten_all()?.to_vec1::<f64>()?;
            assert!(y[0].is_nan(), "{cfg:?}: {y:?}");
        }
        Ok(())
    }

    #[test]
    fn max_pool_gradient_goes_to_the_first_maximum_once() -> Result<()> {
        // ties: PyTorch gives the whole gradient to the first maximum of the window
        let x = candle_core::Var::from_tensor(&Tensor::ones((1, 1, 2, 2), candle_core::DType::F64, &Device::Cpu)?)?;
        let y = max_pool2d(&x, &Pool2dConfig { kernel: 2, stride: 2, padding: 0 })?;
        let g = y.sum_all()?.backward()?;
        assert_eq!(g.get(&x).unwrap().flatten_all()?.to_vec1::<f64>()?, vec![1., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn pool3d_matches_a_direct_loop_and_has_gradients() -> Result<()> {
        let x = det_tensor(&[1, 2, 5, 4, 6], 51);
        let cfg = Pool3dConfig { kernel: (3, 2), stride: (2, 2), padding: (1, 0) };
        let xv = x.flatten_all()?.to_vec1::<f64>()?;
        let at = |c: usize, z: isize, y: usize, xx: usize| -> Option<f64> {
            if z < 0 || z >= 5 {
                None
            } else {
                Some(xv[((c * 5 + z as usize) * 4 + y) * 6 + xx])
            }
        };
        let mx = max_pool3d(&x, &cfg)?;
        let av = avg_pool3d(&x, &cfg)?;
        assert_eq!(mx.dims(), &[1, 2, 3, 2, 3]);
        let (mv, avv) = (mx.flatten_all()?.to_vec1::<f64>()?, av.flatten_all()?.to_vec1::<f64>()?);
        for c in 0..2 {
            for oz in 0..3 {
                for oy in 0..2 {
                    for ox in 0..3 {
                        let mut m = f64::MIN;
                        let mut s = 0.0;
                        for kz in 0..3 {
                            for ky in 0..2 {
                                for kx in 0..2 {
                                    if let Some(v) = at(c, (oz * 2 + kz) as isize - 1, oy * 2 + ky, ox * 2 + kx) {
                                        m = m.max(v);
                                        s += v;
                                    }
                                }
                            }
                        }
                        let k = ((c * 3 + oz) * 2 + oy) * 3 + ox;
                        assert!((mv[k] - m).abs() < 1e-12 && (avv[k] - s / 12.0).abs() < 1e-12);
                    }
                }
            }
        }
        let t = det_tensor(&[1, 2, 3, 2, 3], 52);
        assert!(gradcheck(&x, |x| (max_pool3d(x, &cfg)? * &t)?.sum_all())? < 1e-6);
        assert!(gradcheck(&x, |x| (avg_pool3d(x, &cfg)? * &t)?.sum_all())? < 1e-6);
        Ok(())
    }
}
