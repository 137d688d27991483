"""Where attention lives inside any HuggingFace causal LM, found from the model's structure.

``inspect_model(model)`` returns an :class:`ArchInfo`: every decoder layer, and
for each one its self-attention module (or ``None`` for Mamba, linear-attention,
convolution and other token mixers that are not softmax attention), the
projections that produce Q and K, the layer's head counts, how positions enter
and the residual-stream hook point (the layer's output). Nothing is keyed by
``config.model_type``:

1. **Layers** are the ``nn.ModuleList`` of blocks inside the language model's
   decoder (``get_decoder()``), the one whose length is the text config's layer
   count.
2. **Attention** is found by one short forward pass with the attention kernel
   instrumented: every module that calls a transformers attention function
   (eager, sdpa, flash or flex) is a self-attention module, and the query, key
   and value it passes are recorded. Layers whose blocks call no kernel are not
   attention layers. Older modules that compute attention inline are found by
   class name (``*Attention``, not cross attention) instead.
3. **Q/K/V units are measured, not assumed.** On a float32 scratch copy of one
   attention module per kind of layer, every output unit of every projection
   in it is perturbed (one call each; a sample per head block on wide layers)
   and classified by what it moves:
   the query entering the kernel → Q, the key → K, the value → V, none of them
   (an output gate, o_proj) → not a target. A unit that also moves another
   projection's output (the low-rank ``q_a_proj`` feeding ``q_b_proj``) is
   upstream and not a target either. Modules without a kernel call are
   classified by their output: a Q unit moves only its own row, a K or V unit
   moves later rows, linearly for V and not for K.

   For DeepSeek-style MLA this gives: Q is biased at ``q_b_proj`` (or
   ``q_proj``); K at the per-head non-rotary key inside ``kv_b_proj`` (a
   constant there cancels in softmax, as any key bias does without RoPE) and at
   the shared rotary key ``k_pe`` inside ``kv_a_proj_with_mqa``, where RoPE
   makes it position dependent. The compressed latent (it feeds both K and V)
   is never biased. Only projections with one output vector per position are
   candidates (not relative-position tables or grouped output projections).
4. **What was measured is verified** (:func:`verify_targets`): every Q and K
   unit found is biased on the scratch copy, as the identity will be. The
   attention output must move and the value at the kernel must not, or the
   model is refused (zaya: Q and K mixed after the projections).

A small table of :class:`ArchAdapter` overrides (``hfself_register_arch_adapters``
from a plugin, or :func:`register_adapter`) still wins: it can name the layers,
the attention module and its projections, give a fused layout (which the
measurement must confirm, or it is an error) and mark layers as having no
attention::

    @hookimpl
    def hfself_register_arch_adapters(register):
        register("my_llm", ArchAdapter(layers_path="model.layers", attention="self_attn",
                                       q_proj="q_proj", k_proj="k_proj",
                                       has_attention=lambda i, layer: i % 4 == 3))
"""

from __future__ import annotations

import copy
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from hfself.sharding import gathered

# --------------------------------------------------------------------------- layouts
# A layout maps (num_heads, num_kv_heads, head_dim) to the output positions of
# flat Q and flat K inside one fused QKV projection (for adapters; discovery measures).

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
    """An override for one model type: where its layers, attention and projections are.

    Every field is optional; what is left out is discovered. ``q_proj``/``k_proj``
    name separate projections inside the attention module, ``qkv_proj`` a fused
    one with its ``layout`` (or ``layout_for_config``); a stated layout must agree
    with the measurement. ``has_attention(index, layer)`` marks layers that have
    no self-attention. ``heads`` overrides head counts (config -> (nh, nkv, hd)).
    """

    layers_path: str | None = None  # dotted path from the *ForCausalLM to the ModuleList of decoder layers
    attention: str | None = None  # dotted path inside a decoder layer to its self-attention module
    q_proj: str | None = None
    k_proj: str | None = None
    qkv_proj: str | None = None
    layout: Layout | None = None
    layout_for_config: Callable[[object], Layout] | None = None
    positional: str | Callable[[object], str] | None = None  # "rope" | "alibi" | "learned" | "none"
    heads: Callable[[object], tuple[int, int, int]] | None = None
    has_attention: Callable[[int, nn.Module], bool] | None = None

    def __post_init__(self):
        if (self.q_proj is None) != (self.k_proj is None):
            raise ValueError("ArchAdapter: give q_proj and k_proj together")
        if self.qkv_proj is not None and self.q_proj is not None:
            raise ValueError("ArchAdapter: give q_proj+k_proj or qkv_proj, not both")
        if self.qkv_proj is not None and (self.layout or self.layout_for_config) is None:
            raise ValueError("ArchAdapter: a fused qkv_proj needs its layout (or layout_for_config)")
        if not any((self.layers_path, self.attention, self.q_proj, self.qkv_proj, self.has_attention, self.heads)):
            raise ValueError("ArchAdapter overrides nothing: give layers_path, attention, projections or has_attention")


_BUILTIN: dict[str, ArchAdapter] = {}  # discovery covers the catalogue; overrides only
_registered: dict[str, ArchAdapter] = {}


