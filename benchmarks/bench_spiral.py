"""Spiral sparse attention vs dense causal attention: forward + backward speed over sequence length.

    python benchmarks/bench_spiral.py                                  # CPU: 1k–8k tokens
    python benchmarks/bench_spiral.py --device cuda --dtype bfloat16 --lengths 4096 16384 65536

Dense is SDPA with is_causal (Flash/efficient kernels where available). Spiral runs as ``gather`` (each query
gathers its log2(T)+1 keys) everywhere and as ``flex`` (compiled FlexAttention block mask) on CUDA. Each row is
spiral speed ÷ dense speed (> 1: spiral faster) per interleaved round, median and IQR, beside its limit: the
causal pairs ÷ the pairs the spiral mask keeps (1 ÷ its density within the causal triangle), what a kernel that
did work only where the mask is set would reach. Writes JSON and a PNG of time vs length to
outputs/benchmarks/spiral_<device>.{json,png} (``--record``: benchmarks/results/).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from harness import Report, add_record_flag, compare, interleave, result_path, timed
from hfself.plotting import pyplot, save_figure
from hfself_plugins.spiral import spiral_attention
from hfself_plugins.spiral.model import spiral_offsets


def kept_pairs(length: int) -> int:
    """(query, key) pairs the spiral mask keeps: each query t sees the offsets that reach back no further than 0."""
    offsets = spiral_offsets(length)
    return sum(sum(1 for o in offsets if o <= t) for t in range(length))


def speed(fn, q, k, v, device):
    def run() -> float:
        for t in (q, k, v):
            t.grad = None
        return 1 / timed(lambda: fn(q, k, v).sum().backward(), device)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_flag(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    impls = ["gather"] + (["flex"] if device.type == "cuda" else [])
    report = Report("spiral", vars(args), args.seed, str(device), extra={"curve": []})
    for length in args.lengths:
        torch.manual_seed(args.seed)
        q, k, v = (torch.randn(1, args.heads, length, args.head_dim, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        keep = torch.ones(1, length, dtype=torch.bool, device=device)
        sides = {"dense": speed(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v,
                                device)}
        for impl in impls:
            sides[impl] = speed(lambda a, b, c, i=impl: spiral_attention(a, b, c, keep, i), q, k, v, device)
        measured = interleave(sides, args.rounds)
        density = kept_pairs(length) / (length * (length + 1) / 2)
        point = {"length": length, "density": density, **{f"{name}_s": 1 / (sum(values) / len(values))
                                                          for name, values in measured.items()}}
        report.extra["curve"].append(point)
        for impl in impls:
            report.add(compare(f"{impl} at {length} tokens", measured["dense"], measured[impl], unit="1/s",
                               limit=1 / density, limit_note=f"mask density {density:.4f}"))

    out = result_path(args, f"spiral_{device.type}.json", args.out)
    data = report.write(out)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    curve = report.extra["curve"]
    lengths = [r["length"] for r in curve]
    ax.loglog(lengths, [r["dense_s"] for r in curve], "o-", label="dense causal (SDPA)")
    for impl in impls:
        ax.loglog(lengths, [r[f"{impl}_s"] for r in curve], "s-", label=f"spiral ({impl})")
    ax.set(xlabel="sequence length", ylabel="forward + backward (s)", title=f"attention time, {device.type}")
    ax.legend()
    save_figure(fig, out.with_suffix(".png"))
    return data


if __name__ == "__main__":
    main()
