"""Temporal LoRA vs the backbone alone (and peft's X-LoRA on a trained model): forward speed and routing.

    python benchmarks/bench_temporal.py                                  # fresh adapters on the embedded default
    python benchmarks/bench_temporal.py --preset 1b --device cuda --dtype bfloat16 --batch_size 8 --seq_len 1024
    accelerate launch recipes/temporal_lora.py                           # then, with routing accuracy and X-LoRA:
    python benchmarks/bench_temporal.py --model outputs/temporal_lora/model

Forward speed: a no-grad forward over the same batch, backbone and temporal interleaved, as temporal ÷ backbone
per round (median and IQR). Its limit: every adapter of every token runs (the mixer weights them), so a forward
costs at least 1 + (LoRA multiply-adds ÷ the backbone's) of the backbone's; the limit on the speed ratio is the
inverse. With a trained ``--model``, X-LoRA gets the *same* adapters (from the model's adapters/ folder), its
classifier trained the way X-LoRA trains it (the LM loss on a 50/50 mix of both corpora, ``--xlora_steps``
steps); routing accuracy is the domain with the largest mean weight on held-out blocks of each corpus.
Writes outputs/benchmarks/temporal_<device>_<preset>.json (``--record``: benchmarks/results/).
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from harness import (Report, add_record_flag, attention_macs_per_token, compare, interleave, result_path, timed,
                     weights_per_token)
from hfself.data import corpus_text
from hfself.train import load_causal_lm
from hfself_plugins.temporal import TemporalLoraConfig, TemporalLoraForCausalLM
from hfself_plugins.temporal.analysis import TokenSource, neutral_texts, router_accuracy, split_corpus
from hfself_plugins.temporal.model import ADAPTER_DIR, load_backbone

BACKBONES = {
    "1b-slice": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=4, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=32000),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),  # Llama-3.2-1B shape
}


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


def lora_share(model, seq_len: int) -> float:
    """LoRA multiply-adds per token (every adapter of every adapted module) ÷ the backbone's."""
    from peft.tuners.lora import LoraLayer

    lora = sum(layer.r[name] * (layer.in_features + layer.out_features)
               for layer in model.lm.modules() if isinstance(layer, LoraLayer) for name in layer.r)
    backbone = weights_per_token(model.lm, skip=("lora_",)) + attention_macs_per_token(model.lm.config, seq_len / 2)
    mixer = sum(p.numel() for p in model.mixer.parameters())
    return (lora + mixer) / backbone


def fresh_model(args, device) -> TemporalLoraForCausalLM:
    """Untrained adapters on the preset's backbone: a forward costs what a trained one does (every adapter runs,
    whatever its values)."""
    if args.preset == "default":
        backbone, _ = load_causal_lm("hfself:default")
    else:
        torch.manual_seed(args.seed)
        backbone = LlamaForCausalLM(LlamaConfig(**BACKBONES[args.preset]))
    backbone.to(device=device, dtype=getattr(torch, args.dtype))
    return TemporalLoraForCausalLM.from_base(backbone, TemporalLoraConfig(domains=["shakespeare", "python"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_flag(parser)
    parser.add_argument("--model", default=None, help="a trained temporal model (adds routing and X-LoRA)")
    parser.add_argument("--preset", default="default", choices=["default", *BACKBONES],
                        help="backbone of fresh adapters when no --model is given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--xlora_steps", type=int, default=100)
    parser.add_argument("--eval_sequences", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    path = Path(args.model) if args.model else None
    if path is not None and not (path / "config.json").exists():
        raise SystemExit(f"{path} holds no trained model: run `accelerate launch recipes/temporal_lora.py` first")
    ours = (TemporalLoraForCausalLM.from_pretrained(path).to(device) if path else fresh_model(args, device)).eval()
    preset = "trained" if path else args.preset
    report = Report("temporal", vars(args), args.seed, str(device))

    g = torch.Generator().manual_seed(args.seed)
    vocab = ours.lm.config.vocab_size
    batch = torch.randint(2, vocab, (args.batch_size, args.seq_len), generator=g).to(device)

    @torch.no_grad()
    def backbone() -> float:
        with ours.adapters_disabled() as lm:
            return 1 / timed(lambda: lm(input_ids=batch, use_cache=False), device)

    @torch.no_grad()
    def temporal() -> float:
        return 1 / timed(lambda: ours(input_ids=batch, use_cache=False), device)

    share = lora_share(ours, args.seq_len)
    sides = {"backbone": backbone, "temporal": temporal}
    xlora = build_xlora(path, ours.config, device) if path else None
    if xlora is not None:
        sides["xlora"] = torch.no_grad()(lambda: 1 / timed(lambda: xlora(input_ids=batch), device))
    measured = interleave(sides, args.rounds)
    report.add(compare("forward speed, temporal ÷ backbone", measured["backbone"], measured["temporal"],
                       unit="forwards/s", limit=1 / (1 + share),
                       limit_note=f"cost ≥ 1 + LoRA and mixer share {share:.3f}"))
    if xlora is not None:
        report.add(compare("forward speed, X-LoRA ÷ backbone", measured["backbone"], measured["xlora"],
                           unit="forwards/s", notes="X-LoRA runs the backbone twice per forward and no KV cache"))
        tokenizer = AutoTokenizer.from_pretrained(path)
        domains = list(ours.domains)
        ours_acc = router_accuracy(ours, tokenizer, domains, n=args.eval_sequences, seed=1)
        train_xlora(xlora, tokenizer, domains, args.xlora_steps, args.batch_size, min(args.seq_len, 128), device)
        report.extra["routing"] = {
            "temporal": {k: ours_acc[k] for k in ("sequence_accuracy", "token_accuracy", "neutral_bias")},
            "xlora": xlora_accuracy(xlora, tokenizer, domains, args.eval_sequences, 64, 8, 1, device)}
        print(f"routing: {report.extra['routing']}")
    return report.write(result_path(args, f"temporal_{device.type}_{preset}.json", args.out))


if __name__ == "__main__":
    main()
