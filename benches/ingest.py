#!/usr/bin/env python3
"""Ingest benchmark: ainode vs dcmtk storescp, storescu vs `ainode send`.

Prints figures; it is not a test (but it exits 1 when instances went missing or
a sender failed, because such figures are worthless).

    python benches/ingest.py                 # full run: 300 CT + 10 X-ray, 2 rounds
    python benches/ingest.py --quick         # 30 CT + 2 X-ray, 1 round
    python benches/ingest.py --json out.json

Data sets are generated once with pydicom + numpy and cached under --work
(default /tmp/ainode-bench/data).  Per round, data set and sender, each receiver
(storescp, then the node) is started fresh on a free loopback port with an empty
output dir, receives the whole set over one association, has its peak RSS
(VmHWM) read, is stopped, and its output is counted.  Logs go to --work/logs.
See benches/README.md.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DATA_VERSION = 1  # bump when the generated content changes
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

NODE_AE = "AINODE"       # embedded default node.ae_title
STORESCP_AE = "STORESCP"
CALLING_AE = "BENCH"

SEND_RE = re.compile(
    r"sent (?P<sent>\d+) of (?P<total>\d+) instances to \S+ in (?P<secs>[\d.]+) s "
    r"\((?P<ips>[\d.]+) instances/s, (?P<mbs>[\d.]+) MB/s, round trip p50 (?P<p50>[\d.]+) ms "
    r"p99 (?P<p99>[\d.]+) ms\); (?P<warn>\d+) warnings, (?P<failed>\d+) failed"
)

# every child process we started and have not reaped yet
LIVE: list[subprocess.Popen] = []


def log(msg: str = "") -> None:
    print(msg, flush=True)


def loud(msg: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n!!! {msg}\n{bar}\n", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# data generation
# ---------------------------------------------------------------------------------

def smooth_field(rng, h: int, w: int, gh: int, gw: int):
    """Bilinear upsampling of a coarse gh x gw random grid to h x w (values ~N(0,1))."""
    import numpy as np

    g = rng.standard_normal((gh, gw))
    y = np.linspace(0, gh - 1, h)
    x = np.linspace(0, gw - 1, w)
    y0 = np.clip(np.floor(y).astype(np.intp), 0, gh - 2)
    x0 = np.clip(np.floor(x).astype(np.intp), 0, gw - 2)
    fy = (y - y0)[:, None]
    fx = (x - x0)[None, :]
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bot = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def _base_dataset(sop_class: str, study: str, series: str, modality: str, n: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.PatientName = "BENCH^INGEST"
    ds.PatientID = "BENCH001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "BENCH1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "ainode-bench"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def gen_ct(out: Path, count: int, seed: int = 1) -> None:
    import numpy as np
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    n = 512
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:n, 0:n]
    body = ((xx - n / 2) / 210.0) ** 2 + ((yy - n / 2) / 170.0) ** 2 <= 1.0
    a = smooth_field(rng, n, n, 17, 17)
    b = smooth_field(rng, n, n, 17, 17)
    c = smooth_field(rng, n, n, 65, 65)
    for i in range(count):
        t = 2 * np.pi * i / max(count, 1)
        tissue = 40 + 60 * (np.cos(t) * a + np.sin(t) * b) + 25 * c
        hu = np.where(body, tissue, -1000.0) + rng.normal(0, 8, (n, n))
        px = np.clip(hu + 1024, -2000, 4000).astype("<i2")
        ds = _base_dataset(CT_STORAGE, study, series, "CT", i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = "BENCH CT"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.0"
        ds.PixelSpacing = ["0.7", "0.7"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = ["-179.2", "-179.2", f"{-i * 1.0:.1f}"]
        ds.SliceLocation = f"{-i * 1.0:.1f}"
        ds.Rows = ds.Columns = n
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = px.tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(out / f"ct{i + 1:05d}.dcm", enforce_file_format=True)


def gen_xray(out: Path, count: int, size: int, seed: int = 2) -> None:
    import numpy as np
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    study = generate_uid()
    for i in range(count):
        series = generate_uid()
        f = smooth_field(rng, size, size, 24, 24) + 0.3 * smooth_field(rng, size, size, 160, 160)
        px = 6000 + 1500 * f + rng.normal(0, 40, (size, size))
        px = np.clip(px, 0, 16383).astype("<u2")
        ds = _base_dataset(DX_PRESENTATION, study, series, "DX", 1)
        ds.SeriesNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.SeriesDescription = "BENCH DX"
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.ImagerPixelSpacing = ["0.1", "0.1"]
        ds.PixelSpacing = ["0.1", "0.1"]
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 14
        ds.HighBit = 13
        ds.PixelRepresentation = 0
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.WindowCenter = "6000"
        ds.WindowWidth = "6000"
        ds.PixelData = px.tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(out / f"dx{i + 1:03d}.dcm", enforce_file_format=True)


def ensure_dataset(work: Path, name: str, count: int, xray_size: int) -> dict:
    """Generate (or reuse) a data set; returns {name, dir, files, count, bytes}."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    key = f"{name}-{count}" if name == "ct" else f"{name}-{count}-{xray_size}"
    d = data / key
    manifest = data / f"{key}.json"  # kept outside the instance dir (senders walk it)
    want = {"version": DATA_VERSION, "name": name, "count": count}
    if name == "xray":
        want["size"] = xray_size
    if manifest.exists() and d.is_dir():
        try:
            have = json.loads(manifest.read_text())
        except ValueError:
            have = {}
        files = sorted(d.glob("*.dcm"))
        if all(have.get(k) == v for k, v in want.items()) and len(files) == count:
            total = sum(f.stat().st_size for f in files)
            if total == have.get("bytes"):
                log(f"data set {key}: cached, {count} instances, {total / 1e6:.1f} MB in {d}")
                return {"name": name, "key": key, "dir": d, "files": files, "count": count, "bytes": total}
    log(f"data set {key}: generating {count} instances in {d} ...")
    t = time.perf_counter()
    tmp = data / f"{key}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir(parents=True)
    if name == "ct":
        gen_ct(tmp, count)
    else:
        gen_xray(tmp, count, xray_size)
    tmp.rename(d)
    files = sorted(d.glob("*.dcm"))
    total = sum(f.stat().st_size for f in files)
    manifest.write_text(json.dumps({**want, "bytes": total}, indent=1))
    log(f"data set {key}: {count} instances, {total / 1e6:.1f} MB, generated in {time.perf_counter() - t:.1f} s")
    return {"name": name, "key": key, "dir": d, "files": files, "count": count, "bytes": total}


