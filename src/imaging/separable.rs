//! Separable, axis-aligned resampling of images (linear, with optional
//! antialiasing when shrinking) and label maps (nearest), plus separable
//! Gaussian filtering. Every geometric augmentation and preprocessing step
//! (zoom, resize, letterbox, low-resolution simulation, blur) is one of
//! these, so that images, label maps and points move together.
//!
//! An [`AxisMap`] maps input to output pixel-centre coordinates along one
//! axis: `out = scale * in + offset`.

use super::array::{Image, LabelMap};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisMap {
    pub scale: f64,
    pub offset: f64,
}

impl AxisMap {
    pub const IDENTITY: AxisMap = AxisMap { scale: 1.0, offset: 0.0 };

    /// Zoom by `s` about the centre of an axis of `n` pixels.
    pub fn zoom_about_centre(n: usize, s: f64) -> AxisMap {
        let c = (n as f64 - 1.0) / 2.0;
        AxisMap { scale: s, offset: c - s * c }
    }

    /// The map of resizing `n_in` pixels onto `n_out` (pixel areas aligned,
    /// as PyTorch's `align_corners=False`).
    pub fn resize(n_in: usize, n_out: usize) -> AxisMap {
        let s = n_out as f64 / n_in as f64;
        AxisMap { scale: s, offset: 0.5 * s - 0.5 }
    }

    pub fn forward(&self, u: f64) -> f64 {
        self.scale * u + self.offset
    }

    pub fn inverse(&self, o: f64) -> f64 {
        (o - self.offset) / self.scale
    }
}

/// Interpolation along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Linear,
    /// Linear when enlarging; a triangle filter widened by 1/scale when
    /// shrinking (like PIL's antialiased bilinear), so that shrinking averages
    /// instead of skipping pixels.
    LinearAntialias,
}

/// Input indices and weights of one output position; empty = outside the
/// input (takes the fill value).
pub type Taps = Vec<(usize, f32)>;

/// The taps of every output position of an axis. An output position whose
/// source lies outside the input's extent `[-0.5, n_in - 0.5]` gets none.
pub fn axis_taps(n_in: usize, n_out: usize, map: AxisMap, filter: Filter) -> Vec<Taps> {
    let last = n_in as f64 - 1.0;
    (0..n_out)
        .map(|o| {
            let u = map.inverse(o as f64);
            // snap rounding noise so that integer-aligned maps sample pixels exactly
            let u = if (u - u.round()).abs() < 1e-9 { u.round() } else { u };
            if n_in == 0 || u < -0.5 - 1e-9 || u > n_in as f64 - 0.5 + 1e-9 {
                return Vec::new();
            }
            let uc = u.clamp(0.0, last);
            match filter {
                Filter::Nearest => vec![(((uc + 0.5).floor() as usize).min(n_in - 1), 1.0)],
                Filter::LinearAntialias if map.scale < 1.0 => {
                    let support = 1.0 / map.scale;
                    let mut taps: Vec<(usize, f32)> = Vec::new();
                    let mut total = 0.0;
                    for j in (u - support).ceil() as i64..=(u + support).floor() as i64 {
                        let w = (1.0 - (j as f64 - u).abs() * map.scale).max(0.0);
                        if w <= 0.0 {
                            continue;
                        }
                        let jc = j.clamp(0, n_in as i64 - 1) as usize;
                        total += w;
                        match taps.iter_mut().find(|(i, _)| *i == jc) {
                            Some(t) => t.1 += w as f32,
                            None => taps.push((jc, w as f32)),
                        }
                    }
                    taps.iter_mut().for_each(|t| t.1 = (t.1 as f64 / total) as f32);
                    taps
                }
                Filter::Linear | Filter::LinearAntialias => {
                    let i0 = uc.floor() as usize;
                    let i1 = (i0 + 1).min(n_in - 1);
                    let w = (uc - i0 as f64) as f32;
                    if w == 0.0 {
                        vec![(i0, 1.0)]
                    } else {
                        vec![(i0, 1.0 - w), (i1, w)]
                    }
                }
            }
        })
        .collect()
}

