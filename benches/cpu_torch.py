#!/usr/bin/env python3
"""Peer of `ainode bench cpu` (benches/cpu.py runs it): the shipped networks
rebuilt in PyTorch with the same architecture and shapes, timed on the CPU
with the same thread count; inference also in onnxruntime from the same
module (exported with torch.onnx). Needs torch (+ torchvision for Mask R-CNN),
onnx and onnxruntime: a bench-only venv, never the tests'.

- hip-tha: VGG16-SSD512 at width 0.25 (models/blocks/vgg.rs: conv + batch
  norm + ReLU in the trunk and the first three extras, as trained; pool5 3x3/1, dilated conv6, conv7, SSD512 extras, L2Norm on conv4_3,
  3x3 multibox heads), 1 x 1 x 512 x 512; training: matched softmax CE with
  3:1 hard negatives + smooth L1 over the 24564 default boxes (ssd.pytorch's
  MultiBoxLoss), AdamW.
- lung-lesions: torchvision MaskRCNN on a ResNet-50 (torchvision layout,
  widths x 0.25, batch norm) + FPN(64) backbone, one input channel, 384 x 384,
  anchors 16..256, box head 256, mask head 64 (models/lung_lesions.rs);
  training with two instances per image, AdamW.

Prints one JSON object: per network inference / training-step ms per image
for torch and onnxruntime inference ms (or why not).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def median_ms(fn, rounds: int) -> float:
    fn()
    t = []
    for _ in range(rounds):
        s = time.perf_counter()
        fn()
        t.append((time.perf_counter() - s) * 1000)
    return statistics.median(t)


def figures(net, one, loss, rounds, batch):
    """Inference ms per image (batch 1, no grad) and training-step ms per image (loss, backward, AdamW)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)

    def infer():
        with torch.no_grad():
            net.eval()
            net(one)

    def step():
        net.train()
        opt.zero_grad()
        loss().backward()
        opt.step()

    return {"inference_ms_per_image": median_ms(infer, rounds), "train_step_ms_per_image": median_ms(step, rounds) / batch}


def scaled(c: int, m: float) -> int:
    return max(1, round(c * m))


# ---------------------------------------------------------------- hip-tha SSD512
VGG16 = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
EXTRAS = [(256, 512, 2, 3), (128, 256, 2, 3), (128, 256, 2, 3), (128, 256, 2, 3), (128, 256, 1, 4)]
MAPS = [64, 32, 16, 8, 4, 2, 1]
STEPS = [8, 16, 32, 64, 128, 256, 512]
MIN_SIZES = [35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8]
MAX_SIZES = [76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6]
RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]


def conv_bn(cin, cout, k, bn, **kw):
    """A convolution, with batch norm after it (and no bias) when `bn`."""
    if not bn:
        return nn.Conv2d(cin, cout, k, **kw)
    return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False, **kw), nn.BatchNorm2d(cout))


