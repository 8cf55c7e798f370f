"""Result objects (SEG, TID 1500 SR, GSPS, SC) written by `ainode encode`, judged by
validators we did not write: dciodvfy, dsrdump, PixelMed's DicomSRValidator, dcentvfy,
and highdicom / pydicom read-back. Every validator also gets a negative control (a
deliberately broken object that it must reject), so a silent validator cannot pass.

Inputs (read-only): the CT series in ../shared/data/dicom-samples/ct-totalseg and
pydicom-data files: RG3_UNCR (CR, MONOCHROME1, 1760x1760), US1_UNCR (US, RGB),
OBXXXX1A and OBXXXX1A_rle_2frame (US, PALETTE COLOR, single / multi-frame; pydicom-data
has no US1_PAL), eCT_Supplemental (Enhanced CT, 2 frames).

dciodvfy warnings that come from the inputs (or from their missing information) are
allowed, and only these (ALLOWED_WARNINGS):
  - "needed to build DICOMDIR - Patient ID / Study ID": the CT sample's Patient ID and
    Study ID are empty; we copy them as they are.
  - "Unrecognized defined term <SECTRA> ... Coding Scheme Designator": the CT sample's
    Procedure Code Sequence, copied (General Study module).
  - "Value is zero ... Patient's Size / Patient's Weight": US1_UNCR's Patient Study values.
  - "Laterality ... only permitted to be empty when actually unknown": PR/SC series
    Laterality is written empty when the image has none (Type 2C; dciodvfy errors if absent).

PixelMed (packaged 2022 build) has two documented false positives: procedure codes newer
than its CID 100, and reports mixing measurement-group templates (it validates all
groups of a report against one of TID 1410/1411/1501). Representative reports with one
group template each are therefore checked with it; mixed reports with the others.
It takes 10-20 s per file.

Run: AINODE_BIN=target/release/ainode .venv-tests/bin/python -m pytest -q integration-tests/test_encode.py
test.sh must install: dcmtk, dicom3tools, pixelmed-apps (Java), and the Python packages
in requirements.txt (highdicom, pydicom-data).
"""
from __future__ import annotations

import copy
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import SAMPLES, ainode_bin

CT_DIR = SAMPLES / "ct-totalseg"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")

ALLOWED_WARNINGS = [
    r"Missing attribute or value that would be needed to build DICOMDIR - (Patient ID|Study ID)",
    r"Unrecognized defined term <SECTRA> for value 1 of attribute <Coding Scheme Designator>",
    r"Value is zero for value 1 of attribute <Patient's (Size|Weight)>",
    r"is only permitted to be empty when actually unknown.*attribute <Laterality>",
]
# real (SCT / LOINC) procedure codes missing from PixelMed's 2022 CID 100; a made-up code still fails
PIXELMED_FALSE_POSITIVES = [r"Code \([^,]+,(SCT|LN),[^)]*\) not found in context group 100"]


# ------------------------------------------------------------------------------------
# tools and inputs (skip with a clear message when missing)
# ------------------------------------------------------------------------------------

def need(name: str) -> str:
    p = shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/bin", "/usr/local/bin") if os.access(f"{d}/{name}", os.X_OK)), None)
    if not p:
        pytest.skip(f"{name} not installed (test.sh installs dicom3tools, dcmtk and pixelmed-apps)")
    return p


def sample_file(name: str) -> Path:
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        pytest.skip("pydicom.data not available")
    p = get_testdata_file(name)
    if not p:
        pytest.skip(f"pydicom-data file {name} not found (pip install pydicom-data)")
    return Path(p)


def ct_files() -> list[Path]:
    files = sorted(p for p in CT_DIR.glob("*") if p.is_file())
    if len(files) < 2:
        pytest.skip(f"CT sample series missing at {CT_DIR}")
    return files


def sorted_ct() -> list[pydicom.Dataset]:
    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_files()]
    return sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))


def run(cmd, timeout=120):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, errors="replace")


def encode(*args, ok=True):
    res = run([ainode_bin(), "encode", *args])
    if ok:
        assert res.returncode == 0, f"ainode encode {' '.join(map(str, args))} failed:\n{res.stdout}\n{res.stderr}"
    return res


# ------------------------------------------------------------------------------------
# NIfTI writing (no nibabel needed)
# ------------------------------------------------------------------------------------

def write_nifti(path: Path, data, affine) -> Path:
    """`data` indexed [i, j, k] (i fastest on disk), uint16; `affine` voxel -> RAS (4x4, sform)."""
    data = np.asarray(data)
    while data.ndim < 3:
        data = data[..., None]
    dims = [data.ndim] + list(data.shape) + [1] * (7 - data.ndim)
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, *dims)
    struct.pack_into("<hh", hdr, 70, 512, 16)  # UINT16
    a = np.asarray(affine, float)
    struct.pack_into("<8f", hdr, 76, 1.0, *[float(np.linalg.norm(a[:3, i])) for i in range(3)], 0, 0, 0, 0)
    struct.pack_into("<f", hdr, 108, 352.0)
    struct.pack_into("<ff", hdr, 112, 1.0, 0.0)
    hdr[123] = 2
    struct.pack_into("<hh", hdr, 252, 0, 2)  # qform_code 0, sform_code 2
    for row in range(3):
        struct.pack_into("<4f", hdr, 280 + 16 * row, *a[row])
    hdr[344:348] = b"n+1\0"
    body = bytes(hdr) + b"\0\0\0\0" + np.asarray(data, "<u2").tobytes(order="F")
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(body)
    return path


def lps_affine(ds0, dz):
    """voxel (col, row, slice) -> RAS for an axial series starting at ds0."""
    ps = [float(x) for x in ds0.PixelSpacing]
    o = [float(x) for x in ds0.ImagePositionPatient]
    return np.array([[-ps[1], 0, 0, -o[0]], [0, -ps[0], 0, -o[1]], [0, 0, dz, o[2]], [0, 0, 0, 1]])


