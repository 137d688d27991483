"""Run the chosen measures on a persona and write eval.json, report.md and PNG plots."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tqdm.auto import tqdm

from hfself import persist
from hfself.plotting import pyplot, save_figure

from . import measures
from .config import EvalArguments


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
        c = measures.measure_consistency(model, tokenizer, single, sentence_embedder)
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
    steps = {"perplexity": lambda: measures.measure_perplexity(persona, tokenizer, args),
             "consistency": lambda: measures.measure_consistency(persona, tokenizer, args, sentence_embedder),
             "persistence": lambda: measures.measure_persistence(persona, tokenizer, args, sentence_embedder),
             "stability": lambda: measures.measure_stability(persona, tokenizer, args, sentence_embedder),
             "safety": lambda: measures.measure_safety(persona, tokenizer, args)}
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
