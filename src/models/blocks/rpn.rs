//! Region proposal network of Mask R-CNN (MODELS.md §2 S4), following
//! torchvision's `RegionProposalNetwork`: a head shared by all FPN levels,
//! proposal generation (decode, clip, per-level top-k, NMS, top-k) and the
//! training targets and loss (IoU matching, balanced sampling, BCE + smooth L1).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::boxes::{batched_nms_rows, box_rows, boxes_tensor, clip_row, iou_matrix, order_by_score, remove_small_boxes, BoxCoder};
use super::conv::{Conv2d, ConvConfig};
use super::losses::{bce_with_logits, smooth_l1};

/// Thresholds and counts of proposal generation and RPN training
/// (defaults: torchvision `maskrcnn_resnet50_fpn`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RpnConfig {
    /// Highest-scoring anchors kept per level before NMS.
    pub pre_nms_top_n_train: usize,
    pub pre_nms_top_n_test: usize,
    /// Proposals kept per image after NMS.
    pub post_nms_top_n_train: usize,
    pub post_nms_top_n_test: usize,
    pub nms_threshold: f64,
    /// Proposals with a lower objectness probability are dropped.
    pub score_threshold: f64,
    /// Proposals narrower or lower than this (pixels) are dropped.
    pub min_size: f64,
    /// Anchors with IoU ≥ this with a ground truth are positive.
    pub fg_iou_threshold: f64,
    /// Anchors whose best IoU is below this are negative; in between: ignored.
    pub bg_iou_threshold: f64,
    /// Anchors sampled per image for the loss.
    pub batch_size_per_image: usize,
    pub positive_fraction: f64,
    pub smooth_l1_beta: f64,
}

impl Default for RpnConfig {
    fn default() -> Self {
        RpnConfig {
            pre_nms_top_n_train: 2000,
            pre_nms_top_n_test: 1000,
            post_nms_top_n_train: 2000,
            post_nms_top_n_test: 1000,
            nms_threshold: 0.7,
            score_threshold: 0.0,
            min_size: 1e-3,
            fg_iou_threshold: 0.7,
            bg_iou_threshold: 0.3,
            batch_size_per_image: 256,
            positive_fraction: 0.5,
            smooth_l1_beta: 1.0 / 9.0,
        }
    }
}

/// Shared 3x3 conv + ReLU, then per location A objectness logits and 4A box deltas.
#[derive(Debug, Clone)]
pub struct RpnHead {
    conv: Conv2d,
    cls_logits: Conv2d,
    bbox_pred: Conv2d,
    num_anchors: usize,
}

fn conv(vb: VarBuilder, in_c: usize, out_c: usize, k: usize) -> Result<Conv2d> {
    // torchvision initialises the RPN head with N(0, 0.01) weights and zero bias
    let weight = vb.get_with_hints((out_c, in_c, k, k), "weight", Init::Randn { mean: 0.0, stdev: 0.01 })?;
    let bias = vb.get_with_hints(out_c, "bias", Init::Const(0.0))?;
    // our im2col convolution: candle's own conv2d backward (conv_transpose2d) is
    // several times slower on the CPU, and the head runs on every level
    Ok(Conv2d::new(weight, Some(bias), ConvConfig::same(k, 1, 1, true)))
}

/// Head outputs of all levels, flattened in anchor order (per level, per
/// location row-major, per anchor), which is the order of
/// `RpnAnchorConfig::anchors` concatenated.
#[derive(Debug, Clone)]
pub struct RpnOutput {
    /// (N, total anchors) logits.
    pub objectness: Tensor,
    /// (N, total anchors, 4) deltas against the anchors (unit weights).
    pub deltas: Tensor,
    /// Anchors per level (H·W·A).
    pub level_counts: Vec<usize>,
}

impl RpnHead {
    pub fn load(vb: VarBuilder, in_channels: usize, num_anchors: usize) -> Result<RpnHead> {
        Ok(RpnHead {
            conv: conv(vb.pp("conv"), in_channels, in_channels, 3)?,
            cls_logits: conv(vb.pp("cls_logits"), in_channels, num_anchors, 1)?,
            bbox_pred: conv(vb.pp("bbox_pred"), in_channels, 4 * num_anchors, 1)?,
            num_anchors,
        })
    }