/// The taps of `second` after `first` along one axis (`first`: input ->
/// middle, `second`: middle -> output) as one set, so that two resamplings
/// in a row read the input once and never build the middle image (exact up
/// to float rounding). An output that reads a middle position outside the
/// input is outside too.
pub fn compose_taps(first: &[Taps], second: &[Taps]) -> Vec<Taps> {
    second
        .iter()
        .map(|t2| {
            let mut out: Taps = Vec::new();
            for &(m, w2) in t2 {
                let t1 = &first[m];
                if t1.is_empty() {
                    return Vec::new();
                }
                for &(i, w1) in t1 {
                    let w = (w1 as f64 * w2 as f64) as f32;
                    match out.iter_mut().find(|(j, _)| *j == i) {
                        Some(t) => t.1 += w,
                        None => out.push((i, w)),
                    }
                }
            }
            out.sort_by_key(|t| t.0);
            out
        })
        .collect()
}

/// Normalised Gaussian taps of standard deviation `sigma` pixels, truncated
/// at 3 sigma, borders replicated.
pub fn gaussian_taps(n: usize, sigma: f64) -> Vec<Taps> {
    let r = (3.0 * sigma).ceil().max(0.0) as i64;
    let kernel: Vec<f64> = (-r..=r).map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    (0..n as i64)
        .map(|o| {
            let mut taps: Vec<(usize, f32)> = Vec::new();
            for (k, w) in (-r..=r).zip(&kernel) {
                let j = (o + k).clamp(0, n as i64 - 1) as usize;
                let w = (w / total) as f32;
                match taps.iter_mut().find(|(i, _)| *i == j) {
                    Some(t) => t.1 += w,
                    None => taps.push((j, w)),
                }
            }
            taps
        })
        .collect()
}

/// Separable Gaussian blur of `sigma` pixels along each spatial axis (not
/// along depth for a 2D image).
pub fn gaussian_blur(image: &Image, sigma: f64) -> Image {
    let [d, h, w] = image.dims();
    let id = |n: usize| -> Vec<Taps> { (0..n).map(|i| vec![(i, 1.0)]).collect() };
    let td = if d > 1 { gaussian_taps(d, sigma) } else { id(d) };
    apply_taps(image, [&td, &gaussian_taps(h, sigma), &gaussian_taps(w, sigma)], 0.0)
}

/// One separable pass: `data` viewed as `[outer, n_in, inner]` becomes
/// `[outer, taps.len(), inner]`.
fn pass(data: &[f32], outer: usize, n_in: usize, inner: usize, taps: &[Taps], fill: f32) -> Vec<f32> {
    use rayon::prelude::*;
    let n_out = taps.len();
    let mut out = vec![0f32; outer * n_out * inner];
    // one output row (`inner` values) of block `a`; rows are independent, so
    // they run in parallel with the same arithmetic as in sequence
    let row_of = |a: usize, o: usize, row: &mut [f32]| {
        let t = &taps[o];
        if t.is_empty() {
            row.fill(fill);
            return;
        }
        let src = &data[a * n_in * inner..(a + 1) * n_in * inner];
        for &(i, w) in t {
            for (d, v) in row.iter_mut().zip(&src[i * inner..(i + 1) * inner]) {
                *d += w * v;
            }
        }
    };
    if inner >= 64 || outer == 1 {
        out.par_chunks_mut(inner.max(1)).enumerate().for_each(|(r, row)| row_of(r / n_out, r % n_out, row));
    } else {
        // short rows (the last axis): whole blocks per task
        out.par_chunks_mut((n_out * inner).max(1)).enumerate().for_each(|(a, block)| {
            if inner == 1 {
                // one value per output: a plain dot product over the taps (same order, same sums)
                let src = &data[a * n_in..(a + 1) * n_in];
                for (d, t) in block.iter_mut().zip(taps) {
                    *d = if t.is_empty() { fill } else { t.iter().fold(0f32, |acc, &(i, w)| acc + w * src[i]) };
                }
                return;
            }
            for (o, row) in block.chunks_mut(inner.max(1)).enumerate() {
                row_of(a, o, row);
            }
        });
    }
    out
}

fn is_identity(taps: &[Taps], n_in: usize) -> bool {
    taps.len() == n_in && taps.iter().enumerate().all(|(o, t)| t.len() == 1 && t[0].0 == o && t[0].1 == 1.0)
}

