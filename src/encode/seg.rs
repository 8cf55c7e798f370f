//! BINARY Segmentation (SEG) from a label map.
//!
//! One frame per segment per source frame (segment-major, then the grid's
//! frame order), frames bit-packed contiguously ([`super::bits`]). With a
//! Frame of Reference: Pixel Measures and Plane Orientation shared, Plane
//! Position per frame, Dimension Index = (segment number, Image Position).
//! Without one (ultrasound, projection images): Patient Orientation,
//! no plane attributes, Dimension Index = segment number.

use std::collections::{BTreeMap, HashMap};

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use super::bits::BitPacker;
use super::color::rgb_to_dicom_lab;
use super::common::{base_dataset, ResultContext, ResultKind};
use super::dataset::*;
use super::error::EncodeError;
use super::source::SourceInstance;
use crate::findings::{AlgorithmIdentity, AlgorithmType, Code, Segment, Segmentation};

pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

#[derive(Debug, Clone)]
pub struct SegOptions {
    /// Content Label (CS: A-Z, 0-9, space, underscore; at most 16).
    pub content_label: String,
    pub content_description: Option<String>,
    /// Leave out frames without foreground for their segment.
    pub omit_empty_frames: bool,
    /// Accept a label map with no foreground at all.
    pub allow_empty: bool,
}

impl SegOptions {
    pub fn new(ctx: &ResultContext) -> SegOptions {
        SegOptions {
            content_label: "SEGMENTATION".into(),
            content_description: None,
            omit_empty_frames: ctx.settings.seg_omit_empty_frames,
            allow_empty: false,
        }
    }
}

