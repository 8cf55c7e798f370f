//! The neutral result model: what pipelines fill and encoders read.
//!
//! Nothing here is a DICOM attribute. Geometry is expressed the way the
//! source images define it (source frames, pixel coordinates, patient LPS
//! millimetres, Frame of Reference UIDs); codes are plain
//! (value, scheme, meaning) triples. The encoders in [`crate::encode`] turn
//! these into SEG, TID 1500 SR, GSPS and SC objects and validate them there.

use serde::{Deserialize, Serialize};

/// A coded concept: (code value, coding scheme designator, code meaning).
/// In JSON a code is the triple `["10200004", "SCT", "Liver"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "[String; 3]", into = "[String; 3]")]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Code {
        Code { value: value.into(), scheme: scheme.into(), meaning: meaning.into() }
    }

    /// A UCUM unit code; the meaning is the unit as written.
    pub fn ucum(unit: &str, meaning: &str) -> Code {
        Code::new(unit, "UCUM", meaning)
    }
}

impl From<[String; 3]> for Code {
    fn from([value, scheme, meaning]: [String; 3]) -> Code {
        Code { value, scheme, meaning }
    }
}

impl From<Code> for [String; 3] {
    fn from(c: Code) -> [String; 3] {
        [c.value, c.scheme, c.meaning]
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}, \"{}\")", self.value, self.scheme, self.meaning)
    }
}

/// Codes the encoders use as defaults.
pub mod codes {
    use super::Code;

    /// CID 7162 (DCM 123110); the family of every model in this project.
    pub fn artificial_intelligence() -> Code {
        Code::new("123110", "DCM", "Artificial Intelligence")
    }
    pub fn volume() -> Code {
        Code::new("118565006", "SCT", "Volume")
    }
    pub fn long_axis() -> Code {
        Code::new("103339001", "SCT", "Long Axis")
    }
    pub fn area() -> Code {
        Code::new("42798000", "SCT", "Area")
    }
    pub fn certainty_of_finding() -> Code {
        Code::new("111012", "DCM", "Certainty of Finding")
    }
    pub fn finding() -> Code {
        Code::new("121071", "DCM", "Finding")
    }
    pub fn mm() -> Code {
        Code::ucum("mm", "millimeter")
    }
    pub fn ml() -> Code {
        Code::ucum("ml", "milliliter")
    }
    pub fn no_units() -> Code {
        Code::ucum("1", "no units")
    }
}

/// Which algorithm made a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmIdentity {
    pub name: String,
    pub version: String,
    /// Algorithm family (CID 7162); default (123110, DCM, "Artificial Intelligence").
    #[serde(default = "codes::artificial_intelligence")]
    pub family: Code,
    /// SHA-256 of the weights file, hex; written as an algorithm parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

impl AlgorithmIdentity {
    pub fn new(name: &str, version: &str) -> AlgorithmIdentity {
        AlgorithmIdentity { name: name.into(), version: version.into(), family: codes::artificial_intelligence(), weights_sha256: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlgorithmType {
    #[default]
    Automatic,
    Semiautomatic,
    Manual,
}

impl AlgorithmType {
    pub fn as_dicom(self) -> &'static str {
        match self {
            AlgorithmType::Automatic => "AUTOMATIC",
            AlgorithmType::Semiautomatic => "SEMIAUTOMATIC",
            AlgorithmType::Manual => "MANUAL",
        }
    }
}

// ---------------------------------------------------------------------------
// Source geometry
// ---------------------------------------------------------------------------

/// One frame of a source image: the instance, and the frame number (1-based)
/// when the instance is multi-frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceFrame {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_number: Option<u32>,
}

/// A frame of a [`SourceGrid`]: its source and where it lies in patient space.
#[derive(Debug, Clone, PartialEq)]
pub struct GridFrame {
    pub source: SourceFrame,
    /// Image Position (Patient) of the first pixel's centre, LPS mm; None
    /// without a Frame of Reference (e.g. ultrasound, projection X-ray).
    pub position: Option<[f64; 3]>,
}

/// The pixel grid of the source images a label map lives on.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceGrid {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub rows: u16,
    pub cols: u16,
    /// DICOM Pixel Spacing order: (distance between rows, distance between columns), mm.
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    /// Image Orientation (Patient): row direction cosines then column cosines (LPS).
    pub orientation: Option<[f64; 6]>,
    pub frame_of_reference_uid: Option<String>,
    /// Frames in order; for a volume, ordered along the slice normal.
    pub frames: Vec<GridFrame>,
}

