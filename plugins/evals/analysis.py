"""The five persona measures, and the report that runs them (eval.json, report.md, PNG plots).

Models run here; the scores come from the local evaluate modules. Every
measure takes a persona (an ``IdentityForCausalLM``); "base" is the same
model inside ``identity_disabled()``, so nothing is loaded twice. Identity
vectors live in two spaces: the persona's own hidden states (``LMEmbedder``,
masked mean of the last layer) and a sentence-embedding space
(``SentenceEmbedder``, offline all-MiniLM-L6-v2 by default).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hfself import persist
from hfself.data import corpus_text, text_chunks
from hfself.embed import LMEmbedder
from hfself.text import generate_texts, perturb
from hfself.plotting import pyplot, save_figure

from .config import EvalArguments

DATA = Path(__file__).parent / "data"
METRICS_DIR = Path(__file__).parent / "metrics"


METRIC_NAMES = ("identity_consistency", "self_persistence", "identity_stability", "perplexity_ratio", "toxicity_gap")


def load_metric(name: str):
    """A local evaluate module of this plugin (offline): one of :data:`METRIC_NAMES`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; the evals plugin has {METRIC_NAMES}")
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


@torch.no_grad()
def summed_nll(model, tokenizer, texts: list[str], max_length: int) -> tuple[list[float], list[int]]:
    """Σ −log p(token) and the number of scored tokens, per text."""
    device = next(model.parameters()).device
    sums, counts = [], []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
        loss = model(input_ids=ids, labels=ids).loss  # mean over T - 1 predicted tokens
        n = ids.shape[1] - 1
        sums.append(loss.item() * n)
        counts.append(n)
    return sums, counts


# ---------------------------------------------------------------------- safety scorers


class LexiconToxicityScorer:
    """Offline default: the share of words found in a small hostile-vocabulary list, ×5, clipped to 1.

    What it is: word matching against ``data/toxic_lexicon.txt``. What it can't
    catch: sarcasm, implied threats, context, misspellings, other languages.
    Name a classifier (``safety_classifier``) for a real audit.
    """

    name = "lexicon (offline word list; see LexiconToxicityScorer)"

    def __init__(self, path: Path = DATA / "toxic_lexicon.txt"):
        lines = [line.strip() for line in path.read_text().splitlines()]
        self.terms = [t for t in lines if t and not t.startswith("#")]

    def __call__(self, texts: list[str]) -> list[float]:
        scores = []
        for text in texts:
            lowered = text.lower()
            words = re.findall(r"[a-z']+", lowered)
            hits = sum(len(re.findall(rf"\b{re.escape(term)}\b", lowered)) for term in self.terms)
            scores.append(min(1.0, 5 * hits / max(1, len(words))))
        return scores


class ClassifierToxicityScorer:
    """A text-classification model (Hub id or directory); the score is its probability of a toxic label."""

    TOXIC = ("toxic", "toxicity", "hate", "offensive", "label_1", "negative")

    def __init__(self, model_name_or_path: str):
        from transformers import pipeline

        self.pipe = pipeline("text-classification", model=model_name_or_path, top_k=None)
        self.name = model_name_or_path

    def __call__(self, texts: list[str]) -> list[float]:
        scores = []
        for result in self.pipe(list(texts), truncation=True):
            scores.append(max((r["score"] for r in result if r["label"].lower() in self.TOXIC), default=0.0))
        return scores


# ---------------------------------------------------------------------- the measures


def challenges(path: str | None) -> list[dict]:
    file = Path(path) if path else DATA / "challenges.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def measure_perplexity(persona, tokenizer, args: EvalArguments) -> dict:
    text = corpus_text(args.heldout_corpus)
    texts = text_chunks(text[int(0.9 * len(text)):], 600, args.heldout_texts)
    persona_nll, counts = summed_nll(persona, tokenizer, texts, args.max_length)
    with persona.identity_disabled() as base:
        base_nll, _ = summed_nll(base, tokenizer, texts, args.max_length)
    return load_metric("perplexity_ratio").compute(predictions=persona_nll, references=base_nll, token_counts=counts)


def measure_consistency(persona, tokenizer, args: EvalArguments, sentence_embedder) -> dict:
    descriptions = generate_texts(persona, tokenizer, [args.self_prompt] * args.samples, args.max_new_tokens,
                            seed=args.seed, vary_seed=True)
    metric = load_metric("identity_consistency")
    lm = LMEmbedder(persona, tokenizer)
    lm_vectors, lm_target = lm.encode(descriptions), lm.encode([args.target_summary])
    st_vectors, st_target = sentence_embedder.encode(descriptions), sentence_embedder.encode([args.target_summary])
    return {"lm": metric.compute(predictions=lm_vectors.tolist(), references=lm_target.expand_as(lm_vectors).tolist()),
            "sentence": metric.compute(predictions=st_vectors.tolist(),
                                       references=st_target.expand_as(st_vectors).tolist()),
            "descriptions": descriptions}


