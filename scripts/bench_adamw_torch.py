#!/usr/bin/env python3
"""The PyTorch peer of the optimizer benchmark (issue 5): torch.optim.AdamW(fused=True) with FP32 states over
the 28 weight matrices of 4 Llama-2-7B layers (0.81B FP32 parameters and gradients), as our
`coat_test_backend_cuda --gtest_also_run_disabled_tests --gtest_filter='*Llama2_7B_FourLayers'` does.
Run it in the same device command as ours. Prints one line per variant: ms per step (median of 10 after 3
warm-ups, CUDA events) and the share of the D2D copy bandwidth measured here (28 bytes per parameter moved)."""
import argparse
import statistics

import torch


def median_ms(fn, reps=10, warmups=3):
    for _ in range(warmups):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    d, f = 4096, 11008
    shapes = [(d, d)] * 4 + [(f, d), (f, d), (d, f)]
    params = []
    for _ in range(args.layers):
        for s in shapes:
            p = torch.nn.Parameter(torch.randn(s, device="cuda") * 0.02)
            p.grad = torch.randn(s, device="cuda") * 1e-3
            params.append(p)
    n = sum(p.numel() for p in params)
    layer = sum(p.numel() for p in params[:7])  # the copy bandwidth over one layer's floats, as ours
    src, dst = torch.empty(layer, device="cuda"), torch.empty(layer, device="cuda")
    copy_ms = median_ms(lambda: dst.copy_(src))
    copy_gbs = 8.0 * layer / copy_ms / 1e6
    print(f"[torch] device {torch.cuda.get_device_name()}, {n / 1e9:.3f}B params in {len(params)} tensors, "
          f"D2D copy {copy_gbs:.0f} GB/s (read + write)")
    for name, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True})):
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, **kw)
        ms = median_ms(opt.step)
        gbs = 28.0 * n / ms / 1e6
        print(f"[torch] AdamW {name} fp32: {ms:.3f} ms, 28 B/param, {gbs:.0f} GB/s = {100 * gbs / copy_gbs:.0f}% of copy")
        del opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
