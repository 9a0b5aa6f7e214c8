#!/usr/bin/env python3
"""Prepares coat token files with a Hugging Face tokenizer (tokenizer.json, as Llama-3 and OLMo ship).

  prepare_data.py text --tokenizer DIR --output corpus.bin INPUT...    pretraining text -> token file
  prepare_data.py sft  --tokenizer DIR --output sft.bin [--seq-len L] INPUT.jsonl...
                                                                       SFT examples -> token file + loss mask

The parts live in scripts/coat_data/. Needs the PyPI packages tokenizers (and jinja2 for chat templates);
scripts/setup.sh installs them.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from coat_data import parallel  # noqa: E402
from coat_data.errors import DataError  # noqa: E402
from coat_data.hf_tokenizer import TokenizerSpec  # noqa: E402

TOKENIZER_HELP = """\
The tokenizer: a directory with tokenizer.json (and, read when present, tokenizer_config.json,
special_tokens_map.json, chat_template.jinja), or the path of a tokenizer.json. EOS is tokenizer_config.json's
eos_token (--eos overrides). BOS goes before each document when tokenizer_config.json sets add_bos_token, or,
without that key, when tokenizer.json's post-processor adds one (Llama-3's adds <|begin_of_text|>);
--add-bos / --no-bos override. Token files are u16 up to a vocabulary of 65536 tokens, else u32.
"""

TEXT_HELP = """\
Each document becomes [BOS] tokens EOS, in input order. Documents: one per file (default; a file larger than
--piece-chars is encoded in pieces cut after line breaks, so it never has to fit in memory, when the tokenizer
encodes such pieces exactly as the whole, else read whole), one per line (--lines; blank lines skipped) or
one per JSONL line (--jsonl, the string field --field, default "text"). Inputs ending in .gz are
decompressed. Chunks of documents are encoded by --workers processes and written in order to OUTPUT.tmp,
renamed to OUTPUT at the end: a failure leaves no partial file under OUTPUT.

  prepare_data.py text --tokenizer models/Llama-3-8B --output data/web.bin --jsonl shard_*.jsonl.gz
"""

SFT_HELP = """\
Each JSONL line is one example, {"prompt": P, "completion": C} or {"messages": [{"role": R, "content": T}, ...]}.
Writes OUTPUT (token file) and OUTPUT.mask (loss mask: byte i = 1 when token i is a trained target).

  prompt/completion  [BOS] P C EOS, encoded as one text; the mask is 1 on the tokens that hold text of C
                     (one that straddles the start of C too) and on EOS. With --chat, P and C are a user turn
                     and an assistant turn of the chat template instead.
  messages           the conversation rendered with the tokenizer's chat template (jinja2, as transformers'
                     apply_chat_template: bos_token/eos_token variables, add_generation_prompt, loop controls);
                     the template places BOS and end-of-turn tokens. The mask is 1 on the assistant turns only.
                     They are found by rendering incrementally: for each assistant message, the conversation
                     before it with add_generation_prompt=True ends where the assistant's text begins, and the
                     conversation through it ends after its end-of-turn token; the tokens of the whole
                     rendering that hold text between the two are trained. A template that renders earlier turns
                     differently once later ones follow is refused.

The first token of every example has mask 0. Without --seq-len the examples are concatenated. With
--seq-len L they are packed greedily into rows of exactly L tokens (the trainer's windows start every L
tokens): an example that does not fit the current row starts the next one and the row is padded with the pad
token (EOS when there is none), mask 0; an example longer than L is truncated to L tokens (--drop-long drops
it). Errors name the file and line (bad JSON, missing keys, an empty completion, a template error).

  prepare_data.py sft --tokenizer models/OLMo-2-1B-Instruct --output data/sft.bin --seq-len 2048 chat.jsonl
"""


def _add_common(parser):
    parser.add_argument("--tokenizer", required=True, help="directory with tokenizer.json, or a tokenizer.json")
    parser.add_argument("--output", required=True, help="the token file to write")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--eos", help="the EOS token (or id) instead of the tokenizer's")
    bos = parser.add_mutually_exclusive_group()
    bos.add_argument("--add-bos", dest="bos", action="store_const", const="yes", default="auto",
                     help="put BOS before each document / example")
    bos.add_argument("--no-bos", dest="bos", action="store_const", const="no", help="never put BOS")
    parser.add_argument("--workers", type=int, default=parallel.default_workers(),
                        help="encoding processes (default: the CPUs this process may use, %(default)s here)")
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20,
                        help="input bytes a worker encodes at a time (default %(default)s)")
    parser.add_argument("--encoding-errors", choices=("strict", "replace"), default="strict",
                        help="invalid UTF-8 in the input: an error (default) or U+FFFD")
    parser.add_argument("--quiet", action="store_true", help="no progress and no tokenizer line")


def build_parser():
    parser = argparse.ArgumentParser(prog="prepare_data.py", description=__doc__.split("\n\n")[0] + "\n\n"
                                     + TOKENIZER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    text = commands.add_parser("text", help="plain text or JSONL documents -> token file", description=TEXT_HELP
                               + "\n" + TOKENIZER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(text)
    form = text.add_mutually_exclusive_group()
    form.add_argument("--lines", action="store_true", help="one document per line")
    form.add_argument("--jsonl", action="store_true", help="one document per JSONL line (see --field)")
    text.add_argument("--field", default="text", help="the JSONL field holding the text (default %(default)s)")
    text.add_argument("--piece-chars", type=int, default=8 << 20,
                      help="one-document-per-file mode: encode a longer document in pieces (default %(default)s)")

    sft = commands.add_parser("sft", help="prompt/completion or chat JSONL -> token file + loss mask",
                              description=SFT_HELP + "\n" + TOKENIZER_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(sft)
    sft.add_argument("--seq-len", type=int, default=0, help="pack into rows of exactly this many tokens")
    sft.add_argument("--drop-long", action="store_true", help="drop examples longer than --seq-len")
    sft.add_argument("--chat", action="store_true", help="render prompt/completion pairs with the chat template")
    sft.add_argument("--chat-template", dest="chat_template_file", metavar="FILE",
                     help="a jinja chat template instead of the tokenizer's")
    sft.add_argument("--chat-template-name", help="which of tokenizer_config.json's named templates (default: default)")
    return parser


def _run(args):
    if args.workers < 1 or args.chunk_bytes < 1:
        raise DataError("--workers and --chunk-bytes must be at least 1")
    spec = TokenizerSpec(path=args.tokenizer, eos=args.eos, bos=args.bos,
                         chat_template_file=getattr(args, "chat_template_file", None),
                         chat_template_name=getattr(args, "chat_template_name", None))
    common = dict(paths=args.inputs, output=args.output, workers=args.workers, chunk_bytes=args.chunk_bytes,
                  quiet=args.quiet)
    if args.command == "text":
        from coat_data import text
        mode = "lines" if args.lines else "jsonl" if args.jsonl else "file"
        options = text.TextOptions(mode=mode, field=args.field, encoding_errors=args.encoding_errors)
        return text.run(spec, options, piece_chars=max(args.piece_chars, 0), **common)
    from coat_data import sft
    if args.seq_len < 0 or (args.drop_long and not args.seq_len):
        raise DataError("--seq-len must be positive, and --drop-long needs it")
    options = sft.SftOptions(chat=args.chat, encoding_errors=args.encoding_errors)
    return sft.run(spec, options, seq_len=args.seq_len, drop_long=args.drop_long, **common)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        print(_run(args))
    except DataError as e:
        print(f"prepare_data.py {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"prepare_data.py {args.command}: interrupted; nothing written to {args.output}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