impl SourceGrid {
    /// True when the grid has patient geometry (FoR, orientation, positions, spacing).
    pub fn has_patient_geometry(&self) -> bool {
        self.frame_of_reference_uid.is_some() && self.orientation.is_some() && self.pixel_spacing.is_some() && self.frames.iter().all(|f| f.position.is_some())
    }

    /// Unit normal of the image planes (row x column), when oriented.
    pub fn normal(&self) -> Option<[f64; 3]> {
        let o = self.orientation?;
        let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
        (len > 0.0).then(|| [n[0] / len, n[1] / len, n[2] / len])
    }

    /// Distance between consecutive frame centres along the normal, when
    /// every step is the same (within 1 %); None for a single frame or uneven spacing.
    pub fn spacing_between_slices(&self) -> Option<f64> {
        let n = self.normal()?;
        let z: Option<Vec<f64>> = self.frames.iter().map(|f| f.position.map(|p| dot(p, n))).collect();
        let z = z?;
        if z.len() < 2 {
            return None;
        }
        let d = (z[1] - z[0]).abs();
        if d <= 1e-6 {
            return None;
        }
        z.windows(2).all(|w| ((w[1] - w[0]).abs() - d).abs() <= 0.01 * d).then_some(d)
    }

    /// Patient LPS position of pixel (column, row) of frame `f` (0-based), if oriented.
    pub fn pixel_to_patient(&self, f: usize, col: f64, row: f64) -> Option<[f64; 3]> {
        let o = self.orientation?;
        let [dr, dc] = self.pixel_spacing?;
        let p = self.frames.get(f)?.position?;
        Some([p[0] + o[0] * dc * col + o[3] * dr * row, p[1] + o[1] * dc * col + o[4] * dr * row, p[2] + o[2] * dc * col + o[5] * dr * row])
    }

    pub fn frame_len(&self) -> usize {
        self.rows as usize * self.cols as usize
    }

    /// The grid of a volume from the imaging layer: one frame per slice k,
    /// referencing `vol.sources[k]`. The volume must lie on its source
    /// frames (not resampled along k: `SeriesReport::resampled` false);
    /// a label volume computed on a resampled grid must first be resampled
    /// back (nearest) onto the source grid.
    pub fn from_volume(vol: &crate::imaging::Volume) -> Result<SourceGrid, String> {
        let [cols, rows, slices] = vol.dims;
        if vol.sources.len() != slices {
            return Err(format!("volume has {slices} slices but {} source frames", vol.sources.len()));
        }
        let rows = u16::try_from(rows).map_err(|_| format!("{rows} rows"))?;
        let cols = u16::try_from(cols).map_err(|_| format!("{cols} columns"))?;
        let [di, dj, _] = vol.direction;
        let frames = (0..slices)
            .map(|k| {
                let s = &vol.sources[k];
                GridFrame {
                    source: SourceFrame { sop_class_uid: s.sop_class_uid.clone(), sop_instance_uid: s.sop_instance_uid.clone(), frame_number: s.frame_number },
                    position: Some(vol.voxel_to_patient([0.0, 0.0, k as f64])),
                }
            })
            .collect();
        Ok(SourceGrid {
            study_instance_uid: vol.study_instance_uid.clone(),
            series_instance_uid: vol.series_instance_uid.clone(),
            rows,
            cols,
            // DICOM order: between rows (along j), between columns (along i)
            pixel_spacing: Some([vol.spacing[1], vol.spacing[0]]),
            slice_thickness: Some(vol.spacing[2]),
            orientation: Some([di[0], di[1], di[2], dj[0], dj[1], dj[2]]),
            frame_of_reference_uid: (!vol.frame_of_reference_uid.is_empty()).then(|| vol.frame_of_reference_uid.clone()),
            frames,
        })
    }
}

/// A label map on a source grid: one u16 label per pixel, frame-major then
/// row-major (index = (frame * rows + row) * cols + col). 0 is background.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMap {
    pub grid: SourceGrid,
    pub labels: Vec<u16>,
}

impl LabelMap {
    /// Refuses a data length that does not match the grid.
    pub fn new(grid: SourceGrid, labels: Vec<u16>) -> Result<LabelMap, String> {
        let want = grid.frames.len() * grid.frame_len();
        if labels.len() != want {
            return Err(format!(
                "label map has {} values; the grid ({} frames x {} rows x {} columns) needs {want}",
                labels.len(),
                grid.frames.len(),
                grid.rows,
                grid.cols
            ));
        }
        Ok(LabelMap { grid, labels })
    }

