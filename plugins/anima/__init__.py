"""Plugin ``anima``: an SAE control layer on a frozen LLM's residual stream, with a persistent reservoir.

Anatomy: config.py (AnimaConfig), sae.py (load a sae-lens SAE, or train one on the model's
activations), layer.py (SAESteering: the residual-stream hook), reservoir.py (Reservoir,
LexiconValence), prism.py (steering modes: built-ins, discovery, router), runtime.py
(AnimaRuntime: talking, metabolism, persistence), analysis.py (the research questions),
hookspecs.py (``hfself_register_steering_modes``), cli.py (``hfself anima``); this module
holds the hook implementations and imports the rest on first use.
"""

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {
    "AnimaConfig": ".config", "SAEDimensionError": ".layer", "SAESteering": ".layer",
    "BUILTIN_MODES": ".prism", "PrismRouter": ".prism", "discover_mode": ".prism",
    "LexiconValence": ".reservoir", "Reservoir": ".reservoir",
    "AnimaRuntime": ".runtime", "StateDirBusyError": ".runtime", "load_sae": ".sae", "train_sae": ".sae",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_addhooks(pluginmanager):
    from hfself.plugins import add_hookspecs

    from . import hookspecs

    add_hookspecs(pluginmanager, hookspecs)


@hookimpl
def hfself_register_steering_modes(register):
    from .prism import BUILTIN_MODES

    for name, mode in BUILTIN_MODES.items():
        register(name, mode)


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
