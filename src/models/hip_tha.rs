//! SSD512 keypoint detector of the hip-tha analysis (MODELS.md 3, seeds/002):
//! VGG16 trunk with SSD's conv6 (dilated) / conv7 and extra layers, seven
//! source maps, class + box prediction per default box. Each of the ten
//! keypoints a..j is a class whose ground truth is a small square box centred
//! on the point; a keypoint is the centre of the best box of its class.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::blocks::anchors::SsdPriorConfig;
use super::blocks::boxes::{box_rows, boxes_tensor, Annotations, BoxCoder};
use super::blocks::norm::softmax;
use super::blocks::ssd_loss::{multibox_loss, MultiboxConfig, MultiboxLoss};
use super::blocks::vgg::{MultiboxHead, VggSsd, VggSsdConfig};
use crate::imaging::separable::AxisMap;
use crate::imaging::Image;

/// Everything that fixes the network's shape and its outputs' meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HipSsdConfig {
    /// Network input side (the source resizes to 512 x 512).
    pub input_size: usize,
    /// VGG widths are multiplied by this (1.0 = the published SSD512).
    pub width_mult: f64,
    /// Keypoint names; class k + 1 is point k.
    pub points: Vec<String>,
    /// Side of the square ground-truth box around a keypoint, in input pixels.
    pub keypoint_box: f64,
    /// IoU for a default box to count as a match (SSD: 0.5).
    pub iou_threshold: f64,
    /// Mined negatives per positive (SSD: 3).
    pub neg_pos_ratio: f64,
    /// Minimum class score for a keypoint to be reported.
    pub min_score: f64,
    /// Batch norm in the VGG trunk and the larger extras (ScratchDet); not
    /// in the seed's SSD512, which starts from ImageNet weights we cannot have.
    pub batch_norm: bool,
    /// Hardest background boxes trained on in an image without any point
    /// (a radiograph without hip landmarks); SSD keeps none, so such an image
    /// would teach nothing.
    pub min_negatives: usize,
    /// Decoding only: a keypoint is the probability-weighted mean of the
    /// decoded centres of its class's boxes within this many input pixels of
    /// the best box's centre. 0 = the source's rule, the best box's centre.
    pub fusion_radius: f64,
}

/// The ten keypoints of the source (a..j), one detection class each, in
/// class order; `pipelines::hip_geometry` says what each one is.
pub const POINT_NAMES: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

impl Default for HipSsdConfig {
    fn default() -> Self {
        HipSsdConfig {
            input_size: 512,
            width_mult: 0.25,
            points: POINT_NAMES.iter().map(|s| s.to_string()).collect(),
            keypoint_box: 36.0,
            iou_threshold: 0.5,
            neg_pos_ratio: 3.0,
            min_score: 0.2,
            batch_norm: false,
            min_negatives: 0,
            fusion_radius: 0.0,
        }
    }
}

impl HipSsdConfig {
    pub fn num_classes(&self) -> usize {
        self.points.len() + 1
    }

    /// SSD512's default boxes scaled to the input size.
    pub fn priors(&self) -> SsdPriorConfig {
        let base = SsdPriorConfig::default();
        let f = self.input_size as f64 / base.image_size;
        SsdPriorConfig {
            image_size: self.input_size as f64,
            steps: base.steps.iter().map(|s| s * f).collect(),
            min_sizes: base.min_sizes.iter().map(|s| s * f).collect(),
            max_sizes: base.max_sizes.iter().map(|s| s * f).collect(),
            ..base
        }
    }

    pub fn multibox(&self) -> MultiboxConfig {
        MultiboxConfig { iou_threshold: self.iou_threshold, neg_pos_ratio: self.neg_pos_ratio, min_negatives: self.min_negatives, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        if self.input_size != 512 {
            candle_core::bail!("hip-tha: input_size {} unsupported: SSD512's seven source maps need 512", self.input_size);
        }
        if self.points.is_empty() || self.keypoint_box <= 0.0 || self.width_mult <= 0.0 {
            candle_core::bail!("hip-tha: points, keypoint_box and width_mult must be non-empty / positive");
        }
        if !(self.fusion_radius >= 0.0) {
            candle_core::bail!("hip-tha: fusion_radius {} must be 0 (off) or positive", self.fusion_radius);
        }
        Ok(())
    }
}

/// A located keypoint in input pixels (x, y) with its class score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keypoint {
    pub xy: [f64; 2],
    pub score: f64,
}

