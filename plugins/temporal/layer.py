"""TimeMixer (the router) and TokenMixing (per-token weights applied inside peft's LoRA layers)."""

from __future__ import annotations

import torch
from torch import nn

from hfself.arch import cache_argument


class TimeMixer(nn.Module):
    """Per-token routing weights over the domain adapters from a backbone hidden state.

    (B, T, d) → LayerNorm → Linear(d, h) → GELU → Linear(h, E) → softmax(· / temperature) → (B, T, E)
    """

    def __init__(self, hidden_size: int, num_domains: int, hidden_dim: int = 64, temperature: float = 1.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_domains))
        self.temperature = temperature

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(hidden.to(self.norm.weight.dtype)))  # (B, T, E)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(hidden) / self.temperature, dim=-1)  # (B, T, E)


class _MixHook:
    """Forward hook on one adapter's ``lora_A``: weights its output per token. An object, not a closure, so that
    ``copy.deepcopy`` of the model gives hooks that call the copy's mixing."""

    def __init__(self, mixing: "TokenMixing", index: int):
        self.mixing, self.index = mixing, index

    def __call__(self, module, args, output):
        return self.mixing._mix(output, self.index)


class TokenMixing:
    """Hooks that weight each adapter's LoRA path per token.

    peft computes ``result + lora_B[e](lora_A[e](x)) * scaling[e]`` for every
    active adapter e. LoRA is linear, so multiplying ``lora_A[e]``'s output
    (B, T, r) by the weight w_e (B, T, 1) gives ``Σ_e w_e · ΔW_e x``: the
    per-token mixture, in one pass, inside peft's own modules. A pre-hook on
    the router layer computes the weights from the hidden state entering it
    (the layers below carry no adapters, so the mixer reads the bare backbone).

    Some attentions (DeepSeek MLA) cache a latent and run an adapted projection
    over every cached position at each decoding step; the weights of the
    cached positions are kept for them (``history``).
    """

    def __init__(self, lora_layers: list[nn.Module], domains: list[str], router_layer: nn.Module,
                 compute_weights):
        self.lora_layers, self.domains, self.router_layer = lora_layers, domains, router_layer
        self.compute_weights = compute_weights  # (B, T, d) hidden -> (B, T, E) weights
        self.weights: torch.Tensor | None = None  # (B, T, E) of the running forward
        self.history: torch.Tensor | None = None  # (B, T_cached + T, E) since the last forward without a cache
        self._hidden: torch.Tensor | None = None  # (B, T, d) the router read, detached
        self._route_grad = self._reentrant = False  # see _current_weights
        self.handles: list = []

    def attach(self) -> None:
        if self.handles:
            return
        self.handles.append(self.router_layer.register_forward_pre_hook(self._route, with_kwargs=True))
        for layer in self.lora_layers:
            for index, name in enumerate(self.domains):
                self.handles.append(layer.lora_A[name].register_forward_hook(_MixHook(self, index)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @property
    def attached(self) -> bool:
        return bool(self.handles)

    def _route(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, d)
        if hidden.dim() > 3:  # (B, T, streams, d) hyper-connection streams (deepseek_v4): route on their mean
            hidden = hidden.flatten(2, -2).mean(2)
        self.weights = self.compute_weights(hidden)
        cache = cache_argument(kwargs)
        if (cache is not None and hasattr(cache, "get_seq_length") and self.history is not None
                and self.history.shape[0] == hidden.shape[0] and not torch.is_grad_enabled()):
            keep = cache.get_seq_length() + hidden.shape[1]  # at least every position this sequence has cached
            self.history = torch.cat([self.history, self.weights], 1)[:, -keep:]
        else:
            self.history = self.weights
        if torch._C._current_graph_task_id() == -1:  # a forward, not a checkpoint's recompute inside backward
            self._hidden, self._route_grad, self._reentrant = hidden.detach(), torch.is_grad_enabled(), False

    def _mix(self, lora_hidden: torch.Tensor, index: int) -> torch.Tensor:
        """(B, T, r) output of one adapter's lora_A, weighted by that adapter's per-token weight."""
        weights = self._current_weights()  # (B, T, E)
        if lora_hidden.dim() == 2 and lora_hidden.shape[0] == weights.shape[0] * weights.shape[1]:
            weights = weights.flatten(0, 1)  # (B*T, E): the tokens flattened (JetMoE's attention experts)
        length = lora_hidden.shape[-2] if lora_hidden.dim() >= 2 else -1
        if self.history is not None and self.history.shape[1] >= length > weights.shape[-2]:
            weights = self.history[:, -length:]  # a projection over the cached positions too (MLA's kv_b_proj)
        return lora_hidden * weights[..., index:index + 1].to(lora_hidden.dtype)

    def _current_weights(self) -> torch.Tensor:
        """The routing weights. Reentrant gradient checkpointing runs the adapted layers without grad, then
        recomputes and backpropagates each on its own: there every layer builds its own graph to the mixer (from
        the detached router input, as no trainable weight lies below the router)."""
        if not torch.is_grad_enabled():
            self._reentrant |= self._route_grad  # a layer without grad inside a forward with grad
        elif self._reentrant:
            return self.compute_weights(self._hidden)
        return self.weights
