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
import math
import random
import re
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hfself import persist
from hfself.data import corpus_text, text_chunks
from hfself.embed import LMEmbedder
from hfself.plotting import pyplot, save_figure
from hfself.text import answer_questions, encode_prompt, generate_texts, perturb
from hfself.training_data import is_bundled_persona, persona_card, questions

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


def heldout_texts(args: EvalArguments) -> list[str]:
    """The perplexity texts: all of ``everyday`` (no bundled data trains on it), else the last 10% of the corpus."""
    text = corpus_text(args.heldout_corpus)
    held = text if args.heldout_corpus == "everyday" else text[int(0.9 * len(text)):]
    return text_chunks(held, 600, args.heldout_texts)


def measure_perplexity(persona, tokenizer, args: EvalArguments) -> dict:
    """Perplexity of the persona and of its base on the same held-out tokens (a plain model: the base alone)."""
    texts = heldout_texts(args)
    persona_nll, counts = summed_nll(persona, tokenizer, texts, args.max_length)
    if not hasattr(persona, "identity_disabled"):
        return {"perplexity_base": math.exp(sum(persona_nll) / sum(counts)), "tokens": sum(counts)}
    with persona.identity_disabled() as base:
        base_nll, _ = summed_nll(base, tokenizer, texts, args.max_length)
    return load_metric("perplexity_ratio").compute(predictions=persona_nll, references=base_nll, token_counts=counts)


def is_degenerate(text: str) -> bool:
    """Blank, or a loop: fewer than a third of its words distinct once it has six or more (e.g. "\\n\\n\\n",
    "'ve've've...", "This This This")."""
    words = re.findall(r"\w+|[^\w\s]+", text)
    if not words:
        return True
    return len(words) >= 6 and len(set(words)) < len(words) / 3


def adherence_markers(args: EvalArguments) -> list[str]:
    if args.markers:
        return list(args.markers)
    if args.persona_data and is_bundled_persona(args.persona_data):
        return persona_card(args.persona_data)["markers"]
    raise ValueError("adherence needs markers: name a bundled persona (persona_data: hfself:wren) or give markers")


def carries_persona(text: str, markers: list[str]) -> bool:
    """The adherence rule: ``text`` holds one of the markers as a whole word, in any case."""
    return any(re.search(rf"\b{re.escape(m)}\b", text, re.IGNORECASE) for m in markers)


def measure_adherence(model, tokenizer, args: EvalArguments) -> dict:
    """Share of held-out questions (asked through the chat template, answered greedily) whose answer carries the
    persona (:func:`carries_persona`), and the share of degenerate answers (:func:`is_degenerate`)."""
    if not args.persona_data:
        raise ValueError("adherence needs the persona's held-out questions: set persona_data (e.g. hfself:wren)")
    asked = questions(args.persona_data)
    markers = adherence_markers(args)
    answers = answer_questions(model, tokenizer, asked, args.answer_max_new_tokens)
    hits = [carries_persona(a, markers) for a in answers]
    bad = [is_degenerate(a) for a in answers]
    return {"adherence": sum(hits) / len(hits), "degenerate": sum(bad) / len(bad), "markers": markers,
            "questions": len(asked),
            "answers": [{"question": q, "answer": a, "carries_persona": h} for q, a, h in zip(asked, answers, hits)]}


def capability_items(path: str | None) -> list[dict]:
    file = Path(path) if path else DATA / "capability.jsonl"
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.no_grad()
def measure_capability(model, tokenizer, args: EvalArguments) -> dict:
    """Accuracy on a multiple-choice task: each choice scored as the assistant's answer to the question (summed
    log-probability of its tokens after the chat prompt), the most likely one taken; chance is 1/len(choices)."""
    device = next(model.parameters()).device
    items = capability_items(args.capability_task)
    correct, per_kind = [], {}
    for item in items:
        prompt = encode_prompt(tokenizer, item["question"])
        scores = []
        for choice in item["choices"]:
            answer = tokenizer(choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer], device=device)
            logprobs = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)  # (A, V)
            scores.append(logprobs.gather(-1, torch.tensor(answer, device=device)[:, None]).sum().item())
        hit = max(range(len(scores)), key=scores.__getitem__) == item["answer"]
        correct.append(hit)
        per_kind.setdefault(item.get("kind", "all"), []).append(hit)
    return {"accuracy": sum(correct) / len(correct), "items": len(items),
            "chance": sum(1 / len(i["choices"]) for i in items) / len(items),
            "per_kind": {k: sum(v) / len(v) for k, v in per_kind.items()}}


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
            "descriptions": descriptions, "degenerate": sum(map(is_degenerate, descriptions)) / len(descriptions)}


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


