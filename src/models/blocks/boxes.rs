//! Box conventions and box arithmetic for the detectors (Mask R-CNN, SSD).
//!
//! Convention: a set of boxes is a float tensor (N, 4) of corners
//! (x1, y1, x2, y2) in pixels of the network input (SSD default boxes may be
//! in normalised units; every function here only needs both arguments in the
//! same unit). Width = x2 - x1 without torchvision's old "+1".
//!
//! Matching, NMS and target building are not trained through, so they run on
//! `Vec`s on the CPU; only [`BoxCoder::decode`] is differentiable (with
//! respect to the deltas), because losses may be computed on decoded boxes.

use candle_core::{DType, Device, Result, Tensor, D};

/// Ground truth of one image: corner boxes (G, 4) and their class labels
/// (1-based; 0 is reserved for background).
#[derive(Debug, Clone)]
pub struct Annotations {
    pub boxes: Tensor,
    pub labels: Vec<u32>,
}

impl Annotations {
    /// Checks that there is one label per box and that no label is background.
    pub fn validate(&self) -> Result<()> {
        let (g, four) = self.boxes.dims2()?;
        if four != 4 || g != self.labels.len() {
            candle_core::bail!("annotations: boxes have shape {:?} but there are {} labels", self.boxes.dims(), self.labels.len());
        }
        if let Some(i) = self.labels.iter().position(|&l| l == 0) {
            candle_core::bail!("annotations: box {i} has label 0, which is reserved for background");
        }
        Ok(())
    }
}

/// Default clamp of the decoded log-size deltas dw, dh: ln(1000 / 16), so a
/// box can grow at most 62.5x (torchvision `BoxCoder.bbox_xform_clip`).
pub fn default_delta_clamp() -> f64 {
    (1000f64 / 16.0).ln()
}

/// Reads an (N, 4) box tensor as rows of f32 corners.
pub fn box_rows(boxes: &Tensor) -> Result<Vec<[f32; 4]>> {
    let (n, four) = boxes.dims2()?;
    if four != 4 {
        candle_core::bail!("boxes must have shape (N, 4), got {:?}", boxes.dims());
    }
    let v: Vec<f32> = boxes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok((0..n).map(|i| [v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]]).collect())
}

/// Builds an (N, 4) f32 tensor from rows of corners.
pub fn boxes_tensor(rows: &[[f32; 4]], device: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), 4), device)
}

/// Area of one corner box (0 for degenerate boxes).
pub fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union of two corner boxes (0 when both are empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Row-major IoU matrix: `out[i][j] = iou(a[i], b[j])`.
pub fn iou_matrix(a: &[[f32; 4]], b: &[[f32; 4]]) -> Vec<Vec<f32>> {
    a.iter().map(|x| b.iter().map(|y| iou(x, y)).collect()).collect()
}

/// Pairwise IoU of (N, 4) and (M, 4) corner boxes as an (N, M) tensor in the
/// dtype of `a` (tensor ops, so it runs on the boxes' device).
pub fn pairwise_iou(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, _) = a.dims2()?;
    let (m, _) = b.dims2()?;
    let b = b.to_dtype(a.dtype())?;
    let col = |t: &Tensor, i: usize| t.narrow(1, i, 1);
    let (ax1, ay1, ax2, ay2) = (col(a, 0)?, col(a, 1)?, col(a, 2)?, col(a, 3)?); // (N, 1)
    let bt = b.t()?;
    let (bx1, by1, bx2, by2) = (bt.narrow(0, 0, 1)?, bt.narrow(0, 1, 1)?, bt.narrow(0, 2, 1)?, bt.narrow(0, 3, 1)?); // (1, M)
    let iw = ax2.broadcast_minimum(&bx2)?.broadcast_sub(&ax1.broadcast_maximum(&bx1)?)?.relu()?;
    let ih = ay2.broadcast_minimum(&by2)?.broadcast_sub(&ay1.broadcast_maximum(&by1)?)?.relu()?;
    let inter = (iw * ih)?;
    let area_a = ((&ax2 - &ax1)?.relu()? * (&ay2 - &ay1)?.relu()?)?;
    let area_b = ((&bx2 - &bx1)?.relu()? * (&by2 - &by1)?.relu()?)?;
    let union = area_a.broadcast_add(&area_b)?.broadcast_sub(&inter)?;
    // empty ∪ empty: IoU 0 instead of 0/0
    let safe_union = union.maximum(1e-12)?;
    let out = inter.div(&safe_union)?;
    debug_assert_eq!(out.dims(), &[n, m]);
    Ok(out)
}

