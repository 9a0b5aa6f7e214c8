#!/usr/bin/env bash
# scripts/finetune_example.sh on the CPU, the tiny model it makes itself: it must succeed, the fine-tuning's
# training loss (completion tokens only) must go down, and the exported HF files must be there and complete.
# Exit 77 (ctest: skipped) with the reason when python3 lacks the tokenizers or jinja2 package.
#   check_finetune_example.sh BIN_DIR
set -euo pipefail
bin=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if ! why=$(python3 -c 'import tokenizers, jinja2' 2>&1); then
  echo "SKIP: python3 cannot import tokenizers and jinja2 ($(tail -1 <<< "$why")); scripts/setup.sh installs them"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
work=$tmp/work
bash "$repo/scripts/finetune_example.sh" --bin "$bin" --work "$work" --device cpu --steps 12 > "$tmp/log" 2>&1 || {
  cat "$tmp/log"; echo "FAIL: finetune_example.sh exited non-zero"; exit 1; }
tail -12 "$tmp/log"
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
records = [json.loads(line) for line in open(os.path.join(work, "sft", "metrics.jsonl"))]
train = [(r["step"], r["loss"]) for r in records if "loss" in r]
assert [s for s, _ in train] == list(range(1, 13)), f"fine-tuning steps logged: {[s for s, _ in train]}"
assert all(r["loss_tokens"] < r["tokens"] for r in records if "loss" in r), "the loss mask left every token counted"
first = sum(l for _, l in train[:3]) / 3
last = sum(l for _, l in train[-3:]) / 3
assert last < 0.8 * first, f"fine-tuning loss did not go down: first 3 steps {first:.4f}, last 3 {last:.4f}"
config = json.load(open(os.path.join(work, "sft", "config.json")))
assert config["precision"]["recipe"] == "coat", config["precision"]
assert config["train"]["init_from"].endswith("imported"), config["train"]["init_from"]
export = os.path.join(work, "export")
index = json.load(open(os.path.join(export, "model.safetensors.index.json")))
shards = sorted(set(index["weight_map"].values()))
assert len(shards) > 1, f"one shard only: {shards}"
for name in shards + ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
    assert os.path.getsize(os.path.join(export, name)) > 0, name
hf = json.load(open(os.path.join(export, "config.json")))
assert hf["torch_dtype"] == "bfloat16", hf["torch_dtype"]
tok = json.load(open(os.path.join(export, "tokenizer.json")))
ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
assert (hf["bos_token_id"], hf["eos_token_id"]) == (ids["<s>"], ids["</s>"]), (hf["bos_token_id"], hf["eos_token_id"])
assert os.path.getsize(os.path.join(work, "generate.txt")) > 0, "coat-generate wrote nothing"
print(f"PASS: fine-tuning loss {first:.4f} -> {last:.4f} (first/last 3 steps), {len(shards)} shards exported")
PY
