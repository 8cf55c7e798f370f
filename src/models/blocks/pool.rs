//! Max and average pooling with padding and any kernel/stride (candle's
//! pooling backward only works when kernel == stride). Each kernel offset is
//! gathered with `index_select` (differentiable), then reduced elementwise.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

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
pub fn avg_pool2d(x: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (out_len(h, cfg)?, out_len(w, cfg)?);
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
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (out_len(h, cfg)?, out_len(w, cfg)?);
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
}