/// (x1, y1, x2, y2) → (cx, cy, w, h), differentiable.
pub fn corners_to_center(boxes: &Tensor) -> Result<Tensor> {
    let xy1 = boxes.narrow(D::Minus1, 0, 2)?;
    let xy2 = boxes.narrow(D::Minus1, 2, 2)?;
    Tensor::cat(&[((&xy1 + &xy2)? * 0.5)?, (xy2 - xy1)?], D::Minus1)
}

/// (cx, cy, w, h) → (x1, y1, x2, y2), differentiable.
pub fn center_to_corners(boxes: &Tensor) -> Result<Tensor> {
    let c = boxes.narrow(D::Minus1, 0, 2)?;
    let half = (boxes.narrow(D::Minus1, 2, 2)? * 0.5)?;
    Tensor::cat(&[(&c - &half)?, (c + half)?], D::Minus1)
}

/// Encodes boxes as deltas against reference boxes (anchors, proposals or
/// SSD default boxes):
/// dx = wx (gx - ax) / aw, dy = wy (gy - ay) / ah, dw = ww ln(gw / aw), dh = wh ln(gh / ah).
/// Faster R-CNN's ROI head uses weights (10, 10, 5, 5), its RPN (1, 1, 1, 1);
/// SSD's variances (0.1, 0.2) are the weights (1/0.1, 1/0.1, 1/0.2, 1/0.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxCoder {
    pub weights: [f64; 4],
    /// Upper clamp of the decoded dw, dh (after dividing by the weights).
    pub delta_clamp: f64,
}

impl BoxCoder {
    pub fn new(weights: [f64; 4]) -> BoxCoder {
        BoxCoder { weights, delta_clamp: default_delta_clamp() }
    }

    /// Mask R-CNN box head: weights (10, 10, 5, 5).
    pub fn roi_head() -> BoxCoder {
        BoxCoder::new([10.0, 10.0, 5.0, 5.0])
    }

    /// RPN: unit weights.
    pub fn rpn() -> BoxCoder {
        BoxCoder::new([1.0, 1.0, 1.0, 1.0])
    }

    /// SSD with (centre, size) variances, e.g. (0.1, 0.2).
    pub fn ssd(variances: (f64, f64)) -> BoxCoder {
        let (vc, vs) = variances;
        BoxCoder::new([1.0 / vc, 1.0 / vc, 1.0 / vs, 1.0 / vs])
    }

    /// Regression targets (N, 4) for ground-truth corners `gt` (N, 4) against
    /// `reference` corners (N, 4). Not differentiated (targets are constants).
    pub fn encode(&self, gt: &Tensor, reference: &Tensor) -> Result<Tensor> {
        if gt.dims() != reference.dims() {
            candle_core::bail!("box encode: ground truth {:?} and reference boxes {:?} differ in shape", gt.dims(), reference.dims());
        }
        let g = corners_to_center(&gt.detach().to_dtype(reference.dtype())?)?;
        let r = corners_to_center(&reference.detach())?;
        let r_wh = r.narrow(1, 2, 2)?;
        let d_xy = (g.narrow(1, 0, 2)? - r.narrow(1, 0, 2)?)?.div(&r_wh)?;
        let d_wh = g.narrow(1, 2, 2)?.div(&r_wh)?.log()?;
        let w = Tensor::new(&[self.weights.map(|x| x as f32)], reference.device())?.to_dtype(reference.dtype())?;
        Tensor::cat(&[d_xy, d_wh], 1)?.broadcast_mul(&w)
    }

