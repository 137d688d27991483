"""The plugin manager: load ``hfself`` entry points once, build registries.

Environment:
  ``HFSELF_LOAD_PLUGINS=a,b``  load only these entry points ("" loads none).
  ``HFSELF_TRACE_PLUGINS=1``   print every hook call and its result.

A plugin that fails to import or implements a misspelled hook is reported with
a warning naming it and left out; the others still load. Registries map a name
to what a plugin registered; registering a name twice is an error naming both
plugins. There is one registry per ``hfself_register_<kind>`` hookspec: the
core's (callbacks, optimizers, models, arch_adapters) and those plugins add
through ``hfself_addhooks`` (identity_blocks, steering_modes).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings
from functools import partial
from typing import Any, Iterable

import pluggy

from hfself import hookspecs

GROUP = "hfself"
REGISTER_PREFIX = "hfself_register_"  # hfself_register_<kind> fills registry("<kind>")
NOT_A_REGISTRY = {"hfself_register_commands"}


class DuplicateRegistrationError(ValueError):
    pass


class _State:
    pm: pluggy.PluginManager | None = None
    load_errors: dict[str, str] = {}
    versions: dict[str, str] = {}
    distributions: dict[str, str] = {}  # plugin name -> distribution that installed it
    registries: dict[str, dict[str, tuple[Any, str]]] = {}


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("HFSELF_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[hfself trace] {msg}"))
        pm.enable_tracing()
    pm.hook.hfself_addhooks.call_historic(kwargs={"pluginmanager": pm})
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    if _State.pm is None:
        _State.pm = _new_manager()
        _load_entry_points(_State.pm)
    return _State.pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    wanted = os.environ.get("HFSELF_LOAD_PLUGINS")
    allow = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if allow is not None and ep.name not in allow:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as err:  # a broken plugin must not break the others
            _skip(pm, ep.name, err)
            continue
        _State.versions[ep.name] = ep.dist.version if ep.dist else "unknown"
        if ep.dist:
            _State.distributions[ep.name] = ep.dist.name
    _drop_unverified(pm)  # after all: a plugin may implement a hook that a later plugin specifies
    _register_models(pm)


def _skip(pm: pluggy.PluginManager, name: str, err: Exception) -> None:
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    _State.load_errors[name] = f"{type(err).__name__}: {err}"
    _State.versions.pop(name, None)
    warnings.warn(f"hfself plugin {name!r} failed to load and was skipped: {err}", stacklevel=3)


def _drop_unverified(pm: pluggy.PluginManager) -> None:
    """Unregister each plugin that implements a hook nobody specifies (a misspelling, or a missing plugin)."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as err:
            _skip(pm, pm.get_name(err.plugin), err)


