#!/usr/bin/env python3
"""C-ECHO latency of the node while an analysis holds every core (figures,
not a test).

Starts the node on a free loopback port with a hip-tha rule, measures C-ECHO
round trips (association + echo + release, as `ainode echo` reports them)
while idle, then sends 2000 x 2500 synthetic pelvis radiographs and measures
again while the analyses run. Done once with the compute threads niced
(`pipelines.nice`, default 10) and once at normal priority (`nice = 0`), so
the effect of the setting shows in the same run.

The analysis needs weights; latency does not depend on what they learned, so
`--make-weights` trains a one-epoch hip-tha on four synthetic cases for the
benchmark (`WORK/weights/hip-tha.*`, never shipped).

    python3 benches/echo_latency.py --make-weights
    python3 benches/echo_latency.py --weights weights/hip-tha --images 3
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ainode_bin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_ms(port: int) -> float | None:
    r = subprocess.run([ainode_bin(), "echo", f"AINODE@127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    m = re.search(r"success in ([0-9.]+) ms", r.stdout)
    return float(m.group(1)) if m else None


def summary(v: list[float]) -> dict:
    v = sorted(v)
    return {"n": len(v), "p50": statistics.median(v), "p99": v[min(len(v) - 1, int(0.99 * len(v)))], "max": v[-1]}


def make_weights(work: Path) -> Path:
    data = work / "train-data"
    for split, seed, count in (("train", 0, 4), ("test", 1, 2)):
        if not (data / split).is_dir():
            subprocess.run([ainode_bin(), "data", "synth", "hip-tha", "--out", data / split, "--count", str(count), "--seed", str(seed)], check=True, capture_output=True)
    prefix = work / "weights" / "hip-tha"
    if not Path(f"{prefix}.safetensors").is_file():
        subprocess.run([ainode_bin(), "train", "hip-tha", "--data", data, "--out", prefix, "--epochs", "1", "--batch", "2", "--device", "cpu", "--run-dir", work / "train-run"],
                       check=True, capture_output=True)
    return prefix


def analyses_running(config: Path) -> tuple[int, int]:
    """(analyze jobs pending or running, analyze jobs done or dead)."""
    r = subprocess.run([ainode_bin(), "jobs", "--json", "--config", config], capture_output=True, text=True)
    if r.returncode != 0:
        return (1, 0)
    jobs = [j for j in json.loads(r.stdout) if j.get("kind") == "analyze"]
    open_ = sum(1 for j in jobs if j.get("state") in ("pending", "running", "retry"))
    return open_, len(jobs) - open_


def run(args, nice: int, images: Path, weights: Path) -> dict:
    port = free_port()
    node_dir = args.work / f"node-nice{nice}"
    subprocess.run(["rm", "-rf", node_dir])
    config = args.work / f"node-nice{nice}.toml"
    config.write_text(f"""
[node]
port = {port}
bind = "127.0.0.1"
data_dir = "{node_dir}"
[http]
enabled = false
[assembly]
quiet_seconds = 1
[pipelines]
nice = {nice}
[pipelines.hip-tha]
weights = "{weights}"
[[rules]]
name = "hip"
match = {{ modality = ["DX", "CR"] }}
analyze = "hip-tha"
""")
    log = open(args.work / f"node-nice{nice}.log", "w")
    node = subprocess.Popen([ainode_bin(), "serve", "--config", config], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if echo_ms(port) is not None:
                break
            time.sleep(0.1)
        idle = [x for x in (echo_ms(port) for _ in range(args.echoes)) if x is not None]
        subprocess.run([ainode_bin(), "send", f"AINODE@127.0.0.1:{port}", images], check=True, capture_output=True)
        # wait until the analyses start, then echo until they are all done
        busy, t0 = [], time.time()
        started = False
        while time.time() - t0 < args.timeout:
            open_, finished = analyses_running(config)
            if open_ == 0 and finished > 0:
                break
            if open_ > 0:
                started = True
                ms = echo_ms(port)
                if ms is not None:
                    busy.append(ms)
            time.sleep(args.interval)
        if not started:
            sys.exit(f"no analysis ran (see {log.name})")
        return {"nice": nice, "idle": summary(idle), "during_analysis": summary(busy) if busy else None, "analysis_s": round(time.time() - t0, 1)}
    finally:
        node.terminate()
        node.wait(timeout=30)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="hip-tha weights prefix (any trained weights)")
    ap.add_argument("--make-weights", action="store_true", help="train throwaway one-epoch weights for the benchmark")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--echoes", type=int, default=20, help="idle echoes")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between echoes during the analysis")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ainode-bench/echo"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    weights = make_weights(args.work) if args.make_weights else args.weights
    if weights is None:
        sys.exit("--weights PREFIX or --make-weights")
    images = args.work / f"images-{args.images}"
    if not images.is_dir():
        settings = args.work / "settings.json"
        settings.write_text(json.dumps({"spacing_mm": [0.14, 0.14], "field_mm": [[350.0, 350.0], [280.0, 280.0]], "negative_share": 0.0}))
        subprocess.run([ainode_bin(), "data", "synth", "hip-tha", "--out", images, "--count", str(args.images), "--seed", "98", "--settings", settings],
                       check=True, capture_output=True)
    results = [run(args, nice, images, weights) for nice in (10, 0)]
    print("| compute threads | idle p50 / p99 / max ms | during analysis p50 / p99 / max ms (n) | analysis wall s |")
    print("| --- | --- | --- | --- |")
    for r in results:
        i, b = r["idle"], r["during_analysis"]
        busy = f"{b['p50']:.1f} / {b['p99']:.1f} / {b['max']:.1f} ({b['n']})" if b else "-"
        print(f"| nice {r['nice']} | {i['p50']:.1f} / {i['p99']:.1f} / {i['max']:.1f} | {busy} | {r['analysis_s']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
