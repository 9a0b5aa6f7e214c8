#!/usr/bin/env bash
# Sharded training against one process, per precision recipe: trains configs/dist_parity_small.json (or
# --config C) for its max_steps once in one process and once under `mpirun -np N` (ranks on the same
# machine; on one GPU they share it through the host-staged MPI communicator), and prints the worst relative
# difference of the per-step losses. Exits non-zero when one exceeds --bound (default 1e-3).
#   scripts/dist_parity.sh [--config C] [--np N] [--recipes bf16,fp8,fp8_block,coat] [--bound B] [--out DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
config=configs/dist_parity_small.json; np=2; recipes=bf16,fp8,fp8_block,coat; bound=1e-3; out=runs/dist_parity
while (($#)); do
  case $1 in
    --config) config=$2; shift 2 ;; --np) np=$2; shift 2 ;; --recipes) recipes=$2; shift 2 ;;
    --bound) bound=$2; shift 2 ;; --out) out=$2; shift 2 ;;
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
for recipe in ${recipes//,/ }; do
  common=(--config "$config" --set data.path=\""$out/tokens.bin"\" --set precision.recipe=\""$recipe"\")
  "$bin/coat-train" "${common[@]}" --set logging.run_dir=\""$out/$recipe-1"\" > "$out/$recipe-1.log" 2>&1
  mpirun "${mpi_flags[@]}" -np "$np" "$bin/coat-train" "${common[@]}" \
    --set logging.run_dir=\""$out/$recipe-$np"\" > "$out/$recipe-$np.log" 2>&1
  python3 - "$out/$recipe-1/metrics.jsonl" "$out/$recipe-$np/metrics.jsonl" "$recipe" "$np" "$bound" <<'PY' || status=1
import json, sys
def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l and '"val_loss"' not in l]
one, many = losses(sys.argv[1]), losses(sys.argv[2])
assert len(one) == len(many) and one, f"{len(one)} and {len(many)} steps"
worst = max(abs(a - b) / abs(a) for a, b in zip(one, many))
ok = worst <= float(sys.argv[5])
print(f"{sys.argv[3]:10s} {len(one)} steps, 1 rank vs {sys.argv[4]}: worst relative loss difference {worst:.3g} "
      f"(first {one[0]:.4f}, last {one[-1]:.4f} vs {many[-1]:.4f}) {'ok' if ok else 'OVER ' + sys.argv[5]}")
sys.exit(0 if ok else 1)
PY
done
exit $status
