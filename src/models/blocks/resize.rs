//! Bilinear resizing with a backward pass (candle's upsampling has none):
//! resizing is two matrix products with interpolation matrices, so autograd
//! differentiates it. Same sampling as PyTorch's `align_corners=False`.

use candle_core::{DType, Device, Result, Tensor};

/// The (out × in) linear interpolation matrix along one axis.
pub fn interpolation_matrix(n_in: usize, n_out: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f64; n_out * n_in];
    let scale = n_in as f64 / n_out as f64;
    for o in 0..n_out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let w1 = src - i0 as f64;
        m[o * n_in + i0] += 1.0 - w1;
        m[o * n_in + i1] += w1;
    }
    Tensor::from_vec(m, (n_out, n_in), device)?.to_dtype(dtype)
}

/// Resizes the last two dimensions of `x` (…, H, W) to (h, w).
pub fn resize_bilinear(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let dims = x.dims();
    let (hi, wi) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let rows = interpolation_matrix(hi, h, x.dtype(), x.device())?;
    let cols = interpolation_matrix(wi, w, x.dtype(), x.device())?.t()?;
    let y = x.broadcast_matmul(&cols)?; // (…, H, w)
    rows.broadcast_matmul(&y) // (…, h, w)
}

/// Nearest-neighbour upsampling of a 5D tensor (N, C, D, H, W) by integer factors.
pub fn upsample_nearest3d(x: &Tensor, f: (usize, usize, usize)) -> Result<Tensor> {
    let (n, c, d, h, w) = x.dims5()?;
    // repeat each element: expand a new axis after each spatial one, then merge
    let y = x.reshape(&[n, c, d, 1, h, 1, w, 1])?.broadcast_as(&[n, c, d, f.0, h, f.1, w, f.2])?;
    y.reshape((n, c, d * f.0, h * f.1, w * f.2))
}

/// Nearest-neighbour resize of the trailing spatial dims of (N, C, ...) to
/// `size` (PyTorch `interpolate(mode="nearest")`: source index floor(o * in / out)).
/// Gathers with index_select, whose backward candle computes.
pub fn resize_nearest(x: &Tensor, size: &[usize]) -> Result<Tensor> {
    let rank = x.rank();
    if size.len() + 2 != rank {
        candle_core::bail!("resize_nearest: {} target sizes for a rank-{rank} tensor", size.len());
    }
    let mut y = x.contiguous()?;
    for (k, &n_out) in size.iter().enumerate() {
        let dim = k + 2;
        let n_in = y.dim(dim)?;
        if n_in == n_out {
            continue;
        }
        let idx: Vec<u32> = (0..n_out).map(|o| ((o * n_in) / n_out).min(n_in - 1) as u32).collect();
        y = y.index_select(&Tensor::new(idx.as_slice(), x.device())?, dim)?;
    }
    Ok(y)
}

/// Adaptive average pooling of the last two dims to (h, w), PyTorch's bins
/// [floor(i*H/h), ceil((i+1)*H/h)), as two matrix products (differentiable).
pub fn adaptive_avg_pool2d(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let dims = x.dims();
    let (hi, wi) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let rows = adaptive_matrix(hi, h, x.dtype(), x.device())?;
    let cols = adaptive_matrix(wi, w, x.dtype(), x.device())?.t()?;
    rows.broadcast_matmul(&x.broadcast_matmul(&cols)?)
}

fn adaptive_matrix(n_in: usize, n_out: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f64; n_out * n_in];
    for o in 0..n_out {
        let start = (o * n_in) / n_out;
        let end = ((o + 1) * n_in).div_ceil(n_out);
        for i in start..end {
            m[o * n_in + i] = 1.0 / (end - start) as f64;
        }
    }
    Tensor::from_vec(m, (n_out, n_in), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};

    #[test]
    fn matches_pytorch_align_corners_false() -> Result<()> {
        // torch.nn.functional.interpolate([[1,2],[3,4]], size=4, mode="bilinear", align_corners=False)
        let x = Tensor::new(&[[1f64, 2.], [3., 4.]], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
        let y = resize_bilinear(&x, 4, 4)?.reshape((4, 4))?.to_vec2::<f64>()?;
        let want = [[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]];
        for (r, w) in y.iter().zip(want.iter()) {
            for (a, b) in r.iter().zip(w.iter()) {
                assert!((a - b).abs() < 1e-12, "{y:?}");
            }
        }
        // downsampling by 2 averages pixel pairs
        let x = Tensor::new(&[1f64, 3., 5., 7.], &Device::Cpu)?.reshape((1, 1, 1, 4))?;
        let y = resize_bilinear(&x, 1, 2)?.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(y, vec![2.0, 6.0]);
        Ok(())
    }

    #[test]
    fn gradients() -> Result<()> {
        let x = det_tensor(&[1, 2, 3, 5], 11);
        let t = det_tensor(&[1, 2, 7, 4], 12);
        let err = gradcheck(&x, |x| (resize_bilinear(x, 7, 4)? * &t)?.sum_all())?;
        assert!(err < 1e-6, "{err}");
        Ok(())
    }

    #[test]
    fn nearest3d() -> Result<()> {
        let x = det_tensor(&[1, 1, 2, 2, 2], 13);
        let y = upsample_nearest3d(&x, (2, 2, 2))?;
        assert_eq!(y.dims(), &[1, 1, 4, 4, 4]);
        let a = x.flatten_all()?.to_vec1::<f64>()?;
        let b = y.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(b[0], a[0]);
        assert_eq!(b[63], a[7]);
        let t = det_tensor(&[1, 1, 4, 4, 4], 14);
        assert!(gradcheck(&x, |x| (upsample_nearest3d(x, (2, 2, 2))? * &t)?.sum_all())? < 1e-6);
        Ok(())
    }

    #[test]
    fn nearest_and_adaptive_pool_values_and_gradients() -> Result<()> {
        let x = Tensor::new(&[1f64, 2., 3.], &Device::Cpu)?.reshape((1, 1, 1, 3))?;
        let y = resize_nearest(&x, &[2, 6])?;
        assert_eq!(y.dims(), &[1, 1, 2, 6]);
        assert_eq!(y.get(0)?.get(0)?.get(1)?.to_vec1::<f64>()?, vec![1., 1., 2., 2., 3., 3.]);
        let y = resize_nearest(&Tensor::new(&[1f64, 2., 3., 4., 5.], &Device::Cpu)?.reshape((1, 1, 1, 1, 5))?, &[1, 1, 2])?;
        assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, vec![1., 3.]);
        // bins of 5 into 3: [0,2) [1,4) [3,5)
        let x = Tensor::new(&[1f64, 2., 3., 4., 5.], &Device::Cpu)?.reshape((1, 1, 1, 5))?;
        let y = adaptive_avg_pool2d(&x, 1, 3)?.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(y, vec![1.5, 3.0, 4.5]);
        let x = det_tensor(&[1, 2, 5, 7], 31);
        let t = det_tensor(&[1, 2, 3, 2], 32);
        assert!(gradcheck(&x, |x| (adaptive_avg_pool2d(x, 3, 2)? * &t)?.sum_all())? < 1e-6);
        let t = det_tensor(&[1, 2, 8, 10], 33);
        assert!(gradcheck(&x, |x| (resize_nearest(x, &[8, 10])? * &t)?.sum_all())? < 1e-6);
        Ok(())
    }
}
