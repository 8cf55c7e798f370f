//! Inference post-processing of the detectors (MODELS.md: "score threshold +
//! non-maximum suppression"): class probabilities by softmax, boxes decoded
//! against proposals (Mask R-CNN) or default boxes (SSD), per-class
//! thresholding and NMS, the best detections overall. Not trained through.

use candle_core::{DType, Result, Tensor};

use super::boxes::{batched_nms_rows, box_rows, clip_row, order_by_score, BoxCoder};
use super::norm::softmax;

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Corners in input pixels, clipped to the image.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Class id (≥ 1; 0 is background).
    pub label: u32,
    /// Row of the proposal / default box it came from.
    pub source: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionConfig {
    /// Candidates need a class probability above this.
    pub score_threshold: f64,
    pub nms_threshold: f64,
    /// Best candidates per class kept before NMS (0 = all).
    pub candidates_per_class: usize,
    /// Detections kept per image.
    pub max_detections: usize,
    /// Boxes narrower or lower than this (pixels) are dropped.
    pub min_size: f64,
}

impl DetectionConfig {
    /// torchvision `maskrcnn_resnet50_fpn`: box_score_thresh 0.05, box_nms_thresh 0.5, 100 per image.
    pub fn mask_rcnn() -> DetectionConfig {
        DetectionConfig { score_threshold: 0.05, nms_threshold: 0.5, candidates_per_class: 0, max_detections: 100, min_size: 1e-2 }
    }

    /// SSD (torchvision `ssd300_vgg16`): score 0.01, NMS 0.45, 400 candidates per class, 200 per image.
    pub fn ssd() -> DetectionConfig {
        DetectionConfig { score_threshold: 0.01, nms_threshold: 0.45, candidates_per_class: 400, max_detections: 200, min_size: 0.0 }
    }
}

/// Thresholds, removes small boxes, keeps the best candidates per class,
/// NMS per class, then the best `max_detections` by score.
fn select(candidates: Vec<Detection>, cfg: &DetectionConfig) -> Vec<Detection> {
    let min = cfg.min_size as f32;
    let mut by_class: std::collections::BTreeMap<u32, Vec<Detection>> = Default::default();
    for d in candidates {
        if d.score > cfg.score_threshold as f32 && d.bbox[2] - d.bbox[0] >= min && d.bbox[3] - d.bbox[1] >= min {
            by_class.entry(d.label).or_default().push(d);
        }
    }
    let mut pool: Vec<Detection> = Vec::new();
    for (_, mut list) in by_class {
        let scores: Vec<f32> = list.iter().map(|d| d.score).collect();
        let order = order_by_score(&scores);
        let keep = if cfg.candidates_per_class > 0 { cfg.candidates_per_class.min(order.len()) } else { order.len() };
        list = order[..keep].iter().map(|&i| list[i]).collect();
        pool.extend(list);
    }
    let boxes: Vec<[f32; 4]> = pool.iter().map(|d| d.bbox).collect();
    let scores: Vec<f32> = pool.iter().map(|d| d.score).collect();
    let labels: Vec<u32> = pool.iter().map(|d| d.label).collect();
    let mut kept = batched_nms_rows(&boxes, &scores, &labels, cfg.nms_threshold as f32);
    kept.truncate(cfg.max_detections);
    kept.into_iter().map(|i| pool[i]).collect()
}

fn probabilities(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    softmax(&logits.detach().to_dtype(DType::F32)?, 1)?.to_vec2()
}

/// Mask R-CNN box head output for one image: `class_logits` (S, C),
/// `box_regression` (S, 4C) class-specific deltas against `proposals` (S, 4)
/// with `box_weights` (10, 10, 5, 5); image (height, width) for clipping.
pub fn roi_head_detections(
    class_logits: &Tensor,
    box_regression: &Tensor,
    proposals: &Tensor,
    image_hw: (usize, usize),
    box_weights: [f64; 4],
    cfg: &DetectionConfig,
) -> Result<Vec<Detection>> {
    let (s, c) = class_logits.dims2()?;
    if box_regression.dims() != [s, 4 * c] || proposals.dims() != [s, 4] {
        candle_core::bail!(
            "roi detections: class logits {:?} need box regression ({s}, {}) and proposals ({s}, 4), got {:?} and {:?}",
            class_logits.dims(),
            4 * c,
            box_regression.dims(),
            proposals.dims()
        );
    }
    let probs = probabilities(class_logits)?;
    let coder = BoxCoder::new(box_weights);
    let reference = proposals.to_dtype(DType::F32)?;
    let regression = box_regression.detach().to_dtype(DType::F32)?;
    let (h, w) = (image_hw.0 as f32, image_hw.1 as f32);
    let mut candidates = Vec::new();
    for cls in 1..c {
        let boxes = box_rows(&coder.decode(&regression.narrow(1, 4 * cls, 4)?.contiguous()?, &reference)?)?;
        for (r, b) in boxes.iter().enumerate() {
            candidates.push(Detection { bbox: clip_row(b, h, w), score: probs[r][cls], label: cls as u32, source: r });
        }
    }
    Ok(select(candidates, cfg))
}