    /// A label volume from the imaging layer (values rounded; negative or
    /// above 65535 refused) on its own grid.
    pub fn from_volume(labels: &crate::imaging::Volume) -> Result<LabelMap, String> {
        let grid = SourceGrid::from_volume(labels)?;
        let mut out = Vec::with_capacity(labels.data.len());
        for (i, v) in labels.data.iter().enumerate() {
            let r = v.round();
            if !(0.0..=65535.0).contains(&r) || (r - v).abs() > 1e-3 {
                return Err(format!("voxel {i}: {v} is not a label (integer 0..=65535)"));
            }
            out.push(r as u16);
        }
        LabelMap::new(grid, out)
    }

    pub fn frame(&self, f: usize) -> &[u16] {
        let n = self.grid.frame_len();
        &self.labels[f * n..(f + 1) * n]
    }
}

/// One segment of a segmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Segment number (1-based); also the label value in the label map.
    pub number: u16,
    pub label: String,
    /// Segmented property category (CID 7150), e.g. (91723000, SCT, "Anatomical Structure").
    pub category: Code,
    /// Segmented property type (CID 7151 etc.), e.g. (10200004, SCT, "Liver").
    pub property_type: Code,
    #[serde(default)]
    pub type_modifiers: Vec<Code>,
    #[serde(default)]
    pub anatomic_region: Option<Code>,
    /// Display colour, sRGB; converted to CIELab by the SEG encoder.
    #[serde(default)]
    pub color: Option<[u8; 3]>,
    #[serde(default)]
    pub algorithm_type: AlgorithmType,
    /// Required unless the algorithm type is MANUAL.
    #[serde(default)]
    pub algorithm: Option<AlgorithmIdentity>,
    /// Tracking ID / UID for referencing the segment from an SR.
    #[serde(default)]
    pub tracking_id: Option<String>,
}

/// A segmentation: segments over a label map (non-overlapping by construction).
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub segments: Vec<Segment>,
    pub labels: LabelMap,
}

// ---------------------------------------------------------------------------
// Spatial regions, landmarks, measurements
// ---------------------------------------------------------------------------

/// Graphic types shared by SCOORD, SCOORD3D and presentation states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GraphicType {
    Point,
    Multipoint,
    Polyline,
    /// A closed polyline (first point repeated as last).
    Polygon,
    Circle,
    Ellipse,
}

/// A region on one image frame, in image pixel coordinates (column, row) as
/// DICOM SCOORD uses them: (0,0) is the top-left corner of the top-left pixel,
/// the centre of the first pixel is (0.5, 0.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRegion {
    pub source: SourceFrame,
    pub graphic_type: GraphicType,
    pub points: Vec<[f64; 2]>,
}

/// A region in patient space (LPS, mm) in a Frame of Reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientRegion {
    pub frame_of_reference_uid: String,
    pub graphic_type: GraphicType,
    pub points: Vec<[f64; 3]>,
}

/// A reference to one segment of a stored SEG instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub seg_sop_class_uid: String,
    pub seg_sop_instance_uid: String,
    pub segment_number: u16,
    /// The source images the segment was made on (TID 1411 "Source Image for Segmentation").
    #[serde(default)]
    pub source_images: Vec<SourceFrame>,
}

/// What a measurement group is about, spatially.
#[derive(Debug, Clone, PartialEq)]
pub enum Roi {
    /// TID 1410 with SCOORD.
    Image(ImageRegion),
    /// TID 1410 with SCOORD3D.
    Patient(PatientRegion),
    /// TID 1411, referencing a SEG segment.
    Segment(SegmentRef),
}

/// A named point (e.g. a cephalometric landmark).
#[derive(Debug, Clone, PartialEq)]
pub struct Landmark {
    /// Tracking identifier (unique within the report), e.g. "Sella".
    pub label: String,
    /// What the point is, e.g. an anatomical code.
    pub concept: Code,
    pub location: LandmarkLocation,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LandmarkLocation {
    /// (column, row) on an image frame.
    Image { source: SourceFrame, point: [f64; 2] },
    /// LPS mm in a Frame of Reference.
    Patient { frame_of_reference_uid: String, point: [f64; 3] },
}

/// A numeric measurement (TID 300).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub concept: Code,
    pub value: f64,
    /// UCUM unit code, e.g. ["mm", "UCUM", "millimeter"].
    pub unit: Code,
    #[serde(default)]
    pub derivation: Option<Code>,
    #[serde(default)]
    pub finding_site: Option<Code>,
    #[serde(default)]
    pub method: Option<Code>,
}

