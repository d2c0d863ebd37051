#!/usr/bin/env python3
"""PyTorch eager peer for tdrop's ResNet-32 training speed on a GPU.

The same network as `tdrop train --model resnet32` (He et al. 2016 CIFAR ResNet-32: 3x3 stem with
16 channels, 3 stages x 5 basic blocks of widths 16/32/64, option-A shortcuts, global average
pool, FC), 1x32x32 inputs (Fashion-MNIST padded), SGD momentum 0.9, weight decay 5e-4, batch 128,
fp32 with TF32 off (tdrop's convolutions are fp32 FMA), cuDNN autotuning on (PyTorch's fastest
eager setting; --no-benchmark: its default, cuDNN's heuristics). With --td, every conv except the stem gets weight-level targeted dropout written
the idiomatic eager way (kthvalue per row, rand_like, masked multiply), as in the peer script.

Batches come from a pool of random tensors already on the GPU, so no data loading is timed: an
upper bound for PyTorch. Prints one JSON line: images/s over --steps steps after --warmup steps.

Usage: python3 bench/resnet32_torch.py [--steps 200] [--warmup 30] [--batch 128] [--td]
                                       [--gamma 0.5] [--alpha 0.5] [--tf32] [--no-benchmark]
"""
import argparse
import json
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    sys.exit(f"resnet32_torch.py: {e}; it needs PyTorch with CUDA (pip or Debian's python3-torch)")


def targeted_mask(w, gamma, alpha):
    """1 where kept: the k = floor(gamma*n) smallest |w| of each row are dropped with prob. alpha."""
    rows = w.reshape(w.shape[0], -1)
    k = int(math.floor(gamma * rows.shape[1]))
    if k == 0:
        return torch.ones_like(w)
    a = rows.abs()
    thr = torch.kthvalue(a, k, dim=1, keepdim=True).values
    drop = (a <= thr) & (torch.rand_like(a) < alpha)
    return (~drop).to(w.dtype).reshape(w.shape)


class Conv(nn.Conv2d):
    def __init__(self, cin, cout, stride, td):
        super().__init__(cin, cout, 3, stride, 1, bias=False)
        self.td = td

    def forward(self, x):
        w = self.weight
        if self.training and self.td is not None:
            with torch.no_grad():
                m = targeted_mask(w, *self.td)
            w = w * m
        return F.conv2d(x, w, None, self.stride, self.padding)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, td):
        super().__init__()
        self.c1, self.b1 = Conv(cin, cout, stride, td), nn.BatchNorm2d(cout)
        self.c2, self.b2 = Conv(cout, cout, 1, td), nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        s = x
        if self.stride != 1 or self.pad:  # option A: subsample and zero-pad channels
            s = x[:, :, ::self.stride, ::self.stride]
            s = F.pad(s, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + s)


def resnet32(td):
    layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    width = 16
    for stage in range(3):
        out = 16 << stage
        for b in range(5):
            layers.append(Block(width, out, 2 if stage > 0 and b == 0 else 1, td))
            width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--td", action="store_true")
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 convolutions and matmuls")
    ap.add_argument("--no-benchmark", action="store_true",
                    help="cuDNN heuristics (PyTorch's default) instead of autotuning")
    a = ap.parse_args()
    assert torch.cuda.is_available(), "resnet32_torch.py needs a CUDA GPU"
    torch.backends.cudnn.benchmark = not a.no_benchmark
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.manual_seed(1)
    dev = torch.device("cuda")
    model = resnet32((a.gamma, a.alpha) if a.td else None).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pool = [(torch.randn(a.batch, 1, 32, 32, device=dev),
             torch.randint(0, 10, (a.batch,), device=dev)) for _ in range(8)]

    def step(i):
        x, y = pool[i % len(pool)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for i in range(a.warmup):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(i)
    loss.item()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps({"framework": "pytorch " + torch.__version__, "model": "resnet32",
                      "batch": a.batch, "td": a.td, "tf32": a.tf32, "steps": a.steps,
                      "cudnn_benchmark": not a.no_benchmark,
                      "ms_per_step": 1e3 * dt / a.steps, "images_per_s": a.steps * a.batch / dt,
                      "gpu": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
