"""Hooks the anima plugin specifies (added through ``hfself_addhooks``)."""

from __future__ import annotations

from hfself.hookspecs import Register, hookspec


@hookspec
def hfself_register_steering_modes(register: Register) -> None:
    """Register Prism steering modes.

    :param register: call ``register(name, mode)`` where ``mode`` is a dict
        (see ``hfself_plugins.anima.prism``): ``{"features": {id: value}}`` to
        steer given SAE features (negative values suppress), or
        ``{"description", "positive", "negative", "top_k", "strength"}`` prompts
        from which the features are discovered for the runtime's SAE.
    :return: nothing.

    Called when a runtime first lists its modes. Anima registers its built-in
    modes (Anima, System, Dream) through this same hook.
    """
