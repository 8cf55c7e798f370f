//! Augmentations named in MODELS.md (window width/level, contrast,
//! brightness, gamma, Gaussian noise and blur, scaling, flips,
//! low-resolution simulation, elastic deformation), for 2D and 3D samples. Geometric ones move the
//! image (linear), its label map (nearest) and its points together.
//!
//! Every augmentation is a config struct with an application probability
//! and parameter ranges; where a source leaves a value out the default is
//! nnU-Net's (Isensee et al. 2021, the usual choice for these transforms).
//! A [`Pipeline`] applies them in order with the random stream of
//! (seed, epoch, sample index), so a resumed run sees identical samples.

use serde::{Deserialize, Serialize};

use super::error::Result;
use super::sample::{Image, Sample};
use crate::imaging::separable::{apply_taps, gaussian_blur, resample_image, resample_labels, AxisMap, Filter, Taps};
use crate::rng::Rng;

fn draw(rng: &mut Rng, r: (f64, f64)) -> f64 {
    rng.range(r.0, r.1)
}

// ------------------------------------------------------------ intensity ops

/// Linear window: `level - width/2 -> out.0`, `level + width/2 -> out.1`, clipped.
pub fn window(image: &mut Image, level: f64, width: f64, out: (f64, f64)) {
    let lo = level - width / 2.0;
    let width = width.max(f64::MIN_POSITIVE);
    for v in image.data.iter_mut() {
        let t = ((*v as f64 - lo) / width).clamp(0.0, 1.0);
        *v = (out.0 + (out.1 - out.0) * t) as f32;
    }
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)))
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Contrast about each channel's mean: `mean + factor (v - mean)`; with
/// `preserve_range` the result is clipped to the channel's former range.
pub fn contrast(image: &mut Image, factor: f64, preserve_range: bool) {
    for c in 0..image.channels {
        let ch = image.channel_mut(c);
        let (mean, _) = mean_std(ch);
        let (lo, hi) = min_max(ch);
        for v in ch.iter_mut() {
            let mut x = (mean + factor * (*v as f64 - mean)) as f32;
            if preserve_range {
                x = x.clamp(lo, hi);
            }
            *v = x;
        }
    }
}

/// `v * multiplier + offset`.
pub fn brightness(image: &mut Image, multiplier: f64, offset: f64) {
    for v in image.data.iter_mut() {
        *v = (*v as f64 * multiplier + offset) as f32;
    }
}

/// Gamma on each channel's range: `lo + range * ((v - lo) / range)^gamma`;
/// with `retain_stats` the channel's mean and standard deviation are restored.
pub fn gamma(image: &mut Image, g: f64, retain_stats: bool) {
    for c in 0..image.channels {
        let ch = image.channel_mut(c);
        let (lo, hi) = min_max(ch);
        let range = (hi - lo) as f64;
        if range < 1e-7 {
            continue;
        }
        let (m0, s0) = mean_std(ch);
        for v in ch.iter_mut() {
            *v = (lo as f64 + range * ((*v - lo) as f64 / range).powf(g)) as f32;
        }
        if retain_stats {
            let (m1, s1) = mean_std(ch);
            let k = if s1 > 1e-12 { s0 / s1 } else { 1.0 };
            for v in ch.iter_mut() {
                *v = ((*v as f64 - m1) * k + m0) as f32;
            }
        }
    }
}

pub fn gaussian_noise(image: &mut Image, sigma: f64, rng: &mut Rng) {
    for v in image.data.iter_mut() {
        *v += (sigma * rng.normal()) as f32;
    }
}

/// Low-resolution simulation: nearest downsampling by `zoom` (< 1) then
/// linear upsampling back to the original size.
pub fn low_resolution(image: &Image, zoom: f64) -> Image {
    let dims = image.dims();
    let small: [usize; 3] = std::array::from_fn(|a| if dims[a] > 1 { ((dims[a] as f64 * zoom).round() as usize).max(1) } else { dims[a] });
    let down = resample_image(image, small, std::array::from_fn(|a| AxisMap::resize(dims[a], small[a])), Filter::Nearest, 0.0);
    resample_image(&down, dims, std::array::from_fn(|a| AxisMap::resize(small[a], dims[a])), Filter::Linear, 0.0)
}

