"""SpiralformerConfig (AutoConfig ``model_type="spiralformer"``) and the recipe's YAML keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PretrainedConfig

from .codec import VOCAB

PHASES = ("inhale", "hold", "exhale", "pause")
MODEL_SIZES = {  # named model sizes
    "tiny": dict(d_model=64, n_layers=2, n_heads=4),
    "small": dict(d_model=128, n_layers=4, n_heads=4),
    "base": dict(d_model=256, n_layers=6, n_heads=8),
}
ATTENTION_IMPLEMENTATIONS = ("auto", "dense", "flex", "gather")
CONDITIONS = ("latency", "voltage", "temperature", "error_rate", "bandwidth")


class SpiralformerConfig(PretrainedConfig):
    """Configuration of :class:`~hfself_plugins.spiral.model.SpiralformerForCausalLM`.

    Args:
        vocab_size: glyph vocabulary size (64, from the codec).
        d_model / n_layers / n_heads: width, depth and heads (or pick ``model_size``).
        max_position_embeddings: longest sequence.
        breath_durations: positions spent in each phase (inhale, hold, exhale, pause).
        phase_weights: weight of each phase in the rhythmic loss and the breath gates.
        spiral_attention: "auto" (flex on CUDA, dense mask elsewhere), "dense", "flex" or
            "gather" (O(T log T): each query gathers its log2(T)+1 spiral keys).
        silence_token_ids: glyph ids whose keys are masked (a query always sees itself).
        charge_dim: size of the Soma's FieldCharge.
        tower_slots: paintings the TowerMemory holds.
        tower_decay / tower_diversity: per-retrieval strength decay and the penalty on
            paintings that were retrieved often (so one painting is not retrieved forever).
    """

    model_type = "spiralformer"

    def __init__(self, vocab_size: int = len(VOCAB), d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
                 model_size: str | None = None, max_position_embeddings: int = 512, dropout: float = 0.0,
                 breath_durations: list[int] | None = None, phase_weights: list[float] | None = None,
                 spiral_attention: str = "auto", silence_token_ids: list[int] | None = None, charge_dim: int = 8,
                 tower_slots: int = 16, tower_decay: float = 0.98, tower_diversity: float = 0.5,
                 pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2, **kwargs):
        if model_size is not None:
            if model_size not in MODEL_SIZES:
                raise ValueError(f"unknown model_size {model_size!r}; choose from {sorted(MODEL_SIZES)}")
            d_model, n_layers, n_heads = (MODEL_SIZES[model_size][k] for k in ("d_model", "n_layers", "n_heads"))
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if spiral_attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"unknown spiral_attention {spiral_attention!r}; choose from {ATTENTION_IMPLEMENTATIONS}")
        self.vocab_size, self.d_model, self.n_layers, self.n_heads = vocab_size, d_model, n_layers, n_heads
        self.model_size = model_size
        self.max_position_embeddings, self.dropout = max_position_embeddings, dropout
        self.breath_durations = list(breath_durations or [4, 2, 4, 2])
        self.phase_weights = list(phase_weights or [1.0, 0.5, 1.0, 0.2])
        if len(self.breath_durations) != 4 or len(self.phase_weights) != 4 or min(self.breath_durations) < 1:
            raise ValueError(f"breath_durations and phase_weights need one positive entry per phase {PHASES}")
        self.spiral_attention = spiral_attention
        self.silence_token_ids = list(silence_token_ids if silence_token_ids is not None else range(4, 10))
        self.charge_dim, self.tower_slots = charge_dim, tower_slots
        self.tower_decay, self.tower_diversity = tower_decay, tower_diversity
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


@dataclass
class SpiralArguments:
    """Recipe/YAML keys of recipes/spiralformer.py (beside TrainingArguments)."""

    model_size: str = field(default="tiny", metadata={"help": f"Named size: {sorted(MODEL_SIZES)}."})
    breath_durations: list[int] = field(default_factory=lambda: [4, 2, 4, 2],
                                        metadata={"help": "Positions per phase: inhale, hold, exhale, pause."})
    phase_weights: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.0, 0.2],
                                       metadata={"help": "Rhythmic loss weight per phase."})
    spiral_attention: str = field(default="auto", metadata={"help": f"One of {ATTENTION_IMPLEMENTATIONS}."})
    max_position_embeddings: int = field(default=128, metadata={"help": "Longest glyph sequence."})
    train_file: str = field(default="outputs/spiral_data/echoes.jsonl", metadata={"help": "datagen output (JSONL)."})
    validation_file: str | None = field(default=None, metadata={
        "help": "Validation JSONL (default: <train_file stem>.val.jsonl when it exists)."})
    num_echoes: int = field(default=600, metadata={"help": "Records datagen writes when train_file is missing."})
    model_dir: str | None = field(default=None, metadata={"help": "Where the model goes (default <output_dir>/model)."})
