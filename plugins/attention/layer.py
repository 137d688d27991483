"""Attention-only training: freeze the backbone except W_q (the Q slice of fused QKV included)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hfself.arch import inspect_model, is_peft_model, projection_base_layer, unwrap_model


@dataclass
class _FusedSlice:
    """A fused QKV parameter of which only the Q outputs may change."""

    param: nn.Parameter
    frozen_index: torch.Tensor  # output positions of K and V
    dim: int  # the output axis of ``param``: 0 for Linear weights and biases, 1 for Conv1D weights
    frozen_values: torch.Tensor  # the K/V slice as it was when training started
    hook: torch.utils.hooks.RemovableHandle


class QOnlyTraining:
    """Make W_q the only trainable weights of the backbone ("context-frozen" training).

    Separate ``q_proj`` weights and biases get ``requires_grad``; everything
    else in the backbone is frozen. For fused projections (GPT-2 ``c_attn``,
    GPT-NeoX/Bloom/Falcon ``query_key_value``, Phi-3 ``qkv_proj``) the whole
    parameter must require grad, so a gradient hook zeroes the K/V outputs and
    :meth:`restore_frozen` (called after every optimizer step by
    ``QOnlyCallback``) writes the original K/V values back, which undoes weight
    decay too: K and V stay bit-identical under any optimizer. Parameters of
    other plugins (an identity block) keep their own setting.

        q_only = QOnlyTraining(model)
        ... optimizer.step(); q_only.restore_frozen() ...
        q_only.remove()   # hooks off; requires_grad stays as it is
    """

    def __init__(self, model: nn.Module):
        if is_peft_model(model) or is_peft_model(getattr(model, "lm", model)):
            raise ValueError("train_modules: q_only freezes a plain backbone; with peft, put LoRA on the query "
                             "projections instead (LoraConfig(target_modules=['q_proj']) or the fused name)")
        info = inspect_model(model)
        backbone = unwrap_model(model)
        backbone.requires_grad_(False)
        self.fused: list[_FusedSlice] = []
        self.q_parameters: list[nn.Parameter] = []
        for layer in info.layers:
            for target in layer.targets:
                if target.q_index is None:
                    continue
                base = projection_base_layer(target.module)
                if target.is_identity_q:
                    for param in base.parameters(recurse=False):
                        param.requires_grad_(True)
                        self.q_parameters.append(param)
                else:
                    self._freeze_kv(base, target.q_index, target.out_features)
        self.total_parameters = sum(p.numel() for p in backbone.parameters())

    def _freeze_kv(self, module: nn.Module, q_index: torch.Tensor, out_features: int) -> None:
        keep = torch.zeros(out_features, dtype=torch.bool)
        keep[q_index] = True
        frozen_index = (~keep).nonzero().squeeze(1)
        is_conv1d = hasattr(module, "nf")  # transformers Conv1D stores weight as (in, out)
        for name, param in module.named_parameters(recurse=False):
            dim = 1 if (is_conv1d and name == "weight") else 0
            shape = [1] * param.dim()
            shape[dim] = out_features
            keep_mask = keep.view(shape).to(param.device, param.dtype)
            param.requires_grad_(True)
            hook = param.register_hook(lambda grad, m=keep_mask: grad * m)
            frozen = param.detach().index_select(dim, frozen_index.to(param.device)).clone()
            self.fused.append(_FusedSlice(param, frozen_index.to(param.device), dim, frozen, hook))
            self.q_parameters.append(param)

    @torch.no_grad()
    def restore_frozen(self) -> None:
        """Write the original K/V slices of fused projections back (after an optimizer step)."""
        for s in self.fused:
            s.param.index_copy_(s.dim, s.frozen_index, s.frozen_values.to(s.param.dtype))

    def trainable_q_parameters(self) -> int:
        """Number of W_q entries that train (fused K/V slices not counted)."""
        frozen = sum(s.frozen_values.numel() for s in self.fused)
        return sum(p.numel() for p in self.q_parameters) - frozen

    def summary(self) -> dict:
        return {"q_parameters": self.trainable_q_parameters(), "backbone_parameters": self.total_parameters,
                "fused_parameters": len(self.fused)}

    def remove(self) -> None:
        for s in self.fused:
            s.hook.remove()
        self.fused = []
