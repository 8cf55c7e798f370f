//! TID 1500 Measurement Report as Comprehensive SR, or Comprehensive 3D SR
//! when any region is in patient space (SCOORD3D).
//!
//! Tree: language, device observer (TID 1002/1004), procedure reported,
//! Image Library (TID 1600), Imaging Measurements with one measurement group
//! per landmark / lesion / group (TID 1501, 1410 planar ROI with SCOORD or
//! SCOORD3D, 1411 volumetric ROI referencing a SEG segment), report-level
//! Qualitative Evaluations.

pub mod content;

use std::collections::{BTreeMap, HashMap, HashSet};

use dicom_core::VR;
use dicom_dictionary_std::tags;

use self::content::{names, Item, Rel, Value};
use super::common::{base_dataset, ResultContext, ResultKind};
use super::dataset::*;
use super::seg::{validate_algorithm, validate_code, validate_lo, SEGMENTATION_STORAGE};
use super::source::SourceInstance;
use crate::encode::error::EncodeError;
use crate::findings::*;

pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
pub const COMPREHENSIVE_3D_SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";

#[derive(Debug, Clone)]
pub struct SrOptions {
    /// Report title (CID 7021); default (126000, DCM, "Imaging Measurement Report").
    pub title: Code,
    /// RFC 5646 language of the content; default en-US.
    pub language: Code,
}

impl Default for SrOptions {
    fn default() -> SrOptions {
        SrOptions { title: names::imaging_measurement_report(), language: Code::new("en-US", "RFC5646", "English (United States)") }
    }
}

/// The evidence instances, indexed.
struct Evidence<'a> {
    by_uid: HashMap<&'a str, &'a SourceInstance>,
}

impl<'a> Evidence<'a> {
    fn image(&self, field: &str, r: &SourceFrame) -> Result<&'a SourceInstance, EncodeError> {
        let s = self
            .by_uid
            .get(r.sop_instance_uid.as_str())
            .copied()
            .ok_or_else(|| EncodeError::invalid(field, format!("image {} is not among the evidence instances", r.sop_instance_uid)))?;
        if !s.is_image() {
            return Err(EncodeError::invalid(field, format!("{} is not an image", s.file())));
        }
        if r.sop_class_uid != s.sop_class_uid {
            return Err(EncodeError::invalid(field, format!("SOP class {} differs from the evidence's {}", r.sop_class_uid, s.sop_class_uid)));
        }
        match (r.frame_number, s.is_multiframe()) {
            (None, true) if s.frames() > 1 => return Err(EncodeError::invalid(field, format!("{} is multi-frame: a frame number is needed", s.file()))),
            (Some(f), _) if f == 0 || f > s.frames() => {
                return Err(EncodeError::invalid(field, format!("frame {f} of {} does not exist ({} frames)", s.file(), s.frames())))
            }
            (Some(_), false) => return Err(EncodeError::invalid(field, format!("{} is single-frame: no frame number", s.file()))),
            _ => {}
        }
        Ok(s)
    }
}