pub struct HipSsd {
    trunk: VggSsd,
    head: MultiboxHead,
    priors_px: Tensor,
    /// Centres of the default boxes, input pixels (fixed by the config).
    prior_centres: Vec<[f32; 2]>,
    cfg: HipSsdConfig,
}

impl HipSsd {
    pub fn load(vb: VarBuilder, cfg: &HipSsdConfig) -> Result<HipSsd> {
        cfg.validate()?;
        let trunk =
            VggSsd::load(vb.pp("trunk"), &VggSsdConfig { in_channels: 1, width_mult: cfg.width_mult, batch_norm: cfg.batch_norm, ..Default::default() })?;
        let priors = cfg.priors();
        let per_cell: Vec<usize> = (0..priors.feature_maps.len()).map(|k| priors.boxes_per_cell(k)).collect();
        let head = MultiboxHead::load(vb.pp("head"), trunk.source_channels(), &per_cell, cfg.num_classes())?;
        let priors_px = priors.priors_corners_px(vb.device())?;
        let prior_centres = box_centres(&priors_px)?;
        Ok(HipSsd { trunk, head, priors_px, prior_centres, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &HipSsdConfig {
        &self.cfg
    }

    /// (class logits (N, P, C), box deltas (N, P, 4)) for images (N, 1, 512, 512).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward_t(x, false)
    }

    /// As `forward`; `train` uses (and updates) batch statistics when the trunk has batch norm.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.head.forward(&self.trunk.forward_t(x, train)?)
    }

    /// Square boxes around the present points of one image (input pixels).
    pub fn targets(&self, points: &[Option<[f64; 2]>], device: &Device) -> Result<Annotations> {
        let h = self.cfg.keypoint_box / 2.0;
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (k, p) in points.iter().enumerate() {
            if let Some([x, y]) = p {
                rows.push([(x - h) as f32, (y - h) as f32, (x + h) as f32, (y + h) as f32]);
                labels.push(k as u32 + 1);
            }
        }
        let boxes = if rows.is_empty() { Tensor::zeros((0, 4), DType::F32, device)? } else { boxes_tensor(&rows, device)? };
        Ok(Annotations { boxes, labels })
    }

    pub fn loss(&self, x: &Tensor, points: &[Vec<Option<[f64; 2]>>]) -> Result<MultiboxLoss> {
        let (cls, loc) = self.forward_t(x, true)?;
        let targets = points.iter().map(|p| self.targets(p, x.device())).collect::<Result<Vec<_>>>()?;
        multibox_loss(&cls, &loc, &self.priors_px.to_dtype(cls.dtype())?, &targets, &self.cfg.multibox())
    }

    /// The keypoints of each image: the centre of the best box of each class
    /// when its score reaches `min_score`.
    pub fn keypoints(&self, x: &Tensor) -> Result<Vec<Vec<Option<Keypoint>>>> {
        self.keypoints_with_threshold(x, self.cfg.min_score)
    }

    /// As `keypoints`, with another score threshold (0 = always the best box).
    /// For each class: the default box with the highest probability of that
    /// class, decoded; its centre is the keypoint (or, with `fusion_radius`,
    /// the weighted mean of the centres around it). The cup's points (a, b,
    /// c, j) are chosen together, from one cup (`choose_boxes`).
    pub fn keypoints_with_threshold(&self, x: &Tensor, min_score: f64) -> Result<Vec<Vec<Option<Keypoint>>>> {
        let (cls, loc) = self.forward(x)?;
        let n = cls.dim(0)?;
        let coder = BoxCoder::ssd(self.cfg.multibox().variances);
        let priors = self.priors_px.to_dtype(DType::F32)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let probs = softmax(&cls.get(i)?.detach().to_dtype(DType::F32)?, 1)?.to_vec2::<f32>()?;
            let chosen = self.choose_boxes(&probs, &self.prior_centres);
            let decoded = box_centres(&coder.decode(&loc.get(i)?.detach().to_dtype(DType::F32)?, &priors)?)?;
            let points = chosen
                .into_iter()
                .enumerate()
                .map(|(k, (j, score))| {
                    ((score as f64) >= min_score).then(|| Keypoint { xy: fuse(&decoded, &probs, k + 1, j, self.cfg.fusion_radius), score: score as f64 })
                })
                .collect();
            out.push(points);
        }
        Ok(out)
    }

