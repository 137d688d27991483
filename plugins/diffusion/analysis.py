"""Measures of introspection rounds (any Identity Block), as JSON and PNG.

* diversity: mean pairwise cosine distance of the souls of successive rounds
  (local evaluate module ``identity_diversity``); near 0 means the rounds collapsed.
* stability: the same round repeated from perturbed prompts (typos, shuffle,
  inject; evals' ``identity_stability`` module on the resulting souls, plus their
  mean cosine distance to the unperturbed round).
* cost: wall-clock seconds per round (generation + summary + update).
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hfself import persist
from hfself.plotting import pyplot, save_figure
from hfself.text import perturb
from hfself_plugins.evals import load_metric
from hfself_plugins.identity import IdentityForCausalLM, IntrospectionArguments, IntrospectionCallback

METRICS_DIR = Path(__file__).parent / "metrics"


def diversity_metric():
    import evaluate

    return evaluate.load(str(METRICS_DIR / "identity_diversity"))


class _Snapshot:
    """The block's state, the introspection optimizer's state and the last self-description, restorable."""

    def __init__(self, persona: IdentityForCausalLM, callback: IntrospectionCallback):
        self.persona, self.callback = persona, callback
        self.block = {k: v.detach().clone() for k, v in persona.identity_block.state_dict().items()}
        self.optimizer = copy.deepcopy(callback.optimizer.state_dict())
        self.rounds, self.text = callback.rounds, persona.last_self_description

    def restore(self) -> None:
        self.persona.identity_block.load_state_dict(self.block)
        self.callback.optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        self.callback.rounds, self.persona.last_self_description = self.rounds, self.text


def measure_introspection(persona: IdentityForCausalLM, tokenizer, rounds: int = 8, perturbations: int = 3,
                          args: IntrospectionArguments | None = None, seed: int = 0) -> dict:
    """Run ``rounds`` introspection rounds, then one round from perturbed prompts; the persona is left as it was."""
    if persona.identity_block is None:
        raise ValueError("measure_introspection needs a persona with identity on")
    if rounds < 2:
        raise ValueError("diversity needs at least 2 rounds")
    args = args or IntrospectionArguments(identity_update_interval=1)
    if args.identity_lr is None:  # no Trainer here to take 0.1 x learning_rate from
        args = dataclasses.replace(args, identity_lr=2e-4)
    callback = IntrospectionCallback(args)
    callback.ensure_optimizer(persona)
    block, was_training = persona.identity_block, persona.training
    persona.eval()
    start = _Snapshot(persona, callback)
    souls, seconds, texts = [], [], []
    try:
        for r in tqdm(range(rounds), desc=f"introspection rounds ({persona.config.block})"):
            torch.manual_seed(seed + r)
            began = time.perf_counter()
            record = callback.introspect(persona, tokenizer, step=r)
            seconds.append(time.perf_counter() - began)
            texts.append(record["text"])
            with torch.no_grad():
                souls.append(block.soul().detach().float().cpu())
        diversity = diversity_metric().compute(predictions=torch.stack(souls).tolist())

        # stability: the next round, once from the clean prompt and once per perturbed prompt
        before_next = _Snapshot(persona, callback)
        rng = random.Random(seed)
        prompts = [args.identity_prompt] + [perturb(args.identity_prompt, kind, rng)
                                            for kind in ("typos", "shuffle", "inject") for _ in range(perturbations)]
        next_souls = []
        for prompt in prompts:
            before_next.restore()
            callback.args.identity_prompt = prompt
            torch.manual_seed(seed + rounds)
            callback.introspect(persona, tokenizer, step=rounds)
            with torch.no_grad():
                next_souls.append(block.soul().detach().float().cpu())
        callback.args.identity_prompt = prompts[0]
        clean, perturbed = next_souls[0], torch.stack(next_souls[1:])
        stability = load_metric("identity_stability").compute(predictions=perturbed.tolist())
        stability["mean_distance_to_clean"] = (1 - torch.nn.functional.cosine_similarity(
            perturbed, clean[None], dim=-1)).mean().item()
        stability["prompts"] = prompts[1:]
    finally:
        start.restore()
        persona.train(was_training)
    unit = torch.nn.functional.normalize(torch.stack(souls), dim=-1)
    return {"block": persona.config.block, "rounds": rounds, "diversity": diversity, "stability": stability,
            "cost": {"seconds_per_round": sum(seconds) / len(seconds), "per_round": seconds},
            "pairwise_distance": (1 - unit @ unit.T).tolist(), "texts": texts}


def write_introspection(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """introspection.json and a heatmap of pairwise distances between round identities."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "introspection.json", "plot": out / "introspection_diversity.png"}
    persist.save_json(files["json"], result)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(result["pairwise_distance"], vmin=0, vmax=max(1.0, max(map(max, result["pairwise_distance"]))),
                      cmap="viridis")
    ax.set(xlabel="round", ylabel="round", title=f"{result['block']}: 1 − cos between round identities\n"
                                                 f"diversity {result['diversity']['identity_diversity']:.3f}")
    fig.colorbar(image, ax=ax, label="1 − cos")
    save_figure(fig, files["plot"])
    return files
