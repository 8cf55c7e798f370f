//! SSD512 keypoint detector of the hip-tha analysis (MODELS.md 3, seeds/002):
//! VGG16 trunk with SSD's conv6 (dilated) / conv7 and extra layers, seven
//! source maps, class + box prediction per default box. Each of the ten
//! keypoints a..j is a class whose ground truth is a small square box centred
//! on the point; a keypoint is the centre of the best box of its class.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::blocks::anchors::SsdPriorConfig;
use super::blocks::boxes::{boxes_tensor, Annotations};
use super::blocks::postprocess::{best_per_class, ssd_detections, DetectionConfig};
use super::blocks::ssd_loss::{multibox_loss, MultiboxConfig, MultiboxLoss};
use super::blocks::vgg::{MultiboxHead, VggSsd, VggSsdConfig};

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
}

impl Default for HipSsdConfig {
    fn default() -> Self {
        HipSsdConfig {
            input_size: 512,
            width_mult: 0.25,
            points: crate::pipelines::hip_geometry::POINT_NAMES.iter().map(|s| s.to_string()).collect(),
            keypoint_box: 36.0,
            iou_threshold: 0.5,
            neg_pos_ratio: 3.0,
            min_score: 0.2,
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
        MultiboxConfig { iou_threshold: self.iou_threshold, neg_pos_ratio: self.neg_pos_ratio, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        if self.input_size != 512 {
            candle_core::bail!("hip-tha: input_size {} unsupported: SSD512's seven source maps need 512", self.input_size);
        }
        if self.points.is_empty() || self.keypoint_box <= 0.0 || self.width_mult <= 0.0 {
            candle_core::bail!("hip-tha: points, keypoint_box and width_mult must be non-empty / positive");
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
    cfg: HipSsdConfig,
}

impl HipSsd {
    pub fn load(vb: VarBuilder, cfg: &HipSsdConfig) -> Result<HipSsd> {
        cfg.validate()?;
        let trunk = VggSsd::load(vb.pp("trunk"), &VggSsdConfig { in_channels: 1, width_mult: cfg.width_mult, ..Default::default() })?;
        let priors = cfg.priors();
        let per_cell: Vec<usize> = (0..priors.feature_maps.len()).map(|k| priors.boxes_per_cell(k)).collect();
        let head = MultiboxHead::load(vb.pp("head"), trunk.source_channels(), &per_cell, cfg.num_classes())?;
        let priors_px = priors.priors_corners_px(vb.device())?;
        Ok(HipSsd { trunk, head, priors_px, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &HipSsdConfig {
        &self.cfg
    }

    /// (class logits (N, P, C), box deltas (N, P, 4)) for images (N, 1, 512, 512).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.head.forward(&self.trunk.forward(x)?)
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
        let (cls, loc) = self.forward(x)?;
        let targets = points.iter().map(|p| self.targets(p, x.device())).collect::<Result<Vec<_>>>()?;
        multibox_loss(&cls, &loc, &self.priors_px.to_dtype(cls.dtype())?, &targets, &self.cfg.multibox())
    }

    /// The keypoints of each image: the centre of the best box of each class
    /// when its score reaches `min_score`.
    pub fn keypoints(&self, x: &Tensor) -> Result<Vec<Vec<Option<Keypoint>>>> {
        let (cls, loc) = self.forward(x)?;
        let n = cls.dim(0)?;
        let s = self.cfg.input_size;
        let det_cfg = DetectionConfig { score_threshold: self.cfg.min_score, ..DetectionConfig::ssd() };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let dets = ssd_detections(&cls.get(i)?, &loc.get(i)?, &self.priors_px, (s, s), self.cfg.multibox().variances, &det_cfg)?;
            let best = best_per_class(&dets, self.cfg.num_classes());
            out.push(
                best[1..]
                    .iter()
                    .map(|d| {
                        d.map(|d| Keypoint {
                            xy: [((d.bbox[0] + d.bbox[2]) / 2.0) as f64, ((d.bbox[1] + d.bbox[3]) / 2.0) as f64],
                            score: d.score as f64,
                        })
                    })
                    .collect(),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Optimizer, VarMap};

    fn tiny() -> HipSsdConfig {
        HipSsdConfig { width_mult: 0.0625, points: vec!["p".into(), "q".into()], ..Default::default() }
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
            assert!(at_point > 5.0 * overall, "class {k}: {at_point} at its boxes vs {overall} overall");
        }
        Ok(())
    }
}
