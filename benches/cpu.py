#!/usr/bin/env python3
"""CPU benchmark of the shipped networks against PyTorch and onnxruntime, in
one run on one machine (figures, not a test).

Runs `ainode bench cpu` (ours: inference and training-step ms per image,
convolution GFLOP/s against this machine's sgemm peak, the most expensive
layers), then benches/cpu_torch.py with an interpreter that has torch,
torchvision, onnx and onnxruntime (a bench-only venv; `--make-venv DIR`
creates one from PyPI), with the same thread count, and prints the table
with the ratios (ours / peer: below 1 means we are faster).

    python3 benches/cpu.py --make-venv ../runs/bench-venv        # once
    python3 benches/cpu.py --peer-python ../runs/bench-venv/bin/python
    python3 benches/cpu.py --peer-python ... --threads 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, ainode_bin

PEER_PACKAGES = ["torch", "torchvision", "onnx", "onnxruntime", "numpy"]


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", help="interpreter with torch, torchvision, onnx, onnxruntime")
    ap.add_argument("--make-venv", type=Path, help="create a venv with the peer packages here and exit")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--networks", default="hip-tha,lung-lesions")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    if args.make_venv:
        subprocess.run([sys.executable, "-m", "venv", args.make_venv], check=True)
        subprocess.run([args.make_venv / "bin" / "pip", "install", "-q", *PEER_PACKAGES], check=True)
        print(f"peer venv ready: --peer-python {args.make_venv / 'bin' / 'python'}")
        return 0

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        ours_json = Path(tmp) / "ours.json"
        cmd = [ainode_bin(), "--threads", str(args.threads), "bench", "cpu", "--networks", args.networks, "--rounds", str(args.rounds), "--batch", str(args.batch), "--json", ours_json]
        print("$ " + " ".join(map(str, cmd)), flush=True)
        subprocess.run(cmd, check=True, env=env)
        ours = json.loads(ours_json.read_text())

    peer = None
    if args.peer_python:
        peer_cmd = [args.peer_python, REPO / "benches" / "cpu_torch.py", "--threads", str(args.threads), "--rounds", str(args.rounds), "--batch", str(args.batch), "--networks", args.networks]
        # the peer uses exactly the cores we were given, no oversubscription
        penv = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        r = subprocess.run(peer_cmd, capture_output=True, text=True, env=penv)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            sys.exit(f"peer failed ({r.returncode})")
        peer = json.loads(r.stdout.strip().splitlines()[-1])
    else:
        print("\n(no --peer-python: PyTorch / onnxruntime columns empty)")

    print(f"\n| network | ours inference ms | torch inference ms | onnxruntime ms | ours/torch | ours/ort | ours train ms/image | torch train ms/image | ours/torch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for n in ours["networks"]:
        p = (peer or {}).get("networks", {}).get(n["network"], {})
        row = {
            "network": n["network"],
            "ours_inference_ms": n["inference_ms_per_image"],
            "torch_inference_ms": p.get("inference_ms_per_image"),
            "ort_inference_ms": p.get("onnxruntime_inference_ms_per_image"),
            "ours_train_ms": n["train_step_ms_per_image"],
            "torch_train_ms": p.get("train_step_ms_per_image"),
            "ort_note": p.get("onnxruntime_note"),
        }
        rows.append(row)
        f = lambda v: f"{v:.1f}" if v else "-"  # noqa: E731
        print(f"| {row['network']} | {f(row['ours_inference_ms'])} | {f(row['torch_inference_ms'])} | {f(row['ort_inference_ms'])} | "
              f"{ratio(row['ours_inference_ms'], row['torch_inference_ms'])} | {ratio(row['ours_inference_ms'], row['ort_inference_ms'])} | "
              f"{f(row['ours_train_ms'])} | {f(row['torch_train_ms'])} | {ratio(row['ours_train_ms'], row['torch_train_ms'])} |")
    for row in rows:
        if row["ort_note"]:
            print(f"onnxruntime, {row['network']}: {row['ort_note']}")
    if peer:
        print(f"\npeer: torch {peer['torch']}, {peer['threads']} threads")
    if args.json:
        args.json.write_text(json.dumps({"ours": ours, "peer": peer, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
