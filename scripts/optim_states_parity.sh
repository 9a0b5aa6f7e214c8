#!/usr/bin/env bash
# Training parity of AdamW state storages (issue: FP8 AdamW): the same model, data, seed and batches trained
# with fp32, fp8_expand and plain fp8 optimizer states; prints the final training and validation losses and
# the relative gaps to fp32, and plots the three curves with scripts/plot_metrics.py.
#   scripts/optim_states_parity.sh [--device cuda] [--steps 1200] [--config configs/tiny.json] [--out runs/states]
#                                  [--set section.key=value ...]   (passed to every run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
device=cpu steps=1200 config=configs/tiny.json out=runs/states
# shellcheck source=scripts/parity_common.sh
source scripts/parity_common.sh
parity_parse_args "$@"
recipe=fp32
[ "$device" = cuda ] && recipe=bf16
for states in fp32 fp8_expand fp8; do
  parity_train "$states" --set precision.recipe=$recipe --set optim.state_dtype=$states
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for s in ("fp32", "fp8_expand", "fp8"):
    recs = [json.loads(l) for l in open(f"{out}/{s}/metrics.jsonl")]
    train = [r for r in recs if "loss" in r and r.get("kind", "train") == "train"]
    evals = [r for r in recs if "val_loss" in r]
    last = train[-20:]
    rows[s] = (sum(r["loss"] for r in last) / len(last), evals[-1]["val_loss"] if evals else float("nan"))
ref = rows["fp32"]
print(f"{'states':<12} {'train loss (mean of last 20 steps)':>36} {'val loss':>10} {'train gap':>10} {'val gap':>9}")
for s, (tl, vl) in rows.items():
    print(f"{s:<12} {tl:>36.4f} {vl:>10.4f} {100 * (tl / ref[0] - 1):>9.2f}% {100 * (vl / ref[1] - 1):>8.2f}%")
PY
parity_plot "$out/loss.png" "$out/fp32" "$out/fp8_expand" "$out/fp8"
