#!/usr/bin/env python3
"""Checks coat-train against HF transformers: logits, every parameter's gradient, and training losses.

Run where torch + transformers are installed (the GPU machines), from the repository root, with the
binaries built (build/ or --bin DIR):

    source scripts/gpu_env.sh && scripts/hf_parity.py [--device cuda|cpu] [--dtype both|bf16|fp32] [--steps 50]
                                                      [--models llama,olmo,llama31,llama-linear]

Two kinds of models.

Made by coat-train (llama: grouped KV heads, untied lm_head; olmo: non-parametric LayerNorm, tied embeddings):
  1. coat-train trains 2 steps on random tokens (so that the weights are not at their initialisation);
     coat-convert exports them (HF config.json + model.safetensors, F32) and imports that export back into
     a native checkpoint, which every run of ours below starts from; HF loads the export.
  2. logits of one sequence: coat-generate --logits-out against LlamaForCausalLM / OlmoForCausalLM.
     fp32: ours on the CPU (our CUDA path has no FP32 attention) vs HF in float32 on --device (TF32 off),
     relative L2 error <= 1e-4. bf16: ours with the bf16 recipe on --device vs the same HF float32
     reference, <= 1e-2 or, where HF's own model.to(bfloat16) is further than that from its float32, <= 1.25x
     HF's bf16 error (bf16_bound below).
  3. gradients of the mean next-token cross-entropy over a batch of B rows of T tokens: coat-grads (the
     trainer's forward and backward) vs torch autograd, relative L2 error per parameter. The reference is
     HF in float32 (TF32 off) for both our fp32 (CPU, bound 1e-4) and our bf16 (--device, bound 2e-2)
     gradients: an FP32 reference measures our BF16 error alone instead of the sum of two BF16 errors.
     HF's own bf16 error (autocast) against the same reference is printed beside it; per parameter, where it
     exceeds 2e-2, our bound is 1.25x it.
  4. training: --steps AdamW steps (lr 1e-3 constant, no warmup, betas 0.9/0.95, eps 1e-8, weight decay
     0.1 except norms and embeddings as optim::default_decay, no clipping) on ONE fixed batch: the token
     file holds exactly B windows and no validation split, so each of our steps takes all B windows (in
     the sampler's order; the mean loss and its gradient do not depend on it). HF: torch.optim.AdamW on the
     same batch. fp32: ours on the CPU vs HF float32; bf16: ours with the bf16 recipe on --device vs HF
     float32 master weights under torch.autocast(bfloat16) on --device. Per-step losses within 1%
     (maximum relative difference over the steps).

Made by transformers, imported (the way a user brings a published checkpoint: coat-convert import):
  Llama-3.1-shaped random models (grouped KV heads, untied lm_head, rope_theta 500000, explicit head_dim,
  vocabulary of 70,000 > 65,536, so that the token files are u32) with RoPE scaling: llama31 (rope_type
  llama3: factor 8, low/high frequency factors 1/4, an original context of 64 so that the three frequency
  regimes all occur inside the 64 positions checked) and llama-linear (rope_type linear, factor 4). HF
  builds them (LlamaConfig with rope_scaling on transformers 4.x, rope_parameters on 5.x), initialises them
  (std 0.1, so that attention is far from uniform and RoPE shows in the logits), casts to bfloat16 and
  writes them with its own save_pretrained, sharded (max_shard_size 4MB: an index and several files);
  coat-convert import reads that directory. Checks 2 and 3 as above against HF loading the same directory
  in float32 (the BF16 weights, exactly). Also printed: how far HF's own logits move without the scaling
  (the check fails when that is too small to catch a scaling that is ignored).

HF's nn.Embedding(padding_idx=pad_token_id) gives the padding token's embedding row no gradient; coat-train
has no padding token, so the check turns padding_idx off on the HF side (OLMo's export names pad_token_id 1).

Prints one table per model; exits 1 when any check fails.
"""
import argparse
import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import types

import numpy as np

