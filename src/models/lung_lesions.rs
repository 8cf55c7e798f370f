//! Mask R-CNN of the lung-lesions analysis (MODELS.md 2, seeds/001): ResNet-50
//! trunk, FPN P2-P6, RPN with anchors on every level, RoIAlign on the level
//! chosen by box size, and the three jointly trained heads (softmax class,
//! smooth-L1 box, 28x28 per-pixel BCE mask), then score threshold + NMS.
//! Layout and defaults follow torchvision's `maskrcnn_resnet50_fpn`; widths
//! are scaled by config so that the shipped weights train on a CPU
//! (`MaskRcnnConfig::full()` is the published size).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::blocks::anchors::RpnAnchorConfig;
use super::blocks::boxes::{box_rows, boxes_tensor, Annotations};
use super::blocks::conv::{Conv2d, ConvConfig, Pointwise};
use super::blocks::fpn::Fpn;
use super::blocks::postprocess::{roi_head_detections, DetectionConfig};
use super::blocks::resnet::{ResNet, ResNetConfig};
use super::blocks::roi_align::{
    multiscale_roi_align, paste_mask_probabilities, roi_head_targets, rois_from_boxes, MultiScaleRoiAlignConfig, RoiAlignConfig, RoiHeadTargetConfig,
};
use super::blocks::roi_loss::{fast_rcnn_loss, mask_rcnn_loss, RoiLossConfig};
use super::blocks::rpn::{generate_proposals, image_seed, rpn_loss, RpnConfig, RpnHead};
use crate::imaging::components::components;

/// Everything that fixes the network's shape, its training targets and its
/// post-processing. Stored in the weights' JSON; loading compares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskRcnnConfig {
    /// Class names without background; label k + 1 is class k.
    pub classes: Vec<String>,
    /// Input channels (1: a windowed CT slice).
    pub in_channels: usize,
    /// ResNet-50 widths are multiplied by this (1.0 = torchvision).
    pub width_mult: f64,
    /// FPN output channels (torchvision: 256).
    pub fpn_channels: usize,
    /// Box head MLP width (torchvision: 1024).
    pub representation_size: usize,
    /// Mask head conv width (torchvision: 256).
    pub mask_head_channels: usize,
    /// RPN anchor side per level P2..P6, input pixels (torchvision: 32..512 for ~800 px inputs).
    pub anchor_sizes: Vec<f64>,
    pub aspect_ratios: Vec<f64>,
    pub rpn_pre_nms_top_n_train: usize,
    pub rpn_pre_nms_top_n_test: usize,
    pub rpn_post_nms_top_n_train: usize,
    pub rpn_post_nms_top_n_test: usize,
    pub rpn_nms_threshold: f64,
    /// Anchors sampled per image for the RPN loss (torchvision: 256).
    pub rpn_batch_size_per_image: usize,
    /// Proposals sampled per image for the ROI heads (torchvision: 512).
    pub roi_batch_size_per_image: usize,
    /// Foreground share of those (torchvision: 0.25).
    pub roi_positive_fraction: f64,
    /// Detections need a class probability above this (torchvision: 0.05).
    pub score_threshold: f64,
    /// Per-class NMS IoU of the detections (torchvision: 0.5).
    pub nms_threshold: f64,
    pub detections_per_image: usize,
    /// Pasted mask probabilities ≥ this are the instance (torchvision: 0.5).
    pub mask_threshold: f64,
}

