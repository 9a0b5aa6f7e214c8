#!/usr/bin/env python3
"""Ours beside the PyTorch peers, in one command, as ratios.

Runs coat-bench for each recipe and the peer baseline (../shared/bench/torch_baseline.py or --peer-script) for
each peer setup, one after the other on the same GPU, and prints one table: tokens/s, peak memory, and every
recipe's tokens/s as a multiple of every peer's. The machines are shared and their clocks drift, so a ratio is
only meaningful from one such command.

  scripts/bench_peers.py --config configs/bench_tinyllama.json --recipes bf16,coat \\
      --peer-model tinyllama1b --peers compile,float8_tensorwise --json peers.json

Peers (names for --peers): eager, compile (torch.compile BF16 autocast + fused AdamW), float8_tensorwise,
float8_rowwise (torchao float8 + compile), bf16_adamw8bit_ckpt (pure BF16 params, torchao 8-bit AdamW,
activation checkpointing, compile: the one-GPU 7B peer). A run that fails or outlasts --timeout is reported
as such in the table (its error tail below it) and the others still run; the exit status is then 1.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

PEER_FLAGS = {
    "eager": [],
    "compile": ["--compile"],
    "float8_tensorwise": ["--compile", "--float8", "tensorwise"],
    "float8_rowwise": ["--compile", "--float8", "rowwise"],
    "bf16_adamw8bit_ckpt": ["--compile", "--params", "bf16", "--optim", "adamw8bit", "--ckpt"],
}
GIB = float(1 << 30)


def last_json_line(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run(cmd, timeout):
    """(completed text, error or None) of one benchmark command."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out, f"timed out after {timeout} s"
    except OSError as e:
        return "", f"could not start {cmd[0]}: {e}"
    return p.stdout, None if p.returncode == 0 else f"exit status {p.returncode}"


def ours(a, spec):
    """spec: a recipe, optionally with overrides of its own after '+' (coat+train.deterministic=false)."""
    recipe, *own = spec.split("+")
    with tempfile.TemporaryDirectory() as tmp:
        out_json = os.path.join(tmp, "bench.json")
        cmd = [a.coat_bench, "--config", a.config, "--set", f"precision.recipe={recipe}", "--steps", str(a.steps),
               "--warmup", str(a.warmup), "--no-kernels", "--json", out_json]
        cmd += sum((["--set", s] for s in a.set + own), [])
        text, err = run(cmd, a.timeout)
        if err is None and not os.path.exists(out_json):
            err = f"{a.coat_bench} wrote no {out_json}"
        if err is not None:
            return dict(name=f"coat-train {spec}", error=err, tail=text[-2000:])
        with open(out_json) as f:
            d = json.load(f)
    return dict(name=f"coat-train {spec}", kind="ours", recipe=spec, tokens_per_s=float(d["tokens_per_s"]),
                peak_alloc_gib=d["peak_bytes_total"] / GIB, peak_reserved_gib=d["peak_reserved_bytes"] / GIB,
                device=d.get("device", ""))


def peer(a, name):
    cmd = [a.python, a.peer_script, "--model", a.peer_model, "--mb", str(a.mb), "--steps", str(a.steps)]
    cmd += PEER_FLAGS[name] + (["--layers", str(a.peer_layers)] if a.peer_layers else [])
    text, err = run(cmd, a.timeout)
    d = last_json_line(text) if err is None else None
    if err is None and d is None:
        err = "printed no JSON line"
    if err is not None:
        return dict(name=f"pytorch {name}", error=err, tail=text[-2000:])
    return dict(name=f"pytorch {name}", kind="peer", peer=name, tokens_per_s=float(d["tokens_per_s_per_gpu"]),
                peak_alloc_gib=float(d["peak_alloc_gib"]), peak_reserved_gib=float(d["peak_reserved_gib"]),
                device=d.get("device", ""))


def table(rows):
    """Markdown: one line per run; for each of ours, its tokens/s over each peer's and its peak over theirs."""
    peers = [r for r in rows if r.get("kind") == "peer"]
    head = ["run", "tokens/s", "peak allocated GiB", "peak reserved GiB"]
    head += [f"x {p['name']}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append("| " + " | ".join([r["name"], "failed: " + r["error"]] + [""] * (len(head) - 2)) + " |")
            continue
        cells = [r["name"], f"{r['tokens_per_s']:,.0f}", f"{r['peak_alloc_gib']:.2f}", f"{r['peak_reserved_gib']:.2f}"]
        for p in peers:
            cells.append("" if r.get("kind") != "ours" else
                         f"{r['tokens_per_s'] / p['tokens_per_s']:.3f}x, memory {r['peak_alloc_gib'] / p['peak_alloc_gib']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="coat-bench config (the shape, micro-batch and sequence)")
    ap.add_argument("--recipes", default="bf16,coat",
                    help="comma-separated precision recipes of ours; one may carry overrides of its own after '+', "
                         "as in coat+train.deterministic=false")
    ap.add_argument("--set", action="append", default=[], help="extra coat-bench override section.key=value")
    ap.add_argument("--peer-model", required=True, help="torch_baseline.py --model (the same shape)")
    ap.add_argument("--peer-layers", type=int, default=0, help="torch_baseline.py --layers (0: the model's own)")
    ap.add_argument("--peers", default="compile", help="comma-separated: " + ", ".join(PEER_FLAGS))
    ap.add_argument("--mb", type=int, default=8, help="the peer's micro-batch (match the config's)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each run")
    ap.add_argument("--warmup", type=int, default=3, help="coat-bench's untimed steps (the peer does 3)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--coat-bench", default=os.path.join(repo, "build", "coat-bench"))
    ap.add_argument("--peer-script", default=os.path.join(repo, "..", "shared", "bench", "torch_baseline.py"))
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs the peer")
    ap.add_argument("--json", help="write every run's figures here")
    a = ap.parse_args(argv)
    a.recipes = [r for r in a.recipes.split(",") if r]
    a.peers = [p for p in a.peers.split(",") if p]
    unknown = [p for p in a.peers if p not in PEER_FLAGS]
    if unknown:
        ap.error(f"--peers: unknown {', '.join(unknown)}; expected some of {', '.join(PEER_FLAGS)}")
    bad = [r for r in a.recipes for o in r.split("+")[1:] if "=" not in o]
    if bad:
        ap.error(f"--recipes: {', '.join(bad)}: an override after '+' is section.key=value")
    for path, what in ((a.config, "--config"), (a.coat_bench, "--coat-bench"), (a.peer_script, "--peer-script")):
        if not os.path.exists(path):
            ap.error(f"{what}: {path} does not exist")
    return a


def main(argv):
    a = parse(argv)
    rows = [ours(a, r) for r in a.recipes] + [peer(a, p) for p in a.peers]
    print(table(rows))
    devices = sorted({r["device"] for r in rows if r.get("device")})
    if devices:
        print("device: " + "; ".join(devices))
    for r in rows:
        if "error" in r:
            print(f"\n{r['name']} failed ({r['error']}); its output ends:\n{r['tail']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
