"""The hfself plugin contract: every hook a plugin may implement.

A plugin is a module (named by an entry point in the ``hfself`` group) with
functions decorated by :data:`hookimpl`. Registration hooks receive a
``register`` callable and return nothing; the core validates names, rejects
duplicates and records which plugin registered what. Registration hooks always
run. Run-time hooks (those under "Run-time hooks") are only called for the
plugins a run enables (``plugins: [...]`` in a recipe's YAML).

Example plugin module::

    from hfself import hookimpl

    @hookimpl
    def hfself_register_callbacks(register):
        register("hello", lambda run_config, **kw: HelloCallback())
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("hfself")
hookimpl = pluggy.HookimplMarker("hfself")

Register = Callable[..., None]


# ---------------------------------------------------------------- registration hooks


@hookspec
def hfself_register_identity_blocks(register: Register) -> None:
    """Register Identity Block classes.

    :param register: call ``register(name, block_cls)`` once per block type;
        ``name`` is what ``IdentityConfig(block=name)`` selects. ``block_cls`` is
        an ``nn.Module`` class built as ``block_cls(config, arch_info)``.
    :return: nothing.

    Called when the identity registry is first used.
    """


@hookspec
def hfself_register_arch_adapters(register: Register) -> None:
    """Teach :mod:`hfself.arch` a model type its table lacks.

    :param register: call ``register(model_type, adapter)`` where ``model_type``
        is ``config.model_type`` (e.g. ``"my_llm"``) and ``adapter`` is an
        :class:`hfself.arch.ArchAdapter` saying where the decoder layers and the
        attention projections are and how Q/K are laid out in them.
    :return: nothing.

    Called the first time an architecture is inspected.
    """


@hookspec
def hfself_register_callbacks(register: Register) -> None:
    """Register ``TrainerCallback`` factories by name.

    :param register: call ``register(name, factory)``; ``factory(run_config, **kwargs)``
        returns a ``transformers.TrainerCallback``. Recipes list names under
        ``callbacks:``.
    :return: nothing.
    """


@hookspec
def hfself_register_optimizers(register: Register) -> None:
    """Register optimizer factories by name.

    :param register: call ``register(name, factory)``; ``factory(model, training_args, **kwargs)``
        returns a ``torch.optim.Optimizer``.
    :return: nothing.
    """


@hookspec
def hfself_register_models(register: Register) -> None:
    """Register custom architectures with the transformers Auto classes.

    :param register: call ``register(config_cls, model_cls)``; the core calls
        ``AutoConfig.register(config_cls.model_type, config_cls)`` and
        ``AutoModelForCausalLM.register(config_cls, model_cls)``.
    :return: nothing.
    """


@hookspec
def hfself_register_steering_modes(register: Register) -> None:
    """Register Prism steering modes (Anima).

    :param register: call ``register(name, mode)`` where ``mode`` describes a
        steering vector over SAE features (positive boosts, negative suppresses).
    :return: nothing.
    """


@hookspec
def hfself_register_metrics(register: Register) -> None:
    """Register evaluation metrics.

    :param register: call ``register(name, metric)``; ``metric`` is a callable
        or the path of a local ``evaluate`` module.
    :return: nothing.
    """


@hookspec
def hfself_register_commands(cli: Any) -> None:
    """Add ``hfself`` sub-commands.

    :param cli: the ``argparse`` sub-parsers object of the ``hfself`` command;
        call ``cli.add_parser(name, help=...)`` and ``set_defaults(func=...)``
        where ``func(args)`` runs the command.
    :return: nothing.
    """


# ---------------------------------------------------------------- run-time hooks
# Called only for the plugins a run enables.


@hookspec
def hfself_prepare_model(model: Any, run_config: dict) -> Any:
    """Wrap or modify the model before training.

    :param model: the model built so far (a ``PreTrainedModel``, maybe already
        wrapped by an earlier plugin or by peft).
    :param run_config: the recipe's resolved arguments as a flat ``dict``.
    :return: the model to use from now on, or ``None`` to leave it unchanged.

    Called once per run, in plugin-registration order, before the trainer exists.
    """


@hookspec
def hfself_trainer_callbacks(model: Any, run_config: dict) -> list:
    """Contribute ``TrainerCallback`` objects to a run.

    :param model: the prepared model.
    :param run_config: the recipe's resolved arguments as a flat ``dict``.
    :return: a list of callbacks (may be empty).

    Called once per run, after :func:`hfself_prepare_model`.
    """
