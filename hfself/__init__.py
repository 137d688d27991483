"""hfself: a plugin toolkit on HuggingFace Trainer that gives causal LMs a persistent, trainable self.

Importing hfself is cheap: it imports neither torch nor transformers. It
registers every plugin-declared model with the transformers Auto classes
lazily (see :mod:`hfself.auto`), and re-exports the public names of the
built-in plugins lazily, so ``from hfself import IdentityForCausalLM`` works
while the core stays independent of them.
"""

from hfself import auto
from hfself.hookspecs import hookimpl
from hfself.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the built-in plugin that defines it
_EXPORTS = {
    "IdentityConfig": "hfself_plugins.identity",
    "IdentityForCausalLM": "hfself_plugins.identity",
    "IdentityBlock": "hfself_plugins.identity",
    "IntrospectionCallback": "hfself_plugins.identity",
    "TemporalLoraConfig": "hfself_plugins.temporal",
    "TemporalLoraForCausalLM": "hfself_plugins.temporal",
    "Apollo": "hfself_plugins.optim",
    "QOnlyTraining": "hfself_plugins.attention",
    "DreamCallback": "hfself_plugins.attention",
    "AttentionProbe": "hfself_plugins.attention",
    "AnimaConfig": "hfself_plugins.anima",
    "AnimaRuntime": "hfself_plugins.anima",
    "SpiralformerConfig": "hfself_plugins.spiral",
    "SpiralformerForCausalLM": "hfself_plugins.spiral",
    "GlyphTokenizer": "hfself_plugins.spiral",
}

__all__ = ["hookimpl", "__version__", *_EXPORTS]

__getattr__ = lazy_exports(__name__, _EXPORTS, why=" (it comes from a built-in plugin)")

auto.install()
