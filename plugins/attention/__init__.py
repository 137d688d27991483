"""Plugin ``attention``: W_q-only training, the dream loop and the attention probe.

Anatomy: config.py (AttentionArguments, DreamArguments), layer.py (QOnlyTraining),
callbacks.py (QOnlyCallback, DreamCallback, the replay buffer), analysis.py
(AttentionProbe), listening.py (the bundled "listening" conversations), cli.py
(``hfself attention``); this module holds the hook implementations and imports the
rest on first use.
"""

from __future__ import annotations

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {
    "AttentionArguments": ".config", "DreamArguments": ".config", "QOnlyTraining": ".layer",
    "DreamCallback": ".callbacks", "QOnlyCallback": ".callbacks", "ReplayBuffer": ".callbacks",
    "ReplayCollator": ".callbacks", "AttentionProbe": ".analysis", "span_attention_mass": ".analysis",
    "conversation_text": ".listening", "listening_conversations": ".listening",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_register_callbacks(register):
    register("dream", lambda run_config, **kw: _dream_callback(run_config))


def _dream_callback(run_config: dict):
    from hfself.args import from_run_config

    from .callbacks import DreamCallback
    from .config import DreamArguments

    return DreamCallback(from_run_config(DreamArguments, run_config), seed=run_config.get("seed", 0))


@hookimpl
def hfself_prepare_model(model, run_config):
    """``train_modules: q_only`` freezes the backbone except W_q (the model itself is not wrapped)."""
    if run_config.get("train_modules", "all") == "q_only" and getattr(model, "hfself_q_only", None) is None:
        from .layer import QOnlyTraining

        model.hfself_q_only = QOnlyTraining(model)
    return None


@hookimpl
def hfself_trainer_callbacks(model, run_config):
    callbacks = []
    q_only = getattr(model, "hfself_q_only", None)
    if q_only is not None and q_only.fused:
        from .callbacks import QOnlyCallback

        callbacks.append(QOnlyCallback(q_only))
    if run_config.get("dream_interval", 0) > 0 and "dream" not in (run_config.get("callbacks") or []):
        callbacks.append(_dream_callback(run_config))
    return callbacks


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
