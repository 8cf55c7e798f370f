//! The JSON inputs of `ainode encode` (documented in docs/encode-json.md):
//! segments files (SEG), reports (SR) and annotations (GSPS). Image
//! references are resolved against the given DICOM files here, so errors
//! name the JSON field.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::error::EncodeError;
use super::seg::SEGMENTATION_STORAGE;
use super::source::SourceInstance;
use crate::findings::*;

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EncodeError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| EncodeError::Io { path: file.clone(), error })?;
    serde_json::from_str(&text).map_err(|e| EncodeError::Source { file, reason: format!("invalid JSON: {e}") })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmJson {
    #[serde(rename = "type", default)]
    pub algorithm_type: AlgorithmType,
    pub name: Option<String>,
    pub version: Option<String>,
    pub family: Option<Code>,
    pub weights_sha256: Option<String>,
}

impl AlgorithmJson {
    fn identity(&self, field: &str) -> Result<AlgorithmIdentity, EncodeError> {
        let name = self.name.clone().ok_or_else(|| EncodeError::invalid(format!("{field}.name"), "missing"))?;
        let version = self.version.clone().ok_or_else(|| EncodeError::invalid(format!("{field}.version"), "missing"))?;
        Ok(AlgorithmIdentity {
            name,
            version,
            family: self.family.clone().unwrap_or_else(codes::artificial_intelligence),
            weights_sha256: self.weights_sha256.clone(),
        })
    }
}

// ---------------------------------------------------------------------------
// Segments file
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentsFile {
    segments: Vec<SegmentEntry>,
    /// Default algorithm of segments that name none.
    #[serde(default)]
    algorithm: Option<AlgorithmJson>,
    #[serde(default)]
    content_label: Option<String>,
    #[serde(default)]
    content_description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentEntry {
    label: u16,
    name: String,
    category: Code,
    #[serde(rename = "type")]
    property_type: Code,
    #[serde(default)]
    color: Option<[u8; 3]>,
    #[serde(default)]
    modifiers: Vec<Code>,
    #[serde(default)]
    anatomic_region: Option<Code>,
    #[serde(default)]
    algorithm: Option<AlgorithmJson>,
    #[serde(default)]
    tracking_id: Option<String>,
}

/// A parsed segments file.
#[derive(Debug, Clone)]
pub struct SegmentsSpec {
    pub segments: Vec<Segment>,
    /// label value in the label map -> segment number
    pub label_to_segment: HashMap<u16, u16>,
    pub content_label: Option<String>,
    pub content_description: Option<String>,
}

impl SegmentsSpec {
    /// Label values to segment numbers; a label with no segment is refused.
    pub fn remap(&self, labels: &mut [u16]) -> Result<(), EncodeError> {
        for v in labels.iter_mut() {
            if *v != 0 {
                *v = *self
                    .label_to_segment
                    .get(v)
                    .ok_or_else(|| EncodeError::invalid("label map", format!("label value {v} has no entry in the segments file")))?;
            }
        }
        Ok(())
    }
}

pub fn read_segments(path: &Path) -> Result<SegmentsSpec, EncodeError> {
    let f: SegmentsFile = read_json(path)?;
    if f.segments.is_empty() {
        return Err(EncodeError::invalid("segments", "the segments file lists no segment"));
    }
    let mut label_to_segment = HashMap::new();
    let mut segments = Vec::new();
    for (i, e) in f.segments.iter().enumerate() {
        let field = format!("segments[{i}]");
        if e.label == 0 {
            return Err(EncodeError::invalid(format!("{field}.label"), "0 is the background"));
        }
        let number = (i + 1) as u16;
        if label_to_segment.insert(e.label, number).is_some() {
            return Err(EncodeError::invalid(format!("{field}.label"), format!("label {} is listed twice", e.label)));
        }
        let algo = e.algorithm.as_ref().or(f.algorithm.as_ref());
        let algorithm_type = algo.map(|a| a.algorithm_type).unwrap_or_default();
        let algorithm = match algo {
            Some(a) if a.name.is_some() || algorithm_type != AlgorithmType::Manual => Some(a.identity(&format!("{field}.algorithm"))?),
            _ => None,
        };
        segments.push(Segment {
            number,
            label: e.name.clone(),
            category: e.category.clone(),
            property_type: e.property_type.clone(),
            type_modifiers: e.modifiers.clone(),
            anatomic_region: e.anatomic_region.clone(),
            color: e.color,
            algorithm_type,
            algorithm,
            tracking_id: e.tracking_id.clone(),
        });
    }
    Ok(SegmentsSpec { segments, label_to_segment, content_label: f.content_label, content_description: f.content_description })
}

// ---------------------------------------------------------------------------
// References to evidence
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRefJson {
    pub sop_instance_uid: String,
    #[serde(default)]
    pub frame: Option<u32>,
}

struct Resolver<'a> {
    evidence: &'a [SourceInstance],
}

