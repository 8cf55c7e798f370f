//! The data of tensors as slices, for the CPU custom ops (`im2col`,
//! `cpu_pool`, `batch_norm`): what a layout covers of a storage, and a
//! tensor's contiguous CPU data without a copy.

use candle_core::{Layout, Result, Storage, Tensor, WithDType};

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