SEG_ALGO = {"type": "AUTOMATIC", "name": "test-net", "version": "1.0"}
SEGMENTS = {"algorithm": SEG_ALGO, "segments": [
    {"label": 1, "name": "Liver", "category": ["91723000", "SCT", "Anatomical Structure"], "type": ["10200004", "SCT", "Liver"], "color": [221, 130, 101]},
    {"label": 5, "name": "Lesion", "category": ["49755003", "SCT", "Morphologically Altered Structure"], "type": ["52988006", "SCT", "Lesion"],
     "color": [255, 0, 0], "anatomic_region": ["10200004", "SCT", "Liver"]},
    {"label": 7, "name": "Spleen", "category": ["91723000", "SCT", "Anatomical Structure"], "type": ["78961009", "SCT", "Spleen"]},
]}
LABEL_TO_SEGMENT = {0: 0, 1: 1, 5: 2, 7: 3}


def labels_for(n, rows, cols):
    """A label map [frame, row, col] using labels 1, 5, 7 (7 only in one tiny odd-sized spot)."""
    lab = np.zeros((n, rows, cols), np.uint16)
    lab[:, rows // 5: rows // 2, cols // 4: cols // 2 + 3] = 1
    lab[n - 1, rows // 2 + 1: rows // 2 + 4, 3:12] = 5
    if n > 2:
        lab[1, 2:5, 2:9] = 7
    return lab


# ------------------------------------------------------------------------------------
# validators
# ------------------------------------------------------------------------------------

def dciodvfy_problems(path: Path) -> list[str]:
    """Error lines and warnings outside the allow-list; [] when clean."""
    res = run([need("dciodvfy"), path])
    lines = [l.strip() for l in (res.stderr + res.stdout).splitlines() if l.strip()]
    bad = [l for l in lines if l.startswith("Error")]
    bad += [l for l in lines if l.startswith("Warning") and not any(re.search(p, l) for p in ALLOWED_WARNINGS)]
    if res.returncode != 0 and not bad:
        bad.append(f"exit status {res.returncode}")
    return bad


def assert_dciodvfy(path: Path):
    problems = dciodvfy_problems(path)
    assert not problems, f"dciodvfy {path.name}:\n" + "\n".join(problems)


def assert_dsrdump(path: Path):
    res = run([need("dsrdump"), "-q", path])
    assert res.returncode == 0, f"dsrdump -q {path.name}: rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    assert not re.search(r"^[EF]:", res.stderr + res.stdout, re.M), res.stderr


def pixelmed(path: Path) -> str:
    need("java")
    if not PIXELMED_JAR.exists():
        pytest.skip(f"{PIXELMED_JAR} missing (apt-get install pixelmed-apps)")
    res = run(["java", "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0",
               "-cp", PIXELMED_JAR, "com.pixelmed.validate.DicomSRValidator", path], timeout=300)
    return res.stdout + res.stderr


def pixelmed_errors(out: str) -> list[str]:
    return [l for l in out.splitlines() if l.startswith("Error") and not any(re.search(p, l) for p in PIXELMED_FALSE_POSITIVES)]


def assert_dcentvfy(*paths: Path):
    res = run([need("dcentvfy"), *paths])
    assert res.returncode == 0, f"dcentvfy: rc={res.returncode}\n{res.stderr[-3000:]}"


# ------------------------------------------------------------------------------------
# the outputs, made once per session
# ------------------------------------------------------------------------------------

class Work:
    def __init__(self, root: Path):
        self.root = root

    def path(self, name):
        return self.root / name


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return Work(tmp_path_factory.mktemp("encode"))


@pytest.fixture(scope="module")
def segments_json(work):
    p = work.path("segments.json")
    p.write_text(json.dumps(SEGMENTS))
    return p


@pytest.fixture(scope="module")
def ct_seg(work, segments_json):
    dss = sorted_ct()
    lab = labels_for(len(dss), dss[0].Rows, dss[0].Columns)
    dz = float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2])
    nii = write_nifti(work.path("ct_lps.nii.gz"), lab.transpose(2, 1, 0), lps_affine(dss[0], dz))
    out = work.path("ct_seg.dcm")
    encode("seg", "--series", CT_DIR, "--labelmap", nii, "--segments", segments_json, "--out", out)
    return out, lab, dss


# inputs without patient geometry are labelled by index: NIfTI (columns, rows, frames)
SEG_2D_INPUTS = ["RG3_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm", "OBXXXX1A_rle_2frame.dcm"]


def flat_seg(work, segments_json, name):
    src = sample_file(name)
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    lab = labels_for(n, ds.Rows, ds.Columns)
    nii = write_nifti(work.path(f"{name}.nii"), lab.transpose(2, 1, 0), np.eye(4))
    out = work.path(f"seg_{name}")
    encode("seg", "--series", src, "--labelmap", nii, "--segments", segments_json, "--out", out)
    return src, out, lab, ds


