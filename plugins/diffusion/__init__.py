"""Plugin ``diffusion``: an Identity Block that denoises the identity from fresh noise (``block: diffusion``).

Anatomy: config.py (DiffusionBlockConfig), layer.py (Denoiser, DiffusionIdentityBlock),
model.py (slerp and persona blending), measures.py (diversity, stability and cost of
introspection rounds; the local evaluate module in metrics/); this module holds the
hook implementations and the ``hfself diffusion`` commands.
"""

from __future__ import annotations

from pathlib import Path

from hfself import hookimpl

from .config import DiffusionBlockConfig
from .layer import Denoiser, DiffusionIdentityBlock

__all__ = ["Denoiser", "DiffusionBlockConfig", "DiffusionIdentityBlock"]

METRICS_DIR = Path(__file__).parent / "metrics"


@hookimpl
def hfself_register_identity_blocks(register):
    register("diffusion", DiffusionIdentityBlock)


@hookimpl
def hfself_register_metrics(register):
    register("identity_diversity", str(METRICS_DIR / "identity_diversity"))


@hookimpl
def hfself_register_commands(cli):
    diffusion = cli.add_parser("diffusion", help="introspection measures and persona blends").add_subparsers(
        dest="diffusion_command")
    p = diffusion.add_parser("measure", help="diversity, stability and cost of introspection rounds (JSON + PNG)")
    p.add_argument("--persona", required=True, help="a saved persona (directory or Hub id), any identity block")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--perturbations", type=int, default=3, help="perturbed prompts per kind (typos/shuffle/inject)")
    p.add_argument("--identity_lr", type=float, default=2e-4, help="learning rate of each round's update")
    p.add_argument("--output_dir", default=".", help="where introspection.json and the PNG go")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_measure)
    p = diffusion.add_parser("blend", help="blend persona A toward B in the identity latent and generate")
    p.add_argument("--a", required=True, help="persona A (its base model is used)")
    p.add_argument("--b", required=True, help="persona B (only its identity is used)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--method", default="slerp", choices=["slerp", "lerp"])
    p.add_argument("--prompt", default="Who am I? Where do I want to go?")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--output_dir", default=".", help="where blend.json and blend.png go")
    p.add_argument("--save_to", help="with one alpha: also save the blended persona here")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_blend)


def _cmd_measure(args) -> int:
    import json

    from transformers import AutoTokenizer

    from hfself_plugins.identity import IdentityForCausalLM, IntrospectionArguments

    from .measures import measure_introspection, write_introspection

    persona = IdentityForCausalLM.from_pretrained(args.persona)
    tokenizer = AutoTokenizer.from_pretrained(args.persona)
    result = measure_introspection(persona, tokenizer, args.rounds, args.perturbations, seed=args.seed,
                                   args=IntrospectionArguments(identity_update_interval=1,
                                                               identity_lr=args.identity_lr))
    files = write_introspection(result, args.output_dir)
    print(json.dumps({"diversity": result["diversity"]["identity_diversity"],
                      "stability_distance": result["stability"]["mean_distance_to_clean"],
                      "seconds_per_round": result["cost"]["seconds_per_round"],
                      "written": {k: str(v) for k, v in files.items()}}, indent=2))
    return 0


def _cmd_blend(args) -> int:
    import json

    from transformers import AutoTokenizer

    from .measures import blend_sweep, write_blend
    from .model import blend_personas

    tokenizer = AutoTokenizer.from_pretrained(args.a)
    result = blend_sweep(args.a, args.b, args.alphas, tokenizer, args.method, args.prompt, args.max_new_tokens,
                         args.seed)
    files = write_blend(result, args.output_dir)
    if args.save_to:
        if len(args.alphas) != 1:
            raise SystemExit("hfself diffusion blend: --save_to needs exactly one --alphas value")
        blend_personas(args.a, args.b, args.alphas[0], args.method).save_pretrained(args.save_to)
        tokenizer.save_pretrained(args.save_to)
        files["persona"] = Path(args.save_to)
    for point in result["points"]:
        print(f"alpha={point['alpha']:.2f}  cos(A)={point['cos_to_a']:+.3f}  cos(B)={point['cos_to_b']:+.3f}  "
              f"{point['text']!r}")
    print(json.dumps({"written": {k: str(v) for k, v in files.items()}}, indent=2))
    return 0