impl Default for MaskRcnnConfig {
    /// The shipped CPU-trainable size: widths 1/4 of torchvision's, anchors
    /// halved for the 384 px input, fewer proposals per image.
    fn default() -> Self {
        MaskRcnnConfig {
            classes: vec!["ground-glass opacity".into(), "consolidation".into()],
            in_channels: 1,
            width_mult: 0.25,
            fpn_channels: 64,
            representation_size: 256,
            mask_head_channels: 64,
            anchor_sizes: vec![16.0, 32.0, 64.0, 128.0, 256.0],
            aspect_ratios: vec![0.5, 1.0, 2.0],
            rpn_pre_nms_top_n_train: 1000,
            rpn_pre_nms_top_n_test: 500,
            rpn_post_nms_top_n_train: 500,
            rpn_post_nms_top_n_test: 300,
            rpn_nms_threshold: 0.7,
            rpn_batch_size_per_image: 256,
            roi_batch_size_per_image: 128,
            roi_positive_fraction: 0.25,
            score_threshold: 0.05,
            nms_threshold: 0.5,
            detections_per_image: 100,
            mask_threshold: 0.5,
        }
    }
}

impl MaskRcnnConfig {
    /// torchvision `maskrcnn_resnet50_fpn` at full width.
    pub fn full() -> MaskRcnnConfig {
        MaskRcnnConfig {
            width_mult: 1.0,
            fpn_channels: 256,
            representation_size: 1024,
            mask_head_channels: 256,
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            rpn_pre_nms_top_n_train: 2000,
            rpn_pre_nms_top_n_test: 1000,
            rpn_post_nms_top_n_train: 2000,
            rpn_post_nms_top_n_test: 1000,
            roi_batch_size_per_image: 512,
            ..MaskRcnnConfig::default()
        }
    }

    /// Labels including background.
    pub fn num_classes(&self) -> usize {
        self.classes.len() + 1
    }

    pub fn validate(&self) -> Result<()> {
        if self.classes.is_empty() {
            candle_core::bail!("lung-lesions: `classes` is empty");
        }
        if self.anchor_sizes.len() != 5 || self.aspect_ratios.is_empty() {
            candle_core::bail!("lung-lesions: `anchor_sizes` needs one size per level P2..P6 (5), got {}", self.anchor_sizes.len());
        }
        if self.width_mult <= 0.0 || self.fpn_channels == 0 || self.representation_size == 0 || self.mask_head_channels == 0 {
            candle_core::bail!("lung-lesions: widths must be positive");
        }
        for (name, v) in [("score_threshold", self.score_threshold), ("nms_threshold", self.nms_threshold), ("mask_threshold", self.mask_threshold)] {
            if !(0.0..=1.0).contains(&v) {
                candle_core::bail!("lung-lesions: `{name}` {v} is outside 0..1");
            }
        }
        Ok(())
    }

    fn anchors(&self) -> RpnAnchorConfig {
        RpnAnchorConfig { sizes: self.anchor_sizes.clone(), strides: vec![4, 8, 16, 32, 64], aspect_ratios: self.aspect_ratios.clone() }
    }

    fn rpn(&self) -> RpnConfig {
        RpnConfig {
            pre_nms_top_n_train: self.rpn_pre_nms_top_n_train,
            pre_nms_top_n_test: self.rpn_pre_nms_top_n_test,
            post_nms_top_n_train: self.rpn_post_nms_top_n_train,
            post_nms_top_n_test: self.rpn_post_nms_top_n_test,
            nms_threshold: self.rpn_nms_threshold,
            batch_size_per_image: self.rpn_batch_size_per_image,
            ..RpnConfig::default()
        }
    }

    fn roi_targets(&self) -> RoiHeadTargetConfig {
        RoiHeadTargetConfig { batch_size_per_image: self.roi_batch_size_per_image, positive_fraction: self.roi_positive_fraction, ..Default::default() }
    }

    fn detection(&self) -> DetectionConfig {
        DetectionConfig {
            score_threshold: self.score_threshold,
            nms_threshold: self.nms_threshold,
            max_detections: self.detections_per_image,
            ..DetectionConfig::mask_rcnn()
        }
    }
}

