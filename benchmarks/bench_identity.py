"""Identity overhead: training and generation throughput with identity ÷ without, same run.

    python benchmarks/bench_identity.py                          # CPU-small
    python benchmarks/bench_identity.py --device cuda --preset 1b --dtype bfloat16 --seq_len 2048

Prints JSON and writes it to outputs/benchmarks/identity_<device>_<preset>.json. Ratios > 1 mean
identity is faster. Generation is batch-1 greedy with KV cache; "folded" is what
IdentityForCausalLM.generate does, "hooks" keeps one add per projection per step.
Training is also measured under gradient checkpointing (non-reentrant) and under torch.compile,
each ratio against the base under the same setting. Timings are medians over interleaved
repeats (base, identity, base, identity, ...).

With ``--record`` the JSON goes to the tracked benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hfself import IdentityConfig, IdentityForCausalLM
from results_path import add_record_flag, result_path

PRESETS = {
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096),
    # Llama-3.2-1B shape
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args, device, dtype, identity: bool):
    torch.manual_seed(0)
    config = LlamaConfig(**PRESETS[args.preset], max_position_embeddings=max(4096, args.seq_len * 2))
    base = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    if not identity:
        return base
    model = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=64, identity_hidden_dim=256))
    model.identity_block.to(device=device, dtype=dtype)
    return model


def train_tokens_per_s(model, args, device) -> tuple[list[float], int]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, PRESETS[args.preset]["vocab_size"], (args.batch_size, args.seq_len), device=device)
    model.train()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if step >= args.warmup:
            times.append(ids.numel() / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    del opt
    return times, peak


@torch.no_grad()
def generate_tokens_per_s(model, args, device, hooks_only=False) -> list[float]:
    model.eval()
    prompt = torch.randint(0, PRESETS[args.preset]["vocab_size"], (1, 32), device=device)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, use_cache=True)
    gen = model.lm.generate if hooks_only else model.generate
    out = []
    for i in range(args.gen_warmup + args.gen_repeats):
        sync(device)
        t0 = time.perf_counter()
        gen(prompt, **kw)
        sync(device)
        if i >= args.gen_warmup:
            out.append(args.new_tokens / (time.perf_counter() - t0))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--gen_repeats", type=int, default=5)
    p.add_argument("--gen_warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="interleaved base/identity rounds")
    p.add_argument("--rows", default="train,generate,checkpointing,compile",
                   help="comma-separated: train, generate, checkpointing, compile")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    rows = set(args.rows.split(","))
    base, ident = build(args, device, dtype, False), build(args, device, dtype, True)
    models = {"base": base, "identity": ident}
    compiled = {name: torch.compile(model) for name, model in models.items()} if "compile" in rows else {}
    train = {"base": [], "identity": []}
    checkpointed = {"base": [], "identity": []}
    compiled_train = {"base": [], "identity": []}
    gen = {"base": [], "identity_folded": [], "identity_hooks": []}
    peaks = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            if "train" in rows:
                t, peak = train_tokens_per_s(model, args, device)
                train[name] += t
                peaks[name] = max(peaks.get(name, 0), peak)
            if "checkpointing" in rows:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                checkpointed[name] += train_tokens_per_s(model, args, device)[0]
                model.gradient_checkpointing_disable()
            if "compile" in rows:
                compiled_train[name] += train_tokens_per_s(compiled[name], args, device)[0]
        if "generate" in rows:
            gen["base"] += generate_tokens_per_s(base, args, device)
            gen["identity_folded"] += generate_tokens_per_s(ident, args, device)
            gen["identity_hooks"] += generate_tokens_per_s(ident, args, device, hooks_only=True)

    series = {**{f"train_{k}": v for k, v in train.items()}, **{f"generate_{k}": v for k, v in gen.items()},
              **{f"checkpointed_{k}": v for k, v in checkpointed.items()},
              **{f"compiled_{k}": v for k, v in compiled_train.items()}}
    med = {k: statistics.median(v) if v else float("nan") for k, v in series.items()}
    result = {
        "benchmark": "identity",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "preset": args.preset, "dtype": args.dtype, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "train_tokens_per_s": {"base": med["train_base"], "identity": med["train_identity"]},
        "generate_tokens_per_s": {k: med[f"generate_{k}"] for k in gen},
        "train_ratio": med["train_identity"] / med["train_base"],
        "generate_ratio": med["generate_identity_folded"] / med["generate_base"],
        "generate_ratio_hooks_only": med["generate_identity_hooks"] / med["generate_base"],
        "train_tokens_per_s_checkpointing": {"base": med["checkpointed_base"],
                                             "identity": med["checkpointed_identity"]},
        "train_ratio_checkpointing": med["checkpointed_identity"] / med["checkpointed_base"],
        "train_tokens_per_s_compiled": {"base": med["compiled_base"], "identity": med["compiled_identity"]},
        "train_ratio_compiled": med["compiled_identity"] / med["compiled_base"],
        "peak_memory_ratio": (peaks["identity"] / peaks["base"]) if peaks.get("base") else None,
        "targets_on_h100_1b": {"train_ratio": 0.99, "generate_ratio": 0.98},
    }
    print(json.dumps(result, indent=2))
    out = result_path(args, f"identity_{device.type}_{args.preset}.json", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