class Ssd512(nn.Module):
    # batch norm: the trunk, conv6, conv7 and the first three extras, as the
    # hip-tha training recipe (models/blocks/vgg.rs EXTRAS_WITH_BN)
    def __init__(self, width=0.25, classes=11, bn=True):
        super().__init__()
        w = lambda c: scaled(c, width)  # noqa: E731
        self.blocks = nn.ModuleList()
        cin = 1
        for c, n in VGG16:
            convs = nn.ModuleList()
            for _ in range(n):
                convs.append(conv_bn(cin, w(c), 3, bn, padding=1))
                cin = w(c)
            self.blocks.append(convs)
        self.l2 = nn.Parameter(torch.full((w(512),), 20.0))
        self.conv6 = conv_bn(cin, w(1024), 3, bn, padding=6, dilation=6)
        self.conv7 = conv_bn(w(1024), w(1024), 1, bn)
        self.extras = nn.ModuleList()
        cin = w(1024)
        sources = [w(512), w(1024)]
        for e, (c1, c2, s, k) in enumerate(EXTRAS):
            b = bn and e < 3
            self.extras.append(nn.ModuleList([conv_bn(cin, w(c1), 1, b), conv_bn(w(c1), w(c2), k, b, stride=s, padding=1)]))
            cin = w(c2)
            sources.append(cin)
        per_cell = [2 + 2 * len(r) for r in RATIOS]
        self.cls = nn.ModuleList(nn.Conv2d(c, a * classes, 3, padding=1) for c, a in zip(sources, per_cell))
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(sources, per_cell))
        self.classes = classes

    def forward(self, x):
        sources = []
        for b, convs in enumerate(self.blocks):
            if b > 0:
                x = F.max_pool2d(x, 2, 2)
            for c in convs:
                x = F.relu(c(x))
            if b == 3:
                sources.append(x / (x.pow(2).sum(1, keepdim=True) + 1e-10).sqrt() * self.l2.view(1, -1, 1, 1))
        x = F.max_pool2d(x, 3, 1, 1)
        x = F.relu(self.conv7(F.relu(self.conv6(x))))
        sources.append(x)
        for a, b in self.extras:
            x = F.relu(b(F.relu(a(x))))
            sources.append(x)
        n = x.shape[0]
        cls = torch.cat([c(s).permute(0, 2, 3, 1).reshape(n, -1, self.classes) for c, s in zip(self.cls, sources)], 1)
        loc = torch.cat([l(s).permute(0, 2, 3, 1).reshape(n, -1, 4) for l, s in zip(self.loc, sources)], 1)
        return cls, loc


def ssd_priors() -> torch.Tensor:
    out = []
    for k, f in enumerate(MAPS):
        for i in range(f):
            for j in range(f):
                cx, cy = (j + 0.5) * STEPS[k] / 512, (i + 0.5) * STEPS[k] / 512
                s = MIN_SIZES[k] / 512
                out.append([cx, cy, s, s])
                s2 = math.sqrt(s * MAX_SIZES[k] / 512)
                out.append([cx, cy, s2, s2])
                for r in RATIOS[k]:
                    q = math.sqrt(r)
                    out += [[cx, cy, s * q, s / q], [cx, cy, s / q, s * q]]
    return torch.tensor(out).clamp(0, 1) * 512


def box_iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def multibox_loss(cls, loc, priors, points, box=36.0):
    pc = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    total_c, total_l, npos = 0.0, 0.0, 0
    for i, pts in enumerate(points):
        gt = torch.tensor([[x - box / 2, y - box / 2, x + box / 2, y + box / 2] for x, y in pts])
        labels = torch.arange(1, len(pts) + 1)
        iou = box_iou(gt, pc)
        best_prior = iou.argmax(1)
        best_iou, best_gt = iou.max(0)
        best_iou[best_prior] = 2.0
        best_gt[best_prior] = torch.arange(len(pts))
        conf = labels[best_gt]
        conf[best_iou < 0.5] = 0
        pos = conf > 0
        m = gt[best_gt]
        g_c = ((m[:, :2] + m[:, 2:]) / 2 - priors[:, :2]) / (0.1 * priors[:, 2:])
        g_s = torch.log((m[:, 2:] - m[:, :2]) / priors[:, 2:]) / 0.2
        target = torch.cat([g_c, g_s], 1)
        total_l = total_l + F.smooth_l1_loss(loc[i][pos], target[pos], reduction="sum")
        ce = F.cross_entropy(cls[i], conf, reduction="none")
        neg_ce = ce.detach().clone()
        neg_ce[pos] = 0
        nneg = min(3 * int(pos.sum()), len(conf) - int(pos.sum()))
        _, order = neg_ce.sort(descending=True)
        neg = torch.zeros_like(pos)
        neg[order[:nneg]] = True
        total_c = total_c + ce[pos | neg].sum()
        npos += int(pos.sum())
    return (total_c + total_l) / max(npos, 1)


