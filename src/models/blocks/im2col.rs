//! conv2d on the CPU as im2col + matrix products, forward and backward, as
//! a candle custom op. candle's own CPU conv2d gathers patches pixel by pixel
//! and differentiates through conv_transpose2d and a conv2d whose kernel is
//! the whole output, both slow for the few-channel, large images of our
//! networks. Here the input is unfolded into columns (kc = C·k·k rows) and
//! everything else is gemm:
//!
//! - forward: y = W (O x kc) · col (kc x P), plus the bias in the same pass;
//! - backward: dW = Σ dy · colᵀ; dx is, at stride 1, the forward convolution
//!   of dy with the flipped, transposed kernel (no scatter), and otherwise
//!   dcol = Wᵀ · dy folded back onto dx.
//!
//! How work is split: when a layer has enough output rows, tiles of a few
//! rows run in parallel, each unfolding into a column buffer that stays in
//! cache and calling a single-threaded gemm (the column matrix of a large,
//! thin layer never goes to memory); small maps are done block after block
//! with a multi-threaded gemm. dW sums per-tile products in a fixed order
//! (groups of tiles in parallel, then the groups in sequence), so results do
//! not depend on the thread count or scheduling.
//!
//! Any stride, padding and dilation; f32 and f64 (the gradient checks run in f64).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu_data::{contiguous, relu_masked, with_cpu_slice};
use super::gemm::{matmul, matmul_on, matmul_ptr, threads, SharedMut, Threads, View};
use crate::models::profile;