def warm_cache(ds: dict) -> None:
    """Read every file once so neither sender pays for cold page cache."""
    for f in ds["files"]:
        with open(f, "rb") as fh:
            while fh.read(1 << 22):
                pass


# ---------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True when some socket is in LISTEN on PORT (checked via /proc, no connection made,
    so the receivers' logs stay free of probe noise)."""
    hexport = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[1].endswith(hexport) and parts[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def vm_hwm_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def stop_proc(p: subprocess.Popen, timeout: float = 15.0) -> int | None:
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    if p in LIVE:
        LIVE.remove(p)
    return p.returncode


def stop_all() -> None:
    for p in list(LIVE):
        try:
            stop_proc(p, timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            try:
                p.kill()
            except Exception:  # noqa: BLE001
                pass


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class Receiver:
    def __init__(self, kind: str, work: Path, label: str, ainode: Path, storescp_args: list[str],
                 dcmtk_env: dict[str, str]):
        self.kind = kind
        self.port = free_port()
        self.dir = work / "recv" / label
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.log_path = work / "logs" / f"{label}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "storescp":
            self.ae = STORESCP_AE
            self.out = self.dir / "out"
            self.out.mkdir()
            cmd = ["storescp", "-aet", STORESCP_AE, "-od", str(self.out), "+xa", *storescp_args, str(self.port)]
            env = {**os.environ, **dcmtk_env}
        else:
            self.ae = NODE_AE
            self.out = self.dir / "data"
            self.out.mkdir()
            cfg = self.dir / "node.toml"
            cfg.write_text(
                "[node]\n"
                f"port = {self.port}\n"
                'bind = "127.0.0.1"\n'
                f'data_dir = "{self.out}"\n'
                "min_free_disk_mb = 100\n"
                "[assembly]\n"
                "quiet_seconds = 3600\n"
                "force_complete_seconds = 7200\n"
                "[http]\n"
                "enabled = false\n"
            )
            cmd = [str(ainode), "serve", "--config", str(cfg)]
            env = {k: v for k, v in os.environ.items() if k != "AINODE_CONFIG"}
            env.setdefault("NO_COLOR", "1")
        self.cmd = cmd
        self.logfh = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logfh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir, env=env)
        LIVE.append(self.proc)
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {self.proc.returncode} before listening; "
                                   f"log {self.log_path}:\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} not listening on {self.port} after 30 s; log {self.log_path}")
            time.sleep(0.02)

    def stop(self) -> tuple[float | None, int | None]:
        """Peak RSS (MiB) read just before stopping, and the exit code."""
        hwm = vm_hwm_mib(self.proc.pid) if self.proc.poll() is None else None
        rc = stop_proc(self.proc)
        self.logfh.close()
        return hwm, rc

    def stored(self) -> int:
        if self.kind == "storescp":
            return sum(1 for p in self.out.rglob("*") if p.is_file())
        spool = self.out / "spool"
        return sum(1 for p in spool.rglob("*.dcm") if p.is_file()) if spool.is_dir() else 0

    def log_stored(self) -> int | None:
        """Sum of `stored=N` on the node's "association released" lines (None for storescp)."""
        if self.kind != "node":
            return None
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        return sum(int(m) for m in re.findall(r"association released.*?\bstored=(\d+)", text))

    def log_problems(self) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        pat = re.compile(r"\b(ERROR|WARN|WARNING)\b|^E: |^W: |panick", re.I)
        return [ln for ln in lines if pat.search(ln)]


