"""Blending two saved personas in the identity latent (slerp or lerp), for any Identity Block."""

from __future__ import annotations

import os

import torch

from hfself import persist

from .model import IdentityForCausalLM, PersonaMismatchError

METHODS = ("slerp", "lerp")


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation of two same-shape tensors (lerp when they are almost parallel)."""
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-4:
        return torch.lerp(a, b, alpha)
    wa, wb = torch.sin((1 - alpha) * omega) / torch.sin(omega), torch.sin(alpha * omega) / torch.sin(omega)
    return (wa * a_flat + wb * b_flat).reshape(a.shape).to(a.dtype)


def blend_block_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], alpha: float,
                      latent_keys: tuple[str, ...], method: str = "slerp") -> dict[str, torch.Tensor]:
    """Blend two Identity Block states: ``latent_keys`` by ``method``, other float tensors by lerp.

    ``alpha`` = 0 gives A, 1 gives B. Integer state (e.g. round counters) is A's.
    """
    if method not in METHODS:
        raise ValueError(f"unknown blend method {method!r}; choose from {METHODS}")
    if state_a.keys() != state_b.keys():
        raise PersonaMismatchError(f"the two identity blocks differ: {sorted(state_a.keys() ^ state_b.keys())[:5]}")
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        if a.shape != b.shape:
            raise PersonaMismatchError(f"identity state {key!r} has shape {tuple(a.shape)} vs {tuple(b.shape)}")
        if not a.is_floating_point():
            out[key] = a.clone()
        elif key in latent_keys and method == "slerp":
            out[key] = slerp(a, b, alpha)
        else:
            out[key] = torch.lerp(a, b.to(a.dtype), alpha)
    return out


def load_pair(persona_a: str | os.PathLike, persona_b: str | os.PathLike, **load_kwargs):
    """Persona A as a model, and the identity block states of A and B (checked to fit each other)."""
    model = IdentityForCausalLM.from_pretrained(persona_a, **load_kwargs)
    if model.identity_block is None:
        raise PersonaMismatchError(f"{persona_a} has identity turned off; nothing to blend")
    config_b = type(model.config).from_pretrained(persist.resolve_dir(persona_b))
    if config_b.block != model.config.block:
        raise PersonaMismatchError(f"cannot blend a {model.config.block!r} identity with a {config_b.block!r} one")
    state_a = {k: v.detach().cpu().clone() for k, v in model.identity_block.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in state_a.items()}
    try:
        state_b = persist.load_tensors(persist.resolve_dir(persona_b) / "identity.safetensors", expected=expected)
    except persist.StateFileError as err:
        raise PersonaMismatchError(f"persona {persona_b} does not fit persona {persona_a}: {err}") from err
    return model, state_a, state_b


def apply_blend(model: IdentityForCausalLM, state_a: dict, state_b: dict, alpha: float,
                method: str = "slerp") -> IdentityForCausalLM:
    """Load the blend of two block states into ``model``'s identity block (in place)."""
    block = model.identity_block
    block.load_state_dict(blend_block_state(state_a, state_b, alpha, block.latent_state_keys, method))
    block.refresh_identity()
    return model


def blend_personas(persona_a: str | os.PathLike, persona_b: str | os.PathLike, alpha: float,
                   method: str = "slerp", **load_kwargs) -> IdentityForCausalLM:
    """Persona A with its identity blended toward persona B's (B contributes only its identity block).

    Both must share the base architecture and the block type. For the diffusion block the
    latent is the starting noise (slerp), the self-context and the weights lerp, and the
    identity is denoised again from the blended noise; for the MLP block the latent is
    the identity vector itself. The base model (and any adapter) is A's.
    """
    model, state_a, state_b = load_pair(persona_a, persona_b, **load_kwargs)
    apply_blend(model, state_a, state_b, alpha, method)
    model.config.blend = {"a": str(persona_a), "b": str(persona_b), "alpha": alpha, "method": method}
    return model
