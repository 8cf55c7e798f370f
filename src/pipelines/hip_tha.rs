//! `hip-tha` (MODELS.md 3, source seeds/002): an AP pelvis radiograph after
//! total hip arthroplasty -> the ten keypoints a..j (SSD512, `models::hip_tha`)
//! -> the four radiological parameters and the risk rules (`hip_geometry`)
//! -> findings (TID 1500 content) and an overlay (GSPS) per image.
//!
//! Nothing here writes DICOM: `encode::results` turns the output into SR and
//! presentation state objects.
//!
//! No measurement rests on a guess: a keypoint below the score threshold is
//! "not found", a parameter that needs it is reported as not measured with
//! the reason, and its risk rule is "not assessed". An image whose cup points
//! are not found is reported as "no prosthesis detected".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::hip_geometry::{prosthesis_centre, HipParameters, HipPoints, HipRiskRules, HipRisks, Measured, Risk, P2, POINT_MEANINGS, POINT_NAMES};
use super::report::{PipelineOutput, Report};
use super::trained::{load_trained, read_weights_meta};
use crate::findings::*;
use crate::imaging::decode::{decode_object, open, ColorMode};
use crate::imaging::geometry::{pixel_spacing, SpacingSource};
use crate::models::hip_tha::{preprocess, HipPreprocessConfig, HipSsd, HipSsdConfig};

pub const NAME: &str = "hip-tha";

/// `[pipelines.hip-tha]` in the node config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HipThaSettings {
    /// Weights prefix: `PREFIX.safetensors` + `PREFIX.json`. Relative paths
    /// are tried against the working directory, then next to the executable's
    /// source tree (`weights/` of the repository).
    pub weights: PathBuf,
    /// Minimum keypoint score; unset: the value stored with the weights.
    pub min_score: Option<f64>,
    /// Modalities of the images analysed in a study.
    pub modalities: Vec<String>,
    /// View Position values that are not an AP/PA pelvis and are skipped.
    pub skip_view_positions: Vec<String>,
    /// The source's risk thresholds.
    pub risk: HipRiskRules,
}

impl Default for HipThaSettings {
    fn default() -> Self {
        HipThaSettings {
            weights: PathBuf::from("weights/hip-tha"),
            min_score: None,
            modalities: vec!["DX".into(), "CR".into()],
            skip_view_positions: vec!["LL".into(), "RL".into(), "LLD".into(), "RLD".into(), "LAT".into(), "LATERAL".into()],
            risk: HipRiskRules::default(),
        }
    }
}

/// One keypoint as found on the source image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundPoint {
    pub name: &'static str,
    pub meaning: &'static str,
    /// Image coordinates (column, row), DICOM SCOORD convention: (0, 0) is
    /// the top-left corner of the first pixel. None: below the threshold.
    pub position: Option<[f64; 2]>,
    /// The best score of this point's class anywhere in the image.
    pub score: f64,
}

/// What `hip-tha` found on one image (printed by `ainode run`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HipImageAnalysis {
    pub file: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub prosthesis_detected: bool,
    /// The patient's side of the measured cup ("right" / "left"); None when
    /// no cup was found or Patient Orientation does not say which way the
    /// rows run.
    pub measured_side: Option<&'static str>,
    pub points: Vec<FoundPoint>,
    pub parameters: HipParameters,
    pub risks: HipRisks,
    /// mm per pixel (column, row) the parameters were measured with.
    pub spacing_mm: [f64; 2],
    pub spacing_source: String,
    pub rows: usize,
    pub cols: usize,
    /// Wall time of the steps, ms (reading + decoding, pre-processing, network, total).
    pub timing_ms: Timing,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timing {
    pub decode: f64,
    pub preprocess: f64,
    pub network: f64,
    pub total: f64,
}

pub struct HipThaPipeline {
    net: HipSsd,
    preprocess: HipPreprocessConfig,
    settings: HipThaSettings,
    min_score: f64,
    pub(super) algorithm: AlgorithmIdentity,
    device: Device,
}

