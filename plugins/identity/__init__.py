"""Plugin ``identity``: identity-conditioned attention, introspection and persona blending.

Anatomy: config.py (IdentityConfig, IdentityArguments), block.py (IdentityBlock, the MLP block),
layer.py (hooks/folding into Q/K projections), model.py (IdentityForCausalLM), callbacks.py
(IntrospectionCallback), blend.py (persona blending, any block), analysis.py (blend sweeps),
hookspecs.py (``hfself_register_identity_blocks``), cli.py (``hfself identity``); this module
holds the hook implementations and imports the rest on first use.
"""

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {
    "IdentityArguments": ".config", "IdentityConfig": ".config", "IdentityBlock": ".block",
    "IntrospectionArguments": ".callbacks", "IntrospectionCallback": ".callbacks",
    "ExportError": ".layer", "IdentityStackingError": ".layer", "NonCausalBaseError": ".layer",
    "IdentityForCausalLM": ".model", "PersonaMismatchError": ".model",
    "blend_personas": ".blend", "slerp": ".blend",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_addhooks(pluginmanager):
    from hfself.plugins import add_hookspecs

    from . import hookspecs

    add_hookspecs(pluginmanager, hookspecs)


@hookimpl
def hfself_register_identity_blocks(register):
    from .block import IdentityBlock

    register("mlp", IdentityBlock)


@hookimpl
def hfself_register_models(register):
    from .config import IdentityConfig
    from .model import IdentityForCausalLM

    register(IdentityConfig, IdentityForCausalLM)


@hookimpl
def hfself_register_callbacks(register):
    register("introspection", lambda run_config, **kw: _introspection_callback(run_config))


def _introspection_callback(run_config: dict):
    from hfself.args import from_run_config

    from .callbacks import IntrospectionArguments, IntrospectionCallback

    return IntrospectionCallback(from_run_config(IntrospectionArguments, run_config),
                                 main_lr=run_config.get("learning_rate"))


@hookimpl
def hfself_prepare_model(model, run_config):
    """Wrap the model with an identity built from the run's identity_* keys."""
    from .config import IdentityArguments
    from .model import IdentityForCausalLM

    if isinstance(model, IdentityForCausalLM):
        return None
    return IdentityForCausalLM.from_base(model, IdentityArguments.config_from(run_config))


@hookimpl
def hfself_trainer_callbacks(model, run_config):
    if getattr(model, "identity_block", None) is None or run_config.get("identity_update_interval", 1) <= 0:
        return []
    return [_introspection_callback(run_config)]


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
