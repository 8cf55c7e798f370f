//! 2D max and average pooling on the CPU as candle custom ops, forward and
//! backward in one pass each over the data. The general path of `pool.rs`
//! gathers every kernel offset with `index_select` (k² copies of the map and
//! as many backward scatters); here max pooling keeps the index of each
//! window's maximum from the forward pass (the first one on ties, as PyTorch)
//! and its backward adds each output gradient at that index; average pooling
//! spreads each output gradient over its window (padding counts as zeros,
//! PyTorch's count_include_pad). Planes run in parallel.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu_data::{contiguous, with_cpu_slice};
use crate::models::profile;

/// A square pooling window: kernel, stride and padding (at most half the kernel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// One pooling's geometry over (N·C) planes of H x W.
#[derive(Debug, Clone, Copy)]
struct PoolGeometry {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    cfg: Pool2dConfig,
}

impl PoolGeometry {
    fn new(dims: &[usize], cfg: Pool2dConfig) -> Result<PoolGeometry> {
        let &[n, c, h, w] = dims else { candle_core::bail!("pool2d: input {dims:?} must be 4D") };
        if 2 * cfg.padding > cfg.kernel || cfg.stride == 0 {
            // PyTorch's rule: every window then holds at least one input cell
            candle_core::bail!("pool: padding {} must be at most half the kernel {} (stride {})", cfg.padding, cfg.kernel, cfg.stride);
        }
        let out = |len: usize| -> Result<usize> {
            if len + 2 * cfg.padding < cfg.kernel {
                candle_core::bail!("pool: size {len} with padding {} is smaller than the kernel {}", cfg.padding, cfg.kernel);
            }
            Ok((len + 2 * cfg.padding - cfg.kernel) / cfg.stride + 1)
        };
        Ok(PoolGeometry { planes: n * c, h, w, oh: out(h)?, ow: out(w)?, cfg })
    }

    fn shape(&self, dims: &[usize]) -> Shape {
        Shape::from((dims[0], dims[1], self.oh, self.ow))
    }

    /// The input range of output position `o` along an axis of length `len`.
    fn window(&self, o: usize, len: usize) -> std::ops::Range<usize> {
        let start = (o * self.cfg.stride) as isize - self.cfg.padding as isize;
        let end = (start + self.cfg.kernel as isize).min(len as isize);
        start.max(0) as usize..end.max(0) as usize
    }
}

/// The profile key of a pooling (models/profile.rs).
fn profile_key(kind: &str, dims: &[usize], cfg: &Pool2dConfig, pass: &str) -> String {
    format!("{kind} {k}x{k}/{s} on {dims:?} {pass}", k = cfg.kernel, s = cfg.stride)
}

/// Whether `v` replaces the window's maximum so far: `>` keeps the first of
/// equal maxima; a NaN (the only value unequal to itself) replaces a number
/// so that it propagates.
#[inline(always)]
fn beats<T: PartialOrd>(v: T, best: T) -> bool {
    #[allow(clippy::eq_op)]
    let nan = |t: &T| t != t;
    v > best || (nan(&v) && !nan(&best))
}

/// Max pooling; padding never wins. Apply with `apply(x, MaxPool2d::new(cfg))`.
pub struct MaxPool2d {
    cfg: Pool2dConfig,
    /// Per output element: the flat index (within its plane) of the maximum,
    /// kept by the forward pass for the backward one.
    argmax: Mutex<Vec<u32>>,
}

impl MaxPool2d {
    pub fn new(cfg: Pool2dConfig) -> MaxPool2d {
        MaxPool2d { cfg, argmax: Mutex::new(Vec::new()) }
    }
}

impl Pool for MaxPool2d {
    const KIND: &'static str = "max pool";

    fn cfg(&self) -> &Pool2dConfig {
        &self.cfg
    }

    fn forward<T: WithDType>(&self, x: &[T], l: &Layout) -> Result<(Vec<T>, Shape)> {
        let g = PoolGeometry::new(l.dims(), self.cfg)?;
        let x = contiguous(x, l, Self::KIND)?;
        let (ip, op) = (g.h * g.w, g.oh * g.ow);
        let mut out = vec![T::zero(); g.planes * op];
        let mut arg = vec![0u32; g.planes * op];
        let halving = g.cfg.kernel == 2 && g.cfg.stride == 2 && g.cfg.padding == 0;
        out.par_chunks_mut(op).zip(arg.par_chunks_mut(op)).zip(x.par_chunks(ip)).for_each(|((y, a), plane)| {
            if halving {
                // VGG's 2x2/2: the four cells of a window in the general loop's order
                for oy in 0..g.oh {
                    let (r0, r1) = (2 * oy * g.w, (2 * oy + 1) * g.w);
                    for ox in 0..g.ow {
                        let mut best = r0 + 2 * ox;
                        for i in [r0 + 2 * ox + 1, r1 + 2 * ox, r1 + 2 * ox + 1] {
                            if beats(plane[i], plane[best]) {
                                best = i;
                            }
                        }
                        y[oy * g.ow + ox] = plane[best];
                        a[oy * g.ow + ox] = best as u32;
                    }
                }
                return;
            }
            for oy in 0..g.oh {
                let rows = g.window(oy, g.h);
                for ox in 0..g.ow {
                    let cols = g.window(ox, g.w);
                    let mut best = rows.start * g.w + cols.start;
                    for iy in rows.clone() {
                        for ix in cols.clone() {
                            let i = iy * g.w + ix;
                            if beats(plane[i], plane[best]) {
                                best = i;
                            }
                        }
                    }
                    y[oy * g.ow + ox] = plane[best];
                    a[oy * g.ow + ox] = best as u32;
                }
            }
        });
        *self.argmax.lock().expect("argmax lock") = arg;
        Ok((out, g.shape(l.dims())))
    }