def bench_ssd(rounds, batch):
    torch.manual_seed(0)
    net = Ssd512()
    priors = ssd_priors()
    one = torch.randn(1, 1, 512, 512)
    xb = torch.randn(batch, 1, 512, 512)
    g = torch.Generator().manual_seed(1)
    points = [[(float(torch.rand(1, generator=g)) * 300 + 100, float(torch.rand(1, generator=g)) * 300 + 100) for _ in range(10)] for _ in range(batch)]

    def loss():
        cls, loc = net(xb)
        return multibox_loss(cls, loc, priors, points)

    return net, one, figures(net, one, loss, rounds, batch)


# ---------------------------------------------------------------- lung-lesions Mask R-CNN
class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.down = None
        if stride != 1 or cin != out:
            self.down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet50Fpn(nn.Module):
    def __init__(self, width=0.25, fpn=64):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        stem = scaled(64, width)
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        cin, chans, stages = stem, [], []
        for w, n, s in zip([64, 128, 256, 512], [3, 4, 6, 3], [1, 2, 2, 2]):
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(cin, scaled(w, width), s if b == 0 else 1))
                cin = scaled(w, width) * 4
            stages.append(nn.Sequential(*blocks))
            chans.append(cin)
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(chans, fpn, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn

    def forward(self, x):
        from collections import OrderedDict

        x = self.stem(x)
        feats = OrderedDict()
        for i, s in enumerate(self.stages):
            x = s(x)
            feats[str(i)] = x
        return self.fpn(feats)


def mask_rcnn():
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    return MaskRCNN(
        ResNet50Fpn(),
        num_classes=None,
        min_size=384, max_size=384, image_mean=[0.0], image_std=[1.0],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=1000, rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_train=500, rpn_post_nms_top_n_test=300,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
        box_head=TwoMLPHead(64 * 49, 256), box_predictor=FastRCNNPredictor(256, 3),
        box_batch_size_per_image=128, box_score_thresh=0.05,
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
        mask_head=MaskRCNNHeads(64, [64] * 4, 1), mask_predictor=MaskRCNNPredictor(64, 64, 3),
    )


def lung_targets(s=384):
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    disc = ((yy - s * 0.35) ** 2 + (xx - s * 0.3) ** 2) < (s * 0.08) ** 2
    block = (yy >= s * 6 // 10) & (yy < s * 7 // 10) & (xx >= s * 6 // 10) & (xx < s * 3 // 4)
    masks = torch.stack([disc, block]).to(torch.uint8)
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2]), "masks": masks}


def bench_mask_rcnn(rounds, batch):
    torch.manual_seed(0)
    net = mask_rcnn()
    one = [torch.randn(1, 384, 384)]
    xb = [torch.randn(1, 384, 384) for _ in range(batch)]
    targets = [lung_targets() for _ in range(batch)]
    return net, one, figures(net, one, lambda: sum(net(xb, targets).values()), rounds, batch)


def onnx_inference_ms(net, example, rounds):
    """onnxruntime inference of the module exported with torch.onnx; (ms, None) or (None, why)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        return None, f"onnxruntime not installed ({e})"
    net.eval()
    buf = io.BytesIO()
    try:
        torch.onnx.export(net, (example,), buf, opset_version=17, input_names=["input"], dynamo=False)
    except Exception as e:  # noqa: BLE001 - report why, keep the torch figures
        return None, f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: (example[0] if isinstance(example, list) else example).numpy()}
    return median_ms(lambda: sess.run(None, feed), rounds), None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--networks", default="hip-tha,lung-lesions")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"torch": torch.__version__, "threads": args.threads, "networks": {}}
    for name in args.networks.split(","):
        if name == "hip-tha":
            net, one, fig = bench_ssd(args.rounds, args.batch)
            ms, why = onnx_inference_ms(net, one, args.rounds)
        elif name == "lung-lesions":
            net, one, fig = bench_mask_rcnn(args.rounds, args.batch)
            ms, why = onnx_inference_ms(net, one, args.rounds)
        else:
            continue
        fig["onnxruntime_inference_ms_per_image"] = ms
        if why:
            fig["onnxruntime_note"] = why
        out["networks"][name] = fig
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
