//! Reference boxes of the two detectors: RPN anchors on the FPN levels
//! (Mask R-CNN, torchvision `AnchorGenerator` order) and SSD512 default boxes
//! (ssd.pytorch `PriorBox` order). Both are constants computed on the CPU.

use candle_core::{Device, Result, Tensor};

use super::boxes::boxes_tensor;

/// RPN anchors: one square size per pyramid level (P2..P6), each shaped by
/// every aspect ratio (height / width), centred on the level's grid points.
#[derive(Debug, Clone, PartialEq)]
pub struct RpnAnchorConfig {
    /// Anchor side in input pixels per level (area-preserving across ratios).
    pub sizes: Vec<f64>,
    /// Grid spacing of each level in input pixels.
    pub strides: Vec<usize>,
    /// Height / width ratios, the same on every level.
    pub aspect_ratios: Vec<f64>,
}

impl Default for RpnAnchorConfig {
    fn default() -> Self {
        RpnAnchorConfig { sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0], strides: vec![4, 8, 16, 32, 64], aspect_ratios: vec![0.5, 1.0, 2.0] }
    }
}

impl RpnAnchorConfig {
    pub fn num_levels(&self) -> usize {
        self.sizes.len()
    }

    /// Anchors per grid location (the RPN head's A).
    pub fn anchors_per_location(&self) -> usize {
        self.aspect_ratios.len()
    }

    /// Zero-centred anchors of one level, one per ratio, rounded to whole
    /// pixels as torchvision does (its pretrained RPNs expect exactly these).
    pub fn base_anchors(&self, level: usize) -> Vec<[f32; 4]> {
        let size = self.sizes[level];
        self.aspect_ratios
            .iter()
            .map(|&r| {
                let h_ratio = r.sqrt();
                let (w, h) = (size / h_ratio, size * h_ratio);
                let half = |v: f64| (v / 2.0).round_ties_even() as f32;
                [-half(w), -half(h), half(w), half(h)]
            })
            .collect()
    }

    /// Feature-map size of each level for an input image: ceil(side / stride),
    /// which is what stride-2 convolutions with "same" padding produce.
    pub fn grid_sizes(&self, image_hw: (usize, usize)) -> Vec<(usize, usize)> {
        self.strides.iter().map(|&s| (image_hw.0.div_ceil(s), image_hw.1.div_ceil(s))).collect()
    }

    /// Anchors (grid_h · grid_w · A, 4) of one level as corner rows, ordered
    /// by row, then column, then aspect ratio (the order of a head output
    /// permuted from (A, H, W) to (H, W, A)).
    pub fn level_anchor_rows(&self, level: usize, grid_hw: (usize, usize)) -> Vec<[f32; 4]> {
        let base = self.base_anchors(level);
        let stride = self.strides[level] as f32;
        let mut out = Vec::with_capacity(grid_hw.0 * grid_hw.1 * base.len());
        for y in 0..grid_hw.0 {
            for x in 0..grid_hw.1 {
                let (sx, sy) = (x as f32 * stride, y as f32 * stride);
                out.extend(base.iter().map(|b| [b[0] + sx, b[1] + sy, b[2] + sx, b[3] + sy]));
            }
        }
        out
    }

    /// Anchors of every level as (N_level, 4) f32 tensors, for the given
    /// feature-map sizes (one per level).
    pub fn anchors(&self, grids: &[(usize, usize)], device: &Device) -> Result<Vec<Tensor>> {
        if grids.len() != self.num_levels() || self.strides.len() != self.num_levels() {
            candle_core::bail!("rpn anchors: {} sizes and {} strides configured but {} feature maps given", self.sizes.len(), self.strides.len(), grids.len());
        }
        (0..grids.len()).map(|l| boxes_tensor(&self.level_anchor_rows(l, grids[l]), device)).collect()
    }
}