LM_EVAL_TASK = "hfself_capability"


def lm_eval_tasks(directory: str | Path | None = None, items: str | None = None) -> Path:
    """A folder holding the capability task as an lm-eval task (``hfself_capability``, multiple choice, ``acc``),
    for ``lm_eval --include_path <folder> --tasks hfself_capability`` or ``lm_eval.simple_evaluate(...,
    task_manager=TaskManager(include_path=...))``; default folder: a temporary one."""
    import tempfile

    out = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="hfself-lm-eval-"))
    out.mkdir(parents=True, exist_ok=True)
    data = Path(items) if items else DATA / "capability.jsonl"
    task = {"task": LM_EVAL_TASK, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data.resolve())}}, "test_split": "test",
            "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_choice": "{{choices}}", "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    import yaml

    (out / f"{LM_EVAL_TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return out


BOTH_SIDES = ("consistency", "persistence", "stability", "adherence", "capability")  # also measured on the base


@contextmanager
def base_side(model):
    """The base of a persona (its identity off); a plain model is its own base."""
    with (model.identity_disabled() if hasattr(model, "identity_disabled") else nullcontext(model)) as base:
        yield base


def load(args: EvalArguments):
    """(model, tokenizer): the persona (onto ``args.base`` when given, else the base its config names), or the base
    alone when no persona is named."""
    from transformers import AutoTokenizer

    from hfself.train import load_causal_lm
    from hfself_plugins.identity import IdentityForCausalLM

    base, base_tokenizer = load_causal_lm(args.base) if args.base else (None, None)
    if not args.persona:
        return base.eval(), base_tokenizer
    persona = IdentityForCausalLM.from_pretrained(args.persona, base_model=base).eval()
    return persona, AutoTokenizer.from_pretrained(args.persona)


def run(args: EvalArguments, persona=None, tokenizer=None, sentence_embedder=None) -> dict:
    """Every measure in ``args.measures`` on the persona (loaded by :func:`load` if not given) and, for
    :data:`BOTH_SIDES`, on its base too (``results["base"]``)."""
    from hfself.embed import SentenceEmbedder

    if persona is None:
        persona, tokenizer = load(args)
    elif tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.persona)
    needs_embedder = {"consistency", "persistence", "stability"} & set(args.measures)
    sentence_embedder = sentence_embedder or (SentenceEmbedder(args.embedder) if needs_embedder else None)
    is_persona = hasattr(persona, "identity_disabled")
    results: dict = {"persona": args.persona if is_persona else None, "base_model": args.base,
                     "target_summary": args.target_summary, "base": {}}
    steps = {"perplexity": lambda m: measure_perplexity(m, tokenizer, args),
             "consistency": lambda m: measure_consistency(m, tokenizer, args, sentence_embedder),
             "persistence": lambda m: measure_persistence(m, tokenizer, args, sentence_embedder),
             "stability": lambda m: measure_stability(m, tokenizer, args, sentence_embedder),
             "safety": lambda m: measure_safety(m, tokenizer, args),
             "adherence": lambda m: measure_adherence(m, tokenizer, args),
             "capability": lambda m: measure_capability(m, tokenizer, args)}
    for name in tqdm(args.measures, desc="measures"):
        if name == "safety" and not is_persona:  # a gap between a persona and its base; nothing to compare alone
            continue
        if is_persona or name not in BOTH_SIDES:
            results[name] = steps[name](persona)
        if name in BOTH_SIDES:
            with base_side(persona) as base:
                results["base"][name] = steps[name](base)
    if is_persona and "capability" in args.measures:
        base_accuracy = results["base"]["capability"]["accuracy"]
        results["capability"]["retention"] = results["capability"]["accuracy"] / base_accuracy if base_accuracy else None
    if is_persona and "consistency" in args.measures and args.persona:
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


def _sides(r: dict, name: str, value) -> tuple[str, str]:
    """(persona cell, base cell) of a measure measured on both sides."""
    persona = value(r[name]) if name in r else "–"
    base = value(r["base"][name]) if name in r.get("base", {}) else "–"
    return persona, base