    /// One level: objectness (N, A, H, W) and deltas (N, 4A, H, W).
    pub fn forward_level(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = self.conv.forward_relu(x)?;
        Ok((self.cls_logits.forward(&t)?, self.bbox_pred.forward(&t)?))
    }

    /// All levels with the shared weights, flattened and concatenated.
    pub fn forward(&self, features: &[Tensor]) -> Result<RpnOutput> {
        let a = self.num_anchors;
        let mut objectness = Vec::with_capacity(features.len());
        let mut deltas = Vec::with_capacity(features.len());
        let mut level_counts = Vec::with_capacity(features.len());
        for f in features {
            let (o, d) = self.forward_level(f)?;
            let (n, _, h, w) = o.dims4()?;
            // (N, A, H, W) → (N, H, W, A): anchors vary fastest, as generated
            objectness.push(o.permute((0, 2, 3, 1))?.reshape((n, h * w * a))?);
            deltas.push(d.reshape((n, a, 4, h, w))?.permute((0, 3, 4, 1, 2))?.reshape((n, h * w * a, 4))?);
            level_counts.push(h * w * a);
        }
        Ok(RpnOutput { objectness: Tensor::cat(&objectness, 1)?, deltas: Tensor::cat(&deltas, 1)?, level_counts })
    }
}

/// Proposals of one image, best first.
#[derive(Debug, Clone)]
pub struct Proposals {
    /// (K, 4) corners, f32, clipped to the image.
    pub boxes: Tensor,
    /// (K) objectness probabilities.
    pub scores: Tensor,
}

/// Proposal generation (not trained through): per image and level the
/// `pre_nms_top_n` best anchors, decoded, clipped, small and low-scoring
/// boxes dropped, NMS per level, then the `post_nms_top_n` best overall.
/// `anchors` are per level (as from `RpnAnchorConfig::anchors`);
/// `image_sizes` are (height, width) per image.
pub fn generate_proposals(out: &RpnOutput, anchors: &[Tensor], image_sizes: &[(usize, usize)], cfg: &RpnConfig, training: bool) -> Result<Vec<Proposals>> {
    let (n, total) = out.objectness.dims2()?;
    if image_sizes.len() != n {
        candle_core::bail!("rpn proposals: {n} images in the batch but {} image sizes", image_sizes.len());
    }
    let anchor_rows: Vec<Vec<[f32; 4]>> = anchors.iter().map(box_rows).collect::<Result<_>>()?;
    let counts: Vec<usize> = anchor_rows.iter().map(|a| a.len()).collect();
    if counts != out.level_counts || counts.iter().sum::<usize>() != total {
        candle_core::bail!("rpn proposals: anchors per level {counts:?} but head outputs per level {:?}", out.level_counts);
    }
    let (pre_n, post_n) = if training { (cfg.pre_nms_top_n_train, cfg.post_nms_top_n_train) } else { (cfg.pre_nms_top_n_test, cfg.post_nms_top_n_test) };
    let logits: Vec<Vec<f32>> = out.objectness.detach().to_dtype(DType::F32)?.to_vec2()?;
    let deltas_all = out.deltas.detach().to_dtype(DType::F32)?;
    let device = out.objectness.device();
    let coder = BoxCoder::rpn();
    let mut result = Vec::with_capacity(n);
    for (i, &(h, w)) in image_sizes.iter().enumerate() {
        // top-k per level, so that the large levels do not crowd out the small ones
        let mut chosen: Vec<usize> = Vec::new();
        let mut chosen_level: Vec<u32> = Vec::new();
        let mut offset = 0;
        for (l, &c) in counts.iter().enumerate() {
            let order = order_by_score(&logits[i][offset..offset + c]);
            for &j in order.iter().take(pre_n) {
                chosen.push(offset + j);
                chosen_level.push(l as u32);
            }
            offset += c;
        }
        let flat_anchors: Vec<[f32; 4]> = chosen
            .iter()
            .map(|&g| {
                let mut rest = g;
                let mut l = 0;
                while rest >= counts[l] {
                    rest -= counts[l];
                    l += 1;
                }
                anchor_rows[l][rest]
            })
            .collect();
        let idx = Tensor::from_vec(chosen.iter().map(|&g| g as u32).collect::<Vec<_>>(), chosen.len(), deltas_all.device())?;
        let d = deltas_all.get(i)?.index_select(&idx, 0)?;
        let decoded = box_rows(&coder.decode(&d, &boxes_tensor(&flat_anchors, deltas_all.device())?)?)?;
        let clipped: Vec<[f32; 4]> = decoded.iter().map(|b| clip_row(b, h as f32, w as f32)).collect();
        let probs: Vec<f32> = chosen.iter().map(|&g| 1.0 / (1.0 + (-logits[i][g]).exp())).collect();
        let keep: Vec<usize> = remove_small_boxes(&clipped, cfg.min_size as f32).into_iter().filter(|&k| probs[k] >= cfg.score_threshold as f32).collect();
        let kb: Vec<[f32; 4]> = keep.iter().map(|&k| clipped[k]).collect();
        let ks: Vec<f32> = keep.iter().map(|&k| probs[k]).collect();
        let kl: Vec<u32> = keep.iter().map(|&k| chosen_level[k]).collect();
        let mut kept = batched_nms_rows(&kb, &ks, &kl, cfg.nms_threshold as f32);
        kept.truncate(post_n);
        let boxes: Vec<[f32; 4]> = kept.iter().map(|&k| kb[k]).collect();
        let scores: Vec<f32> = kept.iter().map(|&k| ks[k]).collect();
        result.push(Proposals { boxes: boxes_tensor(&boxes, device)?, scores: Tensor::from_vec(scores, kept.len(), device)? });
    }
    Ok(result)
}

