#!/usr/bin/env python3
"""Checks coat-train against HF transformers: logits, every parameter's gradient, and training losses.

Run where torch + transformers are installed (the GPU machines), from the repository root, with the
binaries built (build/ or --bin DIR):

    source scripts/gpu_env.sh && scripts/hf_parity.py [--device cuda|cpu] [--dtype both|bf16|fp32] [--steps 50]

For two small models, a Llama (grouped KV heads, untied lm_head) and an OLMo (non-parametric LayerNorm,
tied embeddings):
  1. coat-train trains 2 steps on random tokens (so that the weights are not at their initialisation);
     coat-convert exports them (HF config.json + model.safetensors, F32) and imports that export back into
     a native checkpoint, which every run of ours below starts from; HF loads the export.
  2. logits of one sequence: coat-generate --logits-out against LlamaForCausalLM / OlmoForCausalLM.
     fp32: ours on the CPU (our CUDA path has no FP32 attention) vs HF in float32 on --device (TF32 off),
     relative L2 error <= 1e-4. bf16: ours with the bf16 recipe on --device vs HF model.to(bfloat16) on
     --device, <= 1e-2.
  3. gradients of the mean next-token cross-entropy over a batch of B rows of T tokens: coat-grads (the
     trainer's forward and backward) vs torch autograd, relative L2 error per parameter. The reference is
     HF in float32 (TF32 off) for both our fp32 (CPU, bound 1e-4) and our bf16 (--device, bound 2e-2)
     gradients: an FP32 reference measures our BF16 error alone instead of the sum of two BF16 errors.
     HF's own bf16 error (autocast) against the same reference is printed beside it.
  4. training: --steps AdamW steps (lr 1e-3 constant, no warmup, betas 0.9/0.95, eps 1e-8, weight decay
     0.1 except norms and embeddings as optim::default_decay, no clipping) on ONE fixed batch: the token
     file holds exactly B windows and no validation split, so each of our steps takes all B windows (in
     the sampler's order; the mean loss and its gradient do not depend on it). HF: torch.optim.AdamW on the
     same batch. fp32: ours on the CPU vs HF float32; bf16: ours with the bf16 recipe on --device vs HF
     float32 master weights under torch.autocast(bfloat16) on --device. Per-step losses within 1%
     (maximum relative difference over the steps).

HF's nn.Embedding(padding_idx=pad_token_id) gives the padding token's embedding row no gradient; coat-train
has no padding token, so the check turns padding_idx off on the HF side (OLMo's export names pad_token_id 1).

Prints one table per model; exits 1 when any check fails.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np

VOCAB = 256
BATCH, SEQ = 4, 64
LOGITS_BOUND = {"fp32": 1e-4, "bf16": 1e-2}
GRAD_BOUND = {"fp32": 1e-4, "bf16": 2e-2}
TRAIN_BOUND = 1e-2
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
TITLES = {"llama": "Llama, 4 query / 2 KV heads, untied lm_head", "olmo": "OLMo, LayerNorm without affine, tied embeddings"}


def write_token_file(path, tokens, vocab):
    """Our token file (include/coat/data/token_file.h): 32-byte header, then u16 tokens."""
    tokens = np.asarray(tokens, dtype=np.uint16)
    with open(path, "wb") as f:
        f.write(b"COATTOK\0" + struct.pack("<IIIIQ", 1, 2, vocab, 0, len(tokens)))
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", "--build", dest="bin", default="build", help="directory with coat-train, coat-convert, "
                    "coat-generate, coat-grads (default build)")
    ap.add_argument("--work", default="/tmp/coat-parity", help="scratch directory (replaced)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="where HF runs, and ours in bf16 (default: cuda when torch sees a GPU)")
    ap.add_argument("--dtype", choices=["both", "bf16", "fp32"], default="both", help="which precisions to check")
    ap.add_argument("--steps", type=int, default=50, help="training steps to compare (0: no training check)")
    ap.add_argument("--models", default="llama,olmo", help="comma-separated subset of: " + ",".join(MODELS))
    ap.add_argument("--verbose", action="store_true", help="print every parameter's gradient error")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors import safe_open

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("hf_parity: --device cuda but torch sees no GPU")
    dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]
    names = [m for m in args.models.split(",") if m]
    for m in names:
        if m not in MODELS:
            sys.exit(f"hf_parity: unknown model '{m}' (known: {', '.join(MODELS)})")
    tool = {t: os.path.join(args.bin, t) for t in ("coat-train", "coat-convert", "coat-generate", "coat-grads")}
    for t, path in tool.items():
        if not os.access(path, os.X_OK):
            sys.exit(f"hf_parity: no executable {path}: build it (cmake --build build --target {t}) or pass --bin")
    # FP32 means FP32: no TF32 in HF's matrix products.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    transformers.utils.logging.disable_progress_bar()
    our_bf16_device = device.type  # ours in fp32 always runs on the CPU (CUDA attention is BF16 only)

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    rng = np.random.default_rng(0)
    warm_tokens = os.path.join(args.work, "warmup.bin")
    write_token_file(warm_tokens, rng.integers(0, VOCAB, 20000), VOCAB)
    # Exactly BATCH windows of SEQ + 1 tokens (window w = tokens [w*SEQ, w*SEQ + SEQ]).
    batch_tokens = rng.integers(0, VOCAB, BATCH * SEQ + 1)
    batch_path = os.path.join(args.work, "batch.bin")
    write_token_file(batch_path, batch_tokens, VOCAB)
    rows = np.stack([batch_tokens[r * SEQ: r * SEQ + SEQ + 1] for r in range(BATCH)])
    ids = torch.tensor(rows[:, :-1], dtype=torch.long, device=device)
    targets = torch.tensor(rows[:, 1:], dtype=torch.long, device=device)
    print(f"hf_parity: torch {torch.__version__}, transformers {transformers.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", dtypes {'+'.join(dtypes)}, batch {BATCH} x {SEQ}, {args.steps} training steps", flush=True)

    any_failed = False
    for name in names:
        started = time.time()
        model_cfg = MODELS[name]
        table = Table()

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
        warm_dir = os.path.join(args.work, name + "-warmup")
        run([tool["coat-train"], "--config", config(warm_dir, warm_tokens, 2, "fp32", "cpu")])
        hf_dir = os.path.join(args.work, name + "-hf")
        run([tool["coat-convert"], "export", "--checkpoint", warm_dir, "--output", hf_dir])
        ours_dir = os.path.join(args.work, name + "-imported")
        run([tool["coat-convert"], "import", "--hf", hf_dir, "--output", ours_dir])

        cls = transformers.LlamaForCausalLM if model_cfg["architecture"] == "llama" else transformers.OlmoForCausalLM

        def load_hf(dtype=torch.float32):
            try:
                m = cls.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa")
            except TypeError:  # transformers 4.x spells it torch_dtype
                m = cls.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="sdpa")
            m.model.embed_tokens.padding_idx = None  # see the docstring: every row gets its gradient
            return m.to(device=device, dtype=dtype)

        hf32 = load_hf()
        with torch.no_grad():
            logits_ref = hf32(input_ids=ids[:1], use_cache=False).logits[0].double().cpu().numpy()

        # 2. Logits of row 0's SEQ tokens.
        id_text = ",".join(str(int(t)) for t in rows[0, :-1])
        for dt in dtypes:
            our_dev = "cpu" if dt == "fp32" else our_bf16_device
            out = os.path.join(args.work, f"{name}-{dt}.logits")
            run([tool["coat-generate"], "--checkpoint", ours_dir, "--ids", id_text, "--logits-out", out,
                 "--device", our_dev, "--precision", dt])
            ours = np.fromfile(out, dtype=np.float32).reshape(SEQ, VOCAB)
            if dt == "fp32":
                table.add("logits fp32", "ours cpu fp32 vs HF fp32", rel_l2(ours, logits_ref), LOGITS_BOUND["fp32"])
            else:
                hf16 = load_hf(torch.bfloat16)
                with torch.no_grad():
                    theirs = hf16(input_ids=ids[:1], use_cache=False).logits[0].double().cpu().numpy()
                del hf16
                table.add("logits bf16", f"ours {our_dev} bf16 vs HF bf16", rel_l2(ours, theirs), LOGITS_BOUND["bf16"],
                          f"vs HF fp32: ours {rel_l2(ours, logits_ref):.2e}, HF bf16 {rel_l2(theirs, logits_ref):.2e}")

        # 3. Gradients of the mean cross-entropy over the batch.
        def hf_grads(model, autocast):
            model.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=ids, use_cache=False).logits
            loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
            loss.backward()
            grads = {n: p.grad.detach().double().cpu().numpy() for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            return loss.detach().item(), grads

        ref_loss, ref_grads = hf_grads(hf32, autocast=False)
        for dt in dtypes:
            our_dev = "cpu" if dt == "fp32" else our_bf16_device
            out = os.path.join(args.work, f"{name}-{dt}.grads.safetensors")
            run([tool["coat-grads"], "--checkpoint", ours_dir, "--tokens", batch_path, "--batch", str(BATCH),
                 "--seq", str(SEQ), "--output", out, "--device", our_dev, "--precision", dt])
            with safe_open(out, "np") as f:
                our_loss = float(f.metadata()["loss"])
                ours = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
            if set(ours) != set(ref_grads):
                table.fail(f"grads {dt}", f"parameter names differ: ours only {sorted(set(ours) - set(ref_grads))}, "
                           f"HF only {sorted(set(ref_grads) - set(ours))}")
                continue
            errs = {k: rel_l2(ours[k], ref_grads[k]) for k in ref_grads}
            worst = max(errs, key=errs.get)
            note = f"worst {worst}"
            hf_errs = None
            if dt == "bf16":
                _, auto_grads = hf_grads(hf32, autocast=True)
                hf_errs = {k: rel_l2(auto_grads[k], ref_grads[k]) for k in ref_grads}
                note += f"; HF autocast bf16 vs HF fp32: max {max(hf_errs.values()):.2e}"
            compared = f"ours {our_dev} {dt} vs HF fp32 (reference)"
            table.add(f"grads {dt} (max of {len(errs)})", compared, errs[worst], GRAD_BOUND[dt], note)
            table.add(f"loss {dt}", compared, abs(our_loss - ref_loss) / abs(ref_loss), None,
                      f"ours {our_loss:.6f}, HF fp32 {ref_loss:.6f}")
            if args.verbose or errs[worst] > GRAD_BOUND[dt]:
                print(f"{name} gradients, ours {dt} vs HF fp32 (relative L2 per parameter"
                      + (", HF autocast bf16 beside)" if hf_errs else ")"))
                for k in ref_grads:
                    print(f"  {k:48s} {errs[k]:.3e}" + (f"  {hf_errs[k]:.3e}" if hf_errs else "")
                          + ("  FAIL" if errs[k] > GRAD_BOUND[dt] else ""))
        del hf32

        # 4. Training on one fixed batch.
        if args.steps > 0:
            for dt in dtypes:
                our_dev = "cpu" if dt == "fp32" else our_bf16_device
                train_dir = os.path.join(args.work, f"{name}-train-{dt}")
                run([tool["coat-train"], "--config", config(train_dir, batch_path, args.steps, dt, our_dev,
                                                             init_from=ours_dir, validation=0.0, optim=OPTIM)])
                ours = {}
                with open(os.path.join(train_dir, "metrics.jsonl")) as f:
                    for line in f:
                        j = json.loads(line)
                        if "loss" in j:
                            ours[j["step"]] = j["loss"]
                ours = np.array([ours[s] for s in range(1, args.steps + 1)])

                model = load_hf()  # FP32 master weights, autocast for bf16
                model.train()
                decay = [p for n, p in model.named_parameters() if "norm" not in n and "embed_tokens" not in n]
                no_decay = [p for n, p in model.named_parameters() if "norm" in n or "embed_tokens" in n]
                opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM["weight_decay"]},
                                         {"params": no_decay, "weight_decay": 0.0}],
                                        lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"])
                theirs = []
                for _ in range(args.steps):
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dt == "bf16"):
                        logits = model(input_ids=ids, use_cache=False).logits
                    loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    theirs.append(loss.detach().item())
                theirs = np.array(theirs)
                del model, opt
                rel = np.abs(ours - theirs) / np.abs(theirs)
                k = int(np.argmax(rel))
                hf_kind = "HF autocast bf16" if dt == "bf16" else "HF fp32"
                table.add(f"train {dt} ({args.steps} steps)", f"ours {our_dev} {dt} vs {hf_kind}: max rel loss diff",
                          float(rel[k]), TRAIN_BOUND,
                          f"at step {k + 1}; loss {theirs[0]:.4f} -> {theirs[-1]:.4f} (HF), {ours[-1]:.4f} (ours)")
                if args.verbose:
                    print(f"{name} {dt} losses (step, ours, HF):")
                    for s in range(args.steps):
                        print(f"  {s + 1:4d} {ours[s]:.6f} {theirs[s]:.6f}")

        table.print(f"{name}: {TITLES[name]}; device {device}, {time.time() - started:.0f} s")
        any_failed |= table.failed
    print("\nhf_parity: " + ("FAIL" if any_failed else "PASS"))
    sys.exit(1 if any_failed else 0)


if __name__ == "__main__":
    main()
