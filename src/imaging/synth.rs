//! Synthetic CT instances (single-frame and enhanced multi-frame) for tests
//! and demos: exact geometry and values, written with dicom-object.

use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Identity and in-plane geometry shared by the slices of a series.
#[derive(Debug, Clone)]
pub struct SynthSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub rows: usize,
    pub cols: usize,
    /// `[row_mm, col_mm]` as in Pixel Spacing.
    pub pixel_spacing: [f64; 2],
    /// Image Orientation (Patient).
    pub orientation: [f64; 6],
}

impl SynthSeries {
    /// Axial series, 1 mm pixels, with UIDs under `root`.
    pub fn axial(root: &str, rows: usize, cols: usize) -> Self {
        SynthSeries {
            study_instance_uid: format!("{root}.1"),
            series_instance_uid: format!("{root}.2"),
            frame_of_reference_uid: format!("{root}.3"),
            rows,
            cols,
            pixel_spacing: [1.0, 1.0],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        }
    }
}

/// One frame: where it is and its stored values (row-major).
#[derive(Debug, Clone)]
pub struct SynthFrame {
    pub position: [f64; 3],
    pub stored: Vec<i16>,
    pub slope: f64,
    pub intercept: f64,
}

fn ds(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|v| fmt_ds(*v)).collect())
}

/// A DS string of at most 16 characters.
fn fmt_ds(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for p in (0..=12).rev() {
        let s = format!("{v:.p$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.6e}")
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, v.into()));
}

fn item(elems: Vec<(Tag, VR, PrimitiveValue)>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elems.into_iter().map(|(t, vr, v)| DataElement::new(t, vr, v)))
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn base(series: &SynthSeries, sop_class: &str, sop_uid: &str) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put(&mut o, tags::MODALITY, VR::CS, "CT");
    put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, series.study_instance_uid.as_str());
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, series.series_instance_uid.as_str());
    put(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, series.frame_of_reference_uid.as_str());
    put(&mut o, tags::SAMPLES_PER_PIXEL, VR::US, 1u16);
    put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put(&mut o, tags::ROWS, VR::US, series.rows as u16);
    put(&mut o, tags::COLUMNS, VR::US, series.cols as u16);
    put(&mut o, tags::BITS_ALLOCATED, VR::US, 16u16);
    put(&mut o, tags::BITS_STORED, VR::US, 16u16);
    put(&mut o, tags::HIGH_BIT, VR::US, 15u16);
    put(&mut o, tags::PIXEL_REPRESENTATION, VR::US, 1u16);
    o
}

fn with_meta(o: InMemDicomObject) -> DefaultDicomObject {
    o.with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE)).expect("synthetic object has SOP class and instance UIDs")
}

/// A single-frame CT Image Storage instance.
pub fn ct_slice(series: &SynthSeries, sop_instance_uid: &str, instance_number: i32, frame: &SynthFrame) -> DefaultDicomObject {
    assert_eq!(frame.stored.len(), series.rows * series.cols, "stored values must be rows x cols");
    let mut o = base(series, CT_IMAGE_STORAGE, sop_instance_uid);
    put(&mut o, tags::INSTANCE_NUMBER, VR::IS, instance_number.to_string());
    put(&mut o, tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&frame.position));
    put(&mut o, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&series.orientation));
    put(&mut o, tags::PIXEL_SPACING, VR::DS, ds(&series.pixel_spacing));
    put(&mut o, tags::SLICE_THICKNESS, VR::DS, "5");
    put(&mut o, tags::RESCALE_INTERCEPT, VR::DS, fmt_ds(frame.intercept));
    put(&mut o, tags::RESCALE_SLOPE, VR::DS, fmt_ds(frame.slope));
    put(&mut o, tags::PIXEL_DATA, VR::OW, PrimitiveValue::I16(frame.stored.iter().copied().collect()));
    with_meta(o)
}

/// An Enhanced CT Image Storage instance: orientation and pixel measures
/// shared, position and rescale per frame.
pub fn enhanced_ct(series: &SynthSeries, sop_instance_uid: &str, frames: &[SynthFrame]) -> DefaultDicomObject {
    let mut o = base(series, ENHANCED_CT_IMAGE_STORAGE, sop_instance_uid);
    put(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string());
    let shared = InMemDicomObject::from_element_iter([
        seq(tags::PLANE_ORIENTATION_SEQUENCE, vec![item(vec![(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&series.orientation))])]),
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![(tags::PIXEL_SPACING, VR::DS, ds(&series.pixel_spacing)), (tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("5"))])],
        ),
    ]);
    o.put(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]));
    let per_frame: Vec<InMemDicomObject> = frames
        .iter()
        .map(|f| {
            InMemDicomObject::from_element_iter([
                seq(tags::PLANE_POSITION_SEQUENCE, vec![item(vec![(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&f.position))])]),
                seq(
                    tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                    vec![item(vec![
                        (tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from(fmt_ds(f.intercept))),
                        (tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from(fmt_ds(f.slope))),
                        (tags::RESCALE_TYPE, VR::LO, PrimitiveValue::from("HU")),
                    ])],
                ),
            ])
        })
        .collect();
    o.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    let mut all: Vec<i16> = Vec::with_capacity(frames.len() * series.rows * series.cols);
    for f in frames {
        assert_eq!(f.stored.len(), series.rows * series.cols, "stored values must be rows x cols");
        all.extend_from_slice(&f.stored);
    }
    put(&mut o, tags::PIXEL_DATA, VR::OW, PrimitiveValue::I16(all.into()));
    with_meta(o)
}

