"""Routing analysis of a trained TemporalLoraForCausalLM: the router-dynamics metrics, and the
accuracy, hysteresis and fatigue experiments built on them (JSON + PNG).

Metrics act on a weight sequence w (T, E): rows are tokens, columns domains, rows sum to 1
(t counts tokens from the start of the segment in question, from 0):

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

Experiment texts come from the domains' corpora (``hfself.data.corpus_text``), held-out
part only (the last 10%, which the recipe never trains on). Every sequence is
built from token blocks, so segment boundaries are known exactly.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch

from hfself import persist
from hfself.data import corpus_text
from hfself.plotting import pyplot, save_figure


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


HELD_OUT = 0.9  # the recipe trains on text before this fraction of each corpus


def split_corpus(text: str, part: str) -> str:
    cut = int(len(text) * HELD_OUT)
    return text[:cut] if part == "train" else text[cut:]


def neutral_texts(part: str = "train") -> list[str]:
    """Plain sentences written for hfself that are neither Shakespeare nor code: the first 75% calibrate
    the balance (``part="train"``), the rest measure it (``"held_out"``)."""
    lines = [line for line in corpus_text("neutral").splitlines() if line.strip()]
    cut = int(len(lines) * 0.75)
    return lines[:cut] if part == "train" else lines[cut:]


class TokenSource:
    """Random held-out token blocks of one corpus (seeded)."""

    def __init__(self, tokenizer, corpus: str, seed: int = 0):
        self.ids = tokenizer(split_corpus(corpus_text(corpus), "held_out"), add_special_tokens=False)["input_ids"]
        self.rng = random.Random(seed)

    def block(self, n: int) -> list[int]:
        if n > len(self.ids):
            raise ValueError(f"asked for {n} tokens, the held-out text has {len(self.ids)}")
        start = self.rng.randrange(0, len(self.ids) - n + 1)
        return self.ids[start:start + n]


@torch.no_grad()
def weights_of(model, ids: list[int]) -> torch.Tensor:
    """Routing weights (T, E) of one token sequence."""
    device = next(model.parameters()).device
    return model.routing(torch.tensor([ids], device=device))[0].float().cpu()


def router_accuracy(model, tokenizer, corpora: list[str], n: int = 32, length: int = 64, skip: int = 8,
                    seed: int = 0) -> dict:
    """Token- and sequence-level routing accuracy per domain on held-out blocks, plus the neutral bias.

    Sequence-level: argmax of the mean weights over tokens after the first ``skip``.
    ``neutral_bias``: max over domains of |mean weight on held-out neutral text − 1/E| (0: no adapter favored).
    """
    out = {"per_domain": {}}
    for index, corpus in enumerate(corpora):
        source = TokenSource(tokenizer, corpus, seed=seed + index)
        token_hits = seq_hits = 0
        for _ in range(n):
            w = weights_of(model, source.block(length))[skip:]
            token_hits += (w.argmax(-1) == index).float().mean().item()
            seq_hits += int(w.mean(0).argmax().item() == index)
        out["per_domain"][model.domains[index]] = {"token_accuracy": token_hits / n, "sequence_accuracy": seq_hits / n}
    out["token_accuracy"] = sum(d["token_accuracy"] for d in out["per_domain"].values()) / len(corpora)
    out["sequence_accuracy"] = sum(d["sequence_accuracy"] for d in out["per_domain"].values()) / len(corpora)
    neutral = torch.cat([weights_of(model, tokenizer(t, add_special_tokens=False)["input_ids"])
                         for t in neutral_texts("held_out")]).mean(0)
    out["neutral_mean_weights"] = dict(zip(model.domains, neutral.tolist()))
    out["neutral_bias"] = (neutral - 1 / len(model.domains)).abs().max().item()
    return out


def hysteresis(model, tokenizer, corpora: tuple[str, str], segment: int = 64, mix_chunk: int = 8, k: int = 3,
               trials: int = 4, seed: int = 0, out_dir: str | Path | None = None) -> dict:
    """A→B→A and A→Mix→A: switch lags, return gaps, switching asymmetry (means over trials)."""
    a_src, b_src = TokenSource(tokenizer, corpora[0], seed), TokenSource(tokenizer, corpora[1], seed + 1)
    runs, example = [], None
    for _ in range(trials):
        a1, b, a2 = a_src.block(segment), b_src.block(segment), a_src.block(segment)
        mix = [t for i in range(0, segment, mix_chunk) for t in (a_src.block(mix_chunk) if (i // mix_chunk) % 2
                                                                 else b_src.block(mix_chunk))][:segment]
        w_aba = weights_of(model, a1 + b + a2)
        w_ama = weights_of(model, a1 + mix + a2)
        s = segment
        runs.append({
            "switch_lag_a_to_b": switch_lag(w_aba[s:2 * s], 1, k=k),
            "switch_lag_b_to_a": switch_lag(w_aba[2 * s:], 0, k=k),
            "return_gap_aba": return_gap(w_aba[:s], w_aba[2 * s:]),
            "return_gap_amixa": return_gap(w_ama[:s], w_ama[2 * s:]),
            "switch_lag_mix_to_a": switch_lag(w_ama[2 * s:], 0, k=k),
        })
        example = example or {"aba": w_aba, "amixa": w_ama}
    result = {"domains": list(corpora), "segment_tokens": segment, "k": k, "trials": trials,
              "switch_lag_a_to_b": _mean(r["switch_lag_a_to_b"] for r in runs),
              "switch_lag_b_to_a": _mean(r["switch_lag_b_to_a"] for r in runs),
              "switch_lag_mix_to_a": _mean(r["switch_lag_mix_to_a"] for r in runs),
              "return_gap_aba": {m: _mean(r["return_gap_aba"][m] for r in runs) for m in ("cosine", "euclidean", "dtw")},
              "return_gap_amixa": {m: _mean(r["return_gap_amixa"][m] for r in runs)
                                   for m in ("cosine", "euclidean", "dtw")},
              "runs": runs}
    result["switching_asymmetry"] = result["switch_lag_a_to_b"] - result["switch_lag_b_to_a"]
    result["censored_share"] = {key: _mean(r[key] >= segment for r in runs)
                                for key in ("switch_lag_a_to_b", "switch_lag_b_to_a", "switch_lag_mix_to_a")}
    if out_dir is not None:
        out = Path(out_dir)
        persist.save_json(out / "hysteresis_results.json", result)
        _plot_hysteresis(example, segment, corpora, out / "hysteresis_analysis.png")
    return result


def fatigue(model, tokenizer, corpora: tuple[str, str], lengths=(16, 32, 64, 128, 256), lead: int = 64,
            tail: int = 64, trials: int = 4, seed: int = 0, out_dir: str | Path | None = None) -> dict:
    """A(lead) → B(L) → A(tail) for each L: crystallization in B, relaxation after the return, r(L, saturation)."""
    a_src, b_src = TokenSource(tokenizer, corpora[0], seed), TokenSource(tokenizer, corpora[1], seed + 1)
    per_length, curves = [], {}
    for length in lengths:
        rows = []
        for _ in range(trials):
            w = weights_of(model, a_src.block(lead) + b_src.block(length) + a_src.block(tail))
            back = w[lead + length:]
            rows.append({"deep_crystallization_ratio": deep_crystallization_ratio(w[lead:lead + length], 1),
                         "relax_time_0.99": relax_time(back, 0, 0.99),
                         "tail_area_32": tail_area(back, 0, 32)})
            curves.setdefault(length, back[:, 0].tolist())
        per_length.append({"length": length, **{m: _mean(r[m] for r in rows) for m in rows[0]},
                           "relax_time_censored_share": _mean(r["relax_time_0.99"] >= tail for r in rows)})
    lens = [p["length"] for p in per_length]
    result = {"domains": list(corpora), "lead": lead, "tail": tail, "trials": trials, "per_length": per_length,
              "pearson_length_vs_crystallization": pearson(
                  lens, [p["deep_crystallization_ratio"] for p in per_length]),
              "pearson_length_vs_relax_time": pearson(lens, [p["relax_time_0.99"] for p in per_length]),
              "pearson_length_vs_tail_area": pearson(lens, [p["tail_area_32"] for p in per_length])}
    if out_dir is not None:
        out = Path(out_dir)
        persist.save_json(out / "fatigue_results.json", result)
        _plot_fatigue(result, curves, out / "fatigue_analysis.png")
    return result


def token_labels(tokenizer, ids: list[int], width: int = 8) -> list[str]:
    """Readable tick labels: each token decoded alone, whitespace shown (␣ space, ⏎ newline, → tab), clipped."""
    labels = []
    for token_id in ids:
        text = tokenizer.decode([token_id]).replace(" ", "␣").replace("\n", "⏎").replace("\t", "→")
        labels.append(text if len(text) <= width else text[:width - 1] + "…")
    return labels


def plot_routing(tokenizer, ids: list[int], weights: torch.Tensor, domains: list[str], path: str | Path) -> None:
    """Stacked per-token routing weights (T, E) over a text, with the decoded tokens as ticks."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(24, max(6, len(ids) * 0.18)), 3.4))
    ax.stackplot(range(len(ids)), weights.T.numpy(), labels=domains, alpha=0.8)
    if len(ids) <= 160:
        ax.set_xticks(range(len(ids)), token_labels(tokenizer, ids), rotation=90, fontsize=6)
    ax.set(xlim=(0, max(1, len(ids) - 1)), ylim=(0, 1), xlabel="token", ylabel="routing weight")
    ax.legend(loc="upper right", title="domain", fontsize=8)
    save_figure(fig, path)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _plot_hysteresis(example: dict, segment: int, corpora, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for ax, key, middle in ((axes[0], "aba", corpora[1]), (axes[1], "amixa", "mix")):
        ax.plot(example[key][:, 0].numpy(), label=f"w[{corpora[0]}]")
        ax.axvspan(segment, 2 * segment, color="orange", alpha=0.15, label=middle)
        ax.axhline(0.9, color="grey", lw=0.8, ls="--", label="0.9 (switched)")
        ax.set(ylim=(-0.02, 1.02), ylabel="routing weight", title=f"{corpora[0]} → {middle} → {corpora[0]}")
        ax.legend(loc="lower left", fontsize=8)
    axes[1].set_xlabel("token")
    save_figure(fig, path)


def _plot_fatigue(result: dict, curves: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for length, curve in curves.items():
        axes[0].plot(curve, label=f"B = {length}")
    axes[0].axhline(0.99, color="grey", lw=0.8, ls="--", label="0.99 (relaxed)")
    axes[0].set(title=f"w[{result['domains'][0]}] after the return", xlabel="tokens after the return",
                ylabel="routing weight", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    lens = [p["length"] for p in result["per_length"]]
    crystal = axes[1].plot(lens, [p["deep_crystallization_ratio"] for p in result["per_length"]], "o-",
                           label="deep crystallization ratio")
    ax2 = axes[1].twinx()
    relax = ax2.plot(lens, [p["relax_time_0.99"] for p in result["per_length"]], "s--", color="C3",
                     label="relax time 0.99 (tokens)")
    axes[1].set(xscale="log", xlabel="B block length (tokens)", ylabel="deep crystallization ratio",
                title=f"r(length, crystallization) = {_fmt(result['pearson_length_vs_crystallization'])}")
    axes[1].set_xticks(lens, [str(n) for n in lens])
    axes[1].minorticks_off()
    ax2.set_ylabel("relax time (tokens)")
    axes[1].legend(crystal + relax, [line.get_label() for line in crystal + relax], fontsize=8, loc="best")
    save_figure(fig, path)
