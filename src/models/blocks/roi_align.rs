//! RoIAlign (He et al. 2017; torchvision `roi_align`), its multi-scale FPN
//! version, the Mask R-CNN ROI-head training targets and mask pasting.
//!
//! RoIAlign averages bilinear samples on a regular grid inside each bin.
//! Bilinear sampling and the bin average are separable in y and x, so one
//! region's output is Wy · F · Wxᵀ, where Wy (out_h × rows) and Wx (out_w ×
//! cols) hold the bilinear weights of the four neighbours of every sample
//! (divided by the sample count) and F is the block of feature pixels those
//! neighbours span, gathered with `index_select`. The weights are computed on
//! the CPU and enter as constants, so candle's autograd carries the gradient
//! to the features (not to the boxes, as in torchvision). The block needs
//! O(C · rows · cols) memory per region instead of O(C · samples · 4) for a
//! gather of every neighbour separately.

use candle_core::{DType, Device, Result, Tensor};

use super::boxes::{box_rows, boxes_tensor, iou_matrix, Annotations, BoxCoder};
use super::rpn::sample_balanced;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignConfig {
    /// Output (height, width), e.g. 7x7 for the box head, 14x14 for the mask head.
    pub output_size: (usize, usize),
    /// Feature-map units per input pixel (1/stride).
    pub spatial_scale: f64,
    /// Samples per bin along each axis; 0 = adaptive, ceil(roi size / output size).
    pub sampling_ratio: usize,
    /// Pixel-centre alignment (Mask R-CNN's fix): box coordinates minus 0.5.
    pub aligned: bool,
}

impl Default for RoiAlignConfig {
    fn default() -> Self {
        RoiAlignConfig { output_size: (7, 7), spatial_scale: 1.0, sampling_ratio: 2, aligned: true }
    }
}

/// Bilinear weights of one region along one axis: the first source index,
/// the number of source indices spanned, and the (out × span) weights.
struct AxisWeights {
    first: usize,
    span: usize,
    weights: Vec<f64>,
}

/// torchvision's `bilinear_interpolate` along one axis, accumulated into the
/// bins: sample `s` of bin `p` sits at start + p·bin + (s + 0.5)·bin/grid.
/// Samples beyond [-1, n] contribute zero (they still count in the mean).
fn axis_weights(start: f64, size: f64, out: usize, grid: usize, n: usize) -> AxisWeights {
    let bin = size / out as f64;
    let mut dense = vec![0f64; out * n];
    for p in 0..out {
        for s in 0..grid {
            let c = start + p as f64 * bin + (s as f64 + 0.5) * bin / grid as f64;
            if c < -1.0 || c > n as f64 {
                continue;
            }
            let c = c.max(0.0);
            let low = c.floor() as usize;
            let (low, high, frac) = if low >= n - 1 { (n - 1, n - 1, 0.0) } else { (low, low + 1, c - low as f64) };
            dense[p * n + low] += (1.0 - frac) / grid as f64;
            dense[p * n + high] += frac / grid as f64;
        }
    }
    let touched: Vec<usize> = (0..n).filter(|&i| (0..out).any(|p| dense[p * n + i] != 0.0)).collect();
    let (first, last) = match (touched.first(), touched.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => (0, 0), // the region misses the map: one zero-weight column
    };
    let span = last - first + 1;
    let mut weights = vec![0f64; out * span];
    for p in 0..out {
        for i in 0..span {
            weights[p * span + i] = dense[p * n + first + i];
        }
    }
    AxisWeights { first, span, weights }
}

/// One region's sampling plan: which feature map and image it reads, and
/// its bilinear weights along y and x.
struct Region {
    map: usize,
    batch: usize,
    ay: AxisWeights,
    ax: AxisWeights,
}

/// Plans RoIAlign of a box (input pixels) on image `batch` of a map of
/// shape (N, C, H, W) at `scale`.
fn plan_region(dims: &[usize], map: usize, batch: usize, b: [f64; 4], scale: f64, cfg: &RoiAlignConfig) -> Result<Region> {
    let (n, h, w) = (dims[0], dims[2], dims[3]);
    if batch >= n {
        candle_core::bail!("roi_align: region refers to image {batch} but the feature map holds {n}");
    }
    let offset = if cfg.aligned { 0.5 } else { 0.0 };
    let (x1, y1) = (b[0] * scale - offset, b[1] * scale - offset);
    let (mut rw, mut rh) = (b[2] * scale - offset - x1, b[3] * scale - offset - y1);
    if !cfg.aligned {
        // legacy behaviour: force malformed regions to 1x1
        rw = rw.max(1.0);
        rh = rh.max(1.0);
    }
    let (oh, ow) = cfg.output_size;
    let grid = |size: f64, out: usize| if cfg.sampling_ratio > 0 { cfg.sampling_ratio } else { ((size / out as f64).ceil() as usize).max(1) };
    Ok(Region { map, batch, ay: axis_weights(y1, rh, oh, grid(rh, oh), h), ax: axis_weights(x1, rw, ow, grid(rw, ow), w) })
}

