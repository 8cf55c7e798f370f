//! The radiological parameters of a hip after total hip arthroplasty, from the
//! ten keypoints of MODELS.md 3 (source: seeds/002). Coordinates are
//! millimetres in the image plane: x to the image's right (the patient's left
//! on an AP view), y down.
//!
//! Definitions (the source's Fig. 6):
//! - a-line: cup diameter b-j; c = its midpoint, the prosthesis centre.
//! - abduction beta: acute angle between the a-line and the ischial line g-h.
//! - coverage: the source's formula lost its symbol ("coverage = ?/180"); its
//!   alpha is "the acute angle between the a-line and the b-line c-a", i.e. the
//!   bare arc from the lateral rim b to the contact point a. We use
//!   (180 - alpha) / 180, so that a fully covered cup is 100 % and the source's
//!   "> 70 % is acceptable" rule reads correctly; alpha may exceed 90 degrees when
//!   less than half the cup is covered.
//! - h1 / h0: signed distance of c / the contralateral centre d from the
//!   teardrop line e-f, positive cranial; d0 = h1 - h0 (> 0: cup too high).
//! - L1 / L0: distance of c / d from the pelvic midline (through i,
//!   perpendicular to the teardrop line); d1 = L1 - L0 (> 0: too lateral).

use serde::{Deserialize, Serialize};

pub type P2 = [f64; 2];

/// The ten keypoints, in the source's order a..j; `None` when not found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HipPoints {
    pub a: Option<P2>,
    pub b: Option<P2>,
    pub c: Option<P2>,
    pub d: Option<P2>,
    pub e: Option<P2>,
    pub f: Option<P2>,
    pub g: Option<P2>,
    pub h: Option<P2>,
    pub i: Option<P2>,
    pub j: Option<P2>,
}

/// Point names in model-class order (the network's classes define them).
pub use crate::models::hip_tha::POINT_NAMES;

/// What each point is, for reports.
pub const POINT_MEANINGS: [&str; 10] = [
    "cup / native bone contact point",
    "lateral end of the cup diameter",
    "prosthesis centre",
    "contralateral femoral head or prosthesis centre",
    "right teardrop",
    "left teardrop",
    "right ischial lowest point",
    "left ischial lowest point",
    "upper end of the pubic symphysis",
    "medial end of the cup diameter",
];

impl HipPoints {
    pub fn get(&self, k: usize) -> Option<P2> {
        [self.a, self.b, self.c, self.d, self.e, self.f, self.g, self.h, self.i, self.j][k]
    }

    pub fn set(&mut self, k: usize, p: Option<P2>) {
        let slot = match k {
            0 => &mut self.a,
            1 => &mut self.b,
            2 => &mut self.c,
            3 => &mut self.d,
            4 => &mut self.e,
            5 => &mut self.f,
            6 => &mut self.g,
            7 => &mut self.h,
            8 => &mut self.i,
            9 => &mut self.j,
            _ => panic!("hip point index {k} out of 0..10"),
        };
        *slot = p;
    }

    /// Scales every point (pixels -> mm with a spacing, or back).
    pub fn scaled(&self, sx: f64, sy: f64) -> HipPoints {
        let mut out = HipPoints::default();
        for k in 0..10 {
            out.set(k, self.get(k).map(|p| [p[0] * sx, p[1] * sy]));
        }
        out
    }
}

/// A parameter value, or why it could not be measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measured {
    Value(f64),
    NotMeasured(String),
}

