"""Plugin ``optim``: optimizers by name (``optimizer: apollo_adamw | apollo_mini | adamw``).

Anatomy: config.py (OptimArguments), apollo.py (the APOLLO optimizer),
groups.py (the parameter-group policy); this module holds the factories and
the hook implementations, and imports the rest on first use.
"""

from __future__ import annotations

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {"Apollo": ".apollo", "OptimArguments": ".config", "classify_parameters": ".groups",
            "parameter_groups": ".groups"}
__all__ = sorted([*_EXPORTS, "VARIANTS", "build_optimizer"])
__getattr__ = lazy_exports(__name__, _EXPORTS)

# name -> APOLLO options (None: plain AdamW); rank/scale may be overridden by OptimArguments.
VARIANTS = {
    "apollo_adamw": {"rank": 256, "scale_type": "channel", "scale": 1.0},
    "apollo_mini": {"rank": 1, "scale_type": "tensor", "scale": 128.0},
    "adamw": None,
}


def build_optimizer(name: str, model, training_args=None, run_config: dict | None = None):
    """Build optimizer ``name`` for ``model`` with the group policy of groups.py.

    ``training_args`` gives learning_rate, weight_decay, adam_beta1/2 and
    adam_epsilon (TrainingArguments or anything with those attributes);
    ``run_config`` may hold OptimArguments keys. The group summary is kept on
    ``optimizer.hfself_groups``.
    """
    import torch

    from hfself.args import from_run_config

    from .apollo import Apollo
    from .config import OptimArguments
    from .groups import parameter_groups

    if name not in VARIANTS:
        raise ValueError(f"unknown optimizer {name!r}; the optim plugin has {sorted(VARIANTS)}")
    opts = from_run_config(OptimArguments, run_config or {})
    lr = getattr(training_args, "learning_rate", 1e-3)
    weight_decay = getattr(training_args, "weight_decay", 0.0)
    betas = (getattr(training_args, "adam_beta1", 0.9), getattr(training_args, "adam_beta2", 0.999))
    eps = getattr(training_args, "adam_epsilon", 1e-8)
    apollo = None
    if VARIANTS[name] is not None:
        apollo = dict(VARIANTS[name])
        if opts.apollo_rank is not None:
            apollo["rank"] = opts.apollo_rank
        if opts.apollo_scale is not None:
            apollo["scale"] = opts.apollo_scale
        apollo.update(update_proj_gap=opts.apollo_update_proj_gap, norm_growth_limit=opts.apollo_norm_growth_limit,
                      seed=opts.apollo_seed, cache_projection=opts.apollo_cache_projection)
    groups, summary = parameter_groups(model, learning_rate=lr, weight_decay=weight_decay, apollo=apollo,
                                       apollo_modules=opts.apollo_modules,
                                       identity_learning_rate=opts.identity_learning_rate)
    if apollo is None:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    else:
        optimizer = Apollo(groups, lr=lr, betas=betas, eps=eps)
    optimizer.hfself_groups = summary
    return optimizer


def _factory(name: str):
    def factory(model, training_args, run_config=None):
        return build_optimizer(name, model, training_args, run_config)

    factory.__name__ = f"build_{name}"
    return factory


@hookimpl
def hfself_register_optimizers(register):
    for name in VARIANTS:
        register(name, _factory(name))
