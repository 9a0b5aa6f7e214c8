#!/usr/bin/env bash
# Training parity of the precision recipes: the same model, data, seed and batches trained under bf16, fp8
# (FP8 linear layers, BF16 saved activations) and coat (FP8 linear layers, compressed saved activations and,
# unless the config or --set says otherwise, fp8_expand AdamW states: optim.state_dtype = auto); prints the
# final validation loss and the mean training loss of the last 20 steps with their relative differences to
# bf16, and plots the three curves into OUT/loss.png with scripts/plot_metrics.py.
#   scripts/recipes_parity.sh [--device cuda|cpu] [--steps 1200] [--config configs/tiny.json] [--out runs/recipes]
#                             [--recipes bf16,fp8,coat] [--set section.key=value ...]
# --recipes trains only those (e.g. one per GPU session); the table and the plot cover every recipe whose run
# is in OUT (OUT/<recipe>/metrics.jsonl), bf16 first as the reference.
# --set is passed to every run (e.g. --set optim.state_dtype=fp32 to compare the recipes with FP32 states).
# On the CPU the FP8 GEMMs run as an exact reference: correct but slow.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
device=cuda steps=1200 config=configs/tiny.json out=runs/recipes
# shellcheck source=scripts/parity_common.sh
source scripts/parity_common.sh
train=bf16,fp8,coat
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = --recipes ]; then train=$2; shift 2; else args+=("$1"); shift; fi
done
parity_parse_args ${args[@]+"${args[@]}"}
IFS=, read -r -a to_train <<<"$train"
for recipe in "${to_train[@]}"; do
  case "$recipe" in bf16|fp8|fp8_block|coat) ;; *) echo "recipes_parity.sh: unknown recipe '$recipe'" >&2; exit 2 ;; esac
  parity_train "$recipe" --set precision.recipe="$recipe"
done
recipes=()
for recipe in bf16 fp8 fp8_block coat; do [ -f "$out/$recipe/metrics.jsonl" ] && recipes+=("$recipe"); done
python3 - "$out" "${recipes[@]}" <<'PY'
import json, math, sys
out, recipes = sys.argv[1], sys.argv[2:]
rows = {}
for r in recipes:
    recs = [json.loads(l) for l in open(f"{out}/{r}/metrics.jsonl") if l.strip()]
    train = [x for x in recs if "loss" in x and "val_loss" not in x]
    evals = [x for x in recs if "val_loss" in x]
    last = train[-20:]
    rows[r] = (evals[-1]["val_loss"] if evals else math.nan, sum(x["loss"] for x in last) / len(last))
ref = rows[recipes[0]]
def gap(v, base):
    return 100 * (v / base - 1) if base and math.isfinite(base) and math.isfinite(v) else math.nan
print(f"{'recipe':<8} {'val loss':>10} {'vs ' + recipes[0]:>9} {'train loss (mean of last 20 steps)':>36} {'vs ' + recipes[0]:>9}")
for r, (vl, tl) in rows.items():
    print(f"{r:<8} {vl:>10.4f} {gap(vl, ref[0]):>8.2f}% {tl:>36.4f} {gap(tl, ref[1]):>8.2f}%")
PY
parity_plot "$out/loss.png" "${recipes[@]/#/$out/}"
