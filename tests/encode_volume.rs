//! A SEG made from an imaging-layer `Volume` equals the one made from the
//! encoder's own header reading of the same series (the CT sample).

use std::path::PathBuf;

use ainode::encode::seg::{encode_seg, SegOptions};
use ainode::encode::source::{grid_of, open_all};
use ainode::encode::{EncoderSettings, ResultContext};
use ainode::findings::*;
use dicom_dictionary_std::tags;

fn ct_files() -> Option<Vec<PathBuf>> {
    let mut bases = Vec::new();
    if let Ok(p) = std::env::var("AINODE_SAMPLES") {
        bases.push(PathBuf::from(p));
    }
    bases.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dicom-samples"));
    let dir = bases.into_iter().map(|b| b.join("ct-totalseg")).find(|p| p.exists());
    let Some(dir) = dir else {
        eprintln!("SKIP: ct-totalseg sample not found (set AINODE_SAMPLES)");
        return None;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    Some(files)
}

fn segment() -> Segment {
    Segment {
        number: 1,
        label: "Body".into(),
        category: Code::new("91723000", "SCT", "Anatomical Structure"),
        property_type: Code::new("38266002", "SCT", "Entire body as a whole"),
        type_modifiers: vec![],
        anatomic_region: None,
        color: None,
        algorithm_type: AlgorithmType::Automatic,
        algorithm: Some(AlgorithmIdentity::new("threshold", "1")),
        tracking_id: None,
    }
}

#[test]
fn seg_from_volume_equals_seg_from_headers() {
    let Some(files) = ct_files() else { return };
    let vol = ainode::imaging::load_series(&files).expect("CT series loads");
    let sources = open_all(&files).unwrap();
    // body mask: HU > -300, computed on the volume
    let mut mask = vol.clone();
    for v in mask.data.iter_mut() {
        *v = if *v > -300.0 { 1.0 } else { 0.0 };
    }
    let from_volume = LabelMap::from_volume(&mask).unwrap();
    // the same labels placed through the encoder's own grid (sorted along the normal)
    let grid = grid_of(&sources).unwrap();
    let mut labels = Vec::with_capacity(from_volume.labels.len());
    for f in &grid.frames {
        let k = from_volume.grid.frames.iter().position(|g| g.source == f.source).expect("same source frames");
        labels.extend_from_slice(from_volume.frame(k));
        let p = from_volume.grid.frames[k].position.unwrap();
        for (a, b) in p.iter().zip(f.position.unwrap()) {
            assert!((a - b).abs() < 1e-3, "slice positions differ: {p:?} vs {:?}", f.position);
        }
    }
    assert_eq!(grid.pixel_spacing, from_volume.grid.pixel_spacing);
    for (a, b) in grid.orientation.unwrap().iter().zip(from_volume.grid.orientation.unwrap()) {
        assert!((a - b).abs() < 1e-6);
    }
    let by_headers = LabelMap::new(grid, labels).unwrap();
    let mut ctx = ResultContext::new(EncoderSettings::defaults(), "test", "1");
    ctx.created = ("20240101".into(), "000000".into());
    let opts = SegOptions::new(&ctx);
    let a = encode_seg(&ctx, &sources, &Segmentation { segments: vec![segment()], labels: from_volume }, &opts).unwrap();
    let b = encode_seg(&ctx, &sources, &Segmentation { segments: vec![segment()], labels: by_headers }, &opts).unwrap();
    let px = |o: &dicom_object::InMemDicomObject| o.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec();
    // frame order may differ (the volume's k may run against the normal): compare per source
    let frames = |o: &dicom_object::InMemDicomObject| -> Vec<(String, Vec<bool>)> {
        let per = o.element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap().items().unwrap().to_vec();
        let data = px(o);
        let n = 512 * 512;
        let mut out: Vec<(String, Vec<bool>)> = per
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let d = it.element(tags::DERIVATION_IMAGE_SEQUENCE).unwrap().items().unwrap()[0].clone();
                let s = d.element(tags::SOURCE_IMAGE_SEQUENCE).unwrap().items().unwrap()[0].clone();
                let uid = s.element(tags::REFERENCED_SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
                (uid, (0..n).map(|p| ainode::encode::bits::bit(&data, i * n + p)).collect())
            })
            .collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    };
    let (fa, fb) = (frames(&a), frames(&b));
    assert_eq!(fa.len(), 20);
    assert!(fa == fb, "SEG frames differ between the volume and header paths");
    assert!(fa.iter().any(|(_, m)| m.iter().any(|&x| x)), "the body mask is empty");
}
