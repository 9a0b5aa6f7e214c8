#!/usr/bin/env bash
# Fine-tuning a Hugging Face model end to end: import, SFT data, fine-tune under the coat recipe, export,
# generate, and (where torch + transformers are installed) load the export in transformers and compare.
#
#   scripts/finetune_example.sh [--hf DIR | --base coat|transformers] [--data FILE] [--device cpu|cuda]
#                               [--np N] [--work DIR] [--config FILE] [--recipe R] [--steps N]
#                               [--max-shard-size S] [--bin DIR] [--set section.key=value ...]
#
#   --hf DIR     an HF model directory (config.json, model.safetensors or a sharded index, tokenizer.json,
#                tokenizer_config.json with a chat template and eos_token). Without it the script makes a tiny
#                one itself (no torch or transformers needed): a byte-level BPE tokenizer trained with the
#                `tokenizers` library, a small Llama pretrained a few steps by coat-train, exported by
#                coat-convert as the "published" model.
#   --base B     without --hf: coat (the above, default) or transformers: the tiny model is instead written by
#                transformers' own save_pretrained (Llama-3.1 shape: llama3 RoPE scaling, rope_theta 500000,
#                grouped KV heads; random weights, BF16, sharded); needs torch and transformers.
#   --data FILE  chat JSONL ({"messages": [...]} or {"prompt", "completion"} lines); default: a small
#                arithmetic chat set the script writes.
#   --device     cpu (default) or cuda; --np N runs the fine-tuning under mpirun with N ranks.
#   --recipe     precision.recipe of the fine-tuning (default coat: FP8 on the GPU, emulated on the CPU).
#   --steps N    train.max_steps of the fine-tuning (default: the config's; 40 for the tiny model).
#   --set        passed on to the fine-tuning's coat-train.
#
# The steps and where their files go (under --work, default runs/finetune_example; it must not exist yet):
#   a. base/             the tiny "published" model (only without --hf; base/pretrain/ holds its pretraining)
#   b. imported/         coat-convert import of the HF model: a native checkpoint at step 0
#   c. data/             chat.jsonl, sft.bin + sft.bin.mask (prepare_data.py sft, packed to data.seq_len)
#   d. sft/              the fine-tuning run (config.json, metrics.jsonl, checkpoints/)
#   e. export/           the fine-tuned model as HF files: BF16 safetensors shards + index, config.json,
#                        generation_config.json, and the tokenizer files copied from the HF model
#   f.                   coat-generate answers a chat prompt with the fine-tuned checkpoint
#   g. parity/           transformers loads export/, its FP32 logits against ours on the same weights
#                        (export/ imported back into parity/roundtrip), relative L2 <= 1e-4; HF generates too
# Ends with which steps ran and which were skipped (and why); exits non-zero when a step fails.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hf=""; data=""; device=cpu; np=1; work=runs/finetune_example; config="$repo/configs/finetune_example.json"
recipe=coat; steps=""; shard=""; bin="$repo/build"; user_sets=(); base=coat
while [[ $# -gt 0 ]]; do
  case $1 in
    --hf) hf=$2; shift 2 ;; --data) data=$2; shift 2 ;; --device) device=$2; shift 2 ;; --np) np=$2; shift 2 ;;
    --work) work=$2; shift 2 ;; --config) config=$2; shift 2 ;; --recipe) recipe=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;; --max-shard-size) shard=$2; shift 2 ;; --bin) bin=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --set) user_sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "finetune_example.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $base == coat || $base == transformers ]] || { echo "finetune_example.sh: --base is coat or transformers, not '$base'" >&2; exit 2; }
if [[ $base == transformers ]] && ! python3 -c 'import torch, transformers' 2> /dev/null; then
  echo "finetune_example.sh: --base transformers needs python3 with torch and transformers" >&2; exit 3
fi
[[ $device == cpu || $device == cuda ]] || { echo "finetune_example.sh: --device is cpu or cuda, not '$device'" >&2; exit 2; }
[[ $np =~ ^[1-9][0-9]*$ ]] || { echo "finetune_example.sh: --np takes a positive number, not '$np'" >&2; exit 2; }
for tool in coat-train coat-convert coat-generate; do
  [[ -x $bin/$tool ]] || { echo "finetune_example.sh: $bin/$tool is missing (build it, or pass --bin DIR)" >&2; exit 2; }
done
if [[ -e $work ]]; then
  echo "finetune_example.sh: $work already exists; remove it or pass another --work DIR" >&2
  exit 2
