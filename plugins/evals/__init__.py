"""Plugin ``evals``: perplexity, identity consistency, self-persistence, stability and safety of a persona.

Anatomy: config.py (EvalArguments), analysis.py (the five measures, scored by the local
evaluate modules in metrics/, and the report: JSON, markdown, PNG), callbacks.py
(EvalCallback), cli.py (``hfself eval``), data/ (challenges, safety prompts, lexicon);
this module holds the hook implementations and imports the rest on first use.
"""

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {"EvalArguments": ".config", "MEASURES": ".config", "EvalCallback": ".callbacks",
            "load_metric": ".analysis", "METRIC_NAMES": ".analysis", "lm_eval_tasks": ".analysis"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_register_callbacks(register):
    register("eval", lambda run_config, **kw: _eval_callback(run_config))


def _eval_callback(run_config: dict):
    from hfself.args import from_run_config

    from .callbacks import EvalCallback
    from .config import EvalArguments

    return EvalCallback(from_run_config(EvalArguments, run_config, exclude=("persona",)))


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
