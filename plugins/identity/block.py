"""The MLP Identity Block: a persistent latent -> a d_model "soul" -> per-layer Q/K biases."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from hfself.arch import ArchInfo
from hfself.embed import masked_mean
from hfself.sharding import backward_outside_step, call_whole

from .config import IdentityConfig


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank, differentiably. FSDP2 keeps a block's parameters sharded (DTensor) outside
    the model's forward, where introspection and generation read them."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class IdentityBlock(nn.Module):
    """Holds the model's self as a latent vector and turns it into attention biases.

    identity (identity_dim) --MLP--> soul (d_model) --per-layer W_l--> [q_bias | k_bias]

    The biases depend on the persistent identity only, never on the tokens of
    the sequence being processed, so conditioning is causal by construction and
    identical with or without a KV cache. Context reaches the identity through
    introspection: :meth:`summarize_token_context` of generated self-descriptions
    is what :meth:`introspection_loss` pulls the soul toward.

    Other blocks (``hfself_register_identity_blocks``) subclass this one and
    override :meth:`latent`, :meth:`introspection_round` and, to see the
    training batches, ``observes_context`` + :meth:`observe`.
    """

    observes_context = False  # True: the injector feeds every training batch's hidden states to observe()
    latent_state_keys = ("identity",)  # state that blends by slerp; the rest of the state blends by lerp

    def __init__(self, config: IdentityConfig, arch: ArchInfo):
        super().__init__()
        d_model = arch.hidden_size
        attention_ids = [layer.index for layer in arch.attention_layers]  # hybrids: Mamba/linear layers skipped
        self.layer_ids = list(config.layers) if config.layers is not None else attention_ids
        bad = [i for i in self.layer_ids if i not in attention_ids]
        if bad:
            raise ValueError(f"identity layers {bad} are not attention layers of this {arch.num_layers}-layer model "
                             f"(attention layers: {attention_ids})")
        # the widest layer's Q and K bias; a narrower layer uses the first entries (head counts may vary per layer)
        self.q_width = arch.q_dim if config.inject_q else 0  # num_heads * head_dim
        self.k_width = arch.k_dim if config.inject_k else 0  # num_kv_heads * head_dim
        self.identity = nn.Parameter(torch.randn(config.identity_dim))
        self.soul_mlp = nn.Sequential(
            nn.Linear(config.identity_dim, config.identity_hidden_dim),
            nn.GELU(),
            nn.Dropout(config.identity_dropout),
            nn.Linear(config.identity_hidden_dim, d_model),
        )
        # One projection per conditioned layer, stored stacked: (L, d_model, q_width + k_width)
        self.qk_proj = nn.Parameter(
            torch.randn(len(self.layer_ids), d_model, self.q_width + self.k_width) * config.init_std
        )

    def latent(self) -> torch.Tensor:
        """(identity_dim,) the identity latent the soul is made from."""
        return self.identity

    def refresh_identity(self) -> None:
        """Bring derived state in line after the block's state was replaced (a blend); the MLP block has none."""

    def soul(self) -> torch.Tensor:
        """(d_model,) the identity as seen by every layer."""
        return call_whole(self.soul_mlp, _whole(self.latent()))

    def qk_biases(self) -> torch.Tensor:
        """(L, q_width + k_width): per conditioned layer, the Q bias then the K bias."""
        return torch.einsum("d,ldw->lw", self.soul(), _whole(self.qk_proj))

    def forward(self) -> torch.Tensor:
        """(L, q_width + k_width) :meth:`qk_biases`, called as a module so that DeepSpeed ZeRO-3 gathers the
        block's parameters for it (and its backward)."""
        return self.qk_biases()

    @staticmethod
    def summarize_token_context(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, d_model) -> (B, d_model): masked mean over the valid tokens."""
        return masked_mean(hidden_states, attention_mask)

    def introspection_loss(self, summary: torch.Tensor) -> torch.Tensor:
        """1 − cos(soul, summary): how far the soul is from a self-description's summary (d_model,)."""
        return 1.0 - torch.nn.functional.cosine_similarity(self.soul(), summary.to(self.identity.dtype), dim=-1)

    def introspection_round(self, summary: torch.Tensor, optimizer: torch.optim.Optimizer, loss_scale: float = 1.0,
                            ema: float = 0.0) -> float:
        """One round: a step of ``optimizer`` on :meth:`introspection_loss`, then an optional EMA on the identity."""
        previous = self.identity.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_scale * self.introspection_loss(summary)
        backward_outside_step(loss, list(self.parameters()))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema > 0:
            with torch.no_grad():
                self.identity.mul_(1 - ema).add_(previous, alpha=ema)
        return loss.item()

    def round_inputs(self) -> dict[str, torch.Tensor]:
        """What this rank has gathered for its next round, outside the persona's state (a checkpoint keeps it per
        rank, so that a resume between two rounds is exact)."""
        return {}

    def load_round_inputs(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`round_inputs`."""

    def observe(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Called with each training batch's last hidden states when ``observes_context`` is True."""