def register_adapter(model_type: str, adapter: ArchAdapter) -> None:
    """Register an override in-process (plugins use the ``hfself_register_arch_adapters`` hook)."""
    _registered[model_type] = adapter


def adapters() -> dict[str, ArchAdapter]:
    """Every override: the built-in table, then plugins, then in-process registrations."""
    from hfself.plugins import registry

    return {**_BUILTIN, **registry("arch_adapters"), **_registered}


def supported_model_types() -> list[str]:
    """Model types with an explicit override (every other causal LM is discovered)."""
    return sorted(adapters())


class UnsupportedArchitectureError(ValueError):
    pass


_HOW_TO_REGISTER = (
    "To override discovery, register an adapter from a plugin: implement the hook "
    "`hfself_register_arch_adapters(register)` and call `register(model_type, hfself.arch.ArchAdapter("
    "layers_path=..., attention=..., q_proj=..., k_proj=...))` (or qkv_proj=... with a layout; "
    "has_attention=... marks layers without attention); see hfself/arch.py. `hfself arch MODEL` shows what "
    "discovery finds."
)

# --------------------------------------------------------------------------- results


@dataclass
class ProjectionTarget:
    """One projection module producing Q and/or K, and where they sit in its output."""

    module: nn.Module
    out_features: int
    q_index: torch.Tensor | None  # output positions that feed the query, or None
    k_index: torch.Tensor | None  # output positions that feed the key, or None
    v_index: torch.Tensor | None = None  # output positions that feed the value (known when measured)
    name: str = ""  # path inside the attention module
    how: str = ""  # how the layout was established

    @property
    def is_identity_q(self) -> bool:
        """True when the whole output is Q, in order (a separate q_proj)."""
        return (self.k_index is None and self.q_index is not None and len(self.q_index) == self.out_features
                and torch.equal(self.q_index, torch.arange(self.out_features)))


@dataclass
class LayerInfo:
    index: int
    layer: nn.Module  # the decoder layer; its output is the residual stream after the layer
    attention: nn.Module | None  # None: this layer mixes tokens without softmax attention (Mamba, linear, conv)
    targets: list[ProjectionTarget]
    num_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    kind: str = ""  # attention class, or why the layer has none

    @property
    def has_attention(self) -> bool:
        return self.attention is not None

    @property
    def q_width(self) -> int:
        return sum(len(t.q_index) for t in self.targets if t.q_index is not None)

    @property
    def k_width(self) -> int:
        return sum(len(t.k_index) for t in self.targets if t.k_index is not None)


@dataclass
class ArchInfo:
    model_type: str
    hidden_size: int
    num_layers: int  # all decoder layers, with attention or not
    num_heads: int  # of the first attention layer (see LayerInfo for per-layer counts)
    num_kv_heads: int
    head_dim: int
    positional: str  # "rope" | "alibi" | "learned" | "none"
    fused_qkv: bool  # some projection feeds more than one of Q, K, V
    layers: list[LayerInfo] = field(repr=False)
    source: str = "discovered"  # "discovered" or "adapter <model_type>"
    # what the last decoder layer output on the (1, T) probe: (1, T, hidden_size), or several residual streams
    residual_shape: tuple | None = None

    def require_one_residual_stream(self, plugin: str, lm: nn.Module) -> None:
        """Refuse ``lm``, naming its type, where its layers pass several residual streams (hyper-connections,
        Gemma-3n's AltUp): ``plugin`` reads or edits one (B, T, hidden_size) residual."""
        shape = self.residual_shape
        if shape is not None and (len(shape) != 3 or shape[0] != 1 or shape[-1] != self.hidden_size):
            raise UnsupportedArchitectureError(
                f"{named_type(lm)}: its decoder layers output a {list(shape)} tensor for one sequence, not "
                f"(1, positions, hidden_size={self.hidden_size}) (several residual streams, e.g. "
                f"hyper-connections or AltUp); {plugin} reads one residual stream, so it does not support this "
                f"model. {_HOW_TO_REGISTER}")

    @property
    def attention_layers(self) -> list[LayerInfo]:
        return [layer for layer in self.layers if layer.has_attention]

    @property
    def q_dim(self) -> int:
        """The widest Q bias any attention layer takes."""
        return max(layer.q_width for layer in self.attention_layers)

    @property
    def k_dim(self) -> int:
        return max(layer.k_width for layer in self.attention_layers)

    def describe(self) -> dict:
        """A JSON-able report: what was found per layer and how each layout was established."""
        rows = []
        for layer in self.layers:
            row = {"layer": layer.index, "kind": layer.kind}
            if layer.has_attention:
                row.update(heads=layer.num_heads, kv_heads=layer.num_kv_heads, head_dim=layer.head_dim,
                           projections=[{"name": t.name, "out_features": t.out_features,
                                         "q": 0 if t.q_index is None else len(t.q_index),
                                         "k": 0 if t.k_index is None else len(t.k_index),
                                         "v": 0 if t.v_index is None else len(t.v_index), "how": t.how}
                                        for t in layer.targets])
            rows.append(row)
        return {"model_type": self.model_type, "source": self.source, "hidden_size": self.hidden_size,
                "layers": self.num_layers, "attention_layers": len(self.attention_layers),
                "positional": self.positional, "fused_qkv": self.fused_qkv, "per_layer": rows}