/// Pools `regions` (K) from `maps` into (K, C, out_h, out_w), rows in the
/// order of `regions`. Regions are grouped by map and by block size (rounded
/// up to a multiple of 4 pixels); each group is one `index_select` of its
/// blocks' pixels from the map laid out as (N·H·W, C), padded with
/// zero-weight repeats, giving (K, rows, cols, C), then two batched products:
/// Wy over rows, then Wx over columns, with C kept innermost so that no large
/// transpose is needed. A handful of graph nodes in all: the backward pass
/// scatters into each map once instead of once per region.
fn pool_regions(maps: &[Tensor], regions: &[Region], cfg: &RoiAlignConfig) -> Result<Tensor> {
    let (oh, ow) = cfg.output_size;
    let c = maps[0].dims()[1];
    let (dtype, device) = (maps[0].dtype(), maps[0].device());
    if regions.is_empty() {
        return Tensor::zeros((0, c, oh, ow), dtype, device);
    }
    let mut groups: std::collections::BTreeMap<(usize, usize, usize), Vec<usize>> = Default::default();
    for (k, r) in regions.iter().enumerate() {
        groups.entry((r.map, r.ay.span.div_ceil(4), r.ax.span.div_ceil(4))).or_default().push(k);
    }
    let mut pixel_rows: Vec<Option<Tensor>> = vec![None; maps.len()];
    let mut outputs = Vec::with_capacity(groups.len());
    let mut order: Vec<usize> = Vec::with_capacity(regions.len());
    for ((map, _, _), members) in groups {
        let (n, mc, h, w) = maps[map].dims4()?;
        if mc != c {
            candle_core::bail!("roi_align: feature map {map} has {mc} channels, map 0 has {c}");
        }
        if pixel_rows[map].is_none() {
            pixel_rows[map] = Some(maps[map].permute((0, 2, 3, 1))?.reshape((n * h * w, c))?);
        }
        let rows = pixel_rows[map].as_ref().expect("just set");
        let ny = members.iter().map(|&k| regions[k].ay.span).max().expect("non-empty group");
        let nx = members.iter().map(|&k| regions[k].ax.span).max().expect("non-empty group");
        let kk = members.len();
        let mut index = Vec::with_capacity(kk * ny * nx);
        let mut wy = vec![0f64; kk * oh * ny];
        let mut wx = vec![0f64; kk * ow * nx];
        for (g, &k) in members.iter().enumerate() {
            let r = &regions[k];
            for i in 0..ny {
                // padding repeats the last row/column; its weight is zero
                let y = r.ay.first + i.min(r.ay.span - 1);
                for j in 0..nx {
                    let x = r.ax.first + j.min(r.ax.span - 1);
                    index.push(((r.batch * h + y) * w + x) as u32);
                }
            }
            for p in 0..oh {
                for i in 0..r.ay.span {
                    wy[(g * oh + p) * ny + i] = r.ay.weights[p * r.ay.span + i];
                }
            }
            for q in 0..ow {
                for j in 0..r.ax.span {
                    wx[(g * ow + q) * nx + j] = r.ax.weights[q * r.ax.span + j];
                }
            }
        }
        let index = Tensor::from_vec(index, kk * ny * nx, device)?;
        let blocks = rows.index_select(&index, 0)?.reshape((kk, ny, nx * c))?;
        let wy = Tensor::from_vec(wy, (kk, oh, ny), device)?.to_dtype(dtype)?;
        let wx = Tensor::from_vec(wx, (kk, 1, ow, nx), device)?.to_dtype(dtype)?;
        let along_y = wy.matmul(&blocks)?.reshape((kk, oh, nx, c))?; // (K, out_h, cols, C)
        let pooled = wx.broadcast_matmul(&along_y)?; // (K, out_h, out_w, C)
        outputs.push(pooled.permute((0, 3, 1, 2))?.contiguous()?);
        order.extend(members);
    }
    let pooled = Tensor::cat(&outputs, 0)?;
    if order.iter().enumerate().all(|(i, &k)| i == k) {
        return Ok(pooled);
    }
    // back to the input order: output row k sits at position inverse[k]
    let mut inverse = vec![0u32; order.len()];
    for (pos, &k) in order.iter().enumerate() {
        inverse[k] = pos as u32;
    }
    pooled.index_select(&Tensor::from_vec(inverse, regions.len(), device)?, 0)
}

