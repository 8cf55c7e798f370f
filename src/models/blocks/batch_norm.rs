//! Batch normalisation over dim 1 of (N, C, ...) with PyTorch's parameter
//! names (`weight`, `bias`, `running_mean`, `running_var`) and semantics
//! (biased variance to normalise, unbiased into the running estimate,
//! momentum 0.1). candle_nn's layer builds training mode from ten tensor ops
//! (transpose, copies, broadcasts), each with its backward; on the CPU this
//! one is a custom op: one pass for the statistics, one to normalise, and the
//! closed-form backward in two passes; a following ReLU can be fused into
//! the same passes (`forward_relu_t`). Elsewhere candle_nn's formula runs.
//! In inference mode `scale_shift` gives the per-channel affine map that
//! `conv::ConvBnAct` folds into its convolution.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, ModuleT, Result, Shape, Tensor, Var, WithDType};
use candle_nn::{BatchNormConfig, VarBuilder};
use rayon::prelude::*;

use super::cpu_data::{contiguous, with_cpu_slice};
use crate::models::profile;

#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
    /// candle_nn's layer over the same tensors: the non-CPU path.
    reference: candle_nn::BatchNorm,
}

impl BatchNorm {
    pub fn load(vb: VarBuilder, channels: usize) -> Result<BatchNorm> {
        let cfg = BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 };
        let reference = candle_nn::batch_norm(channels, cfg, vb)?;
        let (weight, bias) = reference.weight_and_bias().expect("affine");
        Ok(BatchNorm {
            weight: weight.clone(),
            bias: bias.clone(),
            // shares the VarMap's storage: updates are saved with the weights
            running_mean: Var::from_tensor(reference.running_mean())?,
            running_var: Var::from_tensor(reference.running_var())?,
            eps: cfg.eps,
            momentum: cfg.momentum,
            reference,
        })
    }

    /// Inference mode as y = x · scale + shift per channel (both (C,), detached).
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = (self.weight.detach() / (self.running_var.as_detached_tensor() + self.eps)?.sqrt()?)?;
        let shift = (self.bias.detach() - (self.running_mean.as_detached_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// relu(batch norm(x)); on the CPU in training mode the ReLU is part of
    /// the batch-norm op (no extra pass over the map, forward or backward).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && self.cpu_path(x) {
            return self.forward_train_cpu(x, true);
        }
        self.forward_t(x, train)?.relu()
    }

    fn cpu_path(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.dtype() == self.weight.dtype() && x.rank() >= 2
    }

    fn forward_train_cpu(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let stats = Arc::new(Mutex::new(Vec::new()));
        let op = BatchNormTrain { eps: self.eps, relu, stats: stats.clone() };
        let x = x.contiguous()?;
        let y = if x.track_op() || self.weight.track_op() || self.bias.track_op() {
            x.apply_op3(&self.weight, &self.bias, op)?
        } else {
            x.apply_op3_no_bwd(&self.weight, &self.bias, &op)?
        };
        // running statistics as PyTorch: unbiased variance, momentum 0.1
        let per_channel = x.elem_count() / x.dim(1)?.max(1);
        let (mean, var): (Vec<f64>, Vec<f64>) = stats.lock().expect("bn stats").iter().copied().unzip();
        let unbias = if per_channel > 1 { per_channel as f64 / (per_channel as f64 - 1.0) } else { 1.0 };
        let m = self.momentum;
        let dev = x.device();
        let dt = self.running_mean.dtype();
        let mean = Tensor::from_vec(mean, self.running_mean.shape(), dev)?.to_dtype(dt)?;
        let var = (Tensor::from_vec(var, self.running_var.shape(), dev)?.to_dtype(dt)? * unbias)?;
        self.running_mean.set(&((self.running_mean.as_detached_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var.set(&((self.running_var.as_detached_tensor() * (1.0 - m))? + (var * m)?)?)?;
        Ok(y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match (train, self.cpu_path(x)) {
            (true, true) => self.forward_train_cpu(x, false),
            (true, false) => self.reference.forward_t(x, true),
            (false, _) => {
                let (scale, shift) = self.scale_shift()?;
                let mut shape = vec![1; x.rank()];
                shape[1] = scale.elem_count();
                x.broadcast_mul(&scale.reshape(shape.as_slice())?)?.broadcast_add(&shift.reshape(shape.as_slice())?)
            }
        }
    }
}

/// The training-mode normalisation of x (N, C, S...) with weight and bias
/// (C,); keeps each channel's batch mean and biased variance for the caller.
struct BatchNormTrain {
    eps: f64,
    /// max(0, ·) of the result; the backward masks the gradient by the result.
    relu: bool,
    /// Per channel (mean, biased variance) of the forward pass, shared with
    /// the layer (running statistics) and the backward pass.
    stats: Arc<Mutex<Vec<(f64, f64)>>>,
}

/// (N, C, S) of a layout of rank >= 2.
fn ncs(dims: &[usize]) -> (usize, usize, usize) {
    (dims[0], dims[1], dims[2..].iter().product())
}

/// The op's name in errors.
const OP: &str = "batch norm";

/// Lanes of the vectorised sums: 16 f32 = one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;
/// Elements summed in the tensor's dtype before the partial sum goes into
/// an f64: short enough that f32 rounding stays ~1e-7 relative, long enough
/// that the inner loop is all vector adds.
const BLOCK: usize = 1024;

/// Σ term(x[i], a[i], b[i]) over three equally long slices: per block of
/// `BLOCK` in `LANES` independent accumulators of type T (the compiler keeps
/// them in vector registers; a single running sum would serialise every add),
/// blocks added in f64. Callers pass the same slice where they need fewer.
fn lane_sum<T: WithDType>(x: &[T], a: &[T], b: &[T], term: impl Fn(T, T, T) -> T) -> f64 {
    let mut total = 0f64;
    for ((xb, ab), bb) in x.chunks(BLOCK).zip(a.chunks(BLOCK)).zip(b.chunks(BLOCK)) {
        let mut lanes = [T::zero(); LANES];
        let mut xs = xb.chunks_exact(LANES);
        let mut as_ = ab.chunks_exact(LANES);
        let mut bs = bb.chunks_exact(LANES);
        for ((xc, ac), bc) in (&mut xs).zip(&mut as_).zip(&mut bs) {
            for l in 0..LANES {
                lanes[l] += term(xc[l], ac[l], bc[l]);
            }
        }
        let mut rest = T::zero();
        for ((&xv, &av), &bv) in xs.remainder().iter().zip(as_.remainder()).zip(bs.remainder()) {
            rest += term(xv, av, bv);
        }
        total += lanes.iter().map(|v| v.to_f64()).sum::<f64>() + rest.to_f64();
    }
    total
}

/// Per channel (mean, biased variance) of x (N, C, S), channels in
/// parallel; two passes (the mean first) so that large means do not cancel.
fn channel_stats<T: WithDType>(x: &[T], (n, c, s): (usize, usize, usize)) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let count = (n * s) as f64;
            let planes = || (0..n).map(move |b| &x[(b * c + ch) * s..][..s]);
            let mean = planes().map(|p| lane_sum(p, p, p, |v, _, _| v)).sum::<f64>() / count;
            let m = T::from_f64(mean);
            let var = planes().map(|p| lane_sum(p, p, p, |v, _, _| (v - m) * (v - m))).sum::<f64>() / count;
            (mean, var)
        })
        .collect()
}

