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

from contextlib import contextmanager

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hfself.arch import ArchInfo, projection_base_layer, unwrap_model
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

    def compute_deltas(self) -> list[torch.Tensor]:
        """Per target, a full-width bias (out_features,) to add to the projection output."""
        biases = self.block()  # (L, q_width + k_width)
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
