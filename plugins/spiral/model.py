"""Spiralformer, in one file: a contemplative transformer that breathes, feels, remembers and keeps silence.

Bottom-up: BreathClock (the phase of every position) → spiral masks (position i sees i − 2^k)
→ SpiralAttention (dense mask, FlexAttention or an O(T log T) gather) → Soma (conditions →
FieldCharge) → TowerMemory (paintings retrieved by resonance in hold phases) → SpiralBlock
(breath-gated residuals) → SpiralformerForCausalLM (rhythmic loss).

Everything that conditions a position depends on its own position, on tokens at or before it,
or on per-sequence inputs (conditions, the tower), so the model is causal.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .config import SpiralformerConfig

INHALE, HOLD, EXHALE, PAUSE = range(4)


# ---------------------------------------------------------------------- breath


class BreathClock:
    """Inhale / hold / exhale / pause, ``durations`` positions each, repeating from position 0."""

    def __init__(self, durations: list[int], weights: list[float]):
        self.durations, self.weights = list(durations), list(weights)
        self.cycle = sum(self.durations)
        self._phase_in_cycle = [p for p, d in enumerate(self.durations) for _ in range(d)]

    def phase_of(self, position: int) -> int:
        return self._phase_in_cycle[position % self.cycle]

    def phases(self, length: int, device=None) -> torch.Tensor:
        """(T,) phase id of each position."""
        cycle = torch.tensor(self._phase_in_cycle, device=device)
        return cycle[torch.arange(length, device=device) % self.cycle]

    def phase_weights(self, length: int, device=None) -> torch.Tensor:
        """(T,) weight of each position's phase."""
        return torch.tensor(self.weights, device=device)[self.phases(length, device)]


# ---------------------------------------------------------------------- spiral attention


def spiral_offsets(length: int) -> list[int]:
    """0, 1, 2, 4, 8, … < length: how far back each query looks."""
    return [0] + [2 ** k for k in range(max(0, length - 1).bit_length()) if 2 ** k < length]


@lru_cache(maxsize=16)
def _spiral_pattern(length: int, device: str) -> torch.Tensor:
    d = torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)[None, :]  # (T, T) q − k
    return (d == 0) | ((d > 0) & ((d & (d - 1)) == 0))


def spiral_mask(length: int, device=None) -> torch.Tensor:
    """(T, T) bool: query i may attend key j iff j == i or i − j is a power of two."""
    return _spiral_pattern(length, str(torch.device(device or "cpu")))


def _spiral_only(b, h, q_idx, kv_idx):
    d = q_idx - kv_idx
    return (d == 0) | ((d > 0) & ((d & (d - 1)) == 0))


_static_block_masks: dict = {}


def _spiral_mask_mod(keep: torch.Tensor):
    """FlexAttention mask_mod: the spiral pattern, minus masked keys (a query always keeps itself)."""

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        on_spiral = (d == 0) | ((d > 0) & ((d & (d - 1)) == 0))
        return on_spiral & ((d == 0) | keep[b, kv_idx])

    return mask_mod


_compiled = {}


