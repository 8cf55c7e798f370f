//! Imaging layer on real files (shared samples, pydicom's test files) and on
//! synthetic series written here.
//!
//! Expected pixel values were read with pydicom 3.0.2 (`pixel_array`, then
//! `apply_modality_lut` / `apply_color_lut`; MONOCHROME1 inverted as
//! `(2^BitsStored - 1) - v`) unless a comment says they come from pydicom's
//! own reference table (tests/pixels/pixels_reference.py in pydicom).
//! Tests whose input files are absent print SKIP and pass.
#![allow(clippy::needless_range_loop)]

use std::path::{Path, PathBuf};

use ainode::imaging::decode::{decode_file, ColorMode};
use ainode::imaging::geometry::{pixel_spacing, ultrasound_regions, SpacingSource};
use ainode::imaging::synth::{self, SynthFrame, SynthSeries};
use ainode::imaging::volume::{group_by_series, load_series, load_series_with, volume_from_object, ResampleOrRefuse, SeriesOptions};
use ainode::imaging::ImagingError;

// ---------- locating inputs ----------

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Shared sample data: `$AINODE_SAMPLES`, `../shared/data/dicom-samples`
/// beside the checkout.
fn samples(sub: &str) -> Option<PathBuf> {
    let mut bases = Vec::new();
    if let Ok(p) = std::env::var("AINODE_SAMPLES") {
        bases.push(PathBuf::from(p));
    }
    bases.push(manifest().join("../shared/data/dicom-samples"));
    let found = bases.into_iter().map(|b| b.join(sub)).find(|p| p.exists());
    if found.is_none() {
        eprintln!("SKIP: sample data {sub} not found (set AINODE_SAMPLES)");
    }
    found
}