/// Parses (K, 5) regions [batch_index, x1, y1, x2, y2].
fn region_rows(rois: &Tensor) -> Result<Vec<(usize, [f64; 4])>> {
    let (_, five) = rois.dims2()?;
    if five != 5 {
        candle_core::bail!("roi_align: regions must have shape (K, 5) [batch, x1, y1, x2, y2], got {:?}", rois.dims());
    }
    let rows: Vec<Vec<f32>> = rois.to_dtype(DType::F32)?.to_vec2()?;
    rows.iter()
        .map(|r| {
            if r[0] < 0.0 || r[0].fract() != 0.0 {
                candle_core::bail!("roi_align: batch index {} is not a non-negative integer", r[0]);
            }
            Ok((r[0] as usize, [r[1] as f64, r[2] as f64, r[3] as f64, r[4] as f64]))
        })
        .collect()
}

/// RoIAlign of (N, C, H, W) features for regions (K, 5) [batch, x1, y1, x2,
/// y2] in input pixels; returns (K, C, out_h, out_w), differentiable with
/// respect to the features.
pub fn roi_align(features: &Tensor, rois: &Tensor, cfg: &RoiAlignConfig) -> Result<Tensor> {
    let dims = features.dims4()?;
    let dims = [dims.0, dims.1, dims.2, dims.3];
    let regions = region_rows(rois)?.into_iter().map(|(b, r)| plan_region(&dims, 0, b, r, cfg.spatial_scale, cfg)).collect::<Result<Vec<_>>>()?;
    pool_regions(std::slice::from_ref(features), &regions, cfg)
}

/// Regions (K, 5) [batch_index, x1, y1, x2, y2] from per-image (K_i, 4)
/// boxes (e.g. RPN proposals), in image order, in the boxes' dtype.
pub fn rois_from_boxes(boxes_per_image: &[Tensor]) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(boxes_per_image.len());
    for (i, b) in boxes_per_image.iter().enumerate() {
        let (k, four) = b.dims2()?;
        if four != 4 {
            candle_core::bail!("rois_from_boxes: image {i} has boxes of shape {:?}, expected (K, 4)", b.dims());
        }
        let index = Tensor::full(i as f32, (k, 1), b.device())?.to_dtype(b.dtype())?;
        parts.push(Tensor::cat(&[&index, b], 1)?);
    }
    if parts.is_empty() {
        candle_core::bail!("rois_from_boxes: no images");
    }
    Tensor::cat(&parts, 0)
}

/// Pyramid level assignment of Feature Pyramid Networks (Lin et al. 2017,
/// eq. 1): k = floor(k0 + log2(√(wh) / s0)), clamped to the available levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiScaleRoiAlignConfig {
    /// Output size, sampling ratio, alignment (the spatial scale is 2^-level).
    pub roi: RoiAlignConfig,
    /// Box side s0 that maps to the canonical level (ImageNet pre-training size).
    pub canonical_scale: f64,
    pub canonical_level: f64,
    /// Levels of the given feature maps, finest first (P2..P5).
    pub min_level: usize,
    pub max_level: usize,
}

impl Default for MultiScaleRoiAlignConfig {
    fn default() -> Self {
        MultiScaleRoiAlignConfig { roi: RoiAlignConfig::default(), canonical_scale: 224.0, canonical_level: 4.0, min_level: 2, max_level: 5 }
    }
}

impl MultiScaleRoiAlignConfig {
    /// Pyramid level of a box (corners in input pixels).
    pub fn level_of(&self, b: &[f64; 4]) -> usize {
        let side = ((b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)).sqrt();
        // torchvision adds 1e-6 so that boxes of exactly 2^j · s0 land on level k0 + j
        let k = (self.canonical_level + (side / self.canonical_scale + 1e-12).log2() + 1e-6).floor();
        (k.max(self.min_level as f64).min(self.max_level as f64)) as usize
    }
}

/// RoIAlign over FPN levels: each region is pooled from the level chosen by
/// its size, at scale 2^-level. `features` are the maps of levels
/// min_level..=max_level. Rows come out in the input region order.
pub fn multiscale_roi_align(features: &[Tensor], rois: &Tensor, cfg: &MultiScaleRoiAlignConfig) -> Result<Tensor> {
    let levels = cfg.max_level + 1 - cfg.min_level;
    if features.len() != levels {
        candle_core::bail!("multiscale roi_align: levels {}..={} need {levels} feature maps, got {}", cfg.min_level, cfg.max_level, features.len());
    }
    let regions = region_rows(rois)?
        .into_iter()
        .map(|(b, r)| {
            let level = cfg.level_of(&r);
            let scale = 0.5f64.powi(level as i32);
            let map = level - cfg.min_level;
            plan_region(features[map].dims(), map, b, r, scale, &cfg.roi)
        })
        .collect::<Result<Vec<_>>>()?;
    pool_regions(features, &regions, &cfg.roi)
}

