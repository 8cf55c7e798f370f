//! Losses of the five analyses (MODELS.md), all differentiable and checked
//! against finite differences. Targets are dense tensors of the prediction's
//! shape (one-hot or probabilities for class targets).

use candle_core::{Result, Tensor};

use super::norm::{log_softmax, softmax};

/// Mean binary cross-entropy on logits, stable for large |x|:
/// max(x, 0) - x·y + log(1 + exp(-|x|)).
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let a = logits.relu()?;
    let b = (logits * target)?;
    let c = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    ((a - b)? + c)?.mean_all()
}

/// Mean softmax cross-entropy over dimension `dim`, with optional per-class
/// weights (shape = classes). `target` is one-hot (or soft) along `dim`.
pub fn softmax_cross_entropy(logits: &Tensor, target: &Tensor, dim: usize, class_weights: Option<&Tensor>) -> Result<Tensor> {
    let lp = log_softmax(logits, dim)?;
    let per = match class_weights {
        Some(w) => {
            let mut shape = vec![1; logits.rank()];
            shape[dim] = w.dims1()?;
            (target.broadcast_mul(&w.reshape(shape.as_slice())?)? * lp)?
        }
        None => (target * lp)?,
    };
    // mean over all positions = sum / (elements / classes)
    let positions = logits.elem_count() / logits.dims()[dim];
    per.sum_all()?.neg()?.affine(1.0 / positions as f64, 0.0)
}

/// Mean smooth L1 (Huber with transition `beta`).
pub fn smooth_l1(pred: &Tensor, target: &Tensor, beta: f64) -> Result<Tensor> {
    let d = (pred - target)?.abs()?;
    let quadratic = d.sqr()?.affine(0.5 / beta, 0.0)?;
    let linear = d.affine(1.0, -0.5 * beta)?;
    d.lt(beta)?.where_cond(&quadratic, &linear)?.mean_all()
}

/// Mean absolute error.
pub fn mae(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    (pred - target)?.abs()?.mean_all()
}

/// sign(d)·log(1 + |d|): shrinks large displacements (ceph S43).
pub fn signed_log1p(d: &Tensor) -> Result<Tensor> {
    let sign = d.ge(0.0)?.where_cond(&d.ones_like()?, &d.ones_like()?.neg()?)?;
    sign * d.abs()?.affine(1.0, 1.0)?.log()?
}

/// MAE on log-transformed displacements, so far patches weigh less.
pub fn log_mae(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    mae(&signed_log1p(pred)?, &signed_log1p(target)?)
}

