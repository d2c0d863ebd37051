#!/usr/bin/env python3
"""Where a training step spends GPU time: per-kernel totals from a profiler, per step.

    step_profile.py ncu.csv       (ncu --csv --metrics gpu__time_duration.sum ...)
    step_profile.py kern_sum.csv  (nsys stats -r cuda_gpu_kern_sum --format csv ...)

Steps are counted by the launches of the one-per-step SGD update kernel. Prints the kernels
by GPU time per step, the total, and the number of launches per step; with --step-ms (the
measured wall time of a step), also how much of the step the GPU was idle.
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

STEP_KERNEL = "sgd_multi_kernel"


def short(name):
    name = name.replace("<unnamed>::", "").replace("(anonymous namespace)::", "")
    name = re.sub(r"^void ", "", name.split("(")[0])   # argument lists
    while re.search(r"<[^<>]*<", name):                # nested template arguments
        name = re.sub(r"<[^<>]*>", "", name, count=1)
    name = re.sub(r"<[^<>]*>", "<..>", name)
    return name.split("::")[-1][:60]


def read_ncu(rows):
    total, count = defaultdict(float), defaultdict(int)
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "ns")
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(unit, 1e-3)
        k = r["Kernel Name"]
        total[k] += float(r["Metric Value"].replace(",", "")) * scale
        count[k] += 1
    return total, count


def read_nsys(rows):
    total, count = defaultdict(float), defaultdict(int)
    for r in rows:
        k = r["Name"]
        total[k] += float(r["Total Time (ns)"]) * 1e-3
        count[k] += int(r["Instances"])
    return total, count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--step-ms", type=float, help="measured wall time of one step")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        lines = f.readlines()
    # The profiled program's own output may surround the table: start at the header and keep
    # the lines that look like table rows (quoted, or a number first).
    start = next((i for i, l in enumerate(lines) if "Metric Name" in l or "Total Time" in l), None)
    if start is None:
        sys.exit(f"step_profile: no ncu or nsys table header in {a.csv}")
    body = [l for l in lines[start + 1:] if l.startswith('"') or l[:1].isdigit()]
    rows = list(csv.DictReader([lines[start]] + body))
    if not rows:
        sys.exit(f"step_profile: no rows in {a.csv}")
    total, count = read_ncu(rows) if "Metric Name" in rows[0] else read_nsys(rows)
    steps = sum(c for k, c in count.items() if STEP_KERNEL in k)
    if steps == 0:
        sys.exit(f"step_profile: no {STEP_KERNEL} launch in {a.csv}: cannot count steps")
    merged_us, merged_n = defaultdict(float), defaultdict(int)
    for k in total:
        merged_us[short(k)] += total[k]
        merged_n[short(k)] += count[k]
    gpu_us = sum(total.values()) / steps
    print(f"{steps} steps profiled; per step: {gpu_us:.0f} us of kernels, "
          f"{sum(count.values()) / steps:.0f} launches")
    if a.step_ms:
        print(f"measured step {a.step_ms * 1e3:.0f} us: GPU busy {100 * gpu_us / (a.step_ms * 1e3):.0f}%")
    print(f"{'kernel':60s} {'us/step':>8s} {'launches':>8s} {'share':>6s}")
    for k in sorted(merged_us, key=merged_us.get, reverse=True)[: a.top]:
        us = merged_us[k] / steps
        print(f"{k:60s} {us:8.1f} {merged_n[k] / steps:8.1f} {100 * us / gpu_us:5.1f}%")


if __name__ == "__main__":
    main()