def ect_seg(work, segments_json):
    src = sample_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    sh = ds.SharedFunctionalGroupsSequence[0]
    ps = [float(x) for x in sh.PixelMeasuresSequence[0].PixelSpacing]
    iop = [float(x) for x in sh.PlaneOrientationSequence[0].ImageOrientationPatient]
    pos = [np.array([float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient]) for f in ds.PerFrameFunctionalGroupsSequence]
    a = np.eye(4)
    a[:3, 0] = np.array(iop[:3]) * ps[1]
    a[:3, 1] = np.array(iop[3:]) * ps[0]
    a[:3, 2] = pos[1] - pos[0]
    a[:3, 3] = pos[0]
    a[:2, :] *= -1  # LPS -> RAS
    lab = labels_for(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    nii = write_nifti(work.path("ect.nii"), lab.transpose(2, 1, 0), a)
    out = work.path("seg_ect.dcm")
    encode("seg", "--series", src, "--labelmap", nii, "--segments", segments_json, "--out", out)
    return src, out, lab, ds


# ------------------------------------------------------------------------------------
# SEG
# ------------------------------------------------------------------------------------

def test_seg_ct_validates_and_reads_back(ct_seg):
    import highdicom as hd
    out, lab, dss = ct_seg
    assert_dciodvfy(out)
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and int(seg.NumberOfFrames) == 3 * len(dss)  # empty frames kept
    uids = [d.SOPInstanceUID for d in dss]
    got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3], combine_segments=True)
    want = np.vectorize(LABEL_TO_SEGMENT.get)(lab)
    assert np.array_equal(got, want)
    # patient space: every frame sits where its source slice is, same orientation and spacing
    for f in seg.PerFrameFunctionalGroupsSequence:
        src_uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = dss[uids.index(src_uid)]
        assert [float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient] == pytest.approx([float(x) for x in src.ImagePositionPatient])
    sh = seg.SharedFunctionalGroupsSequence[0]
    assert [float(x) for x in sh.PlaneOrientationSequence[0].ImageOrientationPatient] == pytest.approx([float(x) for x in dss[0].ImageOrientationPatient])
    assert [float(x) for x in sh.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx([float(x) for x in dss[0].PixelSpacing])
    assert seg.FrameOfReferenceUID == dss[0].FrameOfReferenceUID
    # segment descriptions
    s = seg.SegmentSequence
    assert [x.SegmentLabel for x in s] == ["Liver", "Lesion", "Spleen"]
    assert s[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert list(s[0].RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(221, 130, 101).value)
    assert s[1].AnatomicRegionSequence[0].CodeValue == "10200004"
    assert s[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "test-net"
    assert seg.ContentCreatorName and seg.ContentLabel


def test_seg_ct_patient_space_volume_matches(ct_seg):
    """highdicom's volume of the SEG has the geometry of the CT series."""
    import highdicom as hd
    out, lab, dss = ct_seg
    vol = hd.seg.segread(out).get_volume(combine_segments=True)
    ds0 = dss[0]
    p0 = np.array([float(x) for x in ds0.ImagePositionPatient])
    # the volume's voxel (0,0,0) is the first pixel of one end slice
    ends = [p0, np.array([float(x) for x in dss[-1].ImagePositionPatient])]
    assert any(np.allclose(vol.affine[:3, 3], e) for e in ends)
    assert int(np.count_nonzero(vol.array)) == int(np.count_nonzero(lab))


def test_seg_ras_and_lps_label_maps_give_the_same_seg(work, segments_json, ct_seg):
    out, lab, dss = ct_seg
    ps = [float(x) for x in dss[0].PixelSpacing]
    o = [float(x) for x in dss[0].ImagePositionPatient]
    rows, cols = dss[0].Rows, dss[0].Columns
    dz = float(dss[1].ImagePositionPatient[2]) - o[2]
    # RAS voxel order: i right-to-left flipped (x increases to the patient's left in LPS), j flipped, k flipped
    ras = lab.transpose(2, 1, 0)[::-1, ::-1, ::-1]
    zmax = o[2] + dz * (len(dss) - 1)
    a = np.array([[ps[1], 0, 0, -(o[0] + ps[1] * (cols - 1))], [0, ps[0], 0, -(o[1] + ps[0] * (rows - 1))], [0, 0, -dz, zmax], [0, 0, 0, 1]])
    nii = write_nifti(work.path("ct_ras.nii"), ras, a)
    out2 = work.path("ct_seg_ras.dcm")
    encode("seg", "--series", CT_DIR, "--labelmap", nii, "--segments", segments_json, "--out", out2)
    a_ds, b_ds = pydicom.dcmread(out), pydicom.dcmread(out2)
    assert a_ds.PixelData == b_ds.PixelData
    assert a_ds.SOPInstanceUID == b_ds.SOPInstanceUID  # deterministic UIDs
    assert a_ds.PerFrameFunctionalGroupsSequence == b_ds.PerFrameFunctionalGroupsSequence


def test_seg_determinism_and_empty_frame_option(work, segments_json, ct_seg):
    out, lab, dss = ct_seg
    again = work.path("ct_seg_again.dcm")
    encode("seg", "--series", CT_DIR, "--labelmap", work.path("ct_lps.nii.gz"), "--segments", segments_json, "--out", again)
    assert pydicom.dcmread(again).SOPInstanceUID == pydicom.dcmread(out).SOPInstanceUID
    sparse = work.path("ct_seg_sparse.dcm")
    encode("seg", "--series", CT_DIR, "--labelmap", work.path("ct_lps.nii.gz"), "--segments", segments_json, "--out", sparse, "--omit-empty-frames", "true")
    ds = pydicom.dcmread(sparse)
    per_segment = [int(np.any(lab == v, axis=(1, 2)).sum()) for v in (1, 5, 7)]
    assert int(ds.NumberOfFrames) == sum(per_segment)
    assert_dciodvfy(sparse)


@pytest.mark.parametrize("name", SEG_2D_INPUTS)
def test_seg_2d_inputs(work, segments_json, name):
    import highdicom as hd
    src, out, lab, ds = flat_seg(work, segments_json, name)
    assert_dciodvfy(out)
    seg = hd.seg.segread(out)
    if "FrameOfReferenceUID" not in ds:
        assert "PatientOrientation" in seg and "FrameOfReferenceUID" not in seg
    if "NumberOfFrames" in ds:
        got = seg.get_pixels_by_source_frame(source_sop_instance_uid=ds.SOPInstanceUID, source_frame_numbers=list(range(1, int(ds.NumberOfFrames) + 1)),
                                             segment_numbers=[1, 2, 3], combine_segments=True)
    else:
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1, 2, 3], combine_segments=True)
    assert np.array_equal(got, np.vectorize(LABEL_TO_SEGMENT.get)(lab))
    assert_dcentvfy(src, out)


def test_seg_enhanced_ct_multiframe(work, segments_json):
    import highdicom as hd
    src, out, lab, ds = ect_seg(work, segments_json)
    assert_dciodvfy(out)
    seg = hd.seg.segread(out)
    frames = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber for f in seg.PerFrameFunctionalGroupsSequence]
    assert sorted(set(frames)) == [1, 2]
    got = seg.get_pixels_by_source_frame(source_sop_instance_uid=ds.SOPInstanceUID, source_frame_numbers=[1, 2], segment_numbers=[1, 2, 3], combine_segments=True)
    assert np.array_equal(got, np.vectorize(LABEL_TO_SEGMENT.get)(lab))
    assert_dcentvfy(src, out)


