"""Node policies beyond the six core scenarios: disk pressure, association limits
and timeouts, concurrency, duplicates, late arrivals, dead letters, retention,
config checking. Real processes only (the node, dcmtk, pynetdicom)."""
import concurrent.futures
import socket
import time

import pydicom

from conftest import (
    assert_exactly_once, forward_all_rule, free_port, make_ct_series, peer, poll,
    run, sop_uid_of, tool,
)


def _dcmsend(n, files, calling="MODALITY"):
    res = run([tool("dcmsend"), "-aec", n.ae, "-aet", calling, "127.0.0.1", n.port, *files], timeout=120)
    assert res.returncode == 0, f"dcmsend failed:\n{res.stderr}\n{n.log_tail()}"


def test_disk_pressure_rejects_transiently(node):
    # A floor far above any real disk: every association is refused, transiently.
    n = node(config={"node": {"min_free_disk_mb": 10**12}})
    res = run([tool("echoscu"), "-aec", n.ae, "-aet", "ECHO", "127.0.0.1", n.port], timeout=30)
    assert res.returncode != 0, "echo must be refused under disk pressure"
    out = res.stdout + res.stderr
    assert "Transient" in out, f"rejection must be transient:\n{out}"
    assert "Local Limit Exceeded" in out or "local-limit-exceeded" in out.lower().replace(" ", "-"), out
    n.wait_log("disk pressure")