impl HipThaPipeline {
    pub fn load(settings: &HipThaSettings, device: &Device) -> anyhow::Result<HipThaPipeline> {
        let (prefix, meta) = read_weights_meta(NAME, &settings.weights)?;
        let arch = &meta.architecture;
        let network: HipSsdConfig = serde_json::from_value(arch["network"].clone()).context("hip-tha weights: architecture.network")?;
        let preprocess: HipPreprocessConfig = serde_json::from_value(arch["preprocess"].clone()).context("hip-tha weights: architecture.preprocess")?;
        let trained = load_trained(&prefix, meta, device, |vb| HipSsd::load(vb, &network).map(|_| ()))?;
        // inference only: constant weights
        let net = HipSsd::load(VarBuilder::from_tensors(trained.tensors, DType::F32, device), &network)?;
        let min_score = settings.min_score.unwrap_or(network.min_score);
        let mut algorithm = AlgorithmIdentity::new("ainode hip-tha SSD512", &trained.meta.model_version);
        algorithm.weights_sha256 = Some(trained.sha256);
        Ok(HipThaPipeline { net, preprocess, settings: settings.clone(), min_score, algorithm, device: device.clone() })
    }

    /// Whether an instance is an image this pipeline reads (by its header).
    fn wants(&self, obj: &dicom_object::DefaultDicomObject) -> bool {
        let get = |tag| obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_ascii_uppercase()).unwrap_or_default();
        use dicom_dictionary_std::tags;
        let modality = get(tags::MODALITY);
        let view = get(tags::VIEW_POSITION);
        obj.element(tags::PIXEL_DATA).is_ok()
            && self.settings.modalities.iter().any(|m| m.eq_ignore_ascii_case(&modality))
            && !self.settings.skip_view_positions.iter().any(|v| v.eq_ignore_ascii_case(&view))
    }

    /// Keypoints, parameters and risks of one radiograph.
    pub fn analyze_image(&self, file: &Path) -> anyhow::Result<Option<HipImageAnalysis>> {
        let t0 = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1000.0;
        let obj = open(file)?;
        if !self.wants(&obj) {
            return Ok(None);
        }
        let attr = |tag| obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_string()).unwrap_or_default();
        let (class, uid) = (attr(dicom_dictionary_std::tags::SOP_CLASS_UID), attr(dicom_dictionary_std::tags::SOP_INSTANCE_UID));
        let orientation = attr(dicom_dictionary_std::tags::PATIENT_ORIENTATION);
        let sp = pixel_spacing(&obj);
        if sp.source == SpacingSource::Unknown {
            bail!("{} (SOP Instance {uid}): no Pixel Spacing or Imager Pixel Spacing; hip-tha measures in mm", file.display());
        }
        let img = decode_object(&obj, ColorMode::Luminance).with_context(|| format!("decoding {} (SOP Instance {uid})", file.display()))?;
        let mut timing = Timing { decode: ms(t0), ..Default::default() };
        let t1 = std::time::Instant::now();
        let mut input = preprocess(img.frame(0), img.rows, img.cols, [sp.row_mm, sp.col_mm], &self.preprocess, self.net.config().input_size)
            .with_context(|| format!("pre-processing {} (SOP Instance {uid})", file.display()))?;
        let n = self.net.config().input_size;
        // the pixels go to the network; the point mapping stays in `input`
        let x = Tensor::from_vec(std::mem::take(&mut input.pixels), (1, 1, n, n), &self.device)?;
        timing.preprocess = ms(t1);
        let t2 = std::time::Instant::now();
        let kps = self.net.keypoints_with_threshold(&x, 0.0)?.remove(0);
        timing.network = ms(t2);
        let spacing = [sp.col_mm, sp.row_mm];
        let (cols, rows) = (img.cols as f64, img.rows as f64);
        let mut points = Vec::with_capacity(POINT_NAMES.len());
        let mut found_mm = HipPoints::default();
        for (k, kp) in kps.iter().enumerate() {
            let score = kp.map(|p| p.score).unwrap_or(0.0);
            // a point must be confident and on the image
            let position = kp.filter(|p| p.score >= self.min_score).map(|p| input.to_source_mm(p.xy)).map(|mm| [mm[0] / spacing[0], mm[1] / spacing[1]]);
            let position = position.filter(|p| (0.0..=cols).contains(&p[0]) && (0.0..=rows).contains(&p[1]));
            found_mm.set(k, position.map(|p| [p[0] * spacing[0], p[1] * spacing[1]]));
            points.push(FoundPoint { name: POINT_NAMES[k], meaning: POINT_MEANINGS[k], position, score });
        }
        let prosthesis = found_mm.b.is_some() && found_mm.j.is_some() || found_mm.c.is_some();
        let mut parameters = HipParameters::from_points(&found_mm);
        if !prosthesis {
            let best = ["b", "c", "j"].iter().map(|n| points.iter().find(|p| p.name == *n).map(|p| p.score).unwrap_or(0.0)).fold(0.0, f64::max);
            let why = format!(
                "no prosthesis detected (best cup keypoint score {best:.2} is below the threshold {:.2}); nothing of the cup can be measured",
                self.min_score
            );
            for m in [&mut parameters.abduction_deg, &mut parameters.coverage_pct, &mut parameters.vertical_offset_mm, &mut parameters.horizontal_offset_mm] {
                *m = Measured::NotMeasured(why.clone());
            }
        }
        let risks = self.settings.risk.assess(&parameters);
        let side = if prosthesis { measured_side(&found_mm, img.cols as f64 * spacing[0], &orientation) } else { None };
        timing.total = ms(t0);
        Ok(Some(HipImageAnalysis {
            file: file.to_path_buf(),
            sop_class_uid: class,
            sop_instance_uid: uid,
            prosthesis_detected: prosthesis,
            measured_side: side,
            points,
            parameters,
            risks,
            spacing_mm: spacing,
            spacing_source: format!("{:?}", sp.source),
            rows: img.rows,
            cols: img.cols,
            timing_ms: timing,
        }))
    }

    /// Every suitable image of a study; files that are not images of the
    /// right modality are skipped. At least one image must be analysed.
    pub fn analyze(&self, files: &[PathBuf]) -> anyhow::Result<PipelineOutput> {
        let mut reports = Vec::new();
        for f in files {
            let Some(a) = self.analyze_image(f)? else { continue };
            let source = SourceFrame { sop_class_uid: a.sop_class_uid.clone(), sop_instance_uid: a.sop_instance_uid.clone(), frame_number: None };
            let findings = findings(&a, &source, &self.algorithm, &self.settings.risk);
            let overlay = overlay(&a, &source);
            let summary = serde_json::to_value(&a)?;
            reports.push(Report { sources: vec![f.clone()], findings: Some(findings), overlay: Some(overlay), segmentation: None, summary });
        }
        if reports.is_empty() {
            bail!("hip-tha: none of the {} instances is a {} image (AP pelvis)", files.len(), self.settings.modalities.join("/"));
        }
        Ok(PipelineOutput { pipeline: NAME.into(), model_version: self.algorithm.version.clone(), reports })
    }
}

