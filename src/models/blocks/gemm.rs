//! Strided matrix products on CPU slices, straight into the `gemm` crate that
//! candle's own matmul uses (with its AVX-512 kernels enabled in Cargo.toml,
//! chosen at run time). The custom CPU ops (im2col convolution) call it on
//! their buffers without wrapping them in tensors: no allocation, no copy,
//! transposes by strides.

use candle_core::WithDType;
use gemm::Parallelism;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> View<'a, T> {
        View { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The same elements read as the transpose.
    pub fn t(self) -> View<'a, T> {
        View { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// Columns `from .. from + n`.
    pub fn columns(self, from: usize, n: usize) -> View<'a, T> {
        assert!(from + n <= self.cols, "columns {from}+{n} of {}", self.cols);
        View { data: &self.data[(from * self.cs).min(self.data.len())..], cols: n, ..self }
    }

    fn last_index(&self) -> Option<usize> {
        (self.rows > 0 && self.cols > 0).then(|| (self.rows - 1) * self.rs + (self.cols - 1) * self.cs)
    }
}

/// The threads a product may use: candle's own count (`RAYON_NUM_THREADS`, or
/// the cores), so ours and candle's ops agree.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// How many threads one product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// candle's count (`threads()`): one large product.
    All,
    /// The calling thread only: many small products already run in parallel.
    One,
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), where `dst` is
/// `a.rows x b.cols` with row stride `dst_rs` and unit column stride, on all
/// threads. Panics when a view or the destination does not hold its extent
/// (a bug in the caller, never data-dependent).
pub fn matmul<T: WithDType>(dst: &mut [T], dst_rs: usize, a: View<T>, b: View<T>, accumulate: bool) {
    matmul_on(dst, dst_rs, a, b, accumulate, Threads::All)
}

/// `matmul` with a choice of threads.
pub fn matmul_on<T: WithDType>(dst: &mut [T], dst_rs: usize, a: View<T>, b: View<T>, accumulate: bool, threads: Threads) {
    let (m, n) = (a.rows, b.cols);
    if m > 0 && n > 0 {
        assert!((m - 1) * dst_rs + n <= dst.len(), "matmul: destination {m}x{n} (row stride {dst_rs}) in {}", dst.len());
    }
    // SAFETY: the destination's extent was checked above, and `dst` is a
    // unique borrow, so no one else reads or writes it meanwhile
    unsafe { matmul_ptr(dst.as_mut_ptr(), dst_rs, a, b, accumulate, threads) }
}

/// `matmul` into a raw destination, for parallel callers that write
/// disjoint parts of one buffer.
///
/// # Safety
/// `dst.add(i * dst_rs + j)` must be valid for reads and writes for every
/// `i < a.rows`, `j < b.cols`, and no other thread may access those elements
/// during the call (they must not overlap `a` or `b` either).
pub unsafe fn matmul_ptr<T: WithDType>(dst: *mut T, dst_rs: usize, a: View<T>, b: View<T>, accumulate: bool, threads: Threads) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert_eq!(k, b.rows, "matmul: {}x{} · {}x{}", a.rows, a.cols, b.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(T::zero());
            }
        }
        return;
    }
    for v in [&a, &b] {
        let last = v.last_index().expect("non-empty");
        assert!(last < v.data.len(), "matmul: view {}x{} (strides {}, {}) in {}", v.rows, v.cols, v.rs, v.cs, v.data.len());
    }
    let t = match threads {
        Threads::All => self::threads(),
        Threads::One => 1,
    };
    let par = if t > 1 { Parallelism::Rayon(t) } else { Parallelism::None };
    // every index of `a` and `b` the product reads lies inside their slices
    // (checked above), the destination is the caller's promise, and T is
    // f32 / f64 / f16 / bf16, the types gemm dispatches on
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    )
}

/// A raw pointer that parallel tasks share to write disjoint parts of one
/// buffer (each use states why its part is its own).
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);

impl<T> SharedMut<T> {
    /// The pointer (a method, so that closures capture the whole Sync wrapper).
    pub fn ptr(&self) -> *mut T {
        self.0
    }
}

// SAFETY: only a pointer; the code that writes through it guarantees disjointness
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View<f64>, b: View<f64>) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs]).sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_equal_the_definition() {
        let a: Vec<f64> = (0..35).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..40).map(|i| ((i * 5) % 13) as f64 - 6.0).collect();
        let av = View::row_major(&a, 5, 7);
        let bv = View::row_major(&b, 8, 5).columns(1, 4).t(); // 4 x 8 read transposed from an 8 x 5 matrix, columns 1..5
        let cv = View::row_major(&b, 7, 5).columns(0, 5); // 7 x 5
        let mut dst = vec![0.0; 5 * 5];
        matmul(&mut dst, 5, av, cv, false);
        assert_eq!(dst, naive(av, cv));
        // accumulate into a wider destination at a column offset
        let mut wide = vec![1.0; 4 * 10];
        let a2 = View::row_major(&a[..28], 4, 7);
        matmul(&mut wide[3..], 10, a2, cv, true);
        let want = naive(a2, cv);
        for i in 0..4 {
            for j in 0..10 {
                let w = if (3..8).contains(&j) { 1.0 + want[i * 5 + j - 3] } else { 1.0 };
                assert_eq!(wide[i * 10 + j], w, "{i} {j}");
            }
        }
        let mut d2 = vec![0.0; 4 * 5];
        matmul(&mut d2, 5, bv, View::row_major(&b[..40], 8, 5), false);
        assert_eq!(d2, naive(bv, View::row_major(&b[..40], 8, 5)));
    }
}
