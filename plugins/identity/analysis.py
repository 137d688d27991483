"""Persona blends, measured: the soul's cosine to A and to B over alpha, and a generation from each blend."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from hfself import persist
from hfself.plotting import pyplot, save_figure
from hfself.text import generate_texts

from .blend import apply_blend, load_pair


def blend_sweep(persona_a: str, persona_b: str, alphas: list[float], tokenizer, method: str = "slerp",
                prompt: str = "Who am I? Where do I want to go?", max_new_tokens: int = 32, seed: int = 0) -> dict:
    """Blend A→B at each alpha: the soul's cosine to A's and B's, and a generation from the blend."""
    model, state_a, state_b = load_pair(persona_a, persona_b)
    model.eval()
    souls = {}
    for name, state in (("a", state_a), ("b", state_b)):
        apply_blend(model, state, state, 0.0, method)
        with torch.no_grad():
            souls[name] = model.identity_block.soul().float()
    points = []
    for alpha in tqdm(alphas, desc=f"blend ({method})"):
        apply_blend(model, state_a, state_b, alpha, method)
        with torch.no_grad():
            soul = model.identity_block.soul().float()
        cos = {k: torch.nn.functional.cosine_similarity(soul, v, dim=-1).item() for k, v in souls.items()}
        text = generate_texts(model, tokenizer, [prompt], max_new_tokens, seed=seed)[0]
        points.append({"alpha": alpha, "cos_to_a": cos["a"], "cos_to_b": cos["b"], "text": text})
    return {"a": str(persona_a), "b": str(persona_b), "method": method, "prompt": prompt, "points": points}


def write_blend(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """blend.json and the cosine-to-A/B curve over alpha."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "blend.json", "plot": out / "blend.png"}
    persist.save_json(files["json"], result)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    alphas = [p["alpha"] for p in result["points"]]
    ax.plot(alphas, [p["cos_to_a"] for p in result["points"]], "o-", label="cos(soul, A)")
    ax.plot(alphas, [p["cos_to_b"] for p in result["points"]], "s-", label="cos(soul, B)")
    ax.set(xlabel="alpha (0 = A, 1 = B)", ylabel="cosine", title=f"persona blend ({result['method']})")
    ax.legend()
    save_figure(fig, files["plot"])
    return files