def test_seg_refusals(work, segments_json, ct_seg):
    out, lab, dss = ct_seg
    dz = float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2])
    # a label map that covers only half the series
    half = write_nifti(work.path("half.nii"), lab[:10].transpose(2, 1, 0), lps_affine(dss[0], dz))
    r = encode("seg", "--series", CT_DIR, "--labelmap", half, "--segments", segments_json, "--out", work.path("x.dcm"), ok=False)
    assert r.returncode != 0 and "does not cover" in r.stderr, r.stderr
    # a label value that has no segment
    bad = lab.copy()
    bad[0, 0, 0] = 9
    p = write_nifti(work.path("bad.nii"), bad.transpose(2, 1, 0), lps_affine(dss[0], dz))
    r = encode("seg", "--series", CT_DIR, "--labelmap", p, "--segments", segments_json, "--out", work.path("x.dcm"), ok=False)
    assert r.returncode != 0 and "label value 9" in r.stderr, r.stderr
    # no foreground at all
    p = write_nifti(work.path("empty.nii"), np.zeros_like(lab).transpose(2, 1, 0), lps_affine(dss[0], dz))
    r = encode("seg", "--series", CT_DIR, "--labelmap", p, "--segments", segments_json, "--out", work.path("x.dcm"), ok=False)
    assert r.returncode != 0 and "no foreground" in r.stderr, r.stderr
    # 2D image: label map of the wrong size
    src = sample_file("US1_UNCR.dcm")
    p = write_nifti(work.path("wrong.nii"), np.zeros((10, 10, 1), np.uint16), np.eye(4))
    r = encode("seg", "--series", src, "--labelmap", p, "--segments", segments_json, "--out", work.path("x.dcm"), ok=False)
    assert r.returncode != 0 and "(columns, rows, frames)" in r.stderr, r.stderr
    assert not work.path("x.dcm").exists()


# ------------------------------------------------------------------------------------
# SR
# ------------------------------------------------------------------------------------

ALGO = {"name": "test-net", "version": "1.0"}


def ct_reports(seg_uid, dss):
    img = {"sop_instance_uid": dss[7].SOPInstanceUID}
    landmarks = {"algorithm": ALGO, "landmarks": [
        {"label": "Porta hepatis", "concept": ["245277004", "SCT", "Porta hepatis"], "image": img, "point": [200.5, 150.25]},
        {"label": "Lesion centre", "concept": ["52988006", "SCT", "Lesion"], "image": {"sop_instance_uid": dss[3].SOPInstanceUID}, "point": [10, 500.75]}]}
    volumetric = {"algorithm": ALGO, "lesions": [
        {"tracking_id": "lesion 1", "class": ["52988006", "SCT", "Lesion"], "segment": {"sop_instance_uid": seg_uid, "segment_number": 2},
         "volume_ml": 12.345, "longest_diameter_mm": 31.5, "score": 0.87}],
        "groups": [{"tracking_id": "liver", "finding": ["10200004", "SCT", "Liver"],
                    "segment": {"sop_instance_uid": seg_uid, "segment_number": 1, "source_images": [{"sop_instance_uid": d.SOPInstanceUID} for d in dss[3:6]]},
                    "measurements": [{"concept": ["118565006", "SCT", "Volume"], "value": 1500.25, "unit": ["ml", "UCUM", "milliliter"]}]}]}
    landmarks3d = {"algorithm": ALGO, "landmarks": [
        {"label": "Sella", "concept": ["42575006", "SCT", "Sella turcica"], "point3d": [1.5, -200.25, -780.0]},
        {"label": "Nasion", "concept": ["264452006", "SCT", "Nasion"], "point3d": [0.0, -250.5, -770.125]}]}
    mixed = {"algorithm": ALGO, "procedure_reported": ["25045-6", "LN", "CT unspecified body region"],
             "landmarks": landmarks["landmarks"] + landmarks3d["landmarks"], "lesions": volumetric["lesions"] + [
                 {"tracking_id": "lesion 2", "class": ["52988006", "SCT", "Lesion"], "outline": {"image": img, "graphic_type": "POLYGON", "points": [[10, 10], [60, 10], [60, 40]]},
                  "longest_diameter_mm": 8.25}],
             "groups": volumetric["groups"] + [
                 {"tracking_id": "plane", "region": {"graphic_type": "POLYGON", "points3d": [[0, 0, -780], [10, 0, -780], [10, 10, -780]]},
                  "measurements": [{"concept": ["42798000", "SCT", "Area"], "value": 50.0, "unit": ["mm2", "UCUM", "square millimeter"]}]},
                 {"tracking_id": "angles", "measurements": [{"concept": ["110859", "DCM", "Angle"], "value": 42.5, "unit": ["deg", "UCUM", "degree"]}]}],
             "evaluations": [{"concept": ["121071", "DCM", "Finding"], "value": ["52988006", "SCT", "Lesion"]}]}
    return {"landmarks": landmarks, "volumetric": volumetric, "landmarks3d": landmarks3d, "mixed": mixed}


def hip_report(uid):
    """A hip-like report on one X-ray: points (TID 1410) - PixelMed-clean on its own."""
    pts = {"a": [820.5, 700.25], "b": [760.0, 650.0], "j": [900.0, 760.0], "e": [700.0, 900.0], "f": [1100.0, 905.5]}
    return {"algorithm": ALGO, "landmarks": [
        {"label": k, "concept": ["260787004", "SCT", "Physical object"], "image": {"sop_instance_uid": uid}, "point": v} for k, v in pts.items()]}