    /// Boxes (N, 4) from deltas (N, 4) against `reference` corners (N, 4);
    /// differentiable with respect to `deltas`. dw, dh are clamped above at
    /// `delta_clamp` so that exp() cannot overflow.
    pub fn decode(&self, deltas: &Tensor, reference: &Tensor) -> Result<Tensor> {
        if deltas.dims() != reference.dims() {
            candle_core::bail!("box decode: deltas {:?} and reference boxes {:?} differ in shape", deltas.dims(), reference.dims());
        }
        let r = corners_to_center(&reference.detach().to_dtype(deltas.dtype())?)?;
        let inv = Tensor::new(&[self.weights.map(|x| (1.0 / x) as f32)], deltas.device())?.to_dtype(deltas.dtype())?;
        let d = deltas.broadcast_mul(&inv)?;
        let r_xy = r.narrow(1, 0, 2)?;
        let r_wh = r.narrow(1, 2, 2)?;
        let xy = (d.narrow(1, 0, 2)? * &r_wh)?.add(&r_xy)?;
        let wh = d.narrow(1, 2, 2)?.minimum(self.delta_clamp)?.exp()?.mul(&r_wh)?;
        center_to_corners(&Tensor::cat(&[xy, wh], 1)?)
    }
}

/// Clamps corners to the image: x into [0, width], y into [0, height].
pub fn clip_boxes(boxes: &Tensor, height: f64, width: f64) -> Result<Tensor> {
    let x = boxes.narrow(1, 0, 1)?.clamp(0.0, width)?;
    let y = boxes.narrow(1, 1, 1)?.clamp(0.0, height)?;
    let x2 = boxes.narrow(1, 2, 1)?.clamp(0.0, width)?;
    let y2 = boxes.narrow(1, 3, 1)?.clamp(0.0, height)?;
    Tensor::cat(&[x, y, x2, y2], 1)
}

/// Clamps one box to the image (CPU rows version of [`clip_boxes`]).
pub fn clip_row(b: &[f32; 4], height: f32, width: f32) -> [f32; 4] {
    [b[0].clamp(0.0, width), b[1].clamp(0.0, height), b[2].clamp(0.0, width), b[3].clamp(0.0, height)]
}

/// Indices of the boxes whose width and height are both at least `min_size`.
pub fn remove_small_boxes(boxes: &[[f32; 4]], min_size: f32) -> Vec<usize> {
    (0..boxes.len()).filter(|&i| boxes[i][2] - boxes[i][0] >= min_size && boxes[i][3] - boxes[i][1] >= min_size).collect()
}

/// Indices sorted by descending score; equal scores keep ascending index
/// (a deterministic tie-break). NaN scores sort last.
pub fn order_by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (scores[i], scores[j]);
        match (a.is_nan(), b.is_nan()) {
            (true, true) => i.cmp(&j),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => b.partial_cmp(&a).unwrap().then(i.cmp(&j)),
        }
    });
    order
}

/// Greedy non-maximum suppression: visits boxes by descending score (ties:
/// lower index first), keeps a box unless its IoU with an already kept box
/// exceeds `iou_threshold`. Returns the kept indices in visiting order.
pub fn nms_rows(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "nms: one score per box");
    let mut kept: Vec<usize> = Vec::new();
    for i in order_by_score(scores) {
        if kept.iter().all(|&k| iou(&boxes[k], &boxes[i]) <= iou_threshold) {
            kept.push(i);
        }
    }
    kept
}

/// [`nms_rows`] on an (N, 4) box tensor and (N) score tensor.
pub fn nms(boxes: &Tensor, scores: &Tensor, iou_threshold: f64) -> Result<Vec<usize>> {
    let rows = box_rows(boxes)?;
    let s: Vec<f32> = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if s.len() != rows.len() {
        candle_core::bail!("nms: {} boxes but {} scores", rows.len(), s.len());
    }
    Ok(nms_rows(&rows, &s, iou_threshold as f32))
}