/// Anchor labels for the RPN loss: 1 positive, 0 negative, -1 ignored, and
/// the matched ground truth of each positive.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorMatch {
    pub labels: Vec<i8>,
    pub matched_gt: Vec<Option<usize>>,
}

/// torchvision `Matcher(0.7, 0.3, allow_low_quality_matches=True)`: IoU ≥ fg
/// positive, < bg negative, in between ignored; for each ground truth the
/// anchors with its highest IoU are positive too (matched to their own best
/// ground truth). Unlike torchvision, a ground truth that overlaps no anchor
/// at all does not turn every zero-IoU anchor positive.
pub fn match_anchors(anchors: &[[f32; 4]], gt: &[[f32; 4]], fg_iou_threshold: f32, bg_iou_threshold: f32) -> AnchorMatch {
    let a = anchors.len();
    if gt.is_empty() {
        return AnchorMatch { labels: vec![0; a], matched_gt: vec![None; a] };
    }
    let overlaps = iou_matrix(gt, anchors); // (G, A)
    let mut best_gt = vec![0usize; a];
    let mut best_iou = vec![f32::NEG_INFINITY; a];
    for (g, row) in overlaps.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v > best_iou[j] {
                best_iou[j] = v;
                best_gt[j] = g;
            }
        }
    }
    let mut labels: Vec<i8> = best_iou
        .iter()
        .map(|&v| {
            if v >= fg_iou_threshold {
                1
            } else if v < bg_iou_threshold {
                0
            } else {
                -1
            }
        })
        .collect();
    for row in &overlaps {
        let highest = row.iter().copied().fold(0f32, f32::max);
        if highest > 0.0 {
            for (j, &v) in row.iter().enumerate() {
                if v == highest {
                    labels[j] = 1;
                }
            }
        }
    }
    let matched_gt = (0..a).map(|j| (labels[j] == 1).then_some(best_gt[j])).collect();
    AnchorMatch { labels, matched_gt }
}

/// Balanced sampling (torchvision `BalancedPositiveNegativeSampler`): up to
/// `batch_size · positive_fraction` positives (label 1), the rest of the
/// batch negatives (label 0), drawn without replacement with a seeded RNG.
/// Returns (positives, negatives), each in ascending index order.
pub fn sample_balanced(labels: &[i8], batch_size: usize, positive_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut pos: Vec<usize> = (0..labels.len()).filter(|&j| labels[j] == 1).collect();
    let mut neg: Vec<usize> = (0..labels.len()).filter(|&j| labels[j] == 0).collect();
    let num_pos = ((batch_size as f64 * positive_fraction) as usize).min(pos.len());
    let num_neg = (batch_size - num_pos).min(neg.len());
    let mut rng = StdRng::seed_from_u64(seed);
    pos.shuffle(&mut rng);
    neg.shuffle(&mut rng);
    pos.truncate(num_pos);
    neg.truncate(num_neg);
    pos.sort_unstable();
    neg.sort_unstable();
    (pos, neg)
}

