"""Where things are inside a HuggingFace causal LM: one place, one table.

``inspect_model(model)`` returns an :class:`ArchInfo` with the decoder layers,
each layer's attention module and the projections that produce Q and K, plus
head counts and where positions enter. Q/K may come from separate projections
(``q_proj``/``k_proj``) or from one fused projection whose output interleaves
Q, K and V in a model-specific layout; :class:`ProjectionTarget` hides that by
giving, for every projection, the output positions of the flat Q vector
(``num_heads * head_dim``, head-major) and the flat K vector.

A model type missing from the table raises :class:`UnsupportedArchitectureError`.
A plugin adds one with the ``hfself_register_arch_adapters`` hook::

    @hookimpl
    def hfself_register_arch_adapters(register):
        register("my_llm", ArchAdapter(layers_path="model.layers", attention="self_attn",
                                       q_proj="q_proj", k_proj="k_proj"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# --------------------------------------------------------------------------- layouts
# A layout maps (num_heads, num_kv_heads, head_dim) to the output positions of
# flat Q and flat K inside one fused QKV projection.

Layout = Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]


def blocks_layout(nh: int, nkv: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[Q (nh*hd) | K (nkv*hd) | V (nkv*hd)]: GPT-2 c_attn, Phi-3 qkv_proj, MPT Wqkv, Falcon multi-query."""
    q = torch.arange(nh * hd)
    return q, nh * hd + torch.arange(nkv * hd)