/// Applies per-axis taps (D, H, W) to every channel of an image.
pub fn apply_taps(image: &Image, taps: [&[Taps]; 3], fill: f32) -> Image {
    let [d, h, w] = image.dims();
    let c = image.channels;
    let mut data = image.data.clone();
    let (mut d1, mut h1, mut w1) = (d, h, w);
    if !is_identity(taps[2], w) {
        data = pass(&data, c * d * h, w, 1, taps[2], fill);
        w1 = taps[2].len();
    }
    if !is_identity(taps[1], h) {
        data = pass(&data, c * d, h, w1, taps[1], fill);
        h1 = taps[1].len();
    }
    if !is_identity(taps[0], d) {
        data = pass(&data, c, d, h1 * w1, taps[0], fill);
        d1 = taps[0].len();
    }
    // a later pass mixes the fill of an earlier one with f32 weights that sum
    // to 1 only up to rounding: write the fill exactly where any axis is outside
    let outside: Vec<Vec<bool>> = taps.iter().map(|t| t.iter().map(|x| x.is_empty()).collect()).collect();
    if outside.iter().any(|o| o.contains(&true)) {
        let plane = d1 * h1 * w1;
        for (i, v) in data.iter_mut().enumerate() {
            let r = i % plane;
            let (z, y, x) = (r / (h1 * w1), r / w1 % h1, r % w1);
            if outside[0][z] || outside[1][y] || outside[2][x] {
                *v = fill;
            }
        }
    }
    Image { channels: c, depth: d1, height: h1, width: w1, data }
}

/// Resamples an image onto `out_dims` (D, H, W) with per-axis maps.
pub fn resample_image(image: &Image, out_dims: [usize; 3], maps: [AxisMap; 3], filter: Filter, fill: f32) -> Image {
    let dims = image.dims();
    let taps: Vec<Vec<Taps>> = (0..3).map(|a| axis_taps(dims[a], out_dims[a], maps[a], filter)).collect();
    apply_taps(image, [&taps[0], &taps[1], &taps[2]], fill)
}

