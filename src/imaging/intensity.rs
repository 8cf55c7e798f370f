//! Intensity pre-processing of [`Image`]s, shared by inference (pipelines,
//! models) and training: z-score, fixed normalisation, percentiles and
//! percentile clipping, CLAHE.

use serde::{Deserialize, Serialize};

use super::array::Image;
use super::error::ImagingError;

/// Per-channel statistics over a mask (or all voxels).
fn channel_values<'a>(image: &'a Image, c: usize, mask: Option<&'a [bool]>) -> impl Iterator<Item = f32> + 'a {
    image.channel(c).iter().enumerate().filter(move |(i, _)| mask.map(|m| m[*i]).unwrap_or(true)).map(|(_, v)| *v)
}

/// `(v - mean) / max(std, eps)` per channel, statistics over `mask` voxels
/// (e.g. the body or the labelled foreground) or all voxels.
pub fn zscore(image: &mut Image, mask: Option<&[bool]>, eps: f64) {
    for c in 0..image.channels {
        let (mut n, mut s, mut s2) = (0f64, 0f64, 0f64);
        for v in channel_values(image, c, mask) {
            n += 1.0;
            s += v as f64;
            s2 += (v as f64) * (v as f64);
        }
        let mean = s / n.max(1.0);
        let std = (s2 / n.max(1.0) - mean * mean).max(0.0).sqrt().max(eps);
        normalize_channel(image, c, mean, std);
    }
}

/// `(v - mean) / std` with fixed statistics (e.g. the lung model's constants).
pub fn normalize_channel(image: &mut Image, c: usize, mean: f64, std: f64) {
    for v in image.channel_mut(c) {
        *v = ((*v as f64 - mean) / std) as f32;
    }
}

/// Percentiles (0..100) of the values, linear interpolation between order
/// statistics (numpy's default).
pub fn percentiles(values: &[f32], pcts: &[f64]) -> Vec<f32> {
    if values.is_empty() {
        return vec![f32::NAN; pcts.len()];
    }
    let mut v = values.to_vec();
    // two order statistics per percentile by selection (linear time), not a
    // full sort: a radiograph has millions of values
    pcts.iter()
        .map(|p| {
            let r = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
            let (i, f) = (r.floor() as usize, r - r.floor());
            let (_, &mut vi, upper) = v.select_nth_unstable_by(i, |a, b| a.total_cmp(b));
            // the next order statistic is the least of the upper part
            let vj = upper.iter().copied().min_by(|a, b| a.total_cmp(b)).unwrap_or(vi);
            (vi as f64 + f * (vj as f64 - vi as f64)) as f32
        })
        .collect()
}

/// Clips every channel to its [lo, hi] percentiles (over `mask` voxels when
/// given); returns the bounds per channel.
pub fn percentile_clip(image: &mut Image, lo: f64, hi: f64, mask: Option<&[bool]>) -> Vec<(f32, f32)> {
    (0..image.channels)
        .map(|c| {
            let vals: Vec<f32> = channel_values(image, c, mask).collect();
            let b = percentiles(&vals, &[lo, hi]);
            for v in image.channel_mut(c) {
                *v = v.clamp(b[0], b[1]);
            }
            (b[0], b[1])
        })
        .collect()
}

/// Contrast-limited adaptive histogram equalisation (Zuiderveld 1994, as
/// OpenCV): values in [0, 1]; one histogram per tile of a `tiles_y x
/// tiles_x` grid, clipped at `clip_limit x (tile pixels / bins)` with the
/// excess spread evenly over all bins, mapped through its CDF, and the
/// mappings of the four nearest tile centres blended bilinearly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClaheConfig {
    pub tiles_x: usize,
    pub tiles_y: usize,
    /// Relative to a flat histogram (OpenCV's convention); <= 0 disables clipping.
    pub clip_limit: f64,
    pub bins: usize,
}

impl Default for ClaheConfig {
    fn default() -> Self {
        // OpenCV's defaults (the hip source gives clip limit 100 on its own, unstated scale)
        ClaheConfig { tiles_x: 8, tiles_y: 8, clip_limit: 40.0, bins: 256 }
    }
}