fi
python3 -c 'import tokenizers, jinja2' 2> /dev/null || {
  echo "finetune_example.sh: python3 needs the packages tokenizers and jinja2 (scripts/setup.sh installs them)" >&2
  exit 3
}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export PYTHONPATH="$repo/scripts${PYTHONPATH:+:$PYTHONPATH}"

declare -a summary=()
note() { summary+=("$1"); }
step() { printf '\n== %s ==\n' "$*"; }
run() { echo "+ $*"; "$@"; }
trap 'status=$?; if (( status != 0 )); then echo; echo "finetune_example.sh: FAILED (exit $status); steps so far:";
      printf "  %s\n" "${summary[@]}"; fi' EXIT

mpi=()
if (( np > 1 )); then
  command -v mpirun > /dev/null || { echo "finetune_example.sh: --np $np needs mpirun" >&2; exit 2; }
  mpi=(mpirun -np "$np")
  mpirun --version 2> /dev/null | grep -q "Open MPI\|OpenRTE" && mpi+=(--allow-run-as-root --oversubscribe -x LD_LIBRARY_PATH)
fi
generate_precision=fp32; [[ $device == cuda ]] && generate_precision=bf16

# ---- a. the "published" model ----
tiny=false
if [[ -z $hf ]]; then
  tiny=true
  step "a. making a tiny HF model in $work/base (tokenizer trained here, Llama pretrained by coat-train)"
  mkdir -p "$work/base/pretrain"
  vocab=$(python3 - "$work/base" <<'PY'
import json, os, random, sys
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
base = sys.argv[1]
words = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen".split()
rng = random.Random(7)
lines = []
for _ in range(4000):
    a, b = rng.randrange(10), rng.randrange(10)
    lines.append(rng.choice([f"{words[a]} plus {words[b]} is {words[a + b]}.",
                             f"The sum of {a} and {b} is {a + b}.",
                             f"{a} + {b} = {a + b}, and {words[a]} and {words[b]} make {words[a + b]}.",
                             f"Count with me: {' '.join(words[a:a + 4])}."]))
with open(os.path.join(base, "pretrain", "corpus.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
special = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=512, special_tokens=special, show_progress=False,
                                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save(os.path.join(base, "tokenizer.json"))
template = ("{{ bos_token }}{% for message in messages %}"
            "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
            "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
with open(os.path.join(base, "tokenizer_config.json"), "w") as f:
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": True,
               "chat_template": template, "tokenizer_class": "PreTrainedTokenizerFast",
               "model_max_length": 128}, f, indent=2)
vocab = tok.get_vocab_size(with_added_tokens=True)
print((vocab + 63) // 64 * 64)  # the model's vocabulary: a multiple of 64
PY
  )
  if [[ $base == transformers ]]; then
    # The published model as transformers itself writes one: Llama-3.1-shaped (llama3 RoPE scaling, grouped KV
    # heads, untied head), randomly initialised, BF16, sharded by save_pretrained; not pretrained.
    run python3 - "$work/base" "$vocab" <<'PY'
import os, shutil, sys
import torch, transformers
base, vocab = sys.argv[1], int(sys.argv[2])
scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 64}
kw = dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, rms_norm_eps=1e-5,
          bos_token_id=0, eos_token_id=1)
try:  # transformers 5.x: rope_parameters; 4.x: rope_theta + rope_scaling
    config = transformers.LlamaConfig(rope_parameters=dict(scaling, rope_theta=500000.0), **kw)
except TypeError:
    config = transformers.LlamaConfig(rope_theta=500000.0, rope_scaling=scaling, **kw)
torch.manual_seed(7)
model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
out = os.path.join(base, "hf")
model.save_pretrained(out, max_shard_size="200KB")
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(base, f), out)
print(f"transformers {transformers.__version__} wrote {out}: {sorted(os.listdir(out))}")
PY
    hf="$work/base/hf"
    note "a. ran:     tiny Llama-3.1-shaped model written by transformers' save_pretrained (vocabulary $vocab, BF16, sharded) -> $hf"
  else
  pre_recipe=fp32; [[ $device == cuda ]] && pre_recipe=bf16
  cat > "$work/base/pretrain/config.json" <<EOF
{
  "model": {"architecture": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": $vocab,
            "max_position_embeddings": 128, "rope_theta": 10000.0, "tie_word_embeddings": false},
  "data": {"path": "$work/base/pretrain/corpus.bin", "format": "coat", "seq_len": 64, "validation_fraction": 0.05,
           "tokenizer": "$work/base/tokenizer.json"},
  "train": {"device": "$device", "micro_batch_size": 8, "global_batch_size": 8, "max_steps": 80,
            "eval_interval": 0, "log_interval": 20},
  "optim": {"lr": 0.005, "schedule": "cosine", "warmup_steps": 8, "min_lr_ratio": 0.1},
  "precision": {"recipe": "$pre_recipe"},
  "checkpoint": {"interval": 0, "keep_last": 1},
  "logging": {"run_dir": "$work/base/pretrain/run"}
}
EOF
  run python3 "$repo/scripts/prepare_data.py" text --tokenizer "$work/base" --lines --quiet --workers 1 \
    --output "$work/base/pretrain/corpus.bin" "$work/base/pretrain/corpus.txt"
  run "$bin/coat-train" --config "$work/base/pretrain/config.json" > "$work/base/pretrain/train.log" 2>&1 \
    || { tail -20 "$work/base/pretrain/train.log"; exit 1; }
  tail -2 "$work/base/pretrain/train.log"
  run "$bin/coat-convert" export --checkpoint "$work/base/pretrain/run" --output "$work/base/hf" --dtype f32
  cp "$work/base/tokenizer.json" "$work/base/tokenizer_config.json" "$work/base/hf/"
  hf="$work/base/hf"
  note "a. ran:     tiny model made (vocabulary $vocab, 2 layers, pretrained 80 steps) -> $hf"
  fi