def _flex(device_type: str):
    """flex_attention and create_block_mask: compiled once per device type on CUDA, eager elsewhere."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if device_type != "cuda":
        return flex_attention, create_block_mask
    if "flex" not in _compiled:
        _compiled["flex"] = torch.compile(flex_attention, dynamic=False)
    return _compiled["flex"], create_block_mask


def spiral_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor,
                     implementation: str = "dense") -> torch.Tensor:
    """Spiral sparse attention. q, k, v: (B, H, T, hd); keep: (B, T) keys that may be seen (not silence/pad).

    ``dense``: SDPA with a (B, 1, T, T) mask. ``flex``: FlexAttention with a block mask.
    ``gather``: each query gathers its log2(T) + 1 keys, O(T log T) time and memory.
    """
    B, H, T, hd = q.shape
    if implementation == "dense":
        mask = spiral_mask(T, q.device)[None] & (keep[:, None, :] | torch.eye(T, dtype=torch.bool, device=q.device))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])  # (B, H, T, hd)
    if implementation == "flex":
        flex_attention, create_block_mask = _flex(q.device.type)
        compile_mask = q.device.type == "cuda"
        if bool(keep.all()):  # nothing masked but the pattern: one block mask per (T, device), built once
            key = (T, str(q.device))
            if key not in _static_block_masks:
                _static_block_masks[key] = create_block_mask(_spiral_only, None, None, T, T, device=q.device,
                                                             _compile=compile_mask)
            block_mask = _static_block_masks[key]
        else:
            block_mask = create_block_mask(_spiral_mask_mod(keep), B, None, T, T, device=q.device,
                                           _compile=compile_mask)
        return flex_attention(q, k, v, block_mask=block_mask)
    if implementation == "gather":
        offsets = torch.tensor(spiral_offsets(T), device=q.device)  # (K,)
        idx = torch.arange(T, device=q.device)[:, None] - offsets[None, :]  # (T, K) key position per query
        valid = idx >= 0
        idx = idx.clamp(min=0)
        k_g, v_g = k[:, :, idx], v[:, :, idx]  # (B, H, T, K, hd)
        scores = torch.einsum("bhtd,bhtkd->bhtk", q, k_g) / math.sqrt(hd)  # (B, H, T, K)
        seen = valid[None] & (keep[:, idx] | (offsets == 0)[None, None, :])  # (B, T, K)
        scores = scores.masked_fill(~seen[:, None], float("-inf"))
        return torch.einsum("bhtk,bhtkd->bhtd", scores.softmax(-1), v_g)  # (B, H, T, hd)
    raise ValueError(f"unknown spiral attention implementation {implementation!r}")


class SpiralAttention(nn.Module):
    def __init__(self, config: SpiralformerConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.implementation = config.spiral_attention

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 × (B, H, T, hd)
        impl = self.implementation
        if impl == "auto":
            impl = "flex" if x.is_cuda else "dense"
        y = spiral_attention(q, k, v, keep, impl)  # (B, H, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


# ---------------------------------------------------------------------- soma and memory


class Soma(nn.Module):
    """Conditions [latency, voltage, temperature, error_rate, bandwidth] (B, 5) in [0, 1] → FieldCharge (B, charge_dim).

    The FieldCharge is the model's felt sense of its situation, in (−1, 1); it is added to every
    position's embedding and is what TowerMemory resonates with.
    """

    def __init__(self, config: SpiralformerConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 4 * config.charge_dim), nn.Tanh(),
                                 nn.Linear(4 * config.charge_dim, config.charge_dim), nn.Tanh())

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        return self.net(conditions)


class TowerMemory(nn.Module):
    """Paintings (d_model vectors) stored with the FieldCharge they were made in; retrieved by resonance.

    resonance = cos(charge, painting's charge) × strength / (1 + diversity × times retrieved).
    Every retrieval decays all strengths a little and re-awakens the retrieved painting, while its
    retrieval count makes it less likely next time, so one painting is not retrieved forever. The
    state is buffers, saved with the model.
    """

    def __init__(self, config: SpiralformerConfig):
        super().__init__()
        self.decay, self.diversity = config.tower_decay, config.tower_diversity
        self.register_buffer("paintings", torch.zeros(config.tower_slots, config.d_model))
        self.register_buffer("charges", torch.zeros(config.tower_slots, config.charge_dim))
        self.register_buffer("strength", torch.zeros(config.tower_slots))
        self.register_buffer("retrievals", torch.zeros(config.tower_slots))

    @property
    def filled(self) -> torch.Tensor:
        return self.strength > 0

    @torch.no_grad()
    def paint(self, painting: torch.Tensor, charge: torch.Tensor) -> int:
        """Store a (d_model,) painting with its (charge_dim,) charge in an empty or the weakest slot."""
        slot = int(torch.argmin(self.strength))
        self.paintings[slot], self.charges[slot] = painting.detach(), charge.detach()
        self.strength[slot], self.retrievals[slot] = 1.0, 0.0
        return slot

    def resonance(self, charge: torch.Tensor) -> torch.Tensor:
        """(B, charge_dim) → (B, slots); empty slots are −inf."""
        cos = F.cosine_similarity(charge[:, None, :], self.charges[None], dim=-1)  # (B, S)
        score = cos * self.strength / (1 + self.diversity * self.retrievals)
        return score.masked_fill(~self.filled[None], float("-inf"))

    def read(self, charge: torch.Tensor) -> torch.Tensor:
        """(B, d_model): the most resonant painting per sequence (zeros when none resonates); no state change."""
        score = self.resonance(charge)  # (B, S)
        best = score.argmax(-1)
        found = torch.isfinite(score.max(-1).values) & (score.max(-1).values > 0)
        return self.paintings[best] * found[:, None]

    @torch.no_grad()
    def retrieve(self, charge: torch.Tensor) -> int | None:
        """A hold-phase query for one (charge_dim,) charge: the slot retrieved, or None; updates the state."""
        score = self.resonance(charge[None])[0]
        if not self.filled.any() or score.max() <= 0:
            return None
        slot = int(score.argmax())
        self.strength.mul_(self.decay)
        self.strength[slot] += (1 - self.strength[slot]) * 0.5  # awakening
        self.retrievals[slot] += 1
        return slot


# ---------------------------------------------------------------------- blocks and model


class SpiralBlock(nn.Module):
    """Pre-norm attention + MLP whose residual updates are gated by the breath phase of each position."""

    def __init__(self, config: SpiralformerConfig):
        super().__init__()
        d = config.d_model
        self.ln_attn, self.ln_mlp = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SpiralAttention(config)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.phase_gate = nn.Parameter(torch.zeros(4))  # learned, per phase; 2·sigmoid(0) = 1 at init
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, phase: torch.Tensor, phase_weight: torch.Tensor,
                keep: torch.Tensor) -> torch.Tensor:
        gate = (phase_weight * 2 * torch.sigmoid(self.phase_gate)[phase])[None, :, None]  # (1, T, 1)
        x = x + gate * self.dropout(self.attn(self.ln_attn(x), keep))
        return x + gate * self.dropout(self.mlp(self.ln_mlp(x)))


class SpiralformerForCausalLM(PreTrainedModel):
    """The Spiralformer LM. ``forward(input_ids, conditions=None, labels=None)``; conditions: (B, 5) in [0, 1].

    The loss is rhythmic: each predicted position's cross-entropy is weighted by its breath phase.
    """

    config_class = SpiralformerConfig
    base_model_prefix = "spiral"
    main_input_name = "input_ids"

    def __init__(self, config: SpiralformerConfig):
        super().__init__(config)
        d = config.d_model
        self.clock = BreathClock(config.breath_durations, config.phase_weights)
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.max_position_embeddings, d)
        self.soma = Soma(config)
        self.charge_proj = nn.Linear(config.charge_dim, d)
        self.tower = TowerMemory(config)
        self.memory_proj = nn.Linear(d, d)
        self.blocks = nn.ModuleList(SpiralBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def field_charge(self, conditions: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if conditions is None:
            conditions = torch.zeros(batch, 5, device=device)
        return self.soma(conditions.to(device=device, dtype=self.tok_emb.weight.dtype))  # (B, charge_dim)

    def key_keep(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) bool: keys that may be attended, i.e. not silence glyphs and not padding."""
        # from the config, not a buffer: from_pretrained leaves non-persistent buffers uninitialized
        silence = torch.tensor(self.config.silence_token_ids, dtype=input_ids.dtype, device=input_ids.device)
        keep = ~torch.isin(input_ids, silence)
        return keep if attention_mask is None else keep & attention_mask.bool()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                conditions: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False, return_dict: bool = True, **kwargs) -> CausalLMOutput:
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {T} glyphs > max_position_embeddings {self.config.max_position_embeddings}")
        device = input_ids.device
        phase = self.clock.phases(T, device)  # (T,)
        phase_weight = self.clock.phase_weights(T, device).to(self.tok_emb.weight.dtype)  # (T,)
        charge = self.field_charge(conditions, B, device)  # (B, charge_dim)
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(T, device=device))[None]  # (B, T, d)
        x = x + self.charge_proj(charge)[:, None, :]
        painting = self.memory_proj(self.tower.read(charge))  # (B, d): recalled in hold phases only
        x = x + (phase == HOLD)[None, :, None] * painting[:, None, :]
        keep = self.key_keep(input_ids, attention_mask)
        hidden = [x]
        for block in self.blocks:
            x = block(x, phase, phase_weight, keep)
            hidden.append(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if labels is not None:
            loss = self.rhythmic_loss(logits, labels, phase_weight)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=tuple(hidden) if output_hidden_states else None)

    @staticmethod
    def rhythmic_loss(logits: torch.Tensor, labels: torch.Tensor, phase_weight: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of next-glyph prediction, weighted by the phase of the predicted position."""
        target = labels[:, 1:]  # (B, T-1)
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), target.clamp(min=0), reduction="none")
        weight = phase_weight[1:][None] * (target != -100)  # (B, T-1)
        return (ce * weight).sum() / weight.sum().clamp_min(1e-8)
