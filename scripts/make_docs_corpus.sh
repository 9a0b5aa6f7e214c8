#!/usr/bin/env bash
# A real-text corpus from the documentation a machine already holds (for accuracy runs on GPU machines that
# cannot download anything): the *.md / *.rst / *.txt files under Python's site-packages and /usr/share/doc,
# concatenated in sorted path order up to --megabytes, a BPE tokenizer trained on it, the token file. With
# --code the Python sources there (*.py) join the documentation: a larger corpus of real text and code.
#   scripts/make_docs_corpus.sh [--out data/docs] [--megabytes 40] [--vocab-size 8192] [--code] [--tokenizer M]
# --tokenizer encodes with an existing SentencePiece model M (copied to OUT/tok.model) instead of training one:
# the same corpus and tokens again on another machine of the same image.
# Writes OUT/corpus.txt, OUT/tok.model (+ .vocab) and OUT/corpus.bin.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${COAT_BUILD_DIR:-build}
out=data/docs megabytes=40 vocab=8192 code=0 tokenizer=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --megabytes) megabytes=$2; shift 2 ;;
    --vocab-size) vocab=$2; shift 2 ;;
    --code) code=1; shift ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    *) echo "make_docs_corpus.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
roots=()
for d in $(python3 -c "import site, sys; print(' '.join(site.getsitepackages()))" 2>/dev/null) /usr/share/doc; do
  [ -d "$d" ] && roots+=("$d")
done
[ ${#roots[@]} -gt 0 ] || { echo "make_docs_corpus.sh: no documentation folders found" >&2; exit 1; }
limit=$((megabytes * 1024 * 1024))
# Text files only (grep -I skips binaries), lines stripped of trailing spaces, empty lines dropped.
names=(-name '*.md' -o -name '*.rst' -o -name '*.txt')
[ "$code" = 1 ] && names+=(-o -name '*.py')
find "${roots[@]}" -type f \( "${names[@]}" \) -size -2M 2>/dev/null | LC_ALL=C sort |
  while IFS= read -r f; do grep -I -v '^[[:space:]]*$' "$f" 2>/dev/null || true; done | head -c "$limit" \
  >"$out/corpus.txt"
echo "corpus: $(wc -c <"$out/corpus.txt") bytes, $(wc -l <"$out/corpus.txt") lines from ${roots[*]}"
if [ -n "$tokenizer" ]; then
  [ "$(realpath "$tokenizer")" = "$(realpath -m "$out/tok.model")" ] || cp "$tokenizer" "$out/tok.model"
else
  "$build_dir/coat-tokenize" train --input "$out/corpus.txt" --model-prefix "$out/tok" --vocab-size "$vocab" \
    --input-sentence-size 400000 --threads "$(nproc)"
fi
"$build_dir/coat-tokenize" encode --model "$out/tok.model" --input "$out/corpus.txt" --output "$out/corpus.bin"
ls -la "$out"
