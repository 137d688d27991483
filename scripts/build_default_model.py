"""Rebuild the embedded default (hfself/data/default_model): tokenizer, tiny config, pretrained weights.

Run once by maintainers; the result ships as package data (about 5 MB). The model is a 1.3M-parameter
Llama trained from scratch on the first 90% of the bundled Shakespeare corpus and of hfself's "python"
corpus (standard-library modules of the interpreter running it), so both of the temporal demo's domains
are known to it; the last 10% of each is held out, and its loss goes into the model card. Seeded; the same
torch build and Python version give the same weights.

    python scripts/build_default_model.py                       # train on the shipped tokenizer
    python scripts/build_default_model.py --rebuild_tokenizer   # also retrain the tokenizer first

The tokenizer is a byte-level BPE trained on the Shakespeare corpus plus Python standard-library sources
(so code is not all single bytes); rebuilding it changes with the interpreter's stdlib, which is why it is
kept unless asked.
"""

import argparse
import json
import math
import sysconfig
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DATA = Path(__file__).resolve().parents[1] / "hfself" / "data"
OUT = DATA / "default_model"
VOCAB_SIZE = 4096
SPECIALS = ["<|endoftext|>", "<|pad|>"]
HELD_OUT_SHARE = 0.1
CORPORA = ("shakespeare", "python")


def training_texts():
    yield (DATA / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in sorted(["json/__init__.py", "collections/__init__.py", "functools.py", "textwrap.py",
                        "heapq.py", "bisect.py", "string.py", "dataclasses.py", "pathlib.py", "random.py"]):
        path = stdlib / name
        if path.exists():
            yield path.read_text(encoding="utf-8")


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", unk_token=None, model_max_length=1024)


def build_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def corpus_tokens(tokenizer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """corpus -> (train, held-out) token ids: each corpus split by characters at 90%, as hfself's plugins split
    it (``split_corpus``)."""
    from hfself.data import corpus_text

    out = {}
    for name in CORPORA:
        text = corpus_text(name)
        cut = int(len(text) * (1 - HELD_OUT_SHARE))
        out[name] = tuple(torch.tensor(tokenizer(part)["input_ids"]) for part in (text[:cut], text[cut:]))
    return out


@torch.no_grad()
def held_out_loss(model, tokens: torch.Tensor, seq_len: int, batch_size: int = 32) -> float:
    """Mean next-token loss (nats) over non-overlapping windows covering the held-out tokens."""
    model.eval()
    windows = tokens[: len(tokens) // seq_len * seq_len].view(-1, seq_len)
    total = 0.0
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        total += model(input_ids=batch, labels=batch).loss.item() * len(batch)
    model.train()
    return total / len(windows)


def train(model, train_ids: torch.Tensor, steps: int, seq_len: int, batch_size: int, lr: float, seed: int):
    """AdamW with linear warm-up then cosine decay, on random windows of the training tokens."""
    generator = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    model.train()
    progress = tqdm(range(steps), desc="pretraining the default model")
    for step in progress:
        starts = torch.randint(0, len(train_ids) - seq_len - 1, (batch_size,), generator=generator)
        batch = torch.stack([train_ids[s:s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")


def sample(model, tokenizer, prompt: str, seed: int = 0) -> str:
    torch.manual_seed(seed)
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=40, do_sample=True, top_k=40, temperature=0.8,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def write_card(out: Path, report: dict) -> None:
    samples = "\n\n".join(f"```\n{s}\n```" for s in report["samples"])
    losses = "\n".join(
        f"| {name} | **{report['held_out_loss'][name]:.3f}** ({math.exp(report['held_out_loss'][name]):.1f}) | "
        f"{report['train_loss'][name]:.3f} | {report['held_out_loss_at_init'][name]:.3f} |" for name in CORPORA)
    (out / "README.md").write_text(f"""---
library_name: transformers
tags: [hfself, tiny, shakespeare, python]
---

# hfself embedded default

A {report['parameters'] / 1e6:.1f}M-parameter Llama (4 layers, hidden 128, byte-level BPE of 4096 tokens)
trained from scratch by `scripts/build_default_model.py` on the first 90% of tinyshakespeare and of hfself's
"python" corpus (standard-library modules): {report['steps']} steps of {report['batch_size']}×{report['seq_len']}
tokens, AdamW with warm-up and cosine decay, {report['train_minutes']:.1f} minutes on {report['device']}. It
exists so that hfself's demos and tests run offline on a model that speaks; it knows nothing but these
corpora. hfself names it `hfself:default`.

Loss in nats per token on 128-token windows (perplexity in brackets). Held out: the last 10% of each corpus.
Training: as many tokens from the start of the training part; it has seen the training text about
{report['epochs']:.0f} times, and the gap is memorization.

| corpus | held-out loss | training loss | random init |
|---|---|---|---|
{losses}

Samples (top-k 40, temperature 0.8):

{samples}
""", encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild_tokenizer", action="store_true")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=str(OUT))
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer() if args.rebuild_tokenizer else AutoTokenizer.from_pretrained(OUT)
    if args.rebuild_tokenizer or out.resolve() != OUT.resolve():
        tokenizer.save_pretrained(out)
    splits = corpus_tokens(tokenizer)
    print({name: f"{len(train)} train, {len(held)} held out" for name, (train, held) in splits.items()})
    train_ids = torch.cat([train for train, _ in splits.values()])

    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(build_config(tokenizer))
    at_init = {name: held_out_loss(model, held, args.seq_len) for name, (_, held) in splits.items()}
    started = time.perf_counter()
    train(model, train_ids, args.steps, args.seq_len, args.batch_size, args.lr, args.seed)
    minutes = (time.perf_counter() - started) / 60
    model.eval()
    report = {
        "parameters": sum(p.numel() for p in model.parameters()), "steps": args.steps, "seq_len": args.seq_len,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "train_minutes": minutes,
        "device": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "held_out_loss_at_init": at_init,
        "held_out_loss": {name: held_out_loss(model, held, args.seq_len) for name, (_, held) in splits.items()},
        "train_loss": {name: held_out_loss(model, train[: len(held)], args.seq_len)
                       for name, (train, held) in splits.items()},
        "tokens": {name: {"train": len(train), "held_out": len(held)} for name, (train, held) in splits.items()},
        "epochs": args.steps * args.batch_size * args.seq_len / len(train_ids),
        "samples": [sample(model, tokenizer, p) for p in ("ROMEO:\n", "First Citizen:\nWe are", "def ")],
    }
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_card(out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    print("\n\n".join(report["samples"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