def measurement_report():
    """TID 1501 groups only: measurements in mm, deg, %, ml, mm2 and coded evaluations."""
    return {"algorithm": ALGO, "groups": [
        {"tracking_id": "kidney", "finding": ["64033007", "SCT", "Kidney"], "measurements": [
            {"concept": ["42798000", "SCT", "Area"], "value": 812.5, "unit": ["mm2", "UCUM", "square millimeter"]},
            {"concept": ["103339001", "SCT", "Long Axis"], "value": 101.25, "unit": ["mm", "UCUM", "millimeter"]},
            {"concept": ["118565006", "SCT", "Volume"], "value": 150.0, "unit": ["ml", "UCUM", "milliliter"]}]},
        {"tracking_id": "ratio", "measurements": [
            {"concept": ["110859", "DCM", "Angle"], "value": 12.0, "unit": ["deg", "UCUM", "degree"]},
            {"concept": ["111012", "DCM", "Certainty of Finding"], "value": 18.75, "unit": ["%", "UCUM", "percent"]}],
         "evaluations": [{"concept": ["246112005", "SCT", "Severity"], "value": ["255604002", "SCT", "Mild"]}]}]}


@pytest.fixture(scope="module")
def ct_srs(work, ct_seg):
    seg_path, lab, dss = ct_seg
    seg_uid = pydicom.dcmread(seg_path, stop_before_pixels=True).SOPInstanceUID
    out = {}
    for name, rep in ct_reports(seg_uid, dss).items():
        j = work.path(f"ct_{name}.json")
        j.write_text(json.dumps(rep))
        p = work.path(f"ct_sr_{name}.dcm")
        # one report per pipeline: UIDs derive from (inputs, pipeline, model version, kind)
        encode("sr", "--evidence", CT_DIR, seg_path, "--report", j, "--out", p, "--pipeline", f"test-{name}")
        out[name] = (p, rep)
    return out


def groups_by_id(sr):
    c = sr.content
    return {g.tracking_identifier: g for g in
            c.get_planar_roi_measurement_groups() + c.get_volumetric_roi_measurement_groups() + c.get_image_measurement_groups()}


def check_measurements(group, want: list[dict]):
    got = {(m.name.value, m.unit.value): m.value for m in group.get_measurements()}
    for m in want:
        assert got[(m["concept"][0], m["unit"][0])] == pytest.approx(m["value"], rel=1e-12), m


@pytest.mark.parametrize("name", ["landmarks", "volumetric", "landmarks3d", "mixed"])
def test_sr_ct(ct_srs, ct_seg, name):
    import highdicom as hd
    path, rep = ct_srs[name]
    assert_dciodvfy(path)
    assert_dsrdump(path)
    sr = hd.sr.srread(path)
    want_class = "1.2.840.10008.5.1.4.1.1.88.34" if name in ("landmarks3d", "mixed") else "1.2.840.10008.5.1.4.1.1.88.33"
    assert sr.SOPClassUID == want_class
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("PARTIAL", "UNVERIFIED", "PRELIMINARY")
    groups = groups_by_id(sr)
    for l in rep.get("landmarks", []):
        g = groups[l["label"]]
        assert g.finding_type.value == l["concept"][0]
        if "point" in l:
            assert g.roi.value.tolist() == [l["point"]]
            ref = g.roi.ContentSequence[0].ReferencedSOPSequence[0]
            assert ref.ReferencedSOPInstanceUID == l["image"]["sop_instance_uid"]
        else:
            assert g.roi.value.tolist() == [pytest.approx(l["point3d"])]
            assert g.roi.frame_of_reference_uid == ct_seg[2][0].FrameOfReferenceUID
    for l in rep.get("lesions", []):
        g = groups[l["tracking_id"]]
        want = [{"concept": ["103339001"], "unit": ["mm"], "value": l["longest_diameter_mm"]}]
        if "volume_ml" in l:
            want.append({"concept": ["118565006"], "unit": ["ml"], "value": l["volume_ml"]})
        if "score" in l:
            want.append({"concept": ["111012"], "unit": ["1"], "value": l["score"]})
        check_measurements(g, want)
        if "segment" in l:
            assert g.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber == l["segment"]["segment_number"]
    for gr in rep.get("groups", []):
        check_measurements(groups[gr["tracking_id"]], gr.get("measurements", []))
    assert_dcentvfy(*ct_files(), ct_seg[0], path)


@pytest.mark.parametrize("name", ["landmarks", "volumetric", "landmarks3d"])
def test_sr_ct_pixelmed(ct_srs, name):
    out = pixelmed(ct_srs[name][0])
    assert "Found Root Template TID_1500" in out, out[-2000:]
    assert not pixelmed_errors(out), "\n".join(pixelmed_errors(out))


FLAT_SR_INPUTS = ["RG3_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm", "OBXXXX1A_rle_2frame.dcm", "eCT_Supplemental.dcm"]