def heads_interleaved_layout(nh: int, nkv: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head [q_h | k_h | v_h] (view(..., nh, 3*hd)): GPT-NeoX, BLOOM, Falcon (classic)."""
    head = torch.arange(nh).unsqueeze(1) * 3 * hd  # (nh, 1)
    dim = torch.arange(hd).unsqueeze(0)  # (1, hd)
    return (head + dim).flatten(), (head + hd + dim).flatten()


def kv_groups_layout(nh: int, nkv: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per KV group [q_g0 .. q_g(G-1) | k | v] (Falcon new_decoder_architecture)."""
    group = nh // nkv
    dim = torch.arange(hd)
    q = [(kv * (group + 2) + i) * hd + dim for kv in range(nkv) for i in range(group)]
    k = [(kv * (group + 2) + group) * hd + dim for kv in range(nkv)]
    return torch.cat(q), torch.cat(k)


# --------------------------------------------------------------------------- adapters


@dataclass
class ArchAdapter:
    """How to find the attention inputs of one model type.

    Give either ``q_proj`` and ``k_proj`` (separate projections) or ``qkv_proj``
    with a ``layout`` (fused). ``layout`` may depend on the config: pass
    ``layout_for_config`` instead. ``heads`` overrides head-count discovery.
    """

    layers_path: str  # dotted path from the *ForCausalLM to the ModuleList of decoder layers
    attention: str  # attribute of a decoder layer holding the self-attention module
    q_proj: str | None = None
    k_proj: str | None = None
    qkv_proj: str | None = None
    layout: Layout | None = None
    layout_for_config: Callable[[object], Layout] | None = None
    positional: str | Callable[[object], str] = "rope"  # "rope" | "alibi" | "learned" | "none", or config -> that
    heads: Callable[[object], tuple[int, int, int]] | None = None  # config -> (nh, nkv, head_dim)

    def __post_init__(self):
        separate = self.q_proj is not None and self.k_proj is not None
        fused = self.qkv_proj is not None and (self.layout or self.layout_for_config) is not None
        if separate == fused:
            raise ValueError("ArchAdapter needs q_proj+k_proj, or qkv_proj with a layout (not both).")


def _llama_like(**kw) -> ArchAdapter:
    return ArchAdapter(layers_path="model.layers", attention="self_attn", q_proj="q_proj", k_proj="k_proj", **kw)


def _falcon_layout(config) -> Layout:
    if config.new_decoder_architecture:
        return kv_groups_layout
    return blocks_layout if config.multi_query else heads_interleaved_layout


def _falcon_heads(config) -> tuple[int, int, int]:
    nh = config.num_attention_heads
    if config.new_decoder_architecture:
        nkv = config.num_kv_heads
    else:
        nkv = 1 if config.multi_query else nh
    return nh, nkv, config.hidden_size // nh


def _mpt_heads(config) -> tuple[int, int, int]:
    return config.n_heads, config.n_heads, config.d_model // config.n_heads


_BUILTIN: dict[str, ArchAdapter] = {
    **{t: _llama_like() for t in (
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "olmo", "olmo2", "stablelm", "starcoder2", "granite", "smollm3", "phi", "cohere", "glm")},
    "phi3": ArchAdapter(layers_path="model.layers", attention="self_attn", qkv_proj="qkv_proj", layout=blocks_layout),
    "gpt2": ArchAdapter(layers_path="transformer.h", attention="attn", qkv_proj="c_attn", layout=blocks_layout,
                        positional="learned"),
    "gptj": ArchAdapter(layers_path="transformer.h", attention="attn", q_proj="q_proj", k_proj="k_proj"),
    "gpt_neox": ArchAdapter(layers_path="gpt_neox.layers", attention="attention", qkv_proj="query_key_value",
                            layout=heads_interleaved_layout),
    "opt": ArchAdapter(layers_path="model.decoder.layers", attention="self_attn", q_proj="q_proj", k_proj="k_proj",
                       positional="learned"),
    "falcon": ArchAdapter(layers_path="transformer.h", attention="self_attention", qkv_proj="query_key_value",
                          layout_for_config=_falcon_layout, heads=_falcon_heads,
                          positional=lambda config: "alibi" if config.alibi else "rope"),
    "bloom": ArchAdapter(layers_path="transformer.h", attention="self_attention", qkv_proj="query_key_value",
                         layout=heads_interleaved_layout, positional="alibi"),
    "mpt": ArchAdapter(layers_path="transformer.blocks", attention="attn", qkv_proj="Wqkv", layout=blocks_layout,
                       positional="alibi", heads=_mpt_heads),
}

_registered: dict[str, ArchAdapter] = {}


def register_adapter(model_type: str, adapter: ArchAdapter) -> None:
    """Register an adapter in-process (plugins use the ``hfself_register_arch_adapters`` hook)."""
    _registered[model_type] = adapter


def adapters() -> dict[str, ArchAdapter]:
    """Every known adapter: the built-in table, then plugins, then in-process registrations."""
    from hfself.plugins import registry

    return {**_BUILTIN, **registry("arch_adapters"), **_registered}


def supported_model_types() -> list[str]:
    return sorted(adapters())


class UnsupportedArchitectureError(ValueError):
    pass


# --------------------------------------------------------------------------- results


@dataclass
class ProjectionTarget:
    """One projection module producing Q and/or K, and where they sit in its output."""

    module: nn.Module
    out_features: int
    q_index: torch.Tensor | None  # (nh*hd,) output positions of flat Q, or None
    k_index: torch.Tensor | None  # (nkv*hd,) output positions of flat K, or None

    @property
    def is_identity_q(self) -> bool:
        """True when the whole output is Q, in order (a separate q_proj)."""
        return self.k_index is None and self.q_index is not None and len(self.q_index) == self.out_features


@dataclass
class LayerInfo:
    index: int
    layer: nn.Module  # the decoder layer; its output is the residual stream after the layer
    attention: nn.Module
    targets: list[ProjectionTarget]


@dataclass
class ArchInfo:
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    positional: str  # "rope": rotary applied inside attention, after the Q/K projections
    fused_qkv: bool
    layers: list[LayerInfo] = field(repr=False)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def k_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


# --------------------------------------------------------------------------- inspection


def is_peft_model(model: nn.Module) -> bool:
    """True for peft wrappers (PeftModel and its task subclasses)."""
    return type(model).__module__.startswith("peft.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside hfself and peft wrappers."""
    for _ in range(8):
        if getattr(model, "_hfself_wrapper", False):  # IdentityForCausalLM & co. keep the LM in .lm
            model = model.lm
        elif is_peft_model(model) and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model
    return model


def projection_base_layer(module: nn.Module) -> nn.Module:
    """The plain Linear/Conv1D under a peft LoRA wrapper (or the module itself)."""
    return getattr(module, "base_layer", module)


def out_features_of(module: nn.Module) -> int:
    base = projection_base_layer(module)
    if hasattr(base, "out_features"):
        return base.out_features
    if hasattr(base, "nf"):  # transformers Conv1D (GPT-2)
        return base.nf
    raise TypeError(f"cannot tell the output size of {type(module).__name__}")


def _get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _heads_from_config(config) -> tuple[int, int, int]:
    nh = config.num_attention_heads
    nkv = getattr(config, "num_key_value_heads", None) or nh
    hd = getattr(config, "head_dim", None) or config.hidden_size // nh
    return nh, nkv, hd


def _unsupported(model_type: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"hfself does not know where attention lives in model type {model_type!r}. "
        f"Supported: {', '.join(supported_model_types())}. To add it, register an adapter from a plugin: "
        "implement the hook `hfself_register_arch_adapters(register)` and call "
        f"`register({model_type!r}, hfself.arch.ArchAdapter(layers_path=..., attention=..., q_proj=..., k_proj=...))` "
        "(or qkv_proj=... with a layout for fused projections); see hfself/arch.py."
    )


def inspect_model(model: nn.Module) -> ArchInfo:
    """Find layers, attention and Q/K projections of any supported causal LM."""
    lm = unwrap_model(model)
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    model_type = config.model_type
    adapter = adapters().get(model_type)
    if adapter is None:
        raise _unsupported(model_type)
    layers = _get_path(lm, adapter.layers_path)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"model type {model_type!r}: expected the decoder layers at {adapter.layers_path!r} "
            f"on {type(lm).__name__}, found {type(layers).__name__}. Is this a causal LM (…ForCausalLM)?"
        )
    nh, nkv, hd = (adapter.heads or _heads_from_config)(config)
    layout = adapter.layout or (adapter.layout_for_config(config) if adapter.layout_for_config else None)

    infos = []
    for i, layer in enumerate(layers):
        attn = getattr(layer, adapter.attention)
        if adapter.qkv_proj:
            proj = getattr(attn, adapter.qkv_proj)
            q_index, k_index = layout(nh, nkv, hd)
            targets = [ProjectionTarget(proj, out_features_of(proj), q_index, k_index)]
            expected = nh * hd + 2 * nkv * hd
        else:
            q, k = getattr(attn, adapter.q_proj), getattr(attn, adapter.k_proj)
            targets = [ProjectionTarget(q, out_features_of(q), torch.arange(nh * hd), None),
                       ProjectionTarget(k, out_features_of(k), None, torch.arange(nkv * hd))]
            expected = None
            if targets[0].out_features != nh * hd or targets[1].out_features != nkv * hd:
                raise UnsupportedArchitectureError(
                    f"model type {model_type!r} layer {i}: q/k projections have {targets[0].out_features}/"
                    f"{targets[1].out_features} outputs, expected {nh * hd}/{nkv * hd} from the config "
                    f"(heads={nh}, kv_heads={nkv}, head_dim={hd})."
                )
        if expected is not None and targets[0].out_features != expected:
            raise UnsupportedArchitectureError(
                f"model type {model_type!r} layer {i}: fused projection has {targets[0].out_features} outputs, "
                f"expected {expected} (heads={nh}, kv_heads={nkv}, head_dim={hd})."
            )
        infos.append(LayerInfo(i, layer, attn, targets))

    return ArchInfo(model_type=model_type, hidden_size=config.hidden_size, num_layers=len(layers), num_heads=nh,
                    num_kv_heads=nkv, head_dim=hd,
                    positional=adapter.positional(config) if callable(adapter.positional) else adapter.positional,
                    fused_qkv=adapter.qkv_proj is not None, layers=infos)


def residual_of(layer_output) -> torch.Tensor:
    """The residual-stream tensor in a decoder layer's output (a tensor, or the first item of a tuple)."""
    return layer_output if isinstance(layer_output, torch.Tensor) else layer_output[0]


def with_residual(layer_output, hidden: torch.Tensor):
    """``layer_output`` with its residual-stream tensor replaced by ``hidden``."""
    if isinstance(layer_output, torch.Tensor):
        return hidden
    return (hidden, *layer_output[1:])
