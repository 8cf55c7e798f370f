//! Synthetic AP pelvis radiographs after total hip arthroplasty, with the ten
//! keypoints of MODELS.md 3 and the four parameters computed from them
//! (`ainode data synth hip-tha`). No public post-THA set with these
//! landmarks exists; this generator is the training and test data of `hip-tha`.
//!
//! Anatomy is drawn in a pelvis frame (mm, x towards the image's right = the
//! patient's left, y down, origin midway between the teardrops), posed into the
//! image by scale, pelvic tilt (different vertical scaling above and below the
//! teardrop line), axial rotation (anterior structures shift sideways), in-plane
//! rotation and translation. Every label is taken from the drawn geometry
//! itself (the lowest vertex of the drawn ischium, the bottom of the drawn
//! teardrop, the vertex where the drawn ilium meets the cup), so labels and
//! pixels cannot disagree.

use std::f64::consts::PI;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::raster::{annular_sector, band, closed_spline, ellipse, open_spline, Canvas, P2};
use crate::pipelines::hip_geometry::{HipParameters, HipPoints, HipRiskRules, HipRisks, POINT_NAMES};
use crate::rng::{Purpose, Rng};

/// Generator settings; every range is inclusive and drawn uniformly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HipSynthConfig {
    pub spacing_mm: (f64, f64),
    /// Drawing resolution; the image is resampled to its spacing afterwards.
    pub render_spacing_mm: f64,
    pub field_mm: ((f64, f64), (f64, f64)),
    /// Share of cases without any prosthesis.
    pub negative_share: f64,
    /// Share of prosthesis cases with a prosthesis on both sides.
    pub bilateral_share: f64,
    pub cemented_share: f64,
    pub abduction_deg: (f64, f64),
    pub coverage_pct: (f64, f64),
    /// Centre-of-rotation offsets against the contralateral side.
    pub offset_mm: (f64, f64),
    pub cup_radius_mm: (f64, f64),
    pub scale: (f64, f64),
    pub rotation_deg: (f64, f64),
    pub tilt: (f64, f64),
    pub axial_shift_mm: (f64, f64),
    pub noise: (f64, f64),
    pub scatter: (f64, f64),
}

impl Default for HipSynthConfig {
    fn default() -> Self {
        HipSynthConfig {
            spacing_mm: (0.1, 0.2),
            render_spacing_mm: 0.25,
            field_mm: ((340.0, 430.0), (280.0, 350.0)),
            negative_share: 0.15,
            bilateral_share: 0.15,
            cemented_share: 0.5,
            abduction_deg: (15.0, 70.0),
            coverage_pct: (40.0, 100.0),
            offset_mm: (-15.0, 15.0),
            cup_radius_mm: (22.0, 29.0),
            scale: (0.88, 1.12),
            rotation_deg: (-5.0, 5.0),
            tilt: (0.85, 1.15),
            axial_shift_mm: (-8.0, 8.0),
            noise: (0.004, 0.02),
            scatter: (0.05, 0.3),
        }
    }
}

/// The label file written next to each image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HipCase {
    pub file: String,
    pub seed: u64,
    pub index: u64,
    pub rows: usize,
    pub cols: usize,
    pub spacing_mm: f64,
    /// "right", "left" or null (no prosthesis); the measured side.
    pub side: Option<String>,
    pub bilateral: bool,
    pub cemented: bool,
    /// Keypoints in pixels (column, row) of the written image, DICOM's image
    /// coordinates: (0, 0) is the top-left corner of the first pixel, its centre (0.5, 0.5).
    pub points_px: HipPoints,
    /// The same points in mm.
    pub points_mm: HipPoints,
    pub parameters: HipParameters,
    pub risks: HipRisks,
    /// The values drawn for this case (before posing), for analysis.
    pub design: Design,
    /// Bilateral cases: the labels with the other prosthesis measured. The
    /// measured side is drawn at random and nothing in the image shows it, so
    /// evaluation takes whichever of the two the prediction measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_side: Option<HipSideLabels>,
}

/// The ten points and what follows from them, for one choice of measured side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HipSideLabels {
    pub points_px: HipPoints,
    pub points_mm: HipPoints,
    pub parameters: HipParameters,
    pub risks: HipRisks,
}

