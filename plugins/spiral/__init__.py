"""Plugin ``spiral``: Spiralformer, the contemplative transformer.

Anatomy: config.py (SpiralformerConfig, SpiralArguments), codec.py (the 64-glyph codec and
GlyphTokenizer), model.py (the whole model, nanoGPT-style), data.py (datagen), analysis.py
(contemplative generator and probe), trainer.py (RhythmicTrainer: skips non-finite batches),
cli.py (``hfself spiral``); this module holds the hook implementations and imports the rest
on first use.
"""

from hfself import hookimpl
from hfself.lazy import lazy_exports

_EXPORTS = {
    "GlyphCodec": ".codec", "GlyphError": ".codec", "GlyphTokenizer": ".codec",
    "SpiralArguments": ".config", "SpiralformerConfig": ".config",
    "BreathClock": ".model", "SpiralformerForCausalLM": ".model", "TowerMemory": ".model",
    "spiral_attention": ".model", "spiral_mask": ".model",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def hfself_register_models(register):
    from .codec import GlyphTokenizer
    from .config import SpiralformerConfig
    from .model import SpiralformerForCausalLM

    register(SpiralformerConfig, SpiralformerForCausalLM, GlyphTokenizer)


@hookimpl
def hfself_register_commands(cli):
    from .cli import register_commands

    register_commands(cli)
