"""Data preparation with Hugging Face tokenizers (tokenizer.json): coat token files and SFT loss masks.

The command line is scripts/prepare_data.py; the modules here are its parts:
  errors        DataError, the one exception a user sees (it names the file and line)
  hf_tokenizer  loading tokenizer.json + tokenizer_config.json: special tokens, BOS/EOS policy, offsets
  chat_template the chat template rendered with jinja2 as transformers renders it; assistant spans
  token_files   atomic streaming writers of token files (COATTOK) and loss-mask files (COATMSK)
  inputs        streaming readers of text, line and JSONL inputs, in chunks of documents
  parallel      an ordered map over worker processes with a bounded number of chunks in flight; progress
  text          the `text` command: documents -> tokens separated by EOS
  sft           the `sft` command: prompt/completion or chat examples -> tokens + loss mask, packing
"""