/// The source's S1 (MODELS.md 2): a lung window, then a fixed mean and
/// standard deviation. The window maps HU onto [0, 1]; the training slices
/// come already windowed as 8-bit grey (read as v / 255), so the window for
/// DICOM input is the one that reproduces their grey levels: matching the
/// 25th / 75th and 5th / 95th intensity percentiles of the lung-medseg
/// training slices to those of a real chest CT cropped the same way gives
/// [-1140, 390] to [-1160, 500] HU, i.e. level -350, width 1550 (the common
/// lung window -600 / 1500 makes normal lung as bright as ground glass is in
/// the training slices). The mean and standard deviation are those of the
/// training slices on that scale (the source lost its numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LungPreprocessConfig {
    /// Window centre and width in HU.
    pub window_level: f64,
    pub window_width: f64,
    pub mean: f64,
    pub std: f64,
    /// Side of the square network input; a slice is letterboxed into it.
    pub input_size: usize,
}

impl Default for LungPreprocessConfig {
    fn default() -> Self {
        LungPreprocessConfig { window_level: -350.0, window_width: 1550.0, mean: 0.524, std: 0.310, input_size: 384 }
    }
}

impl LungPreprocessConfig {
    /// HU → [0, 1] through the lung window.
    pub fn window(&self, hu: f32) -> f32 {
        let lo = self.window_level - self.window_width / 2.0;
        (((hu as f64 - lo) / self.window_width).clamp(0.0, 1.0)) as f32
    }

    /// [0, 1] values → network input, in place.
    pub fn normalise(&self, values: &mut [f32]) {
        let (m, s) = (self.mean as f32, self.std as f32);
        values.iter_mut().for_each(|v| *v = (*v - m) / s);
    }
}

/// Ground truth of one training image: one box, label and binary mask
/// (input resolution) per instance.
#[derive(Debug, Clone)]
pub struct InstanceTargets {
    pub annotations: Annotations,
    /// (G, H, W) f32 0/1.
    pub masks: Tensor,
}

/// One detected instance in input pixels.
#[derive(Debug, Clone)]
pub struct Instance {
    pub bbox: [f32; 4],
    pub score: f32,
    /// 1-based class label.
    pub label: u32,
    /// (H, W) mask probabilities pasted into the input frame.
    pub mask: Vec<f32>,
}

/// The loss terms of one step (each a scalar; `total` is their sum).
#[derive(Debug, Clone)]
pub struct MaskRcnnLoss {
    pub rpn_objectness: Tensor,
    pub rpn_box: Tensor,
    pub classifier: Tensor,
    pub box_regression: Tensor,
    pub mask: Tensor,
}

impl MaskRcnnLoss {
    pub fn total(&self) -> Result<Tensor> {
        &self.rpn_objectness + &self.rpn_box + &self.classifier + &self.box_regression + &self.mask
    }
}

/// torchvision `TwoMLPHead` + `FastRCNNPredictor`.
struct BoxHead {
    fc6: Linear,
    fc7: Linear,
    cls_score: Linear,
    bbox_pred: Linear,
}

impl BoxHead {
    fn load(vb: VarBuilder, in_features: usize, representation: usize, classes: usize) -> Result<BoxHead> {
        Ok(BoxHead {
            fc6: candle_nn::linear(in_features, representation, vb.pp("box_head.fc6"))?,
            fc7: candle_nn::linear(representation, representation, vb.pp("box_head.fc7"))?,
            cls_score: candle_nn::linear(representation, classes, vb.pp("box_predictor.cls_score"))?,
            bbox_pred: candle_nn::linear(representation, 4 * classes, vb.pp("box_predictor.bbox_pred"))?,
        })
    }

    /// (class logits (K, C), box deltas (K, 4C)) from pooled (K, ch, 7, 7).
    fn forward(&self, pooled: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.fc7.forward(&self.fc6.forward(&pooled.flatten_from(1)?)?.relu()?)?.relu()?;
        Ok((self.cls_score.forward(&x)?, self.bbox_pred.forward(&x)?))
    }
}

/// torchvision `MaskRCNNHeads` (four 3x3 conv + ReLU) + `MaskRCNNPredictor`
/// (2x2 stride-2 transposed conv + ReLU, 1x1 to one logit map per class).
/// The transposed conv with kernel = stride = 2 is a 1x1 conv to 4x the
/// channels followed by a depth-to-space shuffle: each output pixel reads
/// exactly one input pixel, so the two are the same function.
struct MaskHead {
    convs: Vec<Conv2d>,
    deconv: Pointwise,
    logits: Pointwise,
    channels: usize,
}