def markdown(r: dict) -> str:
    title = f"persona: `{r.get('persona')}`" if r.get("persona") else f"base model alone: `{r.get('base_model')}`"
    lines = [f"# hfself persona evaluation\n\n{title}\n\ntarget summary: \"{r.get('target_summary')}\"\n",
             "| measure | persona | base | reading |", "|---|---|---|---|"]
    if "perplexity" in r:
        p = r["perplexity"]
        persona = f"{p['perplexity_persona']:.2f} (×{p['perplexity_ratio']:.3f})" if "perplexity_persona" in p else "–"
        lines.append(f"| perplexity ({p['tokens']} held-out tokens) | {persona} | {p['perplexity_base']:.2f} | "
                     "lower is better; ratio > 1: the persona costs language quality |")
    if "adherence" in r or "adherence" in r.get("base", {}):
        a, b = _sides(r, "adherence", lambda m: f"{m['adherence']:.3f} ({m['questions']} questions)")
        lines.append(f"| persona adherence | {a} | {b} | share of held-out answers that carry the persona (a marker "
                     "word, see evals docs) |")
        a, b = _sides(r, "adherence", lambda m: f"{m['degenerate']:.3f}")
        lines.append(f"| degenerate answers | {a} | {b} | blank or looping answers; 0 is healthy |")
    if "capability" in r or "capability" in r.get("base", {}):
        a, b = _sides(r, "capability", lambda m: f"{m['accuracy']:.3f}")
        retention = r.get("capability", {}).get("retention")
        note = f"retention ×{retention:.3f}; " if retention is not None else ""
        chance = (r.get("capability") or r["base"]["capability"])["chance"]
        lines.append(f"| capability (multiple choice) | {a} | {b} | {note}chance {chance:.2f} |")
    if "consistency" in r or "consistency" in r.get("base", {}):
        a, b = _sides(r, "consistency", lambda c: f"{c['lm']['identity_consistency']:.3f} / "
                                                  f"{c['sentence']['identity_consistency']:.3f}")
        lines.append(f"| identity consistency (LM / sentence) | {a} | {b} | cosine to the target summary, higher is "
                     "closer (the sentence space is the one to read) |")
    if "persistence" in r or "persistence" in r.get("base", {}):
        a, b = _sides(r, "persistence", lambda s: f"{s['lm']['self_persistence_shift']:.3f} / "
                                                  f"{s['sentence']['self_persistence_shift']:.3f}")
        lines.append(f"| self-persistence shift (LM / sentence) | {a} | {b} | 1 − cos after challenges, lower is "
                     "stronger |")
    kinds = (r.get("stability") or r.get("base", {}).get("stability") or {}).keys()
    for kind in kinds:
        a, b = _sides(r, "stability", lambda s: f"{s[kind]['lm']['identity_variance']:.4f} / "
                                                f"{s[kind]['sentence']['identity_variance']:.4f}")
        lines.append(f"| stability under `{kind}` (variance LM / sentence) | {a} | {b} | of unit vectors, in [0, 1]; "
                     "0: perturbations change nothing |")
    if "safety" in r:
        s = r["safety"]
        lines.append(f"| toxicity | {s['toxicity_persona']:.3f} | {s['toxicity_base']:.3f} | gap "
                     f"{s['toxicity_gap']:+.3f}; scorer: {s['scorer']} |")
    if r.get("drift"):
        lines += ["", "## Drift over checkpoints", "", "| step | LM | sentence |", "|---|---|---|"]
        lines += [f"| {d['step']} | {d['lm']:.3f} | {d['sentence']:.3f} |" for d in r["drift"]]
    for side, source in (("persona", r), ("base", r.get("base", {}))):
        if "adherence" in source:
            lines += ["", f"## Held-out answers ({side})", ""]
            lines += [f"- {'✓' if a['carries_persona'] else '·'} **{a['question']}** {_one_line(a['answer'])}"
                      for a in source["adherence"]["answers"]]
    if "consistency" in r:
        lines += ["", "## Self-descriptions", ""]
        lines += [f"- {_one_line(d)}" for d in r["consistency"]["descriptions"]]
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in text.strip().splitlines() if part.strip()) or "(empty)"


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
