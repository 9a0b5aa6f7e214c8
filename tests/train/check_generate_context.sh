#!/usr/bin/env bash
# coat-generate refuses a prompt longer than the model's max_position_embeddings (it used to keep its last
# max_position_embeddings tokens without a word), and takes one of exactly that length.
# Usage: check_generate_context.sh <coat-train> <coat-generate> <config>
set -u
train=$1; generate=$2; config=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
OMP_NUM_THREADS=1 "$train" --config "$config" --set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\" \
  --set train.max_steps=2 --set logging.run_dir=\""$work/run"\" --set logging.progress=\"off\" > "$work/train.log" 2>&1 ||
  { cat "$work/train.log"; echo "FAIL: training failed"; exit 1; }
max=$(grep -oE '"max_position_embeddings": [0-9]+' "$work/run/config.json" | grep -oE '[0-9]+$')
ids() { seq -s, 1 "$1" | sed -E 's/[0-9]+/5/g'; }
"$generate" --checkpoint "$work/run" --ids "$(ids "$max")" --logits-out "$work/logits.f32" > "$work/ok.log" 2>&1 ||
  { cat "$work/ok.log"; echo "FAIL: a prompt of max_position_embeddings = $max tokens was refused"; exit 1; }
if "$generate" --checkpoint "$work/run" --ids "$(ids $((max + 1)))" --logits-out "$work/logits.f32" > "$work/long.log" 2>&1; then
  echo "FAIL: a prompt of $((max + 1)) tokens was accepted"; exit 1
fi
grep -q -- "--ids holds $((max + 1)) tokens, more than the model's max_position_embeddings = $max" "$work/long.log" ||
  { cat "$work/long.log"; echo "FAIL: the refusal does not give the counts"; exit 1; }
cat "$work/long.log"
echo "PASS"
