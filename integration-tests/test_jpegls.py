"""JPEG-LS in the default build, which has no CharLS (README, "Two commands"):
instances are stored as received; for a peer that accepts only uncompressed
syntaxes (stock storescp) grey-scale JPEG-LS, lossless and near-lossless, is
decoded by pure_jpegls and sent uncompressed with the same pixels as pydicom +
pyjpegls decode; a colour JPEG-LS instance, which this build cannot decode,
becomes a dead letter whose error names the instance and `--features charls`.

Set AINODE_FEATURES=charls when the binary under test was built with CharLS.
"""
from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import forward_all_rule, poll, run, tool

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
GREY = ["MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm"]
COLOUR = "SC_rgb_jls_lossy_sample.dcm"


def copies(names, dest):
    """The test files under fresh UIDs (one new study for all), pixel data as is."""
    from pydicom.data import get_testdata_file

    dest.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    out = []
    for name in names:
        path = get_testdata_file(name)
        if path is None:
            pytest.skip(f"pydicom test file {name} not installed")
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        p = dest / name
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def dcmsend(n, files):
    res = run([tool("dcmsend"), "-aec", n.ae, "-aet", "MODALITY", "127.0.0.1", n.port, *files], timeout=60)
    assert res.returncode == 0, f"dcmsend failed:\n{res.stderr}\n{n.log_tail()}"


def test_grey_jpegls_is_stored_as_received_and_transcoded_for_an_uncompressed_peer(node, storescp, tmp_path):
    dest = storescp(accept_all=False)
    n = node(config={"peers": [{"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
                     "rules": [forward_all_rule("dest")], "export": {"max_attempts": 1}})
    files = copies(GREY, tmp_path / "grey")
    sent = {str(pydicom.dcmread(f).SOPInstanceUID): f for f in files}
    dcmsend(n, files)
    dest.wait_for(set(sent), timeout=30, node=n, settle=0.5)
    for uid, original in sent.items():
        stored = n.find_in_spool(uid)
        assert len(stored) == 1, uid
        src, kept = pydicom.dcmread(original), pydicom.dcmread(stored[0])
        assert kept.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID, original.name
        assert kept.PixelData == src.PixelData, f"{original.name}: the JPEG-LS code stream must be kept as received"
    for f in dest.files():
        got = pydicom.dcmread(f)
        uid = str(got.SOPInstanceUID)
        assert str(got.file_meta.TransferSyntaxUID) in UNCOMPRESSED, (uid, got.file_meta.TransferSyntaxUID)
        want = pydicom.dcmread(sent[uid]).pixel_array
        np.testing.assert_array_equal(got.pixel_array, want, err_msg=sent[uid].name)


def test_colour_jpegls_without_charls_is_a_dead_letter_naming_instance_and_feature(node, storescp, tmp_path):
    if "charls" in os.environ.get("AINODE_FEATURES", ""):
        pytest.skip("binary built with CharLS: colour JPEG-LS is decodable")
    dest = storescp(accept_all=False)
    n = node(config={"peers": [{"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
                     "rules": [forward_all_rule("dest")], "export": {"max_attempts": 1}})
    files = copies([COLOUR], tmp_path / "colour")
    uid = str(pydicom.dcmread(files[0]).SOPInstanceUID)
    dcmsend(n, files)
    job = poll(lambda: next((j for j in n.jobs() if j["state"] == "dead"), None), 30,
               message=lambda: f"no dead letter: {n.jobs()}\n{n.log_tail()}")
    assert uid in job["last_error"] and "--features charls" in job["last_error"], job["last_error"]
    assert n.find_in_spool(uid), "the instance must stay stored as received"
    assert dest.files() == []