VOCAB = 256
BIG_VOCAB = 70000  # > 65,536: token ids need u32 files
BATCH, SEQ = 4, 64
LOGITS_BOUND = {"fp32": 1e-4, "bf16": 1e-2}
GRAD_BOUND = {"fp32": 1e-4, "bf16": 2e-2}
TRAIN_BOUND = 1e-2
# BF16's own error grows with how far a model is from uniform attention: on the imported Llama-3.1 shapes
# (std 0.1) HF's bf16 logits are 1.5e-2 and its autocast gradients 2.1e-2 away from its fp32 (H200, December).
# A bf16 bound is therefore the fixed one or, where HF's own bf16 error against the same fp32 reference is
# larger, that error plus a quarter: ours may not be worse than BF16 itself by more than that.
BF16_SLACK = 1.25


def bf16_bound(fixed, hf_bf16_error):
    return max(fixed, BF16_SLACK * hf_bf16_error)

OPTIM = dict(lr=1e-3, schedule="constant", warmup_steps=0, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
             clip_grad_norm=0.0, decay_embeddings=False, decay_norms=False)
MODELS = {
    "llama": dict(architecture="llama", hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128,
                  rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "olmo": dict(architecture="olmo", hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=128,
                 rope_theta=10000.0, tie_word_embeddings=True),
}
# Models that transformers makes and saves, and coat-convert imports: LlamaConfig arguments.
LLAMA31_SHAPE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, vocab_size=BIG_VOCAB, max_position_embeddings=512,
                     rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1, hidden_act="silu",
                     attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2)
IMPORTED = {
    "llama31": dict(rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                           high_freq_factor=4.0, original_max_position_embeddings=64)),
    "llama-linear": dict(rope_theta=10000.0, rope_scaling=dict(rope_type="linear", factor=4.0)),
}
MAX_SHARD_SIZE = "4MB"
TITLES = {"llama": "Llama, 4 query / 2 KV heads, untied lm_head", "olmo": "OLMo, LayerNorm without affine, tied embeddings",
          "llama31": "Llama-3.1 shape from transformers (llama3 RoPE, vocab 70000, BF16 shards), imported",
          "llama-linear": "Llama-3.1 shape from transformers (linear RoPE x4, vocab 70000, BF16 shards), imported"}


def write_token_file(path, tokens, vocab):
    """Our token file (include/coat/data/token_file.h): 32-byte header, then u16 tokens (u32 past 65,536)."""
    width = 2 if vocab <= 65536 else 4
    tokens = np.asarray(tokens, dtype=np.uint16 if width == 2 else np.uint32)
    with open(path, "wb") as f:
        f.write(b"COATTOK\0" + struct.pack("<IIIIQ", 1, width, vocab, 0, len(tokens)))
        f.write(tokens.tobytes())


def run(cmd, quiet=True):
    """Runs one of our binaries; its output is shown only when it fails (or without quiet)."""
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0 or not quiet:
        print(p.stdout, end="", flush=True)
    if p.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} exited with {p.returncode}")
    return p.stdout


def rel_l2(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(ours - ref) / den) if den > 0 else float(np.linalg.norm(ours - ref))


class Table:
    def __init__(self):
        self.rows = []
        self.failed = False

    def add(self, check, compared, value, bound=None, note=""):
        if bound is None:
            result = "info"
        else:
            ok = bool(np.isfinite(value)) and value <= bound
            result = "PASS" if ok else "FAIL"
            self.failed |= not ok
        self.rows.append((check, compared, f"{value:.3e}", "" if bound is None else f"{bound:.0e}", result, note))

    def fail(self, check, why):
        self.rows.append((check, why, "-", "-", "FAIL", ""))
        self.failed = True

    def print(self, title):
        head = ("check", "compared", "value", "bound", "result", "note")
        widths = [max(len(str(r[i])) for r in self.rows + [head]) for i in range(len(head))]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
        print(f"\n== {title} ==")
        print(line(head))
        print(line(["-" * w for w in widths]))
        for r in self.rows:
            print(line(r))


class Batch:
    """Exactly BATCH windows of SEQ + 1 tokens (window w = tokens [w*SEQ, w*SEQ + SEQ]) in a token file."""

    def __init__(self, torch, rng, vocab, path, device):
        tokens = rng.integers(0, vocab, BATCH * SEQ + 1)
        write_token_file(path, tokens, vocab)
        self.path, self.vocab = path, vocab
        self.rows = np.stack([tokens[r * SEQ: r * SEQ + SEQ + 1] for r in range(BATCH)])
        self.ids = torch.tensor(self.rows[:, :-1], dtype=torch.long, device=device)
        self.targets = torch.tensor(self.rows[:, 1:], dtype=torch.long, device=device)


