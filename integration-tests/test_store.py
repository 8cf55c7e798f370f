"""2. Real files in many transfer syntaxes go into the spool unchanged.

Spool contract: data_dir/spool/<Study>/<Series>/<SOP>.dcm, a Part 10 file whose
data set is exactly what was received, in the negotiated transfer syntax.
"""
import collections

import pydicom
import pytest

from conftest import (
    DCMTK_NORMALISES, ENCAPSULATED_TS_PREFIXES, UNCOMPRESSED_TS, chest_ct_files,
    ct_totalseg_files, dataset_bytes, dataset_diff, pelvis_xray_files, pydicom_ts_files,
    pynetdicom_send_files, run, tool,
)


@pytest.fixture
def real_files(tmp_path):
    files = ct_totalseg_files() + pelvis_xray_files() + chest_ct_files()
    files += pydicom_ts_files(tmp_path / "pydicom-data")
    ts = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    assert len(ts) >= 6, f"need >= 6 transfer syntaxes, have {sorted(ts)}"
    return files


def _spooled(n, path):
    sent = pydicom.dcmread(path)
    stored_path = n.spool_path_for(sent)
    assert stored_path.is_file(), (
        f"{path.name}: not in the spool at {stored_path.relative_to(n.data_dir)}; "
        f"spool holds {len(n.spool_files())} files, e.g. "
        f"{[str(p.relative_to(n.data_dir)) for p in n.spool_files()[:3]]}")
    return sent, stored_path, pydicom.dcmread(stored_path)


def test_dcmsend_real_files_are_stored_unchanged(node, real_files, tmp_path):
    """dcmsend (contexts built from the files, never decompressing). For compressed
    files dcmsend proposes only the file's transfer syntax, so the spool must hold
    that syntax and identical raw values. For uncompressed files dcmsend proposes
    all three uncompressed syntaxes and converts to the one the node picks, so the
    spool must hold one of them and the same values (compared decoded)."""
    n = node()
    report = tmp_path / "dcmsend-report.txt"
    res = run([tool("dcmsend"), "-aec", n.ae, "-aet", "SENDER", "-nh", "-dn",
               "-to", "20", "-ta", "20", "-td", "60", "+crf", report,
               "127.0.0.1", n.port, *real_files], timeout=240)
    assert res.returncode == 0, (
        f"dcmsend failed (rc={res.returncode}):\n{res.stderr[-3000:]}\n"
        f"{report.read_text() if report.exists() else ''}\nnode log:\n{n.log_tail()}")

    problems = []
    seen_ts = collections.Counter()
    for f in real_files:
        sent, stored_path, stored = _spooled(n, f)
        ts_sent = str(sent.file_meta.TransferSyntaxUID)
        ts_stored = str(stored.file_meta.TransferSyntaxUID)
        seen_ts[ts_stored] += 1
        if ts_sent.startswith(ENCAPSULATED_TS_PREFIXES):
            if ts_stored != ts_sent:
                problems.append(f"{f.name}: stored in {ts_stored}, sent in {ts_sent}")
                continue
        elif ts_stored not in UNCOMPRESSED_TS:
            problems.append(f"{f.name}: uncompressed file stored in {ts_stored}")
            continue
        diff = dataset_diff(sent, stored, **DCMTK_NORMALISES)
        if diff:
            problems.append(f"{f.name} ({ts_sent} -> {ts_stored}): {diff[:5]}")
        if stored.SOPInstanceUID != stored_path.stem:
            problems.append(f"{f.name}: file name {stored_path.name} but SOP UID {stored.SOPInstanceUID}")
    assert not problems, "\n".join(problems)
    assert len(n.spool_files()) == len(real_files), (
        f"spool holds {len(n.spool_files())} files, {len(real_files)} were sent")
    n.echo_ok()


def test_each_transfer_syntax_is_kept_bit_exact(node, real_files):
    """One presentation context per (SOP class, transfer syntax) with that single
    syntax, and the data set bytes sent straight from the file (pynetdicom, no
    re-encoding): the spool file must hold the same transfer syntax and exactly the
    same data set bytes."""
    n = node()
    statuses = pynetdicom_send_files(n.port, n.ae, "EXACTSENDER", real_files)
    failed = {p.name: hex(s) if s is not None else None for p, s in statuses.items() if s != 0}
    assert not failed, f"C-STORE not successful: {failed}\nnode log:\n{n.log_tail()}"

    problems = []
    for f in real_files:
        sent, stored_path, stored = _spooled(n, f)
        ts_sent = str(sent.file_meta.TransferSyntaxUID)
        ts_stored = str(stored.file_meta.TransferSyntaxUID)
        if ts_sent != ts_stored:
            problems.append(f"{f.name}: stored in {ts_stored}, negotiated {ts_sent}")
            continue
        diff = dataset_diff(sent, stored, by_value=False)
        if diff:
            problems.append(f"{f.name} ({ts_sent}): {diff[:5]}")
        elif dataset_bytes(f) != dataset_bytes(stored_path):
            a, b = dataset_bytes(f), dataset_bytes(stored_path)
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            problems.append(f"{f.name} ({ts_sent}): data set bytes differ (sent {len(a)}, "
                            f"stored {len(b)} bytes, first difference at {first})")
    assert not problems, "\n".join(problems)
    n.echo_ok()
