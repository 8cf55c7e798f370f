//! SSD multibox loss (Liu et al. 2016; ssd.pytorch `MultiBoxLoss`): match
//! ground truth to default boxes, encode the matched boxes with the
//! variances, mine the hardest negatives, then softmax cross-entropy over
//! positives + mined negatives and smooth L1 over positives, both divided by
//! the number of positives in the batch.

use candle_core::{DType, Result, Tensor};

use super::boxes::{box_rows, boxes_tensor, iou_matrix, Annotations, BoxCoder};
use super::losses::{smooth_l1, softmax_cross_entropy};
use super::norm::log_softmax;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiboxConfig {
    /// A default box whose best IoU with a ground truth reaches this is a positive.
    pub iou_threshold: f64,
    /// Mined negatives per positive.
    pub neg_pos_ratio: f64,
    /// Negatives kept in an image without any positive (ssd.pytorch keeps none).
    pub min_negatives: usize,
    /// Encoding variances (centre, size).
    pub variances: (f64, f64),
    /// Transition point of the smooth L1 on the box offsets.
    pub smooth_l1_beta: f64,
}

impl Default for MultiboxConfig {
    fn default() -> Self {
        MultiboxConfig { iou_threshold: 0.5, neg_pos_ratio: 3.0, min_negatives: 0, variances: (0.1, 0.2), smooth_l1_beta: 1.0 }
    }
}

/// Per default box: class label (0 = background) and, for positives, the
/// index of the matched ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorMatch {
    pub labels: Vec<u32>,
    pub matched_gt: Vec<Option<usize>>,
}

/// SSD matching. Every default box takes its best-IoU ground truth; each
/// ground truth is then forced onto its own best default box (even below the
/// threshold, so that no object goes unmatched; later ground truths win
/// when two share a best box); boxes left below `iou_threshold` are background.
pub fn match_priors(priors: &[[f32; 4]], gt: &[[f32; 4]], gt_labels: &[u32], iou_threshold: f32) -> PriorMatch {
    assert_eq!(gt.len(), gt_labels.len(), "ssd matching: one label per ground-truth box");
    let p = priors.len();
    if gt.is_empty() {
        return PriorMatch { labels: vec![0; p], matched_gt: vec![None; p] };
    }
    let overlaps = iou_matrix(gt, priors); // (G, P)
    let mut best_gt = vec![0usize; p];
    let mut best_iou = vec![f32::NEG_INFINITY; p];
    for (g, row) in overlaps.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v > best_iou[j] {
                best_iou[j] = v;
                best_gt[j] = g;
            }
        }
    }
    for (g, row) in overlaps.iter().enumerate() {
        // first maximum: deterministic tie-break
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        best_gt[best] = g;
        best_iou[best] = 2.0; // above any threshold
    }
    let mut labels = vec![0u32; p];
    let mut matched_gt = vec![None; p];
    for j in 0..p {
        if best_iou[j] >= iou_threshold {
            labels[j] = gt_labels[best_gt[j]];
            matched_gt[j] = Some(best_gt[j]);
        }
    }
    PriorMatch { labels, matched_gt }
}

/// How many negatives to keep in an image with `num_positives` positives and
/// `available` background boxes.
pub fn negatives_to_keep(num_positives: usize, available: usize, cfg: &MultiboxConfig) -> usize {
    let wanted = if num_positives > 0 { (cfg.neg_pos_ratio * num_positives as f64).floor() as usize } else { cfg.min_negatives };
    wanted.min(available)
}

