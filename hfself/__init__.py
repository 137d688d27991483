"""hfself: a plugin toolkit on HuggingFace Trainer that gives causal LMs a persistent, trainable self.

The core (this package) knows no plugin; the public names of the built-in
plugins are re-exported lazily so ``from hfself import IdentityForCausalLM``
works while the core stays independent of them.
"""

from hfself.hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY = {
    "IdentityConfig": ("hfself_plugins.identity", "IdentityConfig"),
    "IdentityForCausalLM": ("hfself_plugins.identity", "IdentityForCausalLM"),
    "IdentityBlock": ("hfself_plugins.identity", "IdentityBlock"),
    "IntrospectionCallback": ("hfself_plugins.identity", "IntrospectionCallback"),
    "TemporalLoraConfig": ("hfself_plugins.temporal", "TemporalLoraConfig"),
    "TemporalLoraForCausalLM": ("hfself_plugins.temporal", "TemporalLoraForCausalLM"),
    "Apollo": ("hfself_plugins.optim", "Apollo"),
    "QOnlyTraining": ("hfself_plugins.attention", "QOnlyTraining"),
    "DreamCallback": ("hfself_plugins.attention", "DreamCallback"),
    "AttentionProbe": ("hfself_plugins.attention", "AttentionProbe"),
    "AnimaConfig": ("hfself_plugins.anima", "AnimaConfig"),
    "AnimaRuntime": ("hfself_plugins.anima", "AnimaRuntime"),
    "SpiralformerConfig": ("hfself_plugins.spiral", "SpiralformerConfig"),
    "SpiralformerForCausalLM": ("hfself_plugins.spiral", "SpiralformerForCausalLM"),
    "GlyphTokenizer": ("hfself_plugins.spiral", "GlyphTokenizer"),
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'hfself' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"hfself.{name} comes from the built-in plugin {module_name!r}, which failed to import: "
                          f"{err}") from err
    return getattr(module, attr)