# --------------------------------------------------------------------------- small helpers


def is_peft_model(model: nn.Module) -> bool:
    """True for peft wrappers (PeftModel and its task subclasses)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


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


def text_config(model: nn.Module):
    config = unwrap_model(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def config_value(config, key: str, default=None):
    """``getattr(config, key, default)``; ``default`` where the value is set per layer (transformers'
    heterogeneous configs refuse to give one value for the whole model)."""
    try:
        return getattr(config, key, default)
    except RuntimeError:  # AmbiguousGlobalPerLayerAttributeError (dots3's per_layer_config)
        return default


def _get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_projection(module: nn.Module) -> bool:
    """A module that maps the last axis linearly: Linear, Conv1D, or a peft/quantized wrapper of one."""
    base = projection_base_layer(module)
    weight = getattr(base, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 2 and (hasattr(base, "out_features") or hasattr(base, "nf"))


def _projections(attention: nn.Module) -> dict[str, nn.Module]:
    """Name -> projection inside an attention module (the LoRA wrapper, not its base_layer or A/B)."""
    found = {}
    for name, module in attention.named_modules():
        if not name or any(part.startswith("lora_") or part == "base_layer" for part in name.split(".")):
            continue
        if _is_projection(module) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found


def residual_of(layer_output) -> torch.Tensor:
    """The residual-stream tensor in a decoder layer's output (a tensor, or the first item of a tuple)."""
    return layer_output if isinstance(layer_output, torch.Tensor) else layer_output[0]


def with_residual(layer_output, hidden: torch.Tensor):
    """``layer_output`` with its residual-stream tensor replaced by ``hidden``."""
    if isinstance(layer_output, torch.Tensor):
        return hidden
    return (hidden, *layer_output[1:])


# --------------------------------------------------------------------------- finding layers

_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers")


def _decoder(lm: nn.Module) -> nn.Module:
    get = getattr(lm, "get_decoder", None)
    try:
        decoder = get() if callable(get) else None
    except Exception:  # some models raise for get_decoder
        decoder = None
    return decoder if isinstance(decoder, nn.Module) else getattr(lm, "base_model", lm)