/// Sampling and target parameters of the Mask R-CNN ROI heads (torchvision defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiHeadTargetConfig {
    /// Proposals with IoU ≥ this are foreground.
    pub fg_iou_threshold: f64,
    /// Background is IoU in [bg_iou_low, bg_iou_high).
    pub bg_iou_high: f64,
    pub bg_iou_low: f64,
    pub batch_size_per_image: usize,
    pub positive_fraction: f64,
    pub box_weights: [f64; 4],
    /// Side of the mask targets.
    pub mask_size: usize,
    /// Resampled mask values ≥ this are foreground.
    pub mask_threshold: f64,
    /// Samples per bin when resampling masks (0 = adaptive).
    pub mask_sampling_ratio: usize,
}

impl Default for RoiHeadTargetConfig {
    fn default() -> Self {
        RoiHeadTargetConfig {
            fg_iou_threshold: 0.5,
            bg_iou_high: 0.5,
            bg_iou_low: 0.0,
            batch_size_per_image: 512,
            positive_fraction: 0.25,
            box_weights: [10.0, 10.0, 5.0, 5.0],
            mask_size: 28,
            mask_threshold: 0.5,
            mask_sampling_ratio: 0,
        }
    }
}

/// Training targets of the ROI heads for one image; rows are the sampled
/// proposals in ascending proposal order (ground-truth boxes appended last).
#[derive(Debug, Clone)]
pub struct RoiTargets {
    /// (S, 4) sampled proposals.
    pub proposals: Tensor,
    /// Class per sampled proposal (0 = background).
    pub labels: Vec<u32>,
    pub matched_gt: Vec<Option<usize>>,
    /// (S, 4) box deltas with `box_weights`; zero for background rows.
    pub regression_targets: Tensor,
    /// Rows of the foreground proposals.
    pub positive_rows: Vec<usize>,
    /// (P, M, M) binary mask targets of the foreground rows (empty without masks).
    pub mask_targets: Tensor,
}

/// Matches `proposals` (R, 4) plus the ground-truth boxes to the ground
/// truth, samples `batch_size_per_image` at `positive_fraction` foreground
/// (seeded), encodes the box targets and, when `gt_masks` (G, H, W) are
/// given, projects each foreground's ground-truth mask onto its proposal.
pub fn roi_head_targets(proposals: &Tensor, gt: &Annotations, gt_masks: Option<&Tensor>, cfg: &RoiHeadTargetConfig, seed: u64) -> Result<RoiTargets> {
    gt.validate()?;
    let device = proposals.device();
    let gt_rows = box_rows(&gt.boxes)?;
    let mut candidates = box_rows(proposals)?;
    candidates.extend_from_slice(&gt_rows);
    let r = candidates.len();
    let mut best_gt = vec![None; r];
    let mut tri: Vec<i8> = vec![0; r];
    if !gt_rows.is_empty() {
        let overlaps = iou_matrix(&gt_rows, &candidates);
        for j in 0..r {
            let (g, v) = (0..gt_rows.len()).map(|g| (g, overlaps[g][j])).fold((0, f32::NEG_INFINITY), |acc, x| if x.1 > acc.1 { x } else { acc });
            tri[j] = if v as f64 >= cfg.fg_iou_threshold {
                best_gt[j] = Some(g);
                1
            } else if (v as f64) < cfg.bg_iou_high && v as f64 >= cfg.bg_iou_low {
                0
            } else {
                -1
            };
        }
    }
    let (pos, neg) = sample_balanced(&tri, cfg.batch_size_per_image, cfg.positive_fraction, seed);
    let mut rows: Vec<usize> = pos.iter().chain(neg.iter()).copied().collect();
    rows.sort_unstable();
    let sampled: Vec<[f32; 4]> = rows.iter().map(|&j| candidates[j]).collect();
    let matched_gt: Vec<Option<usize>> = rows.iter().map(|&j| if tri[j] == 1 { best_gt[j] } else { None }).collect();
    let labels: Vec<u32> = matched_gt.iter().map(|m| m.map_or(0, |g| gt.labels[g])).collect();
    let positive_rows: Vec<usize> = (0..rows.len()).filter(|&k| matched_gt[k].is_some()).collect();

    // regression targets: encode foreground rows, zeros elsewhere
    let coder = BoxCoder::new(cfg.box_weights);
    let mut targets = vec![[0f32; 4]; rows.len()];
    if !positive_rows.is_empty() {
        let fg_gt: Vec<[f32; 4]> = positive_rows.iter().map(|&k| gt_rows[matched_gt[k].unwrap()]).collect();
        let fg_prop: Vec<[f32; 4]> = positive_rows.iter().map(|&k| sampled[k]).collect();
        let enc = box_rows(&coder.encode(&boxes_tensor(&fg_gt, &Device::Cpu)?, &boxes_tensor(&fg_prop, &Device::Cpu)?)?)?;
        for (&k, e) in positive_rows.iter().zip(enc) {
            targets[k] = e;
        }
    }

    let m = cfg.mask_size;
    let mask_targets = match gt_masks {
        None => Tensor::zeros((0, m, m), DType::F32, device)?,
        Some(masks) => {
            let (g, _, _) = masks.dims3()?;
            if g != gt_rows.len() {
                candle_core::bail!("roi targets: {} ground-truth boxes but {g} masks", gt_rows.len());
            }
            let mask_cfg = RoiAlignConfig { output_size: (m, m), spatial_scale: 1.0, sampling_ratio: cfg.mask_sampling_ratio, aligned: true };
            let planes = masks.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.unsqueeze(1)?; // (G, 1, H, W)
            let regions = positive_rows
                .iter()
                .map(|&k| plan_region(planes.dims(), 0, matched_gt[k].unwrap(), sampled[k].map(|v| v as f64), 1.0, &mask_cfg))
                .collect::<Result<Vec<_>>>()?;
            pool_regions(&[planes], &regions, &mask_cfg)?.squeeze(1)?.ge(cfg.mask_threshold)?.to_dtype(DType::F32)?.to_device(device)?
        }
    };
    Ok(RoiTargets {
        proposals: boxes_tensor(&sampled, device)?,
        labels,
        matched_gt,
        regression_targets: boxes_tensor(&targets, device)?,
        positive_rows,
        mask_targets,
    })
}