// ------------------------------------------------------------ geometric ops

/// Zoom about the centre by `s` (> 1 enlarges) on the spatial axes (D only
/// for 3D): image linear, labels nearest, points moved, spacing divided by s.
pub fn zoom(sample: &mut Sample, s: f64, image_fill: f32, label_fill: u16) {
    let dims = sample.image.dims();
    let maps: [AxisMap; 3] = std::array::from_fn(|a| if a == 0 && dims[0] == 1 { AxisMap::IDENTITY } else { AxisMap::zoom_about_centre(dims[a], s) });
    sample.image = resample_image(&sample.image, dims, maps, Filter::Linear, image_fill);
    if let Some(l) = &sample.labels {
        sample.labels = Some(resample_labels(l, dims, maps, label_fill));
    }
    for p in &mut sample.points {
        if let Some([x, y]) = p.position {
            p.position = Some([maps[2].forward(x), maps[1].forward(y)]);
        }
    }
    if let Some(sp) = &mut sample.spacing {
        for (a, v) in sp.iter_mut().enumerate() {
            *v /= maps[a].scale;
        }
    }
}

/// Spatial axis of a flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Depth,
    Vertical,
    Horizontal,
}

/// Mirrors the image, labels and points along `axis`; a horizontal flip
/// also exchanges the positions of the named left/right point pairs.
pub fn flip(sample: &mut Sample, axis: Axis, swap_pairs: &[(String, String)]) {
    let a = match axis {
        Axis::Depth => 0,
        Axis::Vertical => 1,
        Axis::Horizontal => 2,
    };
    let dims = sample.image.dims();
    let idx: Vec<Vec<Taps>> = (0..3).map(|b| (0..dims[b]).map(|o| vec![(if b == a { dims[b] - 1 - o } else { o }, 1.0)]).collect()).collect();
    sample.image = apply_taps(&sample.image, [&idx[0], &idx[1], &idx[2]], 0.0);
    if let Some(l) = &mut sample.labels {
        let n = dims[a];
        let stride = match a {
            0 => dims[1] * dims[2],
            1 => dims[2],
            _ => 1,
        };
        let src = l.data.clone();
        for (i, v) in l.data.iter_mut().enumerate() {
            let coord = i / stride % n;
            *v = src[i + (n - 1 - coord) * stride - coord * stride];
        }
    }
    for p in &mut sample.points {
        if let Some([x, y]) = &mut p.position {
            match axis {
                Axis::Horizontal => *x = (dims[2] - 1) as f64 - *x,
                Axis::Vertical => *y = (dims[1] - 1) as f64 - *y,
                Axis::Depth => {}
            }
        }
    }
    if axis == Axis::Horizontal {
        for (l, r) in swap_pairs {
            let li = sample.points.iter().position(|p| &p.name == l);
            let ri = sample.points.iter().position(|p| &p.name == r);
            if let (Some(li), Some(ri)) = (li, ri) {
                let tmp = sample.points[li].position;
                sample.points[li].position = sample.points[ri].position;
                sample.points[ri].position = tmp;
            }
        }
    }
}

/// A smooth random displacement field over (H, W): uniform noise in
/// [-1, 1] blurred with a Gaussian of `sigma` px, scaled to a standard
/// deviation of `magnitude` px.
fn displacement_field(h: usize, w: usize, magnitude: f64, sigma: f64, rng: &mut Rng) -> Vec<f32> {
    let noise = Image::new(1, [1, h, w], (0..h * w).map(|_| rng.range(-1.0, 1.0) as f32).collect()).expect("sizes agree");
    let mut field = gaussian_blur(&noise, sigma).data;
    let (_, sd) = mean_std(&field);
    let k = if sd > 0.0 { (magnitude / sd) as f32 } else { 0.0 };
    field.iter_mut().for_each(|v| *v *= k);
    field
}