/// A pydicom / pydicom-data test file from a test venv (`.venv-tests` in
/// this checkout).
fn pydicom_file(name: &str) -> Option<PathBuf> {
    let mut venvs = vec![manifest().join(".venv-tests")];
    if let Ok(v) = std::env::var("AINODE_TEST_VENV") {
        venvs.insert(0, PathBuf::from(v));
    }
    for venv in venvs {
        let Ok(libs) = std::fs::read_dir(venv.join("lib")) else { continue };
        for lib in libs.flatten() {
            let sp = lib.path().join("site-packages");
            for sub in ["pydicom/data/test_files", "data_store/data"] {
                let p = sp.join(sub).join(name);
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    eprintln!("SKIP: pydicom test file {name} not found (install the test venv)");
    None
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

fn assert_close(a: f32, b: f32, tol: f32, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

// ---------- decoding real files ----------

#[test]
fn ct_small_hounsfield_values() {
    let Some(p) = pydicom_file("CT_small.dcm") else { return };
    let img = decode_file(&p, ColorMode::Luminance).unwrap();
    assert_eq!((img.rows, img.cols, img.frames, img.samples), (128, 128, 1, 1));
    assert_eq!(img.sop_instance_uid, "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322");
    // pydicom: apply_modality_lut(pixel_array) at (row, col)
    for ((r, c), v) in [((0, 0), -849.0), ((64, 64), 904.0), ((100, 30), 65.0), ((127, 127), -115.0)] {
        assert_eq!(img.get(0, r, c, 0), v, "({r},{c})");
    }
    assert!(!img.inverted_monochrome1);
}

#[test]
fn big_endian_rle_jpegls_j2k_match_uncompressed() {
    let Some(reference) = pydicom_file("MR_small.dcm") else { return };
    let reference = decode_file(&reference, ColorMode::Luminance).unwrap();
    // pydicom: MR_small pixel_array[0,0] = 905, [32,32] = 182, [10,50] = 1104
    assert_eq!(reference.get(0, 0, 0, 0), 905.0);
    assert_eq!(reference.get(0, 32, 32, 0), 182.0);
    assert_eq!(reference.get(0, 10, 50, 0), 1104.0);
    for name in ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_implicit.dcm"] {
        let Some(p) = pydicom_file(name) else { continue };
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!(img.data, reference.data, "{name}");
    }
    // multi-frame (10 frames) enhanced MR in five transfer syntaxes
    let Some(reference) = pydicom_file("emri_small.dcm") else { return };
    let reference = decode_file(&reference, ColorMode::Luminance).unwrap();
    assert_eq!(reference.frames, 10);
    // pydicom: emri_small pixel_array[0,32,32] = 110, [9,10,50] = 180, [5,63,0] = 72
    assert_eq!(reference.get(0, 32, 32, 0), 110.0);
    assert_eq!(reference.get(9, 10, 50, 0), 180.0);
    assert_eq!(reference.get(5, 63, 0, 0), 72.0);
    for name in ["emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm"] {
        let Some(p) = pydicom_file(name) else { continue };
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!(img.data, reference.data, "{name}");
    }
}

#[test]
fn jpeg_ls_near_lossless_without_charls_and_colour_refused_by_name() {
    // pydicom 3 + pyjpegls: shape, [0, 0:4], [rows / 2, 0:4], [-1, -4:], sum
    for (name, rows, first, middle, sum) in
        [("JPEGLSNearLossless_08.dcm", 45, 255.0, 15.0, 25000.0), ("JPEGLSNearLossless_16.dcm", 50, 65535.0, 255.0, 6007250.0)]
    {
        let Some(p) = pydicom_file(name) else { continue };
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!((img.rows, img.cols, img.frames), (rows, 10, 1), "{name}");
        assert!((0..4).all(|c| img.get(0, 0, c, 0) == first && img.get(0, rows / 2, c, 0) == middle), "{name}");
        assert!((6..10).all(|c| img.get(0, rows - 1, c, 0) == 0.0), "{name}");
        assert_eq!(img.data.iter().map(|&v| v as f64).sum::<f64>(), sum, "{name}");
    }
    let Some(p) = pydicom_file("SC_rgb_jls_lossy_sample.dcm") else { return };
    let res = decode_file(&p, ColorMode::Rgb);
    if cfg!(feature = "charls") {
        assert_eq!(res.unwrap().samples, 3);
    } else {
        match res {
            Err(ImagingError::CodecNotBuilt { sop_instance_uid, enable, .. }) => {
                assert_eq!(sop_instance_uid, "1.2.826.0.1.3680043.8.498.35129940130895238772240045385911100427");
                assert!(enable.contains("--features charls"), "{enable}");
            }
            other => panic!("colour JPEG-LS without charls: expected CodecNotBuilt, got {other:?}"),
        }
    }
}

#[test]
fn jpeg_lossless_and_deflate() {
    // pydicom's reference table (pylibjpeg): JPEG-LL.dcm arr[400, 124:132], arr[600, 124:132]
    if let Some(p) = pydicom_file("JPEG-LL.dcm") {
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        let row = |r: usize| (124..132).map(|c| img.get(0, r, c, 0)).collect::<Vec<_>>();
        assert_eq!(row(400), vec![60.0, 58.0, 61.0, 68.0, 59.0, 65.0, 64.0, 67.0]);
        assert_eq!(row(600), vec![3.0, 1.0, 2.0, 0.0, 2.0, 1.0, 2.0, 0.0]);
    }
    // pydicom's reference table: JPGLosslessP14SV1_1s_1f_8b.dcm arr[300, 512:520]
    if let Some(p) = pydicom_file("JPGLosslessP14SV1_1s_1f_8b.dcm") {
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        let row: Vec<f32> = (512..520).map(|c| img.get(0, 300, c, 0)).collect();
        assert_eq!(row, vec![26.0, 26.0, 25.0, 22.0, 19.0, 16.0, 14.0, 15.0]);
    }
    // deflated explicit VR little endian
    if let Some(p) = pydicom_file("image_dfl.dcm") {
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!((img.rows, img.cols), (512, 512));
    }
}

#[test]
fn twelve_bit_jpeg_extended_is_a_typed_error() {
    let Some(p) = pydicom_file("JPGExtended.dcm") else { return };
    match decode_file(&p, ColorMode::Luminance) {
        Err(ImagingError::UnsupportedPixelData { sop_instance_uid, reason }) => {
            assert_eq!(sop_instance_uid, "1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457");
            assert!(reason.contains("12-bit JPEG Extended"), "{reason}");
        }
        other => panic!("expected UnsupportedPixelData, got {other:?}"),
    }
}

#[test]
fn modality_lut_sequence() {
    let Some(p) = pydicom_file("mlut_18.dcm") else { return };
    let img = decode_file(&p, ColorMode::Luminance).unwrap();
    assert!(img.modality_lut);
    // pydicom apply_modality_lut: stored -1 -> 32759, -83 -> 31447 (LUT descriptor 4096, -2048, 16)
    assert_eq!(img.get(0, 0, 0, 0), 32759.0);
    assert_eq!(img.get(0, 256, 256, 0), 31447.0);
    assert_eq!(img.get(0, 100, 400, 0), 31447.0);
}

#[test]
fn monochrome1_is_inverted() {
    let Some(p) = pydicom_file("RG1_UNCR.dcm") else { return };
    let img = decode_file(&p, ColorMode::Luminance).unwrap();
    assert!(img.inverted_monochrome1);
    assert_eq!(img.photometric, "MONOCHROME1");
    // pydicom: stored [0,0] = 18889, [1000,900] = 3606; Bits Stored 15 -> 32767 - v
    assert_eq!(img.get(0, 0, 0, 0), 13878.0);
    assert_eq!(img.get(0, 1000, 900, 0), 29161.0);
    // the JPEG 2000 lossless copy decodes to the same values
    if let Some(p) = pydicom_file("RG1_J2KR.dcm") {
        let j2k = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!(j2k.data, img.data);
    }
    // Pixel Spacing 0\0 is not a spacing
    let obj = dicom_object::open_file(&p).unwrap();
    assert_eq!(pixel_spacing(&obj).source, SpacingSource::Unknown);
}

#[test]
fn palette_color_8bit_index_16bit_entries_and_us_regions() {
    let Some(p) = pydicom_file("OBXXXX1A.dcm") else { return };
    let rgb = decode_file(&p, ColorMode::Rgb).unwrap();
    assert_eq!((rgb.rows, rgb.cols, rgb.samples), (600, 800, 3));
    assert_eq!(rgb.photometric, "PALETTE COLOR");
    // pydicom apply_color_lut: index 1 at (300,400) -> (256,256,256); (500,600) -> (0,0,0)
    let px = |img: &ainode::imaging::DecodedImage, r, c| (0..3).map(|s| img.get(0, r, c, s)).collect::<Vec<_>>();
    assert_eq!(px(&rgb, 300, 400), vec![256.0, 256.0, 256.0]);
    assert_eq!(px(&rgb, 100, 200), vec![256.0, 256.0, 256.0]);
    assert_eq!(px(&rgb, 500, 600), vec![0.0, 0.0, 0.0]);
    let lum = decode_file(&p, ColorMode::Luminance).unwrap();
    assert_eq!(lum.samples, 1);
    assert_close(lum.get(0, 300, 400, 0), 256.0, 1e-3, "luminance of grey");
    // the big endian, RLE and 2-frame copies decode to the same RGB.
    // (pydicom reads the big endian LUT bytes as little endian, so it differs there; we do not.)
    for name in ["OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"] {
        let Some(p2) = pydicom_file(name) else { continue };
        assert_eq!(decode_file(&p2, ColorMode::Rgb).unwrap().data, rgb.data, "{name}");
    }
    if let Some(p2) = pydicom_file("OBXXXX1A_expb_2frame.dcm") {
        let two = decode_file(&p2, ColorMode::Rgb).unwrap();
        assert_eq!(two.frames, 2);
        assert_eq!(two.frame(0), rgb.frame(0));
    }
    // spacing from the Sequence of Ultrasound Regions: region 0 (2D tissue), delta 0.02622878766196998 cm
    let obj = dicom_object::open_file(&p).unwrap();
    assert_eq!(ultrasound_regions(&obj).len(), 2);
    let s = pixel_spacing(&obj);
    assert_eq!(s.source, SpacingSource::UltrasoundRegion);
    assert_eq!(s.ultrasound_region, Some(0));
    assert!((s.row_mm - 0.2622878766196998).abs() < 1e-9 && (s.col_mm - 0.2622878766196998).abs() < 1e-9);
}

#[test]
fn segmented_palette_16bit() {
    let Some(p) = pydicom_file("gdcm-US-ALOKA-16.dcm") else { return };
    let img = decode_file(&p, ColorMode::Rgb).unwrap();
    let px = |r, c| (0..3).map(|s| img.get(0, r, c, s)).collect::<Vec<_>>();
    // pydicom apply_color_lut (segmented LUT): index 2048 -> 257, 7168 -> 2313; (400,500) -> 6682
    assert_eq!(px(240, 320), vec![257.0; 3]);
    assert_eq!(px(100, 100), vec![2313.0; 3]);
    assert_eq!(px(400, 500), vec![6682.0; 3]);
    if let Some(big) = pydicom_file("gdcm-US-ALOKA-16_big.dcm") {
        assert_eq!(decode_file(&big, ColorMode::Rgb).unwrap().data, img.data);
    }
}

#[test]
fn rgb_planar_and_ybr() {
    if let Some(p) = pydicom_file("US1_UNCR.dcm") {
        let img = decode_file(&p, ColorMode::Rgb).unwrap();
        // pydicom: (240,320) = (12,12,12), (100,100) = (0,0,0)
        assert_eq!((0..3).map(|s| img.get(0, 240, 320, s)).collect::<Vec<_>>(), vec![12.0; 3]);
        let lum = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_close(lum.get(0, 240, 320, 0), 12.0, 1e-4, "luminance");
        // YBR_RCT JPEG 2000 copy: same RGB
        if let Some(j) = pydicom_file("US1_J2KR.dcm") {
            assert_eq!(decode_file(&j, ColorMode::Rgb).unwrap().data, img.data);
        }
    }
    if let (Some(pl), Some(px)) = (pydicom_file("color-pl.dcm"), pydicom_file("color-px.dcm")) {
        let a = decode_file(&pl, ColorMode::Rgb).unwrap();
        let b = decode_file(&px, ColorMode::Rgb).unwrap();
        assert_eq!(a.data, b.data, "planar configuration 1 vs 0");
        // pydicom: color-pl (60,128) = (184,16,16)
        assert_eq!((0..3).map(|s| a.get(0, 60, 128, s)).collect::<Vec<_>>(), vec![184.0, 16.0, 16.0]);
    }
    // YBR_FULL and YBR_FULL_422 native, against the RGB original (pydicom: (5,50) = (255,0,0), (45,50) = (0,0,255))
    for name in ["SC_ybr_full_uncompressed.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_jpeg_dcmtk.dcm"] {
        let Some(p) = pydicom_file(name) else { continue };
        let img = decode_file(&p, ColorMode::Rgb).unwrap();
        for ((r, c), want) in [((5, 50), [255.0, 0.0, 0.0]), ((45, 50), [0.0, 0.0, 255.0]), ((95, 50), [255.0, 255.0, 255.0])] {
            for s in 0..3 {
                // YCbCr rounding in the file, lossy JPEG: a few units
                assert_close(img.get(0, r, c, s), want[s], 3.0, &format!("{name} ({r},{c}) sample {s}"));
            }
        }
    }
    // RGB-coded JPEG without an Adobe marker: no YCbCr conversion.
    // pydicom's reference table: SC_jpeg_no_color_transform.dcm arr[29, 77:81]
    if let Some(p) = pydicom_file("SC_jpeg_no_color_transform.dcm") {
        let img = decode_file(&p, ColorMode::Rgb).unwrap();
        let want = [[240.0, 243.0, 246.0], [214.0, 210.0, 213.0], [150.0, 134.0, 134.0], [244.0, 244.0, 244.0]];
        for (n, c) in (77..81).enumerate() {
            for s in 0..3 {
                assert_close(img.get(0, 29, c, s), want[n][s], 1.0, "no colour transform");
            }
        }
    }
}

#[test]
fn thirty_two_bit_dose_and_one_bit_segmentation() {
    if let Some(p) = pydicom_file("rtdose.dcm") {
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!(img.frames, 15);
        // pydicom: pixel_array * DoseGridScaling (1e-6)
        assert_close(img.get(0, 0, 0, 0), 1.249, 1e-6, "dose [0,0,0]");
        assert_close(img.get(7, 4, 3, 0), 1.026, 1e-6, "dose [7,4,3]");
        assert_close(img.get(14, 9, 9, 0), 0.799, 1e-6, "dose [14,9,9]");
        for name in ["rtdose_expb.dcm", "rtdose_rle.dcm"] {
            if let Some(p2) = pydicom_file(name) {
                assert_eq!(decode_file(&p2, ColorMode::Luminance).unwrap().data, img.data, "{name}");
            }
        }
    }
    if let Some(p) = pydicom_file("liver.dcm") {
        let img = decode_file(&p, ColorMode::Luminance).unwrap();
        assert_eq!(img.frames, 3);
        // pydicom: per-frame foreground counts and frame 0 [155, 180:183]
        let sums: Vec<f32> = (0..3).map(|f| img.frame(f).iter().sum()).collect();
        assert_eq!(sums, vec![36233.0, 35645.0, 35220.0]);
        assert_eq!((180..183).map(|c| img.get(0, 155, c, 0)).collect::<Vec<_>>(), vec![0.0, 1.0, 1.0]);
    }
}

#[test]
fn enhanced_ct_volume_from_functional_groups() {
    let Some(p) = pydicom_file("eCT_Supplemental.dcm") else { return };
    let obj = dicom_object::open_file(&p).unwrap();
    let (vol, report) = volume_from_object(&obj, &SeriesOptions::default()).unwrap();
    assert_eq!(vol.dims, [512, 512, 2]);
    assert!(!report.resampled);
    // IOP -1,0,0 / 0,1,0: the normal is -z; frames at z = -159 (frame 1) and -149 (frame 2)
    assert_eq!(vol.direction[2], [0.0, 0.0, -1.0]);
    assert_eq!(vol.origin, [99.5, -301.5, -149.0]);
    assert!((vol.spacing[2] - 10.0).abs() < 1e-9);
    assert!((vol.spacing[0] - 0.388672).abs() < 1e-9);
    assert_eq!(vol.sources[0].frame_number, Some(2));
    assert_eq!(vol.sources[1].frame_number, Some(1));
    // pydicom: stored frame 2 (256,256) = 1022, frame 1 = 1105; shared rescale intercept -1024
    assert_eq!(vol.get(256, 256, 0), -2.0);
    assert_eq!(vol.get(256, 256, 1), 81.0);
}

#[test]
fn dx_rgb_jpeg2000_luminance_and_spacing() {
    let Some(p) = samples("xray-pelvis-ddh/dicom/331_DDH_1.dcm") else { return };
    let img = decode_file(&p, ColorMode::Luminance).unwrap();
    assert_eq!((img.rows, img.cols, img.samples), (331, 331, 1));
    // pydicom: RGB (165,165) = (91,91,91), (100,50) = (103,103,103)
    assert_close(img.get(0, 165, 165, 0), 91.0, 1e-3, "centre");
    assert_close(img.get(0, 100, 50, 0), 103.0, 1e-3, "(100,50)");
    let obj = dicom_object::open_file(&p).unwrap();
    let s = pixel_spacing(&obj);
    assert_eq!((s.row_mm, s.col_mm, s.source), (1.0, 1.0, SpacingSource::PixelSpacing));
}

// ---------- volumes from real series ----------

#[test]
fn ct_series_sorted_by_position_not_instance_number() {
    let Some(dir) = samples("ct-totalseg") else { return };
    let mut paths = files_in(&dir);
    paths.reverse();
    let (vol, report) = load_series_with(&paths, &SeriesOptions::default()).unwrap();
    assert_eq!(vol.dims, [512, 512, 20]);
    assert!(!report.resampled && report.gaps.is_empty() && report.gantry_tilt_deg < 1e-6);
    assert_eq!(vol.spacing, [0.9765625, 0.9765625, 2.0]);
    // k = 0 is the lowest z (-804.5, Instance Number 286); Instance Numbers run the other way
    assert_eq!(vol.origin, [-249.51171875, -437.51171875, -804.5]);
    assert_eq!(vol.direction, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    assert_eq!(vol.sources[0].sop_instance_uid.rsplit('.').next(), Some("30000022120808113428000016592"));
    assert!(vol.frame_of_reference_uid.starts_with("1.3.12.2.1107.5.1.4.60064"));
    // pydicom, file ...16578 (z = -776.5 -> k = 14): HU (row,col) (0,0) = -1024, (256,256) = -50, (300,200) = 119, (400,100) = -954
    assert_eq!(vol.get(0, 0, 14), -1024.0);
    assert_eq!(vol.get(256, 256, 14), -50.0);
    assert_eq!(vol.get(200, 300, 14), 119.0);
    assert_eq!(vol.get(100, 400, 14), -954.0);
    // air around the patient
    let corner: f32 = (0..20).map(|k| vol.get(5, 5, k)).sum::<f32>() / 20.0;
    assert!(corner < -900.0, "corner mean {corner}");
    let p = vol.voxel_to_patient([0.0, 0.0, 14.0]);
    assert_eq!(p, [-249.51171875, -437.51171875, -776.5]);
    // same result whatever the file order
    let mut shuffled = files_in(&dir);
    shuffled.rotate_left(7);
    assert_eq!(load_series(&shuffled).unwrap().data, vol.data);
}

#[test]
fn ct_two_slices_without_frame_of_reference() {
    let Some(dir) = samples("ct-chest-lungmask") else { return };
    let vol = load_series(&files_in(&dir)).unwrap();
    assert_eq!(vol.dims, [512, 512, 2]);
    assert_eq!(vol.spacing, [0.625, 0.625, 1.0]);
    assert_eq!(vol.frame_of_reference_uid, "");
    // pydicom: (row 256, col 256) = 144, (300,200) = -35, corner -2048 (outside the reconstruction)
    assert_eq!(vol.get(256, 256, 0), 144.0);
    assert_eq!(vol.get(200, 300, 1), -35.0);
    assert_eq!(vol.get(0, 0, 0), -2048.0);
}

// ---------- synthetic series ----------

fn ramp_frame(series: &SynthSeries, position: [f64; 3], k: i16) -> SynthFrame {
    let stored = (0..series.rows * series.cols).map(|n| (n % series.cols) as i16 + 10 * (n / series.cols) as i16 + 100 * k).collect();
    SynthFrame { position, stored, slope: 1.0, intercept: -1024.0 }
}

/// Writes one file per position (instance numbers in reverse, names shuffled).
fn write_series(dir: &Path, series: &SynthSeries, positions: &[[f64; 3]]) -> Vec<PathBuf> {
    let n = positions.len();
    let mut paths = Vec::new();
    for (k, pos) in positions.iter().enumerate() {
        let uid = format!("{}.10.{}", series.series_instance_uid, k + 1);
        let obj = synth::ct_slice(series, &uid, (n - k) as i32, &ramp_frame(series, *pos, k as i16));
        let path = dir.join(format!("f{:03}.dcm", (k * 7919) % 1000));
        synth::write(&obj, &path).unwrap();
        paths.push(path);
    }
    paths.sort();
    paths
}

fn z_positions(zs: &[f64]) -> Vec<[f64; 3]> {
    zs.iter().map(|z| [-10.0, 20.0, *z]).collect()
}

#[test]
fn shuffled_series_gives_the_same_volume() {
    let dir = tempfile::tempdir().unwrap();
    let series = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.1", 4, 5);
    let paths = write_series(dir.path(), &series, &z_positions(&[0.0, 2.5, 5.0, 7.5, 10.0, 12.5]));
    let vol = load_series(&paths).unwrap();
    let mut reversed = paths.clone();
    reversed.reverse();
    let again = load_series(&reversed).unwrap();
    assert_eq!(vol.data, again.data);
    assert_eq!(vol.dims, [5, 4, 6]);
    assert_eq!(vol.spacing, [1.0, 1.0, 2.5]);
    assert_eq!(vol.origin, [-10.0, 20.0, 0.0]);
    for k in 0..6 {
        assert_eq!(vol.get(3, 2, k), -1024.0 + 3.0 + 20.0 + 100.0 * k as f32);
        assert_eq!(vol.sources[k].sop_instance_uid, format!("{}.10.{}", series.series_instance_uid, k + 1));
        assert_eq!(vol.sources[k].frame_number, None);
    }
}

#[test]
fn missing_slice_is_refused_or_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let series = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.2", 3, 3);
    let paths = write_series(dir.path(), &series, &z_positions(&[0.0, 2.5, 5.0, 10.0, 12.5]));
    match load_series(&paths) {
        Err(ImagingError::MissingSlices { gap_mm, median_mm, after_sop_instance_uid, .. }) => {
            assert!((gap_mm - 5.0).abs() < 1e-9 && (median_mm - 2.5).abs() < 1e-9);
            assert!(after_sop_instance_uid.ends_with(".10.3"), "{after_sop_instance_uid}");
        }
        other => panic!("expected MissingSlices, got {other:?}"),
    }
    let opts = SeriesOptions { missing_slices: ResampleOrRefuse::Resample, ..Default::default() };
    let (vol, report) = load_series_with(&paths, &opts).unwrap();
    assert!(report.resampled);
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(vol.dims[2], 6);
    assert!((vol.spacing[2] - 2.5).abs() < 1e-12);
    // the missing slice at z = 7.5 lies halfway between slices 2 (z = 5) and 3 (z = 10)
    let expect = -1024.0 + 1.0 + 10.0 + 0.5 * (200.0 + 300.0);
    assert_close(vol.get(1, 1, 3), expect, 1e-4, "interpolated");
    assert_eq!(vol.get(1, 1, 4), -1024.0 + 11.0 + 300.0);
}

#[test]
fn uneven_spacing_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let series = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.3", 3, 3);
    let zs = [0.0, 2.5, 5.0, 7.8, 10.0];
    let paths = write_series(dir.path(), &series, &z_positions(&zs));
    match load_series(&paths) {
        Err(ImagingError::UnevenSpacing { min_mm, max_mm, .. }) => {
            assert!((min_mm - 2.2).abs() < 1e-9 && (max_mm - 2.8).abs() < 1e-9);
        }
        other => panic!("expected UnevenSpacing, got {other:?}"),
    }
    // a looser tolerance accepts it as is
    let loose = SeriesOptions { spacing_tolerance: 0.2, ..Default::default() };
    assert!(!load_series_with(&paths, &loose).unwrap().1.resampled);
    // resampled: regular 2.5 mm, values linear in z between the slices
    let opts = SeriesOptions { uneven_spacing: ResampleOrRefuse::Resample, ..Default::default() };
    let (vol, _) = load_series_with(&paths, &opts).unwrap();
    assert_eq!(vol.dims[2], 5);
    // z = 7.5 between z = 5 (k=2, +200) and z = 7.8 (k=3, +300): t = 2.5/2.8
    let t = 2.5 / 2.8;
    assert_close(vol.get(0, 0, 3), -1024.0 + 200.0 + 100.0 * t as f32, 1e-3, "z = 7.5");
}

#[test]
fn gantry_tilt_is_detected_with_its_angle_and_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.4", 16, 8);
    series.pixel_spacing = [0.5, 0.5];
    let tilt: f64 = 12.0;
    let tan = tilt.to_radians().tan();
    // slices 2 mm apart along z, shifted in +y (the column direction) by z * tan(tilt)
    let positions: Vec<[f64; 3]> = (0..6)
        .map(|k| {
            let z = 2.0 * k as f64;
            [0.0, (z * tan * 1e6).round() / 1e6, z]
        })
        .collect();
    // stored values: a linear function of the patient y of each pixel, so resampling can be checked exactly
    let mut paths = Vec::new();
    for (k, pos) in positions.iter().enumerate() {
        let stored = (0..16 * 8).map(|n| ((pos[1] + 0.5 * (n / 8) as f64) * 100.0).round() as i16).collect();
        let frame = SynthFrame { position: *pos, stored, slope: 0.01, intercept: 0.0 };
        let obj = synth::ct_slice(&series, &format!("{}.10.{}", series.series_instance_uid, k + 1), k as i32 + 1, &frame);
        let path = dir.path().join(format!("{k}.dcm"));
        synth::write(&obj, &path).unwrap();
        paths.push(path);
    }
    match load_series(&paths) {
        Err(ImagingError::GantryTilt { angle_deg, .. }) => assert!((angle_deg - tilt).abs() < 1e-3, "angle {angle_deg}"),
        other => panic!("expected GantryTilt, got {other:?}"),
    }
    let opts = SeriesOptions { gantry_tilt: ResampleOrRefuse::Resample, fill_value: Some(-1.0), ..Default::default() };
    let (vol, report) = load_series_with(&paths, &opts).unwrap();
    assert!((report.gantry_tilt_deg - tilt).abs() < 1e-3 && report.resampled);
    assert_eq!(vol.direction[2], [0.0, 0.0, 1.0]);
    assert_eq!(vol.dims, [8, 16, 6]);
    // every resampled voxel inside the data holds its own patient y
    let mut checked = 0;
    for k in 0..6 {
        for j in 0..16 {
            let v = vol.get(3, j, k);
            let y = vol.voxel_to_patient([3.0, j as f64, k as f64])[1];
            let start = positions[k][1];
            if y >= start - 1e-9 {
                // inside the shifted slice: interpolation reproduces the linear values
                assert_close(v, y as f32, 0.006, &format!("j={j} k={k}"));
                checked += 1;
            } else if y >= start - 0.25 {
                // within half a pixel of the first row: its value
                assert_close(v, start as f32, 0.006, &format!("edge j={j} k={k}"));
            } else {
                assert_eq!(v, -1.0, "fill outside the slice at y {y}, slice starts at {start}");
            }
        }
    }
    assert!(checked > 60, "{checked}");
}

#[test]
fn oblique_series_roundtrips_and_matches_positions() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.5", 6, 7);
    // rows along (cos a, sin a, 0), columns tilted out of the axial plane
    let (a, b): (f64, f64) = (0.4, 0.3);
    let row = [a.cos(), a.sin(), 0.0];
    let col = [-a.sin() * b.cos(), a.cos() * b.cos(), b.sin()];
    series.orientation = [row[0], row[1], row[2], col[0], col[1], col[2]];
    series.pixel_spacing = [0.8, 0.6];
    let n = [row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2], row[0] * col[1] - row[1] * col[0]];
    let positions: Vec<[f64; 3]> = (0..4)
        .map(|k| {
            let d = 3.0 * k as f64;
            [5.0 + d * n[0], -7.0 + d * n[1], 11.0 + d * n[2]]
        })
        .collect();
    let paths = write_series(dir.path(), &series, &positions);
    let vol = load_series(&paths).unwrap();
    assert_eq!(vol.dims, [7, 6, 4]);
    assert!((vol.spacing[2] - 3.0).abs() < 1e-5);
    for ijk in [[0.0, 0.0, 0.0], [3.5, 2.25, 1.0], [-4.0, 9.0, 7.5]] {
        let back = vol.patient_to_voxel(vol.voxel_to_patient(ijk));
        for axis in 0..3 {
            assert!((back[axis] - ijk[axis]).abs() < 1e-9, "{ijk:?} -> {back:?}");
        }
    }
    for (k, pos) in positions.iter().enumerate() {
        let p = vol.voxel_to_patient([0.0, 0.0, k as f64]);
        for axis in 0..3 {
            assert!((p[axis] - pos[axis]).abs() < 1e-5, "slice {k}: {p:?} vs {pos:?}");
        }
    }
}

