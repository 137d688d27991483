"""Router dynamics metrics on a weight sequence w (T, E): rows are tokens, columns domains, rows sum to 1.

Definitions (t counts tokens from the start of the segment in question, from 0):

- ``switch_lag(w, d, threshold=0.9, k=3)``: the smallest t such that
  w[t + j, d] > threshold for j = 0..k-1; ``len(w)`` if that never happens
  (censored: the switch did not complete inside the segment; experiments report
  the share of censored trials next to each mean).
- ``return_gap(a1, a2)``: how differently the router behaves on a second
  visit to domain A. Three distances between the first (a1) and second (a2)
  A segments: ``cosine``: 1 − cos(mean a1, mean a2); ``euclidean``: the mean
  over t < min(len) of ‖a1[t] − a2[t]‖₂; ``dtw``: dynamic-time-warping cost
  with ‖·‖₂ steps, divided by len(a1) + len(a2).
- ``switching_asymmetry = switch_lag(A→B) − switch_lag(B→A)``: positive when
  leaving A is slower than returning to it.
- ``deep_crystallization_ratio(w, d, 0.95)``: the share of tokens with w[t, d] > 0.95.
- ``relax_time(w, d, 0.99)``: the first t with w[t, d] > 0.99 (``len(w)`` if none).
- ``tail_area(w, d, 32)``: Σ_{t < 32} (1 − w[t, d]).
"""

from __future__ import annotations

import math

import torch


def switch_lag(w: torch.Tensor, domain: int, threshold: float = 0.9, k: int = 3) -> int:
    above = (w[:, domain] > threshold).tolist()
    run = 0
    for t, flag in enumerate(above):
        run = run + 1 if flag else 0
        if run == k:
            return t - k + 1
    return len(above)


def dtw(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dynamic time warping between (n, E) and (m, E) with euclidean steps, normalized by n + m."""
    cost = torch.cdist(a.float(), b.float())  # (n, m)
    n, m = cost.shape
    acc = torch.full((n + 1, m + 1), math.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return (acc[n, m] / (n + m)).item()


def return_gap(first: torch.Tensor, second: torch.Tensor) -> dict[str, float]:
    n = min(len(first), len(second))
    cosine = torch.nn.functional.cosine_similarity(first.float().mean(0), second.float().mean(0), dim=0).item()
    return {"cosine": 1.0 - cosine, "euclidean": (first[:n] - second[:n]).float().norm(dim=-1).mean().item(),
            "dtw": dtw(first, second)}


def deep_crystallization_ratio(w: torch.Tensor, domain: int, threshold: float = 0.95) -> float:
    return (w[:, domain] > threshold).float().mean().item()


def relax_time(w: torch.Tensor, domain: int, threshold: float = 0.99) -> int:
    above = (w[:, domain] > threshold).nonzero()
    return int(above[0, 0]) if len(above) else len(w)


def tail_area(w: torch.Tensor, domain: int, length: int = 32) -> float:
    return (1 - w[:length, domain]).sum().item()


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation (None when either side is constant, e.g. every value censored)."""
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    tx, ty = tx - tx.mean(), ty - ty.mean()
    denom = tx.norm() * ty.norm()
    return (tx @ ty / denom).item() if denom > 0 else None
