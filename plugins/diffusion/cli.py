"""``hfself diffusion measure``: diversity, stability and cost of introspection rounds."""

from __future__ import annotations

import json


def register_commands(cli) -> None:
    diffusion = cli.add_parser("diffusion", help="introspection measures").add_subparsers(dest="diffusion_command")
    p = diffusion.add_parser("measure", help="diversity, stability and cost of introspection rounds (JSON + PNG)")
    p.add_argument("--persona", required=True, help="a saved persona (directory or Hub id), any identity block")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--perturbations", type=int, default=3, help="perturbed prompts per kind (typos/shuffle/inject)")
    p.add_argument("--identity_lr", type=float, default=2e-4, help="learning rate of each round's update")
    p.add_argument("--output_dir", default="outputs/introspection",
                   help="where introspection.json and the PNG go")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_measure)


def _cmd_measure(args) -> int:
    from transformers import AutoTokenizer

    from hfself_plugins.identity import IdentityForCausalLM, IntrospectionArguments

    from .analysis import measure_introspection, write_introspection

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