impl Measurement {
    pub fn new(concept: Code, value: f64, unit: Code) -> Measurement {
        Measurement { concept, value, unit, derivation: None, finding_site: None, method: None }
    }
}

/// An assessment, e.g. (Abduction angle risk) = (Normal), or a statement
/// in words, e.g. (Coverage) = "not measured: point a not found".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitativeEvaluation {
    pub concept: Code,
    pub value: EvaluationValue,
}

impl QualitativeEvaluation {
    pub fn coded(concept: Code, value: Code) -> QualitativeEvaluation {
        QualitativeEvaluation { concept, value: EvaluationValue::Code(value) }
    }

    pub fn text(concept: Code, text: impl Into<String>) -> QualitativeEvaluation {
        QualitativeEvaluation { concept, value: EvaluationValue::Text(text.into()) }
    }
}

/// A coded value (SR CODE) or free text (SR TEXT; TID 1500 row 14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvaluationValue {
    Code(Code),
    Text(String),
}

/// A detected lesion, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesion {
    /// Tracking identifier, e.g. "lesion 3".
    pub tracking_id: String,
    pub class: Code,
    pub segment: Option<SegmentRef>,
    pub volume_ml: Option<f64>,
    pub longest_diameter_mm: Option<f64>,
    /// Model confidence in [0, 1].
    pub score: Option<f64>,
    /// Outline on one image (a closed polyline), for a planar ROI.
    pub outline: Option<ImageRegion>,
}

/// A TID 1501 / 1410 / 1411 measurement group.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementGroup {
    pub tracking_id: String,
    /// Given, or derived deterministically by the SR encoder.
    pub tracking_uid: Option<String>,
    pub finding: Option<Code>,
    pub finding_site: Option<Code>,
    /// Laterality of the finding site (SCT 24028007 right, 7771000 left),
    /// a modifier of the site in the SR; needs a `finding_site`.
    pub laterality: Option<Code>,
    pub roi: Option<Roi>,
    pub measurements: Vec<Measurement>,
    pub evaluations: Vec<QualitativeEvaluation>,
}

impl MeasurementGroup {
    pub fn new(tracking_id: &str) -> MeasurementGroup {
        MeasurementGroup {
            tracking_id: tracking_id.into(),
            tracking_uid: None,
            finding: None,
            finding_site: None,
            laterality: None,
            roi: None,
            measurements: Vec::new(),
            evaluations: Vec::new(),
        }
    }
}

/// Everything an analysis reports about a study, apart from segmentations.
#[derive(Debug, Clone, PartialEq)]
pub struct Findings {
    pub algorithm: AlgorithmIdentity,
    /// Procedure reported (CID 100), e.g. (77477000, SCT, "CT").
    pub procedure_reported: Option<Code>,
    pub landmarks: Vec<Landmark>,
    pub lesions: Vec<Lesion>,
    pub groups: Vec<MeasurementGroup>,
    /// Report-level evaluations (TID 1500 "Qualitative Evaluations").
    pub evaluations: Vec<QualitativeEvaluation>,
}

impl Findings {
    pub fn new(algorithm: AlgorithmIdentity) -> Findings {
        Findings { algorithm, procedure_reported: None, landmarks: Vec::new(), lesions: Vec::new(), groups: Vec::new(), evaluations: Vec::new() }
    }

    /// True when any geometry is in patient space (needs Comprehensive 3D SR).
    pub fn has_3d(&self) -> bool {
        self.landmarks.iter().any(|l| matches!(l.location, LandmarkLocation::Patient { .. }))
            || self.groups.iter().any(|g| matches!(g.roi, Some(Roi::Patient(_))))
    }
}

// ---------------------------------------------------------------------------
// Overlays (drawn by presentation states)
// ---------------------------------------------------------------------------

/// A graphic drawn over an image, in pixel coordinates (column, row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graphic {
    #[serde(rename = "type")]
    pub graphic_type: GraphicType,
    pub points: Vec<[f64; 2]>,
    #[serde(default)]
    pub filled: bool,
}

