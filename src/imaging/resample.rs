//! Resampling in physical space, windowing and cropping to the body.
//!
//! Interpolators work on continuous voxel coordinates (voxel centres at
//! integers). A point is inside a volume when it lies within half a voxel of
//! its outermost centres; outside points get the caller's fill value.
//!
//! - [`Interpolation::Nearest`], for label maps: never invents a value;
//! - [`Interpolation::Linear`], trilinear;
//! - [`Interpolation::BSpline3`], cubic B-spline with the exact
//!   interpolating prefilter (Unser 1999; Thevenaz, Blu & Unser 2000,
//!   "Interpolation revisited"), mirror-symmetric boundaries.

use std::collections::VecDeque;

use super::geometry::{invert3, mat_vec, sub};
use super::volume::{Grid, Volume};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Nearest,
    Linear,
    BSpline3,
}

/// Samples one volume at continuous voxel coordinates.
pub struct Sampler<'a> {
    dims: [usize; 3],
    values: std::borrow::Cow<'a, [f32]>,
    interpolation: Interpolation,
    fill: f32,
}

impl<'a> Sampler<'a> {
    /// For B-splines this computes the interpolation coefficients (one pass
    /// of the recursive filter along each axis: a copy of the volume).
    pub fn new(volume: &'a Volume, interpolation: Interpolation, fill: f32) -> Self {
        let values = match interpolation {
            Interpolation::BSpline3 => std::borrow::Cow::Owned(bspline_coefficients(&volume.data, volume.dims)),
            _ => std::borrow::Cow::Borrowed(&volume.data[..]),
        };
        Sampler { dims: volume.dims, values, interpolation, fill }
    }

    fn inside(&self, c: [f64; 3]) -> bool {
        (0..3).all(|a| c[a] >= -0.5 && c[a] <= self.dims[a] as f64 - 0.5)
    }

    fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        self.values[(k * self.dims[1] + j) * self.dims[0] + i]
    }

    /// The interpolated value at voxel coordinates `c` (i, j, k).
    pub fn sample(&self, c: [f64; 3]) -> f32 {
        if !self.inside(c) || c.iter().any(|v| !v.is_finite()) {
            return self.fill;
        }
        match self.interpolation {
            Interpolation::Nearest => {
                let idx = |a: usize| (c[a] + 0.5).floor().clamp(0.0, (self.dims[a] - 1) as f64) as usize;
                self.at(idx(0), idx(1), idx(2))
            }
            Interpolation::Linear => {
                let mut lo = [0usize; 3];
                let mut hi = [0usize; 3];
                let mut t = [0f64; 3];
                for a in 0..3 {
                    let x = c[a].clamp(0.0, (self.dims[a] - 1) as f64);
                    let f = x.floor();
                    lo[a] = f as usize;
                    hi[a] = (lo[a] + 1).min(self.dims[a] - 1);
                    t[a] = x - f;
                }
                let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
                let plane = |k: usize| {
                    let r0 = lerp(self.at(lo[0], lo[1], k) as f64, self.at(hi[0], lo[1], k) as f64, t[0]);
                    let r1 = lerp(self.at(lo[0], hi[1], k) as f64, self.at(hi[0], hi[1], k) as f64, t[0]);
                    lerp(r0, r1, t[1])
                };
                lerp(plane(lo[2]), plane(hi[2]), t[2]) as f32
            }
            Interpolation::BSpline3 => {
                let mut idx = [[0usize; 4]; 3];
                let mut w = [[0f64; 4]; 3];
                for a in 0..3 {
                    let f = c[a].floor();
                    let t = c[a] - f;
                    w[a] = bspline_weights(t);
                    for (m, slot) in idx[a].iter_mut().enumerate() {
                        *slot = mirror(f as i64 - 1 + m as i64, self.dims[a]);
                    }
                }
                let mut sum = 0f64;
                for (mk, &k) in idx[2].iter().enumerate() {
                    for (mj, &j) in idx[1].iter().enumerate() {
                        let wjk = w[2][mk] * w[1][mj];
                        let row = (k * self.dims[1] + j) * self.dims[0];
                        for (mi, &i) in idx[0].iter().enumerate() {
                            sum += wjk * w[0][mi] * self.values[row + i] as f64;
                        }
                    }
                }
                sum as f32
            }
        }
    }
}

