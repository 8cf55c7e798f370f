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
}
