"""Plugin ``identity``: identity-conditioned attention and introspection.

Anatomy: config.py (IdentityConfig), block.py (IdentityBlock, the MLP block),
layer.py (hooks/folding into Q/K projections), model.py (IdentityForCausalLM),
callbacks.py (IntrospectionCallback); this module holds the hook implementations.
"""

from hfself import hookimpl

from .block import IdentityBlock
from .callbacks import IntrospectionArguments, IntrospectionCallback
from .config import IdentityArguments, IdentityConfig
from .layer import ExportError, IdentityStackingError
from .model import IdentityForCausalLM, PersonaMismatchError

__all__ = ["IdentityArguments", "IdentityBlock", "IdentityConfig", "IdentityForCausalLM", "IntrospectionArguments",
           "ExportError", "IdentityStackingError", "IntrospectionCallback", "PersonaMismatchError"]

@hookimpl
def hfself_register_identity_blocks(register):
    register("mlp", IdentityBlock)


@hookimpl
def hfself_register_models(register):
    register(IdentityConfig, IdentityForCausalLM)


@hookimpl
def hfself_register_callbacks(register):
    register("introspection", lambda run_config, **kw: _introspection_callback(run_config))


def _introspection_callback(run_config: dict) -> IntrospectionCallback:
    fields = IntrospectionArguments.__dataclass_fields__
    args = IntrospectionArguments(**{k: run_config[k] for k in fields if k in run_config})
    return IntrospectionCallback(args, main_lr=run_config.get("learning_rate"))


@hookimpl
def hfself_prepare_model(model, run_config):
    """Wrap the model with an identity built from the run's identity_* keys."""
    if isinstance(model, IdentityForCausalLM):
        return None
    return IdentityForCausalLM.from_base(model, IdentityArguments.config_from(run_config))


@hookimpl
def hfself_trainer_callbacks(model, run_config):
    if not isinstance(model, IdentityForCausalLM) or model.identity_block is None:
        return []
    if run_config.get("identity_update_interval", 1) <= 0:
        return []
    return [_introspection_callback(run_config)]
