"""APOLLO (Zhu et al. 2024, arXiv:2412.05270), written from the paper's algorithm.

For a 2-D gradient G (m x n) the optimizer keeps Adam moments only for a
random projection R = P G (or G Pᵀ) of rank r, turns the Adam-normalized
projection into a scaling factor per channel (or one per tensor for
APOLLO-Mini), applies that factor to the *raw* gradient, and limits how fast
the update's norm may grow (Fira's norm-growth limiter). Memory per matrix:
2·r·max(m, n) instead of Adam's 2·m·n.

Groups without ``rank`` (biases, norms, embeddings, identity parameters) get
plain AdamW in the same optimizer, so one state_dict holds everything; so do the
parameters of a ranked group that are not matrices. That makes a plain Trainer
work with ``optimizer_cls_and_kwargs=(Apollo, {"lr": 1e-3, "rank": 256})``:
its two groups (decay, no decay) hold every parameter, and only the 2-D ones
are projected. The
projection is never stored: it is regenerated from an integer seed kept in the
state, re-drawn every ``update_proj_gap`` steps from (seed, parameter index,
refresh count), so it is the same on every rank and after a resume.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class Apollo(Optimizer):
    """AdamW with APOLLO gradient scaling on groups that set ``rank``.

    Group options (defaults in brackets): ``rank`` [None: plain AdamW; matrices only],
    ``scale_type`` ["channel" | "tensor"], ``scale`` [1.0; the update is
    multiplied by sqrt(scale), the paper uses 128 for APOLLO-Mini],
    ``update_proj_gap`` [200], ``norm_growth_limit`` [1.01; 0 disables].

        groups = [{"params": matrices, "rank": 1, "scale_type": "tensor", "scale": 128},
                  {"params": others, "weight_decay": 0.0}]
        optimizer = Apollo(groups, lr=1e-3, weight_decay=0.01)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, rank: int | None = None, scale_type: str = "channel",
                 scale: float = 1.0, update_proj_gap: int = 200, norm_growth_limit: float = 1.01, seed: int = 0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Apollo hyperparameters: lr={lr}, betas={betas}, eps={eps}")
        if scale_type not in ("channel", "tensor"):
            raise ValueError(f"scale_type must be 'channel' or 'tensor', got {scale_type!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                        scale_type=scale_type, scale=scale, update_proj_gap=update_proj_gap,
                        norm_growth_limit=norm_growth_limit, seed=seed)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ projection

    @staticmethod
    def _projection_seed(group: dict, index: int, refresh: int) -> int:
        return (group["seed"] * 1_000_003 + index * 7_919 + refresh * 104_729) % (2**62)

    @staticmethod
    def projection(shape: torch.Size, rank: int, seed: int, device, dtype=torch.float32) -> torch.Tensor:
        """The random matrix P ~ N(0, 1/r): (r, m) when m <= n (rows projected), else (r, n)."""
        m, n = shape
        generator = torch.Generator(device=device).manual_seed(seed)
        return torch.randn(rank, min(m, n), generator=generator, device=device, dtype=dtype) / math.sqrt(rank)

    @staticmethod
    def project(grad: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        m, n = grad.shape
        return proj @ grad if m <= n else grad @ proj.T  # (r, n) or (m, r)

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Apollo does not support sparse gradients")
                grad = p.grad.float()
                state = self.state[p]
                projected = group["rank"] is not None and grad.dim() == 2  # other shapes: plain AdamW
                if not state:
                    state["step"] = torch.tensor(0.0)
                    if projected:
                        state["proj_seed"] = self._projection_seed(group, index, 0)
                        state["update_norm"] = torch.tensor(0.0)
                state["step"] += 1
                step = int(state["step"].item())

                if projected:
                    rank = min(group["rank"], *grad.shape)
                    if (step - 1) % group["update_proj_gap"] == 0:
                        state["proj_seed"] = self._projection_seed(group, index, (step - 1) // group["update_proj_gap"])
                    proj = self.projection(grad.shape, rank, state["proj_seed"], grad.device)
                    moment_input = self.project(grad, proj)  # (r, n) or (m, r)
                else:
                    moment_input = grad

                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(moment_input)
                    state["exp_avg_sq"] = torch.zeros_like(moment_input)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(moment_input, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(moment_input, moment_input, value=1 - beta2)
                bias1, bias2 = 1 - beta1**step, 1 - beta2**step
                normalized = (exp_avg / bias1) / ((exp_avg_sq / bias2).sqrt() + group["eps"])

                if projected:
                    update = grad * self._scaling(normalized, moment_input, grad.shape, group["scale_type"])
                    update = self._limit_growth(update, state, group["norm_growth_limit"])
                    update = update * math.sqrt(group["scale"])
                else:
                    update = normalized

                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss

    @staticmethod
    def _scaling(normalized: torch.Tensor, projected: torch.Tensor, grad_shape: torch.Size,
                 scale_type: str) -> torch.Tensor:
        """How much Adam would stretch each channel (or the whole tensor), read off the projection."""
        if scale_type == "tensor":
            return normalized.norm() / (projected.norm() + 1e-8)
        m, n = grad_shape
        if m <= n:  # projected (r, n): one factor per column
            return (normalized.norm(dim=0) / (projected.norm(dim=0) + 1e-8)).unsqueeze(0)
        return (normalized.norm(dim=1) / (projected.norm(dim=1) + 1e-8)).unsqueeze(1)  # (m, r): per row

    @staticmethod
    def _limit_growth(update: torch.Tensor, state: dict, limit: float) -> torch.Tensor:
        norm = update.norm()
        previous = state["update_norm"].to(norm.device)
        if limit and previous > 0 and norm > limit * previous:
            update = update * (limit * previous / norm)
            norm = limit * previous
        state["update_norm"] = norm.detach().to(state["update_norm"].device)
        return update

    # ------------------------------------------------------------------ introspection

    def state_bytes(self) -> int:
        """Bytes held in optimizer state tensors (what a checkpoint stores)."""
        return sum(v.numel() * v.element_size() for st in self.state.values() for v in st.values()
                   if torch.is_tensor(v))