#[test]
fn mixed_series_sizes_and_orientations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.6", 3, 3);
    let mut paths = write_series(dir.path(), &a, &z_positions(&[0.0, 1.0, 2.0]));
    // a second series in the same frame of reference
    let sub = dir.path().join("b");
    std::fs::create_dir(&sub).unwrap();
    let mut b = a.clone();
    b.series_instance_uid = format!("{}.99", a.series_instance_uid);
    paths.extend(write_series(&sub, &b, &z_positions(&[0.0, 2.0])));
    match load_series(&paths) {
        Err(ImagingError::MultipleSeries { series }) => assert_eq!(series.len(), 2),
        other => panic!("expected MultipleSeries, got {other:?}"),
    }
    let opts = SeriesOptions { series_instance_uid: Some(b.series_instance_uid.clone()), ..Default::default() };
    assert_eq!(load_series_with(&paths, &opts).unwrap().0.dims[2], 2);
    let grouping = group_by_series(&paths);
    assert_eq!(grouping.series.len(), 2);
    assert_eq!(grouping.shared_frames_of_reference.len(), 1);
    assert_eq!(grouping.shared_frames_of_reference[0].frame_of_reference_uid, a.frame_of_reference_uid);
    assert_eq!(grouping.shared_frames_of_reference[0].series_instance_uids.len(), 2);

    // a slice of another size
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let mut c = a.clone();
    c.series_instance_uid = format!("{}.98", a.series_instance_uid);
    let mut mixed = write_series(&odd, &c, &z_positions(&[0.0, 1.0]));
    let mut c4 = c.clone();
    c4.rows = 4;
    let obj = synth::ct_slice(&c4, "1.2.826.0.1.3680043.9.7777.6.50", 9, &ramp_frame(&c4, [-10.0, 20.0, 2.0], 2));
    let p = odd.join("size.dcm");
    synth::write(&obj, &p).unwrap();
    mixed.push(p.clone());
    match load_series(&mixed) {
        Err(ImagingError::Inconsistent { sop_instance_uid, reason, .. }) => {
            assert!(reason.contains("pixels"), "{reason}");
            assert!(sop_instance_uid.contains("7777.6"), "{sop_instance_uid}");
        }
        other => panic!("expected Inconsistent size, got {other:?}"),
    }
    // a slice of another orientation
    std::fs::remove_file(&p).unwrap();
    mixed.pop();
    let mut c_sag = c.clone();
    c_sag.orientation = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];
    let obj = synth::ct_slice(&c_sag, "1.2.826.0.1.3680043.9.7777.6.51", 9, &ramp_frame(&c_sag, [-10.0, 20.0, 2.0], 2));
    let p = odd.join("sag.dcm");
    synth::write(&obj, &p).unwrap();
    mixed.push(p);
    match load_series(&mixed) {
        Err(ImagingError::Inconsistent { reason, .. }) => assert!(reason.contains("orientation"), "{reason}"),
        other => panic!("expected Inconsistent orientation, got {other:?}"),
    }
}

