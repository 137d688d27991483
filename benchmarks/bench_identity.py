"""Identity overhead: training and generation throughput with identity ÷ without, and the introspection
round's share of training time, same run.

    python benchmarks/bench_identity.py                          # CPU-small
    python benchmarks/bench_identity.py --device cuda --preset 1b --dtype bfloat16 --seq_len 2048

Every ratio is identity ÷ base tokens/s per interleaved round (base, identity, identity, base, ...), reported
as median and IQR over rounds beside its limit, 1.0 (the identity adds a bias per projection and a small MLP;
it cannot be faster). Generation is batch-1 greedy with KV cache; "folded" is what IdentityForCausalLM.generate
does, "hooks" keeps one add per projection per step. Training is also measured under gradient checkpointing
(non-reentrant) and under torch.compile. The introspection round (generate a self-description with a static
cache, embed it, one step of the identity) is timed against a training step: its share of training time at the
default interval is round ÷ (interval × step + round); the round is also timed with a dynamic cache. On CUDA,
transformers compiles the static-cache decoding step itself.

Writes JSON to outputs/benchmarks/identity_<device>_<preset>.json (``--record``: benchmarks/results/).
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from harness import Report, add_record_flag, compare, interleave, result_path, single, spread, timed
from hfself import IdentityConfig, IdentityForCausalLM, IntrospectionCallback
from hfself.data import DEFAULT_MODEL
from hfself_plugins.identity import IntrospectionArguments

PRESETS = {
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096),
    # Llama-3.2-1B's layer shape, two layers and a 32k vocabulary: a CPU-sized slice of the real thing
    "1b-slice": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=2, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=True),
    # Llama-3.2-1B shape
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}


def build(args, device, dtype, identity: bool):
    torch.manual_seed(args.seed)
    config = LlamaConfig(**PRESETS[args.preset], max_position_embeddings=max(4096, args.seq_len * 2),
                         bos_token_id=0, eos_token_id=0, pad_token_id=1)
    base = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    base.generation_config.eos_token_id = None  # random weights: always generate new_tokens tokens
    if not identity:
        return base
    model = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=64, identity_hidden_dim=256))
    model.identity_block.to(device=device, dtype=dtype)
    return model


class TrainStep:
    """One optimizer step per call; returns tokens/s."""

    def __init__(self, model, args, device):
        self.model, self.device = model, device
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        generator = torch.Generator().manual_seed(args.seed)
        self.ids = torch.randint(2, PRESETS[args.preset]["vocab_size"], (args.batch_size, args.seq_len),
                                 generator=generator).to(device)

    def step(self) -> None:
        self.model.train()
        self.model(input_ids=self.ids, labels=self.ids).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self) -> float:
        return self.ids.numel() / timed(self.step, self.device)


def generator(model, args, device, hooks_only=False):
    prompt = torch.randint(2, PRESETS[args.preset]["vocab_size"], (1, 32), device=device)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, use_cache=True)
    gen = model.lm.generate if hooks_only else model.generate

    @torch.no_grad()
    def tokens_per_s() -> float:
        model.eval()
        return args.new_tokens / timed(lambda: gen(prompt, **kw), device)

    return tokens_per_s


def introspection_rounds(model, args, device) -> dict[str, list[float]]:
    """Seconds of introspection rounds (generate, embed, one identity step) with a static and a dynamic KV cache,
    interleaved."""
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)  # ids only; the random model's words do not matter
    callbacks = {cache: IntrospectionCallback(IntrospectionArguments(identity_lr=1e-4,
                                                                     identity_cache_implementation=cache))
                 for cache in ("static", "dynamic")}
    return interleave({cache: (lambda c=callback: timed(lambda: c.introspect(model, tokenizer), device))
                       for cache, callback in callbacks.items()}, args.rounds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7, help="interleaved base/identity rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="train,generate,checkpointing,compile,introspection",
                   help="comma-separated: train, generate, checkpointing, compile, introspection")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rows = set(args.rows.split(","))
    report = Report("identity", vars(args), args.seed, str(device))
    base, identity = build(args, device, dtype, False), build(args, device, dtype, True)
    limit = dict(limit=1.0, limit_note="the identity only adds work")
    step_s = None

    if "train" in rows:
        sides = interleave({"base": TrainStep(base, args, device), "identity": TrainStep(identity, args, device)},
                           args.rounds)
        report.add(compare("train tokens/s", sides["base"], sides["identity"], unit="tokens/s", **limit))
        step_s = [args.batch_size * args.seq_len / v for v in sides["identity"]]
    if "checkpointing" in rows:
        for model in (base, identity):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        sides = interleave({"base": TrainStep(base, args, device), "identity": TrainStep(identity, args, device)},
                           args.rounds)
        for model in (base, identity):
            model.gradient_checkpointing_disable()
        report.add(compare("train tokens/s, gradient checkpointing", sides["base"], sides["identity"],
                           unit="tokens/s", **limit))
    if "compile" in rows:
        sides = interleave({"base": TrainStep(torch.compile(base), args, device),
                            "identity": TrainStep(torch.compile(identity), args, device)}, args.rounds, warmup=2)
        report.add(compare("train tokens/s, torch.compile", sides["base"], sides["identity"], unit="tokens/s",
                           **limit))
        torch._dynamo.reset()
    if "generate" in rows:
        sides = interleave({"base": generator(base, args, device), "folded": generator(identity, args, device),
                            "hooks": generator(identity, args, device, hooks_only=True)}, args.rounds)
        report.add(compare("generate tokens/s (identity folded into biases)", sides["base"], sides["folded"],
                           unit="tokens/s", **limit))
        report.add(compare("generate tokens/s (hooks kept)", sides["base"], sides["hooks"], unit="tokens/s", **limit))
    if "introspection" in rows:
        if step_s is None:
            trainer = TrainStep(identity, args, device)
            step_s = [args.batch_size * args.seq_len / trainer() for _ in range(args.rounds)]
        rounds = introspection_rounds(identity, args, device)
        report.add(compare("introspection round speed, static ÷ dynamic KV cache", rounds["static"],
                           rounds["dynamic"], unit="s"))
        interval = IntrospectionArguments().identity_update_interval
        round_s, step = spread(rounds["static"])["median"], spread(step_s)["median"]
        share = round_s / (interval * step + round_s)
        report.extra["introspection"] = {"round_s": spread(rounds["static"]), "train_step_s": step,
                                         "interval": interval, "share_of_training_time": share}
        report.add(single("introspection round share of training time", share, limit=0.05,
                          limit_note=f"a round every {interval} steps; 5% budget",
                          notes=f"round {round_s:.3f}s (static cache), step {step:.3f}s"))
    return report.write(result_path(args, f"identity_{device.type}_{args.preset}.json", args.out))


if __name__ == "__main__":
    main()