/// Floats per column block of the sequential path: bounds the unfolded buffer (kc · rows · width).
const MAX_BLOCK_FLOATS: usize = 1 << 22;
/// Floats per column tile of the parallel path: what a core's L2 cache holds.
const TILE_FLOATS: usize = 1 << 16;
/// Tiles summed one after another into one dW partial.
const TILES_PER_GROUP: usize = 8;

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

    /// Input column of output column `ox` (within `first..last`).
    fn input_col(&self, ox: usize, dx: isize) -> usize {
        (ox as isize * self.s as isize + dx) as usize
    }

    /// Whether the kernel reads each input pixel once, in place: 1x1, stride
    /// 1, no padding. Then the input *is* its column matrix (no unfolding).
    fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }

    /// Unfolds output rows `y0 .. y0 + rows` of one channel (H x W) into its
    /// `k·k` rows of the column buffer (`chunk`: k·k x rows·ow), zero where the
    /// window lies in the padding.
    fn im2col_channel<T: WithDType>(&self, plane: &[T], y0: usize, rows: usize, chunk: &mut [T]) {
        let cols = rows * self.ow;
        for kh in 0..self.k {
            for kw in 0..self.k {
                let (dx, first, last) = self.columns(kw);
                let tap = &mut chunk[(kh * self.k + kw) * cols..][..cols];
                for oy in 0..rows {
                    let dst = &mut tap[oy * self.ow..][..self.ow];
                    // zeros only where the window lies in the padding (the buffer is reused)
                    let Some(iy) = self.input_row(y0 + oy, kh) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    dst[..first].fill(T::zero());
                    dst[last..].fill(T::zero());
                    let src = &plane[iy * self.w..][..self.w];
                    if self.s == 1 {
                        dst[first..last].copy_from_slice(&src[self.input_col(first, dx)..][..last - first]);
                    } else {
                        for ox in first..last {
                            dst[ox] = src[self.input_col(ox, dx)];
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col_channel`: adds a channel's rows of the column
    /// buffer back onto its plane.
    fn col2im_channel<T: WithDType>(&self, chunk: &[T], y0: usize, rows: usize, plane: &mut [T]) {
        let cols = rows * self.ow;
        for kh in 0..self.k {
            for kw in 0..self.k {
                let (dx, first, last) = self.columns(kw);
                let tap = &chunk[(kh * self.k + kw) * cols..][..cols];
                for oy in 0..rows {
                    let Some(iy) = self.input_row(y0 + oy, kh) else { continue };
                    let (src, dst) = (&tap[oy * self.ow..][..self.ow], &mut plane[iy * self.w..][..self.w]);
                    if self.s == 1 {
                        for (a, v) in dst[self.input_col(first, dx)..][..last - first].iter_mut().zip(&src[first..last]) {
                            *a += *v;
                        }
                    } else {
                        for ox in first..last {
                            dst[self.input_col(ox, dx)] += src[ox];
                        }
                    }
                }
            }
        }
    }

    /// Unfolds output rows `y0 .. y0 + rows` of one image (C x H x W) into
    /// `col` (kc x rows·ow), channels in parallel.
    fn im2col<T: WithDType>(&self, img: &[T], y0: usize, rows: usize, col: &mut [T]) {
        let per_channel = self.k * self.k * rows * self.ow;
        col[..self.c * per_channel]
            .par_chunks_mut(per_channel)
            .zip(img.par_chunks(self.h * self.w))
            .for_each(|(chunk, plane)| self.im2col_channel(plane, y0, rows, chunk));
    }

    /// Adds `col` (kc x rows·ow) back onto `img`, channels in parallel.
    fn col2im_add<T: WithDType>(&self, col: &[T], y0: usize, rows: usize, img: &mut [T]) {
        let per_channel = self.k * self.k * rows * self.ow;
        img.par_chunks_mut(self.h * self.w)
            .zip(col[..self.c * per_channel].par_chunks(per_channel))
            .for_each(|(plane, chunk)| self.col2im_channel(chunk, y0, rows, plane));
    }

    /// The blocks of output rows `(y0, rows)` one image is unfolded in.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let step = self.rows_per_block();
        (0..self.oh).step_by(step).map(move |y0| (y0, step.min(self.oh - y0)))
    }

    /// Unfolds output rows `y0 .. y0 + rows` of one image into `col`, on the calling thread.
    fn im2col_serial<T: WithDType>(&self, img: &[T], y0: usize, rows: usize, col: &mut [T]) {
        let per_channel = self.k * self.k * rows * self.ow;
        for (chunk, plane) in col[..self.c * per_channel].chunks_mut(per_channel).zip(img.chunks(self.h * self.w)) {
            self.im2col_channel(plane, y0, rows, chunk);
        }
    }

    /// Output rows per parallel tile.
    fn tile_rows(&self) -> usize {
        #[cfg(test)]
        if let Some(r) = tests::FORCE_TILE_ROWS.get().filter(|&r| r > 0) {
            return r.min(self.oh);
        }
        (TILE_FLOATS / (self.kc() * self.ow).max(1)).clamp(1, self.oh)
    }

    /// The tiles `(image, y0, rows)` of a batch of `n` for the parallel path,
    /// or None when there are too few to keep the threads busy (then the
    /// sequential blocks with a multi-threaded gemm do better).
    fn tiles(&self, n: usize) -> Option<Vec<(usize, usize, usize)>> {
        let step = self.tile_rows();
        let count = n * self.oh.div_ceil(step);
        let t = threads();
        let parallel = t == 1 || count >= 4 * t;
        #[cfg(test)]
        let parallel = tests::FORCE_TILE_ROWS.get().map_or(parallel, |r| r > 0);
        if !parallel {
            return None;
        }
        Some((0..n).flat_map(|b| (0..self.oh).step_by(step).map(move |y0| (b, y0, step.min(self.oh - y0)))).collect())
    }

    /// The column matrix of output rows `y0 .. y0 + rows` of `img`: the image
    /// itself for a pointwise kernel, else unfolded into `col`.
    fn columns_of<'a, T: WithDType>(&self, img: &'a [T], y0: usize, rows: usize, col: &'a mut [T]) -> View<'a, T> {
        let cols = rows * self.ow;
        if self.pointwise() {
            View::row_major(img, self.c, self.oh * self.ow).columns(y0 * self.ow, cols)
        } else {
            self.im2col_serial(img, y0, rows, col);
            View::row_major(&col[..self.kc() * cols], self.kc(), cols)
        }
    }

    /// Column buffer length of one sequential block.
    fn block_buffer(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.kc() * self.rows_per_block() * self.ow
        }
    }

    /// Column buffer length of one parallel tile.
    fn tile_buffer(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.kc() * self.tile_rows() * self.ow
        }
    }
}

/// The split of work a test forced on the calling thread (`tests::FORCE_TILE_ROWS`).
fn forced_split() -> Option<usize> {
    #[cfg(test)]
    return tests::FORCE_TILE_ROWS.get();
    #[cfg(not(test))]
    None
}

/// Runs `f` under the calling test's forced split on whichever thread a
/// join gives it (restored afterwards: pool threads are shared by tests).
fn under_split<R>(split: Option<usize>, f: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    {
        let before = tests::FORCE_TILE_ROWS.replace(split);
        let r = f();
        tests::FORCE_TILE_ROWS.set(before);
        r
    }
    #[cfg(not(test))]
    {
        let _ = split;
        f()
    }
}

/// y (N, O, P) = conv(x) (+ bias), on slices: x (N, C, H, W), w (O, kc).
fn conv_forward<T: WithDType>(g: &Geometry, n: usize, o: usize, x: &[T], w: &[T], bias: Option<&[T]>, relu: bool) -> Vec<T> {
    let (plane, p, kc) = (g.c * g.h * g.w, g.oh * g.ow, g.kc());
    let wm = View::row_major(w, o, kc);
    let mut out = vec![T::zero(); n * o * p];
    if let Some(b) = bias {
        out.par_chunks_mut(p.max(1)).enumerate().for_each(|(i, row)| row.fill(b[i % o]));
    }
    let acc = bias.is_some();
    if let Some(tiles) = g.tiles(n) {
        let dst = SharedMut(out.as_mut_ptr());
        tiles.par_iter().for_each_init(
            || vec![T::zero(); g.tile_buffer()],
            |col, &(b, y0, rows)| {
                let rhs = g.columns_of(&x[b * plane..][..plane], y0, rows, col);
                // SAFETY: this tile writes rows 0..o of image b at columns
                // y0·ow .. (y0 + rows)·ow: inside `out` (n·o·p), and no other
                // tile's (images and row ranges are disjoint)
                unsafe {
                    let at = dst.ptr().add(b * o * p + y0 * g.ow);
                    matmul_ptr(at, p, wm, rhs, acc, Threads::One);
                    if relu {
                        for oc in 0..o {
                            relu_in_place(std::slice::from_raw_parts_mut(at.add(oc * p), rows * g.ow));
                        }
                    }
                };
            },
        );
        return out;
    }
    let mut col = vec![T::zero(); g.block_buffer()];
    for (img, y) in x.chunks_exact(plane).zip(out.chunks_exact_mut(o * p)) {
        if g.pointwise() {
            matmul(y, p, wm, View::row_major(img, g.c, p), acc);
            continue;
        }
        for (y0, rows) in g.blocks() {
            g.im2col(img, y0, rows, &mut col);
            matmul(&mut y[y0 * g.ow..], p, wm, View::row_major(&col, kc, rows * g.ow), acc);
        }
    }
    if relu {
        out.par_chunks_mut(p.max(1)).for_each(relu_in_place);
    }
    out
}

fn relu_in_place<T: WithDType>(v: &mut [T]) {
    for a in v {
        if !(*a > T::zero()) {
            *a = T::zero();
        }
    }
}

/// dW (O, kc) = Σ over images and positions of dy · colᵀ.
fn conv_grad_weight<T: WithDType>(g: &Geometry, n: usize, o: usize, x: &[T], dy: &[T]) -> Vec<T> {
    let (plane, p, kc) = (g.c * g.h * g.w, g.oh * g.ow, g.kc());
    let dy_of = |b: usize| View::row_major(&dy[b * o * p..][..o * p], o, p);
    if let Some(tiles) = g.tiles(n) {
        let partials: Vec<Vec<T>> = tiles
            .par_chunks(TILES_PER_GROUP)
            .map(|group| {
                // dWᵀ (kc x O) = col · dyᵀ: the long side (kc) is the
                // product's rows, which the gemm kernels cover in wide
                // register blocks; O is often only 16-32
                let mut acc = vec![T::zero(); kc * o];
                let mut col = vec![T::zero(); g.tile_buffer()];
                for &(b, y0, rows) in group {
                    let cols = g.columns_of(&x[b * plane..][..plane], y0, rows, &mut col);
                    matmul_on(&mut acc, o, cols, dy_of(b).columns(y0 * g.ow, rows * g.ow).t(), true, Threads::One);
                }
                acc
            })
            .collect();
        let mut dwt = vec![T::zero(); kc * o];
        for part in partials {
            dwt.iter_mut().zip(part).for_each(|(a, v)| *a += v);
        }
        let mut dw = vec![T::zero(); o * kc];
        for (r, row) in dwt.chunks_exact(o).enumerate() {
            for (oc, &v) in row.iter().enumerate() {
                dw[oc * kc + r] = v;
            }
        }
        return dw;
    }
    let mut dw = vec![T::zero(); o * kc];
    let mut col = vec![T::zero(); g.block_buffer()];
    for b in 0..n {
        let img = &x[b * plane..][..plane];
        if g.pointwise() {
            matmul(&mut dw, kc, dy_of(b), View::row_major(img, g.c, p).t(), true);
            continue;
        }
        for (y0, rows) in g.blocks() {
            g.im2col(img, y0, rows, &mut col);
            matmul(&mut dw, kc, dy_of(b).columns(y0 * g.ow, rows * g.ow), View::row_major(&col, kc, rows * g.ow).t(), true);
        }
    }
    dw
}

/// dx (N, C, H, W) from dy (N, O, P) and w (O, kc).
fn conv_grad_input<T: WithDType>(g: &Geometry, n: usize, o: usize, w: &[T], dy: &[T]) -> Result<Vec<T>> {
    let (plane, p, kc, k) = (g.c * g.h * g.w, g.oh * g.ow, g.kc(), g.k);
    let reach = g.d * (k - 1);
    if g.s == 1 && g.p <= reach {
        // stride 1: dx is dy convolved with the kernel flipped in space and
        // with input and output channels swapped, padded by reach - p
        let mut wt = vec![T::zero(); g.c * o * k * k];
        for oc in 0..o {
            for ic in 0..g.c {
                for t in 0..k * k {
                    wt[(ic * o + oc) * k * k + (k * k - 1 - t)] = w[(oc * g.c + ic) * k * k + t];
                }
            }
        }
        let back = KernelParams { kernel: k, stride: 1, padding: reach - g.p, dilation: g.d };
        let gt = Geometry::new(o, g.oh, g.ow, &back)?;
        debug_assert_eq!((gt.oh, gt.ow), (g.h, g.w));
        return Ok(conv_forward(&gt, n, g.c, dy, &wt, None, false));
    }
    let wt = View::row_major(w, o, kc).t();
    let mut dx = vec![T::zero(); n * plane];
    let mut dcol = vec![T::zero(); g.block_buffer()];
    for b in 0..n {
        let dyb = View::row_major(&dy[b * o * p..][..o * p], o, p);
        if g.pointwise() {
            matmul(&mut dx[b * plane..], p, wt, dyb, false);
            continue;
        }
        for (y0, rows) in g.blocks() {
            let cols = rows * g.ow;
            matmul(&mut dcol, cols, wt, dyb.columns(y0 * g.ow, cols), false);
            g.col2im_add(&dcol, y0, rows, &mut dx[b * plane..][..plane]);
        }
    }
    Ok(dx)
}

/// conv2d of x (N, C, H, W) with w (O, C, k, k), optionally followed by a
/// ReLU in the same pass: apply with `x.apply_op2(&w, op)` (trainable) or
/// `apply_op2_no_bwd`, or with a bias `x.apply_op3(&w, &bias, op)`.
pub struct Im2ColConv2d {
    pub params: KernelParams,
    /// max(0, ·) on each tile as it leaves the gemm; the backward pass masks
    /// the gradient by the saved output.
    pub relu: bool,
}

impl Im2ColConv2d {
    pub fn new(params: KernelParams, relu: bool) -> Im2ColConv2d {
        Im2ColConv2d { params, relu }
    }
}

/// The op's name in errors.
const OP: &str = "im2col conv2d";

impl Im2ColConv2d {
    /// The profile key of this convolution on input `x` (N, C, H, W) with `o` outputs.
    fn profile_key(&self, x: &[usize], o: usize, pass: &str) -> String {
        let KernelParams { kernel: k, stride, dilation, .. } = self.params;
        let dil = if dilation > 1 { format!(" dil {dilation}") } else { String::new() };
        format!(
            "conv {k}x{k}/{stride}{dil} {}->{o} at {}x{} (batch {}) {pass}",
            x.get(1).unwrap_or(&0),
            x.get(2).unwrap_or(&0),
            x.get(3).unwrap_or(&0),
            x.first().unwrap_or(&0)
        )
    }

    /// Multiply-adds x 2 of one product (forward, dW or dx) over the batch.
    fn flops(&self, x: &[usize], w: &[usize]) -> f64 {
        match self.geometry(x, w) {
            Ok((n, o, g)) => 2.0 * (n * o * g.kc() * g.oh * g.ow) as f64,
            Err(_) => 0.0,
        }
    }

    fn geometry(&self, x: &[usize], w: &[usize]) -> Result<(usize, usize, Geometry)> {
        let (&[n, c, h, wd], &[o, wc, k, k2]) = (x, w) else {
            candle_core::bail!("conv2d: input {x:?} and weight {w:?} must be 4D");
        };
        if wc != c || k != k2 || k != self.params.kernel {
            candle_core::bail!("conv2d: weight {w:?} does not fit input {x:?} and kernel {}", self.params.kernel);
        }
        Ok((n, o, Geometry::new(c, h, wd, &self.params)?))
    }

    /// The convolution, plus `bias` (O,) when given: the output starts as
    /// the bias and the products accumulate onto it (no extra pass).
    fn forward<T: WithDType>(&self, x: &[T], xl: &Layout, w: &[T], wl: &Layout, bias: Option<&[T]>) -> Result<(Vec<T>, Shape)> {
        let (n, o, g) = self.geometry(xl.dims(), wl.dims())?;
        if let Some(b) = bias {
            if b.len() != o {
                candle_core::bail!("conv2d: bias of {} for {o} output channels", b.len());
            }
        }
        let out = conv_forward(&g, n, o, contiguous(x, xl, OP)?, contiguous(w, wl, OP)?, bias, self.relu);
        Ok((out, Shape::from((n, o, g.oh, g.ow))))
    }

    /// (dx, dw); dx only when `want_dx` (an input image needs none, and its
    /// gradient is the most expensive product of a first layer).
    fn backward<T: WithDType>(&self, x: &Tensor, w: &Tensor, dy: &Tensor, want_dx: bool) -> Result<(Option<Tensor>, Tensor)> {
        let (n, o, g) = self.geometry(x.dims(), w.dims())?;
        let (dx, dw) = with_cpu_slice::<T, _>(x, OP, |xv| {
            with_cpu_slice::<T, _>(w, OP, |wv| {
                with_cpu_slice::<T, _>(dy, OP, |dyv| {
                    // side by side: on the small maps of deep layers each
                    // product alone leaves cores waiting at the gemm's joins
                    let split = forced_split();
                    let (dw, dx) = rayon::join(
                        || under_split(split, || conv_grad_weight(&g, n, o, xv, dyv)),
                        || under_split(split, || if want_dx { conv_grad_input(&g, n, o, wv, dyv).map(Some) } else { Ok(None) }),
                    );
                    Ok((dx?, dw))
                })
            })
        })?;
        let dx = match dx {
            Some(v) => Some(Tensor::from_vec(v, x.shape(), x.device())?),
            None => None,
        };
        Ok((dx, Tensor::from_vec(dw, w.shape(), w.device())?))
    }
}

impl Im2ColConv2d {
    fn cpu_forward(&self, x: (&CpuStorage, &Layout), w: (&CpuStorage, &Layout), bias: Option<(&CpuStorage, &Layout)>) -> Result<(CpuStorage, Shape)> {
        let ((sx, lx), (sw, lw)) = (x, w);
        let flops = self.flops(lx.dims(), lw.dims());
        profile::record(
            || self.profile_key(lx.dims(), lw.dims()[0], "forward"),
            flops,
            || match (sx, sw, bias) {
                (CpuStorage::F32(x), CpuStorage::F32(w), None) => self.forward(x, lx, w, lw, None).map(|(v, s)| (CpuStorage::F32(v), s)),
                (CpuStorage::F64(x), CpuStorage::F64(w), None) => self.forward(x, lx, w, lw, None).map(|(v, s)| (CpuStorage::F64(v), s)),
                (CpuStorage::F32(x), CpuStorage::F32(w), Some((CpuStorage::F32(b), lb))) => {
                    self.forward(x, lx, w, lw, Some(contiguous(b, lb, OP)?)).map(|(v, s)| (CpuStorage::F32(v), s))
                }
                (CpuStorage::F64(x), CpuStorage::F64(w), Some((CpuStorage::F64(b), lb))) => {
                    self.forward(x, lx, w, lw, Some(contiguous(b, lb, OP)?)).map(|(v, s)| (CpuStorage::F64(v), s))
                }
                _ => candle_core::bail!("im2col conv2d: f32 or f64 input, weight and bias of one dtype"),
            },
        )
    }

    /// The gradient at the convolution's own output: with the fused ReLU,
    /// zero where the saved output `res` is not positive.
    fn grad_before_relu(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        if !self.relu {
            return Ok(grad.clone());
        }
        relu_masked(res, grad, OP)
    }

    fn cpu_backward(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Tensor)> {
        // an input that is no variable and no result of one (an image) gets no gradient
        let want_dx = x.track_op();
        let flops = self.flops(x.dims(), w.dims()) * if want_dx { 2.0 } else { 1.0 };
        profile::record(
            || self.profile_key(x.dims(), w.dims()[0], if want_dx { "backward" } else { "backward (dW only)" }),
            flops,
            || match x.dtype() {
                DType::F32 => self.backward::<f32>(x, w, grad, want_dx),
                DType::F64 => self.backward::<f64>(x, w, grad, want_dx),
                dt => candle_core::bail!("im2col conv2d: no backward for {dt:?}"),
            },
        )
    }
}

impl CustomOp2 for Im2ColConv2d {
    fn name(&self) -> &'static str {
        "im2col-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu_forward((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = self.grad_before_relu(res, grad)?;
        let (dx, dw) = self.cpu_backward(x, w, &grad)?;
        Ok((dx, Some(dw)))
    }
}

/// With a bias (O,) as third argument: `x.apply_op3(&w, &bias, Im2ColConv2d::new(cfg, false))`.
impl CustomOp3 for Im2ColConv2d {
    fn name(&self) -> &'static str {
        "im2col-conv2d-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu_forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = self.grad_before_relu(res, grad)?;
        let (dx, dw) = self.cpu_backward(x, w, &grad)?;
        // dbias: the output gradient summed over batch and positions
        let db = grad.sum(3)?.sum(2)?.sum(0)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// Whether `Im2ColConv2d` can run these tensors.
pub fn supported(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> bool {
    x.device().is_cpu()
        && x.dtype() == w.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && bias.is_none_or(|b| b.dtype() == x.dtype() && b.rank() == 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::models::blocks::testing::det_tensor;
    use candle_core::Var;

    thread_local! {
        /// Forces the split of work on this thread: Some(r > 0) = parallel
        /// tiles of r rows, Some(0) = sequential blocks.
        pub(crate) static FORCE_TILE_ROWS: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Milliseconds (best of 5) of the three products of a few layer shapes
    /// of the shipped networks: `cargo test --release --lib
    /// conv_products_by_shape -- --ignored --nocapture`. Figures for tuning
    /// the split of work, not a test of speed.
    #[test]
    #[ignore = "timings, run by hand"]
    fn conv_products_by_shape() {
        let same = KernelParams { kernel: 3, stride: 1, padding: 1, dilation: 1 };
        for (n, c, o, side) in
            [(1, 1, 16, 512), (2, 16, 16, 512), (2, 16, 32, 256), (2, 32, 32, 256), (2, 64, 64, 128), (2, 128, 128, 64), (2, 64, 64, 24), (8, 64, 64, 14)]
        {
            let g = Geometry::new(c, side, side, &same).unwrap();
            let x: Vec<f32> = (0..n * c * side * side).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
            let w: Vec<f32> = (0..o * g.kc()).map(|i| ((i % 5) as f32 - 2.0) * 0.1).collect();
            let dy: Vec<f32> = (0..n * o * g.oh * g.ow).map(|i| ((i % 3) as f32 - 1.0) * 0.1).collect();
            let best = |f: &mut dyn FnMut()| {
                (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let gflop = 2.0 * (n * o * g.kc() * g.oh * g.ow) as f64 / 1e9;
            let fwd = best(&mut || drop(conv_forward(&g, n, o, &x, &w, None, true)));
            let dw = best(&mut || drop(conv_grad_weight(&g, n, o, &x, &dy)));
            let dx = best(&mut || drop(conv_grad_input(&g, n, o, &w, &dy).unwrap()));
            println!(
                "{n}x{c}->{o} at {side}²: forward {fwd:.1} ms ({:.0} GFLOP/s), dW {dw:.1} ms ({:.0}), dx {dx:.1} ms ({:.0})",
                gflop / fwd * 1e3,
                gflop / dw * 1e3,
                gflop / dx * 1e3
            );
        }
    }

    /// Few-channel layers (first layers) with bias and ReLU equal candle's
    /// conv2d + bias + relu, forward and backward.
    #[test]
    fn first_layers_with_bias_and_relu_equal_candle() -> Result<()> {
        for (c, k, p, d) in [(1, 3, 1, 1), (1, 5, 2, 1), (3, 3, 2, 2), (2, 3, 0, 1)] {
            let cfg = KernelParams { kernel: k, stride: 1, padding: p, dilation: d };
            let x = Var::from_tensor(&det_tensor(&[2, c, 11, 13], 4))?;
            let wt = Var::from_tensor(&det_tensor(&[5, c, k, k], 5))?;
            let b = Var::from_tensor(&det_tensor(&[5], 6))?;
            let reference = x.conv2d(&wt, p, 1, d, 1)?.broadcast_add(&b.reshape((1, 5, 1, 1))?)?.relu()?;
            let y = x.apply_op3(&wt, &b, Im2ColConv2d::new(cfg, true))?;
            assert!(max_diff(&y, &reference) < 1e-12, "{c} {k} {p} {d}");
            let t = det_tensor(reference.dims(), 7);
            let (g, gr) = ((&y * &t)?.sum_all()?.backward()?, (&reference * &t)?.sum_all()?.backward()?);
            for v in [&x, &wt, &b] {
                assert!(max_diff(g.get(v).unwrap(), gr.get(v).unwrap()) < 1e-10, "{c} {k} {p} {d}: gradient");
            }
        }
        Ok(())
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    /// (y, dx, dw) of the op under a forced split.
    fn run(x: &Var, w: &Var, cfg: KernelParams, tile_rows: usize, t: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        run_op(x, w, Im2ColConv2d::new(cfg, false), tile_rows, t)
    }

    fn run_op(x: &Var, w: &Var, op: Im2ColConv2d, tile_rows: usize, t: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        FORCE_TILE_ROWS.set(Some(tile_rows));
        let y = x.apply_op2(w, op)?;
        let g = (&y * t)?.sum_all()?.backward()?;
        FORCE_TILE_ROWS.set(None);
        Ok((y, g.get(x).unwrap().clone(), g.get(w).unwrap().clone()))
    }

    #[test]
    fn parallel_tiles_equal_sequential_blocks_and_candle() -> Result<()> {
        for (n, c, h, w, o, k, s, p, d) in [
            (2, 3, 13, 11, 4, 3, 1, 1, 1),
            (1, 4, 17, 9, 5, 3, 2, 1, 1),
            (2, 2, 12, 12, 3, 3, 1, 2, 2),
            (2, 5, 9, 10, 6, 1, 1, 0, 1),
            (1, 3, 11, 8, 2, 1, 2, 0, 1),
            (1, 2, 10, 10, 3, 4, 1, 1, 1),
            (1, 2, 8, 9, 3, 3, 1, 3, 1),
        ] {
            let case = (n, c, h, w, o, k, s, p, d);
            let cfg = KernelParams { kernel: k, stride: s, padding: p, dilation: d };
            let x = Var::from_tensor(&det_tensor(&[n, c, h, w], 1))?;
            let wt = Var::from_tensor(&det_tensor(&[o, c, k, k], 2))?;
            let reference = x.conv2d(&wt, p, s, d, 1)?;
            let t = det_tensor(reference.dims(), 3);
            let (y0, dx0, dw0) = run(&x, &wt, cfg, 0, &t)?;
            assert!(max_diff(&y0, &reference) < 1e-12, "{case:?}");
            for rows in [1, 2, 3, 5] {
                let (y, dx, dw) = run(&x, &wt, cfg, rows, &t)?;
                assert!(max_diff(&y, &y0) < 1e-12, "{case:?} rows {rows}: y");
                assert!(max_diff(&dx, &dx0) < 1e-12, "{case:?} rows {rows}: dx");
                assert!(max_diff(&dw, &dw0) < 1e-12, "{case:?} rows {rows}: dw");
            }
            // the fused ReLU equals conv then candle's relu, forward and backward, on both splits
            // (candle's backward only at stride 1: it fails on mixed parity at stride 2)
            let fused_ref = reference.relu()?;
            let g_ref = if s == 1 { Some((&fused_ref * &t)?.sum_all()?.backward()?) } else { None };
            for rows in [0, 2] {
                let (y, dx, dw) = run_op(&x, &wt, Im2ColConv2d::new(cfg, true), rows, &t)?;
                assert!(max_diff(&y, &fused_ref) < 1e-12, "{case:?} relu rows {rows}: y");
                if let Some(g_ref) = &g_ref {
                    assert!(max_diff(&dx, g_ref.get(&x).unwrap()) < 1e-10, "{case:?} relu rows {rows}: dx");
                    assert!(max_diff(&dw, g_ref.get(&wt).unwrap()) < 1e-10, "{case:?} relu rows {rows}: dw");
                }
            }
            if s == 1 {
                // candle's own backward is right at stride 1
                let g = (reference * &t)?.sum_all()?.backward()?;
                assert!(max_diff(g.get(&x).unwrap(), &dx0) < 1e-10, "{case:?}: dx vs candle");
                assert!(max_diff(g.get(&wt).unwrap(), &dw0) < 1e-10, "{case:?}: dw vs candle");
            }
        }
        Ok(())
    }
}