    fn backward<T: WithDType>(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let g = PoolGeometry::new(x.dims(), self.cfg)?;
        let (ip, op) = (g.h * g.w, g.oh * g.ow);
        let arg = self.argmax.lock().expect("argmax lock");
        if arg.len() != g.planes * op {
            candle_core::bail!("max pool backward without its forward pass");
        }
        let mut dx = vec![T::zero(); g.planes * ip];
        with_cpu_slice::<T, _>(grad, Self::KIND, |dy| {
            dx.par_chunks_mut(ip).zip(dy.par_chunks(op)).zip(arg.par_chunks(op)).for_each(|((d, gy), a)| {
                for (v, &i) in gy.iter().zip(a) {
                    d[i as usize] += *v;
                }
            });
            Ok(())
        })?;
        Tensor::from_vec(dx, x.shape(), x.device())
    }
}

/// Average pooling (padding counts as zeros). Apply with `apply(x, AvgPool2d(cfg))`.
pub struct AvgPool2d(pub Pool2dConfig);

impl Pool for AvgPool2d {
    const KIND: &'static str = "avg pool";

    fn cfg(&self) -> &Pool2dConfig {
        &self.0
    }

    fn forward<T: WithDType>(&self, x: &[T], l: &Layout) -> Result<(Vec<T>, Shape)> {
        let g = PoolGeometry::new(l.dims(), self.0)?;
        let x = contiguous(x, l, Self::KIND)?;
        let (ip, op) = (g.h * g.w, g.oh * g.ow);
        let scale = T::from_f64(1.0 / (g.cfg.kernel * g.cfg.kernel) as f64);
        let mut out = vec![T::zero(); g.planes * op];
        out.par_chunks_mut(op).zip(x.par_chunks(ip)).for_each(|(y, plane)| {
            for oy in 0..g.oh {
                let rows = g.window(oy, g.h);
                for ox in 0..g.ow {
                    let cols = g.window(ox, g.w);
                    let mut s = T::zero();
                    for iy in rows.clone() {
                        for v in &plane[iy * g.w..][cols.clone()] {
                            s += *v;
                        }
                    }
                    y[oy * g.ow + ox] = s * scale;
                }
            }
        });
        Ok((out, g.shape(l.dims())))
    }

    fn backward<T: WithDType>(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let g = PoolGeometry::new(x.dims(), self.0)?;
        let (ip, op) = (g.h * g.w, g.oh * g.ow);
        let scale = T::from_f64(1.0 / (g.cfg.kernel * g.cfg.kernel) as f64);
        let mut dx = vec![T::zero(); g.planes * ip];
        with_cpu_slice::<T, _>(grad, Self::KIND, |dy| {
            dx.par_chunks_mut(ip).zip(dy.par_chunks(op)).for_each(|(d, gy)| {
                for oy in 0..g.oh {
                    let rows = g.window(oy, g.h);
                    for ox in 0..g.ow {
                        let v = gy[oy * g.ow + ox] * scale;
                        let cols = g.window(ox, g.w);
                        for iy in rows.clone() {
                            for a in &mut d[iy * g.w..][cols.clone()] {
                                *a += v;
                            }
                        }
                    }
                }
            });
            Ok(())
        })?;
        Tensor::from_vec(dx, x.shape(), x.device())
    }
}

/// What the two poolings provide; `PoolOp` makes either a candle op.
pub trait Pool: Send + Sync {
    const KIND: &'static str;
    fn cfg(&self) -> &Pool2dConfig;
    fn forward<T: WithDType>(&self, x: &[T], l: &Layout) -> Result<(Vec<T>, Shape)>;
    fn backward<T: WithDType>(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor>;
}

struct PoolOp<P>(P);

impl<P: Pool> CustomOp1 for PoolOp<P> {
    fn name(&self) -> &'static str {
        P::KIND
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        profile::record(
            || profile_key(P::KIND, l.dims(), self.0.cfg(), "forward"),
            0.0,
            || match s {
                CpuStorage::F32(x) => self.0.forward(x, l).map(|(v, s)| (CpuStorage::F32(v), s)),
                CpuStorage::F64(x) => self.0.forward(x, l).map(|(v, s)| (CpuStorage::F64(v), s)),
                _ => candle_core::bail!("cpu {}: f32 or f64 input", P::KIND),
            },
        )
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        profile::record(
            || profile_key(P::KIND, x.dims(), self.0.cfg(), "backward"),
            0.0,
            || match x.dtype() {
                DType::F32 => self.0.backward::<f32>(x, grad).map(Some),
                DType::F64 => self.0.backward::<f64>(x, grad).map(Some),
                dt => candle_core::bail!("cpu {}: no backward for {dt:?}", P::KIND),
            },
        )
    }
}

/// Whether the CPU ops can pool `x`.
pub fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() == 4
}

/// Applies `pool`, recording it for backward only when `x` is tracked.
pub fn apply<P: Pool + 'static>(x: &Tensor, pool: P) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.track_op() {
        x.apply_op1(PoolOp(pool))
    } else {
        x.apply_op1_no_bwd(&PoolOp(pool))
    }
}
