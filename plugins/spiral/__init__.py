"""Plugin ``spiral``: Spiralformer, the contemplative transformer.

Anatomy: config.py (SpiralformerConfig, SpiralArguments), codec.py (the 64-glyph codec and
GlyphTokenizer), model.py (the whole model, nanoGPT-style), data.py (datagen), probe.py
(contemplative generator and probe), trainer.py (RhythmicTrainer: skips non-finite
batches); this module holds the hook implementations and ``hfself spiral``.
"""

from hfself import hookimpl

from .codec import GlyphCodec, GlyphError, GlyphTokenizer
from .config import SpiralArguments, SpiralformerConfig
from .model import BreathClock, SpiralformerForCausalLM, TowerMemory, spiral_attention, spiral_mask

__all__ = ["BreathClock", "GlyphCodec", "GlyphError", "GlyphTokenizer", "SpiralArguments", "SpiralformerConfig",
           "SpiralformerForCausalLM", "TowerMemory", "spiral_attention", "spiral_mask"]


@hookimpl
def hfself_register_models(register):
    register(SpiralformerConfig, SpiralformerForCausalLM)


@hookimpl
def hfself_register_commands(cli):
    spiral = cli.add_parser("spiral", help="Spiralformer tools").add_subparsers(dest="spiral_command")
    p = spiral.add_parser("probe", help="contemplative generation over scenarios: silence, proportionality, "
                                        "holism, breath-to-query, mood (table + JSON)")
    p.add_argument("--model", required=True, help="a saved SpiralformerForCausalLM directory")
    p.add_argument("--samples", type=int, default=4, help="generations per scenario")
    p.add_argument("--entropy_threshold", type=float, default=2.0, help="above it, a step stays silent")
    p.add_argument("--max_new_glyphs", type=int, default=24)
    p.add_argument("--output", default="spiral_probe.json")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args) -> int:
    from .probe import probe, table, write

    model = SpiralformerForCausalLM.from_pretrained(args.model)
    result = probe(model, samples=args.samples, seed=args.seed, entropy_threshold=args.entropy_threshold,
                   max_new_glyphs=args.max_new_glyphs)
    write(result, args.output)
    print(table(result))
    print(f"written: {args.output}")
    return 0
