//! relu(a + b), the end of every residual block, as one CPU op. In candle's
//! ops it is two passes forward, and backward the ReLU alone costs five
//! (zeros, compare, cast, multiply, accumulate); here the forward is one pass
//! and the backward one masking pass whose result is the gradient of both
//! inputs. Elsewhere (other devices, dtypes or shapes) candle's ops run.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu_data::{contiguous, relu_masked};

/// The op's name in errors.
const OP: &str = "add + relu";

/// Elements per parallel chunk: large enough that rayon's overhead vanishes.
const CHUNK: usize = 1 << 14;

/// max(0, a + b) for tensors of one shape.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu = a.device().is_cpu() && b.device().is_cpu() && a.dtype() == b.dtype() && matches!(a.dtype(), DType::F32 | DType::F64);
    if !cpu || a.shape() != b.shape() {
        return (a + b)?.relu();
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    if a.track_op() || b.track_op() {
        a.apply_op2(&b, AddRelu)
    } else {
        a.apply_op2_no_bwd(&b, &AddRelu)
    }
}

struct AddRelu;

fn forward<T: WithDType>(a: &[T], b: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); a.len()];
    y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((y, a), b)| {
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            let s = u + v;
            *o = if s > T::zero() { s } else { T::zero() };
        }
    });
    y
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "cpu-add-relu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!("{OP}: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => Ok((CpuStorage::F32(forward(contiguous(a, l1, OP)?, contiguous(b, l2, OP)?)), l1.shape().clone())),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => Ok((CpuStorage::F64(forward(contiguous(a, l1, OP)?, contiguous(b, l2, OP)?)), l1.shape().clone())),
            _ => candle_core::bail!("{OP}: f32 or f64 tensors of one dtype"),
        }
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_masked(res, grad, OP)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::Var;

    #[test]
    fn equals_add_then_relu_with_gradients_of_both_inputs() -> Result<()> {
        let a = Var::from_tensor(&det_tensor(&[2, 3, 5, 4], 1))?;
        let b = Var::from_tensor(&det_tensor(&[2, 3, 5, 4], 2))?;
        let t = det_tensor(&[2, 3, 5, 4], 3);
        let (ours, reference) = (add_relu(&a, &b)?, (a.as_tensor() + b.as_tensor())?.relu()?);
        assert!((&ours - &reference)?.abs()?.max_all()?.to_scalar::<f64>()? == 0.0);
        let (ga, gb) = ((&ours * &t)?.sum_all()?.backward()?, (&reference * &t)?.sum_all()?.backward()?);
        for v in [&a, &b] {
            let d = (ga.get(v).unwrap() - gb.get(v).unwrap())?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(d < 1e-15, "{d}");
        }
        let e = gradcheck(&a, |a| (add_relu(a, b.as_tensor())? * &t)?.sum_all())?;
        assert!(e < 1e-5, "{e}");
        // f32, and inputs that need no gradient
        let (a32, b32) = (a.as_tensor().to_dtype(DType::F32)?, b.as_tensor().to_dtype(DType::F32)?);
        let d = (add_relu(&a32, &b32)? - (&a32 + &b32)?.relu()?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        Ok(())
    }
}
