#!/usr/bin/env python3
"""Draws the loss curves of one or more coat-train runs into a PNG.

    scripts/plot_metrics.py runs/tiny [runs/other ...] -o loss.png [--smooth 10] [--labels a,b]

Each run directory holds metrics.jsonl (one JSON object per line: training records with "loss", evaluation
records with "val_loss"). A resumed run appends to the file; the last record of each step wins. Needs
matplotlib (Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys


def read_run(path):
    metrics = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.exists(metrics):
        sys.exit(f"plot_metrics: {metrics} does not exist")
    train, val = {}, {}
    with open(metrics) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot_metrics: {metrics}:{n}: not JSON ({e})")
            if "val_loss" in rec:
                val[rec["step"]] = rec["val_loss"]
            elif "loss" in rec:
                train[rec["step"]] = rec["loss"]
    return sorted(train.items()), sorted(val.items())


def smooth(values, window):
    if window <= 1:
        return values
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    ap.add_argument("-o", "--output", default="loss.png")
    ap.add_argument("--smooth", type=int, default=1, help="moving-average window for training loss")
    ap.add_argument("--labels", default="", help="comma-separated labels (default: directory names)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_metrics: matplotlib is missing (Debian/Ubuntu: apt-get install python3-matplotlib)")
    labels = args.labels.split(",") if args.labels else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    fig, ax = plt.subplots(figsize=(8, 5))
    for run, label in zip(args.runs, labels):
        train, val = read_run(run)
        if train:
            steps, losses = zip(*train)
            line, = ax.plot(steps, smooth(list(losses), args.smooth), label=f"{label} train", linewidth=1)
            final = f"{losses[-1]:.4f}"
            if val:
                vs, vl = zip(*val)
                ax.plot(vs, vl, "o--", color=line.get_color(), label=f"{label} validation", markersize=3)
                final += f", val {vl[-1]:.4f}"
            print(f"{label}: {len(train)} steps, final train loss {final}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