/// Builds the SR data set; `evidence` are all instances the report is about
/// (images, and the SEG instances that segment references point to).
pub fn encode_sr(ctx: &ResultContext, evidence: &[SourceInstance], findings: &Findings, opts: &SrOptions) -> Result<Obj, EncodeError> {
    super::source::check_one_study(evidence)?;
    validate_algorithm("algorithm", &findings.algorithm)?;
    validate_code("title", &opts.title)?;
    let ev = Evidence { by_uid: evidence.iter().map(|s| (s.sop_instance_uid.as_str(), s)).collect() };
    let three_d = findings.has_3d();
    // a 2D and a 3D report of the same inputs are different objects
    let uids = ctx.uids(ResultKind::Sr, evidence, &[if three_d { "kind:SR3D" } else { "kind:SR" }])?;

    // measurement groups
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    let mut track = |field: &str, id: &str| -> Result<(), EncodeError> {
        validate_lo(&format!("{field}.tracking_id"), id)?;
        if !seen.insert(id.to_string()) {
            return Err(EncodeError::invalid(format!("{field}.tracking_id"), format!("`{id}` is used twice in the report")));
        }
        Ok(())
    };
    for (i, l) in findings.landmarks.iter().enumerate() {
        let field = format!("landmarks[{i}]");
        track(&field, &l.label)?;
        validate_code(&format!("{field}.concept"), &l.concept)?;
        let roi = match &l.location {
            LandmarkLocation::Image { source, point } => {
                Roi::Image(ImageRegion { source: source.clone(), graphic_type: GraphicType::Point, points: vec![*point] })
            }
            LandmarkLocation::Patient { frame_of_reference_uid, point } => {
                Roi::Patient(PatientRegion { frame_of_reference_uid: frame_of_reference_uid.clone(), graphic_type: GraphicType::Point, points: vec![*point] })
            }
        };
        let mut g = MeasurementGroup::new(&l.label);
        g.finding = Some(l.concept.clone());
        g.roi = Some(roi);
        groups.push(group_item(&field, &g, &ev, &uids, findings)?);
    }
    for (i, l) in findings.lesions.iter().enumerate() {
        let field = format!("lesions[{i}]");
        track(&field, &l.tracking_id)?;
        let mut g = MeasurementGroup::new(&l.tracking_id);
        g.finding = Some(l.class.clone());
        g.roi = match (&l.segment, &l.outline) {
            (Some(s), _) => Some(Roi::Segment(s.clone())),
            (None, Some(o)) => Some(Roi::Image(o.clone())),
            (None, None) => None,
        };
        if let Some(v) = l.volume_ml {
            g.measurements.push(Measurement::new(codes::volume(), v, codes::ml()));
        }
        if let Some(d) = l.longest_diameter_mm {
            g.measurements.push(Measurement::new(codes::long_axis(), d, codes::mm()));
        }
        if let Some(s) = l.score {
            if !(0.0..=1.0).contains(&s) {
                return Err(EncodeError::invalid(format!("{field}.score"), format!("{s} is not in [0, 1]")));
            }
            g.measurements.push(Measurement::new(codes::certainty_of_finding(), s, codes::no_units()));
        }
        groups.push(group_item(&field, &g, &ev, &uids, findings)?);
    }
    for (i, g) in findings.groups.iter().enumerate() {
        let field = format!("groups[{i}]");
        track(&field, &g.tracking_id)?;
        groups.push(group_item(&field, g, &ev, &uids, findings)?);
    }

    // root
    let first = &evidence[0];
    let procedure = findings.procedure_reported.clone().unwrap_or_else(|| default_procedure(&first.modality));
    validate_code("procedure_reported", &procedure)?;
    let mut root = Item::container(None, opts.title.clone(), Some("1500"), Vec::new());
    root.children.push(Item::new(Rel::HasConceptMod, names::language(), Value::Code(opts.language.clone())));
    root.children.push(Item::new(Rel::HasObsContext, names::observer_type(), Value::Code(names::device())));
    root.children.push(Item::new(Rel::HasObsContext, names::device_observer_uid(), Value::UidRef(ctx.device_uid()?)));
    root.children.push(Item::new(Rel::HasObsContext, names::device_observer_name(), Value::Text(findings.algorithm.name.clone())));
    root.children.push(Item::new(Rel::HasObsContext, names::device_observer_manufacturer(), Value::Text(ctx.settings.manufacturer.clone())));
    root.children.push(Item::new(Rel::HasObsContext, names::device_observer_model_name(), Value::Text(ctx.pipeline.clone())));
    root.children.push(Item::new(Rel::HasObsContext, names::device_observer_serial_number(), Value::Text(ctx.settings.device_serial_number.clone())));
    root.children.push(Item::new(Rel::HasConceptMod, names::procedure_reported(), Value::Code(procedure)));
    let library: Vec<Item> = evidence.iter().filter(|s| s.is_image() && s.sop_class_uid != SEGMENTATION_STORAGE).map(library_entry).collect();
    if !library.is_empty() {
        let group = Item::container(Some(Rel::Contains), names::image_library_group(), None, library);
        root.children.push(Item::container(Some(Rel::Contains), names::image_library(), None, vec![group]));
    }
    if !groups.is_empty() {
        root.children.push(Item::container(Some(Rel::Contains), names::imaging_measurements(), None, groups));
    }
    if !findings.evaluations.is_empty() {
        let mut evals = Vec::new();
        for (i, e) in findings.evaluations.iter().enumerate() {
            evals.push(evaluation_item(&format!("evaluations[{i}]"), e)?);
        }
        root.children.push(Item::container(Some(Rel::Contains), names::qualitative_evaluations(), None, evals));
    }
    if findings.landmarks.is_empty() && findings.lesions.is_empty() && findings.groups.is_empty() && findings.evaluations.is_empty() {
        return Err(EncodeError::invalid("report", "nothing to report: no landmarks, lesions, groups or evaluations"));
    }

    // data set
    let class = if three_d { COMPREHENSIVE_3D_SR } else { COMPREHENSIVE_SR };
    let mut o = base_dataset(ctx, ResultKind::Sr, class, "SR", &uids, first);
    put_empty_seq(&mut o, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE);
    put_str(&mut o, tags::COMPLETION_FLAG, VR::CS, "PARTIAL");
    put_str(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_str(&mut o, tags::PRELIMINARY_FLAG, VR::CS, "PRELIMINARY");
    put_empty_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE);
    put_seq(&mut o, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, evidence_items(evidence));
    let mut private = std::collections::BTreeSet::new();
    private_schemes(&root, &mut private);
    if !private.is_empty() {
        // local ("99...") coding schemes are declared (PS3.3 C.12.1.1.5)
        let items = private
            .iter()
            .map(|s| {
                let mut it = new_obj();
                put_str(&mut it, tags::CODING_SCHEME_DESIGNATOR, VR::SH, s);
                put_str(&mut it, tags::CODING_SCHEME_NAME, VR::ST, &format!("{} local codes", ctx.settings.manufacturer));
                put_str(&mut it, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, &ctx.settings.manufacturer);
                it
            })
            .collect();
        put_seq(&mut o, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, items);
    }
    root.write_into(&mut o);
    Ok(o)
}