/// Mask probabilities (M, M) of one detection resampled into the image: each
/// pixel centre inside the box reads the mask bilinearly (as `grid_sample`
/// with align_corners=False and zero padding, Detectron2's paste). Returns
/// (H, W) f32 probabilities, zero outside the box.
pub fn paste_mask_probabilities(mask: &Tensor, b: [f32; 4], image_hw: (usize, usize)) -> Result<Tensor> {
    let (mh, mw) = mask.dims2()?;
    let (h, w) = image_hw;
    let m: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; h * w];
    let (bw, bh) = ((b[2] - b[0]).max(1e-6), (b[3] - b[1]).max(1e-6));
    // mask coordinate of a pixel centre; beyond [-1, M] every neighbour is padding
    let coord = |p: usize, start: f32, size: f32, n: usize| (p as f32 + 0.5 - start) / size * n as f32 - 0.5;
    let range = |start: f32, end: f32, size: f32, n: usize, limit: usize| {
        let margin = size / n as f32;
        let lo = ((start - margin).floor().max(0.0) as usize).min(limit);
        let hi = ((end + margin).ceil().max(0.0) as usize).min(limit);
        lo..hi
    };
    let sample = |v: f32, u: f32| -> f32 {
        let (y0, x0) = (v.floor(), u.floor());
        let (ly, lx) = (v - y0, u - x0);
        let mut acc = 0f32;
        for (dy, wy) in [(0, 1.0 - ly), (1, ly)] {
            for (dx, wx) in [(0, 1.0 - lx), (1, lx)] {
                let (yy, xx) = (y0 as i64 + dy, x0 as i64 + dx);
                if yy >= 0 && xx >= 0 && (yy as usize) < mh && (xx as usize) < mw {
                    acc += wy * wx * m[yy as usize * mw + xx as usize];
                }
            }
        }
        acc
    };
    for y in range(b[1], b[3], bh, mh, h) {
        let v = coord(y, b[1], bh, mh);
        for x in range(b[0], b[2], bw, mw, w) {
            out[y * w + x] = sample(v, coord(x, b[0], bw, mw));
        }
    }
    Tensor::from_vec(out, (h, w), mask.device())
}

