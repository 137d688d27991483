"""Register plugin models with the transformers Auto classes at ``import hfself``, importing nothing heavy then.

A plugin declares its classes as entry points, one group per Auto class; the
entry point's name is the ``model_type``::

    [project.entry-points."hfself.auto_config"]
    my_type = "my_plugin:MyConfig"
    [project.entry-points."hfself.auto_model_for_causal_lm"]
    my_type = "my_plugin:MyForCausalLM"
    [project.entry-points."hfself.auto_tokenizer"]          # optional
    my_type = "my_plugin:MyTokenizer"

When transformers' Auto modules are imported (or at once, if they already
are), each declared class is registered through their public ``register``
(``AutoConfig.register``, ``AutoModelForCausalLM.register``,
``AutoTokenizer.register``). So ``AutoConfig.for_model("spiralformer")`` or
``AutoModelForCausalLM.from_pretrained(persona_dir)`` work after
``import hfself``, and ``import hfself`` or ``hfself --help`` imports neither
torch nor transformers. The cost is paid when transformers' Auto modules are
imported: the declared configs (and torch, which they import) load with
``configuration_auto``, the declared models with ``modeling_auto``. The
``hfself_register_models`` hook still registers classes of plugins without
these entry points (when the plugin manager loads).
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import sys
import warnings
from functools import cache

LOADER_MODULE = "modeling_hfself"  # written beside an hfself model's config.json (hfself.wrapper.write_loader_module)


def auto_map(config_name: str, model_name: str) -> dict[str, str]:
    """The ``auto_map`` an hfself model's config carries. With hfself imported it changes nothing (the classes are
    registered); tools that read it (TRL's reference model, ``trust_remote_code=True`` in a program that never
    imports hfself) reach hfself's classes through :data:`LOADER_MODULE`."""
    return {"AutoConfig": f"{LOADER_MODULE}.{config_name}", "AutoModelForCausalLM": f"{LOADER_MODULE}.{model_name}"}


# entry-point group -> the transformers module whose Auto class registers it
GROUPS = {
    "hfself.auto_config": "transformers.models.auto.configuration_auto",
    "hfself.auto_model_for_causal_lm": "transformers.models.auto.modeling_auto",
    "hfself.auto_tokenizer": "transformers.models.auto.tokenization_auto",
}


@cache
def declared() -> dict[str, dict[str, importlib.metadata.EntryPoint]]:
    """``group -> {model_type: entry point}`` of every installed plugin."""
    found = importlib.metadata.entry_points()
    return {group: {ep.name: ep for ep in found.select(group=group)} for group in GROUPS}


def declaring_distributions() -> set[str]:
    """The distributions whose models are registered here (their plugins' ``hfself_register_models`` is not needed)."""
    return {ep.dist.name for ep in declared()["hfself.auto_config"].values() if ep.dist}


def model_types() -> set[str]:
    """Every ``model_type`` a plugin declares (hfself's own models among them)."""
    return set(declared()["hfself.auto_config"])


class _Registration:
    """Runs each Auto module's registrations once it is executed, one at a time: loading a plugin's config may
    import another Auto module, whose registrations then wait until this one's are done."""

    pending: list[str] = []
    busy = False
    done: set[str] = set()


def _register(module_name: str) -> None:
    _Registration.pending.append(module_name)
    if _Registration.busy:
        return
    _Registration.busy = True
    try:
        while _Registration.pending:
            name = _Registration.pending.pop(0)
            if name not in _Registration.done:
                _Registration.done.add(name)
                try:
                    _register_group(name)
                except Exception as err:  # a broken plugin must not break importing transformers
                    warnings.warn(f"hfself: registering plugin classes with {name} failed: {err}", stacklevel=2)
    finally:
        _Registration.busy = False


def _register_group(module_name: str) -> None:
    """Register every declared class of the Auto module ``module_name`` through its public ``register``."""
    configs = sys.modules["transformers.models.auto.configuration_auto"]
    if module_name == GROUPS["hfself.auto_config"]:
        for model_type, entry_point in declared()["hfself.auto_config"].items():
            try:
                configs.AutoConfig.register(model_type, entry_point.load(), exist_ok=True)
            except ValueError as err:  # a model_type transformers has itself
                warnings.warn(f"hfself: {entry_point.value} is not registered with AutoConfig: {err}", stacklevel=2)
        return
    group = next(g for g, target in GROUPS.items() if target == module_name)
    auto_class = {"hfself.auto_model_for_causal_lm": "AutoModelForCausalLM",
                  "hfself.auto_tokenizer": "AutoTokenizer"}[group]
    for model_type, entry_point in declared()[group].items():
        try:
            config_cls = configs.CONFIG_MAPPING[model_type]
        except KeyError:
            continue  # a model or tokenizer needs its config declared (and registered) too
        if config_cls.__module__.startswith("transformers."):
            continue  # transformers' own type of that name
        getattr(sys.modules[module_name], auto_class).register(config_cls, entry_point.load(), exist_ok=True)


class _RegisterAfterExec(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def __getattr__(self, name: str):  # get_source, is_package, ... for tracebacks and tools
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _register(module.__name__)


class _AutoModulesFinder(importlib.abc.MetaPathFinder):
    """Registers hfself's classes with transformers' Auto classes right after their modules are executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


_TARGETS = list(GROUPS.values())


def install() -> None:
    """Register with the Auto modules already imported, and with the others when they are (``import hfself``)."""
    if not any(declared().values()):
        return
    if not any(isinstance(finder, _AutoModulesFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AutoModulesFinder())
    for target in _TARGETS:  # configuration_auto first: the others need its configs
        if target in sys.modules:
            _register(target)