/// Coding schemes of the content tree that are local (designator "99...").
fn private_schemes(item: &Item, out: &mut std::collections::BTreeSet<String>) {
    let mut add = |c: &Code| {
        if c.scheme.starts_with("99") {
            out.insert(c.scheme.clone());
        }
    };
    add(&item.name);
    match &item.value {
        Value::Code(c) => add(c),
        Value::Num { unit, .. } => add(unit),
        _ => {}
    }
    for c in &item.children {
        private_schemes(c, out);
    }
}

fn put_empty_seq(o: &mut Obj, tag: dicom_core::Tag) {
    put_seq(o, tag, Vec::new());
}

/// Hierarchical SOP Instance Reference items: study > series > instances.
pub(crate) fn evidence_items(evidence: &[SourceInstance]) -> Vec<Obj> {
    let mut studies: BTreeMap<&str, BTreeMap<&str, Vec<&SourceInstance>>> = BTreeMap::new();
    for s in evidence {
        studies.entry(&s.study_instance_uid).or_default().entry(&s.series_instance_uid).or_default().push(s);
    }
    studies
        .into_iter()
        .map(|(study, series)| {
            let mut st = new_obj();
            let series_items = series
                .into_iter()
                .map(|(uid, list)| {
                    let mut se = new_obj();
                    let mut seen = HashSet::new();
                    let refs =
                        list.iter().filter(|s| seen.insert(s.sop_instance_uid.clone())).map(|s| sop_ref_item(&s.sop_class_uid, &s.sop_instance_uid)).collect();
                    put_seq(&mut se, tags::REFERENCED_SOP_SEQUENCE, refs);
                    put_str(&mut se, tags::SERIES_INSTANCE_UID, VR::UI, uid);
                    se
                })
                .collect();
            put_seq(&mut st, tags::REFERENCED_SERIES_SEQUENCE, series_items);
            put_str(&mut st, tags::STUDY_INSTANCE_UID, VR::UI, study);
            st
        })
        .collect()
}

/// CID 100 default by modality (or "Imaging procedure").
pub fn default_procedure(modality: &str) -> Code {
    match modality {
        "CT" => Code::new("25045-6", "LN", "CT unspecified body region"),
        "MR" => Code::new("25056-3", "LN", "MRI unspecified body region"),
        "CR" | "DX" | "RG" | "PX" | "DR" => Code::new("43468-8", "LN", "XR unspecified body region"),
        "NM" => Code::new("49118-3", "LN", "NM unspecified body region"),
        "PT" => Code::new("44136-0", "LN", "PET unspecified body region"),
        _ => Code::new("363679005", "SCT", "Imaging procedure"),
    }
}

