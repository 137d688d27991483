"""OptimArguments: the APOLLO settings and the parameter-group policy (recipe YAML keys)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OptimArguments:
    """Settings of the ``apollo_adamw`` / ``apollo_mini`` optimizers (``optimizer:`` picks one)."""

    apollo_rank: int | None = field(default=None, metadata={
        "help": "Rank of the random projection (default 256 for apollo_adamw, 1 for apollo_mini)."})
    apollo_scale: float | None = field(default=None, metadata={
        "help": "Update multiplied by sqrt(scale) (default 1 for apollo_adamw, 128 for apollo_mini, as in the paper)."})
    apollo_update_proj_gap: int = field(default=200, metadata={"help": "Steps between re-seeding the projection."})
    apollo_norm_growth_limit: float = field(default=1.01, metadata={
        "help": "Largest allowed growth of the update norm per step (0: off)."})
    apollo_modules: str = field(default="linear", metadata={
        "help": "Which matrices APOLLO scales: 'linear' (Linear/Conv1D weights except the output head, as in the "
                "paper) or 'all_2d' (every 2-D parameter, embeddings included)."})
    apollo_seed: int = field(default=0, metadata={"help": "Seed of the random projections."})
    apollo_cache_projection: bool = field(default=False, metadata={
        "help": "Keep each projection between refreshes (r·min(m, n) more floats per matrix, a faster step) instead "
                "of redrawing it from its seed every step."})
    identity_learning_rate: float | None = field(default=None, metadata={
        "help": "Learning rate of the identity block's own group (default: learning_rate)."})
