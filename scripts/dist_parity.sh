#!/usr/bin/env bash
# Sharded training against one process, per precision recipe: trains configs/dist_parity_small.json (or
# --config C) for its max_steps once in one process and once under `mpirun -np N` (ranks on the same
# machine; on one GPU they share it through the host-staged MPI communicator), and prints the worst relative
# difference of the per-step losses, beside the difference one process shows when only its summation order
# changes (the same global batch in micro-batches of 2: a floor no sharded run can be expected to beat).
# Exits non-zero when a run fails or a sharded difference exceeds both --bound (default 1e-3) and that floor.
#   scripts/dist_parity.sh [--config C] [--np N] [--recipes bf16,fp8,fp8_block,coat] [--bound B] [--out DIR]
#                          [--set KEY=VALUE ...]   (config overrides for every run, as coat-train --set takes them)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
config=configs/dist_parity_small.json; np=2; recipes=bf16,fp8,fp8_block,coat; bound=1e-3; out=runs/dist_parity
extra=()
while (($#)); do
  case $1 in
    --config) config=$2; shift 2 ;; --np) np=$2; shift 2 ;; --recipes) recipes=$2; shift 2 ;;
    --bound) bound=$2; shift 2 ;; --out) out=$2; shift 2 ;; --set) extra+=(--set "$2"); shift 2 ;;
    *) echo "dist_parity: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=${COAT_BIN:-build}
rm -rf "$out"; mkdir -p "$out"
# A learnable stream of token ids below the vocabulary (a repeating pattern with noise), raw u16.
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['model']['vocab_size'])" "$config")
perl -e 'srand(5); print pack("v*", map { rand() < 0.25 ? int(rand($ARGV[0])) : ($_ * 7) % $ARGV[0] } 0 .. 399999)' \
  "$vocab" > "$out/tokens.bin"
mpi_flags=(--allow-run-as-root --oversubscribe -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH)
export NCCL_NVLS_ENABLE=0
status=0
run() {  # run NAME ARGS...: a coat-train run, its log in $out/NAME.log; a failure prints the log's tail
  local name=$1; shift
  if ! "$@" --set logging.run_dir=\""$out/$name"\" > "$out/$name.log" 2>&1; then
    echo "$name: FAILED"; grep -v '\[info\] step' "$out/$name.log" | tail -n 15; return 1
  fi
}
for recipe in ${recipes//,/ }; do
  common=(--config "$config" --set data.path=\""$out/tokens.bin"\" --set precision.recipe=\""$recipe"\" "${extra[@]}")
  run "$recipe-1" "$bin/coat-train" "${common[@]}" || { status=1; continue; }
  run "$recipe-1-micro2" "$bin/coat-train" "${common[@]}" --set train.micro_batch_size=2 || { status=1; continue; }
  run "$recipe-$np" mpirun "${mpi_flags[@]}" -np "$np" "$bin/coat-train" "${common[@]}" || { status=1; continue; }
  python3 - "$out" "$recipe" "$np" "$bound" <<'PY' || status=1
import json, sys
out, recipe, np, bound = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{out}/{run}/metrics.jsonl") if '"loss"' in l and '"val_loss"' not in l]
def worst(a, b):
    assert len(a) == len(b) and a, f"{len(a)} and {len(b)} steps"
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))
one = losses(f"{recipe}-1")
sharded, floor = worst(one, losses(f"{recipe}-{np}")), worst(one, losses(f"{recipe}-1-micro2"))
ok = sharded <= max(bound, floor)
print(f"{recipe:10s} {len(one)} steps: 1 rank vs {np} ranks {sharded:.3g}; 1 rank vs 1 rank in micro-batches of 2 "
      f"{floor:.3g} (last loss {one[-1]:.4f}) {'ok' if ok else 'OVER'}")
sys.exit(0 if ok else 1)
PY
done
exit $status