/// Cubic B-spline basis weights for offsets -1, 0, 1, 2 at fraction `t`.
fn bspline_weights(t: f64) -> [f64; 4] {
    let s = 1.0 - t;
    [s * s * s / 6.0, 2.0 / 3.0 - t * t + 0.5 * t * t * t, 2.0 / 3.0 - s * s + 0.5 * s * s * s, t * t * t / 6.0]
}

/// Mirror-symmetric index into `0..n` (…, 2, 1, 0, 1, 2, …, n-2, n-1, n-2, …).
fn mirror(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let m = i.rem_euclid(period);
    (if m >= n as i64 { period - m } else { m }) as usize
}

/// Interpolation coefficients of a cubic B-spline through the samples,
/// axis by axis.
fn bspline_coefficients(data: &[f32], dims: [usize; 3]) -> Vec<f32> {
    let mut c = data.to_vec();
    let [nx, ny, nz] = dims;
    let mut line = Vec::new();
    // along i
    if nx > 1 {
        for row in c.chunks_mut(nx) {
            line.clear();
            line.extend(row.iter().map(|&v| v as f64));
            prefilter_line(&mut line);
            for (d, s) in row.iter_mut().zip(&line) {
                *d = *s as f32;
            }
        }
    }
    // along j
    if ny > 1 {
        for k in 0..nz {
            for i in 0..nx {
                line.clear();
                line.extend((0..ny).map(|j| c[(k * ny + j) * nx + i] as f64));
                prefilter_line(&mut line);
                for (j, s) in line.iter().enumerate() {
                    c[(k * ny + j) * nx + i] = *s as f32;
                }
            }
        }
    }
    // along k
    if nz > 1 {
        for j in 0..ny {
            for i in 0..nx {
                line.clear();
                line.extend((0..nz).map(|k| c[(k * ny + j) * nx + i] as f64));
                prefilter_line(&mut line);
                for (k, s) in line.iter().enumerate() {
                    c[(k * ny + j) * nx + i] = *s as f32;
                }
            }
        }
    }
    c
}

