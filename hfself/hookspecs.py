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


# ---------------------------------------------------------------- bootstrap hook


@hookspec(historic=True)
def hfself_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add a plugin's own hookspecs (what other plugins may implement for it).

    :param pluginmanager: the hfself plugin manager; call
        ``hfself.plugins.add_hookspecs(pluginmanager, my_hookspecs_module)``. A spec named
        ``hfself_register_<kind>`` makes ``hfself.plugins.registry("<kind>")``
        available, with the core's validation and duplicate checks.
    :return: nothing.

    Called once for every plugin, when it is registered (historic: plugins
    registered later still get the call). The identity plugin owns
    ``hfself_register_identity_blocks`` and anima ``hfself_register_steering_modes``
    this way.
    """


# ---------------------------------------------------------------- registration hooks


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

    :param register: call ``register(config_cls, model_cls, tokenizer_cls=None)``;
        the core calls ``AutoConfig.register(config_cls.model_type, config_cls)``,
        ``AutoModelForCausalLM.register(config_cls, model_cls)`` and, with a
        tokenizer, ``AutoTokenizer.register(config_cls, tokenizer_cls)``.
    :return: nothing.

    Called when the plugin manager loads. To be registered at ``import hfself``
    already, without importing the plugin, declare the classes as entry points
    too (see :mod:`hfself.auto`).
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
