#!/usr/bin/env python3
"""The fused-vs-unfused-vs-PyTorch race as one markdown table.

Usage: python3 bench/race_table.py BENCH_JSON TORCH_JSONL

BENCH_JSON is bench_targeted_dropout's --benchmark_out (JSON), TORCH_JSONL the peer's --json
output, both from the same call on the same GPU (apps/gpu-check.sh writes both). Times are
medians in microseconds. GB/s count 8.125 bytes per fp32 weight (read W, write W', one mask bit).
The copy ceiling is the fastest device-to-device copy the benchmark measured in that run
(8 bytes per weight, one large matrix), so "% of copy" compares every set with the card's
bandwidth rather than with a copy issued layer by layer. PyTorch's "unit" variant is
unit-level dropout, a different operation, so the weight-level comparison uses the fastest of
its sort, kthvalue, topk and compiled variants. "warp rows", "block rows" and "group rows" are
the fused launch with every short row forced onto a warp, a whole block or 4 warps, where the
set has short rows. "shared select" is the fused launch with the shared-memory select for
the block rows of at most 4096 entries (TdBlockSelect::Shared) instead of the default register
select, "block rows shared" the same with every short row on a block. "prefetched" puts every
row on a block with TdBlockSelect::Prefetched (each block copies its next row in while it works
on the current one), on the sets whose rows all allow it. Runs of commits where the
shared select was the default name the other way round: "regsel" is the register select there.
A column is printed when the run timed its launch for some set.
"""
import json
import sys

WEIGHT_VARIANTS = ("sort", "kthvalue", "topk", "compiled")
ORDER = ("mlp", "resnet32", "vgg16", "transformer", "square", "tall", "wide")
# The fused launches of one shape set: the default, then every forced placement or select,
# each with its column's heading, in this order.
FUSED_PATHS = {"cuda_fused": "fused", "cuda_fused_warp_rows": "warp rows",
               "cuda_fused_block_rows": "block rows", "cuda_fused_group_rows": "group rows",
               "cuda_fused_shared": "shared select",
               "cuda_fused_block_rows_shared": "block rows shared",
               "cuda_fused_prefetch": "prefetched",
               "cuda_fused_regsel": "regsel", "cuda_fused_block_rows_regsel": "block rows regsel"}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bench = json.load(open(sys.argv[1]))["benchmarks"]
    ours = {}
    for b in bench:
        if "median_us" not in b:
            continue  # a case that skipped or failed its reference check
        path, shape_set = b["name"].split("/")[:2]
        ours[(path, shape_set)] = b
    copy_gbps = max(b["copy_GBps"] for b in ours.values())
    torch = {}
    for line in open(sys.argv[2]):
        r = json.loads(line)
        torch[(r["variant"], r["shape_set"])] = r
    print(f"copy ceiling: {copy_gbps:.0f} GB/s (device-to-device, read + write)\n")
    timed = {path for path, _ in ours}
    columns = [p for p in list(FUSED_PATHS)[1:] if p in timed]
    print("| shape set | weights | fused µs | fused GB/s | % of copy | "
          + "".join(f"{FUSED_PATHS[p]} µs | " for p in columns)
          + "per-layer µs | unfused µs | fastest PyTorch (weight) µs | fused vs unfused "
          "| fused vs PyTorch |")
    print("|---|" + "---:|" * (9 + len(columns)))
    for s in ORDER:
        f = ours.get(("cuda_fused", s))
        if f is None:
            continue
        u = ours.get(("cuda_unfused", s))
        pl = ours.get(("cuda_fused_per_layer", s))
        forced = [ours.get((p, s)) for p in columns]
        peers = [torch[(v, s)] for v in WEIGHT_VARIANTS if (v, s) in torch]
        best = min(peers, key=lambda r: r["median_us"]) if peers else None
        gbps = 8.125 * f["weights"] / (f["median_us"] * 1e-6) / 1e9
        cells = [
            s,
            f"{int(f['weights']):,}",
            f"{f['median_us']:.1f}",
            f"{gbps:.0f}",
            f"{100 * gbps / copy_gbps:.0f}%",
            *(f"{r['median_us']:.1f}" if r else "–" for r in forced),
            f"{pl['median_us']:.1f}" if pl else "–",
            f"{u['median_us']:.1f}" if u else "–",
            f"{best['median_us']:.1f} ({best['variant']})" if best else "–",
            f"{u['median_us'] / f['median_us']:.1f}×" if u else "–",
            f"{best['median_us'] / f['median_us']:.1f}×" if best else "–",
        ]
        print("| " + " | ".join(cells) + " |")
    print_targets(ours, torch, copy_gbps)


def print_targets(ours, torch, copy_gbps):
    """The issue's targets, each against the fastest fused launch that ran (named, since a
    forced placement or select is not what the default picks)."""
    def fastest(s):
        runs = [(ours[(p, s)]["median_us"], p) for p in FUSED_PATHS if (p, s) in ours]
        return min(runs) if runs else None
    print("\ntargets (fastest fused launch of the set, and which):")
    sq = fastest("square")
    if sq:
        us, path = sq
        gbps = 8.125 * ours[(path, "square")]["weights"] / (us * 1e-6) / 1e9
        u = ours.get(("cuda_unfused", "square"))
        peers = [torch[(v, "square")]["median_us"] for v in WEIGHT_VARIANTS if (v, "square") in torch]
        print(f"- 4096x4096: {us:.1f} us ({path}): {100 * gbps / copy_gbps:.0f}% of copy (target 70%)"
              + (f", {u['median_us'] / us:.1f}x unfused (target 3x)" if u else "")
              + (f", {min(peers) / us:.1f}x the fastest PyTorch (target 4x)" if peers else ""))
    r32 = fastest("resnet32")
    if r32:
        queued = ours[(r32[1], "resnet32")].get("queued_us")
        print(f"- ResNet-32, one launch: {r32[0]:.1f} us ({r32[1]}) (target 10 us)"
              + (f"; {queued:.1f} us a call with 20 queued back to back" if queued else ""))


if __name__ == "__main__":
    main()
