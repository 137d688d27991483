"""Sharded training (FSDP2, DeepSpeed ZeRO): what hfself does differently when parameters live across ranks.

A sharded forward needs every rank, so whatever generates during training
(introspection, dreams, evals) runs on all of them (:func:`sharded_generation_kwargs`);
updates made outside the training step go through :func:`updating_whole`,
:func:`backward_outside_step` and :func:`call_whole`; discovery runs on gathered
weights (:func:`gathered`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn


def _zero3(params) -> bool:
    return any(hasattr(p, "ds_id") for p in params)


def is_sharded(model: nn.Module) -> bool:
    """Parameters sharded across ranks (FSDP2's DTensors, DeepSpeed ZeRO-3): every rank must run each forward."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def sharded_generation_kwargs(model: nn.Module) -> dict:
    """``generate`` kwargs for a sharded model: every rank keeps stepping until all are done (``synced_gpus``, as
    TRL does), since each step's forward needs every rank's shard."""
    sharded = is_sharded(model) and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    return {"synced_gpus": True} if sharded else {}


def reshard(model: nn.Module) -> None:
    """Put an FSDP2 root's parameters back to the sharded ones (after a forward the root keeps them whole), so
    that work outside the forward updates the parameters its optimizer holds. A no-op otherwise."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.reshard()


_HELD = -1  # not a module id: marks ZeRO-3 parameters as in use while updating_whole holds them


def _deepspeed_managed(params) -> bool:
    return any(hasattr(p, "ds_id") or hasattr(p, "_hp_mapping") for p in params)


@contextmanager
def updating_whole(module: nn.Module):
    """``module``'s parameters whole and writable on every rank, for an update outside the training step
    (an introspection round). Under DeepSpeed ZeRO-3 they are gathered and rank 0's values are scattered back on
    exit; under any DeepSpeed stage the optimizer's fp32 master copy takes the new values too, so that its next
    step does not undo them. FSDP2's DTensors and plain parameters update in place as they are."""
    params = list(module.parameters())
    zero3 = _zero3(params)
    gathered = nullcontext()
    if zero3:
        from deepspeed.runtime.zero import GatheredParameters

        gathered = GatheredParameters(params, modifier_rank=0)
    with gathered:
        if zero3:  # the engine's post-forward hooks on the block's submodules must not re-partition them mid-update
            for p in params:
                p.ds_active_sub_modules.add(_HELD)
        try:
            yield
        finally:
            if zero3:
                for p in params:
                    p.ds_active_sub_modules.discard(_HELD)
        if _deepspeed_managed(params):
            from deepspeed.utils import safe_set_full_fp32_param

            for p in params:
                if p.requires_grad:
                    safe_set_full_fp32_param(p, p.data.float())


def backward_outside_step(loss: torch.Tensor, params: list[nn.Parameter]) -> None:
    """``loss.backward()`` into ``params``' ``.grad`` for an optimizer of their own, without running the gradient
    hooks a sharding engine put on them for the training step (DeepSpeed would reduce these gradients into the
    main optimizer's buffers)."""
    params = [p for p in params if p.requires_grad]
    for p, grad in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
        if grad is not None:
            p.grad = grad if p.grad is None else p.grad + grad


def call_whole(module: nn.Module, *args):
    """``module(*args)`` outside the model's forward, where FSDP2 keeps ``module``'s parameters sharded: it runs
    on their whole values (``DTensor.full_tensor()``, differentiable, so gradients reach the shards)."""
    from torch.distributed.tensor import DTensor

    params = dict(module.named_parameters())
    if not any(isinstance(p, DTensor) for p in params.values()):
        return module(*args)
    whole = {name: p.full_tensor() if isinstance(p, DTensor) else p for name, p in params.items()}
    return torch.func.functional_call(module, whole, args)


@contextmanager
def gathered(model: nn.Module):
    """Whole parameters for a read-only look at ``model`` (a forward outside any engine, as discovery runs) when
    DeepSpeed ZeRO-3 partitioned them at load (``deepspeed.zero.Init``); each rank holds them all meanwhile."""
    params = list(model.parameters())
    if not _zero3(params):
        yield
        return
    from deepspeed.runtime.zero import GatheredParameters

    with GatheredParameters(params):
        yield