#[test]
fn enhanced_multiframe_with_per_frame_rescale() {
    let series = SynthSeries::axial("1.2.826.0.1.3680043.9.7777.7", 2, 3);
    // frames stored in descending z, each with its own rescale
    let frames: Vec<SynthFrame> = [(6.0, 2.0, -100.0), (3.0, 1.0, 0.0), (0.0, 0.5, 10.0)]
        .iter()
        .map(|&(z, slope, intercept)| SynthFrame { position: [0.0, 0.0, z], stored: vec![0, 1, 2, 3, 4, 5], slope, intercept })
        .collect();
    let obj = synth::enhanced_ct(&series, "1.2.826.0.1.3680043.9.7777.7.1", &frames);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enhanced.dcm");
    synth::write(&obj, &path).unwrap();

    let img = decode_file(&path, ColorMode::Luminance).unwrap();
    assert_eq!(img.frames, 3);
    assert_eq!(img.get(0, 1, 2, 0), 2.0 * 5.0 - 100.0);
    assert_eq!(img.get(2, 1, 2, 0), 0.5 * 5.0 + 10.0);

    let vol = ainode::imaging::load_multiframe(&path).unwrap();
    assert_eq!(vol.dims, [3, 2, 3]);
    assert_eq!(vol.origin, [0.0, 0.0, 0.0]);
    assert_eq!(vol.spacing[2], 3.0);
    let numbers: Vec<Option<u32>> = vol.sources.iter().map(|s| s.frame_number).collect();
    assert_eq!(numbers, vec![Some(3), Some(2), Some(1)]);
    assert_eq!(vol.get(2, 1, 0), 12.5);
    assert_eq!(vol.get(2, 1, 1), 5.0);
    assert_eq!(vol.get(2, 1, 2), -90.0);
    // the same object in a list of paths works too
    assert_eq!(load_series(&[path]).unwrap().data, vol.data);
}

