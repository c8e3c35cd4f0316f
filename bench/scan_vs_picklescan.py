"""``scan`` over a folder tree against picklescan on the same tree: wall, CPU and peak RSS, runs in turn.

    python bench/scan_vs_picklescan.py PICKLESCAN TREE [TREE ...] [--runs 5]

The trees are built by ``scan_vs_picklescan.sh``: one of every format (copies of fixtures/ and of the picklescan
corpus), and one of pickle-bearing files only (the corpus and PyTorch files: what picklescan reads). Both tools walk
the tree recursively and exit 1 on what they find (the tree holds malicious files on purpose); the exit codes
are printed, not judged. What each looks at differs: picklescan opens files by their extension (pickles,
PyTorch files, numpy, zip and 7z archives); ckptsurgeon reads every file by content and opens each checkpoint
as ``ls`` would, so it does more work per tree.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import compare, floor_mib  # noqa: E402


def row(tree: str, name: str, series) -> str:
    wall, cpu, peak = (series.stat(k) for k in ("wall", "cpu", "peak_mib"))
    codes = sorted({r.code for r in series.runs})
    return (f"| {tree} | {name} | {wall[1]:.2f} s ({wall[0]:.2f}-{wall[2]:.2f}) | {cpu[1]:.2f} s | {peak[1]:.0f} MiB | "
            f"{','.join(map(str, codes))} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("picklescan")
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ckptsurgeon", default=os.path.join(os.path.dirname(sys.executable), "ckptsurgeon"))
    args = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}; "
          f"floor {floor_mib():.0f} MiB; {args.runs} runs of each after a warm-up, A and B in turn")
    print("| tree | command | wall (min-max) | cpu | peak RSS | exit |")
    print("|---|---|---|---|---|---|")
    for tree in args.trees:
        files = sum(len(f) for _, _, f in os.walk(tree))
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _, f in os.walk(tree) for n in f)
        name = f"{os.path.basename(tree.rstrip('/'))} ({files} files, {size / 2**20:.1f} MiB)"
        pick = [args.picklescan, "-p", tree]
        for label, extra in (("", []), (" --jobs 1", ["--jobs", "1"])):
            a, b, ratios = compare([args.ckptsurgeon, "scan", tree, "--summary", *extra], pick, args.runs)
            print(row(name, f"ckptsurgeon scan TREE --summary{label}", a))
            print(row(name, "picklescan -p TREE", b))
            ratios.sort()
            print(f"| {name} | ratio A/B (wall, median of pairs) | {ratios[len(ratios) // 2]:.2f} | | | |")
    print(f"load after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
