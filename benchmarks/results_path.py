"""Where a benchmark writes: ``outputs/benchmarks/`` by default; the tracked ``benchmarks/results/`` only with
``--record`` (so a run to try something never overwrites the recorded figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

RECORDED = Path(__file__).parent / "results"
SCRATCH = Path("outputs") / "benchmarks"


def add_record_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", action="store_true",
                        help=f"write into the tracked benchmarks/results/ (default: {SCRATCH}/)")


def result_path(args: argparse.Namespace, name: str, explicit: str | None = None) -> Path:
    """``explicit`` if given, else ``name`` under benchmarks/results/ (``--record``) or outputs/benchmarks/."""
    path = Path(explicit) if explicit else (RECORDED if args.record else SCRATCH) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