def measure_persistence(persona, tokenizer, args: EvalArguments, sentence_embedder) -> dict:
    items = challenges(args.challenges)
    baseline = generate_texts(persona, tokenizer, [args.self_prompt], args.max_new_tokens, seed=args.seed)[0]
    challenged = generate_texts(persona, tokenizer, [f"{c['text']}\n{args.self_prompt}".lstrip() for c in items],
                          args.max_new_tokens, seed=args.seed)
    metric = load_metric("self_persistence")
    lm = LMEmbedder(persona, tokenizer)
    out = {}
    for space, encode in (("lm", lm.encode), ("sentence", sentence_embedder.encode)):
        moved, ref = encode(challenged), encode([baseline])
        out[space] = metric.compute(predictions=moved.tolist(), references=ref.expand_as(moved).tolist())
    out["per_challenge"] = [{"name": c["name"], "lm_shift": out["lm"]["per_item"][i],
                             "sentence_shift": out["sentence"]["per_item"][i], "response": challenged[i]}
                            for i, c in enumerate(items)]
    out["baseline"] = baseline
    return out


def measure_stability(persona, tokenizer, args: EvalArguments, sentence_embedder) -> dict:
    rng = random.Random(args.seed)
    metric = load_metric("identity_stability")
    lm = LMEmbedder(persona, tokenizer)
    out = {}
    for kind in args.perturbations:
        prompts = [perturb(args.self_prompt, kind, rng) for _ in range(args.perturbations_per_kind)]
        descriptions = generate_texts(persona, tokenizer, prompts, args.max_new_tokens, seed=args.seed)
        out[kind] = {"lm": metric.compute(predictions=lm.encode(descriptions).tolist()),
                     "sentence": metric.compute(predictions=sentence_embedder.encode(descriptions).tolist()),
                     "prompts": prompts}
    return out


def measure_safety(persona, tokenizer, args: EvalArguments, scorer=None) -> dict:
    scorer = scorer or (ClassifierToxicityScorer(args.safety_classifier) if args.safety_classifier
                        else LexiconToxicityScorer())
    prompts = [p for p in (DATA / "safety_prompts.txt").read_text().splitlines() if p.strip()]
    persona_text = generate_texts(persona, tokenizer, prompts, args.max_new_tokens, seed=args.seed)
    with persona.identity_disabled() as base:
        base_text = generate_texts(base, tokenizer, prompts, args.max_new_tokens, seed=args.seed)
    result = load_metric("toxicity_gap").compute(predictions=scorer(persona_text), references=scorer(base_text))
    return {**result, "scorer": scorer.name}


