"""Prism: named steering modes over SAE features, found from contrastive prompts, routed by intent.

A mode is a dict (what ``hfself_register_steering_modes`` registers, and what modes.json holds):

    {"description": "dry, factual answers", "features": {812: -4.0, 77: -4.0},      # for one SAE
     "positive": [...prompts that show the trait...], "negative": [...prompts that don't...],
     "suppress": true, "top_k": 8, "strength": 4.0}                               # to find features

``features`` (feature id -> added activation; negative suppresses) is what steers. Feature ids
differ per SAE, so a mode that has only prompts is *discovered* for the runtime's SAE: the
``top_k`` features with the largest mean activation difference (positive − negative prompts)
get ``+strength`` (or ``−strength`` with ``suppress``). With ``"select": "frequent"`` the
``top_k`` features that fire on the most tokens of the ``positive`` prompts are chosen instead
(the Dream mode boosts high-frequency pattern features).
"""

from __future__ import annotations

import torch

from .layer import SAESteering

BUILTIN_MODES = {
    "Anima": {
        "description": "warm, empathic and personal: speaks as itself about feelings, care and who it is",
        "positive": ["I feel for you, my friend, and I care.", "My heart is glad to see you.",
                     "I am here with you; tell me how you feel.", "I love you dearly and I understand."],
        "negative": ["The table has four legs.", "Water boils at one hundred degrees.",
                     "The report lists the totals.", "Open the file and read the header."],
        "top_k": 8, "strength": 4.0},
    "System": {
        "description": "dry and factual: precise answers, no fantasy, no imagery",
        "positive": ["The dragon flew over the enchanted castle.", "A fairy sang to the ghost in the moonlit wood.",
                     "The wizard cast a spell upon the king.", "Spirits danced in the dream of the sea."],
        "negative": ["The meeting starts at nine.", "Add two numbers and print the sum.",
                     "The price rose by four percent.", "The train leaves from platform two."],
        "suppress": True, "top_k": 8, "strength": 4.0},
    "Dream": {
        "description": "loose and associative: vivid imagery and free patterns, like dreaming",
        "positive": ["Stars and rivers and the whispering of old trees.", "Colors melt into music and light.",
                     "The night sea dreams of birds of fire.", "Faces in the clouds, doors in the wind.",
                     "Please confirm the order number.", "The invoice is due on Monday."],
        "select": "frequent", "top_k": 8, "strength": 4.0},
}


@torch.no_grad()
def prompt_features(steering: SAESteering, tokenizer, prompts: list[str], edited: bool = False) -> list[torch.Tensor]:
    """Per prompt, (T, d_sae) SAE activations of the residual stream after the steered layer.

    ``edited=False``: the model as it is, with no edits; ``edited=True``: after the steering's
    current edits (re-encoded; the steering must be attached).
    """
    from hfself.arch import residual_of

    if edited and not steering.attached:
        raise ValueError("edited=True reads the steered residual: attach the steering first")
    sae = steering.sae
    rows = []
    hook = steering.module.register_forward_hook(  # runs after the steering's own hook
        lambda m, i, o: rows.append(sae.encode(residual_of(o).to(sae.W_dec.dtype))[0].float()))
    edits = steering.edits
    if not edited:
        steering.edits = []
    device = next(steering.model.parameters()).device
    try:
        for prompt in prompts:
            steering.model(**tokenizer(prompt, return_tensors="pt").to(device))
    finally:
        hook.remove()
        steering.edits = edits
    return rows


def mean_features(steering: SAESteering, tokenizer, prompts: list[str]) -> torch.Tensor:
    """(d_sae,) mean SAE activation over each prompt's tokens, averaged over prompts (no edits applied)."""
    return torch.stack([rows.mean(0) for rows in prompt_features(steering, tokenizer, prompts)]).mean(0)


def firing_frequency(steering: SAESteering, tokenizer, prompts: list[str]) -> torch.Tensor:
    """(d_sae,) share of the prompts' tokens on which each feature is active (> 0) at the steered layer."""
    return (torch.cat(prompt_features(steering, tokenizer, prompts)) > 0).float().mean(0)


def discover_mode(steering: SAESteering, tokenizer, mode: dict) -> dict:
    """The mode with ``features`` filled in for this SAE from its prompts (contrastive, or most frequent)."""
    if mode.get("select") == "frequent":
        if "positive" not in mode:
            raise ValueError("a 'frequent' mode needs 'positive' prompts to count firing on")
        score = firing_frequency(steering, tokenizer, mode["positive"])
    elif "positive" in mode and "negative" in mode:
        score = mean_features(steering, tokenizer, mode["positive"]) - mean_features(steering, tokenizer,
                                                                                     mode["negative"])
    else:
        raise ValueError("a mode without 'features' needs 'positive' and 'negative' prompts to be discovered")
    top = torch.topk(score, k=min(mode.get("top_k", 8), score.numel())).indices.tolist()
    sign = -1.0 if mode.get("suppress") else 1.0
    return {**mode, "features": {int(i): sign * float(mode.get("strength", 4.0)) for i in top}}


def mode_vector(mode: dict, d_sae: int) -> torch.Tensor:
    """(d_sae,) the steering vector of a mode's ``features`` (keys may be str after JSON)."""
    vector = torch.zeros(d_sae)
    for feature, value in mode["features"].items():
        feature = int(feature)
        if not 0 <= feature < d_sae:
            raise ValueError(f"mode feature {feature} is outside this SAE's {d_sae} features")
        vector[feature] = float(value)
    return vector


class PrismRouter:
    """Picks a mode per turn: the one whose description is closest to the text, in a sentence-embedding space."""

    def __init__(self, modes: dict[str, dict], embedder=None):
        from hfself.embed import SentenceEmbedder

        self.names = list(modes)
        self.embedder = embedder or SentenceEmbedder()
        self.descriptions = self.embedder.encode([modes[n].get("description", n) for n in self.names])

    def route(self, text: str) -> str:
        query = self.embedder.encode([text])  # (1, dim)
        scores = torch.nn.functional.cosine_similarity(query, self.descriptions, dim=-1)
        return self.names[int(scores.argmax())]