/// Bilinear value of a (H, W) plane at (y, x), or None outside it.
fn bilinear(plane: &[f32], h: usize, w: usize, y: f64, x: f64) -> Option<f32> {
    if !(0.0..=(h - 1) as f64).contains(&y) || !(0.0..=(w - 1) as f64).contains(&x) {
        return None;
    }
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);
    let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
    let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
    Some(top * (1.0 - fy) + bottom * fy)
}

/// Elastic deformation (Simard et al. 2003): each output pixel (y, x) reads
/// the input at (y + dy, x + dx), with dy and dx smooth random fields
/// (`displacement_field`): image linear, labels nearest, `image_fill` /
/// `label_fill` where the read falls outside. One in-plane field serves
/// every channel and slice of a 3D sample. A point p moves to the q that
/// reads it, q + d(q) = p, found by fixed-point iteration (the field is
/// smooth, so a few steps converge).
pub fn elastic(sample: &mut Sample, magnitude: f64, sigma: f64, rng: &mut Rng, image_fill: f32, label_fill: u16) {
    let [_, h, w] = sample.image.dims();
    let dy = displacement_field(h, w, magnitude, sigma, rng);
    let dx = displacement_field(h, w, magnitude, sigma, rng);
    let source = |i: usize| ((i / w) as f64 + dy[i] as f64, (i % w) as f64 + dx[i] as f64);
    for plane in sample.image.data.chunks_exact_mut(h * w) {
        let src = plane.to_vec();
        for (i, v) in plane.iter_mut().enumerate() {
            let (y, x) = source(i);
            *v = bilinear(&src, h, w, y, x).unwrap_or(image_fill);
        }
    }
    if let Some(labels) = &mut sample.labels {
        for plane in labels.data.chunks_exact_mut(h * w) {
            let src = plane.to_vec();
            for (i, v) in plane.iter_mut().enumerate() {
                let (y, x) = source(i);
                let (y, x) = (y.round(), x.round());
                *v = if (0.0..h as f64).contains(&y) && (0.0..w as f64).contains(&x) { src[y as usize * w + x as usize] } else { label_fill };
            }
        }
    }
    for p in &mut sample.points {
        if let Some([px, py]) = p.position {
            let (mut qx, mut qy) = (px, py);
            for _ in 0..8 {
                let (cy, cx) = (qy.clamp(0.0, (h - 1) as f64), qx.clamp(0.0, (w - 1) as f64));
                let (ddy, ddx) = (bilinear(&dy, h, w, cy, cx).unwrap_or(0.0), bilinear(&dx, h, w, cy, cx).unwrap_or(0.0));
                (qx, qy) = (px - ddx as f64, py - ddy as f64);
            }
            p.position = Some([qx, qy]);
        }
    }
}

// ------------------------------------------------------------ configs

/// Window width/level (cephalometric S22): always maps stored values to the
/// output range; with `probability` the level and width are drawn from the
/// ranges, otherwise the default window is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowAug {
    pub probability: f64,
    pub default_level: f64,
    pub default_width: f64,
    pub level: (f64, f64),
    pub width: (f64, f64),
    pub output: (f64, f64),
}