else
  note "a. skipped: --hf $hf given (no tiny model made)"
fi
[[ -f $hf/config.json && -f $hf/tokenizer.json ]] || {
  echo "finetune_example.sh: $hf needs config.json and tokenizer.json" >&2; exit 2; }

# ---- b. import ----
step "b. import $hf"
run "$bin/coat-convert" import --hf "$hf" --output "$work/imported"
note "b. ran:     imported into $work/imported"

# ---- c. SFT data ----
step "c. SFT data"
mkdir -p "$work/data"
seq_len=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["data"]["seq_len"])' "$config")
$tiny && seq_len=64
for s in "${user_sets[@]}"; do if [[ $s == data.seq_len=* ]]; then seq_len=${s#data.seq_len=}; fi; done
if [[ -z $data ]]; then
  data="$work/data/chat.jsonl"
  python3 - "$data" <<'PY'
import json, random, sys
words = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen".split()
rng = random.Random(11)
with open(sys.argv[1], "w") as f:
    for _ in range(400):
        a, b = rng.randrange(10), rng.randrange(10)
        question = rng.choice([f"What is {a} plus {b}?", f"Add {words[a]} and {words[b]}."])
        answer = f"{words[a]} plus {words[b]} is {words[a + b]}."
        f.write(json.dumps({"messages": [{"role": "user", "content": question},
                                         {"role": "assistant", "content": answer}]}) + "\n")
PY
  echo "wrote 400 chat examples to $data"
fi
run python3 "$repo/scripts/prepare_data.py" sft --tokenizer "$hf" --output "$work/data/sft.bin" --seq-len "$seq_len" \
  --quiet "$data"
note "c. ran:     $(basename "$data") -> $work/data/sft.bin + .mask (rows of $seq_len tokens)"

# ---- d. fine-tune ----
step "d. fine-tune under the $recipe recipe on $device${mpi:+ with $np ranks}"
sets=(--set "train.init_from=\"$work/imported\"" --set "data.path=\"$work/data/sft.bin\""
      --set "data.loss_mask=\"$work/data/sft.bin.mask\"" --set "data.tokenizer=\"$hf/tokenizer.json\""
      --set "data.seq_len=$seq_len" --set "train.device=\"$device\"" --set "precision.recipe=\"$recipe\""
      --set "logging.run_dir=\"$work/sft\"")
if $tiny; then  # a 2-layer model fine-tuned in seconds: larger steps, small batches, a short run
  sets+=(--set optim.lr=0.003 --set optim.warmup_steps=4 --set train.micro_batch_size=4
         --set "train.global_batch_size=$((4 * np))" --set train.max_steps=40 --set train.eval_interval=20
         --set train.eval_batches=2 --set train.log_interval=5 --set checkpoint.interval=20
         --set data.validation_fraction=0.1)
fi
[[ -n $steps ]] && sets+=(--set "train.max_steps=$steps")
set +e
run "${mpi[@]}" "$bin/coat-train" --config "$config" "${sets[@]}" "${user_sets[@]}" 2>&1 | tee "$work/sft.log"
train_status=${PIPESTATUS[0]}
set -e
(( train_status == 0 )) || { echo "coat-train exited with $train_status (log: $work/sft.log)"; exit 1; }
losses=$(python3 - "$work/sft/metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
train = [r["loss"] for r in records if "loss" in r and not r.get("skipped")]
val = [r["val_loss"] for r in records if "val_loss" in r]
k = max(1, min(5, len(train) // 4))
first, last = sum(train[:k]) / k, sum(train[-k:]) / k
print(f"training loss (completion tokens) {first:.4f} over the first {k} steps -> {last:.4f} over the last {k}"
      + (f"; validation {val[0]:.4f} -> {val[-1]:.4f}" if len(val) > 1 else ""))
PY
)
echo "$losses"
note "d. ran:     $recipe on $device, $np rank(s) -> $work/sft; $losses"

# ---- e. export ----
[[ -z $shard ]] && { $tiny && shard=200KB || shard=5GB; }
step "e. export (bf16, shards of at most $shard)"
run "$bin/coat-convert" export --checkpoint "$work/sft" --output "$work/export" --dtype bf16 --max-shard-size "$shard"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
  if [[ -f $hf/$f ]]; then cp "$hf/$f" "$work/export/"; fi
done
ls -l "$work/export"
note "e. ran:     $work/export ($(ls "$work/export" | grep -c '\.safetensors$') safetensors file(s), tokenizer files copied)"

# ---- f. generate ----
step "f. generate with coat-generate"
prompt_ids() {  # the ids of one user turn rendered by the chat template, ready for the assistant's answer
  python3 - "$hf" "$1" <<'PY'
import sys
from coat_data.chat_template import ChatTemplate
from coat_data.hf_tokenizer import HfTokenizer, TokenizerSpec
tok = HfTokenizer(TokenizerSpec(path=sys.argv[1]))
text = ChatTemplate(tok.chat_template_source(), tok.template_variables()).render(
    [{"role": "user", "content": sys.argv[2]}], add_generation_prompt=True)
print(",".join(str(i) for i in tok.encode_batch([text])[0]))
PY
}
question="What is 3 plus 4?"
ids=$(prompt_ids "$question")
echo "prompt: $question (chat template: $(tr ',' '\n' <<< "$ids" | wc -l) tokens)"
run "$bin/coat-generate" --checkpoint "$work/sft" --tokenizer "$hf/tokenizer.json" --ids "$ids" --tokens 16 \
  --temperature 0 --device "$device" --precision "$generate_precision" | tee "$work/generate.txt"
note "f. ran:     coat-generate answered '$question' (greedy; $work/generate.txt)"

# ---- g. transformers ----
step "g. transformers loads the export"
if ! why=$(python3 -c 'import torch, transformers, numpy' 2>&1); then
  note "g. skipped: python3 cannot import torch, transformers and numpy ($(tail -1 <<< "$why"))"
  echo "${summary[-1]}"
else
  mkdir -p "$work/parity"
  run "$bin/coat-convert" import --hf "$work/export" --output "$work/parity/roundtrip"
  run "$bin/coat-generate" --checkpoint "$work/parity/roundtrip" --ids "$ids" --logits-out "$work/parity/ours.f32"
  run "$bin/coat-generate" --checkpoint "$work/parity/roundtrip" --tokenizer "$hf/tokenizer.json" --ids "$ids" \
    --tokens 16 --temperature 0 > "$work/parity/ours_generate.txt"
  python3 - "$work/export" "$work/parity/ours.f32" "$ids" "$device" <<'PY' | tee "$work/parity/report.txt"
import sys
import numpy as np
import torch
import transformers
export, ours_path, ids_text, device = sys.argv[1:5]
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
device = device if device == "cpu" or torch.cuda.is_available() else "cpu"
try:
    model = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
except TypeError:  # transformers 4.x spells it torch_dtype
    model = transformers.AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32)
model = model.to(device=device, dtype=torch.float32).eval()  # 4.x may ignore an unknown dtype= keyword
ids = torch.tensor([[int(t) for t in ids_text.split(",")]], device=device)
with torch.no_grad():
    ref = model(input_ids=ids, use_cache=False).logits[0].double().cpu().numpy()
ours = np.fromfile(ours_path, dtype=np.float32).reshape(ref.shape).astype(np.float64)
err = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
ok = err <= 1e-4
print(f"{type(model).__name__} from {export}: logits [{ref.shape[0]}, {ref.shape[1]}] in FP32, relative L2 error "
      f"against ours {err:.3e} (bound 1e-4): {'PASS' if ok else 'FAIL'}")
tok = transformers.AutoTokenizer.from_pretrained(export)
with torch.no_grad():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
print("transformers generates:", repr(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
sys.exit(0 if ok else 1)
PY
  echo "coat-generate on the same weights: $(tail -1 "$work/parity/ours_generate.txt")"
  note "g. ran:     $(head -1 "$work/parity/report.txt" | sed 's/.*relative L2/logits relative L2/')"
fi

trap - EXIT
step "summary ($work)"
printf '  %s\n' "${summary[@]}"
