#!/usr/bin/python3
"""Plots fused/unfused speedup per bench case against the case's data volume.

  build/bench/bench/bench --benchmark_format=json --benchmark_out=bench.json --no_summary
  /usr/bin/python3 bench/plot.py bench.json speedup.png

Needs Debian's python3-matplotlib. One point per (mode, case), one colour per mode; the
horizontal line marks "as fast as unfused".
"""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    """{(mode, suite, case): {"fused": ms, "unfused": ms, "mb": data MB}}"""
    with open(path) as f:
        doc = json.load(f)
    cases = defaultdict(dict)
    for b in doc["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        parts = b["name"].split("/")
        if len(parts) < 4:
            continue
        mode, suite, case, variant = parts[:4]
        key = (mode, suite, case)
        cases[key][variant] = b["real_time"]
        cases[key]["mb"] = b.get("data_MB", 0.0)
    return {k: v for k, v in cases.items() if "fused" in v and "unfused" in v}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cases = load(sys.argv[1])
    if not cases:
        sys.exit("no fused/unfused pairs in " + sys.argv[1])
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"infer": "tab:blue", "train_fwd": "tab:orange", "train_step": "tab:green"}
    for mode, colour in colours.items():
        pts = [(v["mb"], v["unfused"] / v["fused"]) for (m, _, _), v in cases.items() if m == mode]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.scatter(xs, ys, color=colour, label=mode, alpha=0.8)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("data volume per case (input + output, MB)")
    ax.set_ylabel("speedup (unfused time / fused time)")
    ax.set_title("fusedcnn: fused ConvBN+ReLU vs Conv2D -> BatchNorm2D -> ReLU")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)
    print(f"{len(cases)} cases plotted to {sys.argv[2]}")


if __name__ == "__main__":
    main()
