"""Register plugin models with the transformers Auto classes at ``import hfself``, importing nothing heavy.

A plugin declares its classes as entry points, one group per Auto class; the
entry point's name is the ``model_type``::

    [project.entry-points."hfself.auto_config"]
    my_type = "my_plugin:MyConfig"
    [project.entry-points."hfself.auto_model_for_causal_lm"]
    my_type = "my_plugin:MyForCausalLM"
    [project.entry-points."hfself.auto_tokenizer"]          # optional
    my_type = "my_plugin:MyTokenizer"

When transformers' Auto modules are imported (or at once, if they already
are), each declared ``model_type`` is added to their name tables, the way
transformers lists its own models, and ``transformers.models.<model_type>``
resolves the class names from the plugin on first use. So
``AutoConfig.for_model("spiralformer")`` or
``AutoModelForCausalLM.from_pretrained(persona_dir)`` work after
``import hfself`` while ``hfself --help`` imports neither torch nor
transformers. The ``hfself_register_models`` hook still registers classes of
plugins without these entry points (when the plugin manager loads).
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import sys
import types
import warnings
from functools import cache

LOADER_MODULE = "modeling_hfself"  # written beside an hfself model's config.json (hfself.wrapper.write_loader_module)


def auto_map(config_name: str, model_name: str) -> dict[str, str]:
    """The ``auto_map`` an hfself model's config carries. With hfself imported it changes nothing (the classes are
    registered); tools that read it (TRL's reference model, ``trust_remote_code=True`` in a program that never
    imports hfself) reach hfself's classes through :data:`LOADER_MODULE`."""
    return {"AutoConfig": f"{LOADER_MODULE}.{config_name}", "AutoModelForCausalLM": f"{LOADER_MODULE}.{model_name}"}


# entry-point group -> (transformers module whose name table gets the entry, the table)
GROUPS = {
    "hfself.auto_config": ("transformers.models.auto.configuration_auto", "CONFIG_MAPPING_NAMES"),
    "hfself.auto_model_for_causal_lm": ("transformers.models.auto.modeling_auto", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "hfself.auto_tokenizer": ("transformers.models.auto.tokenization_auto", "TOKENIZER_MAPPING_NAMES"),
}
# the Auto mappings built from CONFIG_MAPPING_NAMES before hfself was imported need the reverse entry
MAPPINGS = {
    "transformers.models.auto.modeling_auto": "MODEL_FOR_CAUSAL_LM_MAPPING",
    "transformers.models.auto.tokenization_auto": "TOKENIZER_MAPPING",
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


class _PluginClasses(types.ModuleType):
    """Stands in for ``transformers.models.<model_type>``: resolves its class names from the declaring plugin."""

    def __init__(self, name: str, entry_points: dict[str, importlib.metadata.EntryPoint]):
        super().__init__(name, f"hfself plugin classes for {name.rsplit('.', 1)[-1]!r}")
        self._entry_points = entry_points

    def __getattr__(self, attr: str):
        entry_point = self.__dict__.get("_entry_points", {}).get(attr)
        if entry_point is None:
            raise AttributeError(f"{self.__name__} has no attribute {attr!r}")
        value = entry_point.load()
        setattr(self, attr, value)
        return value


def _stand_in(model_type: str) -> _PluginClasses | None:
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    name = f"transformers.models.{model_type_to_module_name(model_type)}"
    module = sys.modules.get(name)
    if module is None:
        module = sys.modules[name] = _PluginClasses(name, {})
    if not isinstance(module, _PluginClasses):
        return None
    return module


def _patch(module_name: str) -> None:
    """Add every declared model_type to the name table of ``module_name`` (idempotent)."""
    module = sys.modules[module_name]
    config_names = sys.modules["transformers.models.auto.configuration_auto"].CONFIG_MAPPING_NAMES
    for group, (target, table_name) in GROUPS.items():
        if target != module_name:
            continue
        table = getattr(module, table_name)
        for model_type, entry_point in declared()[group].items():
            if model_type not in declared()["hfself.auto_config"]:
                continue  # a model or tokenizer needs its config declared too
            if group == "hfself.auto_config" and model_type in table and table[model_type] != entry_point.attr:
                warnings.warn(f"hfself: plugin model_type {model_type!r} is already a transformers model type; "
                              f"{entry_point.value} is not registered with AutoConfig", stacklevel=2)
                continue
            stand_in = _stand_in(model_type)
            if stand_in is None:  # transformers has a real module of that name
                continue
            stand_in._entry_points[entry_point.attr] = entry_point
            table[model_type] = entry_point.attr
    if module_name in MAPPINGS:
        mapping = getattr(module, MAPPINGS[module_name])
        for model_type, entry_point in declared()["hfself.auto_config"].items():
            if config_names.get(model_type) == entry_point.attr:
                mapping._reverse_config_mapping.setdefault(entry_point.attr, model_type)


class _PatchAfterExec(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def __getattr__(self, name: str):  # get_source, is_package, ... for tracebacks and tools
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _patch(module.__name__)


class _AutoModulesFinder(importlib.abc.MetaPathFinder):
    """Patches transformers' Auto modules right after they are executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchAfterExec(spec.loader)
                return spec
        return None


_TARGETS = [target for target, _ in GROUPS.values()]


def install() -> None:
    """Patch the Auto modules already imported; patch the others when they are (called by ``import hfself``)."""
    if not any(declared().values()):
        return
    if not any(isinstance(finder, _AutoModulesFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AutoModulesFinder())
    for target in _TARGETS:  # configuration_auto first: the others read its table
        if target in sys.modules:
            _patch(target)
