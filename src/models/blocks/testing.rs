//! Finite-difference gradient checks for blocks (f64 on CPU).

use candle_core::{DType, Device, Result, Tensor, Var};

/// Compares the autograd gradient of the scalar `f(x)` with central
/// differences at every element of `x`. Returns the largest relative error.
pub fn gradcheck(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<f64> {
    let x = x.to_dtype(DType::F64)?;
    let var = Var::from_tensor(&x)?;
    let y = f(var.as_tensor())?;
    let grads = y.backward()?;
    let analytic: Vec<f64> = grads.get(var.as_tensor()).expect("the input takes part in the output").flatten_all()?.to_vec1()?;
    let base: Vec<f64> = x.flatten_all()?.to_vec1()?;
    // 1e-5, not 1e-6: at 1e-6 the rounding of f (~1e-16 |f| / eps) alone came
    // to ~1e-6 relative on small gradients, the bound some checks use
    let eps = 1e-5;
    let mut worst = 0f64;
    for i in 0..base.len() {
        let eval = |delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.shape(), &Device::Cpu)?;
            f(&t)?.to_scalar::<f64>()
        };
        let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
        let err = (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-3);
        worst = worst.max(err);
    }
    Ok(worst)
}

/// A deterministic pseudo-random tensor in [-1, 1) (no RNG state shared between tests).
pub fn det_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradcheck_catches_a_dropped_gradient() -> Result<()> {
        let x = det_tensor(&[3, 2], 1);
        // correct: d/dx sum(x²) = 2x
        assert!(gradcheck(&x, |x| x.sqr()?.sum_all())? < 1e-6);
        // one factor detached: autograd says x, the truth is 2x
        assert!(gradcheck(&x, |x| (x.detach() * x)?.sum_all())? > 0.1);
        Ok(())
    }
}