    /// The default box (index, probability) of each point. Each class takes its
    /// own best box, except the cup's points: with a prosthesis on both sides
    /// the best a, b, c and j boxes may lie on different cups (13 of the 28
    /// bilateral test cases of the shipped weights), so the cup whose
    /// neighbourhood holds the higher summed a, b, c, j probability is chosen
    /// and its points are taken from the boxes nearer to it than to the other
    /// cup; d (the other hip's centre) from boxes at least a quarter of the
    /// input away from it. The candidates are the best c box and the best c box
    /// a quarter of the input (~75-110 mm on an AP pelvis, twice a cup's size)
    /// away from it.
    fn choose_boxes(&self, probs: &[Vec<f32>], centres: &[[f32; 2]]) -> Vec<(usize, f32)> {
        let best = |k: usize, allowed: &dyn Fn(usize) -> bool| -> Option<(usize, f32)> {
            (0..probs.len()).filter(|&j| allowed(j)).map(|j| (j, probs[j][k + 1])).max_by(|a, b| a.1.total_cmp(&b.1))
        };
        let mut chosen: Vec<(usize, f32)> = (0..self.cfg.points.len()).map(|k| best(k, &|_| true).unwrap_or((0, 0.0))).collect();
        let index = |name: &str| self.cfg.points.iter().position(|p| p == name);
        let (Some(a), Some(b), Some(c), Some(d), Some(j)) = (index("a"), index("b"), index("c"), index("d"), index("j")) else {
            return chosen;
        };
        let dist = |q: usize, p: [f32; 2]| (centres[q][0] - p[0]).hypot(centres[q][1] - p[1]);
        let separation = self.cfg.input_size as f32 / 4.0;
        let first = centres[chosen[c].0];
        let Some((second, _)) = best(c, &|q| dist(q, first) >= separation) else {
            return chosen;
        };
        let second = centres[second];
        // each cup's a, b, c, j from the boxes nearer to it than to the other cup
        let picks = |mine: [f32; 2], other: [f32; 2]| [a, b, c, j].map(|k| (k, best(k, &|q| dist(q, mine) <= dist(q, other))));
        let mass = |p: &[(usize, Option<(usize, f32)>); 4]| -> f32 { p.iter().filter_map(|(_, pick)| pick.map(|(_, s)| s)).sum() };
        let (at_first, at_second) = (picks(first, second), picks(second, first));
        let (mine, cup) = if mass(&at_second) > mass(&at_first) { (second, at_second) } else { (first, at_first) };
        for (k, pick) in cup {
            if let Some(pick) = pick {
                chosen[k] = pick;
            }
        }
        if let Some(pick) = best(d, &|q| dist(q, mine) >= separation) {
            chosen[d] = pick;
        }
        chosen
    }
}

/// Centres (x, y) of boxes given by their corners, (N, 4).
fn box_centres(boxes: &Tensor) -> Result<Vec<[f32; 2]>> {
    Ok(box_rows(boxes)?.iter().map(|b| [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]).collect())
}

/// The keypoint of `class` around its chosen box `best`: that box's decoded
/// centre, or with `radius` > 0 the mean of the decoded centres within
/// `radius` of it, weighted by their probability of `class`. Neighbouring
/// boxes each regress the same point; their mean is less noisy than one.
fn fuse(centres: &[[f32; 2]], probs: &[Vec<f32>], class: usize, best: usize, radius: f64) -> [f64; 2] {
    let p = centres[best];
    if radius <= 0.0 {
        return [p[0] as f64, p[1] as f64];
    }
    let (mut sw, mut sx, mut sy) = (0f64, 0f64, 0f64);
    for (q, c) in centres.iter().enumerate() {
        if ((c[0] - p[0]) as f64).hypot((c[1] - p[1]) as f64) <= radius {
            let w = probs[q][class] as f64;
            (sw, sx, sy) = (sw + w, sx + w * c[0] as f64, sy + w * c[1] as f64);
        }
    }
    if sw > 0.0 {
        [sx / sw, sy / sw]
    } else {
        [p[0] as f64, p[1] as f64]
    }
}