pub const DX_FOR_PRESENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1.1";

/// Identity and acquisition facts of a synthetic projection radiograph.
#[derive(Debug, Clone)]
pub struct SynthRadiograph {
    pub patient_name: String,
    pub patient_id: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub rows: usize,
    pub cols: usize,
    /// `[row_mm, col_mm]` at the detector.
    pub imager_pixel_spacing: [f64; 2],
    pub bits_stored: u16,
    /// e.g. "PELVIS".
    pub body_part: String,
    /// Anatomic Region Sequence item: (code value, scheme, meaning).
    pub anatomic_region: (String, String, String),
    pub view_position: String,
    /// Row and column directions, e.g. ["L", "F"] for an AP view.
    pub patient_orientation: [String; 2],
    pub series_description: String,
    pub window: (f64, f64),
}

/// A Digital X-Ray Image (For Presentation) instance, MONOCHROME2, unsigned.
pub fn dx_image(spec: &SynthRadiograph, stored: &[u16]) -> DefaultDicomObject {
    assert_eq!(stored.len(), spec.rows * spec.cols, "stored values must be rows x cols");
    let mut o = InMemDicomObject::new_empty();
    let text: [(Tag, VR, &str); 24] = [
        (tags::SOP_CLASS_UID, VR::UI, DX_FOR_PRESENTATION_STORAGE),
        (tags::SOP_INSTANCE_UID, VR::UI, &spec.sop_instance_uid),
        (tags::STUDY_INSTANCE_UID, VR::UI, &spec.study_instance_uid),
        (tags::SERIES_INSTANCE_UID, VR::UI, &spec.series_instance_uid),
        (tags::MODALITY, VR::CS, "DX"),
        (tags::PATIENT_NAME, VR::PN, &spec.patient_name),
        (tags::PATIENT_ID, VR::LO, &spec.patient_id),
        (tags::PATIENT_BIRTH_DATE, VR::DA, ""),
        (tags::PATIENT_SEX, VR::CS, "O"),
        (tags::STUDY_DATE, VR::DA, "20260101"),
        (tags::STUDY_TIME, VR::TM, "120000"),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
        (tags::STUDY_ID, VR::SH, "1"),
        (tags::ACCESSION_NUMBER, VR::SH, ""),
        (tags::SERIES_NUMBER, VR::IS, "1"),
        (tags::INSTANCE_NUMBER, VR::IS, "1"),
        (tags::SERIES_DESCRIPTION, VR::LO, &spec.series_description),
        (tags::MANUFACTURER, VR::LO, "ainode synthetic"),
        (tags::BODY_PART_EXAMINED, VR::CS, &spec.body_part),
        (tags::VIEW_POSITION, VR::CS, &spec.view_position),
        (tags::IMAGE_LATERALITY, VR::CS, "B"),
        (tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION"),
        (tags::PIXEL_INTENSITY_RELATIONSHIP, VR::CS, "LOG"),
        (tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY"),
    ];
    for (tag, vr, v) in text {
        put(&mut o, tag, vr, v);
    }
    put(&mut o, tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["DERIVED", "PRIMARY"].iter().map(|s| s.to_string()).collect()));
    put(&mut o, tags::CONTENT_DATE, VR::DA, "20260101");
    put(&mut o, tags::CONTENT_TIME, VR::TM, "120000");
    put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put(&mut o, tags::PIXEL_INTENSITY_RELATIONSHIP_SIGN, VR::SS, 1i16);
    put(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "0");
    put(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
    put(&mut o, tags::RESCALE_TYPE, VR::LO, "US");
    put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put(&mut o, tags::DETECTOR_TYPE, VR::CS, "DIRECT");
    put(&mut o, tags::PATIENT_ORIENTATION, VR::CS, PrimitiveValue::Strs(spec.patient_orientation.iter().cloned().collect()));
    put(&mut o, tags::IMAGER_PIXEL_SPACING, VR::DS, ds(&spec.imager_pixel_spacing));
    put(&mut o, tags::WINDOW_CENTER, VR::DS, fmt_ds(spec.window.0));
    put(&mut o, tags::WINDOW_WIDTH, VR::DS, fmt_ds(spec.window.1));
    let (code, scheme, meaning) = &spec.anatomic_region;
    o.put(seq(
        tags::ANATOMIC_REGION_SEQUENCE,
        vec![item(vec![
            (tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code.as_str())),
            (tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from(scheme.as_str())),
            (tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning.as_str())),
        ])],
    ));
    put(&mut o, tags::SAMPLES_PER_PIXEL, VR::US, 1u16);
    put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put(&mut o, tags::ROWS, VR::US, spec.rows as u16);
    put(&mut o, tags::COLUMNS, VR::US, spec.cols as u16);
    put(&mut o, tags::BITS_ALLOCATED, VR::US, 16u16);
    put(&mut o, tags::BITS_STORED, VR::US, spec.bits_stored);
    put(&mut o, tags::HIGH_BIT, VR::US, spec.bits_stored - 1);
    put(&mut o, tags::PIXEL_REPRESENTATION, VR::US, 0u16);
    put(&mut o, tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.iter().copied().collect()));
    with_meta(o)
}

/// Write an object as a Part 10 file.
pub fn write(obj: &DefaultDicomObject, path: &Path) -> std::io::Result<()> {
    obj.write_to_file(path).map_err(std::io::Error::other)
}