class Checks:
    """The logits and gradient checks of one imported checkpoint (ours_dir) against HF (load_hf)."""

    def __init__(self, env, table, name, ours_dir, load_hf, batch):
        self.env, self.table, self.name, self.ours_dir, self.load_hf, self.batch = env, table, name, ours_dir, load_hf, batch

    def our_device(self, dt):
        return "cpu" if dt == "fp32" else self.env.device.type  # ours in fp32 runs on the CPU (CUDA attention is BF16 only)

    def logits(self, hf32):
        """Logits of row 0's SEQ tokens; returns HF's fp32 logits."""
        torch, b = self.env.torch, self.batch
        with torch.no_grad():
            logits_ref = hf32(input_ids=b.ids[:1], use_cache=False).logits[0].double().cpu().numpy()
        id_text = ",".join(str(int(t)) for t in b.rows[0, :-1])
        for dt in self.env.dtypes:
            our_dev = self.our_device(dt)
            out = os.path.join(self.env.work, f"{self.name}-{dt}.logits")
            run([self.env.tool["coat-generate"], "--checkpoint", self.ours_dir, "--ids", id_text, "--logits-out", out,
                 "--device", our_dev, "--precision", dt])
            ours = np.fromfile(out, dtype=np.float32).reshape(SEQ, b.vocab)
            if dt == "fp32":
                self.table.add("logits fp32", "ours cpu fp32 vs HF fp32", rel_l2(ours, logits_ref), LOGITS_BOUND["fp32"])
            else:
                hf16 = self.load_hf(torch.bfloat16)
                with torch.no_grad():
                    theirs = hf16(input_ids=b.ids[:1], use_cache=False).logits[0].double().cpu().numpy()
                del hf16
                hf_err = rel_l2(theirs, logits_ref)
                self.table.add("logits bf16", f"ours {our_dev} bf16 vs HF fp32 (reference)", rel_l2(ours, logits_ref),
                               bf16_bound(LOGITS_BOUND["bf16"], hf_err),
                               f"HF bf16 vs HF fp32 {hf_err:.2e}; ours vs HF bf16 {rel_l2(ours, theirs):.2e}")
        return logits_ref

    def hf_grads(self, model, autocast):
        torch, F, b, dev = self.env.torch, self.env.F, self.batch, self.env.device
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=b.ids, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, b.vocab), b.targets.reshape(-1))
        loss.backward()
        grads = {n: p.grad.detach().double().cpu().numpy() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return loss.detach().item(), grads

    def grads(self, hf32):
        """Gradients of the mean cross-entropy over the batch."""
        ref_loss, ref_grads = self.hf_grads(hf32, autocast=False)
        for dt in self.env.dtypes:
            our_dev = self.our_device(dt)
            out = os.path.join(self.env.work, f"{self.name}-{dt}.grads.safetensors")
            run([self.env.tool["coat-grads"], "--checkpoint", self.ours_dir, "--tokens", self.batch.path, "--batch",
                 str(BATCH), "--seq", str(SEQ), "--output", out, "--device", our_dev, "--precision", dt])
            with self.env.safe_open(out, "np") as f:
                our_loss = float(f.metadata()["loss"])
                ours = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
            if set(ours) != set(ref_grads):
                self.table.fail(f"grads {dt}", f"parameter names differ: ours only {sorted(set(ours) - set(ref_grads))}, "
                                f"HF only {sorted(set(ref_grads) - set(ours))}")
                continue
            errs = {k: rel_l2(ours[k], ref_grads[k]) for k in ref_grads}
            bounds = {k: GRAD_BOUND[dt] for k in ref_grads}
            hf_errs = None
            if dt == "bf16":
                _, auto_grads = self.hf_grads(hf32, autocast=True)
                hf_errs = {k: rel_l2(auto_grads[k], ref_grads[k]) for k in ref_grads}
                bounds = {k: bf16_bound(GRAD_BOUND[dt], hf_errs[k]) for k in ref_grads}
            worst = max(errs, key=lambda k: errs[k] / bounds[k])  # the nearest to its bound
            note = f"worst {worst}"
            if hf_errs:
                note += f"; HF autocast bf16 vs HF fp32 there {hf_errs[worst]:.2e}, max {max(hf_errs.values()):.2e}"
            compared = f"ours {our_dev} {dt} vs HF fp32 (reference)"
            self.table.add(f"grads {dt} (max of {len(errs)})", compared, errs[worst], bounds[worst], note)
            self.table.add(f"loss {dt}", compared, abs(our_loss - ref_loss) / abs(ref_loss), None,
                           f"ours {our_loss:.6f}, HF fp32 {ref_loss:.6f}")
            if self.env.verbose or errs[worst] > bounds[worst]:
                print(f"{self.name} gradients, ours {dt} vs HF fp32 (relative L2 per parameter"
                      + (", HF autocast bf16 beside)" if hf_errs else ")"))
                for k in ref_grads:
                    print(f"  {k:48s} {errs[k]:.3e}" + (f"  {hf_errs[k]:.3e}" if hf_errs else "")
                          + ("  FAIL" if errs[k] > bounds[k] else ""))


def hf_loader(env, cls, hf_dir):
    torch = env.torch

    def load_hf(dtype=torch.float32):
        try:
            m = cls.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa")
        except TypeError:  # transformers 4.x spells it torch_dtype
            m = cls.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="sdpa")
        m.model.embed_tokens.padding_idx = None  # see the docstring: every row gets its gradient
        return m.to(device=env.device, dtype=dtype)

    return load_hf


