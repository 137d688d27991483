"""``hfself spiral probe``: contemplative generation over the scenarios, as a table and JSON."""

from __future__ import annotations

from pathlib import Path


def register_commands(cli) -> None:
    spiral = cli.add_parser("spiral", help="Spiralformer tools").add_subparsers(dest="spiral_command")
    p = spiral.add_parser("probe", help="contemplative generation over scenarios: silence, proportionality, "
                                        "holism, breath-to-query, mood (table + spiral_probe.json)")
    p.add_argument("--model", required=True, help="a saved SpiralformerForCausalLM directory")
    p.add_argument("--samples", type=int, default=4, help="generations per scenario")
    p.add_argument("--entropy_threshold", type=float, default=2.0, help="above it, a step stays silent")
    p.add_argument("--max_new_glyphs", type=int, default=24)
    p.add_argument("--output_dir", default="outputs/spiral_probe", help="where spiral_probe.json goes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args) -> int:
    from .analysis import probe, table, write
    from .model import SpiralformerForCausalLM

    model = SpiralformerForCausalLM.from_pretrained(args.model)
    result = probe(model, samples=args.samples, seed=args.seed, entropy_threshold=args.entropy_threshold,
                   max_new_glyphs=args.max_new_glyphs)
    path = Path(args.output_dir) / "spiral_probe.json"
    write(result, path)
    print(table(result))
    print(f"written: {path}")
    return 0