/// SSD default boxes: on source map k (f_k × f_k cells of `steps[k]`
/// pixels), per cell a square of min_sizes[k], a square of
/// sqrt(min_sizes[k] · max_sizes[k]), and for each aspect ratio r two boxes
/// (s·√r × s/√r and s/√r × s·√r).
#[derive(Debug, Clone, PartialEq)]
pub struct SsdPriorConfig {
    /// Side of the (square) network input in pixels.
    pub image_size: f64,
    pub feature_maps: Vec<usize>,
    pub steps: Vec<f64>,
    pub min_sizes: Vec<f64>,
    pub max_sizes: Vec<f64>,
    pub aspect_ratios: Vec<Vec<f64>>,
    /// Clamp (cx, cy, w, h) into [0, 1] as ssd.pytorch does.
    pub clip: bool,
}

impl Default for SsdPriorConfig {
    /// The standard SSD512 boxes (MODELS.md §3).
    fn default() -> Self {
        SsdPriorConfig {
            image_size: 512.0,
            feature_maps: vec![64, 32, 16, 8, 4, 2, 1],
            steps: vec![8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            min_sizes: vec![35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
            max_sizes: vec![76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6],
            aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0], vec![2.0]],
            clip: true,
        }
    }
}

impl SsdPriorConfig {
    fn check(&self) -> Result<()> {
        let n = self.feature_maps.len();
        if [self.steps.len(), self.min_sizes.len(), self.max_sizes.len(), self.aspect_ratios.len()].iter().any(|&l| l != n) {
            candle_core::bail!(
                "ssd priors: {} feature maps but {} steps, {} min sizes, {} max sizes, {} aspect-ratio lists",
                n,
                self.steps.len(),
                self.min_sizes.len(),
                self.max_sizes.len(),
                self.aspect_ratios.len()
            );
        }
        Ok(())
    }

    /// Boxes per cell of source map k (the prediction convs' output groups).
    pub fn boxes_per_cell(&self, k: usize) -> usize {
        2 + 2 * self.aspect_ratios[k].len()
    }

    pub fn num_priors(&self) -> usize {
        (0..self.feature_maps.len()).map(|k| self.feature_maps[k].pow(2) * self.boxes_per_cell(k)).sum()
    }

    /// Default boxes as normalised (cx, cy, w, h) rows, ordered by source
    /// map, then cell row, cell column, then box within the cell.
    pub fn center_rows(&self) -> Result<Vec<[f32; 4]>> {
        self.check()?;
        let mut out = Vec::with_capacity(self.num_priors());
        for (k, &f) in self.feature_maps.iter().enumerate() {
            let cells = self.image_size / self.steps[k];
            let s = self.min_sizes[k] / self.image_size;
            let s_big = (s * self.max_sizes[k] / self.image_size).sqrt();
            for i in 0..f {
                for j in 0..f {
                    let cx = (j as f64 + 0.5) / cells;
                    let cy = (i as f64 + 0.5) / cells;
                    let mut push = |w: f64, h: f64| {
                        let mut b = [cx, cy, w, h];
                        if self.clip {
                            b = b.map(|v| v.clamp(0.0, 1.0));
                        }
                        out.push(b.map(|v| v as f32));
                    };
                    push(s, s);
                    push(s_big, s_big);
                    for &r in &self.aspect_ratios[k] {
                        push(s * r.sqrt(), s / r.sqrt());
                        push(s / r.sqrt(), s * r.sqrt());
                    }
                }
            }
        }
        Ok(out)
    }

    /// (P, 4) normalised (cx, cy, w, h).
    pub fn priors_center(&self, device: &Device) -> Result<Tensor> {
        boxes_tensor(&self.center_rows()?, device)
    }