// ---------- resampling real data ----------

#[test]
fn ct_resample_crop_and_window() {
    use ainode::imaging::resample::{crop_to_body, resample_like, resample_to_spacing, window, Interpolation};
    let Some(dir) = samples("ct-totalseg") else { return };
    let vol = load_series(&files_in(&dir)).unwrap();

    // twice the in-plane spacing, so that every other old voxel is a new voxel
    let iso = resample_to_spacing(&vol, [1.953125, 1.953125, 2.0], Interpolation::Linear);
    assert_eq!(iso.dims, [256, 256, 20]);
    assert_eq!(iso.origin, vol.origin);
    assert_eq!(iso.sources, vol.sources);
    // a voxel on both grids (even i, j): same value
    assert_eq!(iso.get(100, 120, 7), vol.get(200, 240, 7));
    let bs = resample_to_spacing(&vol, [1.953125, 1.953125, 2.0], Interpolation::BSpline3);
    assert!((bs.get(100, 120, 7) - vol.get(200, 240, 7)).abs() < 0.05);

    // back onto the original grid: a label map stays a label map
    let labels = ainode::imaging::Volume {
        data: vol
            .data
            .iter()
            .map(|&v| {
                if v > 200.0 {
                    2.0
                } else if v > -300.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect(),
        ..vol.clone()
    };
    let coarse = resample_to_spacing(&labels, [3.0, 3.0, 4.0], Interpolation::Nearest);
    let back = resample_like(&coarse, &vol, Interpolation::Nearest, 0.0);
    assert_eq!(back.dims, vol.dims);
    assert!(back.data.iter().all(|v| [0.0, 1.0, 2.0].contains(v)));
    let agree = back.data.iter().zip(&labels.data).filter(|(a, b)| a == b).count() as f64 / labels.data.len() as f64;
    assert!(agree > 0.9, "label agreement {agree}");

    let body = crop_to_body(&vol, -500.0, 5.0).unwrap();
    let size = body.bbox.size();
    assert!(size[0] < 512 && size[1] < 512 && size[0] > 200 && size[1] > 150, "{:?}", body.bbox);
    assert_eq!(body.volume.voxel_to_patient([0.0; 3]), vol.voxel_to_patient([body.bbox.min[0] as f64, body.bbox.min[1] as f64, body.bbox.min[2] as f64]));
    assert_eq!(body.volume.get(10, 10, 3), vol.get(body.bbox.min[0] + 10, body.bbox.min[1] + 10, body.bbox.min[2] + 3));

    let w = window(&body.volume, 40.0, 400.0);
    assert!(w.data.iter().all(|v| (0.0..=1.0).contains(v)));
}