/// dy where the fused ReLU passed the value (y > 0), else zero; a select,
/// so the loops around it stay vectorised.
#[inline(always)]
fn passed<T: WithDType>(dy: T, y: T) -> T {
    if y <= T::zero() {
        T::zero()
    } else {
        dy
    }
}

impl BatchNormTrain {
    fn forward<T: WithDType>(&self, x: &[T], xl: &Layout, w: &[T], wl: &Layout, b: &[T], bl: &Layout) -> Result<Vec<T>> {
        let (n, c, s) = ncs(xl.dims());
        let (x, w, b) = (contiguous(x, xl, OP)?, contiguous(w, wl, OP)?, contiguous(b, bl, OP)?);
        if w.len() != c || b.len() != c {
            candle_core::bail!("batch norm: {c} channels but weight {} and bias {}", w.len(), b.len());
        }
        let stats = channel_stats(x, (n, c, s));
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(s.max(1)).zip(x.par_chunks(s.max(1))).enumerate().for_each(|(plane, (yp, xp))| {
            let ch = plane % c;
            let (mean, var) = stats[ch];
            let scale = w[ch].to_f64() / (var + self.eps).sqrt();
            let shift = b[ch].to_f64() - mean * scale;
            let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
            if self.relu {
                for (o, v) in yp.iter_mut().zip(xp) {
                    let z = *v * scale + shift;
                    *o = if z > T::zero() { z } else { T::zero() };
                }
            } else {
                for (o, v) in yp.iter_mut().zip(xp) {
                    *o = *v * scale + shift;
                }
            }
        });
        *self.stats.lock().expect("bn stats") = stats;
        Ok(y)
    }