def run_sender(sender: str, ds: dict, recv: Receiver, work: Path, label: str, ainode: Path, timeout: float,
               dcmtk_env: dict[str, str]) -> dict:
    logp = work / "logs" / f"{label}.log"
    if sender == "storescu":
        cmd = ["storescu", "-aet", CALLING_AE, "-aec", recv.ae, "127.0.0.1", str(recv.port)]
        files = [str(f) for f in ds["files"]]
        if sum(len(f) + 1 for f in files) < 100_000:
            cmd += files
        else:
            cmd += ["+sd", str(ds["dir"])]
    else:
        cmd = [str(ainode), "send", f"{recv.ae}@127.0.0.1:{recv.port}", str(ds["dir"]), "--calling-ae", CALLING_AE]
    env = {k: v for k, v in os.environ.items() if k != "AINODE_CONFIG"}
    env.setdefault("NO_COLOR", "1")
    if sender == "storescu":
        env.update(dcmtk_env)
    scratch = work / "sender-cwd"  # `ainode send` loads the default config (data_dir ./var)
    scratch.mkdir(parents=True, exist_ok=True)
    with open(logp, "wb") as fh:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, stdin=subprocess.DEVNULL, cwd=scratch, env=env)
        LIVE.append(p)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        finally:
            if p in LIVE:
                LIVE.remove(p)
        wall = time.perf_counter() - t
        fh.write(out)
    text = out.decode(errors="replace")
    res = {"cmd_rc": p.returncode, "wall_s": wall, "sender_log": str(logp)}
    if sender == "ainode-send":
        m = SEND_RE.search(text)
        if m:
            res.update(
                p50_ms=float(m["p50"]), p99_ms=float(m["p99"]), reported_sent=int(m["sent"]),
                reported_failed=int(m["failed"]), reported_warnings=int(m["warn"]),
                reported_s=float(m["secs"]), reported_inst_per_s=float(m["ips"]), reported_mb_per_s=float(m["mbs"]),
            )
        else:
            res["parse_error"] = f"no 'sent ... p50 ... p99' line in output: {text.strip()[-300:]!r}"
    return res


# ---------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------