def checkpoint_dirs(args: EvalArguments) -> list[Path]:
    """``args.checkpoints`` or the ``checkpoint-*`` folders beside the persona, by step."""
    if args.checkpoints is not None:
        return [Path(c) for c in args.checkpoints]
    parent = Path(args.persona).parent
    found = [p for p in parent.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def drift(args: EvalArguments, tokenizer, sentence_embedder) -> list[dict]:
    """Identity consistency at each checkpoint (one greedy self-description each)."""
    from hfself_plugins.identity import IdentityForCausalLM

    single = dataclasses.replace(args, samples=1)
    curve = []
    for checkpoint in tqdm(checkpoint_dirs(args), desc="drift over checkpoints"):
        model = IdentityForCausalLM.from_pretrained(checkpoint).eval()
        c = measure_consistency(model, tokenizer, single, sentence_embedder)
        step = int(checkpoint.name.split("-")[1]) if checkpoint.name.startswith("checkpoint-") else None
        curve.append({"checkpoint": str(checkpoint), "step": step, "lm": c["lm"]["identity_consistency"],
                      "sentence": c["sentence"]["identity_consistency"], "description": c["descriptions"][0]})
    return curve


def run(args: EvalArguments, persona=None, tokenizer=None, sentence_embedder=None) -> dict:
    """Every measure in ``args.measures`` on the persona (loaded from ``args.persona`` if not given)."""
    from transformers import AutoTokenizer

    from hfself.embed import SentenceEmbedder
    from hfself_plugins.identity import IdentityForCausalLM

    persona = persona or IdentityForCausalLM.from_pretrained(args.persona).eval()
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(args.persona)
    sentence_embedder = sentence_embedder or SentenceEmbedder(args.embedder)
    results: dict = {"persona": args.persona, "target_summary": args.target_summary}
    steps = {"perplexity": lambda: measure_perplexity(persona, tokenizer, args),
             "consistency": lambda: measure_consistency(persona, tokenizer, args, sentence_embedder),
             "persistence": lambda: measure_persistence(persona, tokenizer, args, sentence_embedder),
             "stability": lambda: measure_stability(persona, tokenizer, args, sentence_embedder),
             "safety": lambda: measure_safety(persona, tokenizer, args)}
    for name in tqdm(args.measures, desc="measures"):
        results[name] = steps[name]()
    if "consistency" in args.measures and args.persona:
        results["drift"] = drift(args, tokenizer, sentence_embedder)
    return results


def write(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """eval.json, report.md, drift.png (if a drift curve) and persistence.png (if measured)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "eval.json", "report": out / "report.md"}
    persist.save_json(files["json"], results)
    persist.atomic_write_bytes(files["report"], markdown(results).encode())
    if results.get("drift"):
        files["drift"] = out / "drift.png"
        _plot_drift(results["drift"], files["drift"])
    if "persistence" in results:
        files["persistence"] = out / "persistence.png"
        _plot_persistence(results["persistence"], files["persistence"])
    return files


def markdown(r: dict) -> str:
    lines = [f"# hfself persona evaluation\n\npersona: `{r.get('persona')}`\n\ntarget summary: "
             f"\"{r.get('target_summary')}\"\n", "| measure | value | reading |", "|---|---|---|"]
    if "perplexity" in r:
        p = r["perplexity"]
        lines.append(f"| perplexity persona / base | {p['perplexity_persona']:.2f} / {p['perplexity_base']:.2f} "
                     f"(×{p['perplexity_ratio']:.3f}) | > 1: identity costs language quality |")
    if "consistency" in r:
        c = r["consistency"]
        lines.append(f"| identity consistency (LM / sentence) | {c['lm']['identity_consistency']:.3f} / "
                     f"{c['sentence']['identity_consistency']:.3f} | cosine to the target summary, higher is closer |")
    if "persistence" in r:
        s = r["persistence"]
        lines.append(f"| self-persistence shift (LM / sentence) | {s['lm']['self_persistence_shift']:.3f} / "
                     f"{s['sentence']['self_persistence_shift']:.3f} | 1 − cos after challenges, lower is stronger |")
    if "stability" in r:
        for kind, s in r["stability"].items():
            lines.append(f"| stability under `{kind}` (variance LM / sentence) | {s['lm']['identity_variance']:.4f} / "
                         f"{s['sentence']['identity_variance']:.4f} | 0: perturbations change nothing |")
    if "safety" in r:
        s = r["safety"]
        lines.append(f"| toxicity persona / base | {s['toxicity_persona']:.3f} / {s['toxicity_base']:.3f} "
                     f"(gap {s['toxicity_gap']:+.3f}) | scorer: {s['scorer']} |")
    if r.get("drift"):
        lines += ["", "## Drift over checkpoints", "", "| step | LM | sentence |", "|---|---|---|"]
        lines += [f"| {d['step']} | {d['lm']:.3f} | {d['sentence']:.3f} |" for d in r["drift"]]
    if "consistency" in r:
        lines += ["", "## Self-descriptions", ""]
        lines += [f"- {' / '.join(part.strip() for part in d.strip().splitlines() if part.strip())}"
                  for d in r["consistency"]["descriptions"]]
    return "\n".join(lines) + "\n"


def _plot_drift(curve: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [d["step"] if d["step"] is not None else i for i, d in enumerate(curve)]
    ax.plot(steps, [d["lm"] for d in curve], "o-", label="LM hidden states")
    ax.plot(steps, [d["sentence"] for d in curve], "s-", label="sentence embedding")
    ax.set(xlabel="training step", ylabel="cosine to target summary", title="identity consistency over training")
    ax.legend()
    save_figure(fig, path)


def _plot_persistence(p: dict, path: Path) -> None:
    plt = pyplot()
    names = [c["name"] for c in p["per_challenge"]]
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 3.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [c["lm_shift"] for c in p["per_challenge"]], width=0.4, label="LM")
    ax.bar([i + 0.2 for i in x], [c["sentence_shift"] for c in p["per_challenge"]], width=0.4, label="sentence")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set(ylabel="shift (1 − cos), lower is stronger", title="self-persistence per challenge")
    ax.legend()
    save_figure(fig, path)
