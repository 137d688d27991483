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
are projected. By default
the projection is never stored: it is regenerated from an integer seed kept in
the state, re-drawn every ``update_proj_gap`` steps from (seed, parameter index,
refresh count), so it is the same on every rank and after a resume
(``cache_projection=True`` keeps it between refreshes: more memory, a faster step).
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
    ``update_proj_gap`` [200], ``norm_growth_limit`` [1.01; 0 disables], ``cache_projection`` [False: the
    projection is redrawn from its seed every step, so the state holds only the moments; True keeps it between
    refreshes, r·min(m, n) more floats per matrix for a faster step].

        groups = [{"params": matrices, "rank": 1, "scale_type": "tensor", "scale": 128},
                  {"params": others, "weight_decay": 0.0}]
        optimizer = Apollo(groups, lr=1e-3, weight_decay=0.01)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, rank: int | None = None, scale_type: str = "channel",
                 scale: float = 1.0, update_proj_gap: int = 200, norm_growth_limit: float = 1.01, seed: int = 0,
                 cache_projection: bool = False):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Apollo hyperparameters: lr={lr}, betas={betas}, eps={eps}")
        if scale_type not in ("channel", "tensor"):
            raise ValueError(f"scale_type must be 'channel' or 'tensor', got {scale_type!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                        scale_type=scale_type, scale=scale, update_proj_gap=update_proj_gap,
                        norm_growth_limit=norm_growth_limit, seed=seed, cache_projection=cache_projection)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ projection

    @staticmethod
    def _projection_seed(group: dict, index: int, refresh: int) -> int:
        return (group["seed"] * 1_000_003 + index * 7_919 + refresh * 104_729) % (2**62)

    @staticmethod
    def projection(shape: torch.Size, rank: int, seed: int, device, dtype=torch.float32) -> torch.Tensor:
        """The random matrix P ~ N(0, 1/r) of shape (r, min(m, n)): it projects the rows when m < n, else the
        columns."""
        m, n = shape
        generator = torch.Generator(device=device).manual_seed(seed)
        return torch.randn(rank, min(m, n), generator=generator, device=device, dtype=dtype) / math.sqrt(rank)

    @staticmethod
    def projects_rows(shape: torch.Size, state: dict) -> bool:
        """Rows (P G, moments (r, n)) when m < n, else columns (G Pᵀ, moments (m, r)), as apollo-torch chooses (a
        square matrix's per-row norms then read contiguous memory). A square matrix whose state already holds
        (r, n) moments, saved before square matrices projected their columns, keeps its rows."""
        m, n = shape
        moments = state.get("exp_avg")
        return m < n or (m == n and moments is not None and moments.shape[0] != m)

    @staticmethod
    def project(grad: torch.Tensor, proj: torch.Tensor, rows: bool) -> torch.Tensor:
        return proj @ grad if rows else grad @ proj.T  # (r, n) or (m, r)

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            plain = []  # this group's parameters that step as AdamW, updated after the loop
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Apollo does not support sparse gradients")
                state = self.state[p]
                projected = group["rank"] is not None and p.dim() == 2  # other shapes: plain AdamW
                if not state:
                    state["step"] = torch.tensor(0.0)
                    if projected:
                        state["proj_seed"] = self._projection_seed(group, index, 0)
                        state["update_norm"] = torch.zeros((), device=p.device)
                state["step"] += 1
                if projected:
                    self._apollo_update(p, state, group, index)
                else:
                    plain.append(p)
            if plain:
                self._adamw_update(plain, group)
        return loss

    def _apollo_update(self, p: torch.Tensor, state: dict, group: dict, index: int) -> None:
        """One APOLLO step of a matrix: Adam moments of its projection give a scaling per channel (or tensor), which
        multiplies the raw gradient; the update's norm may grow at most ``norm_growth_limit``-fold per step. No
        step reads a value back to the host."""
        beta1, beta2 = group["betas"]
        grad = p.grad if p.grad.dtype == torch.float32 else p.grad.float()  # (m, n)
        step = int(state["step"].item())
        rank = min(group["rank"], *grad.shape)
        refresh = (step - 1) % group["update_proj_gap"] == 0
        if refresh:
            state["proj_seed"] = self._projection_seed(group, index, (step - 1) // group["update_proj_gap"])
        proj = state.get("proj") if group.get("cache_projection") else None
        if proj is None or refresh:
            proj = self.projection(grad.shape, rank, state["proj_seed"], grad.device)
            if group.get("cache_projection"):
                state["proj"] = proj  # r·min(m, n) floats kept, instead of redrawn every step
            else:
                state.pop("proj", None)  # e.g. resumed from a run that kept it
        rows = self.projects_rows(grad.shape, state)
        moment_input = self.project(grad, proj, rows)  # (r, n) or (m, r)
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(moment_input)
            state["exp_avg_sq"] = torch.zeros_like(moment_input)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(moment_input, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(moment_input, moment_input, value=1 - beta2)
        denom = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
        normalized = exp_avg.div(denom).div_(1 - beta1**step)  # Adam's step direction for the projection

        if group["scale_type"] == "tensor":
            scaling = normalized.norm() / (moment_input.norm() + 1e-8)  # ()
        else:
            dim = 0 if rows else 1  # (r, n): one factor per column; (m, r): one per row
            scaling = (normalized.norm(dim=dim) / (moment_input.norm(dim=dim) + 1e-8)).unsqueeze(dim)
        update = grad * scaling  # (m, n)
        update.mul_(self._growth_factor(update.norm(), state, group["norm_growth_limit"]) * math.sqrt(group["scale"]))
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update.to(p.dtype), alpha=-group["lr"])

    @staticmethod
    def _growth_factor(norm: torch.Tensor, state: dict, limit: float) -> torch.Tensor:
        """Fira's limiter as a factor (1 or less) on the update, without a host sync: the update's norm may be at
        most ``limit`` times the previous step's."""
        previous = state["update_norm"].to(norm.device)
        if not limit:
            state["update_norm"] = norm
            return torch.ones_like(norm)
        factor = torch.where(previous > 0, (limit * previous / norm).clamp(max=1.0), 1.0)  # norm 0: inf → 1
        state["update_norm"] = norm * factor
        return factor

    def _adamw_update(self, params: list[torch.Tensor], group: dict) -> None:
        """AdamW on the non-projected parameters of a group, moments in float32 whatever the parameters' dtype. On
        an accelerator every tensor at once (``torch._foreach_*``); on CPU one at a time, where torch's foreach
        kernels run single-threaded (torch's AdamW makes the same choice)."""
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        grads = [p.grad if p.grad.dtype == torch.float32 else p.grad.float() for p in params]
        states = [self.state[p] for p in params]
        for state, grad in zip(states, grads):
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(grad)
                state["exp_avg_sq"] = torch.zeros_like(grad)
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        steps = [int(s["step"].item()) for s in states]
        step_sizes = [-lr / (1 - beta1**s) for s in steps]
        if params[0].device.type == "cpu":
            for p, grad, exp_avg, exp_avg_sq, step, step_size in zip(params, grads, exp_avgs, exp_avg_sqs, steps,
                                                                     step_sizes):
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**step)).add_(eps)
                if decay:
                    p.mul_(1 - lr * decay)
                _add_adam_step(p, exp_avg, denom, step_size)
            return
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [math.sqrt(1 - beta2**s) for s in steps])
        torch._foreach_add_(denoms, eps)
        if decay:
            torch._foreach_mul_(params, 1 - lr * decay)
        if all(p.dtype == torch.float32 for p in params):
            torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)  # p += step_size · m / denom, fused
        else:
            for p, exp_avg, denom, step_size in zip(params, exp_avgs, denoms, step_sizes):
                _add_adam_step(p, exp_avg, denom, step_size)

    # ------------------------------------------------------------------ introspection

    def state_bytes(self) -> int:
        """Bytes held in optimizer state tensors (what a checkpoint stores)."""
        return sum(v.numel() * v.element_size() for st in self.state.values() for v in st.values()
                   if torch.is_tensor(v))


def _add_adam_step(p: torch.Tensor, exp_avg: torch.Tensor, denom: torch.Tensor, step_size: float) -> None:
    """p += step_size · exp_avg / denom (fused for float32 parameters)."""
    if p.dtype == torch.float32:
        p.addcdiv_(exp_avg, denom, value=step_size)
    else:
        p.add_((exp_avg / denom).to(p.dtype), alpha=step_size)
