//! A millimetre-addressed canvas for drawing synthetic radiographs: shapes are
//! closed polygons in image-plane mm (x right, y down) whose values add up like
//! projected attenuation; scanline filling keeps large canvases fast, and a
//! final blur anti-aliases edges. Blur and resampling are `imaging::separable`'s,
//! the same the training augmentations use.

use crate::imaging::separable::{gaussian_blur, resample_image, AxisMap, Filter};
use crate::imaging::Image;

pub type P2 = [f64; 2];

#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// mm per pixel (square pixels).
    pub spacing: f64,
    pub data: Vec<f32>,
}

impl Canvas {
    pub fn new(width_mm: f64, height_mm: f64, spacing: f64) -> Canvas {
        let width = (width_mm / spacing).round() as usize;
        let height = (height_mm / spacing).round() as usize;
        Canvas { width, height, spacing, data: vec![0.0; width * height] }
    }

    /// Adds `value` inside the polygon (even-odd rule), sampled at pixel centres.
    pub fn fill_polygon(&mut self, poly: &[P2], value: f32) {
        if poly.len() < 3 {
            return;
        }
        let s = self.spacing;
        let ys = poly.iter().map(|p| p[1]).fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let r0 = ((ys.0 / s - 0.5).ceil().max(0.0)) as usize;
        let r1 = ((ys.1 / s - 0.5).floor().min(self.height as f64 - 1.0)).max(-1.0) as isize;
        let mut xs: Vec<f64> = Vec::new();
        for r in r0 as isize..=r1 {
            let y = (r as f64 + 0.5) * s;
            xs.clear();
            for k in 0..poly.len() {
                let (p, q) = (poly[k], poly[(k + 1) % poly.len()]);
                if (p[1] <= y) != (q[1] <= y) {
                    xs.push(p[0] + (y - p[1]) / (q[1] - p[1]) * (q[0] - p[0]));
                }
            }
            xs.sort_by(|a, b| a.total_cmp(b));
            let row = &mut self.data[r as usize * self.width..(r as usize + 1) * self.width];
            for pair in xs.chunks_exact(2) {
                let c0 = (pair[0] / s - 0.5).ceil().max(0.0) as usize;
                let c1 = (pair[1] / s - 0.5).floor().min(self.width as f64 - 1.0);
                if c1 < 0.0 {
                    continue;
                }
                for v in row.iter_mut().take(c1 as usize + 1).skip(c0) {
                    *v += value;
                }
            }
        }
    }

    /// Separable Gaussian blur with sigma in mm (edges clamp).
    pub fn blur(&mut self, sigma_mm: f64) {
        let sigma = sigma_mm / self.spacing;
        if sigma > 0.0 {
            self.data = gaussian_blur(&self.image(), sigma).data;
        }
    }

    /// Bilinear resample onto a canvas of another spacing covering the same field.
    pub fn resampled(&self, spacing: f64) -> Canvas {
        let width = (self.width as f64 * self.spacing / spacing).round() as usize;
        let height = (self.height as f64 * self.spacing / spacing).round() as usize;
        let mut out = self.resized(width, height);
        out.spacing = spacing;
        out
    }

    /// Bilinear resize to `width` x `height` pixels over the same field
    /// (the spacing is the mean of the two axes' new spacings).
    pub fn resized(&self, width: usize, height: usize) -> Canvas {
        let maps = [AxisMap::IDENTITY, AxisMap::resize(self.height, height), AxisMap::resize(self.width, width)];
        let data = resample_image(&self.image(), [1, height, width], maps, Filter::Linear, 0.0).data;
        let (rx, ry) = (self.width as f64 / width as f64, self.height as f64 / height as f64);
        Canvas { width, height, spacing: self.spacing * (rx + ry) / 2.0, data }
    }

    /// The canvas as a one-channel image for `imaging::separable`.
    fn image(&self) -> Image {
        Image { channels: 1, depth: 1, height: self.height, width: self.width, data: self.data.clone() }
    }
}

/// Points on an ellipse (centre, radii, rotation in radians), `n` of them.
pub fn ellipse(c: P2, rx: f64, ry: f64, rot: f64, n: usize) -> Vec<P2> {
    let (s, co) = rot.sin_cos();
    (0..n)
        .map(|k| {
            let t = k as f64 / n as f64 * std::f64::consts::TAU;
            let (x, y) = (rx * t.cos(), ry * t.sin());
            [c[0] + co * x - s * y, c[1] + s * x + co * y]
        })
        .collect()
}

/// An annular sector around `c` between radii r0 < r1, from angle a0 to a1
/// (radians, increasing; y down so angles turn clockwise on screen).
pub fn annular_sector(c: P2, r0: f64, r1: f64, a0: f64, a1: f64, n: usize) -> Vec<P2> {
    let mut pts = Vec::with_capacity(2 * n + 2);
    for k in 0..=n {
        let a = a0 + (a1 - a0) * k as f64 / n as f64;
        pts.push([c[0] + r1 * a.cos(), c[1] + r1 * a.sin()]);
    }
    for k in (0..=n).rev() {
        let a = a0 + (a1 - a0) * k as f64 / n as f64;
        pts.push([c[0] + r0 * a.cos(), c[1] + r0 * a.sin()]);
    }
    pts
}