/// The patient's side of the measured cup: its centre (c, or the middle of b
/// and j) against the symphysis i (the image's middle without i), turned into
/// the patient's side by Patient Orientation's first value, the direction the
/// rows run in ("L\\F" on an AP radiograph: columns go to the patient's left).
/// Points in mm; `width_mm` the image's width.
fn measured_side(p: &HipPoints, width_mm: f64, patient_orientation: &str) -> Option<&'static str> {
    let cup = p.c.or_else(|| Some([(p.b?[0] + p.j?[0]) / 2.0, 0.0]))?[0];
    let middle = p.i.map(|i| i[0]).unwrap_or(width_mm / 2.0);
    let towards_left = match patient_orientation.split('\\').next()?.trim().chars().next()? {
        'L' => true,
        'R' => false,
        _ => return None,
    };
    // a cup at larger columns than the middle lies towards where the rows run
    Some(if (cup > middle) == towards_left { "left" } else { "right" })
}

// ---------------------------------------------------------------------------
// Codes. No standard code exists for these landmarks and parameters; they
// use the local scheme 99AINODE (private schemes start with "99").
// ---------------------------------------------------------------------------

const SCHEME: &str = "99AINODE";

fn point_code(k: usize) -> Code {
    Code::new(&format!("HIPTHA-P{}", POINT_NAMES[k].to_ascii_uppercase()), SCHEME, &format!("THA keypoint {}: {}", POINT_NAMES[k], POINT_MEANINGS[k]))
}