fn modality_code(m: &str) -> Option<Code> {
    let meaning = match m {
        "CT" => "Computed Tomography",
        "MR" => "Magnetic Resonance",
        "US" => "Ultrasound",
        "CR" => "Computed Radiography",
        "DX" => "Digital Radiography",
        "MG" => "Mammography",
        "PX" => "Panoramic X-Ray",
        "NM" => "Nuclear Medicine",
        "PT" => "Positron emission tomography",
        "XA" => "X-Ray Angiography",
        "RF" => "Radio Fluoroscopy",
        "OT" => "Other",
        _ => return None,
    };
    Some(Code::new(m, "DCM", meaning))
}

fn library_entry(s: &SourceInstance) -> Item {
    let mut it = Item::new(
        Rel::Contains,
        names::source(),
        Value::Image { class: s.sop_class_uid.clone(), instance: s.sop_instance_uid.clone(), frame: None, segment: None },
    );
    if let Some(m) = modality_code(&s.modality) {
        it.children.push(Item::new(Rel::HasAcqContext, names::modality(), Value::Code(m)));
    }
    if let Some(f) = &s.frame_of_reference_uid {
        it.children.push(Item::new(Rel::HasAcqContext, names::frame_of_reference_uid(), Value::UidRef(f.clone())));
    }
    if let (Some(r), Some(c)) = (s.rows, s.cols) {
        it.children.push(Item::new(Rel::HasAcqContext, names::pixel_data_rows(), Value::Num { value: r as f64, unit: names::pixels() }));
        it.children.push(Item::new(Rel::HasAcqContext, names::pixel_data_columns(), Value::Num { value: c as f64, unit: names::pixels() }));
    }
    it
}

fn evaluation_item(field: &str, e: &QualitativeEvaluation) -> Result<Item, EncodeError> {
    validate_code(&format!("{field}.concept"), &e.concept)?;
    let value = match &e.value {
        EvaluationValue::Code(c) => {
            validate_code(&format!("{field}.value"), c)?;
            Value::Code(c.clone())
        }
        EvaluationValue::Text(t) => {
            if t.trim().is_empty() {
                return Err(EncodeError::invalid(format!("{field}.value"), "empty text"));
            }
            Value::Text(t.clone())
        }
    };
    Ok(Item::new(Rel::Contains, e.concept.clone(), value))
}

fn measurement_item(field: &str, m: &Measurement, algo: &AlgorithmIdentity) -> Result<Item, EncodeError> {
    validate_code(&format!("{field}.concept"), &m.concept)?;
    validate_code(&format!("{field}.unit"), &m.unit)?;
    if m.unit.scheme != "UCUM" {
        return Err(EncodeError::invalid(format!("{field}.unit"), format!("{} is not a UCUM unit (scheme must be UCUM)", m.unit)));
    }
    if !m.value.is_finite() {
        return Err(EncodeError::invalid(format!("{field}.value"), format!("{} is not a finite number", m.value)));
    }
    let mut it = Item::new(Rel::Contains, m.concept.clone(), Value::Num { value: m.value, unit: m.unit.clone() });
    if let Some(c) = &m.method {
        validate_code(&format!("{field}.method"), c)?;
        it.children.push(Item::new(Rel::HasConceptMod, names::measurement_method(), Value::Code(c.clone())));
    }
    if let Some(c) = &m.derivation {
        validate_code(&format!("{field}.derivation"), c)?;
        it.children.push(Item::new(Rel::HasConceptMod, names::derivation(), Value::Code(c.clone())));
    }
    if let Some(c) = &m.finding_site {
        validate_code(&format!("{field}.finding_site"), c)?;
        it.children.push(Item::new(Rel::HasConceptMod, names::finding_site(), Value::Code(c.clone())));
    }
    it.children.push(Item::new(Rel::HasConceptMod, names::algorithm_name(), Value::Text(algo.name.clone())));
    it.children.push(Item::new(Rel::HasConceptMod, names::algorithm_version(), Value::Text(algo.version.clone())));
    Ok(it)
}