/// Builds the SEG data set. `sources` are the instances the label map's grid
/// refers to (all of them; other instances are refused).
pub fn encode_seg(ctx: &ResultContext, sources: &[SourceInstance], seg: &Segmentation, opts: &SegOptions) -> Result<Obj, EncodeError> {
    let grid = &seg.labels.grid;
    let study = grid.study_instance_uid.clone();
    validate_content_label(&opts.content_label)?;
    validate_segments(&seg.segments)?;
    super::source::check_one_study(sources)?;
    if sources[0].study_instance_uid != study {
        return Err(EncodeError::geometry(&study, format!("the label map's study differs from {}'s ({})", sources[0].file(), sources[0].study_instance_uid)));
    }
    if grid.frames.is_empty() {
        return Err(EncodeError::geometry(&study, "the label map has no frames"));
    }
    // every grid frame must be a frame of a given source, of the same size
    let by_uid: HashMap<&str, &SourceInstance> = sources.iter().map(|s| (s.sop_instance_uid.as_str(), s)).collect();
    for f in &grid.frames {
        let s = by_uid.get(f.source.sop_instance_uid.as_str()).ok_or_else(|| {
            EncodeError::geometry(&study, format!("label map frame refers to {}, which is not among the source instances", f.source.sop_instance_uid))
        })?;
        if s.rows != Some(grid.rows) || s.cols != Some(grid.cols) {
            return Err(EncodeError::SourceAttribute {
                file: s.file(),
                attribute: "Rows/Columns".into(),
                reason: format!("source is {} x {}, the label map is {} x {} (rows x columns)", s.rows.unwrap_or(0), s.cols.unwrap_or(0), grid.rows, grid.cols),
            });
        }
        if let Some(n) = f.source.frame_number {
            if n == 0 || n > s.frames() {
                return Err(EncodeError::geometry(&study, format!("frame {n} of {} does not exist ({} frames)", s.file(), s.frames())));
            }
        }
    }
    // which label occurs in which frame: present[label][frame]
    let numbers: Vec<u16> = seg.segments.iter().map(|s| s.number).collect();
    let mut present: Vec<Vec<bool>> = vec![vec![false; grid.frames.len()]; numbers.len() + 1];
    let mut foreground = 0usize;
    #[allow(clippy::needless_range_loop)]
    for f in 0..grid.frames.len() {
        for &v in seg.labels.frame(f) {
            if v == 0 {
                continue;
            }
            if v as usize > numbers.len() {
                return Err(EncodeError::invalid("label map", format!("label value {v} (frame {}) has no segment; segments are 1..={}", f + 1, numbers.len())));
            }
            present[v as usize][f] = true;
            foreground += 1;
        }
    }
    if foreground == 0 && !opts.allow_empty {
        return Err(EncodeError::geometry(&study, "the segmentation has no foreground at all (allow_empty not set)"));
    }

    // frames: (segment number, grid frame index)
    let mut frames: Vec<(u16, usize)> = Vec::new();
    for &n in &numbers {
        for (f, &on) in present[n as usize].iter().enumerate() {
            if !opts.omit_empty_frames || on {
                frames.push((n, f));
            }
        }
    }
    if frames.is_empty() {
        // allowed-empty segmentation with omitted frames: keep one full set
        frames = numbers.iter().flat_map(|&n| (0..grid.frames.len()).map(move |f| (n, f))).collect();
    }

    let instance_uids: Vec<&str> = sources.iter().map(|s| s.sop_instance_uid.as_str()).collect();
    let uids = super::uids::UidGenerator::new(&ctx.settings.uid_root, &instance_uids, &ctx.pipeline, &ctx.model_version, "SEG")?;
    let mut o = base_dataset(ctx, ResultKind::Seg, SEGMENTATION_STORAGE, "SEG", &uids, &sources[0]);
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &["DERIVED".into(), "PRIMARY".into()]);
    put_str(&mut o, tags::CONTENT_LABEL, VR::CS, &opts.content_label);
    match &opts.content_description {
        Some(d) => put_str(&mut o, tags::CONTENT_DESCRIPTION, VR::LO, d),
        None => put_empty(&mut o, tags::CONTENT_DESCRIPTION, VR::LO),
    }
    put_str(&mut o, tags::CONTENT_CREATOR_NAME, VR::PN, &ctx.settings.content_creator);

    // Image pixel / Segmentation Image
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, &[1]);
    put_str(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_us(&mut o, tags::ROWS, &[grid.rows]);
    put_us(&mut o, tags::COLUMNS, &[grid.cols]);
    put_us(&mut o, tags::BITS_ALLOCATED, &[1]);
    put_us(&mut o, tags::BITS_STORED, &[1]);
    put_us(&mut o, tags::HIGH_BIT, &[0]);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, &[0]);
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_str(&mut o, tags::SEGMENTS_OVERLAP, VR::CS, "NO");
    put_is(&mut o, tags::NUMBER_OF_FRAMES, frames.len() as i64);

    // Common Instance Reference: every source instance, by series
    let mut by_series: BTreeMap<&str, Vec<&SourceInstance>> = BTreeMap::new();
    for s in sources {
        by_series.entry(s.series_instance_uid.as_str()).or_default().push(s);
    }
    let series_items = by_series
        .into_iter()
        .map(|(series, list)| {
            let mut it = new_obj();
            put_seq(&mut it, tags::REFERENCED_INSTANCE_SEQUENCE, list.iter().map(|s| sop_ref_item(&s.sop_class_uid, &s.sop_instance_uid)).collect());
            put_str(&mut it, tags::SERIES_INSTANCE_UID, VR::UI, series);
            it
        })
        .collect();
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, series_items);

    let spatial = grid.has_patient_geometry();
    if spatial {
        put_str(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, grid.frame_of_reference_uid.as_deref().unwrap());
        match get_str(&sources[0].obj, tags::POSITION_REFERENCE_INDICATOR) {
            Some(p) => put_str(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, &p),
            None => put_empty(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO),
        }
    } else {
        match get_strs(&sources[0].obj, tags::PATIENT_ORIENTATION).filter(|v| v.len() == 2 && v.iter().all(|s| !s.is_empty())) {
            Some(v) => put_strs(&mut o, tags::PATIENT_ORIENTATION, VR::CS, &v),
            None => put_empty(&mut o, tags::PATIENT_ORIENTATION, VR::CS),
        }
    }

    // Dimensions
    let dim_uid = uids.uid("dimension-organization");
    let mut dorg = new_obj();
    put_str(&mut dorg, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
    put_seq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![dorg]);
    let dim = |pointer: Tag, group: Tag, label: &str| {
        let mut d = new_obj();
        put_str(&mut d, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
        put_at(&mut d, tags::DIMENSION_INDEX_POINTER, &[pointer]);
        put_at(&mut d, tags::FUNCTIONAL_GROUP_POINTER, &[group]);
        put_str(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        d
    };
    let mut dims = vec![dim(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "Segment Number")];
    if spatial {
        dims.push(dim(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "Image Position (Patient)"));
        if !opts.omit_empty_frames && grid.spacing_between_slices().is_some() && numbers.len() == 1 {
            put_str(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
        }
    }
    put_seq(&mut o, tags::DIMENSION_INDEX_SEQUENCE, dims);

    // Segments
    let seg_items = seg.segments.iter().map(|s| segment_item(s, &uids)).collect();
    put_seq(&mut o, tags::SEGMENT_SEQUENCE, seg_items);

    // Functional groups
    let mut shared = new_obj();
    if spatial {
        let mut pm = new_obj();
        put_ds(&mut pm, tags::PIXEL_SPACING, &grid.pixel_spacing.unwrap());
        let thickness = grid.slice_thickness.or(grid.spacing_between_slices()).unwrap_or(1.0);
        put_ds(&mut pm, tags::SLICE_THICKNESS, &[thickness]);
        if let Some(d) = grid.spacing_between_slices() {
            put_ds(&mut pm, tags::SPACING_BETWEEN_SLICES, &[d]);
        }
        put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![pm]);
        let mut po = new_obj();
        put_ds(&mut po, tags::IMAGE_ORIENTATION_PATIENT, &grid.orientation.unwrap());
        put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![po]);
    }
    put_seq(&mut o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);

    let per_frame = frames
        .iter()
        .map(|&(n, f)| {
            let gf = &grid.frames[f];
            let mut it = new_obj();
            // Derivation Image
            let mut src = sop_ref_item(&gf.source.sop_class_uid, &gf.source.sop_instance_uid);
            if let Some(fr) = gf.source.frame_number {
                put_is(&mut src, tags::REFERENCED_FRAME_NUMBER, fr as i64);
            }
            put_code(&mut src, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, &Code::new("121322", "DCM", "Source image for image processing operation"));
            put_str(&mut src, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
            let mut der = new_obj();
            put_seq(&mut der, tags::SOURCE_IMAGE_SEQUENCE, vec![src]);
            put_code(&mut der, tags::DERIVATION_CODE_SEQUENCE, &Code::new("113076", "DCM", "Segmentation"));
            put_seq(&mut it, tags::DERIVATION_IMAGE_SEQUENCE, vec![der]);
            // Frame Content
            let mut fc = new_obj();
            let mut idx = vec![n as u32];
            if spatial {
                idx.push(f as u32 + 1);
            }
            put_ul(&mut fc, tags::DIMENSION_INDEX_VALUES, &idx);
            put_seq(&mut it, tags::FRAME_CONTENT_SEQUENCE, vec![fc]);
            if spatial {
                let mut pp = new_obj();
                put_ds(&mut pp, tags::IMAGE_POSITION_PATIENT, &gf.position.unwrap());
                put_seq(&mut it, tags::PLANE_POSITION_SEQUENCE, vec![pp]);
            }
            let mut si = new_obj();
            put_us(&mut si, tags::REFERENCED_SEGMENT_NUMBER, &[n]);
            put_seq(&mut it, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![si]);
            it
        })
        .collect();
    put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);

    // Pixel data
    let len = grid.frame_len();
    let mut packer = BitPacker::with_capacity_bits(len * frames.len());
    for &(n, f) in &frames {
        let labels = seg.labels.frame(f);
        packer.push_frame(len, |i| labels[i] == n);
    }
    put_ob(&mut o, tags::PIXEL_DATA, packer.finish());
    Ok(o)
}