/// (concept, unit, tracking id) of the four parameters.
fn parameter_codes() -> [(Code, Code, &'static str); 4] {
    [
        (Code::new("HIPTHA-ABD", SCHEME, "Acetabular cup abduction angle"), Code::ucum("deg", "degree"), "Cup abduction angle"),
        (Code::new("HIPTHA-COV", SCHEME, "Acetabular cup bone coverage"), Code::ucum("%", "percent"), "Cup coverage"),
        (Code::new("HIPTHA-VOFF", SCHEME, "Vertical centre of rotation offset"), codes::mm(), "Vertical COR offset"),
        (Code::new("HIPTHA-HOFF", SCHEME, "Horizontal centre of rotation offset"), codes::mm(), "Horizontal COR offset"),
    ]
}

fn risk_concepts() -> [Code; 4] {
    [
        Code::new("HIPTHA-ABD-RISK", SCHEME, "Cup abduction angle assessment"),
        Code::new("HIPTHA-COV-RISK", SCHEME, "Cup coverage assessment"),
        Code::new("HIPTHA-VOFF-RISK", SCHEME, "Vertical offset assessment"),
        Code::new("HIPTHA-HOFF-RISK", SCHEME, "Horizontal offset assessment"),
    ]
}

fn risk_code(r: Risk, rules: &HipRiskRules) -> Code {
    match r {
        Risk::Acceptable => Code::new("17621005", "SCT", "Normal"),
        Risk::AbductionOutOfRange => {
            Code::new("HIPTHA-R-ABD", SCHEME, &format!("Abduction outside {}-{} deg", rules.abduction_min_deg, rules.abduction_max_deg))
        }
        Risk::LowCoverage => Code::new("HIPTHA-R-COV", SCHEME, &format!("Coverage not above {} %", rules.coverage_min_pct)),
        Risk::TooLow => Code::new("HIPTHA-R-LOW", SCHEME, "Centre of rotation too low"),
        Risk::TooHigh => Code::new("HIPTHA-R-HIGH", SCHEME, "Centre of rotation too high"),
        Risk::TooMedial => Code::new("HIPTHA-R-MED", SCHEME, "Centre of rotation too medial"),
        Risk::TooLateral => Code::new("HIPTHA-R-LAT", SCHEME, "Centre of rotation too lateral"),
        Risk::NotAssessed => Code::new("373068000", "SCT", "Undetermined"),
    }
}

fn risk_label(r: Risk) -> &'static str {
    match r {
        Risk::Acceptable => "acceptable",
        Risk::AbductionOutOfRange => "RISK: out of range",
        Risk::LowCoverage => "RISK: low coverage",
        Risk::TooLow => "RISK: too low",
        Risk::TooHigh => "RISK: too high",
        Risk::TooMedial => "RISK: too medial",
        Risk::TooLateral => "RISK: too lateral",
        Risk::NotAssessed => "not assessed",
    }
}

fn measured(p: &HipParameters) -> [&Measured; 4] {
    [&p.abduction_deg, &p.coverage_pct, &p.vertical_offset_mm, &p.horizontal_offset_mm]
}

fn risks(r: &HipRisks) -> [Risk; 4] {
    [r.abduction, r.coverage, r.vertical, r.horizontal]
}

// ---------------------------------------------------------------------------
// Lines (image coordinates)
// ---------------------------------------------------------------------------

