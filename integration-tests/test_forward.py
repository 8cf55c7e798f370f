"""3. Orthanc (strict PACS) -> node -> storescp: every instance forwarded exactly once.
5. Destination down, then up: retries are visible in `ainode jobs`, then delivery."""
import time

import pydicom

from conftest import (
    DCMTK_NORMALISES, assert_exactly_once, dataset_diff, ct_totalseg_files, forward_all_rule, free_port, make_ct_series,
    peer, poll, run, sop_uid_of, tool,
)


def _wait_jobs_done(n, study_uid: str, timeout: float = 30.0) -> list[dict]:
    def done():
        jobs = n.forward_jobs(study_uid)
        return jobs if jobs and all(j.get("state") == "done" for j in jobs) else None
    return poll(done, timeout, 0.5,
                lambda: f"forward jobs of {study_uid} not all done: {n.forward_jobs(study_uid)}")


def test_orthanc_to_node_forwards_each_instance_once(node, orthanc, storescp):
    files = ct_totalseg_files()
    uids = {sop_uid_of(f) for f in files}
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    dest = storescp(ae="DEST")
    n = node(config={
        "peers": [peer("dest", "DEST", dest.port)],
        "accept": [{"calling_ae": "TESTPACS", "host": "127.0.0.1"}],
        "rules": [forward_all_rule("dest")],
    })
    pacs = orthanc(node=n, aet="TESTPACS")
    answers = pacs.upload_files(files)
    studies = {a["ParentStudy"] for a in answers}
    assert len(studies) == 1, f"the CT series should be one Orthanc study, got {studies}"

    t0 = time.monotonic()
    result = pacs.store_to("ainode", list(studies))
    assert not result or result.get("FailedInstancesCount", 0) == 0, f"Orthanc C-STORE failures: {result}"
    # the node stored all 20 before answering Orthanc
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert n.spool_path_for(ds).is_file(), f"{f.name} not in the spool after Orthanc's store"

    got = dest.wait_for(uids, timeout=60, node=n, settle=4.0)
    assert_exactly_once(got, uids, "forward to DEST")
    jobs = _wait_jobs_done(n, study_uid)
    assert all(j.get("destination") == "dest" for j in jobs), jobs
    print(f"forwarded {len(uids)} instances in {time.monotonic() - t0:.1f}s; jobs: {jobs}")
    # the forwarded objects are the ones uploaded to Orthanc (same data set content)
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in dest.files()}
    for f in files:
        sent = pydicom.dcmread(f)
        recv = pydicom.dcmread(by_uid[str(sent.SOPInstanceUID)])
        diff = dataset_diff(sent, recv, **DCMTK_NORMALISES)
        assert not diff, f"{f.name} changed on the way Orthanc -> node -> storescp: {diff[:5]}"


def test_destination_down_then_up(node, storescp, tmp_path):
    dead_port = free_port()  # nothing listens here yet
    files = make_ct_series(tmp_path / "series", 5)
    uids = {sop_uid_of(f) for f in files}
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    n = node(config={
        "peers": [peer("dest", "LATEDEST", dead_port)],
        "rules": [forward_all_rule("dest")],
    })
    res = run([tool("dcmsend"), "-aec", n.ae, "-aet", "MODALITY", "127.0.0.1", n.port, *files],
              timeout=60)
    assert res.returncode == 0, f"dcmsend failed:\n{res.stderr}\n{n.log_tail()}"

    def failing_job():
        for j in n.forward_jobs(study_uid, "dest"):
            if (j.get("attempts") or 0) > 0 and j.get("last_error"):
                return j
        return None
    job = poll(failing_job, 45, 0.5,
               lambda: f"no forward job with attempts > 0 and a last_error; jobs: {n.jobs()}")
    assert job["state"] in ("retry", "running", "pending"), f"job state after a failed attempt: {job}"

    dest = storescp(ae="LATEDEST", port=dead_port)
    got = dest.wait_for(uids, timeout=60, node=n, settle=0.5)
    _wait_jobs_done(n, study_uid, timeout=30)
    time.sleep(3)  # late duplicates?
    got = dest.received()
    assert_exactly_once(got, uids, "delivery after the destination came up")
