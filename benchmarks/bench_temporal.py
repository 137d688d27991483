"""Temporal LoRA vs the backbone alone vs peft's X-LoRA: forward cost and routing accuracy, same run.

    accelerate launch recipes/temporal_lora.py            # writes outputs/temporal_lora/model
    python benchmarks/bench_temporal.py --model outputs/temporal_lora/model
    python benchmarks/bench_temporal.py --model outputs/temporal_lora/model --device cuda --batch_size 16 --seq_len 1024

Forward cost: median seconds of a no-grad forward over the same batch, the three
interleaved, as a ratio to the backbone alone (target for the mixer: <= 1.3).
X-LoRA gets the *same* trained adapters (loaded from the model's adapters/
folder); its classifier is trained the way X-LoRA trains it (the LM loss, on a
50/50 mix of both corpora, ``--xlora_steps`` steps), and its routing is read
from ``get_latest_scalings()`` averaged over layers. Routing accuracy: the
domain with the largest mean weight on held-out blocks of each corpus.
Writes outputs/benchmarks/temporal_<device>.json.

With ``--record`` the JSON goes to the tracked benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from hfself.data import corpus_text
from hfself_plugins.temporal import TemporalLoraConfig, TemporalLoraForCausalLM
from hfself_plugins.temporal.analysis import TokenSource, neutral_texts, router_accuracy, split_corpus
from hfself_plugins.temporal.model import ADAPTER_DIR, load_backbone
from results_path import add_record_flag, result_path


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def build_xlora(path: Path, config: TemporalLoraConfig, device):
    from peft import XLoraConfig, get_peft_model

    backbone = load_backbone(path, config).to(device)
    backbone.config.use_cache = False  # X-LoRA refuses the KV cache
    # X-LoRA loads adapters under the names "0", "1", ... and activates the dict's keys: use those names
    adapters = {str(i): str(path / ADAPTER_DIR / d) for i, d in enumerate(config.domains)}
    xcfg = XLoraConfig(task_type="CAUSAL_LM", hidden_size=backbone.config.hidden_size, adapters=adapters,
                       xlora_depth=2, xlora_size=64, enable_softmax=True)
    model = get_peft_model(backbone, xcfg)
    model.enable_scalings_logging()
    return model


def train_xlora(model, tokenizer, domains, steps, batch_size, seq_len, device, seed=0):
    """X-LoRA's own objective: the LM loss, with only its classifier trainable."""
    sources = [tokenizer(split_corpus(corpus_text(d), "train"), add_special_tokens=False)["input_ids"]
               for d in domains]
    rng = random.Random(seed)
    params = [p for n, p in model.named_parameters() if "internal_xlora_classifier" in n]
    for n, p in model.named_parameters():
        p.requires_grad_("internal_xlora_classifier" in n)
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    model.train()
    for _ in tqdm(range(steps), desc="X-LoRA classifier"):
        rows = []
        for i in range(batch_size):
            ids = sources[i % len(sources)]
            start = rng.randrange(0, len(ids) - seq_len)
            rows.append(ids[start:start + seq_len])
        batch = torch.tensor(rows, device=device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@torch.no_grad()
def xlora_accuracy(model, tokenizer, domains, n, length, skip, seed, device) -> dict:
    """The same measures as ``router_accuracy``, read from X-LoRA's scalings (averaged over layers)."""

    def weights(ids):
        model(input_ids=torch.tensor([ids], device=device))
        return model.get_latest_scalings()[0].float().mean(dim=1).cpu()  # (T, E)

    per_domain = {}
    for index, corpus in enumerate(domains):
        source = TokenSource(tokenizer, corpus, seed=seed + index)
        token = seq = 0.0
        for _ in range(n):
            w = weights(source.block(length))[skip:]
            token += (w.argmax(-1) == index).float().mean().item() / n
            seq += int(w.mean(0).argmax().item() == index) / n
        per_domain[corpus] = {"token_accuracy": token, "sequence_accuracy": seq}
    neutral = torch.cat([weights(tokenizer(t, add_special_tokens=False)["input_ids"])
                         for t in neutral_texts("held_out")]).mean(0)
    return {"per_domain": per_domain,
            "sequence_accuracy": statistics.mean(d["sequence_accuracy"] for d in per_domain.values()),
            "token_accuracy": statistics.mean(d["token_accuracy"] for d in per_domain.values()),
            "neutral_bias": (neutral - 1 / len(domains)).abs().max().item()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(parser)
    parser.add_argument("--model", default="outputs/temporal_lora/model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--xlora_steps", type=int, default=100)
    parser.add_argument("--eval_sequences", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    path = Path(args.model)
    if not (path / "config.json").exists():
        raise SystemExit(f"{path} holds no trained model: run `accelerate launch recipes/temporal_lora.py` first")

    tokenizer = AutoTokenizer.from_pretrained(path)
    ours = TemporalLoraForCausalLM.from_pretrained(path).to(device).eval()
    domains = list(ours.domains)
    xlora = build_xlora(path, ours.config, device)

    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, ours.config.base_config["vocab_size"], (args.batch_size, args.seq_len), generator=g)
    batch = batch.to(device)
    runs = {"backbone": [], "temporal": [], "xlora": []}

    def backbone_forward():
        with ours.adapters_disabled() as lm:
            lm(input_ids=batch, use_cache=False)

    forwards = {"backbone": backbone_forward,
                "temporal": lambda: ours(input_ids=batch, use_cache=False),
                "xlora": lambda: xlora(input_ids=batch)}
    with torch.no_grad():
        for fn in forwards.values():  # warm-up
            fn()
        for _ in tqdm(range(args.repeats), desc="forward timing"):
            for name, fn in forwards.items():
                runs[name].append(timed(fn, device))
    median = {name: statistics.median(times) for name, times in runs.items()}

    ours_acc = router_accuracy(ours, tokenizer, domains, n=args.eval_sequences, seed=1)
    train_xlora(xlora, tokenizer, domains, args.xlora_steps, args.batch_size, min(args.seq_len, 128), device)
    xlora_acc = xlora_accuracy(xlora, tokenizer, domains, args.eval_sequences, 64, 8, 1, device)

    report = {
        "benchmark": "temporal", "model": str(path),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "forward_median_s": median,
        "forward_ratio_vs_backbone": {name: median[name] / median["backbone"] for name in median},
        "routing": {"temporal": {"sequence_accuracy": ours_acc["sequence_accuracy"],
                                 "token_accuracy": ours_acc["token_accuracy"],
                                 "neutral_bias": ours_acc["neutral_bias"]},
                    "xlora": xlora_acc},
        "notes": "X-LoRA runs the backbone twice per forward (a scaling pass, then the real one) and needs "
                 "use_cache=False; the temporal mixer reads the residual stream inside the one pass.",
        "torch": torch.__version__,
    }
    report["targets"] = {"temporal_forward_le_1.3x": report["forward_ratio_vs_backbone"]["temporal"] <= 1.3}
    print(json.dumps(report, indent=2))
    out = result_path(args, f"temporal_{device.type}.json", args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
