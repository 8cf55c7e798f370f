//! The data of tensors as slices, for the CPU custom ops (`im2col`,
//! `cpu_pool`, `batch_norm`, `add_relu`): what a layout covers of a storage,
//! a tensor's contiguous CPU data without a copy, and the backward of a
//! ReLU fused into such an op.

use candle_core::{DType, Layout, Result, Storage, Tensor, WithDType};
use rayon::prelude::*;

/// The part of `v` a contiguous layout covers; `op` names the op in the error.
pub fn contiguous<'a, T>(v: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: non-contiguous tensor {:?}", l.dims()),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (no copy when it is contiguous).
pub fn with_cpu_slice<T: WithDType, R>(t: &Tensor, op: &str, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(contiguous(T::cpu_storage_as_slice(cpu)?, layout, op)?),
        _ => candle_core::bail!("{op}: tensor not on the CPU"),
    }
}

/// The gradient at a fused ReLU's input: `grad` where the op's result `res`
/// is positive, else zero (f32 / f64 CPU tensors); `op` names the op in errors.
pub fn relu_masked(res: &Tensor, grad: &Tensor, op: &str) -> Result<Tensor> {
    fn mask<T: WithDType>(res: &Tensor, grad: &Tensor, op: &str) -> Result<Tensor> {
        let v = with_cpu_slice::<T, _>(res, op, |r| {
            with_cpu_slice::<T, _>(grad, op, |g| {
                Ok(r.par_iter().zip(g.par_iter()).map(|(&r, &g)| if r > T::zero() { g } else { T::zero() }).collect::<Vec<T>>())
            })
        })?;
        Tensor::from_vec(v, grad.shape(), grad.device())
    }
    match grad.dtype() {
        DType::F32 => mask::<f32>(res, grad, op),
        DType::F64 => mask::<f64>(res, grad, op),
        dt => candle_core::bail!("{op}: no backward for {dt:?}"),
    }
}