fn segment_item(s: &Segment, uids: &super::uids::UidGenerator) -> Obj {
    let mut it = new_obj();
    put_us(&mut it, tags::SEGMENT_NUMBER, &[s.number]);
    put_str(&mut it, tags::SEGMENT_LABEL, VR::LO, &s.label);
    put_code(&mut it, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, &s.category);
    let mut ty = code_item(&s.property_type);
    if !s.type_modifiers.is_empty() {
        put_seq(&mut ty, tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE, s.type_modifiers.iter().map(code_item).collect());
    }
    put_seq(&mut it, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![ty]);
    if let Some(r) = &s.anatomic_region {
        put_code(&mut it, tags::ANATOMIC_REGION_SEQUENCE, r);
    }
    put_str(&mut it, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, s.algorithm_type.as_dicom());
    if let Some(a) = &s.algorithm {
        if s.algorithm_type != AlgorithmType::Manual {
            put_str(&mut it, tags::SEGMENT_ALGORITHM_NAME, VR::LO, &a.name);
        }
        put_seq(&mut it, tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, vec![algorithm_item(a)]);
    }
    if let Some(c) = s.color {
        put_us(&mut it, tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, &rgb_to_dicom_lab(c));
    }
    if let Some(t) = &s.tracking_id {
        put_str(&mut it, tags::TRACKING_ID, VR::UT, t);
        put_str(&mut it, tags::TRACKING_UID, VR::UI, &uids.uid(&format!("segment-tracking/{}", s.number)));
    }
    it
}

