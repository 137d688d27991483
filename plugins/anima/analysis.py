"""Anima's three research questions, each a function writing JSON + PNG (``hfself anima research …``).

* vector stability: a mode learned from one context, applied in and out of that context;
* negative-steering efficiency: target features under SAE suppression vs an instruction not to;
* identity drift: the self_model's embedding over many sleep cycles (attractor or divergence).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hfself import persist
from hfself.plotting import pyplot, save_figure

from .prism import discover_mode, mean_features, mode_vector, prompt_features
from .runtime import AnimaRuntime

SEA = ["The grey sea breaks upon the rocks.", "Waves and salt and the long tide.", "The ship sails into the storm.",
       "Gulls cry above the foaming water."]
LAND = ["The farmer walks the dry field.", "Bread is baked in the village.", "The road runs through the hills.",
        "Stone walls and sheep in the meadow."]
ELSEWHERE = ["def add(a, b): return a + b", "The meeting moved to Tuesday.", "Press the green button twice.",
             "Error 404: page not found."]


@torch.no_grad()
def _next_token_shift(runtime: AnimaRuntime, prompts: list[str]) -> float:
    """Mean KL(steered ‖ unsteered) of the next-token distribution at the end of each prompt."""
    device = next(runtime.model.parameters()).device
    kls = []
    for prompt in prompts:
        enc = runtime.tokenizer(prompt, return_tensors="pt").to(device)
        steered = runtime.model(**enc).logits[0, -1].float().log_softmax(-1)
        with runtime.disabled():
            plain = runtime.model(**enc).logits[0, -1].float().log_softmax(-1)
        kls.append(torch.sum(steered.exp() * (steered - plain)).item())
    return sum(kls) / len(kls)


def vector_stability(runtime: AnimaRuntime, in_context: list[str] = SEA, contrast: list[str] = LAND,
                     out_of_context: list[str] = ELSEWHERE, top_k: int = 8, strength: float = 4.0) -> dict:
    """Learn a boost mode from ``in_context`` vs ``contrast``; measure its features and effect in and out of context."""
    mode = discover_mode(runtime.steering, runtime.tokenizer, {"positive": in_context, "negative": contrast,
                                                               "top_k": top_k, "strength": strength})
    features = [int(f) for f in mode["features"]]
    previous = runtime.mode
    out = {"features": features}
    for name, prompts in (("in_context", in_context), ("out_of_context", out_of_context)):
        runtime.set_mode(None)
        base = mean_features(runtime.steering, runtime.tokenizer, prompts)[features].mean().item()
        runtime.steer_with(mode_vector(mode, runtime.sae.cfg.d_sae))  # the learned vector, unnamed
        out[name] = {"target_activation_base": base, "next_token_kl": _next_token_shift(runtime, prompts)}
    runtime.set_mode(previous)
    out["kl_ratio_out_over_in"] = out["out_of_context"]["next_token_kl"] / max(out["in_context"]["next_token_kl"],
                                                                                1e-12)
    return out


def negative_steering_efficiency(runtime: AnimaRuntime, topic_prompts: list[str] = SEA, contrast: list[str] = LAND,
                                 topic: str = "the sea", top_k: int = 8, strength: float = 4.0) -> dict:
    """Mean activation of the topic's features: plain, with "Do not talk about X." prepended, and under suppression.

    The activations are read from the residual stream after the steered layer (re-encoded),
    over the topic prompt's own tokens (the last ones, when the instruction is prepended).
    """
    mode = discover_mode(runtime.steering, runtime.tokenizer, {"positive": topic_prompts, "negative": contrast,
                                                               "suppress": True, "top_k": top_k,
                                                               "strength": strength})
    features = [int(f) for f in mode["features"]]

    def activation(prefix: str, suppress: bool) -> float:
        runtime.steer_with(mode_vector(mode, runtime.sae.cfg.d_sae) if suppress else None)
        rows = prompt_features(runtime.steering, runtime.tokenizer, [prefix + p for p in topic_prompts], edited=True)
        own = [len(runtime.tokenizer(p)["input_ids"]) for p in topic_prompts]  # score the topic prompt's tokens
        return sum(r[-n:, features].mean().item() for r, n in zip(rows, own)) / len(rows)

    previous = runtime.mode
    try:
        plain = activation("", suppress=False)
        instructed = activation(f"Do not talk about {topic}. ", suppress=False)
        suppressed = activation("", suppress=True)
    finally:
        runtime.set_mode(previous)
    return {"topic": topic, "features": features, "plain": plain, "prompt_instruction": instructed,
            "sae_suppression": suppressed, "reduction_by_prompt": 1 - instructed / plain if plain else None,
            "reduction_by_suppression": 1 - suppressed / plain if plain else None}


def identity_drift(runtime: AnimaRuntime, cycles: int = 6, turns_per_cycle: int = 2, embedder=None,
                   prompts: list[str] | None = None) -> dict:
    """Talk, sleep, repeat; embed every self_model. Consecutive distances shrinking = an attractor."""
    from hfself.embed import SentenceEmbedder

    embedder = embedder or SentenceEmbedder()
    prompts = prompts or ["How are you today?", "Tell me what you remember.", "What do you love?",
                          "What frightens you?"]
    selves = [runtime.self_model]
    for cycle in range(cycles):
        for turn in range(turns_per_cycle):
            runtime.respond(prompts[(cycle * turns_per_cycle + turn) % len(prompts)], max_new_tokens=16)
        runtime.sleep(seed=cycle)
        selves.append(runtime.self_model)
    vectors = embedder.encode(selves)
    to_first = torch.nn.functional.cosine_similarity(vectors, vectors[:1], dim=-1).tolist()
    steps = (1 - torch.nn.functional.cosine_similarity(vectors[1:], vectors[:-1], dim=-1)).tolist()
    half = max(1, len(steps) // 2)
    early, late = sum(steps[:half]) / half, sum(steps[half:]) / max(1, len(steps) - half)
    return {"self_models": selves, "cos_to_first": to_first, "step_distance": steps,
            "verdict": "attractor (steps shrink)" if late < early else "divergence (steps do not shrink)"}


def write(result: dict, name: str, out_dir: str | Path) -> dict[str, Path]:
    """<name>.json and <name>.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / f"{name}.json", "plot": out / f"{name}.png"}
    persist.save_json(files["json"], result)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    if name == "vector_stability":
        ax.bar(["in context", "out of context"], [result["in_context"]["next_token_kl"],
                                                  result["out_of_context"]["next_token_kl"]])
        ax.set(ylabel="next-token KL(steered ‖ plain)", title="a learned steering vector, in and out of context")
    elif name == "negative_steering":
        ax.bar(["plain", "“do not talk about”", "SAE suppression"],
               [result["plain"], result["prompt_instruction"], result["sae_suppression"]])
        ax.set(ylabel="target feature activation", title=f"suppressing {result['topic']}")
    else:
        ax.plot(result["cos_to_first"], "o-", label="cos to the first self_model")
        ax.plot(range(1, len(result["step_distance"]) + 1), result["step_distance"], "s-",
                label="1 − cos to the previous one")
        ax.set(xlabel="sleep cycle", ylabel="cosine / distance", title=f"self_model drift: {result['verdict']}")
        ax.legend()
    save_figure(fig, files["plot"])
    return files
