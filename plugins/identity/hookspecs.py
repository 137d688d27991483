"""Hooks the identity plugin specifies (added through ``hfself_addhooks``)."""

from __future__ import annotations

from hfself.hookspecs import Register, hookspec


@hookspec
def hfself_register_identity_blocks(register: Register) -> None:
    """Register Identity Block classes.

    :param register: call ``register(name, block_cls)`` once per block type;
        ``name`` is what ``IdentityConfig(block=name)`` selects. ``block_cls`` is
        an ``nn.Module`` class built as ``block_cls(config, arch_info)``,
        usually a subclass of ``hfself_plugins.identity.IdentityBlock``.
    :return: nothing.

    Called when the identity registry is first used.
    """