def find_layers(lm: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder's ModuleList of blocks: the one whose length is the configured layer count."""
    config = text_config(lm)
    wanted = next((getattr(config, k) for k in _LAYER_COUNT_KEYS if isinstance(getattr(config, k, None), int)), None)
    lists = []
    for decoder in dict.fromkeys((_decoder(lm), getattr(lm, "base_model", lm), lm)):  # get_decoder() may be a head
        prefix = next((n for n, m in lm.named_modules() if m is decoder), "")
        lists = [(name, module) for name, module in decoder.named_modules()
                 if isinstance(module, nn.ModuleList) and len(module) > 0
                 and all(len(list(block.children())) > 0 for block in module)
                 and any(_is_projection(m) for m in module[0].modules())]
        if lists:
            break
    if not lists:
        raise UnsupportedArchitectureError(
            f"{type(lm).__name__}: found no list of decoder blocks (an nn.ModuleList of layers holding linear "
            f"projections) in {type(decoder).__name__}. Is this a causal LM (…ForCausalLM)? {_HOW_TO_REGISTER}")
    exact = [item for item in lists if len(item[1]) == wanted]
    name, layers = min(exact, key=lambda item: item[0].count(".")) if exact else \
        max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    return ".".join(p for p in (prefix, name) if p), layers


# --------------------------------------------------------------------------- observing the kernel


KERNEL = "<attention kernel>"


class _Recorder:
    """Collects the query/key/value each attention module hands to the attention kernel.

    ``events`` (shared with projection hooks) keeps the call order, so a
    projection that runs after the kernel (an output projection) is known.
    """

    def __init__(self, replace: bool = False, events: list | None = None):
        self.calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.replace = replace  # True: compute a plain softmax attention instead of the model's kernel
        self.events = events if events is not None else []

    def wrap(self, function: Callable) -> Callable:
        def recording_attention(module, query, key, value, *args, **kwargs):
            self.calls.append((module, query.detach(), key.detach(), value.detach()))
            self.events.append(KERNEL)
            if not self.replace:
                return function(module, query, key, value, *args, **kwargs)
            return _plain_attention(query, key, value), None

        return recording_attention


def _plain_attention(query, key, value) -> torch.Tensor:
    """(B, H, T, D) query, (B, Hkv, T, D) key/value -> (B, T, H, Dv), causal softmax attention."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    d = min(query.shape[-1], key.shape[-1])
    scores = query[..., :d] @ key[..., :d].transpose(-1, -2) / math.sqrt(d)
    t_q, t_k = scores.shape[-2:]
    causal = torch.ones(t_q, t_k, dtype=torch.bool, device=scores.device).tril(t_k - t_q)
    return (scores.masked_fill(~causal, float("-inf")).softmax(-1) @ value).transpose(1, 2).contiguous()


@contextmanager
def _instrumented_kernels(recorder: _Recorder):
    """Route every ``AttentionInterface.get_interface`` lookup through ``recorder`` (process-wide, briefly)."""
    from transformers.modeling_utils import AttentionInterface

    original = AttentionInterface.get_interface

    def get_interface(self, attn_implementation, default):
        return recorder.wrap(original(self, attn_implementation, default))

    AttentionInterface.get_interface = get_interface
    try:
        yield recorder
    finally:
        AttentionInterface.get_interface = original


class _Stop(Exception):
    pass


def _stop_forward(*_):
    raise _Stop


def model_type_of(lm: nn.Module) -> str:
    """The (text) config's ``model_type``, or the class name where it has none."""
    return getattr(text_config(lm), "model_type", "") or type(lm).__name__


def named_type(lm: nn.Module) -> str:
    """The model's type for a message: ``'gemma4_assistant'`` or ``'gemma4_assistant' (text model 'gemma4_text')``."""
    outer = getattr(getattr(unwrap_model(lm), "config", None), "model_type", "") or type(lm).__name__
    inner = model_type_of(lm)
    return f"{outer!r}" if inner == outer else f"{outer!r} (text model {inner!r})"


def base_forward(lm: nn.Module, use_cache: bool = False, **inputs):
    """``lm(**inputs, use_cache=use_cache)``; a model that cannot run from token ids alone (a draft model needing
    its target's states, say) is an :class:`UnsupportedArchitectureError` naming the type, not a crash."""
    try:
        return lm(**inputs, use_cache=use_cache)
    except (_Stop, UnsupportedArchitectureError):
        raise
    except Exception as err:
        raise UnsupportedArchitectureError(
            f"{named_type(lm)}: {type(lm).__name__} does not run a forward pass from input_ids alone "
            f"({type(err).__name__}: {str(err)[:200]}): the model itself fails, before hfself changes anything, so "
            "it cannot be conditioned. Check its config (or the inputs it needs beyond token ids).") from err


@contextmanager
def refused_on_failure(lm: nn.Module, doing: str):
    """Turn a failure inside ``doing`` (measuring, verifying) into an :class:`UnsupportedArchitectureError` that
    names the type and the error: a model hfself cannot handle is refused, never a crash halfway."""
    try:
        yield
    except Exception as err:
        if isinstance(err, _Stop) or type(err).__module__.startswith("hfself"):
            raise  # hfself's own errors already say what is wrong (a refusal, personas stacking)
        raise UnsupportedArchitectureError(
            f"{named_type(lm)}: hfself failed while {doing} {type(lm).__name__} ({type(err).__name__}: "
            f"{str(err)[:200]}), so it is not supported as it is. {_HOW_TO_REGISTER}") from err


def _probe_ids(lm: nn.Module, length: int) -> torch.Tensor:
    config = text_config(lm)
    vocab = getattr(config, "vocab_size", None) or 256
    device = next((p.device for p in lm.parameters()), torch.device("cpu"))
    return (torch.arange(length, device=device) * 7 + 3).remainder(max(vocab - 1, 2)).unsqueeze(0) + 1


def _capture(lm: nn.Module, layers: nn.ModuleList, length: int = 8):
    """One no-grad forward: the inputs of every candidate module in the layers, the kernel calls, and the shape of
    the last layer's residual output."""
    captured: dict[int, tuple[tuple, dict]] = {}
    handles = []
    for layer in layers:
        for module in layer.modules():
            if module is not layer and len(_projections(module)) >= 1 and not _is_projection(module):
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, kwargs: captured.setdefault(id(m), (args, kwargs)) and None, with_kwargs=True))
    last, residual_shapes = layers[len(layers) - 1], []

    def record_residual_and_stop(module, args, output):
        residual_shapes.append(tuple(residual_of(output).shape))
        _stop_forward()

    handles.append(last.register_forward_hook(record_residual_and_stop))
    recorder = _Recorder()
    try:
        with torch.no_grad(), _instrumented_kernels(recorder):
            base_forward(lm, input_ids=_probe_ids(lm, length))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured, recorder.calls, (residual_shapes[0] if residual_shapes else None)


# --------------------------------------------------------------------------- measuring Q/K/V units


class LayoutError(UnsupportedArchitectureError):
    pass