/// Text drawn over an image: at an anchor point (e.g. a landmark), inside a
/// box (top-left, bottom-right), or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLabel {
    pub text: String,
    #[serde(default)]
    pub anchor: Option<[f64; 2]>,
    #[serde(default, rename = "box")]
    pub bounding_box: Option<[[f64; 2]; 2]>,
}

/// What a presentation state shows over one image frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub image: SourceFrame,
    /// Graphic layer name (CS: A-Z, 0-9, space, underscore; at most 16).
    pub layer: String,
    pub layer_description: Option<String>,
    pub graphics: Vec<Graphic>,
    pub texts: Vec<TextLabel>,
    /// (window centre, window width) in modality units; None: the image's own.
    pub window: Option<(f64, f64)>,
}

/// An image an analysis computes (e.g. a lateral projection of a CT), stored
/// as a Secondary Capture: unsigned 16-bit grey values, frame-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedImage {
    pub rows: u16,
    pub cols: u16,
    pub frames: u32,
    /// rows x cols x frames values; real value = slope * v + intercept.
    pub pixels: Vec<u16>,
    /// (slope, intercept, unit/type, e.g. "HU")
    pub rescale: Option<(f64, f64, String)>,
    /// Pixel spacing (between rows, between columns) in mm, when known.
    pub pixel_spacing: Option<[f64; 2]>,
    /// (window centre, window width) in rescaled units.
    pub window: Option<(f64, f64)>,
    pub description: String,
    /// The images it was computed from.
    pub derived_from: Vec<SourceFrame>,
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_a_json_triple() {
        let c: Code = serde_json::from_str(r#"["10200004","SCT","Liver"]"#).unwrap();
        assert_eq!(c, Code::new("10200004", "SCT", "Liver"));
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"["10200004","SCT","Liver"]"#);
    }

    fn grid(positions: &[[f64; 3]]) -> SourceGrid {
        SourceGrid {
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.3".into(),
            rows: 3,
            cols: 5,
            pixel_spacing: Some([0.5, 0.25]),
            slice_thickness: Some(1.0),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            frame_of_reference_uid: Some("1.4".into()),
            frames: positions
                .iter()
                .enumerate()
                .map(|(i, p)| GridFrame {
                    source: SourceFrame { sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(), sop_instance_uid: format!("1.5.{i}"), frame_number: None },
                    position: Some(*p),
                })
                .collect(),
        }
    }

    #[test]
    fn grid_geometry() {
        let g = grid(&[[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 4.0]]);
        assert!(g.has_patient_geometry());
        assert_eq!(g.normal(), Some([0.0, 0.0, 1.0]));
        assert_eq!(g.spacing_between_slices(), Some(2.0));
        assert_eq!(g.pixel_to_patient(1, 4.0, 2.0), Some([1.0, 1.0, 2.0]));
        let uneven = grid(&[[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 5.0]]);
        assert_eq!(uneven.spacing_between_slices(), None);
    }

    #[test]
    fn grid_from_volume() {
        let src = |k: usize| crate::imaging::SourceFrame {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: format!("1.5.{k}"),
            frame_number: None,
        };
        let vol = crate::imaging::Volume {
            dims: [5, 3, 2],
            data: [0.0, 1.0, 2.0].repeat(10),
            spacing: [0.25, 0.5, 2.0],
            origin: [10.0, 20.0, -30.0],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            frame_of_reference_uid: "1.4".into(),
            study_instance_uid: "1.2".into(),
            series_instance_uid: "1.3".into(),
            sources: vec![src(0), src(1)],
        };
        let lm = LabelMap::from_volume(&vol).unwrap();
        let g = &lm.grid;
        assert_eq!((g.rows, g.cols), (3, 5));
        assert_eq!(g.pixel_spacing, Some([0.5, 0.25]));
        assert_eq!(g.frames[1].position, Some([10.0, 20.0, -28.0]));
        assert_eq!(g.pixel_to_patient(1, 4.0, 2.0), Some([11.0, 21.0, -28.0]));
        assert_eq!(g.spacing_between_slices(), Some(2.0));
        assert_eq!(lm.frame(1)[..3], [0, 1, 2]);
        let mut bad = vol.clone();
        bad.data[0] = 0.5;
        assert!(LabelMap::from_volume(&bad).is_err());
    }

    #[test]
    fn label_map_length_is_checked() {
        let g = grid(&[[0.0, 0.0, 0.0]]);
        assert!(LabelMap::new(g.clone(), vec![0; 15]).is_ok());
        assert!(LabelMap::new(g, vec![0; 14]).unwrap_err().contains("needs 15"));
    }
}