def check_trained(env, name, batch, warm_tokens, table):
    """A model made by coat-train: export, import the export, then logits, gradients and training."""
    torch, F, transformers = env.torch, env.F, env.transformers
    model_cfg = MODELS[name]

    def config(run_dir, data_path, steps, recipe, dev, lr=1e-2, init_from="", validation=0.1, optim=None):
        c = {
            "model": model_cfg,
            "data": {"path": data_path, "seq_len": SEQ, "validation_fraction": validation},
            "train": {"device": dev, "micro_batch_size": BATCH, "global_batch_size": BATCH, "max_steps": steps,
                      "eval_batches": 1, "log_interval": 1},
            "optim": optim or {"lr": lr, "warmup_steps": 0},
            "precision": {"recipe": recipe},
            "checkpoint": {"interval": 0, "keep_last": 1},
            "logging": {"run_dir": run_dir, "progress": "off"},
        }
        if init_from:
            c["train"]["init_from"] = init_from
        path = run_dir + ".json"
        with open(path, "w") as f:
            json.dump(c, f, indent=1)
        return path

    # 1. Weights away from their initialisation; export; import the export back.
    warm_dir = os.path.join(env.work, name + "-warmup")
    run([env.tool["coat-train"], "--config", config(warm_dir, warm_tokens, 2, "fp32", "cpu")])
    hf_dir = os.path.join(env.work, name + "-hf")
    run([env.tool["coat-convert"], "export", "--checkpoint", warm_dir, "--output", hf_dir])
    ours_dir = os.path.join(env.work, name + "-imported")
    run([env.tool["coat-convert"], "import", "--hf", hf_dir, "--output", ours_dir])

    cls = transformers.LlamaForCausalLM if model_cfg["architecture"] == "llama" else transformers.OlmoForCausalLM
    load_hf = hf_loader(env, cls, hf_dir)
    checks = Checks(env, table, name, ours_dir, load_hf, batch)
    hf32 = load_hf()
    checks.logits(hf32)  # 2.
    checks.grads(hf32)  # 3.
    del hf32

    # 4. Training on one fixed batch.
    if env.steps <= 0:
        return
    for dt in env.dtypes:
        our_dev = checks.our_device(dt)
        train_dir = os.path.join(env.work, f"{name}-train-{dt}")
        run([env.tool["coat-train"], "--config", config(train_dir, batch.path, env.steps, dt, our_dev,
                                                        init_from=ours_dir, validation=0.0, optim=OPTIM)])
        ours = {}
        with open(os.path.join(train_dir, "metrics.jsonl")) as f:
            for line in f:
                j = json.loads(line)
                if "loss" in j:
                    ours[j["step"]] = j["loss"]
        ours = np.array([ours[s] for s in range(1, env.steps + 1)])

        model = load_hf()  # FP32 master weights, autocast for bf16
        model.train()
        decay = [p for n, p in model.named_parameters() if "norm" not in n and "embed_tokens" not in n]
        no_decay = [p for n, p in model.named_parameters() if "norm" in n or "embed_tokens" in n]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"])
        theirs = []
        for _ in range(env.steps):
            with torch.autocast(device_type=env.device.type, dtype=torch.bfloat16, enabled=dt == "bf16"):
                logits = model(input_ids=batch.ids, use_cache=False).logits
            loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), batch.targets.reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            theirs.append(loss.detach().item())
        theirs = np.array(theirs)
        del model, opt
        rel = np.abs(ours - theirs) / np.abs(theirs)
        k = int(np.argmax(rel))
        hf_kind = "HF autocast bf16" if dt == "bf16" else "HF fp32"
        table.add(f"train {dt} ({env.steps} steps)", f"ours {our_dev} {dt} vs {hf_kind}: max rel loss diff",
                  float(rel[k]), TRAIN_BOUND,
                  f"at step {k + 1}; loss {theirs[0]:.4f} -> {theirs[-1]:.4f} (HF), {ours[-1]:.4f} (ours)")
        if env.verbose:
            print(f"{name} {dt} losses (step, ours, HF):")
            for s in range(env.steps):
                print(f"  {s + 1:4d} {ours[s]:.6f} {theirs[s]:.6f}")