impl Resolver<'_> {
    fn images(&self) -> impl Iterator<Item = &SourceInstance> {
        self.evidence.iter().filter(|s| s.is_image() && s.sop_class_uid != SEGMENTATION_STORAGE)
    }

    /// The referenced image, or the only evidence image when `r` is None.
    fn image(&self, field: &str, r: Option<&ImageRefJson>) -> Result<SourceFrame, EncodeError> {
        let (s, frame) = match r {
            Some(r) => {
                let s = self.evidence.iter().find(|s| s.sop_instance_uid == r.sop_instance_uid).ok_or_else(|| {
                    EncodeError::invalid(format!("{field}.sop_instance_uid"), format!("{} is not among the given DICOM files", r.sop_instance_uid))
                })?;
                (s, r.frame)
            }
            None => {
                let all: Vec<_> = self.images().collect();
                if all.len() != 1 {
                    return Err(EncodeError::invalid(field, format!("missing: needed when there is not exactly one image ({} given)", all.len())));
                }
                (all[0], None)
            }
        };
        // single-frame multi-frame-class images take frame 1 by default
        let frame = match frame {
            None if s.is_multiframe() && s.frames() == 1 => Some(1),
            f => f,
        };
        Ok(SourceFrame { sop_class_uid: s.sop_class_uid.clone(), sop_instance_uid: s.sop_instance_uid.clone(), frame_number: frame })
    }

    /// The given Frame of Reference, or the only one among the evidence images.
    fn frame_of_reference(&self, field: &str, given: Option<&String>) -> Result<String, EncodeError> {
        if let Some(f) = given {
            return Ok(f.clone());
        }
        let all: HashSet<&str> = self.images().filter_map(|s| s.frame_of_reference_uid.as_deref()).collect();
        if all.len() == 1 {
            Ok(all.into_iter().next().unwrap().to_string())
        } else {
            Err(EncodeError::invalid(field, format!("frame_of_reference_uid missing and the images have {} Frames of Reference", all.len())))
        }
    }

    fn segment(&self, field: &str, r: &SegmentRefJson) -> Result<SegmentRef, EncodeError> {
        let seg = self.evidence.iter().find(|s| s.sop_instance_uid == r.sop_instance_uid).ok_or_else(|| {
            EncodeError::invalid(format!("{field}.sop_instance_uid"), format!("SEG {} is not among the given DICOM files", r.sop_instance_uid))
        })?;
        let source_images =
            r.source_images.iter().enumerate().map(|(k, i)| self.image(&format!("{field}.source_images[{k}]"), Some(i))).collect::<Result<_, _>>()?;
        Ok(SegmentRef {
            seg_sop_class_uid: seg.sop_class_uid.clone(),
            seg_sop_instance_uid: seg.sop_instance_uid.clone(),
            segment_number: r.segment_number,
            source_images,
        })
    }

    fn region(&self, field: &str, r: &RegionJson) -> Result<Roi, EncodeError> {
        match (&r.points, &r.points3d) {
            (Some(p), None) => Ok(Roi::Image(ImageRegion {
                source: self.image(&format!("{field}.image"), r.image.as_ref())?,
                graphic_type: r.graphic_type,
                points: p.clone(),
            })),
            (None, Some(p)) => Ok(Roi::Patient(PatientRegion {
                frame_of_reference_uid: self.frame_of_reference(field, r.frame_of_reference_uid.as_ref())?,
                graphic_type: r.graphic_type,
                points: p.clone(),
            })),
            _ => Err(EncodeError::invalid(field, "give either points (image column, row) or points3d (patient LPS mm)")),
        }
    }
}

