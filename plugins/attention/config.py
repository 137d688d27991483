"""AttentionArguments and DreamArguments (recipe YAML keys)."""

from __future__ import annotations

from dataclasses import dataclass, field

TRAIN_MODULES = ("all", "q_only")


@dataclass
class AttentionArguments:
    """Which backbone weights train."""

    train_modules: str = field(default="all", metadata={
        "help": "'all' or 'q_only' (only W_q trains, the Q slice of fused QKV included; K/V stay bit-identical)."})

    def __post_init__(self):
        if self.train_modules not in TRAIN_MODULES:
            raise ValueError(f"train_modules must be one of {TRAIN_MODULES}, got {self.train_modules!r}")


@dataclass
class DreamArguments:
    """The dream loop: generated scenarios that join a replay buffer training samples from."""

    dream_interval: int = field(default=0, metadata={"help": "Optimizer steps between dream rounds (0: off)."})
    dream_prompts: list[str] | None = field(default=None, metadata={
        "help": "Prompts dreams start from, cycled over rounds (default: the listening prompts; [] = undirected, "
                "from the BOS token)."})
    dream_num: int = field(default=8, metadata={"help": "Scenarios generated per round."})
    dream_keep: int = field(default=4, metadata={"help": "Best-scoring scenarios kept per round."})
    dream_max_new_tokens: int = field(default=48, metadata={"help": "Length of each scenario."})
    dream_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    dream_min_tokens: int = field(default=8, metadata={"help": "Shorter scenarios are dropped."})
    dream_max_repeat: float = field(default=0.6, metadata={
        "help": "Scenarios whose share of repeated tokens (1 - distinct/total) exceeds this are dropped."})
    dream_buffer_size: int = field(default=64, metadata={"help": "Replay buffer capacity (oldest leave first)."})
    dream_replay_ratio: float = field(default=0.25, metadata={
        "help": "Probability that a training example is replaced by a scenario from the buffer."})
