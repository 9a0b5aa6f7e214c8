#!/usr/bin/env bash
# The main job: installs what is missing, builds, prepares the King James Bible corpus (Debian's bible-kjv)
# with coat-tokenize, trains configs/tiny.json (on the CPU in FP32 on a machine without a GPU, else on the GPU
# in BF16), and samples a few lines from the trained model. Running it again continues the same run (--resume auto) instead of
# overwriting it. Environment: COAT_CONFIG (default configs/tiny.json), COAT_BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
build_dir=${COAT_BUILD_DIR:-build}
bash scripts/prepare_kjv.sh "$build_dir/coat-tokenize"
config=${COAT_CONFIG:-configs/tiny.json}
# On a machine with a GPU (and a CUDA build) train there in BF16 mixed precision; else on the CPU in FP32.
device=()
if grep -q 'COAT_WITH_CUDA=1' "$build_dir/compile_commands.json" 2>/dev/null && command -v nvidia-smi >/dev/null &&
   nvidia-smi -L >/dev/null 2>&1; then
  device=(--device cuda --set precision.recipe=bf16 --set logging.run_dir=runs/tiny-cuda)
fi
"$build_dir/coat-train" --config "$config" --resume auto "${device[@]}" "$@"
run_dir=$("$build_dir/coat-train" --config "$config" --dry-run "${device[@]}" "$@" | sed -n 's/.*"run_dir": "\(.*\)".*/\1/p' | head -1)
echo "--- samples from $run_dir ---"
for prompt in "And God said" "The LORD is my shepherd" "Jesus answered and said unto them"; do
  "$build_dir/coat-generate" --checkpoint "$run_dir" --prompt "$prompt" --tokens 40 --temperature 0.8 --top-k 40 --seed 7
done
