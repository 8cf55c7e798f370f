"""The node's face: the JSON API under /api/ and the status page at /, the page
driven in a real browser (Debian's chromium + chromedriver through selenium; no
browser download). The node receives real DICOM (dicom-samples/ct-totalseg) from
dcmtk; nothing is mocked.

Artifacts: target/test-artifacts/status-page-*.png (screenshots of the page).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
import requests

from conftest import REPO, SAMPLES, free_port, peer, poll, run, sop_uid_of, tool

ARTIFACTS = REPO / "target" / "test-artifacts"


def ct_files() -> list[Path]:
    d = SAMPLES / "ct-totalseg"
    files = sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []
    if not files:
        pytest.skip(f"shared sample data not found at {d} (set AINODE_SHARED)")
    return files


def dcmsend(n, files, calling="MODALITY"):
    res = run([tool("dcmsend"), "-aec", n.ae, "-aet", calling, "127.0.0.1", n.port, *files], timeout=120)
    assert res.returncode == 0, f"dcmsend failed:\n{res.stderr}\n{n.log_tail()}"


def dead_letter_node(node, tmp_path, dest_port):
    """A node that forwards CT to a peer that is down (one attempt: a dead
    letter at once) and analyses CT with lung-lesions weights that do not exist
    (a dead letter too, and a pipeline whose weights failed to load)."""
    return node(config={
        "peers": [peer("dest", "DEST", dest_port)],
        "rules": [
            {"name": "ct-forward", "match": {"modality": ["CT"]}, "forward_to": ["dest"]},
            {"name": "ct-lung", "match": {"modality": ["CT"]}, "analyze": "lung-lesions"},
        ],
        "pipelines": {"lung-lesions": {"weights": str(tmp_path / "no-weights" / "lung-lesions")}},
        "export": {"max_attempts": 1},
    })


def api(n, path, **kw):
    return requests.get(f"http://127.0.0.1:{n.config['http']['port']}{path}", timeout=10,
                        headers={"Connection": "close"}, **kw)


def study_of(n, study_uid):
    r = api(n, f"/api/studies/{study_uid}")
    return r.json() if r.status_code == 200 else None


def test_api_reports_studies_jobs_results_and_guards_retry(node, tmp_path):
    files = ct_files()
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    n = dead_letter_node(node, tmp_path, free_port())
    dcmsend(n, files)
    s = poll(lambda: (lambda s: s if s and s["status"] == "failed" and len(s["jobs"]) == 2
                      and all(j["state"] == "dead" for j in s["jobs"]) else None)(study_of(n, study_uid)),
             30, message=lambda: f"study not failed with two dead letters: {study_of(n, study_uid)}\n{n.log_tail()}")
    assert s["instances"] == len(files) and s["modalities"] == ["CT"], s
    assert s["detail"] == "2 dead letters", s
    assert {j["kind"] for j in s["jobs"]} == {"forward", "analyze"}, s["jobs"]
    analyze = next(j for j in s["jobs"] if j["kind"] == "analyze")
    assert "no trained weights" in analyze["last_error"], analyze

    page = api(n, "/api/studies?limit=1").json()
    assert page["limit"] == 1 and page["offset"] == 0 and page["more"] is False, page
    assert [x["study_uid"] for x in page["studies"]] == [study_uid], page
    assert api(n, "/api/studies?limit=1&offset=1").json()["studies"] == []
    assert api(n, "/api/studies/1.2.3.4.5").status_code == 404

    status = api(n, "/api/status").json()
    assert status["counters"]["instances_stored"] == len(files), status
    assert status["disk"]["ok"] is True and status["disk"]["min_free_mb"] == 1024, status["disk"]
    lung = next(p for p in status["pipelines"] if p["name"] == "lung-lesions")
    assert lung["weights"] == "failed" and lung["rules"] == ["ct-lung"] and "no trained weights" in lung["error"], lung
    assert {(j["kind"], j["state"], j["count"]) for j in status["jobs"]} == {("forward", "dead", 1), ("analyze", "dead", 1)}

    dead = api(n, "/api/jobs?state=dead").json()
    assert sorted(j["kind"] for j in dead["jobs"]) == ["analyze", "forward"], dead
    assert api(n, "/api/jobs?state=bogus").status_code == 400

    base = f"http://127.0.0.1:{n.config['http']['port']}"
    fwd = next(j for j in s["jobs"] if j["kind"] == "forward")
    # another origin acting through the operator's browser is refused
    r = requests.post(f"{base}/api/jobs/{fwd['id']}/retry", timeout=10,
                      headers={"Origin": "http://evil.example", "Connection": "close"})
    assert r.status_code == 403 and "origin" in r.json()["error"], r.text
    r = requests.post(f"{base}/api/jobs/{fwd['id']}/retry", timeout=10,
                      headers={"Sec-Fetch-Site": "cross-site", "Connection": "close"})
    assert r.status_code == 403, r.text
    assert requests.post(f"{base}/api/jobs/999999/retry", timeout=10, headers={"Connection": "close"}).status_code == 404
    r = requests.post(f"{base}/api/jobs/{fwd['id']}/retry", timeout=10,
                      headers={"Origin": base, "Connection": "close"})
    assert r.status_code == 200 and r.json()["state"] == "pending", r.text
    # the peer is still down: one attempt, dead again
    poll(lambda: next(j for j in study_of(n, study_uid)["jobs"] if j["id"] == fwd["id"])["state"] == "dead", 20,
         message=lambda: study_of(n, study_uid))

    listing = n.cli("jobs").stdout
    assert "RECENT STUDIES" in listing and study_uid in listing and "failed" in listing, listing


def test_unmatched_study_says_so_on_api_and_in_jobs(node, tmp_path):
    files = ct_files()[:2]
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    n = node(config={"peers": [peer("p", "P", free_port())],
                     "rules": [{"name": "mr-only", "match": {"modality": ["MR"]}, "forward_to": ["p"]}]})
    dcmsend(n, files)
    s = poll(lambda: (lambda s: s if s and s["status"] == "complete" else None)(study_of(n, study_uid)), 20,
             message=lambda: study_of(n, study_uid))
    assert s["detail"] == "no rule matched" and s["jobs"] == [], s
    assert "no rule matched" in n.cli("jobs").stdout


def chrome():
    """Headless Debian chromium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are needed (./test.sh installs Debian's chromium and chromium-driver)",
                    pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_status_page_in_a_browser_retries_a_dead_letter(node, storescp, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    files = ct_files()
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    study_uid = str(ds.StudyInstanceUID)
    dest_port = free_port()
    n = dead_letter_node(node, tmp_path, dest_port)
    dcmsend(n, files)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser = chrome()
    try:
        browser.get(f"http://127.0.0.1:{n.config['http']['port']}/")
        wait = WebDriverWait(browser, 30, poll_frequency=0.25)
        row_css = f'tr.study[data-study-uid="{study_uid}"]'
        # the study row appears with its state once the quiet period is over
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f"{row_css} .st-failed"))
        row = browser.find_element(By.CSS_SELECTOR, row_css)
        assert row.find_element(By.CSS_SELECTOR, ".modality").text == "CT"
        assert row.find_element(By.CSS_SELECTOR, ".instances").text == str(len(files))
        assert row.find_element(By.CSS_SELECTOR, ".patient").text == str(ds.get("PatientID", ""))
        weights = browser.find_element(By.CSS_SELECTOR, 'tr[data-pipeline="lung-lesions"] .weights').text
        assert weights == "failed", weights
        browser.save_screenshot(str(ARTIFACTS / "status-page-dead-letters.png"))

        # the destination comes up; the operator retries the forward from the page
        dest = storescp(ae="DEST", port=dest_port)
        fwd_id = next(j["id"] for j in study_of(n, study_uid)["jobs"] if j["kind"] == "forward")
        button = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f'#dead button.retry[data-job-id="{fwd_id}"]')))
        button.click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), f"job {fwd_id} queued again"))
        got = dest.wait_for({sop_uid_of(f) for f in files}, timeout=60, node=n, settle=1)
        assert set(got) == {sop_uid_of(f) for f in files}
        state_css = f'{row_css} tr.job[data-job-id="{fwd_id}"] .job-state'
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, state_css), "done"))
        assert not browser.find_elements(By.CSS_SELECTOR, f'#dead tr[data-job-id="{fwd_id}"]')
        browser.save_screenshot(str(ARTIFACTS / "status-page-after-retry.png"))
    except Exception:
        browser.save_screenshot(str(ARTIFACTS / "status-page-failure.png"))
        raise
    finally:
        browser.quit()
