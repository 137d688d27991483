"""Diffusion Identity Block cost: an introspection round and a training step, diffusion ÷ MLP, same run.

    python benchmarks/bench_diffusion.py                        # embedded default model, CPU
    python benchmarks/bench_diffusion.py --device cuda --model Qwen/Qwen2.5-0.5B --sample_steps 4 16

Each row is diffusion speed ÷ MLP speed (MLP time ÷ diffusion time) per interleaved round (< 1: the diffusion
block is slower), median and IQR; each variant is built from the same base weights. The limit of the
training step is 1.0 (a training step runs the block once either way, without sampling); the round has none
(K denoising steps are the point).
Writes outputs/benchmarks/diffusion_<device>.json (``--record``: benchmarks/results/).
"""

from __future__ import annotations

import argparse

import torch

from harness import Report, add_record_flag, compare, interleave, result_path, timed
from hfself import IdentityConfig, IdentityForCausalLM, IntrospectionCallback
from hfself.data import DEFAULT_MODEL_ID
from hfself.train import load_causal_lm
from hfself_plugins.identity import IntrospectionArguments


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


def introspection_round(v, device):
    return lambda: timed(lambda: v["callback"].introspect(v["model"], v["tokenizer"]), device)


def training_step(v, device):
    def step():
        model, ids = v["model"], v["ids"]
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        v["optimizer"].step()
        v["optimizer"].zero_grad(set_to_none=True)

    return lambda: timed(step, device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_flag(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL_ID)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample_steps", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=32, help="tokens generated per introspection round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    report = Report("diffusion", vars(args), args.seed, str(device))
    variants = {"mlp": build(args, device, "mlp", None)}
    for k in args.sample_steps:
        variants[f"diffusion K={k}"] = build(args, device, "diffusion", k)
    torch.manual_seed(args.seed)
    rounds = interleave({name: introspection_round(v, device) for name, v in variants.items()}, args.rounds)
    steps = interleave({name: training_step(v, device) for name, v in variants.items()}, args.rounds)
    for name in variants:
        if name == "mlp":
            continue
        report.add(compare(f"introspection round speed, {name} ÷ MLP", rounds[name], rounds["mlp"], unit="s",
                           notes="K denoising steps per round"))
        report.add(compare(f"training step speed, {name} ÷ MLP", steps[name], steps["mlp"], unit="s", limit=1.0,
                           limit_note="the block runs once per step either way"))
    return report.write(result_path(args, f"diffusion_{device.type}.json", args.out))


if __name__ == "__main__":
    main()