/// CLAHE of every 2D plane (channel, slice) of an image with values in [0, 1].
pub fn clahe(image: &mut Image, cfg: &ClaheConfig) -> Result<(), ImagingError> {
    let (h, w) = (image.height, image.width);
    if cfg.tiles_x == 0 || cfg.tiles_y == 0 || cfg.bins < 2 || cfg.tiles_x > w || cfg.tiles_y > h {
        return Err(ImagingError::InvalidArray(format!("CLAHE: {} x {} tiles and {} bins do not fit a {h} x {w} image", cfg.tiles_y, cfg.tiles_x, cfg.bins)));
    }
    for plane in image.data.chunks_mut(h * w) {
        clahe_plane(plane, h, w, cfg);
    }
    Ok(())
}

fn clahe_plane(p: &mut [f32], h: usize, w: usize, cfg: &ClaheConfig) {
    let bins = cfg.bins;
    let bin_of = |v: f32| ((v.clamp(0.0, 1.0) as f64 * (bins - 1) as f64).round()) as usize;
    // tile edges: tile t spans [t * n / tiles, (t + 1) * n / tiles)
    let edge = |t: usize, n: usize, tiles: usize| t * n / tiles;
    let mut luts = vec![vec![0f32; bins]; cfg.tiles_x * cfg.tiles_y];
    for ty in 0..cfg.tiles_y {
        for tx in 0..cfg.tiles_x {
            let (y0, y1, x0, x1) = (edge(ty, h, cfg.tiles_y), edge(ty + 1, h, cfg.tiles_y), edge(tx, w, cfg.tiles_x), edge(tx + 1, w, cfg.tiles_x));
            let mut hist = vec![0f64; bins];
            for y in y0..y1 {
                for x in x0..x1 {
                    hist[bin_of(p[y * w + x])] += 1.0;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f64;
            if cfg.clip_limit > 0.0 {
                let limit = (cfg.clip_limit * n / bins as f64).max(1.0);
                let mut excess = 0.0;
                for c in hist.iter_mut() {
                    if *c > limit {
                        excess += *c - limit;
                        *c = limit;
                    }
                }
                let add = excess / bins as f64;
                hist.iter_mut().for_each(|c| *c += add);
            }
            let lut = &mut luts[ty * cfg.tiles_x + tx];
            let mut cum = 0.0;
            for (b, c) in hist.iter().enumerate() {
                cum += c;
                lut[b] = (cum / n) as f32;
            }
        }
    }
    // blend the mappings of the tile centres around each pixel
    let centre = |t: usize, n: usize, tiles: usize| (edge(t, n, tiles) + edge(t + 1, n, tiles)) as f64 / 2.0 - 0.5;
    let neighbours = |v: f64, n: usize, tiles: usize| -> (usize, usize, f32) {
        let mut t0 = 0;
        while t0 + 1 < tiles && centre(t0 + 1, n, tiles) <= v {
            t0 += 1;
        }
        let t1 = (t0 + 1).min(tiles - 1);
        let (c0, c1) = (centre(t0, n, tiles), centre(t1, n, tiles));
        let f = if t1 == t0 { 0.0 } else { ((v - c0) / (c1 - c0)).clamp(0.0, 1.0) };
        (t0, t1, f as f32)
    };
    let xs: Vec<(usize, usize, f32)> = (0..w).map(|x| neighbours(x as f64, w, cfg.tiles_x)).collect();
    for y in 0..h {
        let (ty0, ty1, fy) = neighbours(y as f64, h, cfg.tiles_y);
        for (x, &(tx0, tx1, fx)) in xs.iter().enumerate() {
            let b = bin_of(p[y * w + x]);
            let at = |ty: usize, tx: usize| luts[ty * cfg.tiles_x + tx][b];
            let top = at(ty0, tx0) * (1.0 - fx) + at(ty0, tx1) * fx;
            let bottom = at(ty1, tx0) * (1.0 - fx) + at(ty1, tx1) * fx;
            p[y * w + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Element-wise closeness of two value lists (also used by other modules' tests).
    pub(crate) fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn zscore_and_percentiles() {
        let mut i = Image::new_2d(1, 1, 4, vec![1., 2., 3., 4.]).unwrap();
        zscore(&mut i, None, 1e-8);
        let s = (1.25f32).sqrt();
        close(&i.data, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s], 1e-6);
        let mut i = Image::new_2d(1, 1, 4, vec![1., 2., 3., 100.]).unwrap();
        zscore(&mut i, Some(&[true, true, true, false]), 1e-8);
        close(&i.data[..3], &[-(1.5f32).sqrt(), 0.0, (1.5f32).sqrt()], 1e-5);
        // numpy.percentile([0, 10, 20, 30, 40], [0.5, 99.5]) = [0.2, 39.8]
        let v = [30., 0., 20., 10., 40.];
        close(&percentiles(&v, &[0.5, 50.0, 99.5]), &[0.2, 20.0, 39.8], 1e-5);
        // selection agrees with a full sort, ties and all
        let v: Vec<f32> = (0..1001u32).map(|k| ((k * 7919) % 257) as f32 * 0.25).collect();
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        for p in [0.0, 2.0, 33.3, 50.0, 97.5, 100.0] {
            let r = p / 100.0 * 1000.0;
            let (i, f) = (r as usize, r - (r as usize) as f64);
            let want = sorted[i] as f64 + f * (sorted[(i + 1).min(1000)] - sorted[i]) as f64;
            close(&percentiles(&v, &[p]), &[want as f32], 1e-4);
        }
        let mut i = Image::new_2d(1, 1, 5, [30., 0., 20., 10., 40.].to_vec()).unwrap();
        let b = percentile_clip(&mut i, 0.5, 99.5, None);
        assert_eq!(b, vec![(0.2, 39.8)]);
        close(&i.data, &[30., 0.2, 20., 10., 39.8], 1e-5);
    }

    #[test]
    fn clahe_one_tile_without_clipping_is_histogram_equalisation() {
        let mut i = Image::new_2d(1, 2, 2, vec![0.0, 0.25, 0.5, 1.0]).unwrap();
        clahe(&mut i, &ClaheConfig { tiles_x: 1, tiles_y: 1, clip_limit: 0.0, bins: 256 }).unwrap();
        close(&i.data, &[0.25, 0.5, 0.75, 1.0], 1e-6);
    }

    #[test]
    fn clahe_clipping_hand_case() {
        // 4 bins, 1 tile of 8 pixels: values 0 x6, 1/3 x1, 1 x1 -> hist [6, 1, 0, 1]
        // clip limit 1.0 -> limit 8 / 4 = 2: excess 4 spread as +1 -> [3, 2, 1, 2]
        // cdf / 8: [3/8, 5/8, 6/8, 1]
        let v = vec![0., 0., 0., 0., 0., 0., 1. / 3., 1.];
        let mut i = Image::new_2d(1, 2, 4, v).unwrap();
        clahe(&mut i, &ClaheConfig { tiles_x: 1, tiles_y: 1, clip_limit: 1.0, bins: 4 }).unwrap();
        close(&i.data, &[0.375, 0.375, 0.375, 0.375, 0.375, 0.375, 0.625, 1.0], 1e-6);
    }

    #[test]
    fn clahe_tiles_blend_between_centres() {
        // left half dark, right half bright, 2 tiles across: each tile equalises its own half,
        // pixels between the tile centres blend the two mappings
        let (h, w) = (4, 8);
        let v: Vec<f32> = (0..h * w).map(|i| if i % w < 4 { 0.2 } else { 0.8 }).collect();
        let mut i = Image::new_2d(1, h, w, v).unwrap();
        clahe(&mut i, &ClaheConfig { tiles_x: 2, tiles_y: 1, clip_limit: 0.0, bins: 256 }).unwrap();
        // a constant tile maps its value to cdf = 1; the other tile maps it to 0 (below) or 1 (above)
        // tile centres at x = 1.5 and 5.5; x = 0, 1 use the left tile only -> 1
        assert_eq!(i.get(0, 0, 0, 0), 1.0);
        // x = 2: value 0.2, left lut 1, right lut (0.2 is below all of the right tile) 0; f = 0.5/4
        assert!((i.get(0, 0, 0, 2) - (1.0 - 0.125)).abs() < 1e-6);
        // x = 5: value 0.8: left lut 1 (above all), right lut 1 -> 1
        assert_eq!(i.get(0, 0, 0, 5), 1.0);
        assert!(clahe(&mut i, &ClaheConfig { tiles_x: 9, ..Default::default() }).is_err());
    }
}