/// In-place recursive filter turning samples into cubic B-spline
/// coefficients (pole sqrt(3) - 2, gain 6), mirror boundaries.
fn prefilter_line(c: &mut [f64]) {
    let n = c.len();
    if n < 2 {
        return;
    }
    let z = 3f64.sqrt() - 2.0;
    let lambda = (1.0 - z) * (1.0 - 1.0 / z);
    for v in c.iter_mut() {
        *v *= lambda;
    }
    c[0] = initial_causal(c, z);
    for i in 1..n {
        c[i] += z * c[i - 1];
    }
    c[n - 1] = (z / (z * z - 1.0)) * (z * c[n - 2] + c[n - 1]);
    for i in (0..n - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
}

fn initial_causal(c: &[f64], z: f64) -> f64 {
    let n = c.len();
    let tolerance = 1e-12f64;
    let horizon = (tolerance.ln() / z.abs().ln()).ceil() as usize;
    if horizon < n {
        let mut zn = z;
        let mut sum = c[0];
        for v in &c[1..horizon] {
            sum += zn * v;
            zn *= z;
        }
        sum
    } else {
        let mut zn = z;
        let iz = 1.0 / z;
        let mut z2n = z.powi(n as i32 - 1);
        let mut sum = c[0] + z2n * c[n - 1];
        z2n = z2n * z2n * iz;
        for v in &c[1..n - 1] {
            sum += (zn + z2n) * v;
            zn *= z;
            z2n *= iz;
        }
        sum / (1.0 - zn * zn)
    }
}

/// Resample `src` onto `target` (any orientation): each target voxel centre
/// goes through the target's affine, then the inverse of the source's.
/// The result keeps the source's identity (UIDs) and has no sources.
pub fn resample_to_grid(src: &Volume, target: &Grid, interpolation: Interpolation, fill: f32) -> Volume {
    let sampler = Sampler::new(src, interpolation, fill);
    let src_inv = invert3(src.grid().linear()).expect("source grid is not degenerate");
    // target voxel -> source voxel: c = S^-1 (T ijk + t0 - s0)
    let m = mul3(src_inv, target.linear());
    let offset = mat_vec(src_inv, sub(target.origin, src.origin));
    let mut out = Volume::filled(*target, fill);
    out.frame_of_reference_uid = src.frame_of_reference_uid.clone();
    out.study_instance_uid = src.study_instance_uid.clone();
    out.series_instance_uid = src.series_instance_uid.clone();
    let [nx, ny, _] = target.dims;
    let slice_len = nx * ny;
    if slice_len == 0 {
        return out;
    }
    let fill_slice = |k: usize, dst: &mut [f32]| {
        for j in 0..ny {
            for i in 0..nx {
                let ijk = [i as f64, j as f64, k as f64];
                let c = [
                    m[0][0] * ijk[0] + m[0][1] * ijk[1] + m[0][2] * ijk[2] + offset[0],
                    m[1][0] * ijk[0] + m[1][1] * ijk[1] + m[1][2] * ijk[2] + offset[1],
                    m[2][0] * ijk[0] + m[2][1] * ijk[1] + m[2][2] * ijk[2] + offset[2],
                ];
                dst[j * nx + i] = sampler.sample(c);
            }
        }
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(target.dims[2]).max(1);
    let slices: Vec<(usize, &mut [f32])> = out.data.chunks_mut(slice_len).enumerate().collect();
    if workers == 1 {
        for (k, dst) in slices {
            fill_slice(k, dst);
        }
    } else {
        let per = slices.len().div_ceil(workers);
        let mut chunks: Vec<Vec<(usize, &mut [f32])>> = Vec::new();
        let mut it = slices.into_iter();
        loop {
            let chunk: Vec<_> = it.by_ref().take(per).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        std::thread::scope(|scope| {
            for chunk in chunks {
                let fill_slice = &fill_slice;
                scope.spawn(move || {
                    for (k, dst) in chunk {
                        fill_slice(k, dst);
                    }
                });
            }
        });
    }
    out
}

fn mul3(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = (0..3).map(|x| a[r][x] * b[x][c]).sum();
        }
    }
    m
}

/// Resample `src` onto the grid of `reference` (e.g. a label map onto its
/// CT); the result carries the reference's sources.
pub fn resample_like(src: &Volume, reference: &Volume, interpolation: Interpolation, fill: f32) -> Volume {
    let mut out = resample_to_grid(src, &reference.grid(), interpolation, fill);
    out.sources = reference.sources.clone();
    out
}

/// Resample to a new voxel spacing, keeping origin (centre of voxel 0) and
/// direction: `dims = floor((n - 1) * old / new) + 1` along each axis, so
/// every new centre lies within the old centres' span. Sources follow the
/// nearest old slice.
pub fn resample_to_spacing(src: &Volume, spacing: [f64; 3], interpolation: Interpolation) -> Volume {
    assert!(spacing.iter().all(|s| s.is_finite() && *s > 0.0), "spacing must be positive: {spacing:?}");
    let mut dims = [0usize; 3];
    for a in 0..3 {
        dims[a] = (((src.dims[a] as f64 - 1.0) * src.spacing[a] / spacing[a] + 1e-9).floor() as usize + 1).max(1);
    }
    let grid = Grid { dims, spacing, origin: src.origin, direction: src.direction };
    let fill = src.data.iter().copied().fold(f32::INFINITY, f32::min);
    let mut out = resample_to_grid(src, &grid, interpolation, if fill.is_finite() { fill } else { 0.0 });
    if src.sources.len() == src.dims[2] && !src.sources.is_empty() {
        out.sources = (0..dims[2])
            .map(|k| {
                let old = ((k as f64 * spacing[2] / src.spacing[2]).round() as usize).min(src.dims[2] - 1);
                src.sources[old].clone()
            })
            .collect();
    }
    out
}

/// Linear window to [0, 1]: `center - width/2` maps to 0, `center + width/2`
/// to 1, clamped. A width <= 0 is a threshold at `center`.
pub fn window_values(values: &[f32], center: f64, width: f64) -> Vec<f32> {
    if width <= 0.0 {
        return values.iter().map(|&v| if v as f64 > center { 1.0 } else { 0.0 }).collect();
    }
    let lo = center - width / 2.0;
    values.iter().map(|&v| (((v as f64 - lo) / width).clamp(0.0, 1.0)) as f32).collect()
}

/// The volume windowed to [0, 1] (see [`window_values`]).
pub fn window(volume: &Volume, center: f64, width: f64) -> Volume {
    Volume { data: window_values(&volume.data, center, width), ..volume.clone() }
}

/// A box of voxels: `min` inclusive, `max` exclusive, per axis (i, j, k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundingBox {
    pub min: [usize; 3],
    pub max: [usize; 3],
}