    /// (dx, per channel (Σ dy, Σ dy·x̂)) from x and dy (N, C, S); with the
    /// fused ReLU, dy counts only where the result `y` is positive.
    fn gradients<T: WithDType>(
        &self,
        xv: &[T],
        dy: &[T],
        y: Option<&[T]>,
        wv: &[f64],
        stats: &[(f64, f64)],
        (n, c, s): (usize, usize, usize),
    ) -> (Vec<T>, Vec<(f64, f64)>) {
        let relu = y.is_some();
        // without the ReLU the mask input is never read: any slice of the length will do
        let y = y.unwrap_or(dy);
        let m = (n * s) as f64;
        // per channel Σ dy and Σ dy·x̂ (= Σ dy·(x − mean) / σ)
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = stats[ch];
                let inv = 1.0 / (var + self.eps).sqrt();
                let mt = T::from_f64(mean);
                let (mut sd, mut sdx) = (0.0, 0.0);
                for b in 0..n {
                    let r = (b * c + ch) * s..(b * c + ch + 1) * s;
                    let (xp, dp, yp) = (&xv[r.clone()], &dy[r.clone()], &y[r]);
                    if relu {
                        sd += lane_sum(dp, yp, dp, |d, yv, _| passed(d, yv));
                        sdx += lane_sum(xp, dp, yp, |v, d, yv| passed(d, yv) * (v - mt));
                    } else {
                        sd += lane_sum(dp, dp, dp, |d, _, _| d);
                        sdx += lane_sum(xp, dp, dp, |v, d, _| d * (v - mt));
                    }
                }
                (sd, sdx * inv)
            })
            .collect();
        // dx = k (g − Σdy/M − x̂ Σdy·x̂/M) with k = w/σ, x̂ = (x − mean)/σ, as an
        // affine map of (g, x): dx = k·g + bx·x + c0
        let mut dx = vec![T::zero(); xv.len()];
        dx.par_chunks_mut(s.max(1)).enumerate().for_each(|(plane, d)| {
            let ch = plane % c;
            let (mean, var) = stats[ch];
            let inv = 1.0 / (var + self.eps).sqrt();
            let (sd, sdx) = sums[ch];
            let k = wv[ch] * inv;
            let bx = -k * inv * sdx / m;
            let c0 = -k * sd / m - bx * mean;
            let (k, bx, c0) = (T::from_f64(k), T::from_f64(bx), T::from_f64(c0));
            let r = plane * s..(plane + 1) * s;
            let (xp, dp, yp) = (&xv[r.clone()], &dy[r.clone()], &y[r]);
            if relu {
                for (((o, &v), &g), &yv) in d.iter_mut().zip(xp).zip(dp).zip(yp) {
                    *o = k * passed(g, yv) + bx * v + c0;
                }
            } else {
                for ((o, &v), &g) in d.iter_mut().zip(xp).zip(dp) {
                    *o = k * g + bx * v + c0;
                }
            }
        });
        (dx, sums)
    }

    /// dx, dw, db of y = x̂·w + b with x̂ = (x - mean) / sqrt(var + eps):
    /// db = Σ dy, dw = Σ dy·x̂, dx = w / σ · (dy - db/M - x̂ · dw/M).
    fn backward<T: WithDType>(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (n, c, s) = ncs(x.dims());
        let wv = w.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let stats = self.stats.lock().expect("bn stats").clone();
        if stats.len() != c {
            candle_core::bail!("batch norm backward without its forward pass");
        }
        let (dx, sums) = with_cpu_slice::<T, _>(x, OP, |xv| {
            with_cpu_slice::<T, _>(grad, OP, |dy| {
                if self.relu {
                    with_cpu_slice::<T, _>(res, OP, |y| Ok(self.gradients(xv, dy, Some(y), &wv, &stats, (n, c, s))))
                } else {
                    Ok(self.gradients(xv, dy, None, &wv, &stats, (n, c, s)))
                }
            })
        })?;
        let dt = w.dtype();
        let dw = Tensor::from_vec(sums.iter().map(|p| p.1).collect::<Vec<f64>>(), c, w.device())?.to_dtype(dt)?;
        let db = Tensor::from_vec(sums.iter().map(|p| p.0).collect::<Vec<f64>>(), c, w.device())?.to_dtype(dt)?;
        Ok((Tensor::from_vec(dx, x.shape(), x.device())?, dw, db))
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "cpu-batch-norm-train"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        profile::record(
            || format!("batch norm on {:?} forward", l1.dims()),
            0.0,
            || match (s1, s2, s3) {
                (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => Ok((CpuStorage::F32(self.forward(x, l1, w, l2, b, l3)?), l1.shape().clone())),
                (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => Ok((CpuStorage::F64(self.forward(x, l1, w, l2, b, l3)?), l1.shape().clone())),
                _ => candle_core::bail!("batch norm: f32 or f64 tensors of one dtype"),
            },
        )
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = profile::record(
            || format!("batch norm on {:?} backward", x.dims()),
            0.0,
            || match x.dtype() {
                DType::F32 => self.backward::<f32>(x, w, res, grad),
                DType::F64 => self.backward::<f64>(x, w, res, grad),
                dt => candle_core::bail!("batch norm: no backward for {dt:?}"),
            },
        )?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::Device;
    use candle_nn::VarMap;

    fn layer(seed: u64) -> Result<(VarMap, BatchNorm)> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let bn = BatchNorm::load(vb, 3)?;
        // non-trivial affine parameters
        let data = vm.data().lock().unwrap();
        data["weight"].set(&det_tensor(&[3], seed).affine(1.0, 1.5)?)?;
        data["bias"].set(&det_tensor(&[3], seed + 1))?;
        drop(data);
        Ok((vm, bn))
    }

    #[test]
    fn training_mode_equals_candle_nn_with_running_statistics() -> Result<()> {
        let (vm_a, ours) = layer(5)?;
        let (vm_b, _) = layer(5)?;
        let reference = candle_nn::batch_norm(
            3,
            BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 },
            VarBuilder::from_varmap(&vm_b, DType::F64, &Device::Cpu),
        )?;
        let x = (det_tensor(&[4, 3, 5, 2], 9) * 3.0)?.affine(1.0, 2.0)?;
        let (a, b) = (ours.forward_t(&x, true)?, reference.forward_t(&x, true)?);
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-10);
        for name in ["running_mean", "running_var"] {
            let (ra, rb) = (vm_a.data().lock().unwrap()[name].as_tensor().clone(), vm_b.data().lock().unwrap()[name].as_tensor().clone());
            assert!((ra - rb)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-10, "{name}");
        }
        // inference mode uses the running statistics (equal to candle_nn's)
        let (a, b) = (ours.forward_t(&x, false)?, reference.forward_t(&x, false)?);
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-10);
        // 3D input (N, C, D, H, W)
        let x5 = det_tensor(&[2, 3, 2, 3, 2], 10);
        let (a, b) = (ours.forward_t(&x5, true)?, reference.forward_t(&x5, true)?);
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-10);
        Ok(())
    }

    #[test]
    fn fused_relu_equals_batch_norm_then_relu_and_its_gradients() -> Result<()> {
        let (_vm, bn) = layer(21)?;
        let x = (det_tensor(&[3, 3, 4, 3], 22) * 2.0)?;
        let t = det_tensor(&[3, 3, 4, 3], 23);
        let (a, b) = (bn.forward_relu_t(&x, true)?, bn.forward_t(&x, true)?.relu()?);
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
        let x = candle_core::Var::from_tensor(&x)?;
        let (ga, gb) = ((bn.forward_relu_t(&x, true)? * &t)?.sum_all()?.backward()?, (bn.forward_t(&x, true)?.relu()? * &t)?.sum_all()?.backward()?);
        let diff = (ga.get(&x).unwrap() - gb.get(&x).unwrap())?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{diff}");
        let e = gradcheck(&x, |x| (bn.forward_relu_t(x, true)? * &t)?.sum_all())?;
        assert!(e < 1e-5, "{e}");
        Ok(())
    }

    /// The f32 kernels sum in blocks of f32 lanes: on planes of several
    /// blocks plus a remainder, with a mean far from zero, they agree with
    /// the f64 kernels (forward, and dx / dw / db with and without the ReLU).
    #[test]
    fn f32_blocked_sums_agree_with_f64_on_large_planes() -> Result<()> {
        let (vm64, bn64) = layer(31)?;
        let vm32 = VarMap::new();
        let bn32 = BatchNorm::load(VarBuilder::from_varmap(&vm32, DType::F32, &Device::Cpu), 3)?;
        for name in ["weight", "bias"] {
            vm32.data().lock().unwrap()[name].set(&vm64.data().lock().unwrap()[name].as_tensor().to_dtype(DType::F32)?)?;
        }
        let shape = [2, 3, 61, 37]; // 2257 values a plane: two blocks and a remainder
        let x64 = (det_tensor(&shape, 32) * 4.0)?.affine(1.0, 100.0)?;
        let t64 = det_tensor(&shape, 33);
        for relu in [false, true] {
            let run = |bn: &BatchNorm, x: &Tensor, t: &Tensor| -> Result<(Tensor, candle_core::backprop::GradStore, Var)> {
                let x = Var::from_tensor(x)?;
                let y = if relu { bn.forward_relu_t(&x, true)? } else { bn.forward_t(&x, true)? };
                let g = (&y * t)?.sum_all()?.backward()?;
                Ok((y, g, x))
            };
            let (y64, g64, x64v) = run(&bn64, &x64, &t64)?;
            let (y32, g32, x32v) = run(&bn32, &x64.to_dtype(DType::F32)?, &t64.to_dtype(DType::F32)?)?;
            let err = |a: &Tensor, b: &Tensor| -> Result<f64> {
                let scale = a.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-12);
                Ok((a - b.to_dtype(DType::F64)?)?.abs()?.max_all()?.to_scalar::<f64>()? / scale)
            };
            assert!(err(&y64, &y32)? < 1e-5, "forward, relu {relu}");
            assert!(err(g64.get(&x64v).unwrap(), g32.get(&x32v).unwrap())? < 1e-4, "dx, relu {relu}");
            for name in ["weight", "bias"] {
                let (a, b) = (&vm64.data().lock().unwrap()[name].as_tensor().clone(), &vm32.data().lock().unwrap()[name].as_tensor().clone());
                assert!(err(g64.get(a).unwrap(), g32.get(b).unwrap())? < 1e-4, "d{name}, relu {relu}");
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_of_input_weight_and_bias() -> Result<()> {
        let (vm, bn) = layer(11)?;
        let x = (det_tensor(&[3, 3, 4, 3], 12) * 2.0)?;
        let t = det_tensor(&[3, 3, 4, 3], 13);
        let e = gradcheck(&x, |x| (bn.forward_t(x, true)? * &t)?.sum_all())?;
        assert!(e < 1e-5, "{e}");
        for name in ["weight", "bias"] {
            let v = vm.data().lock().unwrap()[name].clone();
            let y = (bn.forward_t(&x, true)? * &t)?.sum_all()?;
            let g = y.backward()?;
            let got = g.get(v.as_tensor()).expect("gradient").to_vec1::<f64>()?;
            // central differences on the parameter
            let base = v.as_tensor().to_vec1::<f64>()?;
            for c in 0..3 {
                let f = |d: f64| -> Result<f64> {
                    let mut p = base.clone();
                    p[c] += d;
                    v.set(&Tensor::new(p.as_slice(), &Device::Cpu)?)?;
                    let r = (bn.forward_t(&x, true)? * &t)?.sum_all()?.to_scalar::<f64>();
                    v.set(&Tensor::new(base.as_slice(), &Device::Cpu)?)?;
                    r
                };
                let num = (f(1e-6)? - f(-1e-6)?) / 2e-6;
                assert!((num - got[c]).abs() < 1e-5, "{name}[{c}]: {num} vs {}", got[c]);
            }
        }
        Ok(())
    }
}
