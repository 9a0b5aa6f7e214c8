#!/usr/bin/env bash
# Prepares the corpus of configs/tiny.json: the King James Bible from Debian's bible-kjv package,
# a SentencePiece BPE tokenizer trained on it, and the token file the trainer reads.
#
#   scripts/prepare_kjv.sh [path/to/coat-tokenize]      (default: build/coat-tokenize)
#
# Writes, under data/kjv/ (ignored by git):
#   kjv.txt               the text: one verse per line (verse references stripped), chapters separated by a
#                         blank line (1189 chapters, 31102 verses, about 4.1 MB of ASCII)
#   kjv.model, kjv.vocab  BPE tokenizer, 4096 pieces, Llama-2 settings (byte fallback, split digits)
#   kjv.bin               coat token file (u16): each chapter is a document, <s> chapter </s>; the
#                         trainer takes its validation split from the end (the last chapters of Revelation)
#
# Idempotent: a step runs only when its output is missing or older than its input. Installs bible-kjv when
# `bible` is missing (as root, or through sudo).
#
# Vocabulary size 4096 (configs/tiny.json's model.vocab_size): about 1.07 M tokens, 3.9 bytes per token,
# so a 128-token window holds about three verses and most words the model writes are whole KJV words. With
# 192-wide embeddings the output layer is a third of the per-token compute, and the compute per byte of text
# is about that of 2048 pieces (1.19 M tokens, 3.5 bytes per token). 8192 pieces would leave half of them
# seen fewer than 12 times in one pass over the corpus, too rare for a model trained a few CPU minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tokenize=${1:-build/coat-tokenize}
vocab_size=4096
out=data/kjv

if [[ ! -x "$tokenize" ]]; then
  echo "prepare_kjv: $tokenize is not an executable; build it first (scripts/setup.sh) or pass its path" >&2
  exit 1
fi

if ! command -v bible >/dev/null; then
  echo "prepare_kjv: installing bible-kjv"
  if [[ $(id -u) -eq 0 ]]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "prepare_kjv: the bible-kjv package is missing and neither root nor sudo is available" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends bible-kjv >/dev/null
fi

mkdir -p "$out"

# 1. The text. `bible -f` prints one verse per line after its reference ("Ge1:1 In the beginning ...",
# "1Sm3:1 ..."); drop the reference, squeeze the few double spaces, and start a paragraph at each verse 1.
if [[ ! -s $out/kjv.txt ]]; then
  echo "prepare_kjv: writing $out/kjv.txt"
  bible -f "gen1:1-rev22:21" |
    awk '{ ref = $1; sub(/^[^ ]+ /, ""); gsub(/  +/, " "); sub(/ +$/, "");
           split(ref, r, ":"); if (r[2] == 1 && NR > 1) print ""; print }' >"$out/kjv.txt.tmp"
  verses=$(grep -c . "$out/kjv.txt.tmp" || true)
  if [[ $verses -ne 31102 ]]; then
    echo "prepare_kjv: expected 31102 verses from bible-kjv, got $verses" >&2
    rm -f "$out/kjv.txt.tmp"
    exit 1
  fi
  mv "$out/kjv.txt.tmp" "$out/kjv.txt"
fi

# 2. The tokenizer (deterministic: the same text gives the same model bytes).
if [[ ! -s $out/kjv.model || $out/kjv.txt -nt $out/kjv.model ]]; then
  echo "prepare_kjv: training the tokenizer ($vocab_size pieces)"
  "$tokenize" train --input "$out/kjv.txt" --model-prefix "$out/kjv" --vocab-size "$vocab_size" \
    --character-coverage 1.0
fi

# 3. The token file.
if [[ ! -s $out/kjv.bin || $out/kjv.model -nt $out/kjv.bin || $out/kjv.txt -nt $out/kjv.bin ]]; then
  echo "prepare_kjv: encoding $out/kjv.bin"
  "$tokenize" encode --model "$out/kjv.model" --input "$out/kjv.txt" --output "$out/kjv.bin" --bos --append-eos
fi

echo "prepare_kjv: ready: $out/kjv.bin ($(stat -c %s "$out/kjv.bin") bytes), $out/kjv.model"