// ---------------------------------------------------------------------------
// Report file (SR)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentRefJson {
    sop_instance_uid: String,
    segment_number: u16,
    #[serde(default)]
    source_images: Vec<ImageRefJson>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionJson {
    #[serde(default)]
    image: Option<ImageRefJson>,
    graphic_type: GraphicType,
    #[serde(default)]
    points: Option<Vec<[f64; 2]>>,
    #[serde(default)]
    points3d: Option<Vec<[f64; 3]>>,
    #[serde(default)]
    frame_of_reference_uid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LandmarkJson {
    label: String,
    concept: Code,
    #[serde(default)]
    image: Option<ImageRefJson>,
    #[serde(default)]
    point: Option<[f64; 2]>,
    #[serde(default)]
    point3d: Option<[f64; 3]>,
    #[serde(default)]
    frame_of_reference_uid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LesionJson {
    tracking_id: String,
    class: Code,
    #[serde(default)]
    segment: Option<SegmentRefJson>,
    #[serde(default)]
    volume_ml: Option<f64>,
    #[serde(default)]
    longest_diameter_mm: Option<f64>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    outline: Option<RegionJson>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupJson {
    tracking_id: String,
    #[serde(default)]
    tracking_uid: Option<String>,
    #[serde(default)]
    finding: Option<Code>,
    #[serde(default)]
    finding_site: Option<Code>,
    #[serde(default)]
    laterality: Option<Code>,
    #[serde(default)]
    region: Option<RegionJson>,
    #[serde(default)]
    segment: Option<SegmentRefJson>,
    #[serde(default)]
    measurements: Vec<Measurement>,
    #[serde(default)]
    evaluations: Vec<QualitativeEvaluation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    algorithm: AlgorithmJson,
    #[serde(default)]
    title: Option<Code>,
    #[serde(default)]
    language: Option<Code>,
    #[serde(default)]
    procedure_reported: Option<Code>,
    #[serde(default)]
    landmarks: Vec<LandmarkJson>,
    #[serde(default)]
    lesions: Vec<LesionJson>,
    #[serde(default)]
    groups: Vec<GroupJson>,
    #[serde(default)]
    evaluations: Vec<QualitativeEvaluation>,
}

/// A parsed report: the findings and the SR options it sets.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub findings: Findings,
    pub title: Option<Code>,
    pub language: Option<Code>,
}

pub fn read_report(path: &Path, evidence: &[SourceInstance]) -> Result<ReportSpec, EncodeError> {
    let f: ReportFile = read_json(path)?;
    let res = Resolver { evidence };
    let mut out = Findings::new(f.algorithm.identity("algorithm")?);
    out.procedure_reported = f.procedure_reported;
    out.evaluations = f.evaluations;
    for (i, l) in f.landmarks.iter().enumerate() {
        let field = format!("landmarks[{i}]");
        let location = match (l.point, l.point3d) {
            (Some(p), None) => LandmarkLocation::Image { source: res.image(&format!("{field}.image"), l.image.as_ref())?, point: p },
            (None, Some(p)) => {
                LandmarkLocation::Patient { frame_of_reference_uid: res.frame_of_reference(&field, l.frame_of_reference_uid.as_ref())?, point: p }
            }
            _ => return Err(EncodeError::invalid(&field, "give either point (image column, row) or point3d (patient LPS mm)")),
        };
        out.landmarks.push(Landmark { label: l.label.clone(), concept: l.concept.clone(), location });
    }
    for (i, l) in f.lesions.iter().enumerate() {
        let field = format!("lesions[{i}]");
        let outline = match &l.outline {
            Some(r) => match res.region(&format!("{field}.outline"), r)? {
                Roi::Image(r) => Some(r),
                _ => return Err(EncodeError::invalid(format!("{field}.outline"), "an outline is drawn on an image (points, not points3d)")),
            },
            None => None,
        };
        out.lesions.push(Lesion {
            tracking_id: l.tracking_id.clone(),
            class: l.class.clone(),
            segment: l.segment.as_ref().map(|s| res.segment(&format!("{field}.segment"), s)).transpose()?,
            volume_ml: l.volume_ml,
            longest_diameter_mm: l.longest_diameter_mm,
            score: l.score,
            outline,
        });
    }
    for (i, g) in f.groups.iter().enumerate() {
        let field = format!("groups[{i}]");
        let roi = match (&g.region, &g.segment) {
            (Some(r), None) => Some(res.region(&format!("{field}.region"), r)?),
            (None, Some(s)) => Some(Roi::Segment(res.segment(&format!("{field}.segment"), s)?)),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(EncodeError::invalid(&field, "give a region or a segment, not both")),
        };
        out.groups.push(MeasurementGroup {
            tracking_id: g.tracking_id.clone(),
            tracking_uid: g.tracking_uid.clone(),
            finding: g.finding.clone(),
            finding_site: g.finding_site.clone(),
            laterality: g.laterality.clone(),
            roi,
            measurements: g.measurements.clone(),
            evaluations: g.evaluations.clone(),
        });
    }
    Ok(ReportSpec { findings: out, title: f.title, language: f.language })
}

// ---------------------------------------------------------------------------
// Annotations file (GSPS)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowJson {
    center: f64,
    width: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnotationsFile {
    #[serde(default)]
    frame: Option<u32>,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    layer_description: Option<String>,
    #[serde(default)]
    content_label: Option<String>,
    #[serde(default)]
    content_description: Option<String>,
    #[serde(default)]
    window: Option<WindowJson>,
    #[serde(default)]
    graphics: Vec<Graphic>,
    #[serde(default)]
    texts: Vec<TextLabel>,
}

#[derive(Debug, Clone)]
pub struct AnnotationsSpec {
    pub overlay: Overlay,
    pub content_label: Option<String>,
    pub content_description: Option<String>,
}

pub fn read_annotations(path: &Path, image: &SourceInstance) -> Result<AnnotationsSpec, EncodeError> {
    let f: AnnotationsFile = read_json(path)?;
    let frame = match f.frame {
        Some(n) => Some(n),
        None if image.is_multiframe() => Some(1),
        None => None,
    };
    Ok(AnnotationsSpec {
        overlay: Overlay {
            image: SourceFrame { sop_class_uid: image.sop_class_uid.clone(), sop_instance_uid: image.sop_instance_uid.clone(), frame_number: frame },
            layer: f.layer.unwrap_or_else(|| "AI".into()),
            layer_description: f.layer_description.or_else(|| Some("AI results".into())),
            graphics: f.graphics,
            texts: f.texts,
            window: f.window.map(|w| (w.center, w.width)),
        },
        content_label: f.content_label,
        content_description: f.content_description,
    })
}