/// The `count` background boxes (label 0) with the highest background loss,
/// highest first (ties: lower index first).
pub fn hard_negatives(background_loss: &[f32], labels: &[u32], count: usize) -> Vec<usize> {
    let mut negatives: Vec<usize> = (0..labels.len()).filter(|&j| labels[j] == 0).collect();
    negatives.sort_by(|&a, &b| background_loss[b].partial_cmp(&background_loss[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    negatives.truncate(count);
    negatives
}

/// The two terms of the multibox loss, each already divided by the number of
/// positives in the batch (at least 1, and at least the kept negatives over
/// `1 + neg_pos_ratio` when images without positives keep `min_negatives`).
#[derive(Debug, Clone)]
pub struct MultiboxLoss {
    pub classification: Tensor,
    pub localization: Tensor,
    pub num_positives: usize,
    pub num_negatives: usize,
}

impl MultiboxLoss {
    pub fn total(&self) -> Result<Tensor> {
        &self.classification + &self.localization
    }
}

/// Multibox loss of a batch. `cls_logits` (B, P, C) with class 0 =
/// background, `box_deltas` (B, P, 4) encoded with `cfg.variances`, `priors`
/// (P, 4) corners in the unit of the targets' boxes (e.g.
/// `SsdPriorConfig::priors_corners_px`), one [`Annotations`] per image.
pub fn multibox_loss(cls_logits: &Tensor, box_deltas: &Tensor, priors: &Tensor, targets: &[Annotations], cfg: &MultiboxConfig) -> Result<MultiboxLoss> {
    let (b, p, c) = cls_logits.dims3()?;
    if box_deltas.dims() != [b, p, 4] {
        candle_core::bail!("multibox loss: class logits {:?} but box deltas {:?} (expected ({b}, {p}, 4))", cls_logits.dims(), box_deltas.dims());
    }
    if targets.len() != b {
        candle_core::bail!("multibox loss: batch of {b} predictions but {} target sets", targets.len());
    }
    let prior_rows = box_rows(priors)?;
    if prior_rows.len() != p {
        candle_core::bail!("multibox loss: {p} predictions per image but {} default boxes", prior_rows.len());
    }
    let (dtype, device) = (cls_logits.dtype(), cls_logits.device());
    // ranking negatives is not trained through (ssd.pytorch ranks under no_grad)
    let background_loss: Vec<f32> = log_softmax(&cls_logits.detach(), 2)?.narrow(2, 0, 1)?.neg()?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;

    let mut selected: Vec<u32> = Vec::new(); // rows of (B·P, C) that enter the CE
    let mut selected_class: Vec<u32> = Vec::new();
    let mut positive_rows: Vec<u32> = Vec::new();
    let mut matched_boxes: Vec<[f32; 4]> = Vec::new();
    let mut matched_priors: Vec<[f32; 4]> = Vec::new();
    let mut num_negatives = 0;
    for (i, t) in targets.iter().enumerate() {
        t.validate()?;
        let gt = box_rows(&t.boxes)?;
        if let Some(&bad) = t.labels.iter().find(|&&l| l as usize >= c) {
            candle_core::bail!("multibox loss: image {i} has label {bad} but the network predicts {c} classes (background included)");
        }
        let m = match_priors(&prior_rows, &gt, &t.labels, cfg.iou_threshold as f32);
        let base = i * p;
        let positives: Vec<usize> = (0..p).filter(|&j| m.labels[j] > 0).collect();
        let keep = negatives_to_keep(positives.len(), p - positives.len(), cfg);
        let negatives = hard_negatives(&background_loss[base..base + p], &m.labels, keep);
        num_negatives += negatives.len();
        for &j in &positives {
            selected.push((base + j) as u32);
            selected_class.push(m.labels[j]);
            positive_rows.push((base + j) as u32);
            matched_boxes.push(gt[m.matched_gt[j].expect("a positive has a ground truth")]);
            matched_priors.push(prior_rows[j]);
        }
        for &j in &negatives {
            selected.push((base + j) as u32);
            selected_class.push(0);
        }
    }
    let num_positives = positive_rows.len();
    // SSD divides by the positives; negatives kept in images without any
    // (`min_negatives`) count as the positives they stand for, so that a
    // batch of such images does not weigh hundreds of times more than others
    let norm = (num_positives as f64).max(num_negatives as f64 / (1.0 + cfg.neg_pos_ratio)).max(1.0);

    let classification = if selected.is_empty() {
        (cls_logits.sum_all()? * 0.0)?
    } else {
        let k = selected.len();
        let idx = Tensor::from_vec(selected, k, device)?;
        let rows = cls_logits.reshape((b * p, c))?.index_select(&idx, 0)?;
        let mut onehot = vec![0f32; k * c];
        for (r, &cls) in selected_class.iter().enumerate() {
            onehot[r * c + cls as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (k, c), device)?.to_dtype(dtype)?;
        // softmax_cross_entropy averages over the k rows; the loss sums them
        (softmax_cross_entropy(&rows, &onehot, 1, None)? * (k as f64 / norm))?
    };
    let localization = if num_positives == 0 {
        (box_deltas.sum_all()? * 0.0)?
    } else {
        let idx = Tensor::from_vec(positive_rows, num_positives, device)?;
        let pred = box_deltas.reshape((b * p, 4))?.index_select(&idx, 0)?;
        let coder = BoxCoder::ssd(cfg.variances);
        let target = coder.encode(&boxes_tensor(&matched_boxes, device)?.to_dtype(dtype)?, &boxes_tensor(&matched_priors, device)?.to_dtype(dtype)?)?;
        (smooth_l1(&pred, &target, cfg.smooth_l1_beta)? * (4.0 * num_positives as f64 / norm))?
    };
    Ok(MultiboxLoss { classification, localization, num_positives, num_negatives })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::Device;

    fn priors() -> Vec<[f32; 4]> {
        vec![[0., 0., 10., 10.], [20., 0., 30., 10.], [40., 0., 50., 10.], [44., 0., 54., 10.]]
    }

    #[test]
    fn matching_forces_each_gt_onto_its_best_prior() {
        // gt 0 overlaps prior 0 with IoU 50/150 = 1/3 only (below 0.5) but is forced onto it;
        // gt 1 has IoU 90/110 with prior 2 and 70/130 = 0.54 with prior 3: both positive
        let gt = [[5f32, 0., 15., 10.], [41., 0., 51., 10.]];
        let m = match_priors(&priors(), &gt, &[1, 2], 0.5);
        assert_eq!(m.labels, vec![1, 0, 2, 2]);
        assert_eq!(m.matched_gt, vec![Some(0), None, Some(1), Some(1)]);
        // with a threshold of 0.6 prior 3 drops to background; the forced match stays
        let m = match_priors(&priors(), &gt, &[1, 2], 0.6);
        assert_eq!(m.labels, vec![1, 0, 2, 0]);
        // no ground truth: all background
        assert_eq!(match_priors(&priors(), &[], &[], 0.5).labels, vec![0; 4]);
    }

    #[test]
    fn mining_keeps_three_negatives_per_positive_with_highest_loss() {
        let labels = [1u32, 0, 0, 2, 0, 0, 0, 0, 0, 0];
        let loss = [9f32, 0.1, 0.8, 9.0, 0.5, 0.8, 0.05, 0.7, 0.3, 0.2];
        let cfg = MultiboxConfig::default();
        let keep = negatives_to_keep(2, 8, &cfg);
        assert_eq!(keep, 6);
        // 0.8 (2), 0.8 (5, tie → after 2), 0.7 (7), 0.5 (4), 0.3 (8), 0.2 (9); positives never mined
        assert_eq!(hard_negatives(&loss, &labels, keep), vec![2, 5, 7, 4, 8, 9]);
        assert_eq!(negatives_to_keep(5, 8, &cfg), 8);
        assert_eq!(negatives_to_keep(0, 8, &cfg), 0);
        assert_eq!(negatives_to_keep(0, 8, &MultiboxConfig { min_negatives: 3, ..cfg }), 3);
    }

    #[test]
    fn loss_hand_value() -> Result<()> {
        let dev = Device::Cpu;
        let pr = boxes_tensor(&[[0., 0., 10., 10.], [20., 0., 30., 10.], [40., 0., 50., 10.]], &dev)?;
        // gt equals prior 0 exactly: encoded target 0
        let t = Annotations { boxes: boxes_tensor(&[[0., 0., 10., 10.]], &dev)?, labels: vec![1] };
        let logits = Tensor::zeros((1, 3, 2), DType::F64, &dev)?;
        let deltas = Tensor::new(&[[[0.5f64, 0., 0., -2.], [7., 7., 7., 7.], [7., 7., 7., 7.]]], &dev)?;
        let l = multibox_loss(&logits, &deltas, &pr, &[t], &MultiboxConfig::default())?;
        assert_eq!((l.num_positives, l.num_negatives), (1, 2));
        // 1 positive + 2 negatives (3 wanted, 2 available) each with CE ln 2, over 1 positive
        assert!((l.classification.to_scalar::<f64>()? - 3.0 * 2f64.ln()).abs() < 1e-12);
        // smooth L1: 0.5·0.5² + (2 - 0.5) on the positive only
        assert!((l.localization.to_scalar::<f64>()? - (0.125 + 1.5)).abs() < 1e-12);
        // an image without ground truth keeping 2 negatives (min_negatives): 2 / (1 + 3) < 1, so / 1;
        // keeping 8 of 9 boxes: / (8 / 4) = / 2
        let empty = Annotations { boxes: Tensor::zeros((0, 4), DType::F32, &dev)?, labels: vec![] };
        let cfg = MultiboxConfig { min_negatives: 8, ..Default::default() };
        let pr9 = boxes_tensor(&(0..9).map(|i| [i as f32 * 20.0, 0., i as f32 * 20.0 + 10.0, 10.]).collect::<Vec<_>>(), &dev)?;
        let l = multibox_loss(&Tensor::zeros((1, 9, 2), DType::F64, &dev)?, &Tensor::zeros((1, 9, 4), DType::F64, &dev)?, &pr9, &[empty], &cfg)?;
        assert_eq!((l.num_positives, l.num_negatives), (0, 8));
        assert!((l.classification.to_scalar::<f64>()? - 8.0 * 2f64.ln() / 2.0).abs() < 1e-12);
        assert_eq!(l.localization.to_scalar::<f64>()?, 0.0);
        Ok(())
    }

    #[test]
    fn loss_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let pr: Vec<[f32; 4]> = (0..8).map(|i| [i as f32 * 6.0, 0., i as f32 * 6.0 + 10.0, 10.]).collect();
        let pr = boxes_tensor(&pr, &dev)?;
        let targets = vec![
            Annotations { boxes: boxes_tensor(&[[1., 1., 11., 10.], [30., 0., 41., 9.]], &dev)?, labels: vec![1, 2] },
            Annotations { boxes: boxes_tensor(&[[13., 0., 22., 10.]], &dev)?, labels: vec![2] },
        ];
        let cfg = MultiboxConfig::default();
        let logits = det_tensor(&[2, 8, 3], 51).affine(2.0, 0.0)?;
        let deltas = det_tensor(&[2, 8, 4], 52).affine(2.0, 0.0)?;
        assert!(gradcheck(&logits, |x| multibox_loss(x, &deltas, &pr, &targets, &cfg)?.total())? < 1e-5);
        assert!(gradcheck(&deltas, |d| multibox_loss(&logits, d, &pr, &targets, &cfg)?.total())? < 1e-5);
        Ok(())
    }
}
