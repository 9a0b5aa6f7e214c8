#!/usr/bin/env bash
# coat-train with data.loss_mask (supervised fine-tuning): a few steps of configs/tiny.json on the CPU over a
# token file and its loss mask (written here by hand in the loss-mask layout), every step's metrics record
# counting the targets the mask keeps (loss_tokens: more than none, fewer than the step's), the console line
# too; a mask of another token count is refused naming data.loss_mask.
# Usage: check_loss_mask_cli.sh <coat-train> <configs/tiny.json>
set -u
train=$1; config=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq_len=128; windows=40; count=$((windows * seq_len + 1))
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 4096 } 0 .. '$((count - 1))')' > "$work/sft.bin"
# Header: "COATMSK\0", version 1, reserved 0, the entry count; then one byte per token: 0 for each row's first
# token and for every third token (the "prompts"), 1 otherwise.
mask() {
  perl -e 'my $n = '"$1"'; print "COATMSK\0", pack("V V Q<", 1, 0, $n),
           pack("C*", map { ($_ % '$seq_len' == 0 || $_ % 3 == 0) ? 0 : 1 } 0 .. $n - 1)'
}
mask $count > "$work/sft.bin.mask"
mask $((count - 1)) > "$work/short.mask"
args=(--config "$config" --set data.path=\""$work/sft.bin"\" --set data.format=\"u16\" --set data.tokenizer=\"\"
      --set train.micro_batch_size=2 --set train.global_batch_size=4 --set train.max_steps=3
      --set train.eval_batches=1 --set optim.warmup_steps=1 --set logging.progress=\"off\")
OMP_NUM_THREADS=2 "$train" "${args[@]}" --set data.loss_mask=\""$work/sft.bin.mask"\" \
  --set logging.run_dir=\""$work/run"\" > "$work/train.log" 2>&1 ||
  { cat "$work/train.log"; echo "FAIL: training with data.loss_mask failed"; exit 1; }
cat "$work/train.log"
steps=0
while IFS= read -r line; do
  case $line in *'"loss":'*) ;; *) continue ;; esac
  n=$(grep -oE '"loss_tokens":[0-9]+' <<< "$line" | grep -oE '[0-9]+$')
  if [[ -z $n ]] || (( n <= 0 || n >= 4 * seq_len )); then
    echo "FAIL: step record without a loss_tokens count in (0, $((4 * seq_len))): $line"; exit 1
  fi
  steps=$((steps + 1))
done < "$work/run/metrics.jsonl"
[[ $steps == 3 ]] || { cat "$work/run/metrics.jsonl"; echo "FAIL: $steps step records, expected 3"; exit 1; }
grep -qE 'loss [0-9.]+ \([0-9]+ loss tokens\)' "$work/train.log" ||
  { echo "FAIL: the console line does not count the loss tokens"; exit 1; }
grep -q '"loss_mask": "'"$work/sft.bin.mask"'"' "$work/run/config.json" ||
  { cat "$work/run/config.json"; echo "FAIL: config.json does not hold data.loss_mask"; exit 1; }
if OMP_NUM_THREADS=2 "$train" "${args[@]}" --set data.loss_mask=\""$work/short.mask"\" \
     --set logging.run_dir=\""$work/short"\" > "$work/short.log" 2>&1; then
  echo "FAIL: a mask of another token count was accepted"; exit 1
fi
grep -q "'data.loss_mask'.*short.mask\" has $((count - 1)) entries but token file" "$work/short.log" ||
  { cat "$work/short.log"; echo "FAIL: the refusal does not name data.loss_mask and the counts"; exit 1; }
echo "PASS"
