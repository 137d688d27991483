"""The bitwise reservoir: one float32 weight per SAE feature, learned by a Hebbian rule while talking."""

from __future__ import annotations

import re

import torch

from .config import AnimaConfig


class Reservoir:
    """w ∈ [−bound, bound]^d_sae. After each turn: w ← clip((1 − decay)·w + lr·valence·active), where
    ``active`` is the turn's mean feature activation scaled to [0, 1]. Features that were active
    in a positive turn grow, in a negative one shrink. It steers as ``f + scale·w·f``: it amplifies
    (or damps) a feature only where that feature is active.
    """

    def __init__(self, d_sae: int, config: AnimaConfig | None = None, weights: torch.Tensor | None = None):
        self.config = config or AnimaConfig()
        self.weights = torch.zeros(d_sae, dtype=torch.float32) if weights is None else weights.float().clone()
        self._on_device: tuple | None = None  # (key, weights or None when all zero) for the steering hook

    def update(self, activations: torch.Tensor, valence: float) -> None:
        """activations: (d_sae,) mean feature activation of the turn; valence in [−1, 1]."""
        c = self.config
        acts = activations.detach().float().cpu().clamp_min(0)
        active = (acts > c.active_threshold) * acts / acts.max().clamp_min(1e-8)  # (d_sae,) in [0, 1]
        self.weights.mul_(1 - c.reservoir_decay).add_(active, alpha=c.reservoir_lr * float(valence))
        self.weights.clamp_(-c.reservoir_bound, c.reservoir_bound)

    def _weights_like(self, features: torch.Tensor) -> torch.Tensor | None:
        """The weights on the features' device and dtype (None when all zero), copied once per change."""
        key = (self.weights._version, self.weights.data_ptr(), features.device, features.dtype)
        if self._on_device is None or self._on_device[0] != key:
            w = self.weights.to(device=features.device, dtype=features.dtype) if self.weights.any() else None
            self._on_device = (key, w)
        return self._on_device[1]

    def edit(self, features: torch.Tensor) -> torch.Tensor:
        """(…, d_sae) → (…, d_sae): each feature scaled by 1 + scale·w (never below zero)."""
        w = self._weights_like(features)
        if w is None:
            return features
        return (features * (1 + self.config.reservoir_scale * w)).clamp_min(0)


class LexiconValence:
    """Offline default valence: (positive − negative word count) ÷ words, ×5, clipped to [−1, 1].

    What it is: a small hand-written word list. It cannot read sarcasm, negation or context;
    pass any ``callable(text) -> float`` to AnimaRuntime for a real estimator.
    """

    name = "lexicon (offline word list; see LexiconValence)"
    POSITIVE = {"love", "kind", "thank", "thanks", "good", "glad", "happy", "joy", "beautiful", "gentle", "warm",
                "hope", "calm", "wonderful", "great", "care", "friend", "peace", "delight", "sweet", "fair"}
    NEGATIVE = {"hate", "cruel", "bad", "sad", "angry", "fear", "pain", "ugly", "cold", "hurt", "awful", "terrible",
                "death", "kill", "enemy", "war", "grief", "foul", "vile", "rage", "curse"}

    def __call__(self, text: str) -> float:
        words = re.findall(r"[a-z']+", text.lower())
        if not words:
            return 0.0
        score = sum(w in self.POSITIVE for w in words) - sum(w in self.NEGATIVE for w in words)
        return max(-1.0, min(1.0, 5 * score / len(words)))
