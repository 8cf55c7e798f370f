#!/usr/bin/env python3
"""Peer for benches/hip_tha.py: the hip-tha network (VGG16-SSD512 trunk and
multibox head, models/blocks/vgg.rs) rebuilt as an ONNX graph with the same
weights (read from weights/hip-tha.safetensors) and timed in onnxruntime on
CPU, with a 512 x 512 input like the pipeline's. Prints JSON
{"median": ms, "min": ms, "runs": n}; exit status 3 when onnx / onnxruntime
are not installed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    sys.exit(3)

VGG16 = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
EXTRAS = [(256, 512, 2, 3), (128, 256, 2, 3), (128, 256, 2, 3), (128, 256, 2, 3), (128, 256, 1, 4)]
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dt = DTYPES[meta["dtype"]]
        out[name] = np.frombuffer(raw[base + a: base + b], dtype=dt).reshape(meta["shape"]).astype(np.float32)
    return out


def build(w: dict[str, np.ndarray], meta: dict) -> onnx.ModelProto:
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def conv(x, tensor, stride=1, pad=None, dil=1):
        if f"{tensor}.weight" in w:
            wt, bias = w[f"{tensor}.weight"], w.get(f"{tensor}.bias")
        else:
            # conv + batch norm (the trained config): folded for inference, as ours does
            wt = w[f"{tensor}.conv.weight"]
            scale = w[f"{tensor}.bn.weight"] / np.sqrt(w[f"{tensor}.bn.running_var"] + 1e-5)
            wt = (wt * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            bias = (w[f"{tensor}.bn.bias"] - w[f"{tensor}.bn.running_mean"] * scale).astype(np.float32)
        k = wt.shape[-1]
        pad = dil * (k - 1) // 2 if pad is None else pad
        inputs = [x, tensor + ".weight"]
        inits.append(numpy_helper.from_array(wt, tensor + ".weight"))
        if bias is not None:
            inits.append(numpy_helper.from_array(bias, tensor + ".bias"))
            inputs.append(tensor + ".bias")
        y = name("conv")
        nodes.append(helper.make_node("Conv", inputs, [y], strides=[stride, stride], pads=[pad] * 4, dilations=[dil, dil], kernel_shape=[k, k]))
        return y

    def relu(x):
        y = name("relu")
        nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def pool(x, k, s, p):
        y = name("pool")
        nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4))
        return y

    x, sources = "input", []
    for b, (_, n) in enumerate(VGG16):
        if b > 0:
            x = pool(x, 2, 2, 0)
        for k in range(n):
            x = relu(conv(x, f"trunk.conv{b + 1}_{k + 1}"))
        if b == 3:
            # L2 norm over channels times the learned scale
            sq, s, r, d, m = (name(t) for t in ("sq", "sum", "sqrt", "div", "mul"))
            scale = w["trunk.conv4_3_norm.weight"].reshape(1, -1, 1, 1)
            inits.append(numpy_helper.from_array(scale, "l2scale"))
            inits.append(numpy_helper.from_array(np.array([1e-10], np.float32), "eps"))
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
            nodes += [helper.make_node("Mul", [x, x], [sq]), helper.make_node("ReduceSum", [sq, "axis1"], [s], keepdims=1),
                      helper.make_node("Add", [s, "eps"], [s + "e"]), helper.make_node("Sqrt", [s + "e"], [r]),
                      helper.make_node("Div", [x, r], [d]), helper.make_node("Mul", [d, "l2scale"], [m])]
            sources.append(m)
    x = pool(x, 3, 1, 1)
    x = relu(conv(x, "trunk.conv6", dil=meta.get("conv6_dilation", 6)))
    x = relu(conv(x, "trunk.conv7"))
    sources.append(x)
    for e, (_, _, stride, k) in enumerate(EXTRAS):
        x = relu(conv(x, f"trunk.conv{e + 8}_1"))
        x = relu(conv(x, f"trunk.conv{e + 8}_2", stride=stride, pad=1))
        sources.append(x)
    outputs = []
    for i, s in enumerate(sources):
        for head in ("cls", "loc"):
            y = conv(s, f"head.{head}.{i}")
            outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "hip_tha_ssd", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 512, 512])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    meta = json.loads(Path(str(args.weights) + ".json").read_text())
    w = read_safetensors(Path(str(args.weights) + ".safetensors"))
    model = build(w, meta["architecture"].get("network", {}))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, 512, 512), dtype=np.float32)
    sess.run(None, {"input": x})  # warm-up
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"median": statistics.median(times), "min": min(times), "runs": args.runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
