#!/usr/bin/env python3
"""Tests of the scripts that turn a GPU run's benchmark output into the tables the README and
bench/results/ quote: bench/race_table.py and bench/variant_table.py, on a committed H200 run
(their figures are the README's) and on small runs written here. ctest runs each class as one
test (tests/CMakeLists.txt): python3 tests/bench_scripts_test.py CLASS.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H200 = os.path.join(ROOT, "bench", "results", "2026-11-27-h200")


def run(script, *args):
    """(exit code, stdout, stderr) of a bench/ script."""
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def bench_case(name, median_us, weights=1000, copy_gbps=4000.0, **counters):
    """One entry of bench_targeted_dropout's --benchmark_out, as the fields the scripts read."""
    return {"name": name + "/manual_time", "median_us": median_us, "weights": weights,
            "copy_GBps": copy_gbps, **counters}


def write_json(folder, name, cases):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump({"context": {}, "benchmarks": cases}, f)
    return path


class RaceTable(unittest.TestCase):
    def test_the_committed_h200_run_gives_the_readme_figures(self):
        code, out, err = run("race_table.py", os.path.join(H200, "bench_targeted_dropout.json"),
                             os.path.join(H200, "torch_td.jsonl"))
        self.assertEqual(code, 0, err)
        self.assertIn("copy ceiling: 4104 GB/s", out)
        self.assertIn("| square | 16,777,216 | 151.0 | 903 | 22% |", out)
        self.assertIn("| 1625.0 | 551.2 (topk) | 10.8× | 3.7× |", out)
        self.assertIn("| resnet32 | 460,800 | 25.8 | 145 | 4% |", out)
        self.assertIn("- 4096x4096: 151.0 us (cuda_fused): 22% of copy (target 70%), 10.8x "
                      "unfused (target 3x), 3.7x the fastest PyTorch (target 4x)", out)
        self.assertIn("- ResNet-32, one launch: 25.8 us (cuda_fused) (target 10 us)", out)

    def test_targets_are_judged_on_the_fastest_fused_launch_and_name_it(self):
        with tempfile.TemporaryDirectory() as d:
            # The copy ceiling is the fastest copy of the run: 2600 GB/s.
            bench = write_json(d, "bench.json", [
                bench_case("cuda_fused/resnet32", 25.0, copy_gbps=2000.0),
                bench_case("cuda_fused_group_rows/resnet32", 9.5, copy_gbps=2000.0,
                           queued_us=7.3),
                bench_case("cuda_fused_warp_rows/resnet32", 30.0, copy_gbps=2000.0),
                # 16,000 weights at 8.125 B in 0.1 us: 1300 GB/s, half of the copy.
                bench_case("cuda_fused/square", 0.2, weights=16000, copy_gbps=2600.0),
                bench_case("cuda_fused_shared/square", 0.1, weights=16000, copy_gbps=2600.0),
                bench_case("cuda_fused_prefetch/square", 0.15, weights=16000, copy_gbps=2600.0),
                bench_case("cuda_unfused/square", 1.0, weights=16000, copy_gbps=2600.0),
                {"name": "cuda_fused_block_rows/resnet32/manual_time", "error_occurred": True},
            ])
            torch = os.path.join(d, "torch.jsonl")
            with open(torch, "w") as f:
                for variant, us in (("topk", 0.45), ("kthvalue", 0.6), ("unit", 0.01)):
                    f.write(json.dumps({"variant": variant, "shape_set": "square",
                                        "median_us": us}) + "\n")
            code, out, err = run("race_table.py", bench, torch)
        self.assertEqual(code, 0, err)
        self.assertIn("copy ceiling: 2600 GB/s", out)
        # PyTorch's unit variant is another operation: the weight-level race ignores it.
        # A column for each fused launch the run timed for some set, in a fixed order: none for
        # block rows, whose only case failed.
        self.assertIn("| % of copy | warp rows µs | group rows µs | shared select µs "
                      "| prefetched µs | per-layer µs |", out)
        self.assertIn("|---|" + "---:|" * 13 + "\n", out)
        self.assertIn("- 4096x4096: 0.1 us (cuda_fused_shared): 50% of copy (target 70%), 10.0x "
                      "unfused (target 3x), 4.5x the fastest PyTorch (target 4x)", out)
        self.assertIn("- ResNet-32, one launch: 9.5 us (cuda_fused_group_rows) (target 10 us); "
                      "7.3 us a call with 20 queued back to back", out)


