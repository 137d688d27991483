"""Plugin ``temporal``: Temporal LoRA, domain adapters on a frozen backbone with a per-token time mixer.

Anatomy: config.py (TemporalLoraConfig), layer.py (TimeMixer, TokenMixing), model.py
(TemporalLoraForCausalLM), analysis.py (router metrics; accuracy, hysteresis and fatigue
experiments), cli.py (``hfself temporal``); this module holds the hook implementations and
imports the rest on first use.
"""

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {"TemporalLoraConfig": ".config", "TimeMixer": ".layer", "TokenMixing": ".layer",
            "TemporalLoraForCausalLM": ".model"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_register_models(register):
    from .config import TemporalLoraConfig
    from .model import TemporalLoraForCausalLM

    register(TemporalLoraConfig, TemporalLoraForCausalLM)


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