impl BoundingBox {
    pub fn size(&self) -> [usize; 3] {
        [self.max[0] - self.min[0], self.max[1] - self.min[1], self.max[2] - self.min[2]]
    }
}

/// The voxels of `bbox`; origin moves to the new voxel (0,0,0), sources
/// follow k.
pub fn crop(volume: &Volume, bbox: BoundingBox) -> Volume {
    let size = bbox.size();
    let mut data = Vec::with_capacity(size[0] * size[1] * size[2]);
    for k in bbox.min[2]..bbox.max[2] {
        for j in bbox.min[1]..bbox.max[1] {
            let start = volume.index(bbox.min[0], j, k);
            data.extend_from_slice(&volume.data[start..start + size[0]]);
        }
    }
    let sources = if volume.sources.len() == volume.dims[2] { volume.sources[bbox.min[2]..bbox.max[2]].to_vec() } else { Vec::new() };
    Volume {
        dims: size,
        data,
        spacing: volume.spacing,
        origin: volume.voxel_to_patient([bbox.min[0] as f64, bbox.min[1] as f64, bbox.min[2] as f64]),
        direction: volume.direction,
        frame_of_reference_uid: volume.frame_of_reference_uid.clone(),
        study_instance_uid: volume.study_instance_uid.clone(),
        series_instance_uid: volume.series_instance_uid.clone(),
        sources,
    }
}

/// Result of [`crop_to_body`].
#[derive(Debug, Clone)]
pub struct BodyCrop {
    /// Bounding box of the largest component, margin included, in the input's voxels.
    pub bbox: BoundingBox,
    /// Voxels in the largest component.
    pub component_voxels: usize,
    pub volume: Volume,
}

