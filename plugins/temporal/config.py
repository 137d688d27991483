"""TemporalLoraConfig: domains, the LoRA shape, and where the time mixer reads the backbone."""

from __future__ import annotations

from transformers import PretrainedConfig


class TemporalLoraConfig(PretrainedConfig):
    """Configuration of a :class:`TemporalLoraForCausalLM`.

    Args:
        domains: one LoRA adapter per name, in router order (e.g. ``["shakespeare", "python"]``).
        lora_r, lora_alpha, lora_dropout: the LoRA shape of every adapter.
        target_modules: module names LoRA wraps (None: the Q/K projections hfself.arch finds).
        router_layer: the time mixer reads the residual stream entering this decoder layer;
            adapters sit on this layer and the ones after it, so one forward pass does both
            (None: the first attention layer at or above a quarter of the depth, at least 1; on a
            hybrid whose attention all lies lower, its last attention layer).
        router_hidden_dim: width of the mixer's hidden layer.
        router_temperature: softmax temperature of the routing weights.
        base_model_name_or_path, base_config: the frozen backbone.
        base_included: the backbone's weights are saved with the model (e.g. a warmed-up random init).
    """

    model_type = "hfself_temporal"

    def __init__(self, domains: list[str] | None = None, lora_r: int = 8, lora_alpha: int = 16,
                 lora_dropout: float = 0.0, target_modules: list[str] | None = None, router_layer: int | None = None,
                 router_hidden_dim: int = 64, router_temperature: float = 1.0,
                 base_model_name_or_path: str | None = None, base_config: dict | None = None,
                 base_included: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.domains = list(domains or [])
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"domain names must be unique, got {self.domains}")
        if router_layer is not None and router_layer < 0:
            raise ValueError("router_layer must be >= 0 (the mixer reads the residual stream entering it)")
        self.lora_r, self.lora_alpha, self.lora_dropout = lora_r, lora_alpha, lora_dropout
        self.target_modules = target_modules
        self.router_layer = router_layer
        self.router_hidden_dim = router_hidden_dim
        self.router_temperature = router_temperature
        self.base_model_name_or_path = base_model_name_or_path
        self.base_config = base_config
        self.base_included = base_included
