"""Anima decode speed: greedy tokens/s with the SAE control layer ÷ without, beside the limit for the shape.

    python benchmarks/bench_anima.py                                             # CPU-small
    python benchmarks/bench_anima.py --preset 1b-slice --d_sae 65536             # CPU, a 32x wider SAE
    python benchmarks/bench_anima.py --device cuda --preset 8b --dtype bfloat16 --d_sae 32768

The model is a random-init Llama of the preset's shape; the SAE is a sae-lens StandardSAE of width ``d_sae``
on the middle layer. Anima runs with a non-zero reservoir and a forced mode, so every decoding step encodes,
edits and adds the edit back; both sides run the same ``generate`` call on the same prompt ids, Anima's hook
attached or not (per-turn learning is not decode cost).

The limit is what no implementation can beat: a decoding step must read every weight and do every
multiply-add of the model, and Anima adds the SAE's encoder and decoder (2·d_in·d_sae each). So the best
ratio is model ÷ (model + SAE), in bytes (what bounds batch-1 decoding on a GPU) and in FLOPs (they agree at
batch 1; the attention over the KV cache is counted too). Writes outputs/benchmarks/anima_<device>_<preset>.json.
"""

from __future__ import annotations

import argparse

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from harness import (Report, add_record_flag, attention_macs_per_token, compare, interleave, result_path, timed,
                     weights_per_token)
from hfself.data import DEFAULT_MODEL
from hfself_plugins.anima import AnimaRuntime

PRESETS = {
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096),
    # Llama-3.2-1B's layer shape, four layers and a 32k vocabulary: a CPU-sized slice of the real thing
    "1b-slice": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=4, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=32000),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),  # Llama-3-8B shape
}


def decode_limit(model, d_sae: int, context: int) -> dict:
    """model ÷ (model + SAE) per decoded token, in bytes read and in FLOPs, for this shape."""
    config = model.config
    weights = weights_per_token(model)
    kv_width = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    kv_cache = 2 * config.num_hidden_layers * context * kv_width  # K and V of every position, read each step
    sae = 2 * config.hidden_size * d_sae  # encoder and decoder matrices
    model_bytes, model_flops = weights + kv_cache, 2 * (weights + attention_macs_per_token(config, context))
    return {"bytes": model_bytes / (model_bytes + sae), "flops": model_flops / (model_flops + 2 * sae),
            "model_weights": weights, "sae_weights": sae}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_flag(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--d_sae", type=int, default=4096)
    parser.add_argument("--prompt_tokens", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    config = LlamaConfig(**PRESETS[args.preset], max_position_embeddings=4096)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # random weights: always generate new_tokens tokens
    sae = StandardSAE(StandardSAEConfig(d_in=config.hidden_size, d_sae=args.d_sae, dtype=args.dtype,
                                        device=str(device)))
    prompt = torch.randint(1, config.vocab_size, (1, args.prompt_tokens), device=device)
    runtime = AnimaRuntime(model, AutoTokenizer.from_pretrained(DEFAULT_MODEL), sae)  # the tokenizer is not used
    runtime.reservoir.weights.uniform_(-0.5, 0.5)
    runtime.add_mode("bench", {"description": "benchmark", "features": {i: 2.0 for i in range(16)}})
    runtime.set_mode("bench")
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
              pad_token_id=0, use_cache=True)

    @torch.no_grad()
    def without() -> float:
        with runtime.disabled():
            return args.new_tokens / timed(lambda: model.generate(prompt, **kw), device)

    @torch.no_grad()
    def anima() -> float:
        return args.new_tokens / timed(lambda: model.generate(prompt, **kw), device)

    limit = decode_limit(model, args.d_sae, args.prompt_tokens + args.new_tokens // 2)
    report = Report("anima", vars(args), args.seed, str(device), extra={"limit": limit})
    sides = interleave({"without": without, "anima": anima}, args.rounds)
    runtime.close()
    row = report.add(compare("decode tokens/s", sides["without"], sides["anima"], unit="tokens/s",
                             limit=limit["bytes"], limit_note=f"model ÷ (model + SAE) bytes; FLOPs "
                                                              f"{limit['flops']:.3f}"))
    report.extra["share_of_limit"] = row.ratio["median"] / limit["bytes"]
    print(f"decode ratio is {report.extra['share_of_limit']:.1%} of its limit")
    return report.write(result_path(args, f"anima_{device.type}_{args.preset}.json", args.out))


if __name__ == "__main__":
    main()