class VariantTable(unittest.TestCase):
    def test_the_committed_h200_run_against_kernel_v4(self):
        code, out, err = run("variant_table.py",
                             os.path.join(H200, "bench_targeted_dropout.json"),
                             "v4=" + os.path.join(H200, "bench_fused_v4_baseline.json"))
        self.assertEqual(code, 0, err)
        self.assertIn("| cuda_fused/mlp | 29.3 | 17.0 (0.58) |", out)
        self.assertIn("| cuda_fused/transformer | 221.5 | 421.7 (1.90) |", out)
        self.assertIn("v4: 7 cases, geometric mean 1.11 of the default's time; best "
                      "cuda_fused/mlp 0.58, worst cuda_fused/transformer 1.90", out)
        # Only the cases both builds timed: v4's benchmark had no forced placements.
        self.assertNotIn("cuda_fused_block_rows/", out)

    def test_builds_side_by_side_and_an_unfinished_one_left_out(self):
        with tempfile.TemporaryDirectory() as d:
            default = write_json(d, "default.json", [
                bench_case("cuda_fused/square", 100.0), bench_case("cuda_fused/resnet32", 20.0),
                bench_case("cuda_unfused/square", 900.0)])
            fast = write_json(d, "fast.json", [
                bench_case("cuda_fused/square", 50.0), bench_case("cuda_fused/resnet32", 40.0)])
            only_square = write_json(d, "sq.json", [bench_case("cuda_fused/square", 80.0)])
            cut = os.path.join(d, "cut.json")
            with open(cut, "w") as f:
                f.write('{"benchmarks": [{"name": "cuda_fused/sq')  # killed mid-write
            code, out, err = run("variant_table.py", default, "fast=" + fast,
                                 "cut=" + cut, "sq=" + only_square)
        self.assertEqual(code, 0, err)
        self.assertIn("| case | default µs | fast µs | sq µs |", out)
        self.assertIn("| cuda_fused/square | 100.0 | 50.0 (0.50) | 80.0 (0.80) |", out)
        self.assertIn("| cuda_fused/resnet32 | 20.0 | 40.0 (2.00) | – |", out)
        self.assertNotIn("cuda_unfused", out)  # no other build timed it
        self.assertIn("fast: 2 cases, geometric mean 1.00 of the default's time; best "
                      "cuda_fused/square 0.50, worst cuda_fused/resnet32 2.00", out)
        self.assertIn("sq: 1 cases, geometric mean 0.80", out)
        self.assertIn(cut + " is not a bench_targeted_dropout JSON output", err)
        self.assertNotIn("cut", out)

    def test_an_unreadable_default_or_nothing_in_common_is_an_error(self):
        with tempfile.TemporaryDirectory() as d:
            default = write_json(d, "default.json", [bench_case("cuda_fused/square", 100.0)])
            other = write_json(d, "other.json", [bench_case("cuda_fused/mlp", 10.0)])
            missing = os.path.join(d, "missing.json")
            for args, message in (
                    ((missing, "x=" + default),
                     missing + " is not a bench_targeted_dropout JSON output"),
                    ((default, "x=" + other), "no case was timed by the default and another build"),
                    ((default, other), "Usage:")):  # not NAME=JSON
                code, out, err = run("variant_table.py", *args)
                self.assertEqual(code, 1, out + err)
                self.assertIn(message, err)
                self.assertNotIn("Traceback", err)
                self.assertEqual(out, "")


if __name__ == "__main__":
    unittest.main()