fn point(a: &HipImageAnalysis, name: &str) -> Option<P2> {
    a.points.iter().find(|p| p.name == name).and_then(|p| p.position)
}

/// The found points (image pixels) in `hip_geometry`'s form.
fn found_points(a: &HipImageAnalysis) -> HipPoints {
    let mut pts = HipPoints::default();
    for (k, p) in a.points.iter().enumerate() {
        pts.set(k, p.position);
    }
    pts
}

const A_LINE: &str = "a-line (cup diameter b-j)";
const ISCHIAL_LINE: &str = "Ischial line g-h";
const TEARDROP_LINE: &str = "Teardrop line e-f";
const MIDLINE: &str = "Pelvic midline";

/// The pelvic midline: through the symphysis i, perpendicular to the
/// teardrop line (in mm, so that anisotropic pixels keep the right angle),
/// from 60 mm above the teardrop line to 40 mm below i, clipped to the image.
fn midline(a: &HipImageAnalysis) -> Option<[P2; 2]> {
    let (rows, cols) = (a.rows as f64, a.cols as f64);
    let (e, f, i) = (point(a, "e")?, point(a, "f")?, point(a, "i")?);
    let s = a.spacing_mm;
    let mm = |p: P2| [p[0] * s[0], p[1] * s[1]];
    let (em, fm, im) = (mm(e), mm(f), mm(i));
    let t = [fm[0] - em[0], fm[1] - em[1]];
    let len = t[0].hypot(t[1]);
    if len < 1e-6 {
        return None;
    }
    let mut down = [-t[1] / len, t[0] / len];
    if down[1] < 0.0 {
        down = [-down[0], -down[1]];
    }
    // height of i below the teardrop line
    let below = (im[0] - em[0]) * down[0] + (im[1] - em[1]) * down[1];
    let top = [im[0] - down[0] * (below + 60.0), im[1] - down[1] * (below + 60.0)];
    let bottom = [im[0] + down[0] * 40.0, im[1] + down[1] * 40.0];
    let px = |p: P2| [(p[0] / s[0]).clamp(0.0, cols), (p[1] / s[1]).clamp(0.0, rows)];
    Some([px(top), px(bottom)])
}

/// Named lines of the report and the overlay: (tracking id, points).
fn lines(a: &HipImageAnalysis) -> Vec<(&'static str, Vec<P2>)> {
    let mut out = Vec::new();
    let mut pair = |name, p: &str, q: &str| {
        if let (Some(p), Some(q)) = (point(a, p), point(a, q)) {
            out.push((name, vec![p, q]));
        }
    };
    pair(A_LINE, "b", "j");
    pair(ISCHIAL_LINE, "g", "h");
    pair(TEARDROP_LINE, "e", "f");
    if let Some(m) = midline(a) {
        out.push((MIDLINE, m.to_vec()));
    }
    out
}

/// The line parameter `k` (abduction, coverage, vertical, horizontal offset)
/// is drawn on, for its measurement group; `lines` are `lines(a)`.
fn parameter_line(k: usize, a: &HipImageAnalysis, lines: &[(&str, Vec<P2>)]) -> Option<Vec<P2>> {
    let want = match k {
        0 => A_LINE,
        2 => TEARDROP_LINE,
        3 => MIDLINE,
        // coverage: the b-line from the prosthesis centre to the contact point a
        _ => return Some(vec![prosthesis_centre(&found_points(a))?, point(a, "a")?]),
    };
    lines.iter().find(|(n, _)| *n == want).map(|(_, p)| p.clone())
}

// ---------------------------------------------------------------------------
// Findings and overlay
// ---------------------------------------------------------------------------