/// NMS run independently per class (boxes of different classes never
/// suppress each other). Returns the kept indices by descending score (ties:
/// lower index first).
pub fn batched_nms_rows(boxes: &[[f32; 4]], scores: &[f32], classes: &[u32], iou_threshold: f32) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && boxes.len() == classes.len(), "batched nms: one score and one class per box");
    let mut distinct: Vec<u32> = classes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut kept: Vec<usize> = Vec::new();
    for c in distinct {
        let members: Vec<usize> = (0..boxes.len()).filter(|&i| classes[i] == c).collect();
        let b: Vec<[f32; 4]> = members.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        kept.extend(nms_rows(&b, &s, iou_threshold).into_iter().map(|k| members[k]));
    }
    kept.sort_by(|&i, &j| scores[j].partial_cmp(&scores[i]).unwrap_or(std::cmp::Ordering::Equal).then(i.cmp(&j)));
    kept
}

/// [`batched_nms_rows`] on tensors: boxes (N, 4), scores (N), class ids.
pub fn batched_nms(boxes: &Tensor, scores: &Tensor, classes: &[u32], iou_threshold: f64) -> Result<Vec<usize>> {
    let rows = box_rows(boxes)?;
    let s: Vec<f32> = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if s.len() != rows.len() || classes.len() != rows.len() {
        candle_core::bail!("batched nms: {} boxes, {} scores, {} classes", rows.len(), s.len(), classes.len());
    }
    Ok(batched_nms_rows(&rows, &s, classes, iou_threshold as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::testing::{det_tensor, gradcheck};

    #[test]
    fn iou_hand_cases() -> Result<()> {
        let a = [0f32, 0., 2., 2.];
        // half overlap: inter 2, union 6
        assert!((iou(&a, &[1., 0., 3., 2.]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[2., 2., 3., 3.]), 0.0); // touching corner
                                                     // contained: 1 / 4
        assert!((iou(&a, &[0.5, 0.5, 1.5, 1.5]) - 0.25).abs() < 1e-6);
        assert_eq!(iou(&[1., 1., 1., 1.], &[1., 1., 1., 1.]), 0.0);
        let ta = boxes_tensor(&[a, [1., 1., 3., 3.]], &Device::Cpu)?;
        let tb = boxes_tensor(&[[1., 0., 3., 2.], a, [5., 5., 6., 6.]], &Device::Cpu)?;
        let m = pairwise_iou(&ta, &tb)?.to_vec2::<f32>()?;
        let want = iou_matrix(&box_rows(&ta)?, &box_rows(&tb)?);
        // [1,1,3,3] vs [1,0,3,2]: inter 2, union 6; vs a: inter 1, union 7
        assert!((want[1][0] - 1.0 / 3.0).abs() < 1e-6 && (want[1][1] - 1.0 / 7.0).abs() < 1e-6);
        for i in 0..2 {
            for j in 0..3 {
                assert!((m[i][j] - want[i][j]).abs() < 1e-6, "{i},{j}: {} vs {}", m[i][j], want[i][j]);
            }
        }
        Ok(())
    }

    #[test]
    fn nms_order_and_ties() -> Result<()> {
        let boxes = [
            [0f32, 0., 10., 10.], // 0
            [1., 1., 11., 11.],   // 1: IoU with 0 = 81/119 = 0.68
            [20., 20., 30., 30.], // 2
            [0., 0., 10., 10.],   // 3: same as 0, same score
            [21., 21., 30., 30.], // 4: IoU with 2 = 0.81
        ];
        let scores = [0.9f32, 0.95, 0.5, 0.9, 0.6];
        // 1 first (0.95); 0 vs 1: 0.68 > 0.5 → suppressed; 3 likewise; 4 kept (0.6); 2 vs 4: 0.81 → suppressed
        assert_eq!(nms_rows(&boxes, &scores, 0.5), vec![1, 4]);
        // with threshold 0.7 both 0 and 3 survive 1, but 3 is a duplicate of 0 (IoU 1): the lower index wins the tie
        assert_eq!(nms_rows(&boxes, &scores, 0.7), vec![1, 0, 4]);
        let t = boxes_tensor(&boxes, &Device::Cpu)?;
        let s = Tensor::new(&scores, &Device::Cpu)?;
        assert_eq!(nms(&t, &s, 0.7)?, vec![1, 0, 4]);
        // equal scores: ascending index
        assert_eq!(order_by_score(&[0.5, 0.7, 0.5, 0.7]), vec![1, 3, 0, 2]);
        // per class: 0 and 1 in different classes do not suppress each other
        let classes = [1u32, 2, 1, 1, 1];
        assert_eq!(batched_nms(&t, &s, &classes, 0.5)?, vec![1, 0, 4]);
        Ok(())
    }

    #[test]
    fn encode_decode_round_trip() -> Result<()> {
        let dev = Device::Cpu;
        let anchors = boxes_tensor(&[[0., 0., 10., 20.], [5., 5., 9., 7.], [-3., 2., 30., 40.]], &dev)?;
        let gt = boxes_tensor(&[[1., 2., 12., 18.], [4., 4., 10., 10.], [0., 0., 20., 20.]], &dev)?;
        for coder in [BoxCoder::roi_head(), BoxCoder::rpn(), BoxCoder::ssd((0.1, 0.2))] {
            let d = coder.encode(&gt, &anchors)?;
            let back = coder.decode(&d, &anchors)?.to_vec2::<f32>()?;
            let want = gt.to_vec2::<f32>()?;
            for i in 0..3 {
                for k in 0..4 {
                    assert!((back[i][k] - want[i][k]).abs() < 1e-4, "{coder:?} box {i}: {:?} vs {:?}", back[i], want[i]);
                }
            }
        }
        // hand value: anchor (0,0,10,20) centre (5,10) size (10,20); gt centre (6.5,10) size (11,16)
        let d = BoxCoder::roi_head().encode(&gt.narrow(0, 0, 1)?, &anchors.narrow(0, 0, 1)?)?.to_vec2::<f32>()?;
        let want = [10.0 * 1.5 / 10.0, 0.0, 5.0 * (1.1f32).ln(), 5.0 * (0.8f32).ln()];
        for k in 0..4 {
            assert!((d[0][k] - want[k]).abs() < 1e-5, "{:?} vs {want:?}", d[0]);
        }
        // the clamp: a huge dw decodes to at most 1000/16 times the anchor width
        let big = Tensor::new(&[[0f32, 0., 1000., 0.]], &dev)?;
        let b = BoxCoder::rpn().decode(&big, &anchors.narrow(0, 0, 1)?)?.to_vec2::<f32>()?;
        assert!((b[0][2] - b[0][0] - 625.0).abs() < 1e-2);
        Ok(())
    }

    #[test]
    fn decode_is_differentiable() -> Result<()> {
        let anchors = Tensor::new(&[[0f64, 0., 10., 20.], [5., 5., 9., 7.]], &Device::Cpu)?;
        let d = det_tensor(&[2, 4], 41);
        let w = det_tensor(&[2, 4], 42);
        assert!(gradcheck(&d, |d| (BoxCoder::roi_head().decode(d, &anchors)? * &w)?.sum_all())? < 1e-6);
        Ok(())
    }

    #[test]
    fn clip_and_small() -> Result<()> {
        let b = boxes_tensor(&[[-5., 2., 50., 70.], [3., 3., 3.5, 9.]], &Device::Cpu)?;
        let c = clip_boxes(&b, 60.0, 40.0)?.to_vec2::<f32>()?;
        assert_eq!(c[0], vec![0., 2., 40., 60.]);
        assert_eq!(clip_row(&[-5., 2., 50., 70.], 60.0, 40.0), [0., 2., 40., 60.]);
        assert_eq!(remove_small_boxes(&box_rows(&b)?, 1.0), vec![0]);
        let a = Annotations { boxes: b.clone(), labels: vec![1, 0] };
        assert!(a.validate().is_err());
        Ok(())
    }
}