@pytest.mark.parametrize("name", FLAT_SR_INPUTS)
def test_sr_single_images(work, name):
    """Points on the image (with a frame number for multi-frame images) + TID 1501 groups."""
    import highdicom as hd
    src = sample_file(name)
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    frame = 2 if int(ds.get("NumberOfFrames", 1) or 1) > 1 else None
    img = {"sop_instance_uid": ds.SOPInstanceUID, **({"frame": frame} if frame else {})}
    rep = measurement_report()
    # SCOORD data is FL: use values a float32 holds exactly
    rep["landmarks"] = [{"label": "p1", "concept": ["260787004", "SCT", "Physical object"], "image": img, "point": [ds.Columns - 0.5, ds.Rows / 4 + 0.125]}]
    rep["lesions"] = [{"tracking_id": "outline", "class": ["52988006", "SCT", "Lesion"], "score": 0.25,
                       "outline": {"image": img, "graphic_type": "POLYLINE", "points": [[1, 1], [40.5, 30], [80, 2]]}}]
    j = work.path(f"rep_{name}.json")
    j.write_text(json.dumps(rep))
    out = work.path(f"sr_{name}")
    encode("sr", "--evidence", src, "--report", j, "--out", out)
    assert_dciodvfy(out)
    assert_dsrdump(out)
    assert_dcentvfy(src, out)
    sr = hd.sr.srread(out)
    groups = groups_by_id(sr)
    p = groups["p1"]
    assert p.roi.value.tolist() == [[ds.Columns - 0.5, ds.Rows / 4 + 0.125]]
    ref = p.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert ref.get("ReferencedFrameNumber") == frame
    assert groups["outline"].roi.value.tolist() == [[1, 1], [40.5, 30], [80, 2]]
    for g in rep["groups"]:
        check_measurements(groups[g["tracking_id"]], g["measurements"])
    q = groups["ratio"].get_qualitative_evaluations()
    assert [(e.name.value, e.value.value) for e in q] == [("246112005", "255604002")]
    # procedure reported defaults by modality
    assert sr.ContentSequence  # tree present


def test_sr_pixelmed_hip_and_measurements(work):
    """PixelMed on a 2D landmark report (CR) and a TID 1501-only report (US)."""
    cr = sample_file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(cr, stop_before_pixels=True)
    j = work.path("hip.json")
    j.write_text(json.dumps(hip_report(ds.SOPInstanceUID)))
    out = work.path("sr_hip.dcm")
    encode("sr", "--evidence", cr, "--report", j, "--out", out)
    us = sample_file("US1_UNCR.dcm")
    j2 = work.path("us.json")
    j2.write_text(json.dumps(measurement_report()))
    out2 = work.path("sr_us.dcm")
    encode("sr", "--evidence", us, "--report", j2, "--out", out2)
    for p in (out, out2):
        res = pixelmed(p)
        assert "Found Root Template TID_1500" in res, res[-2000:]
        assert not pixelmed_errors(res), "\n".join(pixelmed_errors(res))


def test_sr_refusals(work):
    us = sample_file("US1_UNCR.dcm")
    ds = pydicom.dcmread(us, stop_before_pixels=True)
    cases = {
        "outside the image": {"algorithm": ALGO, "landmarks": [{"label": "x", "concept": ["1", "SCT", "x"], "point": [ds.Columns + 1, 0]}]},
        "not among the given DICOM files": {"algorithm": ALGO, "landmarks": [{"label": "x", "concept": ["1", "SCT", "x"], "image": {"sop_instance_uid": "1.2.3"}, "point": [1, 1]}]},
        "UCUM": {"algorithm": ALGO, "groups": [{"tracking_id": "g", "measurements": [{"concept": ["1", "SCT", "x"], "value": 1, "unit": ["mm", "XYZ", "mm"]}]}]},
        "nothing to report": {"algorithm": ALGO},
        "unknown field": {"algorithm": ALGO, "landmark": []},
    }
    for needle, rep in cases.items():
        j = work.path("bad_report.json")
        j.write_text(json.dumps(rep))
        r = encode("sr", "--evidence", us, "--report", j, "--out", work.path("bad.dcm"), ok=False)
        assert r.returncode != 0 and needle.split()[0] in r.stderr, (needle, r.stderr)
    assert not work.path("bad.dcm").exists()


# ------------------------------------------------------------------------------------
# GSPS
# ------------------------------------------------------------------------------------

ANNOTATIONS = {"layer": "AI", "layer_description": "hip keypoints",
               "graphics": [{"type": "POINT", "points": [[100, 120]]}, {"type": "POLYLINE", "points": [[10, 10], [200, 300]]},
                            {"type": "POLYGON", "points": [[50, 50], [90, 50], [70, 80]]}, {"type": "CIRCLE", "points": [[300, 300], [320, 300]]},
                            {"type": "ELLIPSE", "points": [[400, 400], [440, 400], [420, 390], [420, 410]]}],
               "texts": [{"text": "beta 42.5 deg", "anchor": [100, 120]}, {"text": "coverage 80 %", "box": [[10, 400], [200, 430]]}]}


def gsps_inputs(kind=None):
    """The image of one kind, or {kind: image} for all of them."""
    makers = {"ct": lambda: ct_files()[5], "cr": lambda: sample_file("RG3_UNCR.dcm"), "ect": lambda: sample_file("eCT_Supplemental.dcm"),
              "us_rgb": lambda: sample_file("US1_UNCR.dcm"), "us_pal": lambda: sample_file("OBXXXX1A.dcm"),
              "us_pal_mf": lambda: sample_file("OBXXXX1A_rle_2frame.dcm")}
    if kind is None:
        return {k: make() for k, make in makers.items()}
    return makers[kind]()


MULTIFRAME_KINDS = ("ect", "us_pal_mf")