fn group_item(field: &str, g: &MeasurementGroup, ev: &Evidence, uids: &super::uids::UidGenerator, f: &Findings) -> Result<Item, EncodeError> {
    let template = match &g.roi {
        None => "1501",
        Some(Roi::Image(_)) | Some(Roi::Patient(_)) => "1410",
        Some(Roi::Segment(_)) => "1411",
    };
    let mut it = Item::container(Some(Rel::Contains), names::measurement_group(), Some(template), Vec::new());
    it.children.push(Item::new(Rel::HasObsContext, names::tracking_identifier(), Value::Text(g.tracking_id.clone())));
    let tuid = match &g.tracking_uid {
        Some(u) => {
            if !crate::config::is_uid(u) {
                return Err(EncodeError::invalid(format!("{field}.tracking_uid"), format!("`{u}` is not a UID")));
            }
            u.clone()
        }
        None => uids.uid(&format!("tracking/{}", g.tracking_id)),
    };
    it.children.push(Item::new(Rel::HasObsContext, names::tracking_uid(), Value::UidRef(tuid)));
    if let Some(c) = &g.finding {
        validate_code(&format!("{field}.finding"), c)?;
        it.children.push(Item::new(Rel::Contains, names::finding(), Value::Code(c.clone())));
    }
    match &g.roi {
        None => {}
        Some(Roi::Image(r)) => it.children.push(scoord_item(&format!("{field}.region"), r, ev)?),
        Some(Roi::Patient(r)) => it.children.push(scoord3d_item(&format!("{field}.region"), r, ev)?),
        Some(Roi::Segment(s)) => it.children.extend(segment_items(&format!("{field}.segment"), s, ev)?),
    }
    match (&g.finding_site, &g.laterality) {
        (Some(c), lat) => {
            validate_code(&format!("{field}.finding_site"), c)?;
            let mut site = Item::new(Rel::HasConceptMod, names::finding_site(), Value::Code(c.clone()));
            if let Some(l) = lat {
                validate_code(&format!("{field}.laterality"), l)?;
                site.children.push(Item::new(Rel::HasConceptMod, names::laterality(), Value::Code(l.clone())));
            }
            it.children.push(site);
        }
        (None, Some(_)) => return Err(EncodeError::invalid(format!("{field}.laterality"), "a laterality needs a finding site to modify")),
        (None, None) => {}
    }
    for (k, m) in g.measurements.iter().enumerate() {
        it.children.push(measurement_item(&format!("{field}.measurements[{k}]"), m, &f.algorithm)?);
    }
    for (k, e) in g.evaluations.iter().enumerate() {
        it.children.push(evaluation_item(&format!("{field}.evaluations[{k}]"), e)?);
    }
    Ok(it)
}

/// Graphic type and flattened data, closing polygons; validates point counts.
fn graphic(field: &str, t: GraphicType, n: usize, three_d: bool) -> Result<&'static str, EncodeError> {
    let (name, ok) = match t {
        GraphicType::Point => ("POINT", n == 1),
        GraphicType::Multipoint => ("MULTIPOINT", n >= 1),
        GraphicType::Polyline => ("POLYLINE", n >= 2),
        GraphicType::Polygon => (if three_d { "POLYGON" } else { "POLYLINE" }, n >= 3),
        GraphicType::Circle if !three_d => ("CIRCLE", n == 2),
        GraphicType::Circle => return Err(EncodeError::invalid(field, "CIRCLE does not exist in SCOORD3D")),
        GraphicType::Ellipse => ("ELLIPSE", n == 4),
    };
    if !ok {
        return Err(EncodeError::invalid(field, format!("{name} with {n} points")));
    }
    Ok(name)
}