/// A band of half-width `hw` along a polyline (ends squared off); as a polygon.
pub fn band(path: &[P2], hw: &dyn Fn(f64) -> f64) -> Vec<P2> {
    let n = path.len();
    let mut left = Vec::with_capacity(n);
    let mut right = Vec::with_capacity(n);
    for k in 0..n {
        let (p, q) = (path[k.saturating_sub(1)], path[(k + 1).min(n - 1)]);
        let (dx, dy) = (q[0] - p[0], q[1] - p[1]);
        let len = dx.hypot(dy).max(1e-9);
        let (nx, ny) = (-dy / len, dx / len);
        let w = hw(k as f64 / (n - 1).max(1) as f64);
        left.push([path[k][0] + nx * w, path[k][1] + ny * w]);
        right.push([path[k][0] - nx * w, path[k][1] - ny * w]);
    }
    right.reverse();
    left.extend(right);
    left
}

/// A closed Catmull-Rom spline through control points, `per` samples per segment.
pub fn closed_spline(ctrl: &[P2], per: usize) -> Vec<P2> {
    let n = ctrl.len();
    let mut out = Vec::with_capacity(n * per);
    for k in 0..n {
        let (p0, p1, p2, p3) = (ctrl[(k + n - 1) % n], ctrl[k], ctrl[(k + 1) % n], ctrl[(k + 2) % n]);
        for s in 0..per {
            let t = s as f64 / per as f64;
            let (t2, t3) = (t * t, t * t * t);
            let f =
                |a: f64, b: f64, c: f64, d: f64| 0.5 * (2.0 * b + (-a + c) * t + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2 + (-a + 3.0 * b - 3.0 * c + d) * t3);
            out.push([f(p0[0], p1[0], p2[0], p3[0]), f(p0[1], p1[1], p2[1], p3[1])]);
        }
    }
    out
}

/// An open Catmull-Rom spline through control points (end points repeated).
pub fn open_spline(ctrl: &[P2], per: usize) -> Vec<P2> {
    let n = ctrl.len();
    let mut out = Vec::with_capacity(n * per);
    for k in 0..n - 1 {
        let (p0, p1, p2, p3) = (ctrl[k.saturating_sub(1)], ctrl[k], ctrl[k + 1], ctrl[(k + 2).min(n - 1)]);
        for s in 0..per {
            let t = s as f64 / per as f64;
            let (t2, t3) = (t * t, t * t * t);
            let f =
                |a: f64, b: f64, c: f64, d: f64| 0.5 * (2.0 * b + (-a + c) * t + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2 + (-a + 3.0 * b - 3.0 * c + d) * t3);
            out.push([f(p0[0], p1[0], p2[0], p3[0]), f(p0[1], p1[1], p2[1], p3[1])]);
        }
    }
    out.push(ctrl[n - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_area_and_blur_preserve_mass() {
        let mut c = Canvas::new(20.0, 10.0, 0.5);
        assert_eq!((c.width, c.height), (40, 20));
        c.fill_polygon(&[[2.0, 2.0], [12.0, 2.0], [12.0, 7.0], [2.0, 7.0]], 1.0);
        let area: f32 = c.data.iter().sum::<f32>() * 0.25;
        assert!((area - 50.0).abs() < 1e-3, "{area}");
        // pixel centre (2.25, 2.25) is inside, (1.75, 2.25) is not
        assert_eq!(c.data[4 * 40 + 4], 1.0);
        assert_eq!(c.data[4 * 40 + 3], 0.0);
        c.blur(1.0);
        let after: f32 = c.data.iter().sum::<f32>() * 0.25;
        assert!((after - 50.0).abs() < 0.5, "{after}");
        let circle = ellipse([10.0, 5.0], 4.0, 4.0, 0.0, 400);
        let mut d = Canvas::new(20.0, 10.0, 0.05);
        d.fill_polygon(&circle, 2.0);
        let mass: f32 = d.data.iter().sum::<f32>() * 0.0025;
        assert!((mass as f64 - 2.0 * std::f64::consts::PI * 16.0).abs() < 0.2, "{mass}");
    }

    #[test]
    fn resample_keeps_a_ramp() {
        let mut c = Canvas::new(10.0, 10.0, 1.0);
        for r in 0..10 {
            for k in 0..10 {
                c.data[r * 10 + k] = k as f32;
            }
        }
        let f = c.resampled(0.5);
        assert_eq!((f.width, f.height), (20, 20));
        // output pixel 5 centre is at 2.75 mm -> input coordinate 2.25
        assert!((f.data[5] - 2.25).abs() < 1e-6);
    }
}