/// A per-image seed derived from the batch seed (SplitMix64 step), so that
/// images of a batch do not share their sample.
pub fn image_seed(seed: u64, image: usize) -> u64 {
    let mut z = seed.wrapping_add((image as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// RPN loss terms; both are means over the sampled anchors of the batch.
#[derive(Debug, Clone)]
pub struct RpnLoss {
    pub objectness: Tensor,
    pub box_regression: Tensor,
    pub num_positives: usize,
    pub num_negatives: usize,
}

impl RpnLoss {
    pub fn total(&self) -> Result<Tensor> {
        &self.objectness + &self.box_regression
    }
}

/// RPN training loss: anchors (all levels concatenated, (A, 4)) matched to
/// each image's ground-truth boxes (G, 4), `batch_size_per_image` anchors
/// sampled per image, BCE on their objectness, smooth L1 (beta 1/9) on the
/// positives' deltas summed and divided by the number of sampled anchors
/// (torchvision's normalisation). `seed` fixes the sampling.
pub fn rpn_loss(objectness: &Tensor, deltas: &Tensor, anchors: &Tensor, gt_boxes: &[Tensor], cfg: &RpnConfig, seed: u64) -> Result<RpnLoss> {
    let (n, a) = objectness.dims2()?;
    if deltas.dims() != [n, a, 4] {
        candle_core::bail!("rpn loss: objectness {:?} but deltas {:?} (expected ({n}, {a}, 4))", objectness.dims(), deltas.dims());
    }
    if gt_boxes.len() != n {
        candle_core::bail!("rpn loss: {n} images but {} ground-truth sets", gt_boxes.len());
    }
    let anchor_rows = box_rows(anchors)?;
    if anchor_rows.len() != a {
        candle_core::bail!("rpn loss: {a} predictions per image but {} anchors", anchor_rows.len());
    }
    let (dtype, device) = (objectness.dtype(), objectness.device());
    let mut sampled: Vec<u32> = Vec::new();
    let mut sampled_label: Vec<f32> = Vec::new();
    let mut pos_rows: Vec<u32> = Vec::new();
    let mut pos_gt: Vec<[f32; 4]> = Vec::new();
    let mut pos_anchor: Vec<[f32; 4]> = Vec::new();
    let mut num_negatives = 0;
    for (i, g) in gt_boxes.iter().enumerate() {
        let gt = box_rows(g)?;
        let m = match_anchors(&anchor_rows, &gt, cfg.fg_iou_threshold as f32, cfg.bg_iou_threshold as f32);
        let (pos, neg) = sample_balanced(&m.labels, cfg.batch_size_per_image, cfg.positive_fraction, image_seed(seed, i));
        num_negatives += neg.len();
        for &j in &pos {
            sampled.push((i * a + j) as u32);
            sampled_label.push(1.0);
            pos_rows.push((i * a + j) as u32);
            pos_gt.push(gt[m.matched_gt[j].expect("a positive anchor has a ground truth")]);
            pos_anchor.push(anchor_rows[j]);
        }
        for &j in &neg {
            sampled.push((i * a + j) as u32);
            sampled_label.push(0.0);
        }
    }
    let num_sampled = sampled.len();
    let num_positives = pos_rows.len();
    let objectness_loss = if num_sampled == 0 {
        (objectness.sum_all()? * 0.0)?
    } else {
        let idx = Tensor::from_vec(sampled, num_sampled, device)?;
        let logits = objectness.flatten_all()?.index_select(&idx, 0)?;
        let target = Tensor::from_vec(sampled_label, num_sampled, device)?.to_dtype(dtype)?;
        bce_with_logits(&logits, &target)?
    };
    let box_loss = if num_positives == 0 {
        (deltas.sum_all()? * 0.0)?
    } else {
        let idx = Tensor::from_vec(pos_rows, num_positives, device)?;
        let pred = deltas.reshape((n * a, 4))?.index_select(&idx, 0)?;
        let target = BoxCoder::rpn().encode(&boxes_tensor(&pos_gt, device)?.to_dtype(dtype)?, &boxes_tensor(&pos_anchor, device)?.to_dtype(dtype)?)?;
        // mean over 4·positives elements → sum / sampled anchors
        (smooth_l1(&pred, &target, cfg.smooth_l1_beta)? * (4.0 * num_positives as f64 / num_sampled as f64))?
    };
    Ok(RpnLoss { objectness: objectness_loss, box_regression: box_loss, num_positives, num_negatives })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::anchors::RpnAnchorConfig;
    use crate::models::blocks::testing::{det_tensor, gradcheck};
    use candle_core::Device;
    use candle_nn::VarMap;

    fn all_anchors(image: (usize, usize)) -> Result<Tensor> {
        let cfg = RpnAnchorConfig::default();
        Tensor::cat(&cfg.anchors(&cfg.grid_sizes(image), &Device::Cpu)?, 0)
    }

    #[test]
    fn target_counts() -> Result<()> {
        let anchors = box_rows(&all_anchors((64, 64))?)?;
        assert_eq!(anchors.len(), 1023);
        // gt centred at (26, 26), 32 wide: the four P2 square anchors centred at 24 or 28
        // ([8,8,40,40] etc.) have IoU 900 / 1148 = 0.78; nothing else reaches 0.7
        let m = match_anchors(&anchors, &[[10., 10., 42., 42.]], 0.7, 0.3);
        let pos: Vec<usize> = (0..anchors.len()).filter(|&j| m.labels[j] == 1).collect();
        assert_eq!(pos.len(), 4);
        for &j in &pos {
            let b = anchors[j];
            assert!((b[2] - b[0] - 32.0).abs() < 1e-6 && [24.0, 28.0].contains(&((b[0] + b[2]) / 2.0)));
            assert_eq!(m.matched_gt[j], Some(0));
        }
        let neg = m.labels.iter().filter(|&&l| l == 0).count();
        let ignored = m.labels.iter().filter(|&&l| l == -1).count();
        assert!(ignored > 0 && pos.len() + neg + ignored == 1023);
        let (sp, sn) = sample_balanced(&m.labels, 256, 0.5, 7);
        assert_eq!((sp.len(), sn.len()), (4, 252));
        assert!(sn.iter().all(|&j| m.labels[j] == 0));
        // deterministic for a seed, different for another
        assert_eq!(sample_balanced(&m.labels, 256, 0.5, 7), (sp.clone(), sn.clone()));
        assert_ne!(sample_balanced(&m.labels, 256, 0.5, 8).1, sn);
        // many positives: capped at half the batch
        let labels: Vec<i8> = (0..1000).map(|j| if j < 400 { 1 } else { 0 }).collect();
        let (p, n) = sample_balanced(&labels, 256, 0.5, 1);
        assert_eq!((p.len(), n.len()), (128, 128));
        // a small gt below 0.7 everywhere still gets its best anchor(s)
        let m = match_anchors(&anchors, &[[0., 0., 12., 6.]], 0.7, 0.3);
        assert!(m.labels.iter().any(|&l| l == 1));
        // no gt: everything negative
        assert!(match_anchors(&anchors, &[], 0.7, 0.3).labels.iter().all(|&l| l == 0));
        Ok(())
    }

    #[test]
    fn head_and_proposal_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let head = RpnHead::load(vb, 8, 3)?;
        let acfg = RpnAnchorConfig::default();
        let grids = acfg.grid_sizes((64, 64));
        let feats: Vec<Tensor> =
            grids.iter().enumerate().map(|(l, &(h, w))| det_tensor(&[2, 8, h, w], 60 + l as u64).to_dtype(DType::F32)).collect::<Result<_>>()?;
        let out = head.forward(&feats)?;
        assert_eq!(out.objectness.dims(), &[2, 1023]);
        assert_eq!(out.deltas.dims(), &[2, 1023, 4]);
        assert_eq!(out.level_counts, vec![768, 192, 48, 12, 3]);
        // flattening order: row 3·(y·16 + x) + a of level 0 is channel a at (y, x)
        let (o0, d0) = head.forward_level(&feats[0])?;
        let (y, x, a) = (5, 9, 2);
        let row = 3 * (y * 16 + x) + a;
        let want = o0.get(1)?.get(a)?.get(y)?.get(x)?.to_scalar::<f32>()?;
        assert_eq!(out.objectness.get(1)?.get(row)?.to_scalar::<f32>()?, want);
        // deltas: channel 4a + k; (a 1, k 2) tells the (A, 4) split from a (4, A) one
        let (a, k) = (1, 2);
        let row = 3 * (y * 16 + x) + a;
        let want_d = d0.get(1)?.get(4 * a + k)?.get(y)?.get(x)?.to_scalar::<f32>()?;
        assert_eq!(out.deltas.get(1)?.get(row)?.get(k)?.to_scalar::<f32>()?, want_d);

        let anchors = acfg.anchors(&grids, &dev)?;
        let cfg = RpnConfig { pre_nms_top_n_test: 10, post_nms_top_n_test: 20, ..RpnConfig::default() };
        let props = generate_proposals(&out, &anchors, &[(64, 64), (60, 50)], &cfg, false)?;
        assert_eq!(props.len(), 2);
        for (p, &(h, w)) in props.iter().zip(&[(64usize, 64usize), (60, 50)]) {
            let k = p.boxes.dims2()?.0;
            // at most 10 per level from 4 levels plus the 3 anchors of P6, then post-NMS 20
            assert!(k > 0 && k <= 20, "{k} proposals");
            assert_eq!(p.scores.dims(), &[k]);
            let s: Vec<f32> = p.scores.to_vec1()?;
            assert!(s.windows(2).all(|v| v[0] >= v[1]));
            for b in box_rows(&p.boxes)? {
                assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f32 && b[3] <= h as f32 && b[2] > b[0] && b[3] > b[1]);
            }
        }
        assert!(generate_proposals(&out, &anchors[..4], &[(64, 64), (64, 64)], &cfg, false).is_err());
        Ok(())
    }

    #[test]
    fn head_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let head = RpnHead::load(VarBuilder::from_varmap(&varmap, DType::F64, &dev), 2, 3)?;
        // the N(0, 0.01) init makes every output tiny; larger weights test the same graph more sharply
        for v in varmap.all_vars() {
            let shape = v.dims().to_vec();
            v.set(&det_tensor(&shape, shape.iter().product::<usize>() as u64))?;
        }
        let x = det_tensor(&[1, 2, 3, 4], 73);
        let small = det_tensor(&[1, 2, 2, 2], 74);
        let wo = det_tensor(&[1, 3 * 12 + 3 * 4], 75);
        let wd = det_tensor(&[1, 3 * 12 + 3 * 4, 4], 76);
        let f = |x: &Tensor| -> Result<Tensor> {
            let out = head.forward(&[x.clone(), small.clone()])?;
            (out.objectness * &wo)?.sum_all()? + (out.deltas * &wd)?.sum_all()?
        };
        // ReLU kinks: inputs where a pre-activation is within eps of 0 would break this; these are not
        assert!(gradcheck(&x, f)? < 1e-6);
        Ok(())
    }

    #[test]
    fn loss_gradients_and_value() -> Result<()> {
        let dev = Device::Cpu;
        let anchors = all_anchors((32, 32))?;
        let a = anchors.dims2()?.0;
        assert_eq!(a, (64 + 16 + 4 + 1 + 1) * 3);
        let gt = vec![boxes_tensor(&[[4., 4., 20., 20.], [10., 12., 30., 31.]], &dev)?, boxes_tensor(&[[0., 16., 16., 32.]], &dev)?];
        let cfg = RpnConfig { batch_size_per_image: 32, ..RpnConfig::default() };
        let obj = det_tensor(&[2, a], 71);
        let deltas = det_tensor(&[2, a, 4], 72);
        let l = rpn_loss(&obj, &deltas, &anchors, &gt, &cfg, 3)?;
        assert!(l.num_positives > 0 && l.num_positives + l.num_negatives == 64);
        assert!(gradcheck(&obj, |o| rpn_loss(o, &deltas, &anchors, &gt, &cfg, 3)?.total())? < 1e-5);
        assert!(gradcheck(&deltas, |d| rpn_loss(&obj, d, &anchors, &gt, &cfg, 3)?.total())? < 1e-5);
        // hand value: zero logits give BCE ln 2; deltas equal to the targets give box loss 0
        let zero = Tensor::zeros((2, a), DType::F64, &dev)?;
        let z = Tensor::zeros((2, a, 4), DType::F64, &dev)?;
        let l = rpn_loss(&zero, &z, &anchors, &[boxes_tensor(&[], &dev)?.reshape((0, 4))?, boxes_tensor(&[], &dev)?.reshape((0, 4))?], &cfg, 3)?;
        assert!((l.objectness.to_scalar::<f64>()? - 2f64.ln()).abs() < 1e-12);
        assert_eq!((l.num_positives, l.box_regression.to_scalar::<f64>()?), (0, 0.0));
        Ok(())
    }
}
