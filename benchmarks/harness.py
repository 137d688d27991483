"""What every benchmark shares: interleaved repeats, medians with their spread, ratios that say whether they
are resolved, the limit each ratio is judged against, and the run's provenance.

    sides = interleave({"base": run_base, "identity": run_identity}, rounds=5)   # base, identity, identity, base, ...
    row = compare("train tokens/s", sides["base"], sides["identity"], limit=1.0, higher_is_better=True)
    report = Report("identity", settings=vars(args), seed=0, device=device)
    report.add(row)
    report.write(path)

A ratio is ``other ÷ base`` of the per-round values (each round's pair measured back to back), so slow drift of
the machine cancels within a pair; its spread is the interquartile range over rounds. When that range is wider
than the ratio's distance from 1, the benchmark cannot tell the two sides apart: the row says "not resolved".
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

RECORDED = Path(__file__).parent / "results"
SCRATCH = Path("outputs") / "benchmarks"
LIBRARIES = ("torch", "transformers", "accelerate", "peft", "trl", "sae-lens", "diffusers", "apollo-torch")


def add_record_flag(parser) -> None:
    parser.add_argument("--record", action="store_true",
                        help=f"write into the tracked benchmarks/results/ (default: {SCRATCH}/)")


def result_path(args, name: str, explicit: str | None = None) -> Path:
    """``explicit`` if given, else ``name`` under benchmarks/results/ (``--record``) or outputs/benchmarks/: a run
    to try something never overwrites the recorded figures."""
    path = Path(explicit) if explicit else (RECORDED if args.record else SCRATCH) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device="cpu") -> float:
    """Seconds one call of ``fn`` takes, the device synchronized on both sides."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def interleave(sides: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call every side once per round, alternating the order (ABBA...) so neither always runs first; ``warmup``
    rounds are run and dropped. Each call returns one measurement."""
    names = list(sides)
    out: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        order = names if index % 2 == 0 else names[::-1]
        values = {name: sides[name]() for name in order}
        if index >= warmup:
            for name in names:
                out[name].append(values[name])
    return out


def spread(values: list[float]) -> dict:
    """Median, quartiles, min and max of repeated measurements."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "q1": q1, "q3": q3, "min": ordered[0], "max": ordered[-1],
            "n": len(ordered)}


@dataclass
class Row:
    """One measured ratio (``other ÷ base``) with both sides, its spread and its limit."""

    metric: str
    unit: str
    base: dict
    other: dict
    ratio: dict
    resolved: bool
    limit: float | None = None
    limit_note: str = ""
    higher_is_better: bool = True
    notes: str = ""

    @property
    def verdict(self) -> str:
        return "resolved" if self.resolved else "not resolved"

    def describe(self) -> str:
        r = self.ratio
        text = f"{self.metric}: {r['median']:.3f} (IQR {r['q1']:.3f}–{r['q3']:.3f}, n={r['n']})"
        if self.limit is not None:
            text += f", limit {self.limit:.3f}"
            if self.limit_note:
                text += f" ({self.limit_note})"
        return text + ("" if self.resolved else "  [not resolved: the spread is wider than the effect]")


def compare(metric: str, base: list[float], other: list[float], *, unit: str = "", limit: float | None = None,
            limit_note: str = "", higher_is_better: bool = True, notes: str = "") -> Row:
    """The per-round ratios ``other[i] / base[i]`` summarized; resolved when their IQR is narrower than the
    ratio's distance from 1."""
    if len(base) != len(other) or not base:
        raise ValueError(f"{metric}: need paired measurements, got {len(base)} and {len(other)}")
    ratios = spread([o / b for b, o in zip(base, other)])
    resolved = (ratios["q3"] - ratios["q1"]) < abs(ratios["median"] - 1.0)
    return Row(metric, unit, spread(base), spread(other), ratios, resolved, limit, limit_note, higher_is_better,
               notes)


def single(metric: str, value: float, *, unit: str = "", limit: float | None = None, limit_note: str = "",
           notes: str = "") -> Row:
    """A deterministic ratio (e.g. state bytes), measured once: no spread, always resolved."""
    one = spread([value])
    return Row(metric, unit, spread([1.0]), one, one, True, limit, limit_note, True, notes)


def weights_per_token(lm, skip: tuple[str, ...] = ()) -> int:
    """Weights a causal LM multiplies for each token: every parameter but the embedding table (one row is read),
    plus the output head when it is tied to that table; names containing a ``skip`` string left out."""
    weights = sum(p.numel() for n, p in lm.named_parameters()
                  if "embed_tokens" not in n and not any(part in n for part in skip))
    if getattr(lm.config, "tie_word_embeddings", False):
        weights += lm.get_output_embeddings().weight.numel()
    return weights


def attention_macs_per_token(config, context: float) -> float:
    """Multiply-adds of one token's attention over ``context`` positions: q·K and p·V in every layer."""
    return 2 * config.num_hidden_layers * context * config.hidden_size


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def environment(device, seed: int) -> dict:
    """Provenance of a run: code revision, seed, device and library versions."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"git": git_revision(), "seed": seed, "device": str(device), "device_name": device_name(device),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "versions": versions,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@dataclass
class Report:
    """A benchmark's rows plus what it ran with; written as JSON, printed as lines."""

    benchmark: str
    settings: dict
    seed: int
    device: str
    rows: list[Row] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(row.describe(), flush=True)
        return row

    def to_dict(self) -> dict:
        return {"benchmark": self.benchmark, "environment": environment(self.device, self.seed),
                "settings": self.settings, "rows": [asdict(r) | {"verdict": r.verdict} for r in self.rows],
                **self.extra}

    def write(self, path: Path) -> dict:
        data = self.to_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        print(f"wrote {path}")
        return data


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
