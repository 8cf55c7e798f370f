#!/usr/bin/env python3
"""hip-tha inference benchmark on CPU: one 2000 x 2500 AP pelvis radiograph.

Prints figures; it is not a test. Generates synthetic radiographs of exactly
2000 rows x 2500 columns (0.14 mm Imager Pixel Spacing) with
`ainode data synth hip-tha`, then runs `ainode run --pipeline hip-tha --device cpu`
on them ROUNDS times. Reports per image the pipeline's own step times (decode,
pre-processing, network, total), the wall time of the whole command (process
start and weight loading included) and the peak RSS of the command.

Peer: the same network with the same weights in onnxruntime (CPU), when the
`onnx` and `onnxruntime` Python packages are importable (`--peer-python` names
an interpreter that has them); the ratio of network times is printed.

    python benches/hip_tha.py                  # 3 images, 3 rounds
    python benches/hip_tha.py --images 1 --rounds 1
    python benches/hip_tha.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, ainode_bin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ainode-bench/hip-tha"))
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "hip-tha")
    ap.add_argument("--peer-python", default=sys.executable, help="interpreter with onnx + onnxruntime for the peer")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    data = args.work / f"data-{args.images}"
    if not (data / "index.json").is_file():
        settings = args.work / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        # 350 x 280 mm at 0.14 mm = 2500 columns x 2000 rows; every case has a prosthesis
        settings.write_text(json.dumps({"spacing_mm": [0.14, 0.14], "field_mm": [[350.0, 350.0], [280.0, 280.0]], "negative_share": 0.0}))
        subprocess.run([ainode_bin(), "data", "synth", "hip-tha", "--out", data, "--count", str(args.images), "--seed", "99",
                        "--settings", settings], check=True, capture_output=True)
    files = sorted(data.glob("case_*.dcm"))
    config = args.work / "bench.toml"
    config.write_text(f'[pipelines.hip-tha]\nweights = "{args.weights}"\n')

    steps: dict[str, list[float]] = {"decode": [], "preprocess": [], "network": [], "total": []}
    walls = []
    shape = None
    for r in range(args.rounds):
        out = args.work / f"out-{r}"
        t = time.perf_counter()
        res = subprocess.run([ainode_bin(), "run", "--config", config, "--pipeline", "hip-tha", "--device", "cpu",
                              "--input", data, "--output", out], capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        if res.returncode != 0:
            sys.exit(f"ainode run failed:\n{res.stderr[-3000:]}")
        summary = json.loads(res.stdout)
        for st in summary["studies"]:
            for img in st["reports"]:
                shape = (img["rows"], img["cols"])
                for k in steps:
                    steps[k].append(img["timing_ms"][k])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert shape == (2000, 2500), f"benchmark images are {shape}, not 2000 x 2500"

    result = {
        "image": "2000 x 2500, 0.14 mm, 12 bit DX",
        "cpu": os.cpu_count(),
        "images_per_round": len(files),
        "rounds": args.rounds,
        "per_image_ms": {k: {"median": statistics.median(v), "max": max(v)} for k, v in steps.items()},
        "command_wall_s": {"median": statistics.median(walls), "max": max(walls)},
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    peer = run_peer(args.peer_python, args.weights, args.work)
    if peer:
        result["peer_onnxruntime_network_ms"] = peer
        result["network_ratio_ainode_over_onnxruntime"] = result["per_image_ms"]["network"]["median"] / peer["median"]
    print(f"hip-tha on CPU ({os.cpu_count()} cores), {len(files)} image(s) of 2000 x 2500 x {args.rounds} rounds")
    for k, v in result["per_image_ms"].items():
        print(f"  {k:<11} median {v['median']:8.1f} ms   max {v['max']:8.1f} ms")
    print(f"  `ainode run` wall time (process start, weights, {len(files)} image(s)): median {result['command_wall_s']['median']:.2f} s")
    print(f"  peak RSS {result['peak_rss_mb']} MB")
    if peer:
        print(f"  peer: onnxruntime network median {peer['median']:.1f} ms; ainode / onnxruntime = {result['network_ratio_ainode_over_onnxruntime']:.2f}")
    else:
        print("  peer: onnx/onnxruntime not importable by --peer-python; no ratio")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def run_peer(python: str, weights: Path, work: Path) -> dict | None:
    script = Path(__file__).with_name("hip_tha_onnx.py")
    if not script.is_file():
        return None
    res = subprocess.run([python, script, "--weights", weights, "--work", work], capture_output=True, text=True)
    if res.returncode == 3:  # packages missing
        return None
    if res.returncode != 0:
        print(f"peer failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout)


if __name__ == "__main__":
    sys.exit(main())