/// Crop to the largest 6-connected component of voxels above
/// `threshold_hu` (the body, not the table or noise), plus `margin_mm` on
/// every side (clamped to the volume). `None` when no voxel is above the
/// threshold.
pub fn crop_to_body(volume: &Volume, threshold_hu: f32, margin_mm: f64) -> Option<BodyCrop> {
    let [nx, ny, nz] = volume.dims;
    let n = nx * ny * nz;
    let mut visited = vec![0u64; n.div_ceil(64)];
    let seen = |v: &Vec<u64>, i: usize| v[i / 64] >> (i % 64) & 1 == 1;
    let mark = |v: &mut Vec<u64>, i: usize| v[i / 64] |= 1 << (i % 64);
    let mut best: Option<(usize, BoundingBox)> = None;
    let mut queue = VecDeque::new();
    for start in 0..n {
        if seen(&visited, start) || volume.data[start] <= threshold_hu {
            continue;
        }
        mark(&mut visited, start);
        queue.push_back(start);
        let mut count = 0usize;
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        while let Some(idx) = queue.pop_front() {
            count += 1;
            let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
            for (a, v) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v);
            }
            let mut visit = |m: usize| {
                if !seen(&visited, m) && volume.data[m] > threshold_hu {
                    mark(&mut visited, m);
                    queue.push_back(m);
                }
            };
            if i > 0 {
                visit(idx - 1);
            }
            if i + 1 < nx {
                visit(idx + 1);
            }
            if j > 0 {
                visit(idx - nx);
            }
            if j + 1 < ny {
                visit(idx + nx);
            }
            if k > 0 {
                visit(idx - nx * ny);
            }
            if k + 1 < nz {
                visit(idx + nx * ny);
            }
        }
        if best.as_ref().is_none_or(|(c, _)| count > *c) {
            best = Some((count, BoundingBox { min: lo, max: [hi[0] + 1, hi[1] + 1, hi[2] + 1] }));
        }
    }
    let (count, mut bbox) = best?;
    for a in 0..3 {
        let m = if volume.spacing[a] > 0.0 { (margin_mm.max(0.0) / volume.spacing[a]).ceil() as usize } else { 0 };
        bbox.min[a] = bbox.min[a].saturating_sub(m);
        bbox.max[a] = (bbox.max[a] + m).min(volume.dims[a]);
    }
    Some(BodyCrop { bbox, component_voxels: count, volume: crop(volume, bbox) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::geometry::{cross, normalize};

    fn axial(dims: [usize; 3], spacing: [f64; 3]) -> Grid {
        Grid { dims, spacing, origin: [-3.0, 4.0, 10.0], direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] }
    }

    fn volume_from(grid: Grid, f: impl Fn(usize, usize, usize) -> f32) -> Volume {
        let mut v = Volume::filled(grid, 0.0);
        for k in 0..grid.dims[2] {
            for j in 0..grid.dims[1] {
                for i in 0..grid.dims[0] {
                    let idx = v.index(i, j, k);
                    v.data[idx] = f(i, j, k);
                }
            }
        }
        v
    }

    fn pseudo_random(i: usize, j: usize, k: usize) -> f32 {
        let h = (i * 73856093) ^ (j * 19349663) ^ (k * 83492791);
        (h % 1000) as f32 / 10.0 - 50.0
    }

    #[test]
    fn identity_resample_returns_the_input() {
        let v = volume_from(axial([6, 5, 4], [0.7, 0.8, 2.0]), pseudo_random);
        for interp in [Interpolation::Nearest, Interpolation::Linear, Interpolation::BSpline3] {
            let r = resample_to_grid(&v, &v.grid(), interp, -999.0);
            let tol = if interp == Interpolation::BSpline3 { 1e-3 } else { 0.0 };
            for (a, b) in r.data.iter().zip(&v.data) {
                assert!((a - b).abs() <= tol, "{interp:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn trilinear_at_voxel_centres_and_midpoints() {
        let v = volume_from(axial([4, 3, 3], [1.0; 3]), pseudo_random);
        let s = Sampler::new(&v, Interpolation::Linear, 0.0);
        for k in 0..3 {
            for j in 0..3 {
                for i in 0..4 {
                    assert_eq!(s.sample([i as f64, j as f64, k as f64]), v.get(i, j, k));
                }
            }
        }
        let mid = s.sample([0.5, 0.0, 0.0]);
        assert!((mid - 0.5 * (v.get(0, 0, 0) + v.get(1, 0, 0))).abs() < 1e-5);
        // outside by more than half a voxel: fill
        assert_eq!(s.sample([-0.6, 0.0, 0.0]), 0.0);
        assert_eq!(s.sample([3.4, 2.0, 2.0]), v.get(3, 2, 2));
    }

    #[test]
    fn bspline_interpolates_samples_and_reproduces_a_linear_ramp() {
        let v = volume_from(axial([40, 36, 32], [1.0; 3]), |i, j, k| 2.0 * i as f32 - 3.0 * j as f32 + 0.5 * k as f32 + 7.0);
        let s = Sampler::new(&v, Interpolation::BSpline3, f32::NAN);
        // interpolating: at centres, the samples (boundaries included)
        for (i, j, k) in [(0, 0, 0), (5, 4, 3), (39, 35, 31), (20, 0, 31)] {
            assert!((s.sample([i as f64, j as f64, k as f64]) - v.get(i, j, k)).abs() < 1e-3);
        }
        // off-grid points of a linear function away from the mirror boundaries
        // (their effect decays as |sqrt(3) - 2|^distance): exact
        for c in [[13.3, 14.7, 12.2], [20.5, 17.5, 15.5], [26.9, 12.1, 19.4]] {
            let want = 2.0 * c[0] - 3.0 * c[1] + 0.5 * c[2] + 7.0;
            let got = s.sample(c) as f64;
            assert!((got - want).abs() < 1e-3, "{c:?}: {got} vs {want}");
        }
        // a smooth function: cubic B-spline beats trilinear
        let smooth = volume_from(axial([16, 16, 4], [1.0; 3]), |i, j, _| ((i as f32) * 0.4).sin() * ((j as f32) * 0.3).cos());
        let (bs, lin) = (Sampler::new(&smooth, Interpolation::BSpline3, 0.0), Sampler::new(&smooth, Interpolation::Linear, 0.0));
        let (mut e_bs, mut e_lin) = (0f64, 0f64);
        for n in 0..50 {
            let c = [4.0 + n as f64 * 0.157, 5.0 + n as f64 * 0.113, 1.5];
            let want = ((c[0] * 0.4).sin() * (c[1] * 0.3).cos()) as f32;
            e_bs += (bs.sample(c) - want).abs() as f64;
            e_lin += (lin.sample(c) - want).abs() as f64;
        }
        assert!(e_bs < 0.5 * e_lin, "bspline {e_bs} vs linear {e_lin}");
    }

    #[test]
    fn mirror_indices() {
        let got: Vec<usize> = (-3..8).map(|i| mirror(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(mirror(-5, 1), 0);
    }

    #[test]
    fn nearest_keeps_the_label_set_on_an_oblique_grid() {
        let labels = volume_from(axial([20, 18, 12], [1.0, 1.0, 2.0]), |i, j, k| match (i / 5 + j / 6 + k / 4) % 4 {
            0 => 0.0,
            1 => 1.0,
            2 => 2.0,
            _ => 5.0,
        });
        let row = normalize([1.0, 0.3, 0.1]);
        let col = normalize(cross(cross(row, [0.0, 1.0, 0.2]), row));
        let col = if col[1] < 0.0 { [-col[0], -col[1], -col[2]] } else { col };
        let target = Grid { dims: [25, 25, 15], spacing: [0.8, 0.8, 1.3], origin: [-2.0, 5.0, 11.0], direction: [row, col, cross(row, col)] };
        let r = resample_to_grid(&labels, &target, Interpolation::Nearest, 0.0);
        let mut seen: Vec<f32> = r.data.clone();
        seen.sort_by(f32::total_cmp);
        seen.dedup();
        assert_eq!(seen, vec![0.0, 1.0, 2.0, 5.0]);
        // linear interpolation would invent values
        let lin = resample_to_grid(&labels, &target, Interpolation::Linear, 0.0);
        assert!(lin.data.iter().any(|v| ![0.0, 1.0, 2.0, 5.0].contains(v)));
    }

    #[test]
    fn resample_onto_a_grid_in_physical_space() {
        // values are a linear function of patient position; any grid, any orientation, trilinear is exact inside
        let src_grid = axial([30, 30, 20], [1.0, 1.0, 1.5]);
        let f = |p: [f64; 3]| (0.5 * p[0] - 0.25 * p[1] + 2.0 * p[2]) as f32;
        let v = volume_from(src_grid, |i, j, k| f(src_grid.voxel_to_patient([i as f64, j as f64, k as f64])));
        let row = normalize([0.9, 0.4, 0.0]);
        let col = normalize([-0.4, 0.9, 0.3]);
        let col = normalize(cross(cross(row, col), row));
        let col = if col[1] < 0.0 { [-col[0], -col[1], -col[2]] } else { col };
        let target = Grid { dims: [10, 10, 6], spacing: [1.3, 1.1, 1.7], origin: [5.0, 10.0, 17.0], direction: [row, col, cross(row, col)] };
        let r = resample_to_grid(&v, &target, Interpolation::Linear, f32::NAN);
        let mut inside = 0;
        for k in 0..6 {
            for j in 0..10 {
                for i in 0..10 {
                    let p = target.voxel_to_patient([i as f64, j as f64, k as f64]);
                    let got = r.get(i, j, k);
                    if got.is_nan() {
                        continue;
                    }
                    let c = src_grid.patient_to_voxel(p);
                    if (0..3).all(|a| c[a] >= 0.0 && c[a] <= (src_grid.dims[a] - 1) as f64) {
                        assert!((got - f(p)).abs() < 1e-3, "{p:?}: {got} vs {}", f(p));
                        inside += 1;
                    }
                }
            }
        }
        assert!(inside > 300, "{inside}");
    }

    #[test]
    fn resample_to_spacing_keeps_origin_and_direction() {
        let v = volume_from(axial([11, 9, 5], [1.0, 1.0, 3.0]), |i, _, k| i as f32 + 10.0 * k as f32);
        let r = resample_to_spacing(&v, [2.0, 1.0, 1.5], Interpolation::Linear);
        assert_eq!(r.dims, [6, 9, 9]);
        assert_eq!(r.origin, v.origin);
        assert_eq!(r.direction, v.direction);
        // value at new (i=2, k=3): old i = 4, old k = 1.5
        assert!((r.get(2, 0, 3) - (4.0 + 15.0)).abs() < 1e-4);
        // the last centre matches the old last centre
        assert_eq!(r.voxel_to_patient([5.0, 8.0, 8.0]), v.voxel_to_patient([10.0, 8.0, 4.0]));
    }

    #[test]
    fn window_maps_to_unit_range() {
        let w = window_values(&[-1000.0, 40.0 - 200.0, 40.0, 40.0 + 200.0, 3000.0], 40.0, 400.0);
        assert_eq!(w, vec![0.0, 0.0, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn crop_to_body_picks_the_largest_component() {
        // air -1000; a body block and a smaller table block, separated by air
        let g = axial([20, 16, 10], [1.0, 2.0, 2.5]);
        let v = volume_from(g, |i, j, k| {
            if (4..12).contains(&i) && (2..9).contains(&j) && (1..8).contains(&k) {
                40.0
            } else if (2..18).contains(&i) && j == 13 && (0..10).contains(&k) {
                300.0
            } else {
                -1000.0
            }
        });
        let c = crop_to_body(&v, -500.0, 2.0).unwrap();
        assert_eq!(c.component_voxels, 8 * 7 * 7);
        // margin: 2 voxels in i, 1 in j, 1 in k
        assert_eq!(c.bbox, BoundingBox { min: [2, 1, 0], max: [14, 10, 9] });
        assert_eq!(c.volume.dims, [12, 9, 9]);
        assert_eq!(c.volume.origin, v.voxel_to_patient([2.0, 1.0, 0.0]));
        assert_eq!(c.volume.get(2, 1, 1), 40.0);
        assert_eq!(c.volume.get(0, 0, 0), v.get(2, 1, 0));
        assert!(crop_to_body(&v, 1000.0, 0.0).is_none());
    }
}