def _to_scratch(value):
    """A captured argument on CPU, floating tensors in float32."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", copy=True)
        if value.is_floating_point():
            value = value.float()
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_scratch(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_scratch(v) for k, v in value.items()}
    return value


# What a decoder layer's KV cache argument is called: ``cache`` since transformers 5.24, earlier names before.
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


def cache_argument(kwargs: dict):
    """The KV cache passed to a decoder layer (a ``transformers.Cache``), or None."""
    return next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)


def _scratch_inputs(inputs: tuple[tuple, dict]) -> tuple[tuple, dict]:
    """Captured (args, kwargs) on CPU in float32, without a cache, the hidden states at unit scale at least."""
    args, kwargs = _to_scratch(inputs[0]), _to_scratch(inputs[1])
    kwargs = {k: v for k, v in kwargs.items() if k not in CACHE_KWARGS}
    hidden = next(a for a in _tensors(args, kwargs) if a.dim() == 3)
    rms = hidden.pow(2).mean().sqrt()
    if 0 < rms < 0.5:  # un-normalized tiny inputs (post-LN blocks at init) hide the softmax: measure at unit scale
        hidden.mul_(1 / rms)
    return args, kwargs


def _scratch_module(attention: nn.Module) -> nn.Module:
    """A float32 CPU copy of one attention module: the measurement never touches the model itself."""
    scratch = copy.deepcopy(attention)
    return scratch.to("cpu", torch.float32).eval()


def _units_to_test(width: int, block: int) -> torch.Tensor:
    if width <= 2048 or block <= 2:
        return torch.arange(width)
    starts = torch.arange(0, width, block)
    return torch.cat([starts, (starts + block // 2).clamp(max=width - 1), (starts + block - 1).clamp(max=width - 1)]
                     ).unique()


def measure_layout(attention: nn.Module, inputs: tuple[tuple, dict], via_kernel: bool
                   ) -> dict[str, dict[str, torch.Tensor]]:
    """Classify every output unit of the attention module's projections as Q, K, V or none.

    Returns ``{projection name: {"q": units, "k": units, "v": units}}`` for the
    projections with a Q or K unit. See the module docstring for the method.
    """
    scratch = _scratch_module(attention)
    args, kwargs = _scratch_inputs(inputs)
    block = _head_block(scratch, args, kwargs, via_kernel)
    result = {}
    for name in _projections(scratch):
        observed = _classify_units(scratch, name, block, args, kwargs, via_kernel)
        if observed is not None:
            result[name] = observed
    return result


def _classify_units(scratch, name, block, args, kwargs, via_kernel):
    """Perturb each tested unit of projection ``name`` (one call each) and see what moves.

    Through the kernel every position of the unit is perturbed; at the output
    only position ``pos`` is, once by delta and once by 2 delta (linearity).
    """
    projections = _projections(scratch)
    width = out_features_of(projections[name])
    units = _units_to_test(width, block)
    length = next(a for a in _tensors(args, kwargs) if a.dim() == 3).shape[1]
    pos, last = 1, length - 1  # K/V: early, so several later rows see it; Q: last, so it sees many keys
    perturbation: list = [None]  # (unit, scale, position) or None for the unperturbed call

    def perturb(module, inputs, output):
        if perturbation[0] is None:
            return output
        unit, scale, at = perturbation[0]
        output = output.clone()
        output[..., at, unit] += scale
        return output

    def call(unit=None, scale=4.0, at=slice(None)):
        """One forward: (q, k, v at the kernel or None, output, outputs of projections run before the kernel)."""
        perturbation[0] = None if unit is None else (unit, scale, at)
        events, seen = [], {}
        hooks = [(projections[name], perturb)]
        hooks += [(p, lambda m, i, o, key=key: (seen.setdefault(key, o.detach()), events.append(key)) and None)
                  for key, p in projections.items() if key != name]
        recorder = _Recorder(replace=True, events=events)
        out = _run_scratch(scratch, args, kwargs, hooks, recorder)
        before_kernel = events[:events.index(KERNEL)] if KERNEL in events else []
        return (recorder.calls[0][1:] if recorder.calls else None), out, {k: seen[k] for k in before_kernel}

    shapes = []
    probe = projections[name].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)) and None)
    try:
        base_qkv, base_out, base_before = call()
    finally:
        probe.remove()
    if any(len(s) < 2 or s[-2:] != (length, width) for s in shapes):
        return None  # not a per-position projection of this sequence (relative-position tables, grouped outputs)
    if via_kernel and base_qkv is None:
        return None
    if not via_kernel and not (isinstance(base_out, torch.Tensor) and base_out.dim() == 3):
        return None

    def kind_of(unit: int) -> str | None:
        """"q", "k", "v", or None (output side, or upstream of another projection)."""
        qkv, out, before = call(unit, at=slice(None) if via_kernel else pos)
        if any(_differs(before[k], base_before[k]) for k in base_before if k in before):
            return None  # upstream of another projection (q_a_proj feeding q_b_proj): not a target
        if via_kernel:
            hit = [kind for kind, a, b in zip("qkv", qkv, base_qkv) if _differs(a, b)]
            return hit[0] if len(hit) == 1 else None
        moved = (out - base_out).abs().amax(-1)[0] > 1e-5 * (1 + base_out.abs().amax())  # (T,)
        if moved[:pos].any():
            raise LayoutError(f"{type(scratch).__name__}: perturbing position {pos} of {name} moved earlier "
                              "positions: this attention is not causal")
        if moved[pos + 1:].any():  # later rows moved: a value unit acts linearly, a key unit through the softmax
            return "v" if _linear(call, unit, pos, out, base_out) else "k"
        _, out, _ = call(unit, at=last)
        if _differs(out, base_out) and not _linear(call, unit, last, out, base_out):
            # only its own row, through a non-linearity. A softmax query unit leaves the first row alone
            # (it attends to itself only); a gate (RWKV's receptance) moves it.
            return "q" if not _differs(call(unit, at=0)[1], base_out) else None
        return None  # only its own row, linearly: the output side (o_proj, dense), not a target

    label = {unit: kind_of(unit) for unit in units.tolist()}
    if len(units) < width:  # blocks were sampled: a block whose samples agree takes their role, else all are measured
        for start in range(0, width, block):
            block_units = range(start, min(start + block, width))
            roles = {label[u] for u in block_units if u in label}
            for u in block_units:
                if u not in label:
                    label[u] = next(iter(roles)) if len(roles) == 1 else kind_of(u)
    kinds = {kind: sorted(u for u, k in label.items() if k == kind) for kind in "qkv"}
    if not kinds["q"] and not kinds["k"]:
        return None
    return {kind: torch.tensor(v, dtype=torch.long) for kind, v in kinds.items()}


def verify_targets(attention: nn.Module, inputs: tuple[tuple, dict], targets: list[ProjectionTarget],
                   via_kernel: bool, where: str) -> None:
    """Bias every Q and K unit found, on a scratch copy, the way the identity will; refuse what that breaks.

    The attention output must move (a key that is zero at init, or Q/K mixed
    after the projections, can make a measured unit a dead end), and the value
    at the kernel must not.
    """
    scratch = _scratch_module(attention)
    by_name = _projections(scratch)
    args, kwargs = _scratch_inputs(inputs)
    generator = torch.Generator().manual_seed(0)
    biases = {}
    for t in targets:
        bias = torch.zeros(t.out_features)
        for index in (t.q_index, t.k_index):
            if index is not None:
                bias[index] = torch.randn(len(index), generator=generator)
        biases[t.name] = bias

    def run(biased: bool):
        hooks = [(by_name[n], lambda m, i, o, b=b: o + b.to(o.dtype)) for n, b in biases.items()] if biased else []
        recorder = _Recorder(replace=True)
        out = _run_scratch(scratch, args, kwargs, hooks, recorder)
        return out, (recorder.calls[0][3] if recorder.calls else None)

    plain_out, plain_v = run(False)
    out, v = run(True)
    names = ", ".join(t.name for t in targets)
    if not _differs(out, plain_out):
        raise LayoutError(f"{where}: biasing the query/key units found in {type(attention).__name__} ({names}) does "
                          "not change its attention output (keys that are constant at this point, or Q and K mixed "
                          f"after the projections), so an identity there would do nothing. {_HOW_TO_REGISTER}")
    if via_kernel and plain_v is not None and _differs(v, plain_v):
        raise LayoutError(f"{where}: biasing the query/key units found in {type(attention).__name__} ({names}) moves "
                          f"the value it attends over, so they are not pure Q/K units. {_HOW_TO_REGISTER}")


def _run_scratch(scratch: nn.Module, args, kwargs, hooks: list, recorder: _Recorder):
    """One no-grad forward of the scratch module with ``(module, forward hook)`` pairs on and the attention
    kernel going through ``recorder``; the module's first output."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad(), _instrumented_kernels(recorder):
            out = scratch(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out[0] if isinstance(out, (tuple, list)) else out


def _linear(call, unit, at, out, base_out) -> bool:
    """Does doubling the perturbation double the output change?"""
    _, out2, _ = call(unit, scale=8.0, at=at)
    d1, d2 = out - base_out, out2 - base_out
    return bool((d2 - 2 * d1).abs().amax() <= 1e-3 * (d2.abs().amax() + 1e-12))


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or bool((a - b).abs().amax() > 1e-5 * (1 + b.abs().amax()))


def _tensors(args, kwargs):
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            yield value


def _head_block(scratch, args, kwargs, via_kernel) -> int:
    """The size of the unit blocks that share a class: the head size seen at the kernel (or the config's)."""
    if via_kernel:
        recorder = _Recorder(replace=True)
        with torch.no_grad(), _instrumented_kernels(recorder):
            scratch(*args, **kwargs)
        if recorder.calls:
            _, q, k, v = recorder.calls[0]
            return math.gcd(q.shape[-1], k.shape[-1], v.shape[-1])
    config = getattr(scratch, "config", None)
    head_dim = config_value(config, "head_dim") if config is not None else None
    return head_dim or 64


# --------------------------------------------------------------------------- inspection

_CROSS = re.compile(r"(cross|encoder_attn|crossattention)", re.I)


def _inline_attention(layer: nn.Module) -> tuple[str, nn.Module] | None:
    """For modules that compute attention inline: the innermost ``*Attention`` module that is not cross attention."""
    found = [(name, m) for name, m in layer.named_modules()
             if name and "attention" in type(m).__name__.lower() and not _CROSS.search(name + type(m).__name__)
             and len(_projections(m)) >= 2]
    if not found:
        return None
    return max(found, key=lambda item: item[0].count("."))


def _positional(lm: nn.Module, kwargs: dict, config) -> str:
    rope_keys = [k for k, v in config.to_dict().items() if ("rope" in k or "rotary" in k) and v]
    if kwargs.get("position_embeddings") is not None or rope_keys or any("rotary" in type(m).__name__.lower()
                                                                         for m in lm.modules()):
        return "rope"
    if getattr(config, "alibi", False) or "alibi" in kwargs or any("alibi" in n for n in _flat_keys(config)):
        return "alibi"
    if any(isinstance(m, nn.Embedding) and re.search(r"(pos|wpe)", n) for n, m in lm.named_modules()):
        return "learned"
    return "none"


def _flat_keys(config) -> list[str]:
    values = config.to_dict()
    keys = [k for k, v in values.items() if v is True]
    for v in values.values():
        if isinstance(v, dict):
            keys += [k for k, x in v.items() if x is True]
    return keys


def _signature(attention: nn.Module) -> tuple:
    return (type(attention).__name__, tuple((n, out_features_of(p)) for n, p in _projections(attention).items()))


def inspect_model(model: nn.Module) -> ArchInfo:
    """Find layers, attention and Q/K projections of any causal LM (see the module docstring)."""
    with gathered(model):  # weights that ZeRO-3 partitioned at load are whole while discovery runs the model
        return _inspect_model(unwrap_model(model))


def _inspect_model(lm: nn.Module) -> ArchInfo:
    config = text_config(lm)
    model_type = model_type_of(lm)
    adapter = adapters().get(model_type) or adapters().get(getattr(lm.config, "model_type", ""))
    if adapter is not None and adapter.layers_path:
        layers = _get_path(lm, adapter.layers_path)
        if not isinstance(layers, nn.ModuleList):
            raise UnsupportedArchitectureError(
                f"adapter for {model_type!r}: expected the decoder layers at {adapter.layers_path!r} on "
                f"{type(lm).__name__}, found {type(layers).__name__}.")
    else:
        _, layers = find_layers(lm)

    captured, calls, residual_shape = _capture(lm, layers)
    called = {}
    for module, q, k, v in calls:
        called.setdefault(id(module), (module, q, k, v))
    layer_of = {}
    for i, layer in enumerate(layers):
        for module in layer.modules():
            layer_of.setdefault(id(module), i)

    infos, measured, fused, positional = [], {}, False, None
    for i, layer in enumerate(layers):
        attention, name = _attention_of(layer, i, adapter, called)
        if attention is None:
            infos.append(LayerInfo(i, layer, None, [], kind=name))
            continue
        inputs = captured.get(id(attention))
        if inputs is None:
            raise UnsupportedArchitectureError(f"{model_type!r} layer {i}: attention module {name!r} did not run "
                                               f"in a forward pass. {_HOW_TO_REGISTER}")
        positional = positional or _positional(lm, inputs[1], config)
        via_kernel = id(attention) in called
        sig = _signature(attention) + (via_kernel,)
        fresh = sig not in measured
        if fresh:
            try:
                measured[sig] = measure_layout(attention, inputs, via_kernel)
            except LayoutError as err:
                raise LayoutError(f"{model_type!r} layer {i}: {err} {_HOW_TO_REGISTER}") from None
            except Exception as err:  # a module that does not run alone on its captured inputs
                raise LayoutError(f"{model_type!r} layer {i}: measuring the Q/K/V units of "
                                  f"{type(attention).__name__} failed ({type(err).__name__}: {str(err)[:200]}). "
                                  f"{_HOW_TO_REGISTER}") from err
        layout = measured[sig]
        projections = _projections(attention)
        targets = _targets(projections, layout, adapter, config, model_type, i, via_kernel)
        if not via_kernel and adapter is None and not (any(t.q_index is not None for t in targets)
                                                       and any(t.k_index is not None for t in targets)):
            # no softmax query/key pair measured: a recurrent or linear mixer named "...Attention" (RWKV)
            infos.append(LayerInfo(i, layer, None, [], kind=f"no attention ({type(attention).__name__}: "
                                                            "no softmax query and key measured)"))
            continue
        if not targets:
            raise UnsupportedArchitectureError(
                f"{model_type!r} layer {i}: no projection in {type(attention).__name__} feeds the query or key "
                f"alone. {_HOW_TO_REGISTER}")
        if fresh and adapter is None:
            verify_targets(attention, inputs, targets, via_kernel, f"{model_type!r} layer {i}")
        fused |= any(sum(x is not None for x in (t.q_index, t.k_index, t.v_index)) > 1 for t in targets)
        nh, nkv, hd = _heads(attention, called, config, adapter, targets)
        infos.append(LayerInfo(i, layer, attention, targets, nh, nkv, hd, kind=type(attention).__name__))

    attention_layers = [info for info in infos if info.has_attention]
    if not attention_layers:
        raise UnsupportedArchitectureError(
            f"{type(lm).__name__} ({model_type!r}) has no self-attention in any of its {len(layers)} layers "
            "(a state-space, recurrent or linear-attention model such as Mamba, RWKV or xLSTM): hfself conditions "
            f"softmax attention, so it cannot take part. {_HOW_TO_REGISTER}")
    first = attention_layers[0]
    if adapter is not None and adapter.positional is not None:
        positional = adapter.positional(config) if callable(adapter.positional) else adapter.positional
    hidden = next(getattr(config, k) for k in ("hidden_size", "n_embd", "d_model", "dim")
                  if isinstance(getattr(config, k, None), int))
    return ArchInfo(model_type=model_type, hidden_size=hidden, num_layers=len(layers), num_heads=first.num_heads,
                    num_kv_heads=first.num_kv_heads, head_dim=first.head_dim, positional=positional or "none",
                    fused_qkv=fused, layers=infos,
                    source=f"adapter {model_type}" if adapter is not None else "discovered",
                    residual_shape=residual_shape)


def _attention_of(layer: nn.Module, index: int, adapter: ArchAdapter | None, called: dict):
    """(attention module, its name) of one decoder layer, or (None, why there is none)."""
    if adapter is not None and adapter.has_attention is not None and not adapter.has_attention(index, layer):
        return None, "no attention (adapter)"
    if adapter is not None and adapter.attention:
        module = _get_path(layer, adapter.attention)
        if module is None:
            raise UnsupportedArchitectureError(f"adapter: layer {index} has no {adapter.attention!r}")
        return module, adapter.attention
    in_layer = [(name, m) for name, m in layer.named_modules() if id(m) in called and not _CROSS.search(name)]
    # a module that calls the kernel over something other than tokens has no Q/K projections of its own
    # (Inkling-2's attention over earlier blocks' residuals): the token attention is the one with projections
    in_layer.sort(key=lambda item: len(_projections(item[1])) < 2)
    if in_layer:
        return in_layer[0][1], in_layer[0][0]
    if called:  # this model's attention calls the kernel; this layer's token mixer does not
        mixer = next((type(m).__name__ for n, m in layer.named_children() if _projections(m)), "none")
        return None, f"no attention ({mixer})"
    found = _inline_attention(layer)
    if found is None:
        return None, "no attention"
    return found[1], found[0]


def _targets(projections, layout, adapter, config, model_type, index, via_kernel) -> list[ProjectionTarget]:
    how = "measured at the attention kernel" if via_kernel else "measured at the attention output"
    targets = []
    if adapter is not None and (adapter.q_proj or adapter.qkv_proj):
        names = [adapter.qkv_proj] if adapter.qkv_proj else [adapter.q_proj, adapter.k_proj]
        for n in names:
            if n not in projections:
                raise UnsupportedArchitectureError(f"adapter for {model_type!r}: layer {index} has no "
                                                   f"projection {n!r}; it has {sorted(projections)}")
        if adapter.qkv_proj:
            nh, nkv, hd = (adapter.heads or _config_heads)(config)
            fn = adapter.layout or adapter.layout_for_config(config)
            q, k = fn(nh, nkv, hd)
            found = layout.get(adapter.qkv_proj)
            if found is not None and not (_same(q, found["q"]) and _same(k, found["k"])):
                raise LayoutError(
                    f"adapter for {model_type!r}: the layout it states for {adapter.qkv_proj!r} (Q {len(q)} units, "
                    f"K {len(k)}) is contradicted by the measurement (Q {len(found['q'])}, K {len(found['k'])}).")
            proj = projections[adapter.qkv_proj]
            v = found["v"] if found is not None else None
            return [ProjectionTarget(proj, out_features_of(proj), q, k, v, adapter.qkv_proj,
                                     "adapter layout, confirmed by measurement" if found else "adapter layout")]
        for n, kind in ((adapter.q_proj, "q"), (adapter.k_proj, "k")):
            proj = projections[n]
            width = out_features_of(proj)
            idx = torch.arange(width)
            found = layout.get(n)
            if found is not None and not _same(idx, found[kind]):
                raise LayoutError(f"adapter for {model_type!r}: {n!r} does not feed the {kind.upper()} alone "
                                  f"(measured {len(found[kind])} of {width} units)")
            targets.append(ProjectionTarget(proj, width, idx if kind == "q" else None, idx if kind == "k" else None,
                                            None, n, "adapter"))
        return targets
    for name, proj in projections.items():
        found = layout.get(name)
        if found is None:
            continue
        targets.append(ProjectionTarget(proj, out_features_of(proj), *(found[k] if len(found[k]) else None
                                                                        for k in "qkv"), name, how))
    return [t for t in targets if t.q_index is not None or t.k_index is not None]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return len(a) == len(b) and torch.equal(a.sort().values, b.sort().values)


def _config_heads(config) -> tuple[int, int, int]:
    nh = config_value(config, "num_attention_heads") or config_value(config, "n_head")
    nkv = config_value(config, "num_key_value_heads") or nh
    hd = config_value(config, "head_dim") or config_value(config, "hidden_size") // nh
    return nh, nkv, hd


def _heads(attention, called, config, adapter, targets) -> tuple[int, int, int]:
    if adapter is not None and adapter.heads is not None:
        return adapter.heads(config)
    if id(attention) in called:
        _, q, k, _ = called[id(attention)]
        return q.shape[1], k.shape[1], q.shape[-1]
    nh = getattr(attention, "num_heads", None) or getattr(attention, "num_attention_heads", None)
    hd = getattr(attention, "head_dim", None) or getattr(attention, "attention_head_size", None)
    try:
        c_nh, c_nkv, c_hd = _config_heads(config)
    except (AttributeError, TypeError, ZeroDivisionError):
        c_nh = c_nkv = c_hd = 0
    nh, hd = nh or c_nh, hd or c_hd
    q_width = sum(len(t.q_index) for t in targets if t.q_index is not None)
    k_width = sum(len(t.k_index) for t in targets if t.k_index is not None)
    if hd:
        nh, nkv = q_width // hd or nh, k_width // hd or c_nkv
    else:
        nkv = c_nkv
    return int(nh or 0), int(nkv or 0), int(hd or 0)