/// The TID 1500 content of one image: a landmark per found point, a group per
/// line, one group per parameter (its line as the region, when found), and
/// report-level evaluations: one per risk rule, and the reason for each
/// parameter that was not measured.
pub fn findings(a: &HipImageAnalysis, source: &SourceFrame, algorithm: &AlgorithmIdentity, rules: &HipRiskRules) -> Findings {
    let mut f = Findings::new(algorithm.clone());
    for (k, p) in a.points.iter().enumerate() {
        if let Some(pos) = p.position {
            f.landmarks.push(Landmark {
                label: format!("Keypoint {}", p.name),
                concept: point_code(k),
                location: LandmarkLocation::Image { source: source.clone(), point: pos },
            });
        }
    }
    let params = parameter_codes();
    let lines = lines(a);
    for (k, ((concept, unit, id), m)) in params.iter().zip(measured(&a.parameters)).enumerate() {
        let mut g = MeasurementGroup::new(id);
        g.finding = Some(concept.clone());
        if let Some(side) = a.measured_side {
            g.finding_site = Some(Code::new("24136001", "SCT", "Hip joint"));
            g.laterality = Some(if side == "right" { Code::new("24028007", "SCT", "Right") } else { Code::new("7771000", "SCT", "Left") });
        }
        g.roi = parameter_line(k, a, &lines).map(|points| Roi::Image(ImageRegion { source: source.clone(), graphic_type: GraphicType::Polyline, points }));
        if let Measured::Value(v) = m {
            g.measurements.push(Measurement::new(concept.clone(), *v, unit.clone()));
        }
        f.groups.push(g);
    }
    // the one line no parameter group carries
    if let Some((name, points)) = lines.into_iter().find(|(n, _)| *n == ISCHIAL_LINE) {
        let mut g = MeasurementGroup::new(name);
        g.finding = Some(Code::new("HIPTHA-ISCHIAL", SCHEME, "Ischial line"));
        g.roi = Some(Roi::Image(ImageRegion { source: source.clone(), graphic_type: GraphicType::Polyline, points }));
        f.groups.push(g);
    }
    for (concept, r) in risk_concepts().into_iter().zip(risks(&a.risks)) {
        f.evaluations.push(QualitativeEvaluation::coded(concept, risk_code(r, rules)));
    }
    for ((concept, _, _), m) in params.iter().zip(measured(&a.parameters)) {
        if let Measured::NotMeasured(why) = m {
            f.evaluations.push(QualitativeEvaluation::text(concept.clone(), format!("not measured: {why}")));
        }
    }
    f
}

fn fmt_value(m: &Measured, unit: &str) -> String {
    match m {
        Measured::Value(v) => format!("{v:.1} {unit}"),
        Measured::NotMeasured(_) => "not measured".into(),
    }
}

