//! conv2d on the CPU as im2col + matrix products, forward and backward, as
//! a candle custom op. candle's own CPU conv2d gathers patches pixel by pixel
//! and differentiates through conv_transpose2d and a conv2d whose kernel is
//! the whole output, both slow for the few-channel, large images of our
//! networks. Here the input is unfolded into columns (kc = C·k·k rows) one
//! block of output rows at a time, and everything else is gemm:
//!
//! - forward: y = W (O x kc) · col (kc x P);
//! - backward: dW += dy · colᵀ, dcol = Wᵀ · dy, folded back onto dx.
//!
//! Any stride, padding and dilation; f32 and f64 (the gradient checks run in f64).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};

/// Floats per column block: bounds the unfolded buffer (kc · rows · width).
const MAX_BLOCK_FLOATS: usize = 1 << 22;

/// A square kernel's size, stride, padding and dilation (bias is added by the caller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    d: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(c: usize, h: usize, w: usize, cfg: &KernelParams) -> Result<Geometry> {
        let (k, s, d, p) = (cfg.kernel, cfg.stride, cfg.dilation, cfg.padding);
        let span = d * (k - 1) + 1;
        if h + 2 * p < span || w + 2 * p < span {
            candle_core::bail!("conv2d: input {h}x{w} with padding {p} is smaller than the dilated kernel {span}");
        }
        Ok(Geometry { c, h, w, k, s, d, p, oh: (h + 2 * p - span) / s + 1, ow: (w + 2 * p - span) / s + 1 })
    }

    fn kc(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output rows per block.
    fn rows_per_block(&self) -> usize {
        (MAX_BLOCK_FLOATS / (self.kc() * self.ow).max(1)).clamp(1, self.oh)
    }

    /// For kernel column `kw`: the input column offset and the range of
    /// output columns whose input column lies inside the image.
    fn columns(&self, kw: usize) -> (isize, usize, usize) {
        let dx = (kw * self.d) as isize - self.p as isize;
        let first = if dx >= 0 { 0 } else { ((-dx) as usize).div_ceil(self.s) };
        let last = ((self.w as isize - 1 - dx) / self.s as isize + 1).clamp(0, self.ow as isize) as usize;
        (dx, first, last.max(first))
    }

    /// Input row of output row `oy` and kernel row `kh`, if inside the image.
    fn input_row(&self, oy: usize, kh: usize) -> Option<usize> {
        let iy = (oy * self.s + kh * self.d) as isize - self.p as isize;
        (iy >= 0 && iy < self.h as isize).then_some(iy as usize)
    }

    /// Calls `f(column row slice start, image row start, dx, first, last)`
    /// for every (kernel tap, output row) of output rows `y0 .. y0 + rows`
    /// whose input row lies inside the image: the row of the column buffer
    /// (`rows · ow` wide) and the image row it is read from / added to.
    fn for_each_row(&self, y0: usize, rows: usize, mut f: impl FnMut(usize, usize, isize, usize, usize)) {
        let cols = rows * self.ow;
        for ci in 0..self.c {
            for kh in 0..self.k {
                for kw in 0..self.k {
                    let r = (ci * self.k + kh) * self.k + kw;
                    let (dx, first, last) = self.columns(kw);
                    for oy in 0..rows {
                        if let Some(iy) = self.input_row(y0 + oy, kh) {
                            f(r * cols + oy * self.ow, (ci * self.h + iy) * self.w, dx, first, last);
                        }
                    }
                }
            }
        }
    }

    /// Input column of output column `ox` (within `first..last`).
    fn input_col(&self, ox: usize, dx: isize) -> usize {
        (ox as isize * self.s as isize + dx) as usize
    }

    /// Unfolds output rows `y0 .. y0 + rows` of one image (C x H x W) into
    /// `col` (kc x rows·ow, zero where the window is in the padding).
    fn im2col<T: WithDType>(&self, img: &[T], y0: usize, rows: usize) -> Vec<T> {
        let mut col = vec![T::zero(); self.kc() * rows * self.ow];
        self.for_each_row(y0, rows, |c0, i0, dx, first, last| {
            let (dst, src) = (&mut col[c0..c0 + self.ow], &img[i0..i0 + self.w]);
            if self.s == 1 {
                dst[first..last].copy_from_slice(&src[self.input_col(first, dx)..][..last - first]);
            } else {
                for ox in first..last {
                    dst[ox] = src[self.input_col(ox, dx)];
                }
            }
        });
        col
    }

    /// The adjoint of `im2col`: adds `col` (kc x rows·ow) back onto `img`.
    fn col2im_add<T: WithDType>(&self, col: &[T], y0: usize, rows: usize, img: &mut [T]) {
        self.for_each_row(y0, rows, |c0, i0, dx, first, last| {
            let (src, dst) = (&col[c0..c0 + self.ow], &mut img[i0..i0 + self.w]);
            if self.s == 1 {
                for (a, v) in dst[self.input_col(first, dx)..][..last - first].iter_mut().zip(&src[first..last]) {
                    *a += *v;
                }
            } else {
                for ox in first..last {
                    dst[self.input_col(ox, dx)] += src[ox];
                }
            }
        });
    }
}