def add_hookspecs(pluginmanager: pluggy.PluginManager, module: Any) -> None:
    """``pluginmanager.add_hookspecs(module)`` for ``hfself_addhooks``, once: a plugin unregistered and registered
    again is asked again, and pluggy refuses a second specification."""
    names = [name for name in dir(module) if name.startswith("hfself_")]
    if not all(getattr(pluginmanager.hook, name, None) and getattr(pluginmanager.hook, name).has_spec()
               for name in names):
        pluginmanager.add_hookspecs(module)


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register an in-process plugin object or module (tests, notebooks). Returns its name."""
    pm = get_plugin_manager()
    name = pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except Exception:
        pm.unregister(name=name)
        raise
    _State.registries.clear()
    _register_models(pm)
    return name


def unregister_plugin(name: str) -> None:
    get_plugin_manager().unregister(name=name)
    _State.registries.clear()


def plugin_names() -> list[str]:
    return [name for name, _ in get_plugin_manager().list_name_plugin()]


def load_errors() -> dict[str, str]:
    get_plugin_manager()
    return dict(_State.load_errors)


def per_plugin_callers(hook_name: str, only: Iterable[str] | None = None):
    """``(plugin name, hook caller for that plugin alone)`` in registration order."""
    pm = get_plugin_manager()
    only = None if only is None else set(only)
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if only is not None and impl.plugin_name not in only:
            continue
        others = [p for n, p in pm.list_name_plugin() if n != impl.plugin_name]
        yield impl.plugin_name, pm.subset_hook_caller(hook_name, remove_plugins=others)


def registry_kinds() -> list[str]:
    """Every registry: ``<kind>`` for each ``hfself_register_<kind>`` hookspec, the core's and the plugins' own."""
    hook_names = [name for name in vars(get_plugin_manager().hook) if name.startswith(REGISTER_PREFIX)]
    return sorted(name.removeprefix(REGISTER_PREFIX) for name in hook_names
                  if name not in NOT_A_REGISTRY and getattr(get_plugin_manager().hook, name).has_spec())


def registry(kind: str, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """``name -> object`` for one registry kind (see :func:`registry_kinds`).

    ``default`` is returned when no loaded plugin specifies ``kind`` (its owner is left out, e.g. by
    ``HFSELF_LOAD_PLUGINS``); without it that is a KeyError.
    """
    if default is not None and kind not in registry_kinds():
        return default
    return {name: obj for name, (obj, _) in registry_with_owners(kind).items()}


def registry_with_owners(kind: str) -> dict[str, tuple[Any, str]]:
    """``name -> (object, plugin name)`` for one registry kind."""
    if kind not in registry_kinds():
        raise KeyError(f"unknown registry {kind!r}; known: {registry_kinds()} (a plugin adds one with a "
                       f"{REGISTER_PREFIX}<kind> hookspec; is the plugin that owns {kind!r} loaded?)")
    if kind not in _State.registries:
        entries: dict[str, tuple[Any, str]] = {}

        def register(owner: str, name, obj, *extra) -> None:
            if kind == "models":  # register(config_cls, model_cls, tokenizer_cls=None), keyed by model_type
                name, obj = name.model_type, (name, obj, *extra)
            if name in entries:
                raise DuplicateRegistrationError(
                    f"{kind}: {name!r} is registered by both plugin {entries[name][1]!r} and plugin {owner!r}"
                )
            entries[name] = (obj, owner)

        for owner, caller in per_plugin_callers(REGISTER_PREFIX + kind):
            caller(register=partial(register, owner))
        _State.registries[kind] = entries
    return _State.registries[kind]


def _register_models(pm: pluggy.PluginManager) -> None:
    """Register the ``hfself_register_models`` classes with the Auto classes, except those of distributions
    that declare them as entry points (registered lazily at ``import hfself``; importing them here would
    make every ``hfself`` command import torch)."""
    from hfself.auto import declaring_distributions

    lazy = declaring_distributions()
    models = []
    for owner, caller in per_plugin_callers("hfself_register_models"):
        if _State.distributions.get(owner) not in lazy:
            caller(register=lambda *classes: models.append(classes))
    if not models:
        return
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    for config_cls, model_cls, *tokenizer_cls in models:
        try:
            AutoConfig.register(config_cls.model_type, config_cls)
            AutoModelForCausalLM.register(config_cls, model_cls)
            if tokenizer_cls and tokenizer_cls[0] is not None:
                AutoTokenizer.register(config_cls, tokenizer_cls[0])
        except ValueError as err:  # e.g. a model_type transformers already has
            warnings.warn(f"hfself: {model_cls.__name__} was not registered with the Auto classes: {err}",
                          stacklevel=2)


def check_enabled(enabled: Iterable[str]) -> list[str]:
    """Validate the ``plugins:`` list of a run: every name must be a loaded plugin."""
    enabled = list(enabled)
    unknown = sorted(set(enabled) - set(plugin_names()))
    if unknown:
        raise ValueError(
            f"plugins {unknown} are enabled in the config but not loaded; loaded: {plugin_names()}"
            + (f"; failed to load: {load_errors()}" if load_errors() else "")
        )
    return enabled


def plugin_report() -> dict:
    """What ``hfself plugins`` prints: every plugin, its version, hooks and registrations."""
    pm = get_plugin_manager()
    plugins = []
    for name, plugin in pm.list_name_plugin():
        registered = {}
        for kind in registry_kinds():
            names = sorted(n for n, (_, owner) in registry_with_owners(kind).items() if owner == name)
            if names:
                registered[kind] = names
        plugins.append({
            "name": name,
            "version": _State.versions.get(name, "in-process"),
            "hooks": sorted(impl.name for impl in pm.get_hookcallers(plugin) or []),
            "registered": registered,
        })
    return {"plugins": plugins, "errors": load_errors()}