/// The source's pre-processing (MODELS.md 3), as config with its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HipPreprocessConfig {
    /// First resampling (linear), mm per pixel.
    pub fine_spacing_mm: f64,
    /// Then shrink by this factor (0.1 mm x 4 = 0.4 mm).
    pub shrink: usize,
    /// Pixel values below this percentile are raised to it.
    pub low_percentile: f64,
    pub clahe_tiles: usize,
    /// CLAHE clip limit relative to a flat histogram (the source's "100" is on
    /// an unstated scale; OpenCV-style 2.0 is our default).
    pub clahe_clip_limit: f64,
}

impl Default for HipPreprocessConfig {
    fn default() -> Self {
        HipPreprocessConfig { fine_spacing_mm: 0.1, shrink: 4, low_percentile: 2.0, clahe_tiles: 8, clahe_clip_limit: 2.0 }
    }
}

/// A network input and how it maps back to the source image.
#[derive(Debug, Clone)]
pub struct HipInput {
    /// input_size x input_size, values in [0, 1].
    pub pixels: Vec<f32>,
    /// Source pixel index (column, row; centre = integer) -> input pixel index.
    pub to_input: [AxisMap; 2],
    /// mm per source pixel (column, row).
    pub source_spacing: [f64; 2],
}

impl HipInput {
    /// An input point (index convention) in source-image mm from the top-left corner.
    pub fn to_source_mm(&self, p: [f64; 2]) -> [f64; 2] {
        let col = self.to_input[0].inverse(p[0]) + 0.5;
        let row = self.to_input[1].inverse(p[1]) + 0.5;
        [col * self.source_spacing[0], row * self.source_spacing[1]]
    }

    /// A source point in mm (top-left corner origin) in input pixels (index convention).
    pub fn from_source_mm(&self, p: [f64; 2]) -> [f64; 2] {
        [self.to_input[0].forward(p[0] / self.source_spacing[0] - 0.5), self.to_input[1].forward(p[1] / self.source_spacing[1] - 0.5)]
    }
}

/// Resample to `fine_spacing_mm` (linear), shrink, drop the lowest values,
/// normalise to [0, 1], CLAHE, resize to the network input (`input_size`
/// square: the network's own `HipSsdConfig::input_size`, its one source).
/// `pixels` is one grey frame (rows x cols, modality values, MONOCHROME1
/// already inverted); `spacing` = [row_mm, col_mm].
pub fn preprocess(pixels: &[f32], rows: usize, cols: usize, spacing: [f64; 2], cfg: &HipPreprocessConfig, input_size: usize) -> anyhow::Result<HipInput> {
    use crate::imaging::intensity::{clahe, percentile_clip, ClaheConfig};
    use crate::imaging::separable::{apply_taps, axis_taps, compose_taps, resample_image, Filter, Taps};
    anyhow::ensure!(pixels.len() == rows * cols, "hip-tha preprocessing: {} values for a {rows} x {cols} image", pixels.len());
    anyhow::ensure!(spacing.iter().all(|s| s.is_finite() && *s > 0.0), "hip-tha preprocessing: pixel spacing {spacing:?} is not positive");
    let mut image = Image::new_2d(1, rows, cols, pixels.to_vec())?;
    let mut maps = [AxisMap { scale: 1.0, offset: 0.0 }; 2];
    let step = |image: &Image, h: usize, w: usize, filter: Filter, maps: &mut [AxisMap; 2]| -> Image {
        let (mx, my) = (AxisMap::resize(image.width, w), AxisMap::resize(image.height, h));
        maps[0] = compose(maps[0], mx);
        maps[1] = compose(maps[1], my);
        resample_image(image, [1, h, w], [AxisMap { scale: 1.0, offset: 0.0 }, my, mx], filter, 0.0)
    };
    let fine = |n: usize, mm: f64| ((n as f64 * mm / cfg.fine_spacing_mm).round() as usize).max(1);
    let k = cfg.shrink.max(1);
    // linear onto the fine grid, then the antialiased shrink: both passes'
    // taps composed into one, so the fine image (~10 M pixels) is never built
    let axis = |n: usize, mm: f64, map: &mut AxisMap| -> (usize, Vec<Taps>) {
        let nf = fine(n, mm);
        let ns = (nf / k).max(1);
        let (m1, m2) = (AxisMap::resize(n, nf), AxisMap::resize(nf, ns));
        *map = compose(compose(*map, m1), m2);
        (ns, compose_taps(&axis_taps(n, nf, m1, Filter::Linear), &axis_taps(nf, ns, m2, Filter::LinearAntialias)))
    };
    let (hs, ty) = axis(rows, spacing[0], &mut maps[1]);
    let (ws, tx) = axis(cols, spacing[1], &mut maps[0]);
    image = apply_taps(&image, [&[vec![(0, 1.0)]], &ty, &tx], 0.0);
    debug_assert_eq!((image.height, image.width), (hs, ws));
    let (lo, _) = percentile_clip(&mut image, cfg.low_percentile, 100.0, None)[0];
    let hi = image.data.iter().copied().fold(f32::MIN, f32::max);
    let range = (hi - lo).max(1e-6);
    for v in image.data.iter_mut() {
        *v = (*v - lo) / range;
    }
    let tiles = cfg.clahe_tiles.min(image.width).min(image.height).max(1);
    clahe(&mut image, &ClaheConfig { tiles_x: tiles, tiles_y: tiles, clip_limit: cfg.clahe_clip_limit, ..Default::default() })?;
    image = step(&image, input_size, input_size, Filter::LinearAntialias, &mut maps);
    Ok(HipInput { pixels: image.data, to_input: maps, source_spacing: [spacing[1], spacing[0]] })
}

