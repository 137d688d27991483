"""Diffusion Identity Block cost: an introspection round and a training step, diffusion ÷ MLP, same run.

    python benchmarks/bench_diffusion.py                        # embedded default model, CPU
    python benchmarks/bench_diffusion.py --device cuda --model Qwen/Qwen2.5-0.5B --sample_steps 4 16

Prints JSON and writes it to outputs/benchmarks/diffusion_<device>.json. Ratios > 1 mean the
diffusion block is slower. Timings are medians over interleaved repeats (mlp, diffusion K=…, mlp, …);
each variant is built from the same base weights.

With ``--record`` the JSON goes to the tracked benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from hfself import IdentityConfig, IdentityForCausalLM, IntrospectionCallback
from hfself.data import DEFAULT_MODEL
from hfself.train import load_causal_lm
from hfself_plugins.identity import IntrospectionArguments
from results_path import add_record_flag, result_path


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args, device, block: str, sample_steps: int | None):
    base, tokenizer = load_causal_lm(args.model, seed=0)
    base.to(device)
    torch.manual_seed(0)
    config = IdentityConfig(identity_dim=64, block=block,
                            block_config={"sample_steps": sample_steps} if block == "diffusion" else None)
    model = IdentityForCausalLM.from_base(base, config)
    model.identity_block.to(device)
    callback = IntrospectionCallback(IntrospectionArguments(identity_update_interval=1, identity_lr=1e-4,
                                                            identity_max_new_tokens=args.new_tokens))
    callback.ensure_optimizer(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, base.config.vocab_size, (args.batch_size, args.seq_len), device=device)
    return {"model": model, "tokenizer": tokenizer, "callback": callback, "optimizer": optimizer, "ids": ids}


def time_round(v, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    v["callback"].introspect(v["model"], v["tokenizer"])
    sync(device)
    return time.perf_counter() - t0


def time_step(v, device) -> float:
    model, ids = v["model"], v["ids"]
    model.train()
    sync(device)
    t0 = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    v["optimizer"].step()
    v["optimizer"].zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_flag(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample_steps", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=32, help="tokens generated per introspection round")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)

    variants = {"mlp": build(args, device, "mlp", None)}
    for k in args.sample_steps:
        variants[f"diffusion_k{k}"] = build(args, device, "diffusion", k)
    rounds = {name: [] for name in variants}
    steps = {name: [] for name in variants}
    for i in range(args.warmup + args.repeats):
        for name, v in variants.items():  # interleaved, so drift in machine speed hits every variant alike
            torch.manual_seed(i)
            r, s = time_round(v, device), time_step(v, device)
            if i >= args.warmup:
                rounds[name].append(r)
                steps[name].append(s)

    median = {name: {"round_s": statistics.median(rounds[name]), "step_s": statistics.median(steps[name])}
              for name in variants}
    ratios = {name: {"round": median[name]["round_s"] / median["mlp"]["round_s"],
                     "train_step": median[name]["step_s"] / median["mlp"]["step_s"]}
              for name in variants if name != "mlp"}
    result = {"benchmark": "diffusion identity block ÷ MLP block", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
              or platform.machine(), "torch": torch.__version__, "model": args.model,
              "settings": {k: v for k, v in vars(args).items() if k not in ("output",)},
              "median_seconds": median, "ratio_to_mlp": ratios}
    print(json.dumps(result, indent=2))
    out = result_path(args, f"diffusion_{device.type}.json", args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
