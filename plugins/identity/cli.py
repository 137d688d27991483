"""``hfself identity``: persona blends."""

from __future__ import annotations

import json
from pathlib import Path


def register_commands(cli) -> None:
    p = cli.add_parser("export", help="write a persona as a plain transformers model (identity folded into the Q/K "
                                      "biases, LoRA merged) that loads without hfself")
    p.add_argument("persona", help="a saved persona (directory or Hub id)")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--base", help="the base model to load the persona onto (default: the one its config names)")
    p.set_defaults(func=_cmd_export)

    identity = cli.add_parser("identity", help="persona tools").add_subparsers(dest="identity_command")
    p = identity.add_parser("blend", help="blend persona A toward B in the identity latent and generate "
                                          "(any identity block; blend.json + blend.png)")
    p.add_argument("--a", required=True, help="persona A (its base model is used)")
    p.add_argument("--b", required=True, help="persona B (only its identity is used)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--method", default="slerp", choices=["slerp", "lerp"])
    p.add_argument("--prompt", default="Who am I? Where do I want to go?")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--output_dir", default="outputs/blend", help="where blend.json and blend.png go")
    p.add_argument("--save_to", help="with one alpha: also save the blended persona here")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_blend)


def _cmd_export(args) -> int:
    from .model import export_persona

    print(json.dumps(export_persona(args.persona, args.out, args.base), indent=2))
    return 0


def _cmd_blend(args) -> int:
    from transformers import AutoTokenizer

    from .analysis import blend_sweep, write_blend
    from .blend import blend_personas

    if args.save_to and len(args.alphas) != 1:
        raise SystemExit("hfself identity blend: --save_to needs exactly one --alphas value")
    tokenizer = AutoTokenizer.from_pretrained(args.a)
    result = blend_sweep(args.a, args.b, args.alphas, tokenizer, args.method, args.prompt, args.max_new_tokens,
                         args.seed)
    files = write_blend(result, args.output_dir)
    if args.save_to:
        blend_personas(args.a, args.b, args.alphas[0], args.method).save_pretrained(args.save_to)
        tokenizer.save_pretrained(args.save_to)
        files["persona"] = Path(args.save_to)
    for point in result["points"]:
        print(f"alpha={point['alpha']:.2f}  cos(A)={point['cos_to_a']:+.3f}  cos(B)={point['cos_to_b']:+.3f}  "
              f"{point['text']!r}")
    print(json.dumps({"written": {k: str(v) for k, v in files.items()}}, indent=2))
    return 0
