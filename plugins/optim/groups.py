"""The parameter-group policy shared by every hfself optimizer, explicit and logged.

Trainable parameters only, in four groups:

- ``apollo``: Linear/Conv1D weight matrices (peft LoRA A/B included), the
  output head excepted; or every 2-D parameter with ``apollo_modules: all_2d``.
  With ``adamw`` this group is simply "matrices with weight decay".
- ``decay``: the other parameters Trainer decays (embeddings, ...): AdamW with weight decay.
- ``no_decay``: biases and norm weights (``Trainer.get_decay_parameter_names``): AdamW without weight decay.
- ``identity``: the identity block of an ``IdentityForCausalLM``: AdamW, no
  weight decay, its own learning rate.
"""

from __future__ import annotations

import logging

from torch import nn
from transformers import Trainer
from transformers.pytorch_utils import Conv1D

from hfself.arch import unwrap_model

logger = logging.getLogger("hfself.optim")

GROUP_ORDER = ("apollo", "decay", "no_decay", "identity")


def classify_parameters(model: nn.Module, apollo_modules: str = "linear") -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Sort the trainable parameters of ``model`` into the policy's groups (name → [(param name, param)])."""
    if apollo_modules not in ("linear", "all_2d"):
        raise ValueError(f"apollo_modules must be 'linear' or 'all_2d', got {apollo_modules!r}")
    identity_block = getattr(model, "identity_block", None)
    identity_ids = {id(p) for p in identity_block.parameters()} if identity_block is not None else set()
    head = unwrap_model(model).get_output_embeddings()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    matrix_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, Conv1D))}
    decay_names = set(Trainer.get_decay_parameter_names(None, model))  # Trainer's own rule (it never reads self)

    groups: dict[str, list] = {name: [] for name in GROUP_ORDER}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in identity_ids:
            groups["identity"].append((name, param))
        elif name not in decay_names:  # biases and norms
            groups["no_decay"].append((name, param))
        elif param.dim() == 2 and (apollo_modules == "all_2d" or (id(param) in matrix_ids
                                                                  and id(param) not in head_ids)):
            groups["apollo"].append((name, param))
        else:
            groups["decay"].append((name, param))
    return groups


def parameter_groups(model: nn.Module, *, learning_rate: float, weight_decay: float, apollo: dict | None = None,
                     apollo_modules: str = "linear", identity_learning_rate: float | None = None):
    """Optimizer groups plus a summary ``{group: {"tensors": k, "parameters": n}}`` (also logged).

    ``apollo`` holds the APOLLO options (rank, scale_type, ...) added to the
    ``apollo`` group; None leaves that group as plain decayed AdamW.
    """
    classified = classify_parameters(model, apollo_modules)
    options = {
        "apollo": {"weight_decay": weight_decay, **(apollo or {})},
        "decay": {"weight_decay": weight_decay},
        "no_decay": {"weight_decay": 0.0},
        "identity": {"weight_decay": 0.0, "lr": identity_learning_rate or learning_rate},
    }
    groups, summary = [], {}
    for name in GROUP_ORDER:
        params = [p for _, p in classified[name]]
        summary[name] = {"tensors": len(params), "parameters": sum(p.numel() for p in params)}
        if params:
            groups.append({"name": name, "params": params, **options[name]})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    logger.info("optimizer parameter groups: %s", summary)
    return groups, summary