@pytest.mark.parametrize("kind", ["ct", "cr", "ect", "us_rgb", "us_pal", "us_pal_mf"])
def test_gsps(work, kind):
    """GSPS on grayscale images; a Color Softcopy Presentation State on colour ones."""
    src = gsps_inputs(kind)
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    color = not ds.PhotometricInterpretation.startswith("MONOCHROME")
    ann = copy.deepcopy(ANNOTATIONS)
    if kind in MULTIFRAME_KINDS:
        ann["frame"] = 2
    j = work.path(f"ann_{kind}.json")
    j.write_text(json.dumps(ann))
    out = work.path(f"gsps_{kind}.dcm")
    encode("gsps", "--image", src, "--annotations", j, "--out", out)
    assert_dciodvfy(out)
    assert_dcentvfy(src, out)
    pr = pydicom.dcmread(out)
    assert pr.SOPClassUID == ("1.2.840.10008.5.1.4.1.1.11.2" if color else "1.2.840.10008.5.1.4.1.1.11.1")
    ref = pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert ref.get("ReferencedFrameNumber") == (2 if kind in MULTIFRAME_KINDS else None)
    ga = pr.GraphicAnnotationSequence[0]
    got = [(g.GraphicType, [float(x) for x in g.GraphicData]) for g in ga.GraphicObjectSequence]
    assert got[0] == ("POINT", [100, 120])
    assert got[1] == ("POLYLINE", [10, 10, 200, 300])
    assert got[2] == ("POLYLINE", [50, 50, 90, 50, 70, 80, 50, 50])  # closed
    assert got[3][0] == "CIRCLE" and got[4][0] == "ELLIPSE"
    assert [t.UnformattedTextValue for t in ga.TextObjectSequence] == ["beta 42.5 deg", "coverage 80 %"]
    assert [float(x) for x in ga.TextObjectSequence[0].AnchorPoint] == [100, 120]
    assert "Laterality" in pr
    if color:
        from PIL import ImageCms
        import io
        ImageCms.ImageCmsProfile(io.BytesIO(pr.ICCProfile))  # a profile LittleCMS reads
        assert "SoftcopyVOILUTSequence" not in pr and "PresentationLUTShape" not in pr
        return
    assert pr.PresentationLUTShape == ("INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")
    assert "Laterality" in pr
    if kind == "ct":
        assert float(pr.RescaleIntercept) == float(ds.RescaleIntercept) and pr.RescaleType == "HU"
    if kind == "ect":  # rescale from the functional groups
        assert "RescaleSlope" in pr
    voi = pr.SoftcopyVOILUTSequence[0]
    if "WindowCenter" in ds:
        wc = ds.WindowCenter[0] if isinstance(ds.WindowCenter, pydicom.multival.MultiValue) else ds.WindowCenter
        assert float(voi.WindowCenter) == float(wc)


def test_gsps_refusals(work):
    cr = sample_file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(cr, stop_before_pixels=True)
    bad = {"graphics": [{"type": "POLYLINE", "points": [[0, 0], [ds.Columns + 0.5, 10]]}]}
    j = work.path("bad_ann.json")
    j.write_text(json.dumps(bad))
    r = encode("gsps", "--image", cr, "--annotations", j, "--out", work.path("bad_pr.dcm"), ok=False)
    assert r.returncode != 0 and "outside the image" in r.stderr, r.stderr
    j.write_text(json.dumps({**ANNOTATIONS, "frame": 3}))
    r = encode("gsps", "--image", sample_file("eCT_Supplemental.dcm"), "--annotations", j, "--out", work.path("bad_pr.dcm"), ok=False)
    assert r.returncode != 0 and "frame" in r.stderr, r.stderr
    j.write_text(json.dumps({**ANNOTATIONS, "layer": "lower-case"}))
    r = encode("gsps", "--image", cr, "--annotations", j, "--out", work.path("bad_pr.dcm"), ok=False)
    assert r.returncode != 0 and "layer" in r.stderr, r.stderr
    assert not work.path("bad_pr.dcm").exists()


# ------------------------------------------------------------------------------------
# SC
# ------------------------------------------------------------------------------------

def test_sc(work, ct_seg):
    a = (np.arange(100 * 60).reshape(60, 100) % 4000).astype(np.uint16)
    one = write_nifti(work.path("proj.nii"), a.T, np.eye(4))
    two = write_nifti(work.path("proj2.nii"), np.stack([a.T, a.T[::-1]], -1), np.eye(4))
    out1, out2 = work.path("sc1.dcm"), work.path("sc2.dcm")
    encode("sc", "--source", CT_DIR, "--image", one, "--description", "lateral projection", "--pixel-spacing", "2,0.9765625",
           "--rescale", "1,-1024,HU", "--window", "40,400", "--out", out1)
    encode("sc", "--source", CT_DIR, "--image", two, "--description", "two projections", "--out", out2)
    for p in (out1, out2):
        assert_dciodvfy(p)
    d1, d2 = pydicom.dcmread(out1), pydicom.dcmread(out2)
    assert d1.ConversionType == "WSD" and np.array_equal(d1.pixel_array, a)
    assert [float(x) for x in d1.PixelSpacing] == [2.0, 0.9765625] and d1.RescaleType == "HU"
    assert d2.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.3"
    assert np.array_equal(d2.pixel_array[0], a) and np.array_equal(d2.pixel_array[1], a[:, ::-1])
    assert_dcentvfy(*ct_files(), out1, out2)


# ------------------------------------------------------------------------------------
# the whole CT study at once, and negative controls for every validator
# ------------------------------------------------------------------------------------

def test_dcentvfy_whole_ct_study(work, ct_seg, ct_srs):
    src = ct_files()[5]
    j = work.path("ann_study.json")
    j.write_text(json.dumps(ANNOTATIONS))
    pr = work.path("gsps_study.dcm")
    encode("gsps", "--image", src, "--annotations", j, "--out", pr)
    assert_dcentvfy(*ct_files(), ct_seg[0], *[p for p, _ in ct_srs.values()], pr)


def test_negative_control_dciodvfy(work, ct_seg):
    ds = pydicom.dcmread(ct_seg[0])
    del ds.SegmentSequence
    broken = work.path("broken_seg.dcm")
    ds.save_as(broken)
    assert any(l.startswith("Error") for l in dciodvfy_problems(broken))
    j = work.path("ann_neg.json")
    j.write_text(json.dumps(ANNOTATIONS))
    good = work.path("gsps_neg.dcm")
    encode("gsps", "--image", ct_files()[5], "--annotations", j, "--out", good)
    pr = pydicom.dcmread(good)
    del pr.Laterality
    pr.save_as(work.path("broken_pr.dcm"))
    assert any("Laterality" in l and l.startswith("Error") for l in dciodvfy_problems(work.path("broken_pr.dcm")))


