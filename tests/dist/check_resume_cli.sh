#!/usr/bin/env bash
# coat-train's --resume across world sizes, end to end: 2 ranks train 6 steps (checkpoints at 3 and 6); a byte of
# rank 1's file of step 6 is flipped; 3 ranks resume with --resume auto, which must rename step 6
# step_00000006.corrupt, resume from step 3 and train to step 9; the tools read the 3-rank checkpoint;
# --resume of step 3 (older than the newest) and a config of another model are refused before anything is written.
# Usage: check_resume_cli.sh <mpiexec> <np flag> <coat-train> <config> [mpiexec flags...]
set -u
mpiexec=$1; np_flag=$2; program=$3; config=$4; shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
fail() { echo "--- log:"; cat "$work/log"; echo "FAIL: $*"; exit 1; }
train() {  # <np> <run dir> [args...]
  local np=$1 run=$2; shift 2
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$mpiexec" "$@" "$np_flag" "$np" "$program" --config "$config" \
    --set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\" --set train.micro_batch_size=1 \
    --set train.global_batch_size=6 --set checkpoint.interval=3 --set checkpoint.keep_last=0 \
    --set train.eval_interval=0 --set logging.run_dir=\""$run"\" "${extra[@]}" > "$work/log" 2>&1
}
ck="$work/run/checkpoints"
extra=(--set train.max_steps=6)
train 2 "$work/run" "$@" || fail "the 2-rank run failed"
[ -f "$ck/step_00000006/COMPLETE" ] && [ -f "$ck/step_00000006/rank_00001.bin" ] || fail "no 2-rank checkpoint of step 6"
perl -e 'open(my $f, "+<", $ARGV[0]) or die; my $n = -s $f; seek($f, $n - 5, 0); read($f, my $b, 1);
         seek($f, $n - 5, 0); print $f chr(ord($b) ^ 0x20); close($f)' "$ck/step_00000006/rank_00001.bin"

extra=(--set train.max_steps=9 --resume auto)
train 3 "$work/run" "$@" || fail "the 3-rank resume failed"
grep -q "step_00000006 is damaged and was renamed .*step_00000006.corrupt" "$work/log" || fail "no warning about the damaged checkpoint"
grep -q "rank_00001.bin" "$work/log" || fail "the warning does not name the damaged file"
grep -q "resumed from .*step_00000003 (step 3, .* written by 2 ranks)" "$work/log" || fail "did not resume from step 3"
[ -d "$ck/step_00000006.corrupt" ] || fail "the damaged checkpoint was not kept as step_00000006.corrupt"
[ -f "$ck/step_00000009/COMPLETE" ] && [ -f "$ck/step_00000009/rank_00002.bin" ] || fail "no 3-rank checkpoint of step 9"

tools=$(dirname "$program")
"$tools/coat-generate" --checkpoint "$work/run" --ids 1,2,3 --logits-out "$work/logits.f32" > "$work/log" 2>&1 ||
  fail "coat-generate cannot read the 3-rank checkpoint"
[ "$(stat -c %s "$work/logits.f32")" -eq $((3 * 64 * 4)) ] || fail "coat-generate wrote no [3, 64] logits"
"$tools/coat-convert" export --checkpoint "$work/run" --output "$work/hf" > "$work/log" 2>&1 ||
  fail "coat-convert export cannot read the 3-rank checkpoint"
[ -f "$work/hf/model.safetensors" ] || fail "coat-convert export wrote no model.safetensors"
"$tools/coat-optim-study" --checkpoint "$work/run" > "$work/log" 2>&1 || fail "coat-optim-study cannot read the 3-rank checkpoint"
grep -q "(step 9)" "$work/log" || fail "coat-optim-study did not read step 9"

extra=(--set train.max_steps=12 --resume "$ck/step_00000003")
train 2 "$work/run" "$@" && fail "--resume of step 3 with step 9 in the run directory was accepted"
grep -q "is step 3 but the run directory holds a newer complete checkpoint" "$work/log" || fail "no clear refusal of an older --resume"

extra=(--set train.max_steps=12 --set model.hidden_size=48 --resume "$ck/step_00000009")
train 2 "$work/other" "$@" && fail "a checkpoint of another model was accepted"
grep -q "another model (model.hidden_size: checkpoint 32, this config 48)" "$work/log" || fail "the refusal does not name the key"
[ ! -e "$work/other" ] || fail "the refused run wrote into its run directory"
echo "PASS"