def hf_llama_config(transformers, rope_theta, rope_scaling):
    """LlamaConfig of the Llama-3.1 shape, RoPE passed as this transformers version takes it."""
    kw = dict(LLAMA31_SHAPE)
    if "rope_parameters" in inspect.signature(transformers.LlamaConfig.__init__).parameters:  # transformers 5
        kw["rope_parameters"] = dict(rope_scaling or {"rope_type": "default"}, rope_theta=rope_theta)
    else:
        kw["rope_theta"] = rope_theta
        kw["rope_scaling"] = dict(rope_scaling) if rope_scaling else None
    return transformers.LlamaConfig(**kw)


def check_imported(env, name, batch, table, seed):
    """A model made and saved (BF16, sharded) by transformers, imported with coat-convert: logits, gradients."""
    torch, transformers = env.torch, env.transformers
    spec = IMPORTED[name]
    hf_dir = os.path.join(env.work, name + "-hf")
    torch.manual_seed(seed)
    made = transformers.LlamaForCausalLM(hf_llama_config(transformers, spec["rope_theta"], spec["rope_scaling"]))
    made = made.to(torch.bfloat16)
    try:
        made.save_pretrained(hf_dir, max_shard_size=MAX_SHARD_SIZE, safe_serialization=True)
    except TypeError:  # a version without the safe_serialization switch writes safetensors anyway
        made.save_pretrained(hf_dir, max_shard_size=MAX_SHARD_SIZE)
    del made
    with open(os.path.join(hf_dir, "config.json")) as f:
        saved = json.load(f)
    shards = sorted(n for n in os.listdir(hf_dir) if n.endswith(".safetensors"))
    rope_keys = [k for k in ("rope_theta", "rope_scaling", "rope_parameters") if saved.get(k) is not None]
    print(f"{name}: transformers wrote {len(shards)} safetensors files, config.json RoPE keys {rope_keys}", flush=True)
    if not os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json")) or len(shards) < 2:
        table.fail("sharded save", f"save_pretrained(max_shard_size={MAX_SHARD_SIZE}) wrote no index or one file")
    ours_dir = os.path.join(env.work, name + "-imported")
    run([env.tool["coat-convert"], "import", "--hf", hf_dir, "--output", ours_dir])

    load_hf = hf_loader(env, transformers.LlamaForCausalLM, hf_dir)
    checks = Checks(env, table, name, ours_dir, load_hf, batch)
    hf32 = load_hf()
    logits_ref = checks.logits(hf32)
    # The same weights without the scaling: how far the logits move shows the check would catch an ignored one.
    plain = transformers.LlamaForCausalLM(hf_llama_config(transformers, spec["rope_theta"], None))
    plain.load_state_dict(hf32.state_dict(), strict=False)  # inv_freq buffers follow the config
    plain = plain.to(device=env.device, dtype=torch.float32)
    with torch.no_grad():
        unscaled = plain(input_ids=batch.ids[:1], use_cache=False).logits[0].double().cpu().numpy()
    del plain
    effect = rel_l2(unscaled, logits_ref)
    if effect < 10 * LOGITS_BOUND["fp32"]:
        table.fail("rope scaling effect", f"HF with and without the scaling differ by {effect:.1e} only: "
                                          "the logits check would not see an ignored scaling")
    else:
        table.add("rope scaling effect", "HF fp32 without vs with the scaling", effect, None,
                  f"config.json RoPE keys {rope_keys}, {len(shards)} shards")
    checks.grads(hf32)
    del hf32


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", "--build", dest="bin", default="build", help="directory with coat-train, coat-convert, "
                    "coat-generate, coat-grads (default build)")
    ap.add_argument("--work", default="/tmp/coat-parity", help="scratch directory (replaced)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="where HF runs, and ours in bf16 (default: cuda when torch sees a GPU)")
    ap.add_argument("--dtype", choices=["both", "bf16", "fp32"], default="both", help="which precisions to check")
    ap.add_argument("--steps", type=int, default=50, help="training steps to compare (0: no training check; "
                    "models made by coat-train only)")
    ap.add_argument("--models", default=",".join(list(MODELS) + list(IMPORTED)),
                    help="comma-separated subset of: " + ",".join(list(MODELS) + list(IMPORTED)))
    ap.add_argument("--verbose", action="store_true", help="print every parameter's gradient error")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors import safe_open

    env = types.SimpleNamespace()  # what every check needs: the tools, the torch modules, where and how to run
    env.torch, env.F, env.transformers, env.safe_open = torch, F, transformers, safe_open
    env.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if env.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("hf_parity: --device cuda but torch sees no GPU")
    env.dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]
    env.steps, env.verbose, env.work = args.steps, args.verbose, args.work
    names = [m for m in args.models.split(",") if m]
    for m in names:
        if m not in MODELS and m not in IMPORTED:
            sys.exit(f"hf_parity: unknown model '{m}' (known: {', '.join(list(MODELS) + list(IMPORTED))})")
    env.tool = {t: os.path.join(args.bin, t) for t in ("coat-train", "coat-convert", "coat-generate", "coat-grads")}
    for t, path in env.tool.items():
        if not os.access(path, os.X_OK):
            sys.exit(f"hf_parity: no executable {path}: build it (cmake --build build --target {t}) or pass --bin")
    # FP32 means FP32: no TF32 in HF's matrix products.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    transformers.utils.logging.disable_progress_bar()

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    rng = np.random.default_rng(0)
    warm_tokens = os.path.join(args.work, "warmup.bin")
    write_token_file(warm_tokens, rng.integers(0, VOCAB, 20000), VOCAB)
    batch = Batch(torch, rng, VOCAB, os.path.join(args.work, "batch.bin"), env.device)
    big_batch = Batch(torch, np.random.default_rng(1), BIG_VOCAB, os.path.join(args.work, "batch-u32.bin"), env.device)
    print(f"hf_parity: torch {torch.__version__}, transformers {transformers.__version__}, device {env.device}"
          + (f" ({torch.cuda.get_device_name(env.device)})" if env.device.type == "cuda" else "")
          + f", dtypes {'+'.join(env.dtypes)}, batch {BATCH} x {SEQ}, {args.steps} training steps", flush=True)

    any_failed = False
    for i, name in enumerate(names):
        started = time.time()
        table = Table()
        if name in MODELS:
            check_trained(env, name, batch, warm_tokens, table)
        else:
            check_imported(env, name, big_batch, table, seed=100 + i)
        table.print(f"{name}: {TITLES[name]}; device {env.device}, {time.time() - started:.0f} s")
        any_failed |= table.failed
    print("\nhf_parity: " + ("FAIL" if any_failed else "PASS"))
    sys.exit(1 if any_failed else 0)


if __name__ == "__main__":
    main()
