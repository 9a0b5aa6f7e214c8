#!/usr/bin/env bash
# The main job: installs what is missing, builds, prepares the King James Bible corpus (Debian's bible-kjv)
# with coat-tokenize, trains configs/tiny.json (on the CPU on a machine without a GPU), and samples a few
# lines from the trained model. Running it again continues the same run (--resume auto) instead of
# overwriting it. Environment: COAT_CONFIG (default configs/tiny.json), COAT_BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
build_dir=${COAT_BUILD_DIR:-build}
bash scripts/prepare_kjv.sh "$build_dir/coat-tokenize"
config=${COAT_CONFIG:-configs/tiny.json}
"$build_dir/coat-train" --config "$config" --resume auto "$@"
run_dir=$("$build_dir/coat-train" --config "$config" --dry-run "$@" | sed -n 's/.*"run_dir": "\(.*\)".*/\1/p' | head -1)
echo "--- samples from $run_dir ---"
for prompt in "And God said" "The LORD is my shepherd" "Jesus answered and said unto them"; do
  "$build_dir/coat-generate" --checkpoint "$run_dir" --prompt "$prompt" --tokens 40 --temperature 0.8 --top-k 40 --seed 7
done
