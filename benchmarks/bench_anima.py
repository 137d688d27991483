"""Anima decode speed: greedy tokens/s with the SAE control layer ÷ without, same run.

    python benchmarks/bench_anima.py                                             # CPU-small
    python benchmarks/bench_anima.py --device cuda --preset 8b --dtype bfloat16 --d_sae 32768

The model is a random-init Llama of the preset's shape; the SAE is a sae-lens StandardSAE of
width ``d_sae`` on the middle layer. Anima runs with a non-zero reservoir and a forced mode, so
every decoding step encodes, edits and decodes; both sides run the same ``generate`` call on
the same prompt ids, Anima's hook attached or not (per-turn learning is not decode cost). Prints JSON and writes it to
outputs/benchmarks/anima_<device>_<preset>.json. Medians over interleaved repeats.

With ``--record`` the JSON goes to the tracked benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hfself.data import DEFAULT_MODEL
from hfself_plugins.anima import AnimaRuntime
from results_path import add_record_flag, result_path

PRESETS = {
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),  # Llama-3-8B shape
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_flag(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--d_sae", type=int, default=4096)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = LlamaConfig(**PRESETS[args.preset], max_position_embeddings=4096)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # random weights: always generate new_tokens tokens
    sae = StandardSAE(StandardSAEConfig(d_in=config.hidden_size, d_sae=args.d_sae, dtype=args.dtype,
                                        device=str(device)))
    prompt = torch.randint(1, config.vocab_size, (1, 32), device=device)
    runtime = AnimaRuntime(model, AutoTokenizer.from_pretrained(DEFAULT_MODEL), sae)  # the tokenizer is not used
    runtime.reservoir.weights.uniform_(-0.5, 0.5)
    runtime.add_mode("bench", {"description": "benchmark", "features": {i: 2.0 for i in range(16)}})
    runtime.set_mode("bench")
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
              pad_token_id=0, use_cache=True)

    def tokens_per_s(anima: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            if anima:
                model.generate(prompt, **kw)
            else:
                with runtime.disabled():
                    model.generate(prompt, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.new_tokens / (time.perf_counter() - t0)

    tokens_per_s(True), tokens_per_s(False)  # warm-up
    base, anima = [], []
    for _ in range(args.repeats):
        base.append(tokens_per_s(False))
        anima.append(tokens_per_s(True))
    runtime.close()
    result = {"benchmark": "decode tokens/s, Anima ÷ without", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
              or platform.machine(), "torch": torch.__version__, "settings": vars(args),
              "tokens_per_s": {"without": statistics.median(base), "anima": statistics.median(anima)},
              "ratio_anima_over_without": statistics.median(anima) / statistics.median(base), "target": 0.95}
    print(json.dumps(result, indent=2))
    out = result_path(args, f"anima_{device.type}_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