/// SSD output for one image: `cls_logits` (P, C), `box_deltas` (P, 4)
/// against default boxes `priors` (P, 4) corners in input pixels, encoded
/// with `variances`; image (height, width) for clipping.
pub fn ssd_detections(
    cls_logits: &Tensor,
    box_deltas: &Tensor,
    priors: &Tensor,
    image_hw: (usize, usize),
    variances: (f64, f64),
    cfg: &DetectionConfig,
) -> Result<Vec<Detection>> {
    let (p, c) = cls_logits.dims2()?;
    if box_deltas.dims() != [p, 4] || priors.dims() != [p, 4] {
        candle_core::bail!(
            "ssd detections: class logits {:?} need deltas and default boxes ({p}, 4), got {:?} and {:?}",
            cls_logits.dims(),
            box_deltas.dims(),
            priors.dims()
        );
    }
    let probs = probabilities(cls_logits)?;
    let boxes = box_rows(&BoxCoder::ssd(variances).decode(&box_deltas.detach().to_dtype(DType::F32)?, &priors.to_dtype(DType::F32)?)?)?;
    let (h, w) = (image_hw.0 as f32, image_hw.1 as f32);
    let mut candidates = Vec::new();
    for (r, b) in boxes.iter().enumerate() {
        let clipped = clip_row(b, h, w);
        for cls in 1..c {
            candidates.push(Detection { bbox: clipped, score: probs[r][cls], label: cls as u32, source: r });
        }
    }
    Ok(select(candidates, cfg))
}

/// The highest-scoring detection of each class (index = label; index 0,
/// background, is always None). SSD keypoints are the centres of these.
pub fn best_per_class(detections: &[Detection], num_classes: usize) -> Vec<Option<Detection>> {
    let mut best: Vec<Option<Detection>> = vec![None; num_classes];
    for d in detections {
        let l = d.label as usize;
        if l == 0 || l >= num_classes {
            continue;
        }
        if best[l].is_none_or(|b| d.score > b.score) {
            best[l] = Some(*d);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::boxes::boxes_tensor;
    use candle_core::Device;

    #[test]
    fn roi_head_hand_case() -> Result<()> {
        let dev = Device::Cpu;
        let props = boxes_tensor(&[[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 40., 40.]], &dev)?;
        let logits = Tensor::new(&[[0f32, 3., 0.], [0., 2., 0.], [0., 0., 4.]], &dev)?;
        let reg = Tensor::zeros((3, 12), DType::F32, &dev)?;
        let d = roi_head_detections(&logits, &reg, &props, (30, 30), [10., 10., 5., 5.], &DetectionConfig::mask_rcnn())?;
        // class 1: rows 0 (0.909) and 1 (0.787) overlap with IoU 0.68 → row 1 suppressed;
        // class 2: row 2 (0.965) and row 1 (0.106) do not overlap; row 0 (0.045) and row 2 class 1 (0.018) are below 0.05
        let got: Vec<(usize, u32)> = d.iter().map(|d| (d.source, d.label)).collect();
        assert_eq!(got, vec![(2, 2), (0, 1), (1, 2)]);
        let e = |x: f32| x.exp();
        assert!((d[0].score - e(4.) / (e(4.) + 2.)).abs() < 1e-6);
        assert!((d[1].score - e(3.) / (e(3.) + 2.)).abs() < 1e-6);
        assert!((d[2].score - 1. / (e(2.) + 2.)).abs() < 1e-6);
        assert_eq!(d[0].bbox, [20., 20., 30., 30.]); // clipped to the 30x30 image
        let one = DetectionConfig { max_detections: 1, ..DetectionConfig::mask_rcnn() };
        assert_eq!(roi_head_detections(&logits, &reg, &props, (30, 30), [10., 10., 5., 5.], &one)?.len(), 1);
        let best = best_per_class(&d, 3);
        assert_eq!((best[0], best[1].map(|d| d.source), best[2].map(|d| d.source)), (None, Some(0), Some(2)));
        Ok(())
    }

    #[test]
    fn ssd_decodes_with_variances() -> Result<()> {
        let dev = Device::Cpu;
        let priors = boxes_tensor(&[[0., 0., 10., 10.], [30., 30., 40., 40.]], &dev)?;
        // dx = 1 with variance 0.1: the centre moves by 0.1 · 10 = 1 pixel
        let deltas = Tensor::new(&[[1f32, 0., 0., 0.], [0., 0., 0., 0.]], &dev)?;
        let logits = Tensor::new(&[[0f32, 5.], [5., 0.]], &dev)?;
        let d = ssd_detections(&logits, &deltas, &priors, (64, 64), (0.1, 0.2), &DetectionConfig::ssd())?;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].source, d[0].label), (0, 1));
        for (a, b) in d[0].bbox.iter().zip([1f32, 0., 11., 10.]) {
            assert!((a - b).abs() < 1e-5);
        }
        // candidates per class cap: 1 candidate with a low threshold keeps only the best box
        let all = DetectionConfig { score_threshold: 0.0, candidates_per_class: 1, ..DetectionConfig::ssd() };
        assert_eq!(ssd_detections(&logits, &deltas, &priors, (64, 64), (0.1, 0.2), &all)?.len(), 1);
        let all = DetectionConfig { candidates_per_class: 0, ..all };
        assert_eq!(ssd_detections(&logits, &deltas, &priors, (64, 64), (0.1, 0.2), &all)?.len(), 2);
        Ok(())
    }
}
