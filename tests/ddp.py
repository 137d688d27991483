"""Run a script under `accelerate launch` with 2 CPU processes and compare what each rank wrote."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from recipes_path import RECIPES

from hfself.persist import load_tensors

TESTS = Path(__file__).parent


def _free_port() -> int:
    """A TCP port no one listens on now (tests run in parallel workers, each launch needs its own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(script: str, argv: list[str], rank_dir: Path,
                  env: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Launch ``tests/<script>`` on 2 CPU ranks (``env`` added to the environment); assert the
    rank<k>.safetensors it wrote in ``rank_dir`` are bit-identical and return rank 0's tensors."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), **(env or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(RECIPES / "accelerate_configs" / "cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           str(TESTS / script), *argv, "--use_cpu", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (load_tensors(rank_dir / f"rank{k}.safetensors") for k in (0, 1))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    return r0


def generating_callbacks_on_every_rank(model, tokenizer, rank: int) -> dict[str, torch.Tensor]:
    """A dream round and an eval during training on a sharded ``model``: each generates or runs forwards, which
    every rank must join (without that, rank 0 waits forever). Returns what both ranks must agree on."""
    from transformers import TrainerState

    from hfself_plugins.attention import DreamArguments, DreamCallback
    from hfself_plugins.evals import EvalArguments, EvalCallback

    dreams = DreamCallback(DreamArguments(dream_num=2, dream_max_new_tokens=4, dream_min_tokens=1, dream_keep=2))
    record = dreams.dream(model, tokenizer, step=1, is_main=rank == 0)
    evals = EvalCallback(EvalArguments(measures=["perplexity"], heldout_texts=2, max_length=16), every=1)
    evals._maybe_measure(TrainerState(global_step=1, is_world_process_zero=rank == 0), model, tokenizer)
    assert record["generated"] == 2 and evals.history
    return {"dream_ids": torch.tensor([i for item in dreams.buffer.items for i in item["input_ids"]]),
            "perplexity_ratio": torch.tensor(evals.history[-1]["persona/perplexity_ratio"])}