impl Default for WindowAug {
    fn default() -> Self {
        // 8-bit radiographs: the full range by default, random windows within it
        WindowAug { probability: 0.5, default_level: 127.5, default_width: 255.0, level: (96.0, 160.0), width: (160.0, 320.0), output: (0.0, 1.0) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContrastAug {
    pub probability: f64,
    pub factor: (f64, f64),
    pub preserve_range: bool,
}

impl Default for ContrastAug {
    fn default() -> Self {
        ContrastAug { probability: 0.15, factor: (0.75, 1.25), preserve_range: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrightnessAug {
    pub probability: f64,
    pub multiplier: (f64, f64),
    pub offset: (f64, f64),
}

impl Default for BrightnessAug {
    fn default() -> Self {
        BrightnessAug { probability: 0.15, multiplier: (0.75, 1.25), offset: (0.0, 0.0) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GammaAug {
    pub probability: f64,
    pub gamma: (f64, f64),
    pub retain_stats: bool,
}

impl Default for GammaAug {
    fn default() -> Self {
        GammaAug { probability: 0.3, gamma: (0.7, 1.5), retain_stats: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseAug {
    pub probability: f64,
    /// Standard deviation range, in image units.
    pub sigma: (f64, f64),
}

impl Default for NoiseAug {
    fn default() -> Self {
        NoiseAug { probability: 0.1, sigma: (0.0, 0.1) }
    }
}

/// Values clipped to [min, max] (after intensity steps that may leave the
/// range the network was given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClampAug {
    pub min: f32,
    pub max: f32,
}

impl Default for ClampAug {
    fn default() -> Self {
        ClampAug { min: 0.0, max: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlurAug {
    pub probability: f64,
    /// Standard deviation range in pixels.
    pub sigma: (f64, f64),
}

impl Default for BlurAug {
    fn default() -> Self {
        BlurAug { probability: 0.2, sigma: (0.5, 1.0) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleAug {
    pub probability: f64,
    pub scale: (f64, f64),
    /// Image value outside the source after zooming out.
    pub image_fill: f32,
    pub label_fill: u16,
}

impl Default for ScaleAug {
    fn default() -> Self {
        ScaleAug { probability: 0.2, scale: (0.7, 1.4), image_fill: 0.0, label_fill: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlipAug {
    pub horizontal: f64,
    pub vertical: f64,
    /// Ignored for 2D samples.
    pub depth: f64,
    /// Point names exchanged on a horizontal flip (left/right pairs).
    pub swap_pairs: Vec<(String, String)>,
}

impl Default for FlipAug {
    fn default() -> Self {
        FlipAug { horizontal: 0.5, vertical: 0.5, depth: 0.5, swap_pairs: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LowResolutionAug {
    pub probability: f64,
    pub zoom: (f64, f64),
}

impl Default for LowResolutionAug {
    fn default() -> Self {
        LowResolutionAug { probability: 0.25, zoom: (0.5, 1.0) }
    }
}

/// Elastic deformation (`elastic`). MODELS.md names the transform, not its
/// parameters: the smoothness is batchgenerators' (9-13 px), the
/// displacement ours (a standard deviation of 1-4 px, about 1 % of a 384 px
/// slice), so that lesion outlines bend without tearing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ElasticAug {
    pub probability: f64,
    /// Standard deviation of the displacement per axis, pixels.
    pub magnitude: (f64, f64),
    /// Gaussian smoothing of the field, pixels.
    pub sigma: (f64, f64),
    pub image_fill: f32,
    pub label_fill: u16,
}

impl Default for ElasticAug {
    fn default() -> Self {
        ElasticAug { probability: 0.2, magnitude: (1.0, 4.0), sigma: (9.0, 13.0), image_fill: 0.0, label_fill: 0 }
    }
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Augmentation {
    Window(WindowAug),
    Contrast(ContrastAug),
    Brightness(BrightnessAug),
    Gamma(GammaAug),
    Noise(NoiseAug),
    Clamp(ClampAug),
    Blur(BlurAug),
    Scale(ScaleAug),
    Flip(FlipAug),
    LowResolution(LowResolutionAug),
    Elastic(ElasticAug),
}

impl Augmentation {
    pub fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        match self {
            Augmentation::Window(a) => {
                let (l, w) = if rng.chance(a.probability) { (draw(rng, a.level), draw(rng, a.width)) } else { (a.default_level, a.default_width) };
                window(&mut s.image, l, w, a.output);
            }
            Augmentation::Contrast(a) => {
                if rng.chance(a.probability) {
                    contrast(&mut s.image, draw(rng, a.factor), a.preserve_range);
                }
            }
            Augmentation::Brightness(a) => {
                if rng.chance(a.probability) {
                    let (m, o) = (draw(rng, a.multiplier), draw(rng, a.offset));
                    brightness(&mut s.image, m, o);
                }
            }
            Augmentation::Gamma(a) => {
                if rng.chance(a.probability) {
                    gamma(&mut s.image, draw(rng, a.gamma), a.retain_stats);
                }
            }
            Augmentation::Noise(a) => {
                if rng.chance(a.probability) {
                    let sigma = draw(rng, a.sigma);
                    gaussian_noise(&mut s.image, sigma, rng);
                }
            }
            Augmentation::Blur(a) => {
                if rng.chance(a.probability) {
                    s.image = gaussian_blur(&s.image, draw(rng, a.sigma));
                }
            }
            Augmentation::Scale(a) => {
                if rng.chance(a.probability) {
                    zoom(s, draw(rng, a.scale), a.image_fill, a.label_fill);
                }
            }
            Augmentation::Clamp(a) => s.image.data.iter_mut().for_each(|v| *v = v.clamp(a.min, a.max)),
            Augmentation::Flip(a) => {
                // one draw per axis whether or not it applies, so the stream stays aligned
                let d = rng.chance(a.depth);
                let v = rng.chance(a.vertical);
                let h = rng.chance(a.horizontal);
                if d && !s.image.is_2d() {
                    flip(s, Axis::Depth, &a.swap_pairs);
                }
                if v {
                    flip(s, Axis::Vertical, &a.swap_pairs);
                }
                if h {
                    flip(s, Axis::Horizontal, &a.swap_pairs);
                }
            }
            Augmentation::LowResolution(a) => {
                if rng.chance(a.probability) {
                    s.image = low_resolution(&s.image, draw(rng, a.zoom));
                }
            }
            Augmentation::Elastic(a) => {
                if rng.chance(a.probability) {
                    let (magnitude, sigma) = (draw(rng, a.magnitude), draw(rng, a.sigma));
                    elastic(s, magnitude, sigma, rng, a.image_fill, a.label_fill);
                }
            }
        }
    }
}

/// Augmentations applied in order with the stream of (seed, epoch, index).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Pipeline {
    pub steps: Vec<Augmentation>,
}

impl Pipeline {
    pub fn new(steps: Vec<Augmentation>) -> Self {
        Pipeline { steps }
    }

    /// nnU-Net's order and defaults (liver S-augmentation list: scaling,
    /// noise, blur, brightness, contrast, low resolution, gamma, mirroring).
    pub fn nnunet() -> Self {
        use Augmentation::*;
        Pipeline::new(vec![
            Scale(ScaleAug::default()),
            Noise(NoiseAug::default()),
            Blur(BlurAug::default()),
            Brightness(BrightnessAug::default()),
            Contrast(ContrastAug::default()),
            LowResolution(LowResolutionAug::default()),
            Gamma(GammaAug::default()),
            Flip(FlipAug::default()),
        ])
    }

    pub fn apply(&self, mut sample: Sample, seed: u64, epoch: u64, index: u64) -> Result<Sample> {
        let mut rng = Rng::for_sample(seed, epoch, index);
        for step in &self.steps {
            step.apply(&mut sample, &mut rng);
        }
        sample.validate()?;
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::sample::{LabelMap, Landmark};

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    fn img(v: &[f32]) -> Image {
        Image::new_2d(1, 1, v.len(), v.to_vec()).unwrap()
    }

    /// A 2D sample with a 3 x 3 blob of label 1 centred on point "p".
    fn blob_sample(h: usize, w: usize, px: usize, py: usize) -> Sample {
        let mut lab = vec![0u16; h * w];
        for y in py - 1..=py + 1 {
            for x in px - 1..=px + 1 {
                lab[y * w + x] = 1;
            }
        }
        let image = Image::new_2d(1, h, w, (0..h * w).map(|i| i as f32).collect()).unwrap();
        Sample {
            id: "blob".into(),
            image,
            labels: Some(LabelMap::new(1, [1, h, w], lab).unwrap()),
            points: vec![Landmark { name: "p".into(), position: Some([px as f64, py as f64]) }],
            spacing: Some([1.0, 0.1, 0.1]),
        }
    }

    fn label_at(s: &Sample, p: [f64; 2]) -> u16 {
        let l = s.labels.as_ref().unwrap();
        let (x, y) = (p[0].round(), p[1].round());
        assert!(x >= 0.0 && y >= 0.0 && (x as usize) < l.width && (y as usize) < l.height, "point {p:?} left the image");
        l.get(0, 0, y as usize, x as usize)
    }

    #[test]
    fn elastic_moves_image_labels_and_points_together() {
        // magnitude 0: nothing moves
        let mut s = blob_sample(64, 64, 30, 34);
        let before = s.clone();
        elastic(&mut s, 0.0, 10.0, &mut Rng::for_sample(1, 0, 0), 0.0, 0);
        assert_eq!((&s.image.data, &s.labels, &s.points), (&before.image.data, &before.labels, &before.points));
        // a real deformation: the image changes, the point stays on its blob,
        // the blob keeps about its size (the field stretches or squeezes it locally)
        for seed in 0..5 {
            let mut s = blob_sample(64, 64, 30, 34);
            elastic(&mut s, 3.0, 10.0, &mut Rng::for_sample(seed, 0, 0), 0.0, 0);
            assert_ne!(s.image.data, before.image.data, "seed {seed}");
            let p = s.points[0].position.unwrap();
            assert_eq!(label_at(&s, p), 1, "seed {seed}: point {p:?} left its blob");
            let area = s.labels.as_ref().unwrap().data.iter().filter(|&&v| v == 1).count();
            assert!((3..=18).contains(&area), "seed {seed}: blob of {area} pixels (9 before)");
        }
        // a constant image with the same fill stays constant; the stream decides everything
        let flat = |seed| {
            let mut s = Sample::new("flat", Image::new_2d(1, 32, 40, vec![5.0; 32 * 40]).unwrap());
            elastic(&mut s, 4.0, 9.0, &mut Rng::for_sample(seed, 1, 2), 5.0, 0);
            s.image.data
        };
        assert!(flat(3).iter().all(|&v| (v - 5.0).abs() < 1e-5));
        let ramp = |seed| {
            let mut s = blob_sample(48, 48, 20, 20);
            elastic(&mut s, 2.0, 9.0, &mut Rng::for_sample(seed, 1, 2), 0.0, 0);
            s.image.data
        };
        assert_eq!(ramp(7), ramp(7));
        assert_ne!(ramp(7), ramp(8));
    }

    #[test]
    fn clamp_keeps_values_in_range() {
        let s = Sample::new("c", Image::new_2d(1, 1, 3, vec![-1.0, 0.5, 2.0]).unwrap());
        let out = Pipeline::new(vec![Augmentation::Clamp(ClampAug::default())]).apply(s, 0, 0, 0).unwrap();
        assert_eq!(out.image.data, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn window_hand_values() {
        let mut i = img(&[-10., 0., 50., 100., 250.]);
        window(&mut i, 100.0, 200.0, (0.0, 1.0));
        close(&i.data, &[0.0, 0.0, 0.25, 0.5, 1.0]);
        let mut i = img(&[0., 100.]);
        window(&mut i, 50.0, 100.0, (-1.0, 1.0));
        close(&i.data, &[-1.0, 1.0]);
    }

    #[test]
    fn gamma_contrast_brightness_hand_values() {
        let mut i = img(&[0., 1., 2., 4.]);
        gamma(&mut i, 2.0, false);
        // 4 * (v / 4)^2
        close(&i.data, &[0.0, 0.25, 1.0, 4.0]);
        let mut i = img(&[0., 1., 2., 4.]);
        gamma(&mut i, 0.5, true);
        let (m, s) = mean_std(&i.data);
        assert!((m - 1.75).abs() < 1e-5 && (s - mean_std(&[0., 1., 2., 4.]).1).abs() < 1e-5);
        let mut i = img(&[0., 2., 4.]);
        contrast(&mut i, 2.0, false);
        close(&i.data, &[-2.0, 2.0, 6.0]);
        let mut i = img(&[0., 2., 4.]);
        contrast(&mut i, 2.0, true);
        close(&i.data, &[0.0, 2.0, 4.0]);
        let mut i = img(&[1., 2.]);
        brightness(&mut i, 1.5, -1.0);
        close(&i.data, &[0.5, 2.0]);
    }

    #[test]
    fn flip_moves_point_and_mask_together() {
        let mut s = blob_sample(7, 9, 2, 3);
        s.labels.as_mut().unwrap().data[3 * 9 + 1] = 2; // mark the left column of the blob
        flip(&mut s, Axis::Horizontal, &[]);
        assert_eq!(s.point("p"), Some([6.0, 3.0]));
        assert_eq!(label_at(&s, [6.0, 3.0]), 1);
        // the marked pixel (1, 3) is now at (7, 3)
        assert_eq!(s.labels.as_ref().unwrap().get(0, 0, 3, 7), 2);
        // image value that was at (2, 3) = 3 * 9 + 2
        assert_eq!(s.image.get(0, 0, 3, 6), 29.0);
        flip(&mut s, Axis::Vertical, &[]);
        assert_eq!(s.point("p"), Some([6.0, 3.0]));
        assert_eq!(s.image.get(0, 0, 3, 6), 29.0);
        let mut s2 = blob_sample(7, 9, 2, 1);
        flip(&mut s2, Axis::Vertical, &[]);
        assert_eq!(s2.point("p"), Some([2.0, 5.0]));
        assert_eq!(label_at(&s2, [2.0, 5.0]), 1);
    }

    #[test]
    fn horizontal_flip_swaps_named_pairs() {
        let mut s = blob_sample(5, 5, 2, 2);
        s.points = vec![Landmark { name: "right".into(), position: Some([1.0, 0.0]) }, Landmark { name: "left".into(), position: Some([4.0, 2.0]) }];
        flip(&mut s, Axis::Horizontal, &[("right".into(), "left".into())]);
        // flipped: right -> (3, 0), left -> (0, 2); then exchanged
        assert_eq!(s.point("right"), Some([0.0, 2.0]));
        assert_eq!(s.point("left"), Some([3.0, 0.0]));
    }

    #[test]
    fn zoom_keeps_point_on_its_mask_pixel() {
        let mut s = blob_sample(21, 21, 14, 6);
        zoom(&mut s, 1.5, 0.0, 0);
        // centre 10: 10 + 1.5 * (14 - 10) = 16, 10 + 1.5 * (6 - 10) = 4
        assert_eq!(s.point("p"), Some([16.0, 4.0]));
        assert_eq!(label_at(&s, [16.0, 4.0]), 1);
        assert_eq!(s.spacing, Some([1.0, 0.1 / 1.5, 0.1 / 1.5]));
        // linear image: value at (16, 4) is the old value at (14, 6) = 6 * 21 + 14
        assert!((s.image.get(0, 0, 4, 16) - 140.0).abs() < 1e-4);
        // many random zooms and flips: the point stays on its blob
        let pipe = Pipeline::new(vec![Augmentation::Scale(ScaleAug { probability: 1.0, ..Default::default() }), Augmentation::Flip(FlipAug::default())]);
        for index in 0..50 {
            let out = pipe.apply(blob_sample(21, 21, 14, 6), 3, 0, index).unwrap();
            let p = out.point("p").unwrap();
            assert_eq!(label_at(&out, p), 1, "index {index}: {p:?}");
        }
    }

    #[test]
    fn zoom_and_flip_in_3d() {
        let (d, h, w) = (9, 8, 7);
        let mut lab = vec![0u16; d * h * w];
        for z in 5..=7 {
            for y in 1..=3 {
                for x in 3..=5 {
                    lab[(z * h + y) * w + x] = 1;
                }
            }
        }
        let s = Sample {
            id: "v".into(),
            image: Image::new(2, [d, h, w], (0..2 * d * h * w).map(|i| i as f32).collect()).unwrap(),
            labels: Some(LabelMap::new(1, [d, h, w], lab).unwrap()),
            points: vec![],
            spacing: Some([2.0, 1.0, 1.0]),
        };
        let mut f = s.clone();
        flip(&mut f, Axis::Depth, &[]);
        let l = f.labels.as_ref().unwrap();
        assert_eq!((l.get(0, 1, 2, 4), l.get(0, 6, 2, 4)), (1, 0));
        assert_eq!(f.image.get(1, 0, 2, 4), s.image.get(1, 8, 2, 4));
        let mut z = s.clone();
        zoom(&mut z, 2.0, 0.0, 0);
        // centre (4, 3.5, 3): blob centre (6, 2, 4) -> (8, 0.5, 5)
        let l = z.labels.as_ref().unwrap();
        assert_eq!(l.get(0, 8, 1, 5), 1);
        assert_eq!(l.get(0, 4, 4, 3), 0);
        assert_eq!(z.spacing, Some([1.0, 0.5, 0.5]));
        let pipe = Pipeline::nnunet();
        let a = pipe.apply(s.clone(), 1, 0, 0).unwrap();
        assert_eq!(a.image.dims(), [d, h, w]);
    }

    #[test]
    fn blur_and_low_resolution_keep_constants() {
        let c = Image::filled(1, [4, 6, 5], 3.0);
        close(&gaussian_blur(&c, 1.3).data, &c.data);
        close(&low_resolution(&c, 0.5).data, &c.data);
        // blur of a 2D step along W only spreads along W and H
        let i = Image::new_2d(1, 1, 4, vec![0., 0., 1., 1.]).unwrap();
        let b = gaussian_blur(&i, 1.0);
        assert!(b.data[1] > 0.0 && b.data[2] < 1.0);
        // low resolution 1 x 4 at zoom 0.5: nearest picks pixels 1 and 3, linear back
        let i = Image::new_2d(1, 1, 4, vec![0., 1., 2., 3.]).unwrap();
        let lr = low_resolution(&i, 0.5);
        // down: u = 0.5 -> 1, u = 2.5 -> 3 (nearest, ties up); up samples u = -0.25, 0.25, 0.75, 1.25
        close(&lr.data, &[1.0, 1.5, 2.5, 3.0]);
    }

    #[test]
    fn noise_statistics() {
        let mut i = Image::filled(1, [1, 100, 100], 0.0);
        gaussian_noise(&mut i, 0.5, &mut Rng::new(2));
        let (m, s) = mean_std(&i.data);
        assert!(m.abs() < 0.02 && (s - 0.5).abs() < 0.02, "{m} {s}");
    }

    #[test]
    fn pipeline_is_deterministic_per_seed_epoch_index() {
        let mut pipe = Pipeline::nnunet();
        for step in &mut pipe.steps {
            // make every step fire so that the streams matter
            match step {
                Augmentation::Scale(a) => a.probability = 1.0,
                Augmentation::Noise(a) => a.probability = 1.0,
                Augmentation::Gamma(a) => a.probability = 1.0,
                _ => {}
            }
        }
        pipe.steps.insert(0, Augmentation::Window(WindowAug { probability: 1.0, ..Default::default() }));
        let s = blob_sample(16, 16, 8, 8);
        let a = pipe.apply(s.clone(), 42, 3, 7).unwrap();
        let b = pipe.apply(s.clone(), 42, 3, 7).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, pipe.apply(s.clone(), 42, 4, 7).unwrap());
        assert_ne!(a, pipe.apply(s.clone(), 42, 3, 8).unwrap());
        assert_ne!(a, pipe.apply(s, 43, 3, 7).unwrap());
        // the config round-trips through JSON
        let json = serde_json::to_string(&pipe).unwrap();
        assert_eq!(serde_json::from_str::<Pipeline>(&json).unwrap(), pipe);
    }
}
