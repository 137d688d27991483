"""The plugin manager: load ``hfself`` entry points once, build registries.

Environment:
  ``HFSELF_LOAD_PLUGINS=a,b``  load only these entry points ("" loads none).
  ``HFSELF_TRACE_PLUGINS=1``   print every hook call and its result.

A plugin that fails to import or implements a misspelled hook is reported with
a warning naming it and left out; the others still load. Registries map a name
to what a plugin registered; registering a name twice is an error naming both
plugins.
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

# registry kind -> hook name
REGISTRATION_HOOKS = {
    "identity_blocks": "hfself_register_identity_blocks",
    "arch_adapters": "hfself_register_arch_adapters",
    "callbacks": "hfself_register_callbacks",
    "optimizers": "hfself_register_optimizers",
    "models": "hfself_register_models",
    "steering_modes": "hfself_register_steering_modes",
    "metrics": "hfself_register_metrics",
}


class DuplicateRegistrationError(ValueError):
    pass


class _State:
    pm: pluggy.PluginManager | None = None
    load_errors: dict[str, str] = {}
    versions: dict[str, str] = {}
    registries: dict[str, dict[str, tuple[Any, str]]] = {}


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("HFSELF_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[hfself trace] {msg}"))
        pm.enable_tracing()
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
            module = ep.load()
            pm.register(module, name=ep.name)
            pm.check_pending()
        except Exception as err:  # a broken plugin must not break the others
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            _State.load_errors[ep.name] = f"{type(err).__name__}: {err}"
            warnings.warn(f"hfself plugin {ep.name!r} failed to load and was skipped: {err}", stacklevel=2)
            continue
        _State.versions[ep.name] = ep.dist.version if ep.dist else "unknown"
    _register_models(pm)


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


def registry(kind: str) -> dict[str, Any]:
    """``name -> object`` for one registry kind (see ``REGISTRATION_HOOKS``)."""
    return {name: obj for name, (obj, _) in registry_with_owners(kind).items()}


def registry_with_owners(kind: str) -> dict[str, tuple[Any, str]]:
    """``name -> (object, plugin name)`` for one registry kind."""
    if kind not in REGISTRATION_HOOKS:
        raise KeyError(f"unknown registry {kind!r}; known: {sorted(REGISTRATION_HOOKS)}")
    if kind not in _State.registries:
        entries: dict[str, tuple[Any, str]] = {}

        def register(owner: str, name, obj) -> None:
            if kind == "models":  # register(config_cls, model_cls), keyed by model_type
                name, obj = name.model_type, (name, obj)
            if name in entries:
                raise DuplicateRegistrationError(
                    f"{kind}: {name!r} is registered by both plugin {entries[name][1]!r} and plugin {owner!r}"
                )
            entries[name] = (obj, owner)

        for owner, caller in per_plugin_callers(REGISTRATION_HOOKS[kind]):
            caller(register=partial(register, owner))
        _State.registries[kind] = entries
    return _State.registries[kind]


def _register_models(pm: pluggy.PluginManager) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for config_cls, model_cls in registry("models").values():
        if config_cls.model_type not in CONFIG_MAPPING:
            AutoConfig.register(config_cls.model_type, config_cls)
            AutoModelForCausalLM.register(config_cls, model_cls)


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
        for kind in REGISTRATION_HOOKS:
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
