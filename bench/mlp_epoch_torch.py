#!/usr/bin/python3
"""PyTorch twin of `tdrop train --model mlp --device cpu`, for the CPU epoch-time race.

Trains the identical model and recipe on the same data:
  * LeNet-300-100: Flatten, Linear(784, 300), ReLU, Linear(300, 100), ReLU, Linear(100, 10),
    PyTorch's default initialisation;
  * SGD lr 0.05, momentum 0.9, weight decay 5e-4, cosine schedule over the whole run (per step,
    lr = 0.05 * (1 + cos(pi * step / total_steps)) / 2, as tdrop computes it), batch 128, a new
    shuffle every epoch;
  * pixels normalised as (x / 255 - 0.2860) / 0.3530, read from the same gzip IDX files of the
    Debian package dataset-fashion-mnist with gzip + numpy and put into tensors before any timing.

Like tdrop, an epoch's time covers the shuffle, batch gathering, forward, loss, backward, the
optimizer step and the per-step loss/accuracy bookkeeping; the test-set evaluation that follows
each epoch is not timed. PyTorch uses as many threads as the machine has CPUs (the same number
OpenBLAS uses in tdrop), set with torch.set_num_threads(os.cpu_count()).

Run with the Debian interpreter that has python3-torch:
  /usr/bin/python3 bench/mlp_epoch_torch.py --epochs 3 [--json]
"""
import argparse
import gzip
import json
import math
import os
import statistics
import struct
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    sys.exit(f"mlp_epoch_torch.py: {e}; it needs Debian's python3-torch and python3-numpy "
             "(apt-get install python3-torch python3-numpy), run with /usr/bin/python3")

MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    """An IDX array (unsigned bytes) from a gzip file, checked against its header."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        sys.exit(f"mlp_epoch_torch: {path} not found; install the Debian package "
                 "dataset-fashion-mnist or pass --data-dir DIR")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        sys.exit(f"mlp_epoch_torch: {path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - offset != count:
        sys.exit(f"mlp_epoch_torch: {path}: header says {dims} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_split(data_dir, prefix, limit=0):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)  # [N, 1, 28, 28]
    x = (x / 255.0 - MEAN) / STD
    y = torch.from_numpy(labels.astype(np.int64))
    return x.contiguous(), y


def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                         nn.ReLU(), nn.Linear(100, 10))


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(y), batch):
        logits = model(x[i:i + batch])
        loss_sum += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(y), loss_sum / len(y)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="intra-op threads (default: os.cpu_count(), like OpenBLAS in tdrop)")
    p.add_argument("--train-limit", type=int, default=0, help="first N training images (0 = all)")
    p.add_argument("--data-dir", default=os.environ.get("TDROP_DATA_DIR",
                                                        "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = p.parse_args()
    if a.epochs < 1 or a.batch_size < 1:
        sys.exit("mlp_epoch_torch: --epochs and --batch-size must be at least 1")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    log = (lambda *s: print(*s, file=sys.stderr, flush=True)) if a.json else print
    log(f"pytorch {torch.__version__}: torch.set_num_threads({a.threads}) "
        f"(os.cpu_count() = {os.cpu_count()}), {torch.get_num_threads()} intra-op threads")

    x_train, y_train = load_split(a.data_dir, "train", a.train_limit)
    x_test, y_test = load_split(a.data_dir, "t10k")
    n = len(y_train)
    steps_per_epoch = (n + a.batch_size - 1) // a.batch_size
    total_steps = steps_per_epoch * a.epochs

    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum,
                          weight_decay=a.weight_decay)
    gen = torch.Generator().manual_seed(a.seed)
    epochs, step = [], 0
    for epoch in range(1, a.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * a.batch_size:(i + 1) * a.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            lr = a.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
            for group in opt.param_groups:
                group["lr"] = lr
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            step += 1
        seconds = time.perf_counter() - t0
        test_acc, test_loss = evaluate(model, x_test, y_test)
        m = {"epoch": epoch, "seconds": seconds, "samples_per_second": n / seconds,
             "lr": lr, "train_loss": loss_sum / n, "train_accuracy": correct / n,
             "test_loss": test_loss, "test_accuracy": test_acc}
        epochs.append(m)
        log(f"epoch {epoch:2d}/{a.epochs}  loss {m['train_loss']:.4f}  train acc "
            f"{100 * m['train_accuracy']:6.2f}%  test acc {100 * test_acc:6.2f}%  "
            f"{seconds:.2f} s  {m['samples_per_second']:.0f} samples/s")

    summary = {
        "framework": "pytorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": a.batch_size,
        "train_images": n,
        "epochs": epochs,
        "median_epoch_seconds": statistics.median(e["seconds"] for e in epochs),
        "median_samples_per_second": statistics.median(e["samples_per_second"] for e in epochs),
        "final_test_accuracy": epochs[-1]["test_accuracy"],
    }
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"median epoch {summary['median_epoch_seconds']:.2f} s, "
              f"{summary['median_samples_per_second']:.0f} samples/s, "
              f"final test accuracy {100 * summary['final_test_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
