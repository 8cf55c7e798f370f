"""4. kill -9 in the middle of an association: an instance acknowledged with
success is durable, and after a restart and a resend of the rest the destination
gets every instance exactly once."""
import threading

import pydicom
from pydicom.uid import generate_uid

from conftest import (
    assert_exactly_once, dataset_diff, forward_all_rule, make_ct_series, peer, pynetdicom_ae,
)

N_INSTANCES = 200
KILL_AFTER = 60


def send_all(n, paths, calling: str, on_response=None) -> dict[str, int | None]:
    """One association, one C-STORE per file in order; {SOP UID: status or None}."""
    ae = pynetdicom_ae(calling)
    # the C-STORE in flight when the node dies gets no answer: do not wait long for it
    ae.dimse_timeout = 5
    statuses: dict[str, int | None] = {}
    try:
        assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae)
        assert assoc.is_established, f"association not established:\n{n.log_tail()}"
        for ds in paths:
            uid = str(ds.SOPInstanceUID)
            status = None
            if assoc.is_established:
                try:
                    rsp = assoc.send_c_store(ds)
                    if rsp is not None and "Status" in rsp:
                        status = int(rsp.Status)
                except Exception:  # connection gone under us
                    status = None
            statuses[uid] = status
            if status is not None and on_response is not None:
                on_response()
        if assoc.is_established:
            assoc.release()
    finally:
        ae.shutdown()
    return statuses


def test_kill9_mid_association_loses_nothing_and_duplicates_nothing(node, storescp, tmp_path):
    dest = storescp(ae="DEST")
    # a quiet period longer than kill + restart + resend, so that the study is
    # complete only after the resend (late arrivals are not what this test is about)
    n = node(config={
        "assembly": {"quiet_seconds": 4},
        "peers": [peer("dest", "DEST", dest.port)],
        "rules": [forward_all_rule("dest")],
    })
    study = generate_uid()
    paths = make_ct_series(tmp_path / "series", N_INSTANCES, study_uid=study)
    datasets = [pydicom.dcmread(p) for p in paths]
    by_uid = {str(ds.SOPInstanceUID): (p, ds) for p, ds in zip(paths, datasets)}

    responses = 0
    lock = threading.Lock()
    reached = threading.Event()
    sending_done = threading.Event()

    def on_response():
        nonlocal responses
        with lock:
            responses += 1
            if responses >= KILL_AFTER:
                reached.set()

    killed_at = {}

    def killer():
        # wait for the 60th response (or the end of the sending), then SIGKILL while
        # the sender keeps going
        while not reached.wait(0.001):
            if sending_done.is_set():
                return
        killed_at["responses"] = responses
        n.kill9()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        statuses = send_all(n, datasets, "CRASHTEST", on_response)
    finally:
        sending_done.set()
        t.join(timeout=20)

    ok = [u for u, s in statuses.items() if s == 0x0000]
    not_ok = [u for u, s in statuses.items() if s != 0x0000]
    print(f"killed after {killed_at.get('responses')} responses; {len(ok)} successes, "
          f"{len(not_ok)} to resend")
    assert "responses" in killed_at, "the node was never killed (fewer than 60 responses?)"
    assert len(ok) >= KILL_AFTER - 1, f"only {len(ok)} successes before the kill"
    assert not_ok, "every C-STORE succeeded although the node was killed in the middle"
    failures = {u: s for u, s in statuses.items() if s not in (None, 0x0000)}
    assert not failures, f"C-STORE failure statuses before the kill: {failures}"

    n.restart()

    # durability: every acknowledged instance is in the spool, intact
    missing, broken = [], []
    for u in ok:
        p, ds = by_uid[u]
        sp = n.spool_path(study, ds.SeriesInstanceUID, u)
        if not sp.is_file():
            missing.append(u)
            continue
        try:
            diff = dataset_diff(ds, pydicom.dcmread(sp))
        except Exception as e:
            diff = [f"unreadable: {e}"]
        if diff:
            broken.append((u, diff[:3]))
    assert not missing, (f"{len(missing)} instances acknowledged with success are not in the "
                         f"spool after kill -9 + restart, e.g. {missing[:3]}")
    assert not broken, f"acknowledged instances damaged in the spool: {broken[:3]}"

    # resend what did not get a success, on a new association
    statuses2 = send_all(n, [by_uid[u][1] for u in not_ok], "CRASHTEST")
    bad = {u: s for u, s in statuses2.items() if s != 0x0000}
    assert not bad, f"resend after restart not successful: {list(bad.items())[:5]}\n{n.log_tail()}"

    got = dest.wait_for(by_uid.keys(), timeout=90, node=n, settle=4.0)
    assert_exactly_once(got, by_uid.keys(), "forward after kill -9 and restart")
    n.echo_ok()