impl HipSideLabels {
    fn from_points(points_mm: HipPoints, spacing: f64) -> Self {
        let parameters = HipParameters::from_points(&points_mm);
        HipSideLabels { points_px: points_mm.scaled(1.0 / spacing, 1.0 / spacing), risks: HipRiskRules::default().assess(&parameters), parameters, points_mm }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Design {
    pub abduction_deg: f64,
    pub coverage_pct: f64,
    pub vertical_offset_mm: f64,
    pub horizontal_offset_mm: f64,
    pub cup_radius_mm: f64,
    pub rotation_deg: f64,
    pub tilt: f64,
}

/// How the pelvis frame maps into the image (mm).
struct Pose {
    origin: P2,
    scale: f64,
    rot: f64,
    tilt_inferior: f64,
    tilt_superior: f64,
    axial_shift: f64,
}

impl Pose {
    /// `depth`: 1 anterior (symphysis) .. -1 posterior (sacrum); axial rotation
    /// moves anterior structures sideways against posterior ones.
    fn apply(&self, p: P2, depth: f64) -> P2 {
        let y = p[1] * if p[1] > 0.0 { self.tilt_inferior } else { self.tilt_superior };
        let x = p[0] + self.axial_shift * depth;
        let (s, c) = self.rot.sin_cos();
        let (x, y) = (x * self.scale, y * self.scale);
        [self.origin[0] + c * x - s * y, self.origin[1] + s * x + c * y]
    }

    fn all(&self, pts: &[P2], depth: f64) -> Vec<P2> {
        pts.iter().map(|&p| self.apply(p, depth)).collect()
    }
}

fn mirror(pts: &[P2], side: f64) -> Vec<P2> {
    pts.iter().map(|p| [p[0] * side, p[1]]).collect()
}

fn lowest(pts: &[P2]) -> P2 {
    *pts.iter().max_by(|a, b| a[1].total_cmp(&b[1])).expect("non-empty shape")
}

fn add(p: P2, q: P2) -> P2 {
    [p[0] + q[0], p[1] + q[1]]
}

fn polar(c: P2, r: f64, a: f64) -> P2 {
    [c[0] + r * a.cos(), c[1] + r * a.sin()]
}

/// One hip's acetabular arc, in the pelvis frame of the left side (x lateral):
/// centre, radius and the angles (radians, y down) where bone starts laterally
/// and ends medially; the ilium's lower boundary follows it.
struct Acetabulum {
    centre: P2,
    radius: f64,
    lateral_angle: f64,
    medial_angle: f64,
}

/// A cup in the pelvis frame of its side, with its keypoints.
struct CupDesign {
    c: P2,
    a: P2,
    b: P2,
    j: P2,
}

fn cup_design(centre: P2, radius: f64, abduction: f64, coverage_pct: f64) -> CupDesign {
    // left side: lateral is +x; the rim b (lateral, up) - j (medial, down) is
    // inclined by the abduction angle; the dome faces up-medial.
    let bare = PI * (1.0 - coverage_pct / 100.0);
    let ang_b = 2.0 * PI - abduction;
    CupDesign { c: centre, b: polar(centre, radius, ang_b), j: polar(centre, radius, PI - abduction), a: polar(centre, radius, ang_b - bare) }
}

fn ilium(ac: &Acetabulum, rng: &mut Rng) -> Vec<P2> {
    let j = |v: f64, rng: &mut Rng| v + rng.range(-4.0, 4.0);
    let ctrl = [
        [j(30.0, rng), j(-72.0, rng)],
        [j(58.0, rng), j(-122.0, rng)],
        [j(108.0, rng), j(-152.0, rng)],
        [j(148.0, rng), j(-128.0, rng)],
        [j(158.0, rng), j(-96.0, rng)],
        [j(134.0, rng), j(-72.0, rng)],
    ];
    let mut outline = closed_spline(&ctrl, 12);
    // keep only the upper part of the spline (from the SI joint over the crest
    // to the spines), then follow the acetabular arc exactly
    outline.truncate(5 * 12 + 1);
    let lat = polar(ac.centre, ac.radius, ac.lateral_angle);
    outline.push([lat[0] + 10.0, lat[1] - 18.0]);
    let n = 48;
    for k in 0..=n {
        let a = ac.lateral_angle + (ac.medial_angle - ac.lateral_angle) * k as f64 / n as f64;
        outline.push(polar(ac.centre, ac.radius, a));
    }
    outline.push([40.0, -12.0]);
    outline.push([34.0, -40.0]);
    outline
}

struct Scene {
    canvas: Canvas,
}

impl Scene {
    fn fill(&mut self, poly: &[P2], v: f64) {
        self.canvas.fill_polygon(poly, v as f32);
    }
}

/// Draws a proximal femur in image mm: head (unless replaced), neck, trochanters,
/// shaft with medullary canal; `lateral` = +1 when the side's lateral is +x.
/// Returns the neck base point and shaft direction for a stem.
fn femur(scene: &mut Scene, head: P2, lateral: f64, rot: f64, scale: f64, with_head: bool, rng: &mut Rng) -> (P2, P2) {
    let neck_angle = rng.range(35.0, 50.0).to_radians();
    let neck_len = rng.range(42.0, 55.0) * scale;
    let rotv = |v: P2| -> P2 {
        let (s, c) = rot.sin_cos();
        [c * v[0] - s * v[1], s * v[0] + c * v[1]]
    };
    let neck_dir = rotv([lateral * neck_angle.cos(), neck_angle.sin()]);
    let base = add(head, [neck_dir[0] * neck_len, neck_dir[1] * neck_len]);
    let shaft_angle = rng.range(4.0, 12.0).to_radians();
    let shaft_dir = rotv([-lateral * shaft_angle.sin(), shaft_angle.cos()]);
    let shaft_end = add(base, [shaft_dir[0] * 400.0, shaft_dir[1] * 400.0]);
    let start = if with_head { 0.0 } else { 0.45 };
    let neck_from = add(head, [neck_dir[0] * neck_len * start, neck_dir[1] * neck_len * start]);
    if with_head {
        scene.fill(&ellipse(head, 24.0 * scale, 24.0 * scale, 0.0, 96), 0.5);
        scene.fill(&ellipse(head, 17.0 * scale, 17.0 * scale, 0.0, 64), 0.15);
    }
    scene.fill(&band(&[neck_from, base], &|_| 15.0 * scale), 0.45);
    let troch = add(base, rotv([lateral * 14.0 * scale, -6.0 * scale]));
    scene.fill(&ellipse(troch, 15.0 * scale, 22.0 * scale, rot, 64), 0.35);
    let lesser = add(base, rotv([-lateral * 15.0 * scale, 30.0 * scale]));
    scene.fill(&ellipse(lesser, 8.0 * scale, 9.0 * scale, rot, 48), 0.3);
    scene.fill(&band(&[base, shaft_end], &|t| (17.0 - 3.0 * t.min(0.3) / 0.3) * scale), 0.75);
    scene.fill(&band(&[add(base, [shaft_dir[0] * 20.0, shaft_dir[1] * 20.0]), shaft_end], &|_| 7.5 * scale), -0.45);
    (base, shaft_dir)
}

/// Metal cup (shell + liner), head, and stem in image mm; a cement mantle when cemented.
fn prosthesis(scene: &mut Scene, b: P2, j: P2, head_r: f64, cemented: bool, stem_base: P2, shaft_dir: P2, scale: f64, rng: &mut Rng) {
    let c = [(b[0] + j[0]) / 2.0, (b[1] + j[1]) / 2.0];
    let r = ((b[0] - j[0]).hypot(b[1] - j[1])) / 2.0;
    let rim = (j[1] - b[1]).atan2(j[0] - b[0]); // direction b -> j
                                                // the dome lies on the side of the rim line away from the femur (upwards)
    let (a0, a1) = {
        let up = rim - PI / 2.0;
        if up.sin() < 0.0 {
            (rim - PI, rim)
        } else {
            (rim, rim + PI)
        }
    };
    let shell = rng.range(2.5, 4.5);
    scene.fill(&annular_sector(c, r - shell, r, a0, a1, 64), 2.6);
    scene.fill(&annular_sector(c, 0.0, r - shell, a0, a1, 64), 0.25);
    // anteversion: the opening of the cup seen as a thin half ellipse
    let av = rng.range(0.08, 0.4);
    let open_rot = if (rim - PI / 2.0).sin() < 0.0 { rim } else { rim + PI };
    let open: Vec<P2> = ellipse(c, r, r * av, open_rot, 64);
    scene.fill(&band(&open[..33], &|_| 0.6), 0.8);
    let head = add(c, [0.0, -rng.range(0.0, 1.5)]);
    scene.fill(&ellipse(head, head_r, head_r, 0.0, 96), 3.0);
    // stem: trunnion from the head to the neck base, then a tapered body down the shaft
    scene.fill(&band(&[head, stem_base], &|t| (5.0 + 3.0 * t) * scale), 3.0);
    let len = rng.range(120.0, 160.0) * scale;
    let tip = add(stem_base, [shaft_dir[0] * len, shaft_dir[1] * len]);
    let path = [add(stem_base, [shaft_dir[0] * -6.0, shaft_dir[1] * -6.0]), tip];
    if cemented {
        scene.fill(&band(&path, &|t| (13.0 - 6.0 * t) * scale), 0.9);
    }
    scene.fill(&band(&path, &|t| (10.0 - 6.0 * t) * scale), 2.8);
}

/// Blocky "R" / "L" side marker at `at` (top-left of the letter), `h` mm tall.
fn side_marker(scene: &mut Scene, at: P2, h: f64, letter: char) {
    let w = h * 0.6;
    let t = h * 0.18;
    let rect =
        |x0: f64, y0: f64, x1: f64, y1: f64| vec![[at[0] + x0, at[1] + y0], [at[0] + x1, at[1] + y0], [at[0] + x1, at[1] + y1], [at[0] + x0, at[1] + y1]];
    scene.fill(&rect(-t, -t, w + t, h + t), 1.5); // marker plate
    match letter {
        'L' => {
            scene.fill(&rect(0.0, 0.0, t, h), 3.0);
            scene.fill(&rect(0.0, h - t, w, h), 3.0);
        }
        _ => {
            scene.fill(&rect(0.0, 0.0, t, h), 3.0);
            scene.fill(&rect(0.0, 0.0, w, t), 3.0);
            scene.fill(&rect(w - t, 0.0, w, h * 0.55), 3.0);
            scene.fill(&rect(0.0, h * 0.5, w, h * 0.5 + t), 3.0);
            scene.fill(
                &[[at[0] + w * 0.4, at[1] + h * 0.5], [at[0] + w * 0.4 + t, at[1] + h * 0.5], [at[0] + w, at[1] + h], [at[0] + w - t * 1.2, at[1] + h]],
                3.0,
            );
        }
    }
}

/// Trabecular-like texture: band-limited noise (a 1.5 mm grid, blurred and
/// interpolated) that modulates bone and soft tissue in proportion to density,
/// so that edges are not the only structure a network can learn from.
fn bone_texture(canvas: &mut Canvas, rng: &mut Rng) {
    let mut grain = Canvas::new(canvas.width as f64 * canvas.spacing, canvas.height as f64 * canvas.spacing, 1.5);
    for v in grain.data.iter_mut() {
        *v = rng.normal() as f32;
    }
    grain.blur(1.5);
    let grain = grain.resized(canvas.width, canvas.height);
    let amp = rng.range(0.15, 0.45) as f32;
    for (v, g) in canvas.data.iter_mut().zip(&grain.data) {
        let density = v.clamp(0.0, 1.2);
        *v += amp * g * density * 0.5;
    }
}

/// One synthetic case: the stored image (12-bit) and its labels.
pub struct HipImage {
    pub rows: usize,
    pub cols: usize,
    pub spacing: f64,
    pub stored: Vec<u16>,
    pub case: HipCase,
}

pub fn generate(cfg: &HipSynthConfig, seed: u64, index: u64) -> HipImage {
    let mut rng = Rng::stream(Purpose::Synthesis, seed, 0, index);
    let u = |rng: &mut Rng, r: (f64, f64)| rng.range(r.0, r.1);
    let spacing = (u(&mut rng, cfg.spacing_mm) * 1000.0).round() / 1000.0;
    let (fw, fh) = (u(&mut rng, cfg.field_mm.0), u(&mut rng, cfg.field_mm.1));
    let mut scene = Scene { canvas: Canvas::new(fw, fh, cfg.render_spacing_mm) };
    let negative = rng.range(0.0, 1.0) < cfg.negative_share;
    let bilateral = !negative && rng.range(0.0, 1.0) < cfg.bilateral_share;
    let cemented = rng.range(0.0, 1.0) < cfg.cemented_share;
    // the measured side: +1 = patient's left (image right), -1 = patient's right
    let side = if rng.range(0.0, 1.0) < 0.5 { 1.0 } else { -1.0 };
    let scale = u(&mut rng, cfg.scale);
    let rot_deg = u(&mut rng, cfg.rotation_deg);
    let tilt = u(&mut rng, cfg.tilt);
    let pose = Pose {
        origin: [fw / 2.0 + rng.range(-25.0, 25.0), fh * rng.range(0.42, 0.55)],
        scale,
        rot: rot_deg.to_radians(),
        tilt_inferior: tilt,
        tilt_superior: 1.0 + (1.0 - tilt) * 0.4,
        axial_shift: u(&mut rng, cfg.axial_shift_mm),
    };
    let design = Design {
        abduction_deg: u(&mut rng, cfg.abduction_deg),
        coverage_pct: u(&mut rng, cfg.coverage_pct),
        vertical_offset_mm: u(&mut rng, cfg.offset_mm),
        horizontal_offset_mm: u(&mut rng, cfg.offset_mm),
        cup_radius_mm: u(&mut rng, cfg.cup_radius_mm),
        rotation_deg: rot_deg,
        tilt,
    };

    // soft tissue: body, thighs, bowel gas
    let body_c = pose.apply([0.0, -40.0], 0.0);
    scene.fill(&ellipse(body_c, 175.0 * scale * rng.range(0.95, 1.2), 240.0 * scale, pose.rot, 128), 0.28);
    for s in [-1.0, 1.0] {
        let hip = pose.apply([s * 95.0, 40.0], 0.0);
        scene.fill(&band(&[hip, add(hip, [s * 10.0, 300.0])], &|t| (62.0 + 18.0 * (t * 3.0).min(1.0)) * scale), 0.18);
    }
    for _ in 0..rng.below(7) {
        let p = pose.apply([rng.range(-120.0, 120.0), rng.range(-150.0, -40.0)], 0.5);
        scene.fill(&ellipse(p, rng.range(6.0, 25.0), rng.range(5.0, 15.0), rng.range(0.0, PI), 48), -0.12);
    }
    // lumbar spine and sacrum (posterior)
    scene.fill(&pose.all(&closed_spline(&[[-27.0, -165.0], [27.0, -165.0], [30.0, -128.0], [-30.0, -128.0]], 8), -1.0), 0.5);
    for s in [-1.0, 1.0] {
        scene.fill(&pose.all(&band(&[[s * 25.0, -150.0], [s * 55.0, -146.0]], &|_| 6.0), -1.0), 0.3);
    }
    scene.fill(&pose.all(&closed_spline(&[[-48.0, -118.0], [48.0, -118.0], [36.0, -62.0], [14.0, -22.0], [-14.0, -22.0], [-36.0, -62.0]], 10), -1.0), 0.42);
    for y in [-102.0, -84.0, -67.0, -50.0] {
        for s in [-1.0, 1.0] {
            scene.fill(&pose.all(&ellipse([s * 17.0, y], 4.0, 3.5, 0.0, 24), -1.0), -0.18);
        }
    }

    // the two hips, in the pelvis frame of each side (x mirrored for the right)
    let native_centre = |rng: &mut Rng| [84.0 + rng.range(-2.0, 2.0), -22.0 + rng.range(-2.0, 2.0)];
    let mut labels = HipPoints::default();
    let mut cup_img: Vec<(f64, P2, P2, P2)> = Vec::new(); // (side, a, b, j) in image mm
    let mut femur_heads: Vec<(f64, P2, bool)> = Vec::new(); // (side, head centre image mm, native)
    let contralateral_native = native_centre(&mut rng);
    for s in [-1.0, 1.0] {
        let measured = !negative && s == side;
        let has_cup = measured || (bilateral && s != side);
        let (ac, cup) = if has_cup {
            let (centre, abd, cov, r) = if measured {
                let c = [contralateral_native[0] + design.horizontal_offset_mm, contralateral_native[1] - design.vertical_offset_mm];
                (c, design.abduction_deg, design.coverage_pct, design.cup_radius_mm)
            } else {
                let c = native_centre(&mut rng);
                (c, rng.range(35.0, 50.0), rng.range(75.0, 100.0), rng.range(23.0, 28.0))
            };
            let cup = cup_design(centre, r, abd.to_radians(), cov);
            let ac = Acetabulum {
                centre,
                radius: r,
                lateral_angle: (cup.a[1] - centre[1]).atan2(cup.a[0] - centre[0]).rem_euclid(2.0 * PI),
                medial_angle: (cup.j[1] - centre[1]).atan2(cup.j[0] - centre[0]).rem_euclid(2.0 * PI),
            };
            (ac, Some(cup))
        } else {
            let centre = if s == side { native_centre(&mut rng) } else { contralateral_native };
            let ac =
                Acetabulum { centre, radius: 26.5, lateral_angle: rng.range(330.0, 350.0).to_radians(), medial_angle: rng.range(195.0, 205.0).to_radians() };
            (ac, None)
        };
        // ilium with the acetabular arc, the sourcil, pelvic brim
        let il = ilium(&ac, &mut rng);
        scene.fill(&pose.all(&mirror(&il, s), -0.3), 0.55);
        let crest = open_spline(&[[58.0, -122.0], [108.0, -152.0], [148.0, -128.0], [158.0, -96.0]], 10);
        scene.fill(&pose.all(&mirror(&band(&crest, &|_| 2.5), s), -0.3), 0.3);
        scene.fill(&pose.all(&mirror(&annular_sector(ac.centre, ac.radius, ac.radius + 3.5, ac.medial_angle, ac.lateral_angle, 48), s), 0.0), 0.45);
        let brim = open_spline(&[[34.0, -70.0], [40.0, -40.0], [44.0, -14.0], [32.0, 10.0], [12.0, 24.0]], 8);
        scene.fill(&pose.all(&mirror(&band(&brim, &|_| 1.6), s), 0.3), 0.35);
        // teardrop: a thin U ring; its lowest point is the landmark
        let tc = [50.0 + rng.range(-3.0, 3.0), -9.0 + rng.range(-2.0, 2.0)];
        let outer = pose.all(&mirror(&ellipse(tc, 5.0, 10.0, 0.0, 64), s), 0.3);
        scene.fill(&outer, 0.45);
        scene.fill(&pose.all(&mirror(&ellipse(tc, 3.2, 8.2, 0.0, 64), s), 0.3), -0.45);
        let teardrop = lowest(&outer);
        // obturator ring, pubic body, superior ramus, ischium
        let ring_c = [43.0 + rng.range(-2.0, 2.0), 38.0 + rng.range(-2.0, 2.0)];
        scene.fill(&pose.all(&mirror(&ellipse(ring_c, 39.0, 28.0, 0.3, 96), s), 0.6), 0.4);
        scene.fill(&pose.all(&mirror(&ellipse([ring_c[0] + 2.0, ring_c[1] + 1.0], 22.0, 15.0, 0.4, 96), s), 0.6), -0.4);
        scene.fill(&pose.all(&mirror(&closed_spline(&[[2.5, 22.0], [20.0, 21.0], [22.0, 58.0], [3.0, 58.0]], 6), s), 1.0), 0.3);
        scene.fill(&pose.all(&mirror(&band(&[[70.0, -4.0], [22.0, 27.0]], &|_| 8.0), s), 0.6), 0.3);
        let isch = pose.all(
            &mirror(
                &closed_spline(&[[62.0, 2.0], [80.0, 6.0], [78.0, 36.0], [66.0, 55.0], [50.0, 58.0 + rng.range(-3.0, 3.0)], [40.0, 50.0], [48.0, 25.0]], 12),
                s,
            ),
            0.0,
        );
        scene.fill(&isch, 0.35);
        let ischial_low = lowest(&isch);
        if s < 0.0 {
            labels.e = Some(teardrop);
            labels.g = Some(ischial_low);
        } else {
            labels.f = Some(teardrop);
            labels.h = Some(ischial_low);
        }
        match cup {
            Some(cup) => {
                let (a, b, j) =
                    (pose.apply([s * cup.a[0], cup.a[1]], 0.0), pose.apply([s * cup.b[0], cup.b[1]], 0.0), pose.apply([s * cup.j[0], cup.j[1]], 0.0));
                cup_img.push((s, a, b, j));
                let c = pose.apply([s * cup.c[0], cup.c[1]], 0.0);
                femur_heads.push((s, c, false));
            }
            None => femur_heads.push((s, pose.apply([s * ac.centre[0], ac.centre[1]], 0.0), true)),
        }
    }
    // symphysis: upper end of the gap between the pubic bodies
    labels.i = Some(pose.apply([0.0, 22.0], 1.0));

    // femora and prostheses
    let head_r = [14.0, 16.0, 18.0][rng.below(3)];
    for &(s, head, native) in &femur_heads {
        let (base, shaft) = femur(&mut scene, head, s, pose.rot, scale, native, &mut rng);
        if !native {
            let &(_, _, b, j) = cup_img.iter().find(|c| c.0 == s).expect("a cup on each prosthesis side");
            prosthesis(&mut scene, b, j, head_r, cemented, base, shaft, scale, &mut rng);
        }
        if s != side && !negative {
            let mid = match cup_img.iter().find(|c| c.0 == s) {
                Some(&(_, _, b, j)) => [(b[0] + j[0]) / 2.0, (b[1] + j[1]) / 2.0],
                None => head,
            };
            labels.d = Some(mid);
        }
    }
    if let Some(&(_, a, b, j)) = cup_img.iter().find(|c| c.0 == side) {
        labels.a = Some(a);
        labels.b = Some(b);
        labels.j = Some(j);
        labels.c = Some([(b[0] + j[0]) / 2.0, (b[1] + j[1]) / 2.0]);
    }
    // side marker: "R" on the image's left (patient's right) or "L" on its right
    let (letter, mx) = if rng.range(0.0, 1.0) < 0.5 { ('R', rng.range(15.0, 40.0)) } else { ('L', fw - rng.range(30.0, 55.0)) };
    side_marker(&mut scene, [mx, rng.range(12.0, 30.0)], 14.0, letter);

    // image formation at the render resolution, then the detector's spacing
    let mut canvas = scene.canvas;
    bone_texture(&mut canvas, &mut rng);
    canvas.blur(0.35);
    let scatter = u(&mut rng, cfg.scatter) as f32;
    // scatter: a wide blur, computed on a coarse grid
    let mut coarse = canvas.resampled(2.0);
    coarse.blur(25.0);
    let wide = coarse.resized(canvas.width, canvas.height).data;
    for (v, w) in canvas.data.iter_mut().zip(&wide) {
        *v = (1.0 - scatter) * *v + scatter * w;
    }
    let img = canvas.resampled(spacing);
    let a0 = rng.range(1.0, 1.8) as f32;
    let gamma = rng.range(0.8, 1.25) as f32;
    let offset = rng.range(0.0, 250.0) as f32;
    let noise = u(&mut rng, cfg.noise) as f32;
    let collim = [rng.range(0.0, 25.0), rng.range(0.0, 25.0), rng.range(0.0, 25.0), rng.range(0.0, 25.0)];
    let shutter = rng.range(3300.0, 4095.0) as f32;
    let mut stored = Vec::with_capacity(img.data.len());
    for r in 0..img.height {
        let y = (r as f64 + 0.5) * spacing;
        for c in 0..img.width {
            let x = (c as f64 + 0.5) * spacing;
            let inside = x >= collim[0] && x <= fw - collim[1] && y >= collim[2] && y <= fh - collim[3];
            let v = if inside {
                let a = img.data[r * img.width + c].max(0.0);
                let signal = (1.0 - (-a / a0).exp()).powf(gamma);
                let p = offset + (4095.0 - offset) * signal;
                p + noise * 4095.0 * (p / 4095.0).max(0.02).sqrt() * rng.normal() as f32
            } else {
                shutter + 20.0 * rng.normal() as f32
            };
            stored.push(v.round().clamp(0.0, 4095.0) as u16);
        }
    }

    // the other cup measured instead: its a, b, j; the measured cup's centre as d
    let other_side = cup_img.iter().find(|c| bilateral && c.0 != side).map(|&(_, a, b, j)| {
        let other = HipPoints { a: Some(a), b: Some(b), c: Some([(b[0] + j[0]) / 2.0, (b[1] + j[1]) / 2.0]), d: labels.c, j: Some(j), ..labels };
        HipSideLabels::from_points(other, spacing)
    });
    let HipSideLabels { points_px, points_mm: labels, parameters, risks } = HipSideLabels::from_points(labels, spacing);
    let case = HipCase {
        file: format!("case_{index:05}.dcm"),
        seed,
        index,
        rows: img.height,
        cols: img.width,
        spacing_mm: spacing,
        side: (!negative).then(|| if side < 0.0 { "right".to_string() } else { "left".to_string() }),
        bilateral,
        cemented,
        points_px,
        points_mm: labels,
        parameters,
        risks,
        design,
        other_side,
    };
    HipImage { rows: img.height, cols: img.width, spacing, stored, case }
}

/// Writes `count` cases (DICOM DX + JSON labels) into `out`, plus `index.json`.
pub fn write_dataset(cfg: &HipSynthConfig, out: &Path, seed: u64, count: u64) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let root = "2.25";
    let uid = |what: &str, i: u64| crate::encode::uids::named_uid(root, &format!("ainode synth hip-tha seed {seed} case {i} {what}"));
    // each case is its own (seed, index) stream: generated in parallel, listed in order
    use rayon::prelude::*;
    let index = (0..count)
        .into_par_iter()
        .map(|i| -> anyhow::Result<serde_json::Value> {
            let img = generate(cfg, seed, i);
            let spec = crate::imaging::synth::SynthRadiograph {
                patient_name: format!("SYNTH^HIP^{seed}^{i}"),
                patient_id: format!("SYNTH-HIP-{seed}-{i}"),
                study_instance_uid: uid("study", i)?,
                series_instance_uid: uid("series", i)?,
                sop_instance_uid: uid("instance", i)?,
                rows: img.rows,
                cols: img.cols,
                imager_pixel_spacing: [img.spacing, img.spacing],
                bits_stored: 12,
                body_part: "PELVIS".into(),
                anatomic_region: ("12921003".into(), "SCT".into(), "Pelvis".into()),
                view_position: "AP".into(),
                patient_orientation: ["L".into(), "F".into()],
                series_description: "AP pelvis (synthetic)".into(),
                window: (2048.0, 4096.0),
            };
            let obj = crate::imaging::synth::dx_image(&spec, &img.stored);
            let dcm = out.join(&img.case.file);
            crate::imaging::synth::write(&obj, &dcm).with_context(|| format!("writing {}", dcm.display()))?;
            let json = out.join(img.case.file.replace(".dcm", ".json"));
            std::fs::write(&json, serde_json::to_vec_pretty(&img.case)?).with_context(|| format!("writing {}", json.display()))?;
            Ok(serde_json::json!({"file": img.case.file, "side": img.case.side, "rows": img.rows, "cols": img.cols}))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = serde_json::json!({
        "generator": "ainode data synth hip-tha",
        "version": env!("CARGO_PKG_VERSION"),
        "seed": seed,
        "count": count,
        "config": cfg,
        "points": POINT_NAMES,
        "cases": index,
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> HipSynthConfig {
        HipSynthConfig { spacing_mm: (0.4, 0.4), render_spacing_mm: 0.4, ..Default::default() }
    }

    #[test]
    fn deterministic_and_labels_consistent() {
        let cfg = small();
        let a = generate(&cfg, 7, 3);
        let b = generate(&cfg, 7, 3);
        assert_eq!(a.stored, b.stored);
        assert_eq!(a.case.points_mm, b.case.points_mm);
        let c = generate(&cfg, 7, 4);
        assert_ne!(a.stored, c.stored);
        for k in 0..40u64 {
            let img = generate(&cfg, 11, k);
            let case = &img.case;
            // every present point lies inside the image
            for p in 0..10 {
                if let Some(q) = case.points_px.get(p) {
                    assert!(q[0] >= 0.0 && q[1] >= 0.0 && q[0] < img.cols as f64 && q[1] < img.rows as f64, "case {k} point {p} {q:?}");
                }
            }
            match &case.side {
                None => {
                    assert!(case.points_mm.a.is_none() && case.points_mm.b.is_none() && case.points_mm.d.is_none());
                    assert!(case.parameters.abduction_deg.value().is_none());
                }
                Some(_) => {
                    // measured values stay near the design (posing distorts a little)
                    let m = &case.parameters;
                    let d = &case.design;
                    let abd = m.abduction_deg.value().unwrap();
                    assert!((abd - d.abduction_deg).abs() < 9.0, "case {k}: {abd} vs {}", d.abduction_deg);
                    let cov = m.coverage_pct.value().unwrap();
                    assert!((cov - d.coverage_pct).abs() < 6.0, "case {k}: {cov} vs {}", d.coverage_pct);
                    assert!(m.vertical_offset_mm.value().unwrap().abs() < 30.0);
                    assert!(m.horizontal_offset_mm.value().unwrap().abs() < 30.0);
                }
            }
        }
    }

    #[test]
    fn metal_is_bright_where_the_cup_is() {
        let cfg = small();
        let img = (0..20).map(|k| generate(&cfg, 5, k)).find(|i| i.case.side.is_some()).expect("a prosthesis case");
        let c = img.case.points_px.c.unwrap();
        // the head sits at the prosthesis centre: near-saturated values
        let v = img.stored[c[1].round() as usize * img.cols + c[0].round() as usize];
        assert!(v > 3000, "{v}");
        // the contralateral native femoral head is bone, not metal (when not bilateral)
        if !img.case.bilateral {
            let d = img.case.points_px.d.unwrap();
            let w = img.stored[d[1].round() as usize * img.cols + d[0].round() as usize];
            assert!(w < v, "{w} vs {v}");
        }
    }

    #[test]
    fn bilateral_cases_also_carry_the_other_side_measured() {
        let cfg = HipSynthConfig { bilateral_share: 1.0, ..small() };
        let img = (0..10).map(|k| generate(&cfg, 3, k)).find(|i| i.case.side.is_some()).expect("a prosthesis case");
        let (case, other) = (&img.case, img.case.other_side.as_ref().expect("bilateral: the other side's labels"));
        let (mine, theirs) = (&case.points_mm, &other.points_mm);
        // the cups swap: the other cup's centre is this case's d, and the other way round
        assert_eq!(theirs.d, mine.c);
        let (c, d) = (theirs.c.unwrap(), mine.d.unwrap());
        assert!((c[0] - d[0]).hypot(c[1] - d[1]) < 1e-9, "{c:?} vs {d:?}");
        assert!((mine.c.unwrap()[0] - c[0]).abs() > 50.0, "the two cups lie on opposite sides");
        // the pelvic points are the same
        assert_eq!((theirs.e, theirs.f, theirs.g, theirs.h, theirs.i), (mine.e, mine.f, mine.g, mine.h, mine.i));
        assert!(other.parameters.abduction_deg.value().is_some());
        // one prosthesis: one way to measure
        let cfg = HipSynthConfig { bilateral_share: 0.0, ..small() };
        let single = (0..10).map(|k| generate(&cfg, 3, k)).find(|i| i.case.side.is_some()).expect("a prosthesis case");
        assert!(single.case.other_side.is_none());
    }
}