def test_association_limit_rejects_transiently(node):
    n = node(config={"node": {"max_associations": 2}})
    from conftest import pynetdicom_ae
    ae = pynetdicom_ae("HOLDER")
    held = [ae.associate("127.0.0.1", n.port, ae_title=n.ae) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        res = run([tool("echoscu"), "-aec", n.ae, "-aet", "ECHO", "127.0.0.1", n.port], timeout=30)
        assert res.returncode != 0 and "Transient" in res.stdout + res.stderr, res.stdout + res.stderr
        n.wait_log("max_associations = 2")
    finally:
        for a in held:
            a.release()
        ae.shutdown()
    # slots free again
    poll(lambda: run([tool("echoscu"), "-aec", n.ae, "127.0.0.1", n.port], timeout=30).returncode == 0, 10,
         message="echo still refused after the held associations were released")


def test_artim_timeout_closes_silent_connections(node):
    n = node(config={"node": {"artim_seconds": 1}})
    s = socket.create_connection(("127.0.0.1", n.port), timeout=10)
    t0 = time.monotonic()
    data = s.recv(100)  # blocks until the node gives up on us
    waited = time.monotonic() - t0
    s.close()
    assert waited < 8, f"silent connection kept open {waited:.1f}s with artim_seconds = 1"
    assert data == b"" or data[0] == 0x07, f"expected close or A-ABORT, got {data!r}"
    n.echo_ok()


def test_32_concurrent_associations(node, tmp_path):
    n = node(config={"node": {"max_associations": 64}})
    per = 3
    groups = [make_ct_series(tmp_path / f"g{i}", per) for i in range(32)]

    def send(files):
        # One dcmsend process per association: 32 pynetdicom associations in one
        # process lose C-STORE responses to pynetdicom's own reactor threads under load.
        res = run([tool("dcmsend"), "-v", "-aec", n.ae, "-aet", "PARALLEL", "127.0.0.1", n.port, *files], timeout=120)
        out = res.stdout + res.stderr
        assert res.returncode == 0, f"dcmsend failed:\n{out}"
        return out.count("Received C-STORE Response (Success)")

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        successes = list(pool.map(send, groups))
    assert successes == [per] * 32, f"not all stored: {successes}\n{n.log_tail()}"
    assert n.log_text().count("association accepted") >= 32
    for files in groups:
        for f in files:
            assert n.find_in_spool(sop_uid_of(f)), f"{f} missing from the spool"


def test_duplicate_instance_is_stored_once(node, tmp_path):
    n = node()
    files = make_ct_series(tmp_path / "s", 2)
    _dcmsend(n, files)
    first = {f: n.find_in_spool(sop_uid_of(f))[0].stat().st_mtime_ns for f in files}
    _dcmsend(n, files)  # same SOP Instance UIDs again: success, stored once
    for f in files:
        found = n.find_in_spool(sop_uid_of(f))
        assert len(found) == 1 and found[0].stat().st_mtime_ns == first[f], f"{f} stored twice or rewritten"
    n.wait_log("duplicate SOP Instance UID")


def test_late_arrival_retriggers_and_sends_only_the_new_instance(node, storescp, tmp_path):
    dest = storescp(ae="DEST")
    n = node(config={"peers": [peer("dest", "DEST", dest.port)], "rules": [forward_all_rule("dest")]})
    files = make_ct_series(tmp_path / "s", 4)
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    _dcmsend(n, files[:3])
    dest.wait_for({sop_uid_of(f) for f in files[:3]}, timeout=30, node=n, settle=0.5)
    poll(lambda: [j for j in n.forward_jobs(study) if j["state"] == "done"], 20, message="first job not done")
    _dcmsend(n, files[3:])
    got = dest.wait_for({sop_uid_of(f) for f in files}, timeout=30, node=n, settle=3)
    assert_exactly_once(got, {sop_uid_of(f) for f in files}, "after a late arrival")
    jobs = poll(lambda: (lambda js: js if len(js) == 2 and all(j["state"] == "done" for j in js) else None)(n.forward_jobs(study)),
                20, message=lambda: f"expected two done forward jobs: {n.forward_jobs(study)}")
    assert sorted(j["instances"] for j in jobs) == [1, 3], jobs


def test_dead_letter_then_manual_retry(node, storescp, tmp_path):
    port = free_port()
    n = node(config={
        "peers": [peer("dest", "DEST", port)],
        "rules": [forward_all_rule("dest")],
        "export": {"max_attempts": 2, "backoff_initial_seconds": 1, "backoff_max_seconds": 1},
    })
    files = make_ct_series(tmp_path / "s", 2)
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    _dcmsend(n, files)
    job = poll(lambda: next((j for j in n.forward_jobs(study) if j["state"] == "dead"), None), 30,
               message=lambda: f"no dead letter: {n.jobs()}")
    assert job["attempts"] == 2 and "connect" in job["last_error"], job
    listing = n.cli("jobs").stdout
    assert "dead" in listing and str(job["id"]) in listing, listing
    dest = storescp(ae="DEST", port=port)
    n.cli("jobs", "retry", str(job["id"]))
    got = dest.wait_for({sop_uid_of(f) for f in files}, timeout=30, node=n, settle=2)
    assert_exactly_once(got, {sop_uid_of(f) for f in files}, "after jobs retry")
    poll(lambda: n.forward_jobs(study)[0]["state"] == "done", 10, message=lambda: n.jobs())


def test_retention_removes_exported_and_unmatched_but_keeps_dead_letters(node, storescp, tmp_path):
    dest = storescp(ae="DEST")
    dead_port = free_port()
    n = node(config={
        "peers": [peer("dest", "DEST", dest.port), peer("down", "DOWN", dead_port)],
        "rules": [
            {"name": "ok", "match": {"study_description": "^fwd$"}, "forward_to": ["dest"]},
            {"name": "bad", "match": {"study_description": "^dead$"}, "forward_to": ["down"]},
        ],
        "export": {"max_attempts": 1},
        "retention": {"keep_seconds": 1, "sweep_seconds": 1},
    })
    fwd = make_ct_series(tmp_path / "fwd", 2)
    unmatched = make_ct_series(tmp_path / "none", 2)
    dead = make_ct_series(tmp_path / "dead", 2)
    for files, desc in ((fwd, "fwd"), (unmatched, "other"), (dead, "dead")):
        for f in files:
            ds = pydicom.dcmread(f)
            ds.StudyDescription = desc
            ds.save_as(f)
        _dcmsend(n, files)
    dest.wait_for({sop_uid_of(f) for f in fwd}, timeout=30, node=n, settle=0)
    gone = lambda files: all(not n.find_in_spool(sop_uid_of(f)) for f in files)  # noqa: E731
    poll(lambda: gone(fwd) and gone(unmatched), 20,
         message=lambda: f"retention did not remove exported/unmatched studies; spool: {n.spool_files()}")
    time.sleep(2.5)
    assert all(n.find_in_spool(sop_uid_of(f)) for f in dead), "a study with a dead letter must be kept"


def test_config_check(node, tmp_path):
    n = node(start=False)
    ok = n.cli("config", "check")
    assert "ae_title" in ok.stdout and "AINODE" in ok.stdout, ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "r"\nmatch = {}\nforward_to = ["nowhere"]\n')
    res = run([n.bin, "config", "check", "--config", bad], timeout=30)
    assert res.returncode == 2, res
    assert "rules[0] (r).forward_to" in res.stderr and "nowhere" in res.stderr, res.stderr


def test_health_metrics_and_status_page(node, tmp_path):
    import requests
    n = node()
    base = f"http://127.0.0.1:{n.config['http']['port']}"
    h = requests.get(f"{base}/health", timeout=10)
    assert h.status_code == 200 and h.json()["status"] == "ok", h.text
    _dcmsend(n, make_ct_series(tmp_path / "s", 3))
    m = requests.get(f"{base}/metrics", timeout=10).text
    assert "ainode_instances_stored_total 3" in m, m
    assert "ainode_associations_accepted_total 1" in m, m
    page = requests.get(f"{base}/", timeout=10)
    assert page.headers["content-type"].startswith("text/html") and "/api/studies" in page.text, page.text[:500]
    status = requests.get(f"{base}/api/status", timeout=10).json()
    assert status["node"]["ae_title"] == "AINODE" and status["counters"]["instances_stored"] == 3, status


def test_health_reports_disk_pressure(node):
    import requests
    n = node(config={"node": {"min_free_disk_mb": 10**12}})
    h = requests.get(f"http://127.0.0.1:{n.config['http']['port']}/health", timeout=10)
    assert h.status_code == 503 and h.json()["status"] == "disk_pressure", h.text