/// Mean binary focal loss on logits: -α_t (1 - p_t)^γ log p_t.
pub fn focal_with_logits(logits: &Tensor, target: &Tensor, alpha: f64, gamma: f64) -> Result<Tensor> {
    let p = logits.neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
    // log p_t = -(per-element BCE)
    let ce = ((logits.relu()? - (logits * target)?)? + logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let one_minus_t = target.affine(-1.0, 1.0)?;
    let pt = ((&p * target)? + (p.affine(-1.0, 1.0)? * &one_minus_t)?)?;
    let alpha_t = (target.affine(alpha, 0.0)? + one_minus_t.affine(1.0 - alpha, 0.0)?)?;
    // (1 - p_t)^γ; clamped away from 0 so powf's gradient stays finite
    let modulating = pt.affine(-1.0, 1.0)?.clamp(1e-12, 1.0)?.powf(gamma)?;
    ((alpha_t * modulating)? * ce)?.mean_all()
}

/// Soft Dice loss 1 - 2Σyp / (Σy² + Σp²) per class (dimension 1 of
/// (N, C, …) logits after softmax), averaged over classes.
pub fn soft_dice(logits: &Tensor, target: &Tensor, eps: f64) -> Result<Tensor> {
    let p = softmax(logits, 1)?;
    let c = logits.dims()[1];
    let mut total: Option<Tensor> = None;
    for k in 0..c {
        let pk = p.narrow(1, k, 1)?;
        let yk = target.narrow(1, k, 1)?;
        let inter = (&pk * &yk)?.sum_all()?;
        let denom = (yk.sqr()?.sum_all()? + pk.sqr()?.sum_all()?)?.affine(1.0, eps)?;
        let dice = inter.affine(2.0, 0.0)?.div(&denom)?;
        total = Some(match total {
            None => dice,
            Some(t) => (t + dice)?,
        });
    }
    total.expect("at least one class").affine(-1.0 / c as f64, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{Device, Tensor};

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f64>().unwrap()
    }

    #[test]
    fn hand_computed_values() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[0f64, 2.0, -3.0], &dev)?;
        let y = Tensor::new(&[1f64, 0.0, 0.0], &dev)?;
        // -log σ(0) = ln 2; -log(1-σ(2)) = ln(1+e^2); -log(1-σ(-3)) = ln(1+e^-3)
        let want = (2f64.ln() + (1.0 + 2f64.exp()).ln() + (1.0 + (-3f64).exp()).ln()) / 3.0;
        assert!((scalar(bce_with_logits(&x, &y)?) - want).abs() < 1e-12);
        // huge logits stay finite
        let big = Tensor::new(&[1000f64, -1000.0], &dev)?;
        assert!(scalar(bce_with_logits(&big, &Tensor::new(&[1f64, 0.0], &dev)?)?).abs() < 1e-12);
        let p = Tensor::new(&[0f64, 0.5, 3.0], &dev)?;
        let t = Tensor::new(&[0f64, 0.0, 0.0], &dev)?;
        // beta 1: 0, 0.5·0.25, 3 - 0.5
        assert!((scalar(smooth_l1(&p, &t, 1.0)?) - (0.125 + 2.5) / 3.0).abs() < 1e-12);
        assert!((scalar(mae(&p, &t)?) - 3.5 / 3.0).abs() < 1e-12);
        let d = Tensor::new(&[-(std::f64::consts::E - 1.0), 0.0], &dev)?;
        assert_eq!(signed_log1p(&d)?.to_vec1::<f64>()?, vec![-1.0, 0.0]);
        // CE of uniform logits over 4 classes = ln 4
        let l = Tensor::zeros((2, 4), candle_core::DType::F64, &dev)?;
        let oh = Tensor::new(&[[1f64, 0., 0., 0.], [0., 0., 1., 0.]], &dev)?;
        assert!((scalar(softmax_cross_entropy(&l, &oh, 1, None)?) - 4f64.ln()).abs() < 1e-12);
        // focal with γ = 0 and α = 0.5 is half the BCE
        let f = scalar(focal_with_logits(&x, &y, 0.5, 0.0)?);
        assert!((f - 0.5 * want).abs() < 1e-9);
        // perfect prediction → Dice loss near 0
        let logits = Tensor::new(&[[[50f64, -50.]], [[-50., 50.]]], &dev)?.reshape((1, 2, 1, 2))?;
        let target = Tensor::new(&[[[1f64, 0.]], [[0., 1.]]], &dev)?.reshape((1, 2, 1, 2))?;
        assert!(scalar(soft_dice(&logits, &target, 1e-9)?) < 1e-9);
        Ok(())
    }

    #[test]
    fn gradients() -> Result<()> {
        let x = det_tensor(&[2, 3, 2, 2], 31);
        let y01 = det_tensor(&[2, 3, 2, 2], 32).ge(0.0)?.to_dtype(candle_core::DType::F64)?;
        assert!(gradcheck(&x, |x| bce_with_logits(x, &y01))? < 1e-6);
        assert!(gradcheck(&x, |x| focal_with_logits(x, &y01, 0.25, 2.0))? < 1e-5);
        // one-hot along dim 1
        let idx = det_tensor(&[2, 1, 2, 2], 33);
        let cls: Vec<Tensor> = (0..3)
            .map(|k| {
                let lo = -1.0 + k as f64 * 2.0 / 3.0;
                let hi = lo + 2.0 / 3.0;
                idx.ge(lo)?.to_dtype(candle_core::DType::F64)? * idx.lt(hi)?.to_dtype(candle_core::DType::F64)?
            })
            .collect::<Result<_>>()?;
        let onehot = Tensor::cat(&cls, 1)?;
        let w = Tensor::new(&[1f64, 2.0, 0.5], &Device::Cpu)?;
        assert!(gradcheck(&x, |x| softmax_cross_entropy(x, &onehot, 1, Some(&w)))? < 1e-6);
        assert!(gradcheck(&x, |x| soft_dice(x, &onehot, 1e-6))? < 1e-5);
        let t = det_tensor(&[2, 3, 2, 2], 34).affine(3.0, 0.0)?;
        // keep away from the kinks of |d| where finite differences are not defined
        let p = (det_tensor(&[2, 3, 2, 2], 35).affine(3.0, 0.0)? + 0.0)?;
        assert!(gradcheck(&p, |p| smooth_l1(p, &t, 1.0))? < 1e-5);
        assert!(gradcheck(&p, |p| mae(p, &t))? < 1e-6);
        assert!(gradcheck(&p, |p| log_mae(p, &t))? < 1e-6);
        Ok(())
    }
}