/// conv2d without bias of x (N, C, H, W) with w (O, C, k, k): apply with
/// `x.apply_op2(&w, Im2ColConv2d(cfg))` (trainable) or `apply_op2_no_bwd`.
pub struct Im2ColConv2d(pub KernelParams);

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("im2col conv2d: non-contiguous input"),
    }
}

impl Im2ColConv2d {
    fn forward<T: WithDType>(&self, x: &[T], xl: &Layout, w: &[T], wl: &Layout) -> Result<(Vec<T>, Shape)> {
        let (n, c, h, wd) = dims4(xl)?;
        let (o, wc, k, k2) = dims4(wl)?;
        if wc != c || k != k2 || k != self.0.kernel {
            candle_core::bail!("conv2d: weight {:?} does not fit input {:?} and kernel {}", wl.dims(), xl.dims(), self.0.kernel);
        }
        let g = Geometry::new(c, h, wd, &self.0)?;
        let (x, w) = (contiguous(x, xl)?, contiguous(w, wl)?);
        let wm = Tensor::from_slice(w, (o, g.kc()), &candle_core::Device::Cpu)?;
        let mut out = Vec::with_capacity(n * o * g.oh * g.ow);
        for b in 0..n {
            let img = &x[b * c * h * wd..][..c * h * wd];
            let mut blocks = Vec::new();
            let mut y0 = 0;
            while y0 < g.oh {
                let rows = g.rows_per_block().min(g.oh - y0);
                let col = Tensor::from_vec(g.im2col(img, y0, rows), (g.kc(), rows * g.ow), &candle_core::Device::Cpu)?;
                blocks.push(wm.matmul(&col)?);
                y0 += rows;
            }
            out.extend(Tensor::cat(&blocks, 1)?.flatten_all()?.to_vec1::<T>()?);
        }
        Ok((out, Shape::from((n, o, g.oh, g.ow))))
    }

    fn backward<T: WithDType>(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, h, wd) = x.dims4()?;
        let o = w.dim(0)?;
        let g = Geometry::new(c, h, wd, &self.0)?;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<T>()?;
        let wm = w.contiguous()?.reshape((o, g.kc()))?;
        let wt = wm.t()?;
        let dy = dy.contiguous()?.reshape((n, o, g.oh * g.ow))?;
        let mut dx = vec![T::zero(); n * c * h * wd];
        let mut dw: Option<Tensor> = None;
        for b in 0..n {
            let img = &xv[b * c * h * wd..][..c * h * wd];
            let dyb = dy.get(b)?;
            let mut y0 = 0;
            while y0 < g.oh {
                let rows = g.rows_per_block().min(g.oh - y0);
                let dy_blk = dyb.narrow(1, y0 * g.ow, rows * g.ow)?;
                let col = Tensor::from_vec(g.im2col(img, y0, rows), (g.kc(), rows * g.ow), &candle_core::Device::Cpu)?;
                let part = dy_blk.matmul(&col.t()?)?;
                dw = Some(match dw {
                    Some(acc) => (acc + part)?,
                    None => part,
                });
                let dcol = wt.matmul(&dy_blk)?.flatten_all()?.to_vec1::<T>()?;
                g.col2im_add(&dcol, y0, rows, &mut dx[b * c * h * wd..][..c * h * wd]);
                y0 += rows;
            }
        }
        let dx = Tensor::from_vec(dx, (n, c, h, wd), x.device())?;
        let dw = match dw {
            Some(t) => t.reshape(w.shape())?,
            None => w.zeros_like()?,
        };
        Ok((dx, dw))
    }
}

impl CustomOp2 for Im2ColConv2d {
    fn name(&self) -> &'static str {
        "im2col-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => self.forward(x, l1, w, l2).map(|(v, s)| (CpuStorage::F32(v), s)),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => self.forward(x, l1, w, l2).map(|(v, s)| (CpuStorage::F64(v), s)),
            _ => candle_core::bail!("im2col conv2d: f32 or f64 input and weight of one dtype"),
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = match x.dtype() {
            DType::F32 => self.backward::<f32>(&x.detach(), &w.detach(), &grad.detach())?,
            DType::F64 => self.backward::<f64>(&x.detach(), &w.detach(), &grad.detach())?,
            dt => candle_core::bail!("im2col conv2d: no backward for {dt:?}"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// Whether `Im2ColConv2d` can run these tensors.
pub fn supported(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == w.dtype() && matches!(x.dtype(), DType::F32 | DType::F64)
}
