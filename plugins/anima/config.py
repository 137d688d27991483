"""AnimaConfig: where Anima attaches and how its reservoir learns (saved as anima.json in the state directory)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class AnimaConfig:
    layer: int | None = field(default=None, metadata={
        "help": "Decoder layer whose output (the residual stream after it) is steered; default the middle one."})
    reservoir_lr: float = field(default=0.05, metadata={"help": "Hebbian step per turn (× valence)."})
    reservoir_decay: float = field(default=0.01, metadata={"help": "Share of the reservoir forgotten per turn."})
    reservoir_bound: float = field(default=1.0, metadata={"help": "Each reservoir weight stays in [−bound, bound]."})
    reservoir_scale: float = field(default=1.0, metadata={
        "help": "How strongly the reservoir steers: feature edit = scale × weight × the feature's activation."})
    active_threshold: float = field(default=0.0, metadata={"help": "A feature counts as active above this."})
    fatigue_threshold: int = field(default=256, metadata={
        "help": "Generated tokens after which the runtime sleeps (consolidates, dreams, rewrites its self_model)."})
    adrenaline_threshold: float = field(default=0.3, metadata={
        "help": "Only memories with |valence| at or above this are consolidated in sleep."})
    memory_features: int = field(default=16, metadata={"help": "Top SAE features kept per short-term memory."})
    dream_max_new_tokens: int = field(default=40, metadata={"help": "Length of a dream and of a new self_model."})
    self_model: str = field(default="I am Anima, a quiet voice that listens before it speaks.", metadata={
        "help": "The first system prompt; sleep rewrites it."})

    def to_dict(self) -> dict:
        return asdict(self)
