"""IdentityConfig: the persona's configuration, saved as its config.json."""

from __future__ import annotations

from transformers import PretrainedConfig

from hfself.auto import auto_map


class IdentityConfig(PretrainedConfig):
    """Configuration of an identity-conditioned causal LM.

    Args:
        identity_dim: size of the persistent identity latent; ``None`` turns identity off
            (the wrapper is then a pass-through with no hooks).
        identity_hidden_dim: hidden width of the MLP from identity latent to the d_model "soul".
        identity_dropout: dropout inside that MLP.
        block: Identity Block type, as registered through ``hfself_register_identity_blocks``.
        block_config: options of that block type (e.g. the diffusion block's sampler and steps);
            the block checks the keys.
        layers: indices of the decoder layers to condition (``None``: all).
        inject_q: add the identity bias to the queries (re-weights keys: b·k).
        inject_k: add the identity bias to the keys (only matters through RoPE, see docs).
        init_std: std of the per-layer soul -> Q/K projections at init (0 starts as the base model).
        base_model_name_or_path: Hub id or directory of the base model the persona was trained on.
        base_config: the base model's config as a dict (checks on load; rebuilds a saved base).
        base_included: whether the persona directory also holds the base weights (model.safetensors).
        weights_scope: what model.safetensors holds: "full", "trainable" (Trainer checkpoints) or None.
        allow_non_causal_base: condition a base whose earlier positions see later tokens (CPM-Ant's default
            context); by default such a base is refused, since the persona would not be causal either.
    """

    model_type = "hfself_identity"

    def __init__(
        self,
        identity_dim: int | None = 64,
        identity_hidden_dim: int = 256,
        identity_dropout: float = 0.0,
        block: str = "mlp",
        block_config: dict | None = None,
        layers: list[int] | None = None,
        inject_q: bool = True,
        inject_k: bool = True,
        init_std: float = 0.02,
        base_model_name_or_path: str | None = None,
        base_config: dict | None = None,
        base_included: bool = False,
        weights_scope: str | None = None,
        allow_non_causal_base: bool = False,
        **kwargs,
    ):
        if identity_dim is not None and identity_dim <= 0:
            raise ValueError(f"identity_dim must be positive or None (off), got {identity_dim}")
        if identity_dim is not None and not (inject_q or inject_k):
            raise ValueError("identity needs inject_q or inject_k (or identity_dim=None to turn it off)")
        self.identity_dim = identity_dim
        self.identity_hidden_dim = identity_hidden_dim
        self.identity_dropout = identity_dropout
        self.block = block
        self.block_config = dict(block_config or {})
        self.layers = list(layers) if layers is not None else None
        self.inject_q = inject_q
        self.inject_k = inject_k
        self.init_std = init_std
        self.base_model_name_or_path = base_model_name_or_path
        self.base_config = base_config
        self.base_included = base_included
        self.weights_scope = weights_scope
        self.allow_non_causal_base = allow_non_causal_base
        kwargs.setdefault("auto_map", auto_map("IdentityConfig", "IdentityForCausalLM"))
        super().__init__(**kwargs)

    @property
    def enabled(self) -> bool:
        return self.identity_dim is not None


import json  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from hfself.args import from_run_config  # noqa: E402


@dataclass
class IdentityArguments:
    """Recipe/YAML keys that build an :class:`IdentityConfig`."""

    identity_dim: int | None = field(default=64, metadata={"help": "Identity latent size; null turns identity off."})
    identity_hidden_dim: int = field(default=256, metadata={"help": "Hidden width of the identity MLP."})
    identity_dropout: float = field(default=0.0, metadata={"help": "Dropout inside the identity MLP."})
    identity_block: str = field(default="mlp", metadata={"help": "Identity Block type: mlp, diffusion, or a "
                                                                     "registered one."})
    identity_block_config: dict | str | None = field(default=None, metadata={
        "help": "Options of the block type (a YAML mapping, or JSON on the command line)."})
    identity_layers: list[int] | None = field(default=None, metadata={"help": "Layers to condition (default all)."})
    identity_inject_q: bool = field(default=True, metadata={"help": "Add the identity bias to queries."})
    identity_inject_k: bool = field(default=True, metadata={"help": "Add the identity bias to keys."})
    identity_init_std: float = field(default=0.02, metadata={"help": "Init std of the soul -> Q/K projections."})
    identity_allow_non_causal_base: bool = field(default=False, metadata={
        "help": "Condition a base that is not causal itself (refused by default)."})

    @classmethod
    def config_from(cls, run_config: dict) -> IdentityConfig:
        args = from_run_config(cls, run_config)
        block_config = args.identity_block_config
        if isinstance(block_config, str):
            block_config = json.loads(block_config)
        return IdentityConfig(identity_dim=args.identity_dim, identity_hidden_dim=args.identity_hidden_dim,
                              identity_dropout=args.identity_dropout, block=args.identity_block,
                              block_config=block_config,
                              layers=args.identity_layers, inject_q=args.identity_inject_q,
                              inject_k=args.identity_inject_k, init_std=args.identity_init_std,
                              allow_non_causal_base=args.identity_allow_non_causal_base)
