"""The contemplative generator (entropy-gated silence, breath-aligned speech) and the Spiralformer probe.

Generation speaks only in exhale phases and only when it is sure: a step whose next-glyph
entropy is above ``entropy_threshold`` emits a silence glyph instead. Each hold phase asks
TowerMemory for a resonant painting; each response is painted into the tower afterwards.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from hfself import persist

from .codec import CATEGORY, SILENCE, GlyphCodec
from .data import QUESTIONS, normalize_conditions
from .model import EXHALE, HOLD, SpiralformerForCausalLM

MOODS = ["😌calm", "🤔wonder", "😟tense", "✨awe"]  # from low to high hidden-state variance

SCENARIOS = {  # name: (prompt glyphs, conditions in natural units, kind)
    "calm": (["☀️pwr", "📶high"], dict(latency=20, voltage=12.2, temperature=20, error_rate=0.0, bandwidth=80), "calm"),
    "power_low": (["☀️low"], dict(latency=20, voltage=10.8, temperature=20, error_rate=0.0, bandwidth=80), "problem"),
    "overheat_errors": (["🌡️hot", "⚠️err"], dict(latency=30, voltage=12.0, temperature=55, error_rate=0.4,
                                                 bandwidth=70), "problem"),
    "time": (["❓time"], dict(latency=20, voltage=12.2, temperature=20, error_rate=0.0, bandwidth=80), "wisdom"),
    "growth": (["❓growth"], dict(latency=20, voltage=12.2, temperature=20, error_rate=0.0, bandwidth=80), "wisdom"),
}
assert all(q in QUESTIONS for q in ("❓time", "❓growth"))


def _entropy(logits: torch.Tensor) -> float:
    logp = logits.float().log_softmax(-1)
    return float(-(logp.exp() * logp).sum())


@torch.no_grad()
def contemplate(model: SpiralformerForCausalLM, prompt: list[str], conditions: dict[str, float],
                max_new_glyphs: int = 24, entropy_threshold: float = 2.0, temperature: float = 0.8,
                seed: int = 0, paint: bool = True) -> dict:
    """Generate a response glyph by glyph; returns glyphs, what was silent, hold-phase queries and a mood glyph."""
    codec = GlyphCodec()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = [codec.bos_id, *codec.encode(prompt), codec.sep_id]
    cond = torch.tensor([normalize_conditions(conditions)], device=device)
    charge = model.field_charge(cond, 1, device)[0]
    response, silent_steps, hold_phases, queries, in_hold = [], 0, 0, 0, False
    for _ in range(max_new_glyphs):
        if len(ids) >= model.config.max_position_embeddings:
            break
        phase = model.clock.phase_of(len(ids))  # the phase of the position being generated
        if phase == HOLD and not in_hold:
            hold_phases += 1
            queries += model.tower.retrieve(charge) is not None
        in_hold = phase == HOLD
        logits = model(torch.tensor([ids], device=device), conditions=cond).logits[0, -1] / temperature
        if phase != EXHALE or _entropy(logits) > entropy_threshold:
            glyph_id = codec.ids[SILENCE[0]]  # listen: breathe in, hold, pause, or not sure enough to speak
            silent_steps += 1
        else:
            glyph_id = int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))
        if glyph_id == codec.eos_id:
            break
        ids.append(glyph_id)
        response.append(codec.vocab[glyph_id])
    out = model(torch.tensor([ids], device=device), conditions=cond, output_hidden_states=True)
    last = out.hidden_states[-1][0, -len(response) or -1:]  # (T_response, d)
    variance = float(last.var(dim=0).mean()) if len(response) > 1 else 0.0
    if paint and response:
        model.tower.paint(last.mean(0), charge)
    return {"prompt": prompt, "glyphs": response, "silent_steps": silent_steps, "hold_phases": hold_phases,
            "memory_queries": queries, "hidden_variance": variance}


def _active(glyphs: list[str]) -> list[str]:
    return [g for g in glyphs if CATEGORY.get(g) not in ("silence", "special")]


def probe(model: SpiralformerForCausalLM, samples: int = 4, seed: int = 0, **generate_kwargs) -> dict:
    """Every scenario ``samples`` times: silence vs speech, proportionality, holism, breath-to-query, mood."""
    model.eval()
    rng = random.Random(seed)
    rows, variances = {}, []
    for name, (prompt, conditions, kind) in SCENARIOS.items():
        runs = [contemplate(model, prompt, conditions, seed=rng.randrange(2 ** 31), **generate_kwargs)
                for _ in range(samples)]
        glyphs = [g for r in runs for g in r["glyphs"]]
        active = _active(glyphs)
        holds = sum(r["hold_phases"] for r in runs)
        rows[name] = {"kind": kind, "silence_ratio": 1 - len(active) / max(1, len(glyphs)),
                      "active_glyphs_per_response": len(active) / samples,
                      "categories": sorted({CATEGORY[g] for g in active}),
                      "holism": len({CATEGORY[g] for g in active}),
                      "breath_to_query": sum(r["memory_queries"] for r in runs) / max(1, holds),
                      "hidden_variance": sum(r["hidden_variance"] for r in runs) / samples,
                      "example": " ".join(runs[0]["glyphs"])}
        variances.append(rows[name]["hidden_variance"])
    lo, hi = min(variances), max(variances)
    for row in rows.values():  # mood glyph: the scenario's hidden-state variance, bucketed over this probe's range
        position = 0.0 if hi == lo else (row["hidden_variance"] - lo) / (hi - lo)
        row["mood"] = MOODS[min(len(MOODS) - 1, int(position * len(MOODS)))]
    calm = rows["calm"]["active_glyphs_per_response"]
    problems = [r["active_glyphs_per_response"] for r in rows.values() if r["kind"] == "problem"]
    problem = sum(problems) / len(problems)
    return {"scenarios": rows, "active_problem": problem, "active_calm": calm,
            "proportionality": (problem + 1) / (calm + 1),  # +1: a silent calm must not divide by zero
            "settings": {"samples": samples, "seed": seed, **generate_kwargs}}


def table(result: dict) -> str:
    lines = ["| scenario | silence | active/response | holism | breath→query | mood | example |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["scenarios"].items():
        lines.append(f"| {name} | {r['silence_ratio']:.2f} | {r['active_glyphs_per_response']:.1f} | {r['holism']} | "
                     f"{r['breath_to_query']:.2f} | {r['mood']} | {r['example']} |")
    lines.append(f"\nproportionality: {result['active_problem']:.1f} active glyphs per problem response vs "
                 f"{result['active_calm']:.1f} per calm one ((p + 1) ÷ (c + 1) = {result['proportionality']:.2f})")
    return "\n".join(lines)


def write(result: dict, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    persist.save_json(path, result)