/// `b` after `a`.
fn compose(a: AxisMap, b: AxisMap) -> AxisMap {
    AxisMap { scale: a.scale * b.scale, offset: b.scale * a.offset + b.offset }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Optimizer, VarMap};

    fn tiny() -> HipSsdConfig {
        HipSsdConfig { width_mult: 0.0625, points: vec!["p".into(), "q".into()], ..Default::default() }
    }

    #[test]
    fn fusion_weights_the_neighbours_of_the_best_box_by_probability() {
        let centres = [[10.0, 10.0], [12.0, 10.0], [30.0, 30.0], [10.0, 13.0]];
        let probs = vec![vec![0.4, 0.6], vec![0.8, 0.2], vec![0.1, 0.9], vec![1.0, 0.0]];
        assert_eq!(fuse(&centres, &probs, 1, 0, 0.0), [10.0, 10.0]);
        // the far box (30, 30) is out, the zero-probability one weighs nothing
        let [x, y] = fuse(&centres, &probs, 1, 0, 5.0);
        assert!((x - 10.5).abs() < 1e-6 && (y - 10.0).abs() < 1e-6, "{x} {y}");
        // nothing to weigh: the best box's centre
        assert_eq!(fuse(&centres, &probs, 1, 3, 1.0), [10.0, 13.0]);
        assert!(HipSsdConfig { fusion_radius: -1.0, ..HipSsdConfig::default() }.validate().is_err());
    }

    #[test]
    fn the_cup_points_come_from_one_cup_and_d_from_the_other_side() -> Result<()> {
        let cfg = HipSsdConfig { width_mult: 0.0625, ..Default::default() };
        let net = HipSsd::load(VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu), &cfg)?;
        let centres = &net.prior_centres;
        let near = |x: f32, y: f32| {
            (0..centres.len())
                .min_by(|&p, &q| {
                    let d = |k: usize| (centres[k][0] - x).hypot(centres[k][1] - y);
                    d(p).total_cmp(&d(q))
                })
                .unwrap()
        };
        let mut probs = vec![vec![0.001f32; cfg.num_classes()]; centres.len()];
        let class = |name: &str| cfg.points.iter().position(|p| p == name).unwrap() + 1;
        // two cups: around (100, 250) with c, a, b, j; around (400, 250) a
        // slightly weaker c and a better b, which the per-class best would take
        let (left, right) = ([100.0f32, 250.0f32], [400.0f32, 250.0f32]);
        for (name, at, p) in [
            ("c", left, 0.9),
            ("a", [90.0, 230.0], 0.7),
            ("b", [80.0, 235.0], 0.5),
            ("j", [118.0, 262.0], 0.7),
            ("c", right, 0.8),
            ("b", [420.0, 235.0], 0.95),
            ("d", [110.0, 250.0], 0.9),
            ("d", right, 0.6),
        ] {
            probs[near(at[0], at[1])][class(name)] = p;
        }
        let chosen = net.choose_boxes(&probs, &centres);
        let at = |name: &str| centres[chosen[class(name) - 1].0];
        for name in ["a", "b", "c", "j"] {
            assert!((at(name)[0] - left[0]).abs() < 40.0, "{name} at {:?}: not the left cup", at(name));
        }
        assert!((at("d")[0] - right[0]).abs() < 40.0, "d at {:?}: not the other side", at("d"));
        // without a second cup candidate, each class keeps its own best box
        let mut single = vec![vec![0.001f32; cfg.num_classes()]; centres.len()];
        single[near(100.0, 250.0)][class("c")] = 0.9;
        single[near(300.0, 250.0)][class("e")] = 0.8;
        let chosen = net.choose_boxes(&single, &centres);
        assert_eq!(chosen[class("e") - 1].0, near(300.0, 250.0));
        Ok(())
    }

    #[test]
    fn shapes_targets_and_refusals() -> Result<()> {
        let vm = VarMap::new();
        let net = HipSsd::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &tiny())?;
        let x = Tensor::zeros((1, 1, 512, 512), DType::F32, &Device::Cpu)?;
        let (cls, loc) = net.forward(&x)?;
        assert_eq!(cls.dims(), &[1, 24564, 3]);
        assert_eq!(loc.dims(), &[1, 24564, 4]);
        let t = net.targets(&[Some([100.0, 50.0]), None], &Device::Cpu)?;
        assert_eq!(t.labels, vec![1]);
        assert_eq!(t.boxes.to_vec2::<f32>()?, vec![vec![82.0, 32.0, 118.0, 68.0]]);
        let bad = HipSsdConfig { input_size: 300, ..tiny() };
        assert!(HipSsd::load(VarBuilder::zeros(DType::F32, &Device::Cpu), &bad).is_err());
        Ok(())
    }

    #[test]
    fn learns_to_find_a_disc_and_a_ring() -> Result<()> {
        // one image with a disc and a ring; a few AdamW steps must halve the
        // loss and raise each class where its point is (the whole network
        // trains end to end). Full keypoint accuracy needs real training
        // (`ainode train hip-tha`); 10:1 mining shortens this test.
        let vm = VarMap::new();
        let cfg = HipSsdConfig { neg_pos_ratio: 10.0, width_mult: 0.125, ..tiny() };
        let net = HipSsd::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg)?;
        crate::models::init::seeded_init(&vm, 3)?;
        let mut img = vec![0f32; 512 * 512];
        let pts = [[150.0, 200.0], [380.0, 300.0]];
        for (y, row) in img.chunks_mut(512).enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                // a bright disc at the first point, a ring at the second
                let d0 = (x as f64 - pts[0][0]).hypot(y as f64 - pts[0][1]);
                let d1 = (x as f64 - pts[1][0]).hypot(y as f64 - pts[1][1]);
                *v = if d0 < 10.0 || (8.0..14.0).contains(&d1) { 1.0 } else { 0.0 };
            }
        }
        let x = Tensor::from_vec(img, (1, 1, 512, 512), &Device::Cpu)?;
        let targets = vec![vec![Some(pts[0]), Some(pts[1])]];
        let mut opt = candle_nn::AdamW::new(vm.all_vars(), candle_nn::ParamsAdamW { lr: 2e-3, ..Default::default() })?;
        let first = net.loss(&x, &targets)?.total()?.to_scalar::<f32>()?;
        let mut last = first;
        for _ in 0..50 {
            let loss = net.loss(&x, &targets)?.total()?;
            last = loss.to_scalar::<f32>()?;
            opt.backward_step(&loss)?;
        }
        assert!(last < first * 0.5, "loss {first} -> {last}");
        // the boxes matched to each point now score that point's class far
        // above the image-wide average: the evidence is local, not a bias
        let (cls, _) = net.forward(&x)?;
        let probs = crate::models::blocks::norm::softmax(&cls.get(0)?, 1)?.to_vec2::<f32>()?;
        let priors = crate::models::blocks::boxes::box_rows(&net.priors_px)?;
        let t = net.targets(&targets[0], &Device::Cpu)?;
        let m = crate::models::blocks::ssd_loss::match_priors(&priors, &crate::models::blocks::boxes::box_rows(&t.boxes)?, &t.labels, 0.5);
        for k in 1..=2u32 {
            let matched: Vec<f32> = (0..priors.len()).filter(|&j| m.labels[j] == k).map(|j| probs[j][k as usize]).collect();
            let at_point = matched.iter().sum::<f32>() / matched.len() as f32;
            let overall = probs.iter().map(|r| r[k as usize]).sum::<f32>() / probs.len() as f32;
            assert!(at_point > 3.0 * overall, "class {k}: {at_point} at its boxes vs {overall} overall");
        }
        Ok(())
    }

    #[test]
    fn he_init_keeps_the_deep_source_maps_alive() -> Result<()> {
        // the plain trunk (no batch norm) from scratch: PyTorch's default init
        // shrinks the signal ~6x in power per layer, so the deepest source
        // maps start near zero and the biases alone decide (issue 16); He keeps them
        use crate::models::init::{seeded_init_as, WeightInit};
        let rms_of_sources = |init: WeightInit| -> Result<Vec<f64>> {
            let vm = VarMap::new();
            let net = HipSsd::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &tiny())?;
            seeded_init_as(&vm, 0, init).unwrap();
            let v: Vec<f32> = (0..512 * 512).map(|i| (i * 7919 % 1009) as f32 / 1009.0).collect();
            let src = net.trunk.forward_t(&Tensor::from_vec(v, (1, 1, 512, 512), &Device::Cpu)?, false)?;
            src.iter().map(|s| Ok((s.sqr()?.mean_all()?.to_scalar::<f32>()? as f64).sqrt())).collect()
        };
        let (torch, he) = (rms_of_sources(WeightInit::TorchDefault)?, rms_of_sources(WeightInit::HeUniform)?);
        // source 0 is L2-normalised (rms 20 / sqrt(channels)) either way
        for k in 1..7 {
            assert!(he[k] > 0.01, "He: source {k} rms {:.2e} ({he:?})", he[k]);
            assert!(torch[k] < he[k] / 10.0, "default init: source {k} rms {:.2e} vs He {:.2e}", torch[k], he[k]);
        }
        Ok(())
    }

    #[test]
    fn preprocessing_maps_points_and_normalises() -> anyhow::Result<()> {
        // a 0.15 mm image 600 x 400 with a bright square whose centre is at (30 mm, 45 mm)
        let (rows, cols, sp) = (600, 400, 0.15);
        let mut px = vec![100f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let (x, y) = ((c as f64 + 0.5) * sp, (r as f64 + 0.5) * sp);
                if (x - 30.0).abs() < 3.0 && (y - 45.0).abs() < 3.0 {
                    px[r * cols + c] = 1000.0;
                }
            }
        }
        let input = preprocess(&px, rows, cols, [sp, sp], &HipPreprocessConfig::default(), 512)?;
        assert_eq!(input.pixels.len(), 512 * 512);
        assert!(input.pixels.iter().all(|v| (0.0..=1.0 + 1e-5).contains(v)));
        // the bright square's centre of mass lands where the mapping says
        let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
        for (i, v) in input.pixels.iter().enumerate() {
            if *v > 0.5 {
                sx += (i % 512) as f64;
                sy += (i / 512) as f64;
                sw += 1.0;
            }
        }
        let want = input.from_source_mm([30.0, 45.0]);
        assert!((sx / sw - want[0]).abs() < 1.0 && (sy / sw - want[1]).abs() < 1.0, "{:?} vs {want:?}", (sx / sw, sy / sw));
        let back = input.to_source_mm(want);
        assert!((back[0] - 30.0).abs() < 1e-9 && (back[1] - 45.0).abs() < 1e-9);
        Ok(())
    }
}
