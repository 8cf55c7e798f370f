//! Fixed preprocessing the models need: resizing (plain or keeping the
//! aspect ratio with grey padding, returning the transform that maps points
//! back), z-score, percentile clipping and CLAHE.

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::resample::{resample_image, resample_labels, AxisMap, Filter};
use super::sample::{Image, Sample};

/// An axis-aligned 2D map from input to output pixel-centre coordinates:
/// `x' = sx x + ox`, `y' = sy y + oy`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transform2d {
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
}

impl Transform2d {
    pub fn forward(&self, p: [f64; 2]) -> [f64; 2] {
        [self.scale_x * p[0] + self.offset_x, self.scale_y * p[1] + self.offset_y]
    }

    /// Maps a point found on the output (e.g. a predicted landmark) back to the input image.
    pub fn inverse(&self, p: [f64; 2]) -> [f64; 2] {
        [(p[0] - self.offset_x) / self.scale_x, (p[1] - self.offset_y) / self.scale_y]
    }
}

fn require_2d(s: &Sample) -> Result<()> {
    if s.image.is_2d() {
        Ok(())
    } else {
        Err(DataError::Invalid(format!("sample {}: 2D resizing of a volume with {} slices", s.id, s.image.depth)))
    }
}

fn apply_2d(s: &Sample, out_hw: (usize, usize), mx: AxisMap, my: AxisMap, fill: f32) -> Sample {
    let dims = [1, out_hw.0, out_hw.1];
    let maps = [AxisMap::IDENTITY, my, mx];
    let image = resample_image(&s.image, dims, maps, Filter::LinearAntialias, fill);
    let labels = s.labels.as_ref().map(|l| resample_labels(l, dims, maps, 0));
    let t = Transform2d { scale_x: mx.scale, scale_y: my.scale, offset_x: mx.offset, offset_y: my.offset };
    let points = s.points.iter().map(|p| super::sample::Landmark { name: p.name.clone(), position: p.position.map(|q| t.forward(q)) }).collect();
    let spacing = s.spacing.map(|sp| [sp[0], sp[1] / my.scale, sp[2] / mx.scale]);
    Sample { id: s.id.clone(), image, labels, points, spacing }
}

/// Resizes a 2D sample to (height, width), distorting the aspect ratio if
/// needed (antialiased linear for the image, nearest for labels).
pub fn resize(s: &Sample, height: usize, width: usize) -> Result<(Sample, Transform2d)> {
    require_2d(s)?;
    let mx = AxisMap::resize(s.image.width, width);
    let my = AxisMap::resize(s.image.height, height);
    let out = apply_2d(s, (height, width), mx, my, 0.0);
    Ok((out, Transform2d { scale_x: mx.scale, scale_y: my.scale, offset_x: mx.offset, offset_y: my.offset }))
}

/// Resizes without distortion into (height, width) and pads the rest with
/// `pad_value` (grey bars, centred), as the kidney source's 473 x 473 input.
/// Label padding is 0 (background).
pub fn letterbox(s: &Sample, height: usize, width: usize, pad_value: f32) -> Result<(Sample, Transform2d)> {
    require_2d(s)?;
    let (h, w) = (s.image.height as f64, s.image.width as f64);
    let scale = (height as f64 / h).min(width as f64 / w);
    let (nh, nw) = ((h * scale).round(), (w * scale).round());
    let (pad_y, pad_x) = (((height as f64 - nh) / 2.0).floor(), ((width as f64 - nw) / 2.0).floor());
    // content pixels cover [pad, pad + n) in output pixel areas
    let mx = AxisMap { scale: nw / w, offset: pad_x + 0.5 * nw / w - 0.5 };
    let my = AxisMap { scale: nh / h, offset: pad_y + 0.5 * nh / h - 0.5 };
    let out = apply_2d(s, (height, width), mx, my, pad_value);
    Ok((out, Transform2d { scale_x: mx.scale, scale_y: my.scale, offset_x: mx.offset, offset_y: my.offset }))
}

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
    v.sort_by(|a, b| a.total_cmp(b));
    pcts.iter()
        .map(|p| {
            let r = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
            let (i, f) = (r.floor() as usize, r - r.floor());
            let j = (i + 1).min(v.len() - 1);
            (v[i] as f64 + f * (v[j] as f64 - v[i] as f64)) as f32
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
pub fn clahe(image: &mut Image, cfg: &ClaheConfig) -> Result<()> {
    let (h, w) = (image.height, image.width);
    if cfg.tiles_x == 0 || cfg.tiles_y == 0 || cfg.bins < 2 || cfg.tiles_x > w || cfg.tiles_y > h {
        return Err(DataError::Invalid(format!("CLAHE: {} x {} tiles and {} bins do not fit a {h} x {w} image", cfg.tiles_y, cfg.tiles_x, cfg.bins)));
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
mod tests {
    use super::*;
    use crate::train::data::sample::{LabelMap, Landmark};

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn letterbox_pads_centres_and_maps_points_back() {
        // 4 (h) x 8 (w) image into 8 x 8: scale 1, 2 rows of padding above and below
        let mut lab = vec![0u16; 32];
        lab[1 * 8 + 6] = 1;
        let s = Sample {
            id: "s".into(),
            image: Image::new_2d(1, 4, 8, (0..32).map(|i| i as f32).collect()).unwrap(),
            labels: Some(LabelMap::new(1, [1, 4, 8], lab).unwrap()),
            points: vec![Landmark { name: "p".into(), position: Some([6.0, 1.0]) }],
            spacing: Some([1.0, 0.2, 0.2]),
        };
        let (out, t) = letterbox(&s, 8, 8, 0.5).unwrap();
        assert_eq!(t, Transform2d { scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 2.0 });
        assert_eq!(out.image.get(0, 0, 0, 3), 0.5);
        assert_eq!(out.image.get(0, 0, 7, 3), 0.5);
        assert_eq!(out.image.get(0, 0, 3, 6), 14.0);
        assert_eq!(out.point("p"), Some([6.0, 3.0]));
        assert_eq!(out.labels.as_ref().unwrap().get(0, 0, 3, 6), 1);
        assert_eq!(t.inverse([6.0, 3.0]), [6.0, 1.0]);
        // 4 x 8 into 2 x 2: scale 1/4, content 1 x 2, pad 0 top (floor(0.5)), 0 left
        let (small, t) = letterbox(&s, 2, 2, -1.0).unwrap();
        assert_eq!((t.scale_x, t.scale_y), (0.25, 0.25));
        assert_eq!(small.image.get(0, 0, 1, 0), -1.0);
        // a point maps to the output and back exactly
        let q = t.forward([6.0, 1.0]);
        let back = t.inverse(q);
        assert!((back[0] - 6.0).abs() < 1e-12 && (back[1] - 1.0).abs() < 1e-12);
        assert_eq!(small.spacing, Some([1.0, 0.8, 0.8]));
    }

    #[test]
    fn resize_to_fixed_size() {
        let s = Sample::new("s", Image::new_2d(1, 2, 2, vec![1., 2., 3., 4.]).unwrap());
        let (out, t) = resize(&s, 4, 4).unwrap();
        close(&out.image.data[..4], &[1.0, 1.25, 1.75, 2.0], 1e-6);
        // pixel 0 centre (0, 0) lies at 0.5 in the output, pixel 1 at 2.5
        assert_eq!(t.forward([0.0, 1.0]), [0.5, 2.5]);
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
        let mut i = Image::new_2d(1, 1, 5, v.to_vec()).unwrap();
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