/// Resamples a label map (nearest neighbour) onto `out_dims` with per-axis maps.
pub fn resample_labels(labels: &LabelMap, out_dims: [usize; 3], maps: [AxisMap; 3], fill: u16) -> LabelMap {
    let dims = labels.dims();
    let idx: Vec<Vec<Option<usize>>> =
        (0..3).map(|a| axis_taps(dims[a], out_dims[a], maps[a], Filter::Nearest).into_iter().map(|t| t.first().map(|p| p.0)).collect()).collect();
    let mut data = Vec::with_capacity(labels.layers * out_dims.iter().product::<usize>());
    for l in 0..labels.layers {
        for z in &idx[0] {
            for y in &idx[1] {
                for x in &idx[2] {
                    data.push(match (z, y, x) {
                        (Some(z), Some(y), Some(x)) => labels.get(l, *z, *y, *x),
                        _ => fill,
                    });
                }
            }
        }
    }
    LabelMap { layers: labels.layers, depth: out_dims[0], height: out_dims[1], width: out_dims[2], data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_matches_align_corners_false() {
        // same numbers as models::blocks::resize's PyTorch reference
        let img = Image::new_2d(1, 2, 2, vec![1., 2., 3., 4.]).unwrap();
        let maps = [AxisMap::IDENTITY, AxisMap::resize(2, 4), AxisMap::resize(2, 4)];
        let out = resample_image(&img, [1, 4, 4], maps, Filter::Linear, 0.0);
        let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
        for (a, b) in out.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", out.data);
        }
    }

    #[test]
    fn antialiased_shrink_averages() {
        // 1 x 6 -> 1 x 2: scale 1/3, each output is a triangle-weighted mean of its 3-pixel cell and neighbours
        let img = Image::new_2d(1, 1, 6, vec![0., 0., 3., 3., 6., 6.]).unwrap();
        let maps = [AxisMap::IDENTITY, AxisMap::IDENTITY, AxisMap::resize(6, 2)];
        let plain = resample_image(&img, [1, 1, 2], maps, Filter::Linear, 0.0);
        // plain linear samples u = 1 and u = 4 only
        assert_eq!(plain.data, vec![0.0, 6.0]);
        let aa = resample_image(&img, [1, 1, 2], maps, Filter::LinearAntialias, 0.0);
        // output 0: u = 1, support 3: taps j = -1..3 (clamped), weights 1/3,2/3,1,2/3,1/3 on 0,0,0,3,3 -> (2+1)/3 = 1
        assert!((aa.data[0] - 1.0).abs() < 1e-6, "{:?}", aa.data);
        // output 1: u = 4, taps j = 2..6 -> 3,3,6,6,6 weights 1/3,2/3,1,2/3,1/3 -> (1+2+6+4+2)/3 = 5
        assert!((aa.data[1] - 5.0).abs() < 1e-6, "{:?}", aa.data);
    }

    #[test]
    fn composed_taps_equal_two_passes() {
        // upsample 7 -> 17 (linear), then shrink 17 -> 5 (antialiased): once composed = twice applied
        let v: Vec<f32> = (0..3 * 7).map(|i| ((i * 37) % 11) as f32 * 0.5 - 1.0).collect();
        let img = Image::new_2d(1, 3, 7, v).unwrap();
        let first = axis_taps(7, 17, AxisMap::resize(7, 17), Filter::Linear);
        let second = axis_taps(17, 5, AxisMap::resize(17, 5), Filter::LinearAntialias);
        let id: Vec<Taps> = (0..3).map(|i| vec![(i, 1.0)]).collect();
        let one: Vec<Taps> = vec![vec![(0, 1.0)]];
        let mid = apply_taps(&img, [&one, &id, &first], 0.0);
        let twice = apply_taps(&mid, [&one, &id, &second], 0.0);
        let once = apply_taps(&img, [&one, &id, &compose_taps(&first, &second)], 0.0);
        assert_eq!(once.dims(), [1, 3, 5]);
        for (a, b) in once.data.iter().zip(&twice.data) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", once.data, twice.data);
        }
        // an outside middle position makes the output outside
        let zoom = axis_taps(4, 4, AxisMap::zoom_about_centre(4, 0.5), Filter::Linear);
        let c = compose_taps(&zoom, &axis_taps(4, 4, AxisMap::IDENTITY, Filter::Linear));
        assert!(c[0].is_empty() && c[3].is_empty() && !c[1].is_empty());
    }

    #[test]
    fn zoom_outside_takes_fill_and_labels_follow() {
        let img = Image::new_2d(1, 1, 4, vec![1., 2., 3., 4.]).unwrap();
        let maps = [AxisMap::IDENTITY, AxisMap::IDENTITY, AxisMap::zoom_about_centre(4, 0.5)];
        let out = resample_image(&img, [1, 1, 4], maps, Filter::Linear, -1.0);
        // centre 1.5: output o samples u = 1.5 + (o - 1.5) * 2 = -1.5, 0.5, 2.5, 4.5
        assert_eq!(out.data, vec![-1.0, 1.5, 3.5, -1.0]);
        let lab = LabelMap::new(1, [1, 1, 4], vec![1, 2, 3, 4]).unwrap();
        let l = resample_labels(&lab, [1, 1, 4], maps, 0);
        assert_eq!(l.data, vec![0, 2, 4, 0]);
    }

    #[test]
    fn gaussian_taps_sum_to_one_and_blur_a_spike() {
        let taps = gaussian_taps(9, 1.0);
        for t in &taps {
            let s: f32 = t.iter().map(|p| p.1).sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        let mut v = vec![0f32; 9];
        v[4] = 1.0;
        let img = Image::new_2d(1, 1, 9, v).unwrap();
        let id: Vec<Taps> = vec![vec![(0, 1.0)]];
        let out = apply_taps(&img, [&id, &id, &taps], 0.0);
        // exp(-k²/2) normalised over k = -3..3
        let z: f64 = (-3..=3).map(|k: i32| (-(k * k) as f64 / 2.0).exp()).sum();
        assert!((out.data[4] as f64 - 1.0 / z).abs() < 1e-6);
        assert!((out.data[5] as f64 - (-0.5f64).exp() / z).abs() < 1e-6);
        assert_eq!(out.data[0], 0.0);
    }
}
