"""Self-checks of the test harness itself (no ainode needed): the peers start, the
data helpers find their files, the comparator and the raw PDU builder work against
real dcmtk. If these fail, the node tests cannot be trusted."""
import collections
import tomllib

import pydicom
from pydicom.uid import generate_uid

import rawpdu
from conftest import (
    chest_ct_files, ct_totalseg_files, dataset_diff, free_port, make_ct_series,
    pelvis_xray_files, pydicom_ts_files, run, sop_uid_of, to_toml, tool,
    assert_exactly_once, PYDICOM_TS_FILES, ENCAPSULATED_TS_PREFIXES,
    pynetdicom_send_files, transfer_syntax_of, DCMTK_NORMALISES,
)


def test_toml_writer_round_trips():
    cfg = {
        "node": {"ae_title": "AINODE", "port": 1234, "bind": "127.0.0.1"},
        "assembly": {"quiet_seconds": 1},
        "peers": [{"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": 4242}],
        "accept": [],
        "rules": [{"name": "r", "match": {}, "forward_to": ["dest"]},
                  {"name": "ct", "match": {"modality": ["CT"], "series_description": "^A.*"},
                   "forward_to": ["dest"]}],
    }
    parsed = tomllib.loads(to_toml(cfg))
    expected = {k: v for k, v in cfg.items() if v != []}
    assert parsed == expected


def test_data_helpers_find_files(tmp_path):
    assert len(ct_totalseg_files()) == 20
    assert len(pelvis_xray_files()) == 10
    assert len(chest_ct_files()) == 2
    files = pydicom_ts_files(tmp_path)
    ts = collections.Counter(str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                             for f in files)
    assert len(ts) >= 6, ts
    uids = [sop_uid_of(f) for f in files]
    assert len(set(uids)) == len(uids), "pydicom_ts_files must give unique SOP Instance UIDs"
    # the rewritten copies keep pixel data bytes of the originals
    from pydicom.data import get_testdata_file
    for (name, _), f in zip(PYDICOM_TS_FILES, files):
        orig = pydicom.dcmread(get_testdata_file(name))
        copy = pydicom.dcmread(f)
        diff = [d for d in dataset_diff(orig, copy) if "(0008,0018)" not in d]
        assert not diff, (name, diff)


def test_synthetic_ct_series_is_valid(tmp_path):
    study = generate_uid()
    files = make_ct_series(tmp_path, 3, study_uid=study)
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == study
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.pixel_array.shape == (64, 64)
    res = run([tool("dciodvfy"), files[0]], timeout=60)
    errors = [l for l in res.stderr.splitlines() if l.startswith("Error")]
    assert not errors, res.stderr


def test_storescp_fixture_receives_dcmsend_and_comparator_agrees(tmp_path, storescp):
    scp = storescp(ae="HARNESS")
    files = make_ct_series(tmp_path / "ct", 3) + pydicom_ts_files(tmp_path / "ts")
    res = run([tool("dcmsend"), "-aec", "HARNESS", "-aet", "SENDER", "-nh", "-dn",
               "127.0.0.1", scp.port, *files], timeout=120)
    assert res.returncode == 0, res.stderr
    uids = {sop_uid_of(f): f for f in files}
    got = scp.wait_for(uids, timeout=30, settle=0.5)
    assert_exactly_once(got, uids, "storescp")
    # what dcmtk received equals what was sent, element by element
    by_uid = {}
    for f in scp.files():
        ds = pydicom.dcmread(f)
        by_uid[str(ds.SOPInstanceUID)] = ds
    for uid, f in uids.items():
        sent = pydicom.dcmread(f)
        recv = by_uid[uid]
        if str(sent.file_meta.TransferSyntaxUID).startswith(ENCAPSULATED_TS_PREFIXES):
            assert sent.file_meta.TransferSyntaxUID == recv.file_meta.TransferSyntaxUID, f
        diff = dataset_diff(sent, recv, **DCMTK_NORMALISES)  # by value where dcmsend converted
        assert not diff, (f, diff)
    # a second delivery of the same file shows as a second file (+uf)
    run([tool("dcmsend"), "-aec", "HARNESS", "-aet", "SENDER", "127.0.0.1", scp.port, files[0]],
        timeout=60, check=True)
    got = scp.wait_for([sop_uid_of(files[0])], timeout=10, settle=0.5)
    assert got[sop_uid_of(files[0])] == 2