def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def fmt(v, spec: str = ".1f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def summarize(runs: list[dict], datasets: list[dict], receivers: list[str], senders: list[str]) -> dict:
    summary: dict = {}
    for ds in datasets:
        cells = {}
        for r in receivers:
            for s in senders:
                rs = [x for x in runs if x["dataset"] == ds["name"] and x["receiver"] == r and x["sender"] == s]
                ok = [x for x in rs if x["ok"]]
                if not rs:
                    continue
                c = {
                    "rounds": len(rs), "ok_rounds": len(ok),
                    "inst_per_s": statistics.median([x["inst_per_s"] for x in ok]) if ok else None,
                    "mb_per_s": statistics.median([x["mb_per_s"] for x in ok]) if ok else None,
                    "mb_per_s_min": min(x["mb_per_s"] for x in ok) if ok else None,
                    "mb_per_s_max": max(x["mb_per_s"] for x in ok) if ok else None,
                    "wall_s": statistics.median([x["wall_s"] for x in ok]) if ok else None,
                    "sync_after_s": statistics.median([x["sync_after_s"] for x in ok]) if ok else None,
                    "p50_ms": None, "p99_ms": None,
                    "rss_mib": max((x["rss_mib"] for x in rs if x["rss_mib"] is not None), default=None),
                }
                p50 = [x["p50_ms"] for x in ok if x.get("p50_ms") is not None]
                p99 = [x["p99_ms"] for x in ok if x.get("p99_ms") is not None]
                if p50:
                    c["p50_ms"] = statistics.median(p50)
                    c["p99_ms"] = statistics.median(p99)
                cells[f"{r}|{s}"] = c
        summary[ds["name"]] = cells
    return summary


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def print_tables(summary: dict, datasets: list[dict], receivers: list[str], senders: list[str]) -> dict:
    ratios: dict = {}
    for ds in datasets:
        cells = summary[ds["name"]]
        log()
        log(f"== {ds['name']}: {ds['count']} instances, {ds['bytes'] / 1e6:.1f} MB "
            f"({ds['bytes'] / ds['count'] / 1e6:.2f} MB each); medians over rounds ==")
        hdr = (f"{'receiver':<9} {'sender':<12} {'inst/s':>8} {'MB/s':>7} {'MB/s range':>13} "
               f"{'wall s':>7} {'sync s':>7} {'p50 ms':>7} {'p99 ms':>7} {'peak RSS MiB':>12} {'ok':>5}")
        log(hdr)
        log("-" * len(hdr))
        for r in receivers:
            for s in senders:
                c = cells.get(f"{r}|{s}")
                if not c:
                    continue
                rng = (f"{c['mb_per_s_min']:.1f}-{c['mb_per_s_max']:.1f}" if c["mb_per_s_min"] is not None else "-")
                log(f"{r:<9} {s:<12} {fmt(c['inst_per_s']):>8} {fmt(c['mb_per_s']):>7} {rng:>13} "
                    f"{fmt(c['wall_s'], '.2f'):>7} {fmt(c['sync_after_s'], '.2f'):>7} {fmt(c['p50_ms'], '.2f'):>7} {fmt(c['p99_ms'], '.2f'):>7} "
                    f"{fmt(c['rss_mib']):>12} {c['ok_rounds']}/{c['rounds']:<3}")

        def get(r, s, k):
            return (cells.get(f"{r}|{s}") or {}).get(k)

        rr = {
            "receiver_node_over_storescp_sender_storescu":
                ratio(get("node", "storescu", "mb_per_s"), get("storescp", "storescu", "mb_per_s")),
            "receiver_node_over_storescp_sender_ainode_send":
                ratio(get("node", "ainode-send", "mb_per_s"), get("storescp", "ainode-send", "mb_per_s")),
            "sender_ainode_send_over_storescu_into_node":
                ratio(get("node", "ainode-send", "mb_per_s"), get("node", "storescu", "mb_per_s")),
            "sender_ainode_send_over_storescu_into_storescp":
                ratio(get("storescp", "ainode-send", "mb_per_s"), get("storescp", "storescu", "mb_per_s")),
            "rss_node_over_storescp_sender_storescu":
                ratio(get("node", "storescu", "rss_mib"), get("storescp", "storescu", "rss_mib")),
        }
        ratios[ds["name"]] = rr
        log("(sync s: os.sync() right after the receiver stopped, not in wall s: write-back the receiver left undone)")
        log("ratios (throughput; > 1 means the first is faster):")
        log(f"  receiver  node / storescp        (sender storescu):    {fmt(rr['receiver_node_over_storescp_sender_storescu'], '.2f')}")
        log(f"  receiver  node / storescp        (sender ainode send): {fmt(rr['receiver_node_over_storescp_sender_ainode_send'], '.2f')}")
        log(f"  sender    ainode send / storescu (into the node):      {fmt(rr['sender_ainode_send_over_storescu_into_node'], '.2f')}")
        log(f"  sender    ainode send / storescu (into storescp):      {fmt(rr['sender_ainode_send_over_storescu_into_storescp'], '.2f')}")
        log(f"  peak RSS  node / storescp        (sender storescu):    {fmt(rr['rss_node_over_storescp_sender_storescu'], '.2f')}")
    return ratios


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ainode-bench"), help="work dir (data cache, receiver dirs, logs)")
    ap.add_argument("--ct-count", type=int, default=None, help="CT instances (default 300; 30 with --quick)")
    ap.add_argument("--xray-count", type=int, default=None, help="X-ray instances (default 10; 2 with --quick)")
    ap.add_argument("--xray-size", type=int, default=3900, help="X-ray rows = columns (default 3900, ~30 MB)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny run: 30 CT, 2 X-rays, 1 round")
    ap.add_argument("--datasets", default="ct,xray", help="comma list of ct,xray (default both)")
    ap.add_argument("--senders", default="storescu,ainode-send", help="comma list of storescu,ainode-send")
    ap.add_argument("--ainode", type=Path, default=Path(os.environ.get("AINODE_BIN", REPO / "target/release/ainode")),
                    help="node binary (default $AINODE_BIN or target/release/ainode)")
    ap.add_argument("--storescp-arg", action="append", default=[],
                    help="extra storescp argument, repeatable (e.g. --storescp-arg=--max-pdu --storescp-arg=262144)")
    ap.add_argument("--dcmtk-nagle", action="store_true",
                    help="leave dcmtk's own TCP_NODELAY default (Nagle ON in Debian's dcmtk 3.6.7: storescp then "
                         "stalls ~40 ms per instance on delayed ACK); default: TCP_NODELAY=1 for storescp/storescu, "
                         "like the node, which sets TCP_NODELAY on all its sockets")
    ap.add_argument("--send-timeout", type=float, default=600, help="seconds per sender run")
    ap.add_argument("--json", type=Path, help="write all figures to this file")
    a = ap.parse_args()

    ct_count = a.ct_count if a.ct_count is not None else (30 if a.quick else 300)
    xray_count = a.xray_count if a.xray_count is not None else (2 if a.quick else 10)
    rounds = a.rounds if a.rounds is not None else (1 if a.quick else 2)
    names = [n.strip() for n in a.datasets.split(",") if n.strip()]
    senders = [s.strip() for s in a.senders.split(",") if s.strip()]
    receivers = ["storescp", "node"]
    for n in names:
        if n not in ("ct", "xray"):
            ap.error(f"unknown data set {n!r}")
    for s in senders:
        if s not in ("storescu", "ainode-send"):
            ap.error(f"unknown sender {s!r}")
    ainode = a.ainode.resolve()
    if not (ainode.is_file() and os.access(ainode, os.X_OK)):
        ap.error(f"ainode binary not found at {ainode} (build it: cargo build --release)")
    for t in ("storescp", "storescu"):
        if not shutil.which(t):
            ap.error(f"{t} not found (apt-get install dcmtk)")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    lock = open(work / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        ap.error(f"another benchmark is running with work dir {work}")
    shutil.rmtree(work / "logs", ignore_errors=True)
    (work / "logs").mkdir()

    env_info = {
        "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ainode": tool_version([str(ainode), "--version"]), "ainode_path": str(ainode),
        "storescp": tool_version(["storescp", "--version"]),
        "storescu": tool_version(["storescu", "--version"]),
    }
    dcmtk_env = {} if a.dcmtk_nagle else {"TCP_NODELAY": "1"}
    env_info["dcmtk_env"] = dcmtk_env or "(dcmtk defaults: Nagle on)"
    log(f"ainode ingest benchmark: {env_info['ainode']} ({ainode}); {env_info['storescp']}; "
        f"{env_info['cpus']} CPUs; work dir {work}")
    log(f"dcmtk environment: {env_info['dcmtk_env']}; storescp extra args: {a.storescp_arg or 'none'}")

    datasets = []
    for n in names:
        datasets.append(ensure_dataset(work, n, ct_count if n == "ct" else xray_count, a.xray_size))
    for ds in datasets:
        warm_cache(ds)

    runs: list[dict] = []
    problems: list[str] = []
    t0 = time.perf_counter()
    for rnd in range(1, rounds + 1):
        for ds in datasets:
            for s in senders:
                for r in receivers:  # alternating storescp, node
                    label = f"r{rnd}-{ds['name']}-{r}-{s}"
                    recv = Receiver(r, work, label, ainode, a.storescp_arg, dcmtk_env)
                    try:
                        res = run_sender(s, ds, recv, work, f"{label}-sender", ainode, a.send_timeout, dcmtk_env)
                    finally:
                        rss, rc = recv.stop()
                    # outside the timing: flush dirty pages (storescp does not fsync; the node does
                    # before answering) so one cell's write-back does not land in the next cell's
                    # time, and record how long that took
                    ts = time.perf_counter()
                    os.sync()
                    sync_s = time.perf_counter() - ts
                    stored = recv.stored()
                    log_problems = recv.log_problems()
                    log_stored = recv.log_stored()
                    ok = (stored == ds["count"] and res["cmd_rc"] == 0 and not res.get("reported_failed")
                          and log_stored in (None, ds["count"]))
                    run = {
                        "round": rnd, "dataset": ds["name"], "receiver": r, "sender": s,
                        "instances": ds["count"], "bytes": ds["bytes"],
                        "wall_s": res["wall_s"],
                        "inst_per_s": ds["count"] / res["wall_s"], "mb_per_s": ds["bytes"] / 1e6 / res["wall_s"],
                        "p50_ms": res.get("p50_ms"), "p99_ms": res.get("p99_ms"),
                        "rss_mib": rss, "sync_after_s": sync_s, "receiver_rc": rc, "stored": stored, "node_log_stored": log_stored, "ok": ok,
                        "receiver_log": str(recv.log_path), "receiver_log_problem_lines": len(log_problems),
                        **{k: v for k, v in res.items() if k not in ("wall_s", "p50_ms", "p99_ms")},
                    }
                    runs.append(run)
                    extra = f" p50 {run['p50_ms']:.2f} ms p99 {run['p99_ms']:.2f} ms" if run["p50_ms"] is not None else ""
                    log(f"  round {rnd} {ds['name']:<4} {r:<8} <- {s:<11}: {run['wall_s']:6.2f} s "
                        f"{run['inst_per_s']:7.1f} inst/s {run['mb_per_s']:7.1f} MB/s{extra}, "
                        f"sync {sync_s:.2f} s, peak RSS {fmt(rss)} MiB, stored {stored}/{ds['count']}")
                    if stored != ds["count"]:
                        where = "spool *.dcm" if r == "node" else "output files"
                        msg = (f"INSTANCE COUNT MISMATCH: {label}: {where} = {stored}, expected {ds['count']} "
                               f"(receiver log {recv.log_path}, sender log {res['sender_log']})")
                        loud(msg)
                        problems.append(msg)
                    if log_stored is not None and log_stored != ds["count"]:
                        msg = (f"{label}: node log says stored={log_stored} over its associations, "
                               f"expected {ds['count']} (log {recv.log_path})")
                        loud(msg)
                        problems.append(msg)
                    if res["cmd_rc"] != 0 or res.get("reported_failed"):
                        msg = (f"SENDER FAILED: {label}: exit {res['cmd_rc']}, "
                               f"failed {res.get('reported_failed')} (log {res['sender_log']})")
                        loud(msg)
                        problems.append(msg)
                    if res.get("parse_error"):
                        problems.append(f"{label}: {res['parse_error']}")
                        loud(f"{label}: {res['parse_error']}")
                    if rc not in (0, None) and r == "node":
                        msg = f"node exited with {rc} on SIGTERM ({label}, log {recv.log_path})"
                        problems.append(msg)
                        loud(msg)
                    if r == "node" and log_problems:
                        problems.append(f"{label}: {len(log_problems)} WARN/ERROR lines in {recv.log_path}, "
                                        f"first: {log_problems[0][:300]}")
                    shutil.rmtree(recv.dir, ignore_errors=True)
                    os.sync()
    elapsed = time.perf_counter() - t0

    summary = summarize(runs, datasets, receivers, senders)
    ratios = print_tables(summary, datasets, receivers, senders)
    log()
    log(f"{len(runs)} runs in {elapsed:.0f} s; logs in {work / 'logs'}")
    if problems:
        log("")
        log("PROBLEMS:")
        for p in problems:
            log(f"  - {p}")
    if a.json:
        out = {
            "env": env_info,
            "params": {"ct_count": ct_count, "xray_count": xray_count, "xray_size": a.xray_size, "rounds": rounds,
                       "senders": senders, "receivers": receivers, "storescp_args": a.storescp_arg,
                       "dcmtk_env": dcmtk_env,
                       "work": str(work)},
            "datasets": [{k: (str(v) if isinstance(v, Path) else v) for k, v in d.items() if k != "files"}
                         for d in datasets],
            "runs": runs, "summary": summary, "ratios": ratios, "problems": problems,
            "elapsed_s": elapsed,
        }
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))
        log(f"figures written to {a.json}")
    lost = any(not r["ok"] for r in runs)
    return 1 if lost else 0


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    # also when started in the background by a non-interactive shell, which ignores SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; stopping receivers", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_all()
