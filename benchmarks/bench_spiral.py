"""Spiral sparse attention vs dense causal attention: forward + backward time over sequence length.

    python benchmarks/bench_spiral.py                                  # CPU: 1k–8k tokens
    python benchmarks/bench_spiral.py --device cuda --dtype bfloat16 --lengths 1024 4096 16384 65536

Dense is SDPA with is_causal (Flash/efficient kernels where available). Spiral runs as
``gather`` (each query gathers its log2(T)+1 keys) everywhere and as ``flex`` (compiled
FlexAttention block mask) on CUDA. Prints JSON and writes it with a PNG of time vs length to
outputs/benchmarks/spiral_<device>.{json,png}; ratios are dense time ÷ spiral time (> 1: spiral faster).

With ``--record`` the JSON goes to the tracked benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from hfself.plotting import pyplot, save_figure
from hfself_plugins.spiral import spiral_attention
from results_path import add_record_flag, result_path


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(fn, q, k, v, device, repeats: int, warmup: int) -> float:
    times = []
    for i in range(warmup + repeats):
        for t in (q, k, v):
            t.grad = None
        sync(device)
        t0 = time.perf_counter()
        fn(q, k, v).sum().backward()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_flag(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    impls = ["gather"] + (["flex"] if device.type == "cuda" else [])
    curve = []
    for length in args.lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, args.heads, length, args.head_dim, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        keep = torch.ones(1, length, dtype=torch.bool, device=device)
        row = {"length": length, "dense_s": time_fwd_bwd(
            lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v, device, args.repeats,
            args.warmup)}
        for impl in impls:
            row[f"{impl}_s"] = time_fwd_bwd(lambda a, b, c, i=impl: spiral_attention(a, b, c, keep, i), q, k, v, device,
                                            args.repeats, args.warmup)
            row[f"dense_over_{impl}"] = row["dense_s"] / row[f"{impl}_s"]
        print(json.dumps(row))
        curve.append(row)
    result = {"benchmark": "spiral vs dense causal attention, forward + backward", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
              or platform.machine(), "torch": torch.__version__, "settings": vars(args), "curve": curve}
    out = result_path(args, f"spiral_{device.type}.json").with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    lengths = [r["length"] for r in curve]
    ax.loglog(lengths, [r["dense_s"] for r in curve], "o-", label="dense causal (SDPA)")
    for impl in impls:
        ax.loglog(lengths, [r[f"{impl}_s"] for r in curve], "s-", label=f"spiral ({impl})")
    ax.set(xlabel="sequence length", ylabel="forward + backward (s)", title=f"attention time, {device.type}")
    ax.legend()
    save_figure(fig, out.with_suffix(".png"))
    print(json.dumps({"ratios_dense_over_spiral": {r["length"]: {i: r[f"dense_over_{i}"] for i in impls}
                                                   for r in curve}}, indent=2))


if __name__ == "__main__":
    main()