/// Algorithm Identification Sequence item (family, name, version, parameters).
pub fn algorithm_item(a: &AlgorithmIdentity) -> Obj {
    let mut it = new_obj();
    put_code(&mut it, tags::ALGORITHM_FAMILY_CODE_SEQUENCE, &a.family);
    put_str(&mut it, tags::ALGORITHM_NAME, VR::LO, &a.name);
    put_str(&mut it, tags::ALGORITHM_VERSION, VR::LO, &a.version);
    if let Some(h) = &a.weights_sha256 {
        put_str(&mut it, tags::ALGORITHM_PARAMETERS, VR::LT, &format!("weights_sha256={h}"));
    }
    it
}

pub(crate) fn validate_content_label(label: &str) -> Result<(), EncodeError> {
    if label.is_empty() || label.len() > 16 || !label.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b' ') {
        return Err(EncodeError::invalid("Content Label (0070,0080)", format!("`{label}` must be 1-16 characters of A-Z, 0-9, space and underscore")));
    }
    Ok(())
}

pub(crate) fn validate_code(field: &str, c: &Code) -> Result<(), EncodeError> {
    if c.value.trim().is_empty() || c.scheme.trim().is_empty() || c.meaning.trim().is_empty() {
        return Err(EncodeError::invalid(field, format!("code {c} needs a value, a scheme and a meaning")));
    }
    if c.scheme.len() > 16 || c.meaning.len() > 64 || c.value.contains('\\') || c.meaning.contains('\\') {
        return Err(EncodeError::invalid(field, format!("code {c}: scheme at most 16, meaning at most 64 characters, no backslash")));
    }
    Ok(())
}

pub(crate) fn validate_lo(field: &str, s: &str) -> Result<(), EncodeError> {
    if s.trim().is_empty() || s.chars().count() > 64 || s.contains('\\') || s.chars().any(|c| c.is_control()) {
        return Err(EncodeError::invalid(field, format!("`{s}` must be 1-64 characters, no backslash or control characters")));
    }
    Ok(())
}

pub(crate) fn validate_algorithm(field: &str, a: &AlgorithmIdentity) -> Result<(), EncodeError> {
    validate_lo(&format!("{field}.name"), &a.name)?;
    validate_lo(&format!("{field}.version"), &a.version)?;
    validate_code(&format!("{field}.family"), &a.family)?;
    if let Some(h) = &a.weights_sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EncodeError::invalid(format!("{field}.weights_sha256"), "must be 64 hex digits"));
        }
    }
    Ok(())
}

fn validate_segments(segments: &[Segment]) -> Result<(), EncodeError> {
    if segments.is_empty() {
        return Err(EncodeError::invalid("segments", "at least one segment is needed"));
    }
    if segments.len() > u16::MAX as usize {
        return Err(EncodeError::invalid("segments", "too many segments"));
    }
    for (i, s) in segments.iter().enumerate() {
        let f = format!("segments[{i}]");
        if s.number as usize != i + 1 {
            return Err(EncodeError::invalid(
                format!("{f}.number"),
                format!("segment numbers must be 1, 2, 3 ... in order (DICOM C.8.20.2); found {} at position {}", s.number, i + 1),
            ));
        }
        validate_lo(&format!("{f}.label"), &s.label)?;
        validate_code(&format!("{f}.category"), &s.category)?;
        validate_code(&format!("{f}.type"), &s.property_type)?;
        for (k, m) in s.type_modifiers.iter().enumerate() {
            validate_code(&format!("{f}.modifiers[{k}]"), m)?;
        }
        if let Some(r) = &s.anatomic_region {
            validate_code(&format!("{f}.anatomic_region"), r)?;
        }
        match (&s.algorithm, s.algorithm_type) {
            (None, AlgorithmType::Automatic | AlgorithmType::Semiautomatic) => {
                return Err(EncodeError::invalid(format!("{f}.algorithm"), "required unless the algorithm type is MANUAL"));
            }
            (Some(a), _) => validate_algorithm(&format!("{f}.algorithm"), a)?,
            _ => {}
        }
        if let Some(t) = &s.tracking_id {
            validate_lo(&format!("{f}.tracking_id"), t)?;
        }
    }
    Ok(())
}
