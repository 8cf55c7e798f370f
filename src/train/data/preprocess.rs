//! Geometric preprocessing of samples: resizing (plain or keeping the
//! aspect ratio with grey padding) of image, labels and points together,
//! returning the transform that maps points back. Intensity steps live in
//! [`crate::imaging::intensity`], used alike by training and inference.

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::sample::Sample;
use crate::imaging::separable::{resample_image, resample_labels, AxisMap, Filter};

/// An axis-aligned 2D map from input to output pixel-centre coordinates:
/// `x' = sx x + ox`, `y' = sy y + oy`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transform2d {
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
}

impl Transform2d {
    pub fn forward(&self, p: [f64; 2]) -> [f64; 2] {
        [self.scale_x * p[0] + self.offset_x, self.scale_y * p[1] + self.offset_y]
    }

    /// Maps a point found on the output (e.g. a predicted landmark) back to the input image.
    pub fn inverse(&self, p: [f64; 2]) -> [f64; 2] {
        [(p[0] - self.offset_x) / self.scale_x, (p[1] - self.offset_y) / self.scale_y]
    }
}

fn require_2d(s: &Sample) -> Result<()> {
    if s.image.is_2d() {
        Ok(())
    } else {
        Err(DataError::Invalid(format!("sample {}: 2D resizing of a volume with {} slices", s.id, s.image.depth)))
    }
}

fn apply_2d(s: &Sample, out_hw: (usize, usize), mx: AxisMap, my: AxisMap, fill: f32) -> Sample {
    let dims = [1, out_hw.0, out_hw.1];
    let maps = [AxisMap::IDENTITY, my, mx];
    let image = resample_image(&s.image, dims, maps, Filter::LinearAntialias, fill);
    let labels = s.labels.as_ref().map(|l| resample_labels(l, dims, maps, 0));
    let t = Transform2d { scale_x: mx.scale, scale_y: my.scale, offset_x: mx.offset, offset_y: my.offset };
    let points = s.points.iter().map(|p| super::sample::Landmark { name: p.name.clone(), position: p.position.map(|q| t.forward(q)) }).collect();
    let spacing = s.spacing.map(|sp| [sp[0], sp[1] / my.scale, sp[2] / mx.scale]);
    Sample { id: s.id.clone(), image, labels, points, spacing }
}

/// Resizes a 2D sample to (height, width), distorting the aspect ratio if
/// needed (antialiased linear for the image, nearest for labels).
pub fn resize(s: &Sample, height: usize, width: usize) -> Result<(Sample, Transform2d)> {
    require_2d(s)?;
    let mx = AxisMap::resize(s.image.width, width);
    let my = AxisMap::resize(s.image.height, height);
    let out = apply_2d(s, (height, width), mx, my, 0.0);
    Ok((out, Transform2d { scale_x: mx.scale, scale_y: my.scale, offset_x: mx.offset, offset_y: my.offset }))
}

/// Resizes without distortion into (height, width) and pads the rest with
/// `pad_value` (grey bars, centred), as the kidney source's 473 x 473 input.
/// Label padding is 0 (background).
pub fn letterbox(s: &Sample, height: usize, width: usize, pad_value: f32) -> Result<(Sample, Transform2d)> {
    require_2d(s)?;
    let (h, w) = (s.image.height as f64, s.image.width as f64);
    let scale = (height as f64 / h).min(width as f64 / w);
    let (nh, nw) = ((h * scale).round(), (w * scale).round());
    let (pad_y, pad_x) = (((height as f64 - nh) / 2.0).floor(), ((width as f64 - nw) / 2.0).floor());
    // content pixels cover [pad, pad + n) in output pixel areas
    let mx = AxisMap { scale: nw / w, offset: pad_x + 0.5 * nw / w - 0.5 };
    let my = AxisMap { scale: nh / h, offset: pad_y + 0.5 * nh / h - 0.5 };
    let out = apply_2d(s, (height, width), mx, my, pad_value);
    Ok((out, Transform2d { scale_x: mx.scale, scale_y: my.scale, offset_x: mx.offset, offset_y: my.offset }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::intensity::tests::close;
    use crate::imaging::{Image, LabelMap};
    use crate::train::data::sample::Landmark;

    #[test]
    fn letterbox_pads_centres_and_maps_points_back() {
        // 4 (h) x 8 (w) image into 8 x 8: scale 1, 2 rows of padding above and below
        let mut lab = vec![0u16; 32];
        lab[1 * 8 + 6] = 1;
        let s = Sample {
            id: "s".into(),
            image: Image::new_2d(1, 4, 8, (0..32).map(|i| i as f32).collect()).unwrap(),
            labels: Some(LabelMap::new(1, [1, 4, 8], lab).unwrap()),
            points: vec![Landmark { name: "p".into(), position: Some([6.0, 1.0]) }],
            spacing: Some([1.0, 0.2, 0.2]),
        };
        let (out, t) = letterbox(&s, 8, 8, 0.5).unwrap();
        assert_eq!(t, Transform2d { scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 2.0 });
        assert_eq!(out.image.get(0, 0, 0, 3), 0.5);
        assert_eq!(out.image.get(0, 0, 7, 3), 0.5);
        assert_eq!(out.image.get(0, 0, 3, 6), 14.0);
        assert_eq!(out.point("p"), Some([6.0, 3.0]));
        assert_eq!(out.labels.as_ref().unwrap().get(0, 0, 3, 6), 1);
        assert_eq!(t.inverse([6.0, 3.0]), [6.0, 1.0]);
        // 4 x 8 into 2 x 2: scale 1/4, content 1 x 2, pad 0 top (floor(0.5)), 0 left
        let (small, t) = letterbox(&s, 2, 2, -1.0).unwrap();
        assert_eq!((t.scale_x, t.scale_y), (0.25, 0.25));
        assert_eq!(small.image.get(0, 0, 1, 0), -1.0);
        // a point maps to the output and back exactly
        let q = t.forward([6.0, 1.0]);
        let back = t.inverse(q);
        assert!((back[0] - 6.0).abs() < 1e-12 && (back[1] - 1.0).abs() < 1e-12);
        assert_eq!(small.spacing, Some([1.0, 0.8, 0.8]));
    }

    #[test]
    fn resize_to_fixed_size() {
        let s = Sample::new("s", Image::new_2d(1, 2, 2, vec![1., 2., 3., 4.]).unwrap());
        let (out, t) = resize(&s, 4, 4).unwrap();
        close(&out.image.data[..4], &[1.0, 1.25, 1.75, 2.0], 1e-6);
        // pixel 0 centre (0, 0) lies at 0.5 in the output, pixel 1 at 2.5
        assert_eq!(t.forward([0.0, 1.0]), [0.5, 2.5]);
    }
}
