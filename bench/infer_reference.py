#!/usr/bin/python3
"""The reference for bench_infer: zero-shot localize + classify written as a PyTorch user would,
with Debian's python3-torch (the same LibTorch 1.13 the C++ build links) -- an oracle for speed,
not part of the product.

Work per image, as in `afloc localize` with presence (= classification) on: 8-bit grey image ->
SPEC section 4 preprocessing -> AFLoc image encoder (torchvision ResNet-50 at 299 + the authors'
projections; its forward returns the global, deep and shallow embeddings as the authors'
image_encoder_forward does) -> for each of P prompts a 224 x 224 heatmap (raw dot product, scipy
gaussian_filter sigma 1.5, bilinear upsample, 14-px NaN margin, min-max to [-1, 1]) and for each
of C classes a pos/neg softmax probability. Prompt and class vectors are computed beforehand.

Prints one JSON line: {"batch": B, "images_per_s": ..., "threads": ...}.
Usage: infer_reference.py --batch 16 --images 64 --prompts 5 --threads 2
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from scipy import ndimage


class ImageEncoder(nn.Module):
    """The authors' ImageEncoder shape: ResNet-50 trunk, Linear global, 1x1 conv local projections."""

    def __init__(self, dim=768):
        super().__init__()
        self.model = torchvision.models.resnet50()
        self.model.fc = nn.Identity()
        self.global_embedder = nn.Linear(2048, dim)
        self.local_embedder = nn.Conv2d(1024, dim, 1, bias=False)
        self.local2_embedder = nn.Conv2d(512, dim, 1, bias=False)

    def forward(self, x):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer1(x)
        l2 = m.layer2(x)
        l3 = m.layer3(l2)
        l4 = m.layer4(l3)
        pooled = torch.flatten(m.avgpool(l4), 1)
        return self.local_embedder(l3), self.local2_embedder(l2), l4, self.global_embedder(pooled)


def preprocess(gray):
    """SPEC section 4 for a square 224 image: x/255, (x-0.5)/0.5, 3 channels."""
    t = torch.from_numpy(gray).float().div_(255.0).sub_(0.5).div_(0.5)
    return t.unsqueeze(0).expand(3, -1, -1)


def heatmap(sim):
    s = torch.tensor(ndimage.gaussian_filter(sim.numpy(), sigma=(1.5, 1.5), order=0))
    h = F.interpolate(s[None, None], size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
    h[:14, :] = float("nan")
    h[-14:, :] = float("nan")
    h[:, :14] = float("nan")
    h[:, -14:] = float("nan")
    v = ~torch.isnan(h)
    lo, hi = h[v].min(), h[v].max()
    h[v] = (h[v] - lo) / (hi - lo) * 2 - 1
    return h


def run(model, images, queries, pos, neg, batch):
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.stack([preprocess(g) for g in images[start:start + batch]])
            deep, _, _, glob = model(x)
            probs = torch.softmax(torch.stack([glob @ pos.t(), glob @ neg.t()], 2), 2)[:, :, 0]
            for b in range(deep.shape[0]):
                d = deep[b].reshape(deep.shape[1], -1)
                for q in range(queries.shape[0]):
                    out.append((heatmap((queries[q] @ d).reshape(deep.shape[2], deep.shape[3])), probs[b]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ImageEncoder().eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224), dtype=np.uint8) for _ in range(args.images)]
    queries = torch.randn(args.prompts, 768)
    pos, neg = torch.randn(args.prompts, 768), torch.randn(args.prompts, 768)
    run(model, images[: args.batch], queries, pos, neg, args.batch)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run(model, images, queries, pos, neg, args.batch)
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"batch": args.batch, "images_per_s": args.images / best, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
