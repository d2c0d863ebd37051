#!/usr/bin/env python3
"""The fused kernel's builds side by side: this tree's defaults against each variant.

Usage: python3 bench/variant_table.py DEFAULT_JSON NAME=JSON [NAME=JSON ...]

Each JSON is a bench_targeted_dropout --benchmark_out from the same call on the same GPU:
DEFAULT_JSON the build as committed, each NAME=JSON another build (a BENCH_VARIANTS entry of
apps/gpu-bundle.sh, or the baseline at an earlier commit). One row per case that the default
and at least one other build timed (median µs), each other build's time with its ratio to the
default's (below 1: faster), then per build the geometric mean of its ratios and its best and
worst case. Cases that skipped or failed their reference check have no median and are left
out, and so is a build whose JSON cannot be read (a run cut short by its time box leaves it
unfinished), with a message. apps/gpu-check.sh prints this table after the variants.
"""
import json
import math
import sys


def medians(path):
    """{case name without /manual_time: median µs} of one benchmark run."""
    try:
        with open(path) as f:
            runs = json.load(f)["benchmarks"]
        return {b["name"].removesuffix("/manual_time"): b["median_us"]
                for b in runs if "median_us" in b}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"variant_table: {path} is not a bench_targeted_dropout JSON output "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return None


def main(argv):
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        sys.exit(__doc__)
    default = medians(argv[1])
    if default is None:
        sys.exit(1)
    builds = []
    for arg in argv[2:]:
        name, path = arg.split("=", 1)
        m = medians(path)
        if m is not None:  # a run cut short by its time box leaves its JSON unfinished
            builds.append((name, m))
    cases = [c for c in default if any(c in m for _, m in builds)]
    if not cases:
        sys.exit("variant_table: no case was timed by the default and another build")
    print("| case | default µs | " + " | ".join(f"{n} µs" for n, _ in builds) + " |")
    print("|---|---:|" + "---:|" * len(builds))
    for c in cases:
        cells = [c, f"{default[c]:.1f}"]
        for _, m in builds:
            cells.append(f"{m[c]:.1f} ({m[c] / default[c]:.2f})" if c in m else "–")
        print("| " + " | ".join(cells) + " |")
    print()
    for name, m in builds:
        ratios = {c: m[c] / default[c] for c in cases if c in m}
        if not ratios:
            print(f"{name}: no case in common with the default")
            continue
        geo = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
        best = min(ratios, key=ratios.get)
        worst = max(ratios, key=ratios.get)
        print(f"{name}: {len(ratios)} cases, geometric mean {geo:.2f} of the default's time; "
              f"best {best} {ratios[best]:.2f}, worst {worst} {ratios[worst]:.2f}")


if __name__ == "__main__":
    main(sys.argv)