    /// (P, 4) corners in input pixels (normalised corners × image_size), the
    /// unit [`super::ssd_loss`] matches ground truth in.
    pub fn priors_corners_px(&self, device: &Device) -> Result<Tensor> {
        let s = self.image_size as f32;
        let rows: Vec<[f32; 4]> =
            self.center_rows()?.iter().map(|b| [(b[0] - b[2] / 2.0) * s, (b[1] - b[3] / 2.0) * s, (b[0] + b[2] / 2.0) * s, (b[1] + b[3] / 2.0) * s]).collect();
        boxes_tensor(&rows, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpn_anchors_small_image() -> Result<()> {
        let cfg = RpnAnchorConfig::default();
        // size 32, ratio 0.5: w = 32·√2 = 45.25, h = 22.63 → half sides 22.6, 11.3 → rounded 23, 11
        assert_eq!(cfg.base_anchors(0), vec![[-23., -11., 23., 11.], [-16., -16., 16., 16.], [-11., -23., 11., 23.]]);
        assert_eq!(cfg.base_anchors(4)[1], [-256., -256., 256., 256.]);
        let grids = cfg.grid_sizes((64, 62));
        assert_eq!(grids, vec![(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]);
        let levels = cfg.anchors(&grids, &Device::Cpu)?;
        let counts: Vec<usize> = levels.iter().map(|t| t.dims()[0]).collect();
        assert_eq!(counts, vec![768, 192, 48, 12, 3]);
        let p2 = levels[0].to_vec2::<f32>()?;
        // location (y 0, x 1) starts at row 3: shifted by the stride 4 in x
        assert_eq!(p2[3], vec![-19., -11., 27., 11.]);
        assert_eq!(p2[4], vec![-12., -16., 20., 16.]);
        // location (y 1, x 0) starts at row 16·3 = 48
        assert_eq!(p2[48], vec![-23., -7., 23., 15.]);
        // last anchor of P3: location (7, 7) · 8 = (56, 56), ratio 2 of size 64: half sides 22.6 → 23, 45.3 → 45
        let p3 = levels[1].to_vec2::<f32>()?;
        assert_eq!(p3[191], vec![56. - 23., 56. - 45., 56. + 23., 56. + 45.]);
        assert!(cfg.anchors(&grids[..4], &Device::Cpu).is_err());
        Ok(())
    }

    #[test]
    fn ssd512_default_boxes() -> Result<()> {
        let cfg = SsdPriorConfig::default();
        let per_cell: Vec<usize> = (0..7).map(|k| cfg.boxes_per_cell(k)).collect();
        assert_eq!(per_cell, vec![4, 6, 6, 6, 6, 4, 4]);
        assert_eq!(cfg.num_priors(), 24564);
        let p = cfg.priors_center(&Device::Cpu)?;
        assert_eq!(p.dims(), &[24564, 4]);
        let rows = p.to_vec2::<f32>()?;
        // first cell of the 64x64 map: centre 0.5 / 64; s = 35.84 / 512 = 0.07; s' = √(0.07 · 0.15)
        let c = 0.5 / 64.0;
        let want = [
            [c, c, 0.07, 0.07],
            [c, c, 0.0105f32.sqrt(), 0.0105f32.sqrt()],
            [c, c, 0.07 * 2f32.sqrt(), 0.07 / 2f32.sqrt()],
            [c, c, 0.07 / 2f32.sqrt(), 0.07 * 2f32.sqrt()],
        ];
        for (r, w) in rows.iter().zip(want.iter()) {
            for k in 0..4 {
                assert!((r[k] - w[k]).abs() < 1e-6, "{r:?} vs {w:?}");
            }
        }
        // second cell of the first map: x centre moves by one step
        assert!((rows[4][0] - 1.5 / 64.0).abs() < 1e-7 && (rows[4][1] - c).abs() < 1e-7);
        // the 1x1 map: s = 0.9, ratio 2 box is 1.27 wide → clipped to 1
        let last = &rows[24563];
        assert!((last[0] - 0.5).abs() < 1e-7 && (last[2] - 0.9 / 2f32.sqrt()).abs() < 1e-6 && last[3] == 1.0);
        // first box of the 32x32 map (after 64·64·4 rows): centre 0.5 / 32, s = 76.8 / 512 = 0.15
        let r = &rows[16384];
        assert!((r[0] - 0.5 / 32.0).abs() < 1e-7 && (r[2] - 0.15).abs() < 1e-6);
        let px = cfg.priors_corners_px(&Device::Cpu)?.to_vec2::<f32>()?;
        // 0.07 · 512 = 35.84 wide box centred at 4 px
        assert!((px[0][0] - (4.0 - 17.92)).abs() < 1e-3 && (px[0][2] - (4.0 + 17.92)).abs() < 1e-3);
        let bad = SsdPriorConfig { steps: vec![8.0], ..SsdPriorConfig::default() };
        assert!(bad.center_rows().is_err());
        Ok(())
    }
}