/// Binary (H, W) u8 mask of one detection: pasted probabilities ≥ `threshold`.
pub fn paste_mask(mask: &Tensor, b: [f32; 4], image_hw: (usize, usize), threshold: f64) -> Result<Tensor> {
    paste_mask_probabilities(mask, b, image_hw)?.ge(threshold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};

    /// f(x, y) = x + 2y (+ 100 on image 1), two identical channels.
    fn ramp(h: usize, w: usize) -> Result<Tensor> {
        let mut v = Vec::new();
        for n in 0..2 {
            for _c in 0..2 {
                for y in 0..h {
                    for x in 0..w {
                        v.push(x as f64 + 2.0 * y as f64 + 100.0 * n as f64);
                    }
                }
            }
        }
        Tensor::from_vec(v, (2, 2, h, w), &Device::Cpu)
    }

    #[test]
    fn ramp_is_reproduced_at_bin_centres() -> Result<()> {
        let f = ramp(8, 10)?;
        // box [2, 2, 8, 6], 3x2 bins: bin width 3, height 4/3; aligned: index = pixel - 0.5
        let cfg = RoiAlignConfig { output_size: (3, 2), ..RoiAlignConfig::default() };
        let rois = Tensor::new(&[[0f64, 2., 2., 8., 6.], [1., 2., 2., 8., 6.]], &Device::Cpu)?;
        let out = roi_align(&f, &rois, &cfg)?;
        assert_eq!(out.dims(), &[2, 2, 3, 2]);
        for n in 0..2 {
            let o = out.get(n)?.get(1)?.to_vec2::<f64>()?;
            for ph in 0..3 {
                for pw in 0..2 {
                    let x = 2.0 - 0.5 + (pw as f64 + 0.5) * 3.0;
                    let y = 2.0 - 0.5 + (ph as f64 + 0.5) * 4.0 / 3.0;
                    let want = x + 2.0 * y + 100.0 * n as f64;
                    assert!((o[ph][pw] - want).abs() < 1e-12, "image {n} bin ({ph},{pw}): {} vs {want}", o[ph][pw]);
                }
            }
        }
        // spatial scale 1/2 with the box doubled: the same bins, shifted by the half-pixel offset
        let half = RoiAlignConfig { spatial_scale: 0.5, ..cfg };
        let rois2 = Tensor::new(&[[0f64, 5., 5., 17., 13.]], &Device::Cpu)?;
        let o2 = roi_align(&f, &rois2, &half)?.get(0)?.get(0)?.to_vec2::<f64>()?;
        // x1 = 2.5 - 0.5 = 2, bin width 3; y1 = 2, bin height 4/3
        assert!((o2[0][0] - (2.0 + 1.5 + 2.0 * (2.0 + 2.0 / 3.0))).abs() < 1e-12);
        // adaptive sampling gives the same on a linear map
        let adaptive = RoiAlignConfig { sampling_ratio: 0, ..cfg };
        let o3 = roi_align(&f, &rois, &adaptive)?;
        assert!((o3 - &out)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
        Ok(())
    }

    #[test]
    fn single_bilinear_value_and_outside() -> Result<()> {
        // map [[1, 5], [2, 9]]; one sample at index (x 0.25, y 0.75):
        // row 0: 1·0.75 + 5·0.25 = 2; row 1: 2·0.75 + 9·0.25 = 3.75; 2·0.25 + 3.75·0.75 = 3.3125
        let f = Tensor::new(&[[1f64, 5.], [2., 9.]], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
        let cfg = RoiAlignConfig { output_size: (1, 1), sampling_ratio: 1, ..RoiAlignConfig::default() };
        let rois = Tensor::new(&[[0f64, 0.25, 0.75, 1.25, 1.75]], &Device::Cpu)?;
        assert!((roi_align(&f, &rois, &cfg)?.flatten_all()?.to_vec1::<f64>()?[0] - 3.3125).abs() < 1e-12);
        // samples beyond the map by more than one pixel read zero
        let far = Tensor::new(&[[0f64, 20., 20., 30., 30.]], &Device::Cpu)?;
        assert_eq!(roi_align(&f, &far, &cfg)?.flatten_all()?.to_vec1::<f64>()?, vec![0.0]);
        // a sample between -1 and 0 is clamped to the edge (torchvision)
        let edge = Tensor::new(&[[0f64, -0.5, 0., -0.1, 1.]], &Device::Cpu)?;
        let v = roi_align(&f, &edge, &cfg)?.flatten_all()?.to_vec1::<f64>()?[0];
        // x index -0.8 → 0; y index 0 → row 0: value f(0, 0) = 1
        assert!((v - 1.0).abs() < 1e-12);
        assert!(roi_align(&f, &Tensor::new(&[[1f64, 0., 0., 1., 1.]], &Device::Cpu)?, &cfg).is_err());
        let none = roi_align(&f, &Tensor::zeros((0, 5), DType::F64, &Device::Cpu)?, &cfg)?;
        assert_eq!(none.dims(), &[0, 1, 1, 1]);
        Ok(())
    }

    #[test]
    fn batched_regions_equal_single_regions() -> Result<()> {
        // regions of different block sizes land in different gather groups; rows keep the input order
        let f = det_tensor(&[2, 3, 12, 14], 85);
        let rows = [[1f64, 0.3, 0.2, 13.0, 11.5], [0., 2., 3., 4., 5.], [1., 5.5, 1.1, 9.9, 3.3], [0., -3., -2., 20., 18.], [0., 6., 6., 6.5, 6.5]];
        let cfg = RoiAlignConfig { output_size: (3, 4), sampling_ratio: 0, ..RoiAlignConfig::default() };
        let all = roi_align(&f, &Tensor::new(&rows, &Device::Cpu)?, &cfg)?;
        for (k, r) in rows.iter().enumerate() {
            let one = roi_align(&f, &Tensor::new(&[*r], &Device::Cpu)?, &cfg)?;
            assert!((all.get(k)? - one.get(0)?)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12, "region {k}");
        }
        Ok(())
    }

    #[test]
    fn gradient_wrt_features() -> Result<()> {
        let f = det_tensor(&[2, 2, 5, 6], 81);
        let rois = Tensor::new(&[[0f64, 0.7, 1.2, 4.9, 3.3], [1., 2.2, 0.1, 5.5, 4.8], [0., -1., -1., 2., 2.]], &Device::Cpu)?;
        let cfg = RoiAlignConfig { output_size: (2, 3), ..RoiAlignConfig::default() };
        let w = det_tensor(&[3, 2, 2, 3], 82);
        assert!(gradcheck(&f, |f| (roi_align(f, &rois, &cfg)? * &w)?.sum_all())? < 1e-6);
        let ms = MultiScaleRoiAlignConfig { roi: cfg, min_level: 1, max_level: 2, canonical_scale: 4.0, canonical_level: 2.0 };
        let f2 = det_tensor(&[2, 2, 3, 3], 83);
        let boxes = Tensor::new(&[[0f64, 1., 1., 3., 3.], [1., 0., 0., 10., 9.]], &Device::Cpu)?;
        let w2 = det_tensor(&[2, 2, 2, 3], 84);
        assert!(gradcheck(&f, |f| (multiscale_roi_align(&[f.clone(), f2.clone()], &boxes, &ms)? * &w2)?.sum_all())? < 1e-6);
        Ok(())
    }

    #[test]
    fn level_assignment_and_order() -> Result<()> {
        let cfg = MultiScaleRoiAlignConfig { roi: RoiAlignConfig { output_size: (2, 2), ..RoiAlignConfig::default() }, ..Default::default() };
        let side = |s: f64| [0.0, 0.0, s, s];
        assert_eq!(cfg.level_of(&side(224.0)), 4);
        assert_eq!(cfg.level_of(&side(223.0)), 3);
        assert_eq!(cfg.level_of(&side(112.0)), 3);
        assert_eq!(cfg.level_of(&side(56.0)), 2);
        assert_eq!(cfg.level_of(&side(10.0)), 2);
        assert_eq!(cfg.level_of(&side(448.0)), 5);
        assert_eq!(cfg.level_of(&side(2000.0)), 5);
        assert_eq!(cfg.level_of(&[0.0, 0.0, 448.0, 112.0]), 4);
        // level k filled with the value k: each output row shows the level it came from
        let feats: Vec<Tensor> = (2..=5).map(|k| Tensor::full(k as f32, (1, 1, 256 >> k, 256 >> k), &Device::Cpu)).collect::<Result<_>>()?;
        let rois = Tensor::new(&[[0f32, 0., 0., 224., 224.], [0., 0., 0., 20., 20.], [0., 0., 0., 250., 250.], [0., 10., 10., 122., 122.]], &Device::Cpu)?;
        let out = multiscale_roi_align(&feats, &rois, &cfg)?;
        assert_eq!(out.dims(), &[4, 1, 2, 2]);
        let firsts: Vec<f32> = (0..4).map(|k| out.get(k)?.flatten_all()?.to_vec1::<f32>().map(|v| v[0])).collect::<Result<_>>()?;
        assert_eq!(firsts, vec![4.0, 2.0, 4.0, 3.0]);
        assert!(multiscale_roi_align(&feats[..3], &rois, &cfg).is_err());
        let r = rois_from_boxes(&[boxes_tensor(&[[1., 2., 3., 4.]], &Device::Cpu)?, boxes_tensor(&[[5., 6., 7., 8.], [9., 10., 11., 12.]], &Device::Cpu)?])?;
        assert_eq!(r.to_vec2::<f32>()?, vec![vec![0., 1., 2., 3., 4.], vec![1., 5., 6., 7., 8.], vec![1., 9., 10., 11., 12.]]);
        Ok(())
    }

    #[test]
    fn roi_head_targets_hand_case() -> Result<()> {
        let dev = Device::Cpu;
        // gt box [8, 8, 24, 24] with its mask filling the box in a 32x32 image
        let mut mask = vec![0f32; 32 * 32];
        for y in 8..24 {
            for x in 8..24 {
                mask[y * 32 + x] = 1.0;
            }
        }
        let masks = Tensor::from_vec(mask, (1, 32, 32), &dev)?;
        let gt = Annotations { boxes: boxes_tensor(&[[8., 8., 24., 24.]], &dev)?, labels: vec![2] };
        // proposal 0: IoU 192 / 320 = 0.6 (fg); 1 and 2: background; 3: IoU 0 (background)
        let props = boxes_tensor(&[[12., 8., 28., 24.], [0., 0., 8., 8.], [20., 20., 32., 32.], [26., 0., 32., 6.]], &dev)?;
        let cfg = RoiHeadTargetConfig::default();
        let t = roi_head_targets(&props, &gt, Some(&masks), &cfg, 5)?;
        // 4 proposals + the gt appended; 2 foreground (≤ 128), 3 background
        assert_eq!(t.labels, vec![2, 0, 0, 0, 2]);
        assert_eq!(t.positive_rows, vec![0, 4]);
        assert_eq!(t.matched_gt, vec![Some(0), None, None, None, Some(0)]);
        let reg = t.regression_targets.to_vec2::<f32>()?;
        // proposal centre (20, 16), gt centre (16, 16), same size: dx = 10 · (-4 / 16)
        assert!((reg[0][0] + 2.5).abs() < 1e-5 && reg[0][1].abs() < 1e-6 && reg[0][2].abs() < 1e-6);
        assert_eq!(reg[4], vec![0.0; 4]);
        assert_eq!(reg[1], vec![0.0; 4]);
        assert_eq!(t.mask_targets.dims(), &[2, 28, 28]);
        let m0 = t.mask_targets.get(0)?.to_vec2::<f32>()?;
        // columns whose bin centre x = 12 + (j + 0.5)·16/28 is ≤ 24 are inside: j ≤ 20
        for row in &m0 {
            assert_eq!(row.iter().map(|&v| v as usize).collect::<Vec<_>>(), (0..28).map(|j| (j <= 20) as usize).collect::<Vec<_>>());
        }
        assert_eq!(t.mask_targets.get(1)?.sum_all()?.to_scalar::<f32>()?, 28.0 * 28.0);
        // sampling cap: many foreground candidates, 25 % of a batch of 8
        let many = boxes_tensor(&vec![[8., 8., 24., 24.]; 10], &dev)?;
        let small = RoiHeadTargetConfig { batch_size_per_image: 8, ..cfg };
        let t = roi_head_targets(&many, &gt, None, &small, 1)?;
        assert_eq!((t.positive_rows.len(), t.labels.len()), (2, 2));
        assert_eq!(t.mask_targets.dims(), &[0, 28, 28]);
        // no ground truth: everything is background
        let empty = Annotations { boxes: Tensor::zeros((0, 4), DType::F32, &dev)?, labels: vec![] };
        let t = roi_head_targets(&props, &empty, None, &cfg, 1)?;
        assert_eq!(t.labels, vec![0; 4]);
        Ok(())
    }

    #[test]
    fn paste_mask_into_image() -> Result<()> {
        let dev = Device::Cpu;
        let full = Tensor::ones((28, 28), DType::F32, &dev)?;
        let b = [4f32, 6., 14., 12.];
        let m = paste_mask(&full, b, (20, 20), 0.5)?.to_vec2::<u8>()?;
        for y in 0..20 {
            for x in 0..20 {
                assert_eq!(m[y][x], ((4..14).contains(&x) && (6..12).contains(&y)) as u8, "pixel ({y},{x})");
            }
        }
        // left half of the mask → left half of the box (pixel 8 reads mask columns 12, 13; pixel 9 reads 14, 15)
        let left: Vec<f32> = (0..28 * 28).map(|i| ((i % 28) < 14) as u8 as f32).collect();
        let left = Tensor::from_vec(left, (28, 28), &dev)?;
        let m = paste_mask(&left, b, (20, 20), 0.5)?;
        assert_eq!(m.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?, 30.0);
        // hand value: a 2x2 mask [[0, 1], [0, 1]] on box [0, 0, 4, 4]: pixel x 1 → u = 1.5/4·2 - 0.5 = 0.25
        let tiny = Tensor::new(&[[0f32, 1.], [0., 1.]], &dev)?;
        let p = paste_mask_probabilities(&tiny, [0., 0., 4., 4.], (4, 4))?.to_vec2::<f32>()?;
        assert!((p[1][1] - 0.25).abs() < 1e-6 && (p[1][3] - 0.75).abs() < 1e-6 && (p[1][0] - 0.0).abs() < 1e-6);
        Ok(())
    }
}
