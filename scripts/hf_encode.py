#!/usr/bin/env python3
"""Encodes text (or decodes ids) with an HF tokenizer.json through the `tokenizers` library.

coat-generate calls it to encode a prompt for a tokenizer.json model whose features the native encoder
(HfEncoder) refuses; the tests call it as the reference of the C++ encoder and decoder.

  hf_encode.py encode --tokenizer tokenizer.json [--no-special] < text      -> ids, comma-separated
  hf_encode.py encode --json ... < a JSON list of texts                     -> a JSON list of id lists
  hf_encode.py decode --tokenizer tokenizer.json [--keep-special] < lines   -> a JSON list of strings
      (one line of comma-separated ids per text; an empty line is an empty sequence)

Exit status 3 when the `tokenizers` module is missing, 2 for bad arguments, 1 for other errors.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["encode", "decode"])
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json")
    ap.add_argument("--no-special", action="store_true", help="encode: no special tokens (no BOS)")
    ap.add_argument("--keep-special", action="store_true", help="decode: keep special tokens in the text")
    ap.add_argument("--json", action="store_true", help="encode: a JSON list of texts in, a JSON list out")
    args = ap.parse_args()
    try:
        import tokenizers
    except ImportError:
        print("hf_encode.py: the Python module `tokenizers` is missing (pip install tokenizers)", file=sys.stderr)
        return 3
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    data = sys.stdin.buffer.read().decode("utf-8")
    if args.mode == "encode" and args.json:
        texts = json.loads(data)
        out = [e.ids for e in tok.encode_batch(texts, add_special_tokens=not args.no_special)]
        sys.stdout.write(json.dumps(out) + "\n")
        return 0
    if args.mode == "encode":
        ids = tok.encode(data, add_special_tokens=not args.no_special).ids
        sys.stdout.write(",".join(str(i) for i in ids) + "\n")
        return 0
    texts = []
    for line in data.split("\n")[:-1] if data.endswith("\n") else data.split("\n"):
        ids = [int(x) for x in line.split(",") if x.strip()]
        texts.append(tok.decode(ids, skip_special_tokens=not args.keep_special))
    sys.stdout.write(json.dumps(texts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