def _break_sr_tree(path: Path, out: Path):
    ds = pydicom.dcmread(path)
    # a NUM content item without its value, deep in the tree
    for item in ds.ContentSequence:
        for g in getattr(item, "ContentSequence", []):
            for c in getattr(g, "ContentSequence", []):
                if c.ValueType == "NUM":
                    del c.MeasuredValueSequence
                    ds.save_as(out)
                    return out
    raise AssertionError("no NUM item to break")


def test_negative_control_dsrdump(work, ct_srs):
    broken = _break_sr_tree(ct_srs["volumetric"][0], work.path("broken_sr.dcm"))
    ds = pydicom.dcmread(broken)
    ds.ContentSequence[0].ValueType = "NOTATYPE"
    ds.save_as(broken)
    res = run([need("dsrdump"), "-q", broken])
    assert res.returncode != 0 or re.search(r"^[EF]:", res.stderr, re.M), res.stderr


def test_negative_control_pixelmed(work, ct_srs):
    ds = pydicom.dcmread(ct_srs["landmarks"][0])
    # an Observer Type outside CID 270 (TID 1002). (This PixelMed build does not flag
    # missing mandatory rows such as Language or Procedure reported; it checks codes.)
    obs = next(c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "121005")
    obs.ConceptCodeSequence[0].CodeValue = "999999"
    obs.ConceptCodeSequence[0].CodingSchemeDesignator = "99X"
    broken = work.path("broken_tid1500.dcm")
    ds.save_as(broken)
    errors = pixelmed_errors(pixelmed(broken))
    assert any("context group 270" in e for e in errors), "PixelMed accepted an invalid Observer Type"


def test_negative_control_dcentvfy(work, ct_seg):
    ds = pydicom.dcmread(ct_seg[0])
    ds.IssuerOfPatientID = "ELSEWHERE"  # the CT sample's patient name and ID are empty
    ds.StudyDate = "19000101"
    broken = work.path("other_patient.dcm")
    ds.save_as(broken)
    res = run([need("dcentvfy"), *ct_files(), broken])
    assert res.returncode != 0, res.stderr


def test_negative_control_highdicom(work, ct_seg, ct_srs):
    import highdicom as hd
    out, lab, dss = ct_seg
    uids = [d.SOPInstanceUID for d in dss]
    want = np.vectorize(LABEL_TO_SEGMENT.get)(lab)
    # one flipped bit: the read-back comparison must see it
    ds = pydicom.dcmread(out)
    px = bytearray(ds.PixelData)
    px[len(px) // 3] ^= 0x10
    ds.PixelData = bytes(px)
    flipped = work.path("flipped_seg.dcm")
    ds.save_as(flipped)
    got = hd.seg.segread(flipped).get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3], combine_segments=True)
    assert not np.array_equal(got, want)
    # truncated pixel data (e.g. per-frame byte padding) cannot be read
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(work.path("short_seg.dcm"))
    with pytest.raises(Exception):
        hd.seg.segread(work.path("short_seg.dcm")).get_volume()
    sr = pydicom.dcmread(ct_srs["landmarks"][0])
    del sr.ContentSequence[0].ConceptNameCodeSequence
    sr.save_as(work.path("broken_sr_hd.dcm"))
    with pytest.raises(Exception):
        hd.sr.srread(work.path("broken_sr_hd.dcm"))


def test_text_outside_the_source_character_set(work):
    """US1_UNCR has no Specific Character Set: non-ASCII annotations make the result UTF-8."""
    us = sample_file("US1_UNCR.dcm")
    j = work.path("utf8.json")
    j.write_text(json.dumps({"texts": [{"text": "β 42.5° Ωmega 中文", "anchor": [10, 10]}]}, ensure_ascii=False), encoding="utf-8")
    out = work.path("utf8_pr.dcm")
    encode("gsps", "--image", us, "--annotations", j, "--out", out)
    pr = pydicom.dcmread(out)
    assert pr.SpecificCharacterSet == "ISO_IR 192"
    assert pr.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == "β 42.5° Ωmega 中文"
    assert_dciodvfy(out)
    assert_dcentvfy(us, out)


# ------------------------------------------------------------------------------------
# a real PACS takes every result object from our SCU
# ------------------------------------------------------------------------------------

def test_orthanc_accepts_every_result_object(work, segments_json, ct_seg, ct_srs, orthanc):
    from conftest import ainode_bin
    outs = [ct_seg[0], *[p for p, _ in ct_srs.values()]]
    for name in ("US1_UNCR.dcm", "RG3_UNCR.dcm"):
        outs.append(flat_seg(work, segments_json, name)[1])
    j = work.path("ann_orthanc.json")
    j.write_text(json.dumps(ANNOTATIONS))
    for kind, src in gsps_inputs().items():
        pr = work.path(f"gsps_orthanc_{kind}.dcm")
        encode("gsps", "--image", src, "--annotations", j, "--out", pr)
        outs.append(pr)
    proj = write_nifti(work.path("proj_orthanc.nii"), np.ones((40, 30), np.uint16), np.eye(4))
    sc = work.path("sc_orthanc.dcm")
    encode("sc", "--source", CT_DIR, "--image", proj, "--description", "projection", "--out", sc)
    outs.append(sc)

    pacs = orthanc(modalities={"ainode": ["AINODE", "127.0.0.1", 11112]})
    folder = work.path("to_orthanc")
    folder.mkdir(exist_ok=True)
    for p in outs:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    res = run([ainode_bin(), "send", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}", folder, "--calling-ae", "AINODE"])
    assert res.returncode == 0, f"ainode send to Orthanc failed:\n{res.stdout}\n{res.stderr}\n{pacs.log_tail()}"
    for p in outs:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        found = pacs.lookup(str(ds.SOPInstanceUID))
        assert [f for f in found if f.get("Type") == "Instance"], f"Orthanc does not list {Path(p).name} ({ds.SOPClassUID})"
    modalities = {pacs.tags(i).get("Modality") for i in pacs.instances()}
    assert {"SEG", "SR", "PR"} <= modalities, modalities