impl Measured {
    pub fn value(&self) -> Option<f64> {
        match self {
            Measured::Value(v) => Some(*v),
            Measured::NotMeasured(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HipParameters {
    /// Cup abduction angle, degrees.
    pub abduction_deg: Measured,
    /// Native bone coverage of the cup, percent.
    pub coverage_pct: Measured,
    /// Vertical centre-of-rotation offset h1 - h0, mm.
    pub vertical_offset_mm: Measured,
    /// Horizontal centre-of-rotation offset L1 - L0, mm.
    pub horizontal_offset_mm: Measured,
}

fn sub(p: P2, q: P2) -> P2 {
    [p[0] - q[0], p[1] - q[1]]
}

fn norm(v: P2) -> f64 {
    v[0].hypot(v[1])
}

/// Angle between two vectors, degrees in [0, 180].
fn angle_between(u: P2, v: P2) -> Option<f64> {
    let (nu, nv) = (norm(u), norm(v));
    if nu < 1e-9 || nv < 1e-9 {
        return None;
    }
    let cos = ((u[0] * v[0] + u[1] * v[1]) / (nu * nv)).clamp(-1.0, 1.0);
    Some(cos.acos().to_degrees())
}

/// Acute angle between two lines given by direction vectors, degrees in [0, 90].
fn acute_angle(u: P2, v: P2) -> Option<f64> {
    angle_between(u, v).map(|a| if a > 90.0 { 180.0 - a } else { a })
}

fn need(points: &HipPoints, names: &str) -> Result<Vec<P2>, String> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for ch in names.chars() {
        let k = (ch as u8 - b'a') as usize;
        match points.get(k) {
            Some(p) => out.push(p),
            None => missing.push(format!("{ch} ({})", POINT_MEANINGS[k])),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!("point{} {} not found", if missing.len() > 1 { "s" } else { "" }, missing.join(", ")))
    }
}

/// The prosthesis centre: the midpoint of b and j when both exist, else c.
pub fn prosthesis_centre(points: &HipPoints) -> Option<P2> {
    match (points.b, points.j) {
        (Some(b), Some(j)) => Some([(b[0] + j[0]) / 2.0, (b[1] + j[1]) / 2.0]),
        _ => points.c,
    }
}

/// Teardrop-line frame: unit vector along e->f and the unit normal pointing cranially (image up).
fn teardrop_frame(e: P2, f: P2) -> Option<(P2, P2)> {
    let t = sub(f, e);
    let n = norm(t);
    if n < 1e-9 {
        return None;
    }
    let u = [t[0] / n, t[1] / n];
    let mut up = [u[1], -u[0]];
    if up[1] > 0.0 {
        up = [-up[0], -up[1]];
    }
    Some((u, up))
}

impl HipParameters {
    /// Points in mm (image plane). A parameter whose points are missing or
    /// degenerate is `NotMeasured` with the reason.
    pub fn from_points(p: &HipPoints) -> HipParameters {
        let centre = prosthesis_centre(p);
        let abduction = need(p, "bjgh")
            .and_then(|v| acute_angle(sub(v[0], v[1]), sub(v[3], v[2])).ok_or_else(|| "cup diameter or ischial line has zero length".to_string()));
        let coverage = need(p, "abj").and_then(|v| {
            let c = centre.expect("b and j exist");
            let alpha = angle_between(sub(v[1], c), sub(v[0], c)).ok_or_else(|| "contact point coincides with the prosthesis centre".to_string())?;
            Ok(100.0 * (180.0 - alpha) / 180.0)
        });
        let frame = need(p, "ef").and_then(|v| teardrop_frame(v[0], v[1]).ok_or_else(|| "teardrops coincide".to_string()));
        let centre_err = || "prosthesis centre not found (needs b and j, or c)".to_string();
        let vertical = frame.clone().and_then(|(_, up)| {
            let e = p.e.expect("frame needs e");
            let c = centre.ok_or_else(centre_err)?;
            let d = need(p, "d")?[0];
            let h = |q: P2| sub(q, e)[0] * up[0] + sub(q, e)[1] * up[1];
            Ok(h(c) - h(d))
        });
        let horizontal = frame.and_then(|(u, _)| {
            let i = need(p, "i")?[0];
            let c = centre.ok_or_else(centre_err)?;
            let d = need(p, "d")?[0];
            let l = |q: P2| (sub(q, i)[0] * u[0] + sub(q, i)[1] * u[1]).abs();
            Ok(l(c) - l(d))
        });
        let m = |r: Result<f64, String>| match r {
            Ok(v) => Measured::Value(v),
            Err(e) => Measured::NotMeasured(e),
        };
        HipParameters { abduction_deg: m(abduction), coverage_pct: m(coverage), vertical_offset_mm: m(vertical), horizontal_offset_mm: m(horizontal) }
    }
}

/// Risk thresholds (the source's values as defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HipRiskRules {
    pub abduction_min_deg: f64,
    pub abduction_max_deg: f64,
    pub coverage_min_pct: f64,
    pub vertical_low_mm: f64,
    pub vertical_high_mm: f64,
    pub horizontal_medial_mm: f64,
    pub horizontal_lateral_mm: f64,
}

impl Default for HipRiskRules {
    fn default() -> Self {
        HipRiskRules {
            abduction_min_deg: 30.0,
            abduction_max_deg: 50.0,
            coverage_min_pct: 70.0,
            vertical_low_mm: -6.0,
            vertical_high_mm: 6.0,
            horizontal_medial_mm: -5.0,
            horizontal_lateral_mm: 5.0,
        }
    }
}

/// The outcome of one risk rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Acceptable,
    AbductionOutOfRange,
    LowCoverage,
    TooLow,
    TooHigh,
    TooMedial,
    TooLateral,
    /// The parameter was not measured: no flag is raised on a guess.
    NotAssessed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HipRisks {
    pub abduction: Risk,
    pub coverage: Risk,
    pub vertical: Risk,
    pub horizontal: Risk,
}

impl HipRiskRules {
    pub fn assess(&self, p: &HipParameters) -> HipRisks {
        let band = |m: &Measured, lo: f64, hi: f64, below: Risk, above: Risk| match m.value() {
            None => Risk::NotAssessed,
            Some(v) if v < lo => below,
            Some(v) if v > hi => above,
            Some(_) => Risk::Acceptable,
        };
        HipRisks {
            abduction: band(&p.abduction_deg, self.abduction_min_deg, self.abduction_max_deg, Risk::AbductionOutOfRange, Risk::AbductionOutOfRange),
            coverage: match p.coverage_pct.value() {
                None => Risk::NotAssessed,
                Some(v) if v > self.coverage_min_pct => Risk::Acceptable,
                Some(_) => Risk::LowCoverage,
            },
            vertical: band(&p.vertical_offset_mm, self.vertical_low_mm, self.vertical_high_mm, Risk::TooLow, Risk::TooHigh),
            horizontal: band(&p.horizontal_offset_mm, self.horizontal_medial_mm, self.horizontal_lateral_mm, Risk::TooMedial, Risk::TooLateral),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(m: &Measured, want: f64) {
        let v = m.value().unwrap_or_else(|| panic!("not measured: {m:?}"));
        assert!((v - want).abs() < 1e-9, "{v} vs {want}");
    }

    /// A right-sided cup (image left) on a level pelvis, by hand:
    /// teardrops e (-50, 0), f (50, 0); ischia g (-50, 45), h (50, 45); symphysis i (0, 25).
    /// Cup centre c = (-85, -25), radius 25, abduction 40 deg: b (lateral, image-left, up)
    /// = c + 25(-cos 40, -sin 40), j = c + 25(cos 40, sin 40). Contralateral d = (83, -20).
    fn level_case(contact_deg_from_b: f64) -> HipPoints {
        let c = [-85.0, -25.0];
        let (s, co) = 40f64.to_radians().sin_cos();
        let b = [c[0] - 25.0 * co, c[1] - 25.0 * s];
        let j = [c[0] + 25.0 * co, c[1] + 25.0 * s];
        // contact point: rotate c->b towards the dome (upwards, towards medial) by the bare angle
        let ang = (180.0 + 40.0 + contact_deg_from_b).to_radians();
        let a = [c[0] + 25.0 * ang.cos(), c[1] + 25.0 * ang.sin()];
        HipPoints {
            a: Some(a),
            b: Some(b),
            c: Some(c),
            d: Some([83.0, -20.0]),
            e: Some([-50.0, 0.0]),
            f: Some([50.0, 0.0]),
            g: Some([-50.0, 45.0]),
            h: Some([50.0, 45.0]),
            i: Some([0.0, 25.0]),
            j: Some(j),
        }
    }

    #[test]
    fn level_pelvis_by_hand() {
        let p = HipParameters::from_points(&level_case(36.0));
        close(&p.abduction_deg, 40.0);
        close(&p.coverage_pct, 80.0); // (180 - 36) / 180
        close(&p.vertical_offset_mm, 5.0); // h1 = 25, h0 = 20
        close(&p.horizontal_offset_mm, 2.0); // L1 = 85, L0 = 83
        let risks = HipRiskRules::default().assess(&p);
        assert_eq!(risks, HipRisks { abduction: Risk::Acceptable, coverage: Risk::Acceptable, vertical: Risk::Acceptable, horizontal: Risk::Acceptable });
    }

    #[test]
    fn tilted_pelvis_gives_the_same_parameters() {
        // rotate and shift every point: the parameters are invariant
        let base = level_case(90.0);
        let (s, c) = 7f64.to_radians().sin_cos();
        let mut rot = HipPoints::default();
        for k in 0..10 {
            rot.set(k, base.get(k).map(|p| [c * p[0] - s * p[1] + 300.0, s * p[0] + c * p[1] + 200.0]));
        }
        let p = HipParameters::from_points(&rot);
        close(&p.abduction_deg, 40.0);
        close(&p.coverage_pct, 50.0);
        close(&p.vertical_offset_mm, 5.0);
        close(&p.horizontal_offset_mm, 2.0);
        assert_eq!(HipRiskRules::default().assess(&p).coverage, Risk::LowCoverage);
    }

    #[test]
    fn acute_angle_and_risk_bands() {
        // a steep cup: 60 deg abduction is out of range; ischial line reversed changes nothing
        let mut p = level_case(10.0);
        let c = [-85.0, -25.0];
        let (s, co) = 60f64.to_radians().sin_cos();
        p.b = Some([c[0] - 25.0 * co, c[1] - 25.0 * s]);
        p.j = Some([c[0] + 25.0 * co, c[1] + 25.0 * s]);
        std::mem::swap(&mut p.g, &mut p.h);
        p.d = Some([78.0, -32.0]);
        let m = HipParameters::from_points(&p);
        close(&m.abduction_deg, 60.0);
        close(&m.vertical_offset_mm, -7.0);
        close(&m.horizontal_offset_mm, 7.0);
        let r = HipRiskRules::default().assess(&m);
        assert_eq!((r.abduction, r.vertical, r.horizontal), (Risk::AbductionOutOfRange, Risk::TooLow, Risk::TooLateral));
    }

    #[test]
    fn missing_points_are_reported_and_never_flagged() {
        let mut p = level_case(36.0);
        p.a = None;
        p.d = None;
        let m = HipParameters::from_points(&p);
        close(&m.abduction_deg, 40.0);
        match &m.coverage_pct {
            Measured::NotMeasured(why) => assert!(why.contains("a (cup / native bone contact point)"), "{why}"),
            v => panic!("{v:?}"),
        }
        match &m.vertical_offset_mm {
            Measured::NotMeasured(why) => assert!(why.contains("d (contralateral"), "{why}"),
            v => panic!("{v:?}"),
        }
        let r = HipRiskRules::default().assess(&m);
        assert_eq!((r.coverage, r.vertical, r.horizontal), (Risk::NotAssessed, Risk::NotAssessed, Risk::NotAssessed));
        // no prosthesis at all: nothing measured
        let none = HipPoints { e: p.e, f: p.f, g: p.g, h: p.h, i: p.i, d: Some([83.0, -20.0]), ..Default::default() };
        let m = HipParameters::from_points(&none);
        assert!(m.abduction_deg.value().is_none() && m.horizontal_offset_mm.value().is_none());
    }
}
