"""Putting the identity biases into the attention projections of any causal LM.

Two ways, same numbers:

* **hooks** (training, any forward with grad): a pre-hook on the LM computes
  all layers' biases once per forward (one einsum, one scatter for fused QKV);
  a forward hook on each Q/K projection adds its slice: one add per projection.
* **folded** (generation): the biases are added into the projections' own bias
  parameters for the duration of ``generate``; each decoding step then costs
  nothing extra. Projections that are not plain Linear/Conv1D keep the hooks.
* **exported** (:func:`fold_into_plain_model`): the same, for good, in a plain
  transformers model whose config says its attention has biases.

The bias is added to the projection *output*, i.e. before rotary embeddings,
for separate and fused QKV alike (positions come from :mod:`hfself.arch`).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.pytorch_utils import Conv1D

from hfself.arch import (_HOW_TO_REGISTER, CACHE_KWARGS, ArchInfo, LayoutError, UnsupportedArchitectureError,
                         _instrumented_kernels, _probe_ids, _Recorder, base_forward, model_type_of,
                         projection_base_layer, unwrap_model)
from hfself.sharding import is_sharded

from .block import IdentityBlock


_OWNER = "_hfself_identity_injector"  # set on the backbone while an injector's hooks are on it


class IdentityStackingError(ValueError):
    """A second identity was put on a base model that already carries one."""


class _Target:
    """One projection: which bias entries go to which of its outputs."""

    def __init__(self, module: nn.Module, out_features: int, row: int, src: torch.Tensor, dst: torch.Tensor | None):
        self.module = module
        self.out_features = out_features
        self.row = row  # row of the block's (L, q_width + k_width) bias matrix
        self.src = src  # positions in that row
        self.dst = dst  # positions in the projection output; None: the whole output, in order


class _BiasHook:
    """Forward hook of target ``i``: adds its identity bias. An object, not a closure, so that ``copy.deepcopy`` of
    a persona (TRL's reference model) gives hooks that call the copy's injector."""

    def __init__(self, injector: "IdentityInjector", i: int):
        self.injector, self.i = injector, i

    def __call__(self, module, inputs, output):
        return self.injector._add_bias(self.i, output)


class IdentityInjector:
    """Owns every hook that conditions a model on an :class:`IdentityBlock`."""

    def __init__(self, model: nn.Module, block: IdentityBlock, arch: ArchInfo):
        self.model, self.block = model, block
        self.targets: list[_Target] = []
        for row, layer_id in enumerate(block.layer_ids):
            q_used = k_used = 0  # a layer's Q (K) units, over its projections, take consecutive bias entries
            for t in arch.layers[layer_id].targets:
                src, dst = [], []
                if block.q_width and t.q_index is not None:
                    src.append(q_used + torch.arange(len(t.q_index)))
                    dst.append(t.q_index)
                    q_used += len(t.q_index)
                if block.k_width and t.k_index is not None:
                    src.append(block.q_width + k_used + torch.arange(len(t.k_index)))
                    dst.append(t.k_index)
                    k_used += len(t.k_index)
                if not src:
                    continue
                src, dst = torch.cat(src), torch.cat(dst)
                whole = len(dst) == t.out_features and torch.equal(dst, torch.arange(t.out_features))
                self.targets.append(_Target(t.module, t.out_features, row, src, None if whole else dst))
        self._handles: list = []
        self._deltas: list[torch.Tensor] | None = None
        self._cache_key = None
        self._folded = False
        self._grad_forward = self._reentrant = False  # see current_deltas

    # ------------------------------------------------------------------ biases

    def compute_deltas(self, biases: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per target, a full-width bias (out_features,) to add to the projection output (from the block's
        current (L, q_width + k_width) biases, or from ``biases``)."""
        biases = self.block() if biases is None else biases  # (L, q_width + k_width)
        deltas = []
        for t in self.targets:
            b = biases[t.row, t.src.to(biases.device)]
            if t.dst is not None:
                b = b.new_zeros(t.out_features).index_put((t.dst.to(b.device),), b)
            deltas.append(b)
        return deltas

    def _param_key(self):
        state = [*self.block.parameters(), *self.block.buffers()]  # a block's state may live in buffers too
        if is_sharded(self.block):
            return object()  # ZeRO-3 updates the partitions behind the parameters' backs: never cached
        return tuple(t._version for t in state) + tuple(t.data_ptr() for t in state)

    def current_deltas(self) -> list[torch.Tensor]:
        """Deltas for this forward: one graph per forward under autograd, else cached while the block is unchanged.

        Under gradient checkpointing the graph is built before the first layer
        (:meth:`_start_forward`), so a recomputed layer saves what its first run
        saved. Reentrant checkpointing runs the layers without grad inside a
        forward with grad, then recomputes each one inside backward and
        backpropagates it on its own: each recompute gets a graph of its own, so
        the shared one is not consumed by the first layer.
        """
        if torch.compiler.is_compiling():
            return self._deltas  # built by _start_forward; a compiled graph keeps no Python-side cache
        if torch.is_grad_enabled():
            if self._reentrant:
                return self.compute_deltas()
            if self._deltas is None or self._cache_key is not None:
                self._deltas, self._cache_key = self.compute_deltas(), None
            return self._deltas
        self._reentrant |= self._grad_forward  # a layer without grad inside a forward with grad
        key = self._param_key()
        if self._deltas is None or self._cache_key != key:
            self._deltas, self._cache_key = self.compute_deltas(), key
        return self._deltas

    # ------------------------------------------------------------------ hooks

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Put the hooks on; a base that already carries another identity is refused (personas never stack)."""
        if self._handles:
            return
        # The backbone runs in every forward, also TRL's fused-LM-head path that skips the *ForCausalLM forward.
        backbone = unwrap_model(self.model).base_model
        other = backbone.__dict__.get(_OWNER)
        if other is not None and other is not self and other.attached:
            raise IdentityStackingError(
                "this base model already carries another persona's identity hooks; two identities would stack "
                "silently. Call .unload() on the persona that wraps it first, or build from a fresh copy of the base.")
        backbone.__dict__[_OWNER] = self
        self._handles.append(backbone.register_forward_pre_hook(self._start_forward))
        if self.block.observes_context:
            self._handles.append(backbone.register_forward_hook(self._observe, with_kwargs=True))
        for i, t in enumerate(self.targets):
            self._handles.append(t.module.register_forward_hook(_BiasHook(self, i)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        backbone = unwrap_model(self.model).base_model
        if backbone.__dict__.get(_OWNER) is self:
            del backbone.__dict__[_OWNER]
        self._deltas, self._cache_key = None, None

    def _start_forward(self, module, args):
        self._grad_forward, self._reentrant = torch.is_grad_enabled(), False
        if self._grad_forward or torch.compiler.is_compiling():
            # a new autograd graph for every training forward, outside checkpointed layers (and under
            # torch.compile, part of the graph: no data-pointer cache to guard on)
            self._deltas, self._cache_key = self.compute_deltas(), None

    def _observe(self, module, args, kwargs, output):
        """Show the block each training batch (a detached side effect; the output is unchanged)."""
        if torch.is_grad_enabled() and self.block.training:
            hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state  # (B, T, d_model)
            self.block.observe(hidden.detach(), kwargs.get("attention_mask"))

    def _add_bias(self, i: int, output: torch.Tensor) -> torch.Tensor:
        if self._folded:
            return output
        return output + self.current_deltas()[i].to(output.dtype)

    # ------------------------------------------------------------------ folding

    @contextmanager
    def folded(self):
        """Fold the current biases into the projections' bias parameters (no_grad inference)."""
        foldable = all(isinstance(base, (nn.Linear, Conv1D)) and not is_sharded(base)
                       for base in map(projection_base_layer, (t.module for t in self.targets)))
        if self._folded or not self._handles or not foldable:  # quantized or sharded layers keep the hooks
            yield
            return
        saved = []
        try:
            with torch.no_grad():
                deltas = self.current_deltas()
                for t, delta in zip(self.targets, deltas):
                    base = projection_base_layer(t.module)
                    saved.append((base, base.bias))
                    bias = delta.to(base.weight.dtype) if base.bias is None else base.bias + delta.to(base.bias.dtype)
                    base.bias = nn.Parameter(bias, requires_grad=False)
            self._folded = True
            yield
        finally:
            self._folded = False
            for base, bias in saved:
                base.bias = bias


# --------------------------------------------------------------------------- verification on the model itself


class NonCausalBaseError(UnsupportedArchitectureError):
    """The base model itself lets earlier positions see later tokens."""


def _tolerance(logits: torch.Tensor) -> float:
    eps = 1e-4 if logits.dtype == torch.float32 else 2e-2  # half precision: kernels may round differently
    return eps * (1 + logits.abs().max().item())


@torch.no_grad()
def check_base_is_causal(lm: nn.Module) -> None:
    """Changing the last token must leave every earlier position's logits alone, or :class:`NonCausalBaseError`."""
    model_type = model_type_of(lm)
    ids = _probe_ids(lm, 8)  # (1, 8)
    changed = ids.clone()
    changed[0, -1] = ids[0, -2]  # a token the vocabulary has, other than the last one (probe ids are distinct)
    before = base_forward(lm, input_ids=ids).logits[:, :-1]
    after = base_forward(lm, input_ids=changed).logits[:, :-1]
    moved = (after.float() - before.float()).abs().max().item()
    if moved > _tolerance(before):
        raise NonCausalBaseError(
            f"{model_type!r}: the base model is not causal itself (changing the last token moved earlier logits by "
            f"{moved:.3g}), so a persona on it would not be a causal LM either. Pass "
            "IdentityConfig(allow_non_causal_base=True) to condition it anyway; every position then sees the "
            "whole input, in training and evaluation alike.")


def _cache_values(output) -> list[torch.Tensor | None]:
    """Per cache layer, what it holds in its value slot (None where it holds none)."""
    cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
    return [layer.values if isinstance(getattr(layer, "values", None), torch.Tensor) else None
            for layer in getattr(cache, "layers", ())]


class _EffectProbe:
    """The model run twice on one probe input, without and with given identity biases. Each attention module's
    inputs from the first run are replayed in the second (a loop model's every call, its cache argument the second
    run's), so whatever moves inside an attention layer moves by that layer's own biases."""

    def __init__(self, lm: nn.Module, injector: IdentityInjector, arch: ArchInfo):
        self.lm, self.injector = lm, injector
        self.attentions = {id(layer.attention): layer for layer in arch.attention_layers if layer.targets}
        self.first = next(iter(self.attentions.values()))
        self.use_cache = True
        try:  # a model without a KV cache (openai-gpt) is compared at its kernel alone
            self.off = self._run(None)
        except UnsupportedArchitectureError:
            self.use_cache, self._inputs = False, {}
            self.off = self._run(None)

    def _run(self, deltas: list[torch.Tensor] | None):
        inputs = self._inputs = getattr(self, "_inputs", {})
        replayed: dict[int, int] = {}

        def capture_or_replay(module, args, kwargs):
            calls = inputs.setdefault(id(module), [])
            if deltas is None:
                calls.append((args, kwargs))
                return None
            n = replayed[id(module)] = replayed.get(id(module), 0) + 1
            if n > len(calls):
                return None
            args_then, kwargs_then = calls[n - 1]
            args_now = tuple(now if isinstance(then, Cache) else then  # a cache passed by position (CPM-Ant)
                             for then, now in zip(args_then, args))
            return args_now, {**kwargs_then, **{k: kwargs[k] for k in CACHE_KWARGS if k in kwargs}}

        handles = [layer.attention.register_forward_pre_hook(capture_or_replay, with_kwargs=True)
                   for layer in self.attentions.values()]
        recorder = _Recorder()
        try:
            if deltas is not None:
                self.injector.current_deltas = lambda: deltas  # the probe's biases, not the block's (maybe 0)
                self.injector.attach()
            with _instrumented_kernels(recorder):
                output = base_forward(self.lm, use_cache=self.use_cache, input_ids=_probe_ids(self.lm, 8))
        finally:
            if deltas is not None:
                self.injector.detach()
                del self.injector.current_deltas
            for h in handles:
                h.remove()
        kernel: dict[int, list] = {}
        for module, q, k, v in recorder.calls:
            kernel.setdefault(id(module), []).append((q, k, v))
        return kernel, _cache_values(output)

    def first_cache_values_move(self, deltas, on_cache: list | None = None) -> bool:
        """Whether the value slot of the first attention layer's KV cache moves with ``deltas`` on (its input is
        the same either way: nothing before it is conditioned)."""
        on_cache = self._run(deltas)[1] if on_cache is None else on_cache
        index = getattr(self.first.attention, "layer_idx", None)
        index = self.first.index if not isinstance(index, int) else index
        off = self.off[1][index] if index < len(self.off[1]) else None
        return off is not None and index < len(on_cache) and not torch.equal(off, on_cache[index])


@torch.no_grad()
def verify_effect(lm: nn.Module, injector: IdentityInjector, arch: ArchInfo) -> set[str]:
    """On the model itself, not a scratch copy: with random identity biases on, every attention layer fed the same
    input as without them must hand its kernel the same V, bit for bit, and a different Q or K. A layout that
    breaks this (a bias landing in V, or a target that never reaches the kernel) is refused before anything runs.

    Returns the names of projections whose bias, though a key at the kernel, lands in the value slot of the first
    attention layer's KV cache (an MLA cache holding the latent and the rotary key, as HunYuan-V4 and dots3 do):
    the caller drops them, so the V part of the cache stays bit-identical too. Train/eval modes and hooks are left as found.
    """
    generator = torch.Generator().manual_seed(0)
    biases = torch.randn(len(injector.block.layer_ids), injector.block.q_width + injector.block.k_width,
                         generator=generator)
    param = next(lm.parameters())
    deltas = [d.to(param.device) for d in injector.compute_deltas(biases.to(param.device))]
    training = {m: m.training for m in lm.modules()}
    lm.eval()  # dropout would move V on its own
    try:
        probe = _EffectProbe(lm, injector, arch)
        on_kernel, on_cache = probe._run(deltas)
        _check_kernel_calls(probe.attentions, probe.off[0], on_kernel, arch)
        if not probe.first_cache_values_move(deltas, on_cache):
            return set()
        cached = set()  # which projections put it there: each one's biases alone
        for name in {t.name for t in probe.first.targets}:
            modules = {id(t.module) for layer in probe.attentions.values() for t in layer.targets if t.name == name}
            alone = [d if id(t.module) in modules else torch.zeros_like(d) for t, d in zip(injector.targets, deltas)]
            if probe.first_cache_values_move(alone):
                cached.add(name)
        return cached
    finally:
        for module, mode in training.items():
            module.training = mode


def without_projections(arch: ArchInfo, names: set[str]) -> ArchInfo:
    """``arch`` with the targets named ``names`` dropped from every layer; a layer left with no Q or K target is a
    :class:`LayoutError`."""
    layers = []
    for layer in arch.layers:
        targets = [t for t in layer.targets if t.name not in names]
        if layer.targets and not targets:
            raise LayoutError(f"{arch.model_type!r} layer {layer.index}: every query/key unit found "
                              f"({', '.join(sorted(names))}) lands in the value slot of the KV cache. "
                              f"{_HOW_TO_REGISTER}")
        layers.append(dataclasses.replace(layer, targets=targets))
    return dataclasses.replace(arch, layers=layers)


def _check_kernel_calls(attentions: dict, off: dict, on: dict, arch: ArchInfo) -> None:
    for key, layer in attentions.items():
        where = f"{arch.model_type!r} layer {layer.index} ({layer.kind})"
        if key not in off:
            continue  # attention computed inline (no kernel call): measured at its output, see hfself.arch
        if len(on.get(key, ())) != len(off[key]):
            raise LayoutError(f"{where}: the attention kernel was called a different number of times with the "
                              f"identity on. {_HOW_TO_REGISTER}")
        for (q0, k0, v0), (q1, k1, v1) in zip(off[key], on[key]):
            if not torch.equal(v0, v1):
                raise LayoutError(
                    f"{where}: with an identity on, the value entering the attention kernel moved (max |dV| "
                    f"{(v1.float() - v0.float()).abs().max().item():.3g}), so the measured Q/K units "
                    f"({', '.join(t.name for t in layer.targets)}) also feed V. Refused rather than run wrong. "
                    f"{_HOW_TO_REGISTER}")
            if torch.equal(q0, q1) and torch.equal(k0, k1):
                raise LayoutError(
                    f"{where}: with an identity on, neither the query nor the key entering the attention kernel "
                    f"moved, so the units found ({', '.join(t.name for t in layer.targets)}) do not reach it. "
                    f"{_HOW_TO_REGISTER}")


# --------------------------------------------------------------------------- export


class ExportError(ValueError):
    """The architecture cannot carry the identity as plain attention biases."""


def fold_into_plain_model(lm: nn.Module, targets: list[_Target], deltas: list[torch.Tensor]) -> nn.Module:
    """Add ``deltas`` to the targets' biases for good, in a model transformers can load without hfself.

    A projection without a bias gets one only if a boolean ``*bias*`` option of
    the config makes transformers build it (Llama's ``attention_bias``): the
    option is turned on, and every other bias it adds (V, O) is zero.
    """
    names = {id(m): n for n, m in lm.named_modules()}
    needed = {f"{names[id(projection_base_layer(t.module))]}.bias" for t in targets}
    have = {n for n, _ in lm.named_parameters(remove_duplicate=False)}
    missing = needed - have
    if missing:
        option, added = _bias_option(lm.config, have, missing)
        setattr(lm.config, option, True)
        for key in sorted(added):
            module = lm.get_submodule(key.rsplit(".", 1)[0])
            weight = module.weight
            width = weight.shape[1] if isinstance(module, Conv1D) else weight.shape[0]
            module.bias = nn.Parameter(weight.new_zeros(width), requires_grad=weight.requires_grad)
    with torch.no_grad():
        for t, delta in zip(targets, deltas):
            base = projection_base_layer(t.module)
            base.bias.add_(delta.to(base.bias.dtype))
    return lm


def _bias_option(config, have: set[str], missing: set[str]) -> tuple[str, set[str]]:
    """The config option that gives the projections in ``missing`` a bias, and every bias it adds."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    candidates = [k for k, v in config.to_dict().items() if "bias" in k and v is False]
    found = []
    for option in candidates:
        trial = config.__class__.from_dict({**config.to_dict(), option: True})
        with init_empty_weights():
            keys = {n for n, _ in AutoModelForCausalLM.from_config(trial).named_parameters(remove_duplicate=False)}
        added = keys - have
        if missing <= added and added <= {k for k in added if k.endswith(".bias")}:
            found.append((len(added), option, added))
    if not found:
        raise ExportError(
            f"{type(config).__name__} cannot carry the identity as attention biases: its Q/K projections "
            f"({', '.join(sorted(missing)[:3])}, ...) have no bias and no boolean config option "
            f"({', '.join(candidates) or 'none has one'}) adds one. Keep serving it as an IdentityForCausalLM.")
    _, option, added = min(found)
    return option, added
