#!/usr/bin/env python3
"""Checks coat-train's CPU forward against HF transformers (run where torch + transformers are installed).

For a small Llama (grouped KV heads, untied head) and a small OLMo (non-parametric LayerNorm, tied
embeddings): trains 2 steps with coat-train on random tokens (so the weights are not at their
initialisation), exports the checkpoint with `coat-convert export`, loads it with LlamaForCausalLM /
OlmoForCausalLM in float32, and compares the logits of the same token ids with coat-generate's
(--logits-out). Passes when the relative L2 error is <= 1e-4.

    scripts/hf_parity.py [--build build] [--work /tmp/coat-parity]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np


def write_token_file(path, tokens, vocab):
    with open(path, "wb") as f:
        f.write(b"COATTOK\0" + struct.pack("<IIIIQ", 1, 2, vocab, 0, len(tokens)))
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default="/tmp/coat-parity")
    args = ap.parse_args()
    import torch
    import transformers

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    vocab = 96
    rng = np.random.default_rng(0)
    tokens_path = os.path.join(args.work, "tokens.bin")
    write_token_file(tokens_path, rng.integers(0, vocab, 6000), vocab)
    ids = rng.integers(0, vocab, 24).tolist()
    models = {
        "llama": dict(architecture="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=64,
                      rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
        "olmo": dict(architecture="olmo", hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=64,
                     rope_theta=10000.0, tie_word_embeddings=True),
    }
    failed = False
    for name, model in models.items():
        run_dir = os.path.join(args.work, name)
        config = {
            "model": model,
            "data": {"path": tokens_path, "seq_len": 32, "validation_fraction": 0.1},
            "train": {"device": "cpu", "micro_batch_size": 2, "global_batch_size": 2, "max_steps": 2},
            "optim": {"lr": 1e-2, "warmup_steps": 0},
            "checkpoint": {"interval": 0},
            "logging": {"run_dir": run_dir, "progress": "off"},
        }
        config_path = os.path.join(args.work, name + ".json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        run([os.path.join(args.build, "coat-train"), "--config", config_path])
        hf_dir = os.path.join(args.work, name + "-hf")
        run([os.path.join(args.build, "coat-convert"), "export", "--checkpoint", run_dir, "--output", hf_dir])
        logits_path = os.path.join(args.work, name + ".logits")
        run([os.path.join(args.build, "coat-generate"), "--checkpoint", run_dir, "--ids", ",".join(map(str, ids)),
             "--logits-out", logits_path])
        ours = np.fromfile(logits_path, dtype=np.float32).reshape(len(ids), vocab).astype(np.float64)
        cls = transformers.LlamaForCausalLM if name == "llama" else transformers.OlmoForCausalLM
        hf = cls.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            theirs = hf(torch.tensor([ids])).logits[0].double().numpy()
        rel = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
        ok = rel <= 1e-4
        failed |= not ok
        print(f"{name}: logits relative L2 error {rel:.3e} ({'PASS' if ok else 'FAIL'}, bound 1e-4), "
              f"transformers {transformers.__version__}, torch {torch.__version__}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