impl MaskHead {
    fn load(vb: VarBuilder, in_c: usize, channels: usize, classes: usize) -> Result<MaskHead> {
        let mut convs = Vec::with_capacity(4);
        let mut c = in_c;
        for i in 0..4 {
            convs.push(Conv2d::load(vb.pp(format!("mask_head.{i}")), c, channels, ConvConfig::same(3, 1, 1, true))?);
            c = channels;
        }
        Ok(MaskHead {
            convs,
            deconv: Pointwise::load(vb.pp("mask_predictor.conv5_mask"), channels, 4 * channels, true)?,
            logits: Pointwise::load(vb.pp("mask_predictor.mask_fcn_logits"), channels, classes, true)?,
            channels,
        })
    }

    /// (P, classes, 2S, 2S) logits from pooled (P, ch, S, S).
    fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let mut x = pooled.clone();
        for c in &self.convs {
            x = c.forward_relu(&x)?;
        }
        let (p, _, h, w) = x.dims4()?;
        // (P, 4C, H, W), channel = c·4 + dy·2 + dx; the ReLU commutes with the shuffle
        let y = self.deconv.forward_relu(&x)?;
        let y = y.reshape((p, self.channels, 2, 2, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((p, self.channels, 2 * h, 2 * w))?;
        self.logits.forward(&y)
    }
}

pub struct MaskRcnn {
    backbone: ResNet,
    fpn: Fpn,
    rpn: RpnHead,
    box_head: BoxHead,
    mask_head: MaskHead,
    cfg: MaskRcnnConfig,
}

/// RoIAlign settings of the two heads: 7x7 for boxes, 14x14 for masks, P2..P5.
fn roi_pool(size: usize) -> MultiScaleRoiAlignConfig {
    MultiScaleRoiAlignConfig { roi: RoiAlignConfig { output_size: (size, size), spatial_scale: 1.0, sampling_ratio: 2, aligned: false }, ..Default::default() }
}

impl MaskRcnn {
    pub fn load(vb: VarBuilder, cfg: &MaskRcnnConfig) -> Result<MaskRcnn> {
        cfg.validate()?;
        let rcfg = ResNetConfig::resnet50(cfg.in_channels).with_width(cfg.width_mult);
        let backbone = ResNet::load(vb.pp("backbone.body"), &rcfg)?;
        let fpn = Fpn::load(vb.pp("backbone.fpn"), backbone.stage_channels(), cfg.fpn_channels, true)?;
        let rpn = RpnHead::load(vb.pp("rpn.head"), cfg.fpn_channels, cfg.aspect_ratios.len())?;
        let heads = vb.pp("roi_heads");
        let box_head = BoxHead::load(heads.clone(), cfg.fpn_channels * 49, cfg.representation_size, cfg.num_classes())?;
        let mask_head = MaskHead::load(heads, cfg.fpn_channels, cfg.mask_head_channels, cfg.num_classes())?;
        Ok(MaskRcnn { backbone, fpn, rpn, box_head, mask_head, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &MaskRcnnConfig {
        &self.cfg
    }

    /// P2..P6 (finest first) for images (N, in_channels, H, W).
    fn features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        self.fpn.forward(&self.backbone.forward_stages(x, train)?)
    }

    fn anchors(&self, features: &[Tensor]) -> Result<Vec<Tensor>> {
        let grids: Vec<(usize, usize)> = features.iter().map(|f| (f.dims()[2], f.dims()[3])).collect();
        self.cfg.anchors().anchors(&grids, features[0].device())
    }

    /// The summed losses of the RPN and the three ROI heads (torchvision's
    /// training mode) for a batch and its ground truth. `seed` fixes the
    /// anchor and proposal sampling.
    pub fn loss(&self, x: &Tensor, targets: &[InstanceTargets], seed: u64) -> Result<MaskRcnnLoss> {
        let (n, _, h, w) = x.dims4()?;
        if targets.len() != n {
            candle_core::bail!("lung-lesions loss: {n} images but {} target sets", targets.len());
        }
        let feats = self.features(x, true)?;
        let anchors = self.anchors(&feats)?;
        let rpn_out = self.rpn.forward(&feats)?;
        let rcfg = self.cfg.rpn();
        let gt_boxes: Vec<Tensor> = targets.iter().map(|t| t.annotations.boxes.clone()).collect();
        let rpn = rpn_loss(&rpn_out.objectness, &rpn_out.deltas, &Tensor::cat(&anchors, 0)?, &gt_boxes, &rcfg, seed)?;
        let proposals = generate_proposals(&rpn_out, &anchors, &vec![(h, w); n], &rcfg, true)?;

        let tcfg = self.cfg.roi_targets();
        let roi_targets = proposals
            .iter()
            .zip(targets)
            .enumerate()
            .map(|(i, (p, t))| roi_head_targets(&p.boxes, &t.annotations, Some(&t.masks), &tcfg, image_seed(seed ^ 0x5eed, i)))
            .collect::<Result<Vec<_>>>()?;
        let pyramid = &feats[..4];
        let rois = rois_from_boxes(&roi_targets.iter().map(|t| t.proposals.clone()).collect::<Vec<_>>())?;
        let (class_logits, box_regression) = self.box_head.forward(&multiscale_roi_align(pyramid, &rois, &roi_pool(7))?)?;
        let (classifier, box_loss) = fast_rcnn_loss(&class_logits, &box_regression, &roi_targets, &RoiLossConfig::default())?;

        // mask head on the foreground proposals only
        let positives: Vec<Tensor> = roi_targets
            .iter()
            .map(|t| {
                let rows = box_rows(&t.proposals)?;
                let fg: Vec<[f32; 4]> = t.positive_rows.iter().map(|&k| rows[k]).collect();
                if fg.is_empty() {
                    Tensor::zeros((0, 4), DType::F32, x.device())
                } else {
                    boxes_tensor(&fg, x.device())
                }
            })
            .collect::<Result<_>>()?;
        let mask = if positives.iter().all(|p| p.dims()[0] == 0) {
            // no foreground anywhere: the mask head gets no gradient this step
            (class_logits.sum_all()? * 0.0)?
        } else {
            let logits = self.mask_head.forward(&multiscale_roi_align(pyramid, &rois_from_boxes(&positives)?, &roi_pool(14))?)?;
            mask_rcnn_loss(&logits, &roi_targets)?
        };
        Ok(MaskRcnnLoss { rpn_objectness: rpn.objectness, rpn_box: rpn.box_regression, classifier, box_regression: box_loss, mask })
    }

    /// Inference: per image the detections above the score threshold after
    /// per-class NMS, each with its mask pasted into the input frame.
    pub fn detect(&self, x: &Tensor) -> Result<Vec<Vec<Instance>>> {
        let (n, _, h, w) = x.dims4()?;
        let feats = self.features(x, false)?;
        let anchors = self.anchors(&feats)?;
        let rpn_out = self.rpn.forward(&feats)?;
        let proposals = generate_proposals(&rpn_out, &anchors, &vec![(h, w); n], &self.cfg.rpn(), false)?;
        let pyramid = &feats[..4];
        let mut out = Vec::with_capacity(n);
        for (i, p) in proposals.iter().enumerate() {
            if p.boxes.dims()[0] == 0 {
                out.push(Vec::new());
                continue;
            }
            let image_feats: Vec<Tensor> = pyramid.iter().map(|f| f.narrow(0, i, 1)).collect::<Result<_>>()?;
            let rois = rois_from_boxes(std::slice::from_ref(&p.boxes))?;
            let (logits, deltas) = self.box_head.forward(&multiscale_roi_align(&image_feats, &rois, &roi_pool(7))?)?;
            let dets = roi_head_detections(&logits, &deltas, &p.boxes, (h, w), RoiHeadTargetConfig::default().box_weights, &self.cfg.detection())?;
            if dets.is_empty() {
                out.push(Vec::new());
                continue;
            }
            let boxes: Vec<[f32; 4]> = dets.iter().map(|d| d.bbox).collect();
            let det_rois = rois_from_boxes(&[boxes_tensor(&boxes, x.device())?])?;
            let masks = candle_nn::ops::sigmoid(&self.mask_head.forward(&multiscale_roi_align(&image_feats, &det_rois, &roi_pool(14))?)?)?;
            let mut instances = Vec::with_capacity(dets.len());
            for (k, d) in dets.iter().enumerate() {
                let own = masks.get(k)?.get(d.label as usize)?;
                let pasted = paste_mask_probabilities(&own, d.bbox, (h, w))?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
                instances.push(Instance { bbox: d.bbox, score: d.score, label: d.label, mask: pasted });
            }
            out.push(instances);
        }
        Ok(out)
    }
}

/// A per-pixel label map (0 = background) from instances on an (H, W)
/// frame: each pixel takes the label of the highest-scoring instance whose
/// mask probability there reaches `threshold`.
pub fn label_map(instances: &[Instance], hw: (usize, usize), threshold: f64) -> Vec<u8> {
    let mut labels = vec![0u8; hw.0 * hw.1];
    let mut best = vec![f32::NEG_INFINITY; hw.0 * hw.1];
    for inst in instances {
        for (p, &m) in inst.mask.iter().enumerate() {
            if m as f64 >= threshold && inst.score > best[p] {
                best[p] = inst.score;
                labels[p] = inst.label as u8;
            }
        }
    }
    labels
}

/// Instance targets from a label map (H, W) of class values (0 = background,
/// k = class k): one instance per 8-connected component of each class with
/// at least `min_pixels` pixels; the box encloses the component's pixels.
pub fn instances_from_label_map(labels: &[u8], hw: (usize, usize), num_classes: usize, min_pixels: usize, device: &Device) -> Result<InstanceTargets> {
    let (h, w) = hw;
    let mut boxes = Vec::new();
    let mut classes = Vec::new();
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let found = components([w, h, 1], |p| (labels[p] > 0 && (labels[p] as usize) < num_classes).then_some(labels[p]));
    for (cls, pixels) in found {
        if pixels.len() < min_pixels {
            continue;
        }
        let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        let mut plane = vec![0f32; h * w];
        for &p in &pixels {
            let (y, x) = ((p / w) as f32, (p % w) as f32);
            b = [b[0].min(x), b[1].min(y), b[2].max(x + 1.0), b[3].max(y + 1.0)];
            plane[p] = 1.0;
        }
        boxes.push(b);
        classes.push(cls as u32);
        planes.push(plane);
    }
    let g = boxes.len();
    let (boxes, masks) = if g == 0 {
        (Tensor::zeros((0, 4), DType::F32, device)?, Tensor::zeros((0, h, w), DType::F32, device)?)
    } else {
        (boxes_tensor(&boxes, device)?, Tensor::from_vec(planes.concat(), (g, h, w), device)?)
    };
    Ok(InstanceTargets { annotations: Annotations { boxes, labels: classes }, masks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn tiny() -> MaskRcnnConfig {
        MaskRcnnConfig {
            width_mult: 0.0625,
            fpn_channels: 8,
            representation_size: 16,
            mask_head_channels: 8,
            rpn_pre_nms_top_n_train: 200,
            rpn_post_nms_top_n_train: 100,
            rpn_pre_nms_top_n_test: 100,
            rpn_post_nms_top_n_test: 50,
            roi_batch_size_per_image: 32,
            score_threshold: 0.0,
            ..MaskRcnnConfig::default()
        }
    }

    #[test]
    fn components_become_instances() -> Result<()> {
        // 8 x 8: a class-1 L shape (diagonal contact joins), a class-2 block, a lone class-1 pixel
        let mut l = vec![0u8; 64];
        for p in [9, 10, 18, 27] {
            l[p] = 1;
        }
        for y in 5..7 {
            for x in 4..8 {
                l[y * 8 + x] = 2;
            }
        }
        l[7] = 1;
        let t = instances_from_label_map(&l, (8, 8), 3, 2, &Device::Cpu)?;
        assert_eq!(t.annotations.labels, vec![1, 2]);
        assert_eq!(box_rows(&t.annotations.boxes)?, vec![[1., 1., 4., 4.], [4., 5., 8., 7.]]);
        let m: Vec<f32> = t.masks.get(0)?.flatten_all()?.to_vec1()?;
        assert_eq!(m.iter().sum::<f32>(), 4.0);
        assert_eq!(m[7], 0.0, "the lone pixel is below min_pixels");
        let all = instances_from_label_map(&l, (8, 8), 3, 1, &Device::Cpu)?;
        assert_eq!(all.annotations.labels.len(), 3);
        Ok(())
    }

    #[test]
    fn label_map_prefers_the_higher_score() {
        let a = Instance { bbox: [0.; 4], score: 0.9, label: 1, mask: vec![0.8, 0.8, 0.1, 0.0] };
        let b = Instance { bbox: [0.; 4], score: 0.6, label: 2, mask: vec![0.0, 0.9, 0.9, 0.4] };
        assert_eq!(label_map(&[b.clone(), a.clone()], (2, 2), 0.5), vec![1, 1, 2, 0]);
        assert_eq!(label_map(&[a, b], (2, 2), 0.3), vec![1, 1, 2, 2]);
    }

    #[test]
    fn pixel_shuffle_is_a_transposed_conv() -> Result<()> {
        // deconv weights picked so that output (2i+dy, 2j+dx) of channel c = x(i, j) · (1 + dy·2 + dx) + 10·c
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let head = MaskHead::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), 1, 2, 2)?;
        let mut w = vec![0f32; 8 * 2];
        let mut b = vec![0f32; 8];
        for c in 0..2 {
            for k in 0..4 {
                w[(c * 4 + k) * 2 + c] = 1.0 + k as f32;
                b[c * 4 + k] = 10.0 * c as f32;
            }
        }
        let data = vm.data().lock().unwrap();
        data["mask_predictor.conv5_mask.weight"].set(&Tensor::from_vec(w, (8, 2, 1, 1), &dev)?)?;
        data["mask_predictor.conv5_mask.bias"].set(&Tensor::from_vec(b, 8, &dev)?)?;
        drop(data);
        let x = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6., 7., 8.], (1, 2, 2, 2), &dev)?;
        let y = head.deconv.forward(&x)?;
        let (p, _, h, wd) = y.dims4()?;
        let s = y.reshape((p, 2, 2, 2, h, wd))?.permute((0, 1, 4, 2, 5, 3))?.reshape((p, 2, 4, 4))?;
        let v: Vec<Vec<f32>> = s.get(0)?.get(1)?.to_vec2()?;
        // channel 1, input (0, 1) = 6: output rows 0..2, cols 2..4 = 6·[1 2; 3 4] + 10
        assert_eq!(&v[0][2..4], &[16., 22.]);
        assert_eq!(&v[1][2..4], &[28., 34.]);
        Ok(())
    }