def test_pynetdicom_sender_keeps_each_transfer_syntax(tmp_path, storescp):
    scp = storescp(ae="HARNESS2")
    files = make_ct_series(tmp_path / "ct", 2) + pydicom_ts_files(tmp_path / "ts")
    statuses = pynetdicom_send_files(scp.port, "HARNESS2", "SENDER", files)
    assert set(statuses.values()) == {0}, statuses
    uids = {sop_uid_of(f): f for f in files}
    got = scp.wait_for(uids, timeout=30, settle=0.2)
    assert_exactly_once(got, uids, "storescp")
    for r in scp.files():
        recv = pydicom.dcmread(r)
        sent_path = uids[str(recv.SOPInstanceUID)]
        assert transfer_syntax_of(sent_path) == str(recv.file_meta.TransferSyntaxUID), sent_path
        # storescp re-encodes what it received (drops trailing padding)
        diff = dataset_diff(pydicom.dcmread(sent_path), recv, by_value=False, **DCMTK_NORMALISES)
        assert not diff, (sent_path, diff)


def test_orthanc_fixture_upload_find_and_strict_ae(tmp_path, orthanc, storescp):
    scp = storescp(ae="SCPDEST")
    pacs = orthanc(modalities={"dest": ["SCPDEST", "127.0.0.1", scp.port]})
    files = make_ct_series(tmp_path, 2)
    answers = pacs.upload_files(files)
    assert {a["Status"] for a in answers} <= {"Success", "AlreadyStored"}
    study = {a["ParentStudy"] for a in answers}
    assert len(study) == 1
    found = pacs.find_instances({"Modality": "CT"})
    assert len(found) == 2
    meta = pacs.metadata(found[0])
    assert meta, "metadata?expand returned nothing"
    ds = pacs.dataset(found[0])
    assert ds.Modality == "CT"
    # Orthanc -> storescp through the same store helper the node test uses; the
    # real CT series keeps its data sets on that way (the node test relies on it)
    real = ct_totalseg_files()[:4]
    real_study = {a["ParentStudy"] for a in pacs.upload_files(real)}
    pacs.store_to("dest", list(study) + list(real_study))
    sent = {sop_uid_of(f): f for f in files + real}
    got = scp.wait_for(sent, timeout=30, settle=0.5)
    assert_exactly_once(got, sent, "Orthanc -> storescp")
    for r in scp.files():
        recv = pydicom.dcmread(r)
        orig = pydicom.dcmread(sent[str(recv.SOPInstanceUID)])
        diff = dataset_diff(orig, recv, **DCMTK_NORMALISES)
        assert not diff, diff
    # strict AE: the right called AE from a known modality is answered, a wrong one
    # is rejected and echoscu exits non-zero (the node echo test relies on this)
    echo = tool("echoscu")
    ok = run([echo, "-aec", pacs.aet, "-aet", "SCPDEST", "127.0.0.1", pacs.dicom_port], timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = run([echo, "-aec", "WRONG", "-aet", "SCPDEST", "127.0.0.1", pacs.dicom_port], timeout=30)
    assert bad.returncode != 0
    unknown = run([echo, "-aec", pacs.aet, "-aet", "STRANGER", "127.0.0.1", pacs.dicom_port], timeout=30)
    assert unknown.returncode != 0


def test_raw_pdus_against_storescp(storescp):
    scp = storescp(ae="RAWSCP")
    with rawpdu.RawClient("127.0.0.1", scp.port) as c:
        kind, info = c.associate("RAWSCP", "RAWTEST", [
            (1, rawpdu.CT_IMAGE_STORAGE, [rawpdu.IMPLICIT_LE]),
            (3, rawpdu.VERIFICATION, [rawpdu.IMPLICIT_LE]),
        ])
        assert kind == "AC", (kind, info)
        assert info["contexts"][1] == (0, rawpdu.IMPLICIT_LE)
        assert info["contexts"][3][0] == 0
        assert info["max_pdu"] and info["max_pdu"] > 0
        # C-ECHO
        c.send(rawpdu.p_data(rawpdu.pdv(3, rawpdu.c_echo_rq(1), command=True, last=True)))
        ptype, body = c.recv_pdu()
        assert ptype == rawpdu.P_DATA_TF
        (cid, ctrl, frag), = rawpdu.parse_pdvs(body)
        assert cid == 3 and ctrl == 0x03
        assert rawpdu.command_status(frag) == 0x0000
        # a complete, valid C-STORE built by the same code as the truncated one
        uid, study, series = generate_uid(), generate_uid(), generate_uid()
        full = rawpdu.truncated_ct_dataset(uid, study, series)
        full = full[: -(8 + 64)] + rawpdu.element(0x7FE0, 0x0010, b"\x00\x01" * 4096)
        c.send(rawpdu.p_data(rawpdu.pdv(1, rawpdu.c_store_rq(2, rawpdu.CT_IMAGE_STORAGE, uid),
                                        command=True, last=True)))
        c.send(rawpdu.p_data(rawpdu.pdv(1, full, command=False, last=True)))
        ptype, body = c.recv_pdu()
        assert ptype == rawpdu.P_DATA_TF
        frag = rawpdu.parse_pdvs(body)[0][2]
        assert rawpdu.command_status(frag) == 0x0000
        assert c.release() == "released"
    got = scp.wait_for([uid], timeout=10, settle=0.2)
    assert got[uid] == 1
    # an unsupported abstract syntax: storescp (promiscuous) may accept it, but the
    # answer must parse; garbage gets the connection closed or aborted
    with rawpdu.RawClient("127.0.0.1", scp.port) as c:
        kind, info = c.associate("RAWSCP", "RAWTEST", [(1, "1.2.3.4.5.6.7", [rawpdu.IMPLICIT_LE])])
        assert kind in ("AC", "RJ"), kind
        if kind == "AC":
            assert 1 in info["contexts"]
            c.release()
    # the truncated data set and the oversized PDU make dcmtk abort: the node tests'
    # expectations are met by an existing implementation
    with rawpdu.RawClient("127.0.0.1", scp.port) as c:
        kind, info = c.associate("RAWSCP", "RAWTEST", [(1, rawpdu.CT_IMAGE_STORAGE, [rawpdu.IMPLICIT_LE])])
        assert kind == "AC"
        outcome, status = rawpdu.store_truncated(c, 1, generate_uid(), generate_uid(), generate_uid())
        assert outcome in ("abort", "closed") or status not in (None, 0), (outcome, status)
    with rawpdu.RawClient("127.0.0.1", scp.port) as c:
        kind, info = c.associate("RAWSCP", "RAWTEST", [(1, rawpdu.CT_IMAGE_STORAGE, [rawpdu.IMPLICIT_LE])])
        assert kind == "AC"
        rawpdu.send_oversized_p_data(c, info["max_pdu"])
        assert c.wait_end(10) in ("abort", "closed")
    with rawpdu.RawClient("127.0.0.1", scp.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + bytes(range(256)) * 4)
        assert c.wait_end(15) in ("closed", "abort", "reject")


def test_free_port_is_unique():
    ports = {free_port() for _ in range(50)}
    assert len(ports) == 50


def test_dataset_diff_is_not_blind(tmp_path):
    from pydicom.data import get_testdata_file
    src = get_testdata_file("CT_small.dcm")
    a = pydicom.dcmread(src)
    assert dataset_diff(a, pydicom.dcmread(src)) == []
    b = pydicom.dcmread(src)
    b.PatientName = "Someone^Else"
    assert any("(0010,0010)" in d for d in dataset_diff(a, b))
    c = pydicom.dcmread(src)
    px = bytearray(c.PixelData)
    px[100] ^= 0xFF
    c.PixelData = bytes(px)
    assert any("(7FE0,0010)" in d for d in dataset_diff(a, c))
    # nested sequence items are compared too
    d = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    e = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    e.BeamSequence[0].BeamName = "CHANGED"
    assert any("[0]" in x for x in dataset_diff(d, e))
    # by value: big endian vs its little endian conversion are equal, a changed
    # pixel is not
    be = pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    le = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert dataset_diff(be, le, ignore_tags=(0xFFFCFFFC,)) == []
    arr = le.pixel_array.copy()
    arr[0, 0] += 1
    le.PixelData = arr.tobytes()
    assert any("pixel" in x for x in dataset_diff(be, le, ignore_tags=(0xFFFCFFFC,)))
