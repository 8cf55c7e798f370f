//! Losses of the Mask R-CNN ROI heads (torchvision `fastrcnn_loss`,
//! `maskrcnn_loss`) on the targets of [`super::roi_align::roi_head_targets`]:
//! softmax CE over the sampled proposals, smooth L1 on the foreground rows'
//! deltas of their own class, per-pixel BCE on the foreground masks of their
//! own class.

use candle_core::{Result, Tensor};

use super::losses::{bce_with_logits, smooth_l1, softmax_cross_entropy};
use super::roi_align::RoiTargets;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiLossConfig {
    /// Transition of the smooth L1 on box deltas (torchvision: 1/9).
    pub smooth_l1_beta: f64,
}

impl Default for RoiLossConfig {
    fn default() -> Self {
        RoiLossConfig { smooth_l1_beta: 1.0 / 9.0 }
    }
}

/// Box head losses of a batch: `class_logits` (S, C) and `box_regression`
/// (S, 4C) for the sampled proposals of all images in `targets` order.
/// Returns (classification: mean CE, box: smooth L1 summed over foreground
/// rows and divided by S).
pub fn fast_rcnn_loss(class_logits: &Tensor, box_regression: &Tensor, targets: &[RoiTargets], cfg: &RoiLossConfig) -> Result<(Tensor, Tensor)> {
    let (s, c) = class_logits.dims2()?;
    if box_regression.dims() != [s, 4 * c] {
        candle_core::bail!("fast r-cnn loss: class logits {:?} need box regression ({s}, {}), got {:?}", class_logits.dims(), 4 * c, box_regression.dims());
    }
    let labels: Vec<u32> = targets.iter().flat_map(|t| t.labels.iter().copied()).collect();
    if labels.len() != s {
        candle_core::bail!("fast r-cnn loss: {s} rows of predictions but {} sampled proposals in the targets", labels.len());
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= c) {
        candle_core::bail!("fast r-cnn loss: label {bad} but only {c} classes (background included)");
    }
    let (dtype, device) = (class_logits.dtype(), class_logits.device());
    if s == 0 {
        let zero = (class_logits.sum_all()? * 0.0)?;
        return Ok((zero.clone(), (box_regression.sum_all()? * 0.0)?));
    }
    let mut onehot = vec![0f32; s * c];
    for (r, &l) in labels.iter().enumerate() {
        onehot[r * c + l as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (s, c), device)?.to_dtype(dtype)?;
    let classification = softmax_cross_entropy(class_logits, &onehot, 1, None)?;

    // foreground rows, each with the deltas of its own class
    let mut rows: Vec<u32> = Vec::new();
    let mut wanted: Vec<Tensor> = Vec::new();
    let mut offset = 0;
    for t in targets {
        let reg = t.regression_targets.to_dtype(dtype)?.to_device(device)?;
        for &k in &t.positive_rows {
            rows.push(((offset + k) * c + t.labels[k] as usize) as u32);
            wanted.push(reg.get(k)?);
        }
        offset += t.labels.len();
    }
    let box_loss = if rows.is_empty() {
        (box_regression.sum_all()? * 0.0)?
    } else {
        let p = rows.len();
        let idx = Tensor::from_vec(rows, p, device)?;
        let pred = box_regression.reshape((s * c, 4))?.index_select(&idx, 0)?;
        let target = Tensor::stack(&wanted, 0)?;
        (smooth_l1(&pred, &target, cfg.smooth_l1_beta)? * (4.0 * p as f64 / s as f64))?
    };
    Ok((classification, box_loss))
}

/// Mask head loss: `mask_logits` (P, C, M, M) for the foreground rows of all
/// images in `targets` order (`positive_rows`), BCE of each row's own-class
/// channel against its mask target, averaged over pixels and rows.
pub fn mask_rcnn_loss(mask_logits: &Tensor, targets: &[RoiTargets]) -> Result<Tensor> {
    let (p, c, mh, mw) = mask_logits.dims4()?;
    let mut channels: Vec<u32> = Vec::new();
    let mut wanted: Vec<Tensor> = Vec::new();
    for t in targets {
        if t.mask_targets.dims()[0] != t.positive_rows.len() {
            candle_core::bail!(
                "mask loss: {} foreground rows but {} mask targets (were masks given to roi_head_targets?)",
                t.positive_rows.len(),
                t.mask_targets.dims()[0]
            );
        }
        for (j, &k) in t.positive_rows.iter().enumerate() {
            channels.push((channels.len() * c + t.labels[k] as usize) as u32);
            wanted.push(t.mask_targets.get(j)?);
        }
    }
    if channels.len() != p {
        candle_core::bail!("mask loss: {p} rows of mask logits but {} foreground proposals in the targets", channels.len());
    }
    if p == 0 {
        return mask_logits.sum_all()? * 0.0;
    }
    let target = Tensor::stack(&wanted, 0)?.to_dtype(mask_logits.dtype())?.to_device(mask_logits.device())?;
    if target.dims() != [p, mh, mw] {
        candle_core::bail!("mask loss: mask logits are {mh}x{mw} but targets {:?}", &target.dims()[1..]);
    }
    let idx = Tensor::from_vec(channels, p, mask_logits.device())?;
    let own = mask_logits.reshape((p * c, mh, mw))?.index_select(&idx, 0)?;
    bce_with_logits(&own, &target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::boxes::boxes_tensor;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::{DType, Device};

    fn targets() -> Result<Vec<RoiTargets>> {
        let dev = Device::Cpu;
        let t = |labels: Vec<u32>, pos: Vec<usize>, reg: Vec<[f32; 4]>, masks: Tensor| -> Result<RoiTargets> {
            Ok(RoiTargets {
                proposals: boxes_tensor(&vec![[0., 0., 1., 1.]; labels.len()], &dev)?,
                matched_gt: labels.iter().map(|&l| (l > 0).then_some(0)).collect(),
                labels,
                regression_targets: boxes_tensor(&reg, &dev)?,
                positive_rows: pos,
                mask_targets: masks,
            })
        };
        let m1 = det_tensor(&[1, 2, 2], 91).ge(0.0)?.to_dtype(DType::F32)?;
        let m2 = det_tensor(&[1, 2, 2], 92).ge(0.0)?.to_dtype(DType::F32)?;
        Ok(vec![
            t(vec![0, 2, 0], vec![1], vec![[0.; 4], [0.5, -0.2, 0.1, 0.3], [0.; 4]], m1)?,
            t(vec![1, 0], vec![0], vec![[-0.4, 0.2, 0.3, -0.1], [0.; 4]], m2)?,
        ])
    }

    #[test]
    fn hand_values() -> Result<()> {
        let dev = Device::Cpu;
        let t = targets()?;
        // zero logits: CE ln 3 per row; box regression equal to the targets of the own class: 0
        let logits = Tensor::zeros((5, 3), DType::F64, &dev)?;
        let mut reg = vec![0f64; 5 * 12];
        // row 1, class 2 and row 3, class 1 hold their targets; class 0 slots hold garbage
        for (r, cls, v) in [(1usize, 2usize, [0.5, -0.2, 0.1, 0.3]), (3, 1, [-0.4, 0.2, 0.3, -0.1])] {
            for k in 0..4 {
                reg[r * 12 + cls * 4 + k] = v[k];
                reg[r * 12 + k] = 9.0;
            }
        }
        let reg = Tensor::from_vec(reg, (5, 12), &dev)?;
        let (cls, bx) = fast_rcnn_loss(&logits, &reg, &t, &RoiLossConfig::default())?;
        assert!((cls.to_scalar::<f64>()? - 3f64.ln()).abs() < 1e-12);
        assert!(bx.to_scalar::<f64>()?.abs() < 1e-7);
        // zero mask logits: BCE ln 2
        let ml = Tensor::zeros((2, 3, 2, 2), DType::F64, &dev)?;
        assert!((mask_rcnn_loss(&ml, &t)?.to_scalar::<f64>()? - 2f64.ln()).abs() < 1e-12);
        assert!(mask_rcnn_loss(&Tensor::zeros((3, 3, 2, 2), DType::F64, &dev)?, &t).is_err());
        Ok(())
    }

    #[test]
    fn gradients() -> Result<()> {
        let t = targets()?;
        let logits = det_tensor(&[5, 3], 93);
        let reg = det_tensor(&[5, 12], 94);
        let cfg = RoiLossConfig::default();
        assert!(gradcheck(&logits, |l| Ok(fast_rcnn_loss(l, &reg, &t, &cfg)?.0))? < 1e-6);
        assert!(gradcheck(&reg, |r| Ok(fast_rcnn_loss(&logits, r, &t, &cfg)?.1))? < 1e-5);
        let ml = det_tensor(&[2, 3, 2, 2], 95);
        assert!(gradcheck(&ml, |m| mask_rcnn_loss(m, &t))? < 1e-6);
        Ok(())
    }
}