    #[test]
    fn trains_and_detects_at_a_small_size() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = tiny();
        let net = MaskRcnn::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg)?;
        crate::models::init::seeded_init(&vm, 3)?;
        let x = (Tensor::arange(0f32, (2 * 64 * 64) as f32, &dev)?.reshape((2, 1, 64, 64))? / 8192.0)?;
        let mut l = vec![0u8; 64 * 64];
        for y in 10..30 {
            for x in 12..40 {
                l[y * 64 + x] = 1;
            }
        }
        let t = instances_from_label_map(&l, (64, 64), 3, 1, &dev)?;
        let empty = instances_from_label_map(&[0u8; 64 * 64], (64, 64), 3, 1, &dev)?;
        let loss = net.loss(&x, &[t, empty], 1)?;
        let total = loss.total()?;
        assert!(total.to_scalar::<f32>()?.is_finite());
        let grads = total.backward()?;
        let with_grad = vm.all_vars().iter().filter(|v| grads.get(v.as_tensor()).is_some()).count();
        // every trainable tensor gets a gradient (running statistics do not)
        let trainable = vm.data().lock().unwrap().keys().filter(|k| !k.contains("running")).count();
        assert_eq!(with_grad, trainable);
        let dets = net.detect(&x)?;
        assert_eq!(dets.len(), 2);
        for d in dets.iter().flatten() {
            assert_eq!(d.mask.len(), 64 * 64);
            assert!((1..=2).contains(&d.label));
        }
        Ok(())
    }

    #[test]
    fn heads_pool_the_level_of_the_box_size() -> Result<()> {
        // P2..P5 hold f = x (feature column) + 1000·level; a 56 px box sits on P2
        // (FPN eq. 1: 4 + log2(56 / 224) = 2), a 224 px box on P4
        let dev = Device::Cpu;
        let maps: Vec<Tensor> = (2..=5)
            .map(|l| {
                let side = 256 >> l;
                let v: Vec<f32> = (0..side * side).map(|p| (p % side) as f32 + 1000.0 * l as f32).collect();
                Tensor::from_vec(v, (1, 1, side, side), &dev)
            })
            .collect::<Result<_>>()?;
        let rois = Tensor::new(&[[0f32, 8., 8., 64., 64.], [0., 16., 16., 240., 240.]], &dev)?;
        let out = multiscale_roi_align(&maps, &rois, &roi_pool(7))?;
        assert_eq!(out.dims(), &[2, 1, 7, 7]);
        let v: Vec<Vec<f32>> = out.get(0)?.get(0)?.to_vec2()?;
        // not aligned (torchvision's Mask R-CNN): bin p of the P2 box covers x = 2 + (p + 0.5) · 2 in feature units
        for (p, got) in v[3].iter().enumerate() {
            assert!((got - (2000.0 + 2.0 + (p as f32 + 0.5) * 2.0)).abs() < 1e-4, "{p}: {got}");
        }
        let w: Vec<Vec<f32>> = out.get(1)?.get(0)?.to_vec2()?;
        assert!((w[0][0] - (4000.0 + 1.0 + 0.5 * 14.0 / 7.0)).abs() < 1e-4, "{}", w[0][0]);
        Ok(())
    }

    #[test]
    fn detections_come_best_first_without_overlapping_twins() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = MaskRcnnConfig { detections_per_image: 50, ..tiny() };
        let net = MaskRcnn::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg)?;
        crate::models::init::seeded_init(&vm, 5)?;
        let x = (Tensor::arange(0f32, (64 * 64) as f32, &dev)?.reshape((1, 1, 64, 64))?.sin()? * 2.0)?;
        let dets = net.detect(&x)?.remove(0);
        assert!(!dets.is_empty());
        assert!(dets.windows(2).all(|w| w[0].score >= w[1].score), "ordered by score");
        for (a, da) in dets.iter().enumerate() {
            for db in &dets[a + 1..] {
                if da.label == db.label {
                    assert!(super::super::blocks::boxes::iou(&da.bbox, &db.bbox) <= cfg.nms_threshold as f32 + 1e-6);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn full_size_builds_and_runs() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = MaskRcnn::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &MaskRcnnConfig::full())?;
        let params: usize = vm.all_vars().iter().filter(|v| v.rank() > 0).map(|v| v.elem_count()).sum();
        // torchvision maskrcnn_resnet50_fpn: 44.4 M with 91 classes and 3 input channels
        assert!((43_000_000..45_000_000).contains(&params), "{params}");
        let x = Tensor::zeros((1, 1, 64, 64), DType::F32, &dev)?;
        net.detect(&x)?;
        Ok(())
    }
}