fn scoord_item(field: &str, r: &ImageRegion, ev: &Evidence) -> Result<Item, EncodeError> {
    let s = ev.image(&format!("{field}.image"), &r.source)?;
    let t = graphic(field, r.graphic_type, r.points.len(), false)?;
    let (rows, cols) = (s.rows.unwrap() as f64, s.cols.unwrap() as f64);
    let mut data = Vec::with_capacity(2 * r.points.len() + 2);
    for (k, p) in r.points.iter().enumerate() {
        if !(p[0].is_finite() && p[1].is_finite() && (0.0..=cols).contains(&p[0]) && (0.0..=rows).contains(&p[1])) {
            return Err(EncodeError::invalid(
                format!("{field}.points[{k}]"),
                format!("({}, {}) lies outside the image ({cols} columns x {rows} rows)", p[0], p[1]),
            ));
        }
        data.extend_from_slice(&[p[0] as f32, p[1] as f32]);
    }
    if r.graphic_type == GraphicType::Polygon && r.points.first() != r.points.last() {
        data.extend_from_slice(&[r.points[0][0] as f32, r.points[0][1] as f32]);
    }
    let img = Item::new(
        Rel::SelectedFrom,
        names::source(),
        Value::Image { class: s.sop_class_uid.clone(), instance: s.sop_instance_uid.clone(), frame: r.source.frame_number, segment: None },
    );
    Ok(Item::new(Rel::Contains, names::image_region(), Value::Scoord { graphic_type: t, data }).with(img))
}

fn scoord3d_item(field: &str, r: &PatientRegion, ev: &Evidence) -> Result<Item, EncodeError> {
    let t = graphic(field, r.graphic_type, r.points.len(), true)?;
    if !ev.by_uid.values().any(|s| s.frame_of_reference_uid.as_deref() == Some(r.frame_of_reference_uid.as_str())) {
        return Err(EncodeError::invalid(
            format!("{field}.frame_of_reference_uid"),
            format!("no evidence image has Frame of Reference {}", r.frame_of_reference_uid),
        ));
    }
    let mut data = Vec::with_capacity(3 * r.points.len());
    for (k, p) in r.points.iter().enumerate() {
        if !p.iter().all(|v| v.is_finite()) {
            return Err(EncodeError::invalid(format!("{field}.points[{k}]"), "coordinates must be finite"));
        }
        data.extend(p.iter().map(|v| *v as f32));
    }
    if r.graphic_type == GraphicType::Polygon && r.points.first() != r.points.last() {
        data.extend(r.points[0].iter().map(|v| *v as f32));
    }
    Ok(Item::new(Rel::Contains, names::image_region(), Value::Scoord3d { graphic_type: t, data, frame_of_reference_uid: r.frame_of_reference_uid.clone() }))
}

fn segment_items(field: &str, s: &SegmentRef, ev: &Evidence) -> Result<Vec<Item>, EncodeError> {
    let seg = ev
        .by_uid
        .get(s.seg_sop_instance_uid.as_str())
        .ok_or_else(|| EncodeError::invalid(field, format!("SEG {} is not among the evidence instances", s.seg_sop_instance_uid)))?;
    if seg.sop_class_uid != SEGMENTATION_STORAGE {
        return Err(EncodeError::invalid(field, format!("{} is not a Segmentation", seg.file())));
    }
    let n_segments = get_items(&seg.obj, tags::SEGMENT_SEQUENCE).map(|i| i.len()).unwrap_or(0);
    if s.segment_number == 0 || s.segment_number as usize > n_segments {
        return Err(EncodeError::invalid(format!("{field}.segment_number"), format!("{} has segments 1..={n_segments}", seg.file())));
    }
    let mut items = vec![Item::new(
        Rel::Contains,
        names::referenced_segment(),
        Value::Image { class: seg.sop_class_uid.clone(), instance: seg.sop_instance_uid.clone(), frame: None, segment: Some(s.segment_number) },
    )];
    if s.source_images.is_empty() {
        // the SEG's source series
        let series = get_items(&seg.obj, tags::REFERENCED_SERIES_SEQUENCE).and_then(|i| i.first()).and_then(|i| get_str(i, tags::SERIES_INSTANCE_UID));
        let series = series.ok_or_else(|| EncodeError::SourceAttribute {
            file: seg.file(),
            attribute: "ReferencedSeriesSequence".into(),
            reason: "no source series to reference".into(),
        })?;
        items.push(Item::new(Rel::Contains, names::source_series_for_segmentation(), Value::UidRef(series)));
    } else {
        for (k, r) in s.source_images.iter().enumerate() {
            let img = ev.image(&format!("{field}.source_images[{k}]"), r)?;
            items.push(Item::new(
                Rel::Contains,
                names::source_image_for_segmentation(),
                Value::Image { class: img.sop_class_uid.clone(), instance: img.sop_instance_uid.clone(), frame: r.frame_number, segment: None },
            ));
        }
    }
    Ok(items)
}
