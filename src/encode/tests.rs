//! Encoder tests on synthetic sources: what they write, and what they refuse.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;

use super::common::{EncoderSettings, ResultContext};
use super::dataset::*;
use super::error::EncodeError;
use super::gsps::{encode_csps, encode_gsps, encode_presentation_state, GspsOptions, COLOR_SOFTCOPY_PRESENTATION_STATE};
use super::seg::{encode_seg, SegOptions};
use super::source::{grid_of, SourceInstance};
use super::sr::{encode_sr, SrOptions, COMPREHENSIVE_3D_SR, COMPREHENSIVE_SR};
use crate::findings::*;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

/// A CT slice: `rows` x `cols`, axial, at z, spacing (0.5, 0.25).
fn ct_slice(i: usize, rows: u16, cols: u16, z: f64) -> SourceInstance {
    let mut o = new_obj();
    put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, CT);
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &format!("1.2.3.4.{i}"));
    put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.1");
    put_str(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.2");
    put_str(&mut o, tags::PATIENT_NAME, VR::PN, "Müller^Jürgen");
    put_str(&mut o, tags::PATIENT_ID, VR::LO, "P1");
    put_str(&mut o, tags::MODALITY, VR::CS, "CT");
    put_str(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.3.3");
    put_str(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_us(&mut o, tags::ROWS, &[rows]);
    put_us(&mut o, tags::COLUMNS, &[cols]);
    put_us(&mut o, tags::BITS_STORED, &[12]);
    put_is(&mut o, tags::INSTANCE_NUMBER, i as i64 + 1);
    put_ds(&mut o, tags::PIXEL_SPACING, &[0.5, 0.25]);
    put_ds(&mut o, tags::SLICE_THICKNESS, &[2.0]);
    put_ds(&mut o, tags::IMAGE_ORIENTATION_PATIENT, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    put_ds(&mut o, tags::IMAGE_POSITION_PATIENT, &[-10.0, -20.0, z]);
    put_ds(&mut o, tags::RESCALE_SLOPE, &[1.0]);
    put_ds(&mut o, tags::RESCALE_INTERCEPT, &[-1024.0]);
    SourceInstance::from_object(o, Path::new(&format!("ct{i}.dcm"))).unwrap()
}

/// Slices given in reverse z order, so the grid has to sort them.
fn ct_series(n: usize, rows: u16, cols: u16) -> Vec<SourceInstance> {
    (0..n).map(|i| ct_slice(i, rows, cols, 10.0 - 2.0 * i as f64)).collect()
}

fn ctx() -> ResultContext {
    let mut c = ResultContext::new(EncoderSettings::defaults(), "test", "1.0");
    c.created = ("20240102".into(), "030405".into());
    c
}

fn segment(n: u16) -> Segment {
    Segment {
        number: n,
        label: format!("segment {n}"),
        category: Code::new("91723000", "SCT", "Anatomical Structure"),
        property_type: Code::new("10200004", "SCT", "Liver"),
        type_modifiers: vec![],
        anatomic_region: None,
        color: Some([255, 0, 0]),
        algorithm_type: AlgorithmType::Automatic,
        algorithm: Some(AlgorithmIdentity::new("net", "1.0")),
        tracking_id: None,
    }
}

fn pixel_data(o: &Obj) -> Vec<u8> {
    o.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec()
}

fn err_text(r: Result<Obj, EncodeError>) -> String {
    r.expect_err("must be refused").to_string()
}

#[test]
fn seg_packs_5x3_frames_contiguously() {
    // rows x cols = 5 x 3 = 15 pixels per frame, 2 source frames, 2 segments -> 4 frames, 60 bits
    let src = ct_series(2, 5, 3);
    let grid = grid_of(&src).unwrap();
    // the grid is sorted by z: slice 1 (z=8) first
    assert_eq!(grid.frames[0].source.sop_instance_uid, "1.2.3.4.1");
    let mut labels = vec![0u16; 30];
    labels[0] = 1; // frame 1, pixel 0
    labels[14] = 2; // frame 1, last pixel
    labels[15 + 7] = 1; // frame 2, pixel 7
    let seg = Segmentation { segments: vec![segment(1), segment(2)], labels: LabelMap::new(grid, labels).unwrap() };
    let o = encode_seg(&ctx(), &src, &seg, &SegOptions::new(&ctx())).unwrap();
    let px = pixel_data(&o);
    // 60 bits -> 8 bytes (even)
    assert_eq!(px.len(), 8);
    let on: Vec<usize> = (0..64).filter(|&i| super::bits::bit(&px, i)).collect();
    // SEG frame order: seg 1 / frame 1, seg 1 / frame 2, seg 2 / frame 1, seg 2 / frame 2
    assert_eq!(on, vec![0, 15 + 7, 30 + 14]);
    assert_eq!(get_str(&o, tags::NUMBER_OF_FRAMES).unwrap(), "4");
    assert_eq!(get_u32(&o, tags::ROWS), Some(5));
    assert_eq!(get_u32(&o, tags::COLUMNS), Some(3));
    let per = get_items(&o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap();
    let pos = |i: usize| get_f64s(first_item(&per[i], tags::PLANE_POSITION_SEQUENCE).unwrap(), tags::IMAGE_POSITION_PATIENT).unwrap();
    assert_eq!(pos(0), vec![-10.0, -20.0, 8.0]);
    assert_eq!(pos(1), vec![-10.0, -20.0, 10.0]);
    // copied patient name survives (Latin-1 character set)
    assert_eq!(get_str(&o, tags::PATIENT_NAME).unwrap(), "Müller^Jürgen");
    assert_eq!(get_u32(first_item(&per[2], tags::SEGMENT_IDENTIFICATION_SEQUENCE).unwrap(), tags::REFERENCED_SEGMENT_NUMBER), Some(2));
    // written file parses back
    let bytes = super::common::part10_bytes(&o).unwrap();
    let back = dicom_object::from_reader(&bytes[128..]).unwrap();
    assert_eq!(back.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec(), px);
}

#[test]
fn seg_can_omit_empty_frames() {
    let src = ct_series(3, 5, 3);
    let grid = grid_of(&src).unwrap();
    let mut labels = vec![0u16; 45];
    labels[15] = 1; // only the middle frame
    let seg = Segmentation { segments: vec![segment(1)], labels: LabelMap::new(grid, labels).unwrap() };
    let mut opts = SegOptions::new(&ctx());
    assert!(!opts.omit_empty_frames, "empty frames are kept by default");
    let all = encode_seg(&ctx(), &src, &seg, &opts).unwrap();
    assert_eq!(get_str(&all, tags::NUMBER_OF_FRAMES).unwrap(), "3");
    opts.omit_empty_frames = true;
    let some = encode_seg(&ctx(), &src, &seg, &opts).unwrap();
    assert_eq!(get_str(&some, tags::NUMBER_OF_FRAMES).unwrap(), "1");
    assert_eq!(pixel_data(&some), vec![1, 0]);
}

#[test]
fn seg_is_deterministic() {
    let src = ct_series(2, 5, 3);
    let grid = grid_of(&src).unwrap();
    let mut labels = vec![0u16; 30];
    labels[3] = 1;
    let seg = Segmentation { segments: vec![segment(1)], labels: LabelMap::new(grid, labels).unwrap() };
    let a = encode_seg(&ctx(), &src, &seg, &SegOptions::new(&ctx())).unwrap();
    let b = encode_seg(&ctx(), &src, &seg, &SegOptions::new(&ctx())).unwrap();
    assert_eq!(super::common::part10_bytes(&a).unwrap(), super::common::part10_bytes(&b).unwrap());
    let other = ResultContext::new(EncoderSettings::defaults(), "test", "1.1");
    let c = encode_seg(&other, &src, &seg, &SegOptions::new(&other)).unwrap();
    assert_ne!(get_str(&a, tags::SOP_INSTANCE_UID), get_str(&c, tags::SOP_INSTANCE_UID));
    assert_ne!(get_str(&a, tags::SERIES_INSTANCE_UID), get_str(&c, tags::SERIES_INSTANCE_UID));
}

#[test]
fn seg_refusals() {
    let src = ct_series(2, 5, 3);
    let grid = grid_of(&src).unwrap();
    let with = |labels: Vec<u16>, segments: Vec<Segment>| Segmentation { segments, labels: LabelMap::new(grid.clone(), labels).unwrap() };
    let opts = SegOptions::new(&ctx());
    // a label value without a segment
    let mut l = vec![0u16; 30];
    l[4] = 3;
    let e = err_text(encode_seg(&ctx(), &src, &with(l.clone(), vec![segment(1), segment(2)]), &opts));
    assert!(e.contains("label value 3") && e.contains("no segment"), "{e}");
    // no foreground, unless allowed
    let e = err_text(encode_seg(&ctx(), &src, &with(vec![0; 30], vec![segment(1)]), &opts));
    assert!(e.contains("no foreground"), "{e}");
    let mut allow = opts.clone();
    allow.allow_empty = true;
    assert!(encode_seg(&ctx(), &src, &with(vec![0; 30], vec![segment(1)]), &allow).is_ok());
    // source with other rows/columns than the label map
    let mut l = vec![0u16; 30];
    l[0] = 1;
    let other = ct_series(2, 5, 4);
    let mut seg = with(l.clone(), vec![segment(1)]);
    let e = err_text(encode_seg(&ctx(), &other, &seg, &opts));
    assert!(e.contains("Rows/Columns") && e.contains("source is 5 x 4"), "{e}");
    // a frame whose source is not given
    seg.labels.grid.frames[1].source.sop_instance_uid = "9.9.9".into();
    let e = err_text(encode_seg(&ctx(), &src, &seg, &opts));
    assert!(e.contains("9.9.9") && e.contains("study 1.2.3.1"), "{e}");
    // segment numbers must be 1, 2, ...
    let e = err_text(encode_seg(&ctx(), &src, &with(l.clone(), vec![segment(2)]), &opts));
    assert!(e.contains("segments[0].number"), "{e}");
    // automatic segments need an algorithm; codes need meanings
    let mut s = segment(1);
    s.algorithm = None;
    let e = err_text(encode_seg(&ctx(), &src, &with(l.clone(), vec![s]), &opts));
    assert!(e.contains("segments[0].algorithm"), "{e}");
    let mut s = segment(1);
    s.property_type.meaning.clear();
    let e = err_text(encode_seg(&ctx(), &src, &with(l.clone(), vec![s]), &opts));
    assert!(e.contains("segments[0].type"), "{e}");
    let mut bad = opts.clone();
    bad.content_label = "lower case".into();
    assert!(err_text(encode_seg(&ctx(), &src, &with(l, vec![segment(1)]), &bad)).contains("Content Label"));
}

#[test]
fn grid_refuses_mixed_series_and_sizes() {
    let mut src = ct_series(2, 5, 3);
    src.push(ct_slice(7, 5, 4, 20.0));
    let e = grid_of(&src).unwrap_err().to_string();
    assert!(e.contains("ct7.dcm is 5 x 4"), "{e}");
    let mut src = ct_series(2, 5, 3);
    let mut dup = ct_slice(8, 5, 3, 10.0);
    dup.sop_instance_uid = "1.2.3.4.8".into();
    src.push(dup);
    assert!(grid_of(&src).unwrap_err().to_string().contains("same position"));
}

/// A 2D image without geometry (like ultrasound) gets Patient Orientation and no plane attributes.
#[test]
fn seg_without_frame_of_reference() {
    let mut s = ct_slice(0, 5, 3, 0.0);
    for t in [tags::FRAME_OF_REFERENCE_UID, tags::IMAGE_POSITION_PATIENT, tags::IMAGE_ORIENTATION_PATIENT, tags::PIXEL_SPACING] {
        s.obj.remove_element(t);
    }
    s.frame_of_reference_uid = None;
    let src = vec![s];
    let grid = grid_of(&src).unwrap();
    assert!(!grid.has_patient_geometry());
    let mut l = vec![0u16; 15];
    l[2] = 1;
    let seg = Segmentation { segments: vec![segment(1)], labels: LabelMap::new(grid, l).unwrap() };
    let o = encode_seg(&ctx(), &src, &seg, &SegOptions::new(&ctx())).unwrap();
    assert!(o.element_opt(tags::PATIENT_ORIENTATION).unwrap().is_some());
    assert!(o.element_opt(tags::FRAME_OF_REFERENCE_UID).unwrap().is_none());
    let shared = first_item(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).unwrap();
    assert!(shared.element_opt(tags::PLANE_ORIENTATION_SEQUENCE).unwrap().is_none());
    assert_eq!(get_items(&o, tags::DIMENSION_INDEX_SEQUENCE).unwrap().len(), 1);
}

fn landmark(p: [f64; 2]) -> Landmark {
    Landmark {
        label: "Sella".into(),
        concept: Code::new("42575006", "SCT", "Sella turcica"),
        location: LandmarkLocation::Image {
            source: SourceFrame { sop_class_uid: CT.into(), sop_instance_uid: "1.2.3.4.0".into(), frame_number: None },
            point: p,
        },
    }
}

#[test]
fn sr_2d_and_3d() {
    let src = ct_series(2, 5, 3);
    let mut f = Findings::new(AlgorithmIdentity::new("ceph", "2.0"));
    f.landmarks.push(landmark([1.5, 2.5]));
    let mut g = MeasurementGroup::new("angles");
    g.measurements.push(Measurement::new(Code::new("110859", "DCM", "Angle"), 81.25, Code::ucum("deg", "degree")));
    f.groups.push(g);
    let o = encode_sr(&ctx(), &src, &f, &SrOptions::default()).unwrap();
    assert_eq!(get_str(&o, tags::SOP_CLASS_UID).unwrap(), COMPREHENSIVE_SR);
    assert_eq!(get_str(&o, tags::COMPLETION_FLAG).unwrap(), "PARTIAL");
    assert_eq!(get_str(&o, tags::VERIFICATION_FLAG).unwrap(), "UNVERIFIED");
    assert_eq!(get_str(&o, tags::PRELIMINARY_FLAG).unwrap(), "PRELIMINARY");
    f.landmarks.push(Landmark {
        label: "Nasion".into(),
        concept: Code::new("264452006", "SCT", "Nasion"),
        location: LandmarkLocation::Patient { frame_of_reference_uid: "1.2.3.3".into(), point: [1.0, 2.0, 3.0] },
    });
    let o3 = encode_sr(&ctx(), &src, &f, &SrOptions::default()).unwrap();
    assert_eq!(get_str(&o3, tags::SOP_CLASS_UID).unwrap(), COMPREHENSIVE_3D_SR);
    assert_ne!(get_str(&o, tags::SOP_INSTANCE_UID), get_str(&o3, tags::SOP_INSTANCE_UID));
}

/// Content items anywhere below `o` whose concept name has code `value`.
fn content_items<'a>(o: &'a Obj, value: &str, out: &mut Vec<&'a Obj>) {
    for it in get_items(o, tags::CONTENT_SEQUENCE).unwrap_or(&[]) {
        if first_item(it, tags::CONCEPT_NAME_CODE_SEQUENCE).and_then(|c| get_str(c, tags::CODE_VALUE)).as_deref() == Some(value) {
            out.push(it);
        }
        content_items(it, value, out);
    }
}

#[test]
fn sr_laterality_modifies_the_finding_site() {
    let src = ct_series(2, 5, 3);
    let mut f = Findings::new(AlgorithmIdentity::new("hip", "1.0"));
    let mut g = MeasurementGroup::new("abduction");
    g.measurements.push(Measurement::new(Code::new("110859", "DCM", "Angle"), 41.0, Code::ucum("deg", "degree")));
    g.finding_site = Some(Code::new("24136001", "SCT", "Hip joint"));
    g.laterality = Some(Code::new("24028007", "SCT", "Right"));
    f.groups.push(g.clone());
    let o = encode_sr(&ctx(), &src, &f, &SrOptions::default()).unwrap();
    let mut sites = Vec::new();
    content_items(&o, "363698007", &mut sites);
    assert_eq!(sites.len(), 1);
    let code = |it: &Obj| first_item(it, tags::CONCEPT_CODE_SEQUENCE).and_then(|c| get_str(c, tags::CODE_VALUE));
    assert_eq!(code(sites[0]).as_deref(), Some("24136001"));
    let mut lat = Vec::new();
    content_items(sites[0], "272741003", &mut lat);
    assert_eq!((lat.len(), code(lat[0]).as_deref()), (1, Some("24028007")));
    assert_eq!(get_str(lat[0], tags::RELATIONSHIP_TYPE).as_deref(), Some("HAS CONCEPT MOD"));
    // a laterality of nothing is refused
    g.finding_site = None;
    f.groups = vec![g];
    assert!(err_text(encode_sr(&ctx(), &src, &f, &SrOptions::default())).contains("groups[0].laterality"));
}

#[test]
fn sr_refusals() {
    let src = ct_series(2, 5, 3);
    let base = || Findings::new(AlgorithmIdentity::new("ceph", "2.0"));
    let sr = |f: &Findings| encode_sr(&ctx(), &src, f, &SrOptions::default());
    // nothing to report
    assert!(err_text(sr(&base())).contains("nothing to report"));
    // point outside the image (3 columns x 5 rows)
    let mut f = base();
    f.landmarks.push(landmark([3.5, 1.0]));
    assert!(err_text(sr(&f)).contains("outside the image"));
    // image not in evidence
    let mut f = base();
    let mut l = landmark([1.0, 1.0]);
    if let LandmarkLocation::Image { source, .. } = &mut l.location {
        source.sop_instance_uid = "7.7.7".into();
    }
    f.landmarks.push(l);
    assert!(err_text(sr(&f)).contains("7.7.7"));
    // non-UCUM unit
    let mut f = base();
    let mut g = MeasurementGroup::new("g");
    g.measurements.push(Measurement::new(Code::new("110859", "DCM", "Angle"), 1.0, Code::new("deg", "99X", "degree")));
    f.groups.push(g);
    assert!(err_text(sr(&f)).contains("UCUM"));
    // duplicate tracking ids
    let mut f = base();
    f.landmarks.push(landmark([1.0, 1.0]));
    f.landmarks.push(landmark([2.0, 1.0]));
    assert!(err_text(sr(&f)).contains("used twice"));
    // unknown frame of reference
    let mut f = base();
    f.landmarks.push(Landmark {
        label: "x".into(),
        concept: Code::new("1", "SCT", "x"),
        location: LandmarkLocation::Patient { frame_of_reference_uid: "5.5".into(), point: [0.0; 3] },
    });
    assert!(err_text(sr(&f)).contains("Frame of Reference 5.5"));
    // score out of range
    let mut f = base();
    f.lesions.push(Lesion {
        tracking_id: "l1".into(),
        class: Code::new("52988006", "SCT", "Lesion"),
        segment: None,
        volume_ml: Some(1.0),
        longest_diameter_mm: None,
        score: Some(1.5),
        outline: None,
    });
    assert!(err_text(sr(&f)).contains("lesions[0].score"));
}

fn overlay(points: Vec<[f64; 2]>) -> Overlay {
    Overlay {
        image: SourceFrame { sop_class_uid: CT.into(), sop_instance_uid: "1.2.3.4.0".into(), frame_number: None },
        layer: "AI".into(),
        layer_description: None,
        graphics: vec![Graphic { graphic_type: GraphicType::Polyline, points, filled: false }],
        texts: vec![TextLabel { text: "81.3 deg".into(), anchor: Some([1.0, 1.0]), bounding_box: None }],
        window: None,
    }
}

#[test]
fn gsps_writes_modality_and_voi_lut() {
    let img = ct_slice(0, 5, 3, 0.0);
    let o = encode_gsps(&ctx(), &img, &overlay(vec![[0.0, 0.0], [3.0, 5.0]]), &GspsOptions::default()).unwrap();
    assert_eq!(get_str(&o, tags::RESCALE_TYPE).unwrap(), "HU");
    assert_eq!(get_f64(&o, tags::RESCALE_INTERCEPT), Some(-1024.0));
    assert_eq!(get_str(&o, tags::PRESENTATION_LUT_SHAPE).unwrap(), "IDENTITY");
    let voi = first_item(&o, tags::SOFTCOPY_VOILUT_SEQUENCE).unwrap();
    // no window in the image: the full 12-bit range in HU
    assert_eq!(get_f64(voi, tags::WINDOW_WIDTH), Some(4096.0));
    assert_eq!(get_f64(voi, tags::WINDOW_CENTER), Some(1024.0));
    assert!(o.element_opt(tags::LATERALITY).unwrap().is_some());
    let mut mono1 = ct_slice(0, 5, 3, 0.0);
    mono1.photometric = Some("MONOCHROME1".into());
    let o = encode_gsps(&ctx(), &mono1, &overlay(vec![[0.0, 0.0], [1.0, 1.0]]), &GspsOptions::default()).unwrap();
    assert_eq!(get_str(&o, tags::PRESENTATION_LUT_SHAPE).unwrap(), "INVERSE");
}

#[test]
fn gsps_refusals() {
    let img = ct_slice(0, 5, 3, 0.0);
    let g = |ov: &Overlay| encode_gsps(&ctx(), &img, ov, &GspsOptions::default());
    assert!(err_text(g(&overlay(vec![[0.0, 0.0], [3.1, 1.0]]))).contains("graphics[0].points[1]"));
    assert!(err_text(g(&overlay(vec![[0.0, 0.0]]))).contains("Polyline with 1 points"));
    let mut ov = overlay(vec![[0.0, 0.0], [1.0, 1.0]]);
    ov.texts[0].anchor = Some([-1.0, 0.0]);
    assert!(err_text(g(&ov)).contains("texts[0].anchor"));
    let mut ov = overlay(vec![[0.0, 0.0], [1.0, 1.0]]);
    ov.layer = "bad-layer".into();
    assert!(err_text(g(&ov)).contains("layer"));
    let mut rgb = ct_slice(0, 5, 3, 0.0);
    rgb.photometric = Some("RGB".into());
    let e = err_text(encode_gsps(&ctx(), &rgb, &overlay(vec![[0.0, 0.0], [1.0, 1.0]]), &GspsOptions::default()));
    assert!(e.contains("PhotometricInterpretation") && e.contains("ct0.dcm"), "{e}");
}

#[test]
fn colour_images_get_a_colour_presentation_state() {
    let mut rgb = ct_slice(0, 5, 3, 0.0);
    rgb.photometric = Some("RGB".into());
    let ov = overlay(vec![[0.0, 0.0], [1.0, 1.0]]);
    let o = encode_presentation_state(&ctx(), &rgb, &ov, &GspsOptions::default()).unwrap();
    assert_eq!(get_str(&o, tags::SOP_CLASS_UID).unwrap(), COLOR_SOFTCOPY_PRESENTATION_STATE);
    assert!(o.element_opt(tags::ICC_PROFILE).unwrap().is_some());
    assert!(o.element_opt(tags::SOFTCOPY_VOILUT_SEQUENCE).unwrap().is_none());
    assert!(o.element_opt(tags::PRESENTATION_LUT_SHAPE).unwrap().is_none());
    let grey = ct_slice(0, 5, 3, 0.0);
    assert!(err_text(encode_csps(&ctx(), &grey, &ov, &GspsOptions::default())).contains("colour images only"));
}
