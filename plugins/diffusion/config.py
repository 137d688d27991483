"""DiffusionBlockConfig: the options of ``block: diffusion`` (IdentityConfig.block_config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SAMPLERS = ("ddim", "dpm_solver")
PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")


@dataclass
class DiffusionBlockConfig:
    """Set in YAML as ``identity_block: diffusion`` plus ``identity_block_config: {sample_steps: 8, ...}``."""

    denoiser_hidden: int = field(default=256, metadata={"help": "Width of the denoiser MLP."})
    denoiser_layers: int = field(default=3, metadata={"help": "Residual blocks in the denoiser."})
    num_train_timesteps: int = field(default=1000, metadata={"help": "DDPM training timesteps."})
    beta_schedule: str = field(default="squaredcos_cap_v2", metadata={"help": "diffusers beta schedule."})
    prediction_type: str = field(default="v_prediction", metadata={
        "help": "What the denoiser predicts: v_prediction (well-conditioned at few steps), epsilon or sample."})
    sampler: str = field(default="ddim", metadata={"help": f"Few-step sampler: one of {SAMPLERS}."})
    sample_steps: int = field(default=4, metadata={
        "help": "Denoising steps from noise to identity (differentiable in training forwards: the LM loss "
                "reaches the denoiser through them)."})
    condition_dropout: float = field(default=0.1, metadata={
        "help": "Probability of dropping the context condition in the denoising loss (classifier-free)."})
    self_target_weight: int = field(default=4, metadata={
        "help": "Copies of the self-description target per round, beside the observed corpus summaries."})
    queue_size: int = field(default=32, metadata={"help": "Corpus-batch summaries kept per rank between rounds."})
    denoise_updates: int = field(default=8, metadata={"help": "Optimizer steps on the denoising loss per round."})
    context_ema: float = field(default=0.5, metadata={"help": "How much of the old self-context a round keeps."})
    identity_ema: float = field(default=0.9, metadata={"help": "Decay of the EMA over round identities."})
    target_momentum: float = field(default=0.9, metadata={"help": "Momentum of the running centre of summaries."})
    seed: int = field(default=0, metadata={"help": "Seed of every round's fresh noise and of the denoising loss."})

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {SAMPLERS}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; choose from {PREDICTION_TYPES}")
        if self.denoise_updates < 1:
            raise ValueError(f"denoise_updates must be >= 1, got {self.denoise_updates}")
        if self.sample_steps < 1 or self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"sample_steps must be in [1, num_train_timesteps], got {self.sample_steps}")

    @classmethod
    def from_block_config(cls, block_config: dict | None) -> "DiffusionBlockConfig":
        """Build from ``IdentityConfig.block_config``; an unknown key is an error naming the closest one."""
        from hfself.args import check_keys

        block_config = dict(block_config or {})
        check_keys(block_config, [cls], source="identity block_config (block: diffusion)")
        return cls(**block_config)

    def to_dict(self) -> dict:
        return asdict(self)
