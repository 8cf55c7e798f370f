//! Softmax, layer norm and group norm written with differentiable ops
//! (candle's fused `softmax_last_dim` and `layer_norm` drop gradients).

use candle_core::{Result, Tensor, D};

/// Softmax along `dim`. The max subtracted for stability is detached: softmax
/// is shift-invariant, so the gradient is exact.
pub fn softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(dim)?)
}

/// log(softmax(x)) along `dim`, without forming the softmax.
pub fn log_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    let s = x.broadcast_sub(&m)?;
    s.broadcast_sub(&s.exp()?.sum_keepdim(dim)?.log()?)
}

/// Normalises over the last dimension: (x - mean) / sqrt(var + eps) (biased variance).
pub fn normalize_last(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    c.broadcast_div(&(var + eps)?.sqrt()?)
}

/// Layer norm over the last dimension with affine `gamma`, `beta` (shape = last dim).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    normalize_last(x, eps)?.broadcast_mul(gamma)?.broadcast_add(beta)
}

/// Group norm of (N, C, …) with `groups` groups and per-channel affine.
pub fn group_norm(x: &Tensor, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    if c % groups != 0 {
        candle_core::bail!("group_norm: {c} channels do not split into {groups} groups");
    }
    let y = normalize_last(&x.reshape((n, groups, ()))?, eps)?.reshape(dims.as_slice())?;
    let mut shape = vec![1, c];
    shape.resize(dims.len(), 1);
    y.broadcast_mul(&gamma.reshape(shape.as_slice())?)?.broadcast_add(&beta.reshape(shape.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{Device, Tensor};

    #[test]
    fn values() -> Result<()> {
        let x = Tensor::new(&[[1f64, 2., 3.]], &Device::Cpu)?;
        let s = softmax(&x, 1)?.to_vec2::<f64>()?;
        // e^-2, e^-1, 1 over their sum
        let z = (-2f64).exp() + (-1f64).exp() + 1.0;
        assert!((s[0][0] - (-2f64).exp() / z).abs() < 1e-12 && (s[0][2] - 1.0 / z).abs() < 1e-12);
        let l = log_softmax(&x, 1)?.to_vec2::<f64>()?;
        assert!((l[0][1] - ((-1f64).exp() / z).ln()).abs() < 1e-12);
        let n = normalize_last(&x, 0.0)?.to_vec2::<f64>()?;
        let sd = (2.0f64 / 3.0).sqrt();
        assert!((n[0][0] + 1.0 / sd).abs() < 1e-12 && n[0][1].abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn gradients() -> Result<()> {
        let x = det_tensor(&[2, 4, 3], 21);
        let t = det_tensor(&[2, 4, 3], 22);
        assert!(gradcheck(&x, |x| (softmax(x, 1)? * &t)?.sum_all())? < 1e-6);
        assert!(gradcheck(&x, |x| (log_softmax(x, 2)? * &t)?.sum_all())? < 1e-6);
        let g = det_tensor(&[3], 23);
        let b = det_tensor(&[3], 24);
        assert!(gradcheck(&x, |x| (layer_norm(x, &g, &b, 1e-5)? * &t)?.sum_all())? < 1e-5);
        assert!(gradcheck(&g, |g| (layer_norm(&x, g, &b, 1e-5)? * &t)?.sum_all())? < 1e-6);
        let x4 = det_tensor(&[2, 4, 2, 3], 25);
        let t4 = det_tensor(&[2, 4, 2, 3], 26);
        let gc = det_tensor(&[4], 27);
        let bc = det_tensor(&[4], 28);
        assert!(gradcheck(&x4, |x| (group_norm(x, 2, &gc, &bc, 1e-5)? * &t4)?.sum_all())? < 1e-5);
        Ok(())
    }
}