/// The GSPS content of one image: the points with their letters, the four
/// lines, and a text box with the parameters and risk outcomes.
pub fn overlay(a: &HipImageAnalysis, source: &SourceFrame) -> Overlay {
    let (rows, cols) = (a.rows as f64, a.cols as f64);
    let mut graphics = Vec::new();
    let mut texts = Vec::new();
    for p in &a.points {
        if let Some(pos) = p.position {
            graphics.push(Graphic { graphic_type: GraphicType::Point, points: vec![pos], filled: false });
            let anchor = [pos[0].clamp(0.0, cols), pos[1].clamp(0.0, rows)];
            texts.push(TextLabel { text: p.name.to_string(), anchor: Some(anchor), bounding_box: None });
        }
    }
    for (name, points) in lines(a) {
        graphics.push(Graphic { graphic_type: GraphicType::Polyline, points: points.clone(), filled: false });
        let mid = [(points[0][0] + points[1][0]) / 2.0, (points[0][1] + points[1][1]) / 2.0];
        texts.push(TextLabel { text: name.to_string(), anchor: Some(mid), bounding_box: None });
    }
    let p = &a.parameters;
    let r = &a.risks;
    let summary = if a.prosthesis_detected {
        let hip = match a.measured_side {
            Some("right") => "Right hip: ",
            Some(_) => "Left hip: ",
            None => "",
        };
        format!(
            "{hip}Abduction {} ({}); coverage {} ({}); vertical offset {} ({}); horizontal offset {} ({})",
            fmt_value(&p.abduction_deg, "deg"),
            risk_label(r.abduction),
            fmt_value(&p.coverage_pct, "%"),
            risk_label(r.coverage),
            fmt_value(&p.vertical_offset_mm, "mm"),
            risk_label(r.vertical),
            fmt_value(&p.horizontal_offset_mm, "mm"),
            risk_label(r.horizontal),
        )
    } else {
        "No hip prosthesis detected: parameters not measured".to_string()
    };
    // a text box along the top edge, inside the image
    let top_left = [cols * 0.02, rows * 0.02];
    let bottom_right = [cols * 0.98, rows * 0.02 + (rows * 0.05).max(20.0).min(rows * 0.2)];
    texts.push(TextLabel { text: summary, anchor: None, bounding_box: Some([top_left, bottom_right]) });
    Overlay {
        image: source.clone(),
        layer: "HIP_THA".into(),
        layer_description: Some("hip-tha keypoints, lines and parameters".into()),
        graphics,
        texts,
        window: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(with_cup: bool) -> HipImageAnalysis {
        // the hand case of hip_geometry, in pixels of 0.5 mm on a 1000 x 800 image,
        // shifted so that everything is on the image
        let mm: [(f64, f64); 10] = [
            (-88.0, -49.9),
            (-104.2, -41.1),
            (-85.0, -25.0),
            (83.0, -20.0),
            (-50.0, 0.0),
            (50.0, 0.0),
            (-50.0, 45.0),
            (50.0, 45.0),
            (0.0, 25.0),
            (-65.8, -8.9),
        ];
        let points = mm
            .iter()
            .enumerate()
            .map(|(k, (x, y))| {
                let cup = matches!(k, 0 | 1 | 2 | 9);
                FoundPoint {
                    name: POINT_NAMES[k],
                    meaning: POINT_MEANINGS[k],
                    position: (with_cup || !cup).then_some([(x + 250.0) / 0.5, (y + 200.0) / 0.5]),
                    score: if with_cup || !cup { 0.9 } else { 0.05 },
                }
            })
            .collect::<Vec<_>>();
        let mut found = HipPoints::default();
        for (k, p) in points.iter().enumerate() {
            found.set(k, p.position.map(|q| [q[0] * 0.5, q[1] * 0.5]));
        }
        let parameters = HipParameters::from_points(&found);
        let risks = HipRiskRules::default().assess(&parameters);
        HipImageAnalysis {
            file: "x.dcm".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
            sop_instance_uid: "1.2.3".into(),
            prosthesis_detected: with_cup,
            measured_side: with_cup.then_some("right"),
            points,
            parameters,
            risks,
            spacing_mm: [0.5, 0.5],
            spacing_source: "ImagerPixelSpacing".into(),
            rows: 800,
            cols: 1000,
            timing_ms: Timing::default(),
        }
    }

    fn src() -> SourceFrame {
        SourceFrame { sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(), sop_instance_uid: "1.2.3".into(), frame_number: None }
    }

    #[test]
    fn findings_hold_points_lines_measurements_and_one_evaluation_per_rule() {
        let a = analysis(true);
        let f = findings(&a, &src(), &AlgorithmIdentity::new("t", "1"), &HipRiskRules::default());
        assert_eq!(f.landmarks.len(), 10);
        let measured: Vec<_> = f.groups.iter().flat_map(|g| &g.measurements).collect();
        assert_eq!(measured.len(), 4);
        let abd = measured.iter().find(|m| m.unit.value == "deg").unwrap();
        assert!((abd.value - a.parameters.abduction_deg.value().unwrap()).abs() < 1e-12);
        assert_eq!(f.evaluations.len(), 4, "one per risk rule, no reasons when all is measured");
        // every parameter group has its line
        assert!(f.groups.iter().take(4).all(|g| matches!(&g.roi, Some(Roi::Image(r)) if r.graphic_type == GraphicType::Polyline)));
        assert!(f.groups.iter().any(|g| g.tracking_id == ISCHIAL_LINE));
        // the parameters are of the right hip
        assert!(f
            .groups
            .iter()
            .take(4)
            .all(|g| g.finding_site.as_ref().is_some_and(|c| c.value == "24136001") && g.laterality.as_ref().is_some_and(|c| c.value == "24028007")));
        let mut unknown = a.clone();
        unknown.measured_side = None;
        let f = findings(&unknown, &src(), &AlgorithmIdentity::new("t", "1"), &HipRiskRules::default());
        assert!(f.groups.iter().all(|g| g.finding_site.is_none() && g.laterality.is_none()));
    }

    #[test]
    fn the_measured_side_follows_patient_orientation() {
        let mut p = HipPoints { c: Some([80.0, 100.0]), i: Some([150.0, 140.0]), ..Default::default() };
        // AP as displayed by convention: columns run to the patient's left, so a cup on the image's left is the right hip
        assert_eq!(measured_side(&p, 300.0, "L\\F"), Some("right"));
        assert_eq!(measured_side(&p, 300.0, "R\\F"), Some("left"));
        assert_eq!(measured_side(&p, 300.0, "LH\\F"), Some("right"));
        assert_eq!(measured_side(&p, 300.0, ""), None);
        assert_eq!(measured_side(&p, 300.0, "A\\F"), None);
        // without c: the middle of b and j; without i: the image's middle
        p.c = None;
        assert_eq!(measured_side(&p, 300.0, "L\\F"), None);
        (p.b, p.j, p.i) = (Some([200.0, 90.0]), Some([240.0, 110.0]), None);
        assert_eq!(measured_side(&p, 300.0, "L\\F"), Some("left"));
    }

    #[test]
    fn no_cup_means_no_measurement_no_flag_and_a_reason() {
        let mut a = analysis(false);
        let why = "no prosthesis detected (test)";
        for m in [&mut a.parameters.abduction_deg, &mut a.parameters.coverage_pct, &mut a.parameters.vertical_offset_mm, &mut a.parameters.horizontal_offset_mm]
        {
            *m = Measured::NotMeasured(why.into());
        }
        a.risks = HipRiskRules::default().assess(&a.parameters);
        let f = findings(&a, &src(), &AlgorithmIdentity::new("t", "1"), &HipRiskRules::default());
        assert!(f.groups.iter().all(|g| g.measurements.is_empty()));
        let coded: Vec<_> =
            f.evaluations.iter().filter_map(|e| if let EvaluationValue::Code(c) = &e.value { Some(c.meaning.as_str()) } else { None }).collect();
        assert_eq!(coded, vec!["Undetermined"; 4]);
        let texts: Vec<_> = f.evaluations.iter().filter_map(|e| if let EvaluationValue::Text(t) = &e.value { Some(t.as_str()) } else { None }).collect();
        assert_eq!(texts.len(), 4);
        assert!(texts.iter().all(|t| t.contains(why)));
        let o = overlay(&a, &src());
        assert!(o.texts.iter().any(|t| t.text.contains("No hip prosthesis")));
    }

    #[test]
    fn overlay_lies_inside_the_image() {
        let a = analysis(true);
        let (rows, cols) = (800.0, 1000.0);
        let o = overlay(&a, &src());
        assert_eq!(o.graphics.iter().filter(|g| g.graphic_type == GraphicType::Polyline).count(), 4);
        let inside = |p: &[f64; 2]| (0.0..=cols).contains(&p[0]) && (0.0..=rows).contains(&p[1]);
        assert!(o.graphics.iter().flat_map(|g| &g.points).all(inside));
        assert!(o.texts.iter().filter_map(|t| t.anchor.as_ref()).all(inside));
        // the midline is perpendicular to the teardrop line (horizontal here)
        let m = lines(&a).into_iter().find(|(n, _)| *n == MIDLINE).unwrap().1;
        assert!((m[0][0] - m[1][0]).abs() < 1e-9, "{m:?}");
        assert!(o.texts.last().unwrap().text.starts_with("Right hip: Abduction 40.0 deg (acceptable)"), "{}", o.texts.last().unwrap().text);
    }
}
