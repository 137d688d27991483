"""``hfself temporal``: per-token routing, hysteresis and fatigue of a saved TemporalLoraForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path


def register_commands(cli) -> None:
    temporal = cli.add_parser("temporal", help="Temporal LoRA analysis").add_subparsers(dest="temporal_command")
    p = temporal.add_parser("route", help="per-token routing weights of a text (JSON, and route.png)")
    p.add_argument("--model", required=True, help="a saved TemporalLoraForCausalLM (directory or Hub id)")
    p.add_argument("--text", help="the text (default: a held-out Shakespeare block then a Python block)")
    p.add_argument("--output_dir", default="outputs/route", help="where route.json and route.png go")
    p.set_defaults(func=_cmd_route)
    for name, helptext in (("hysteresis", "A→B→A and A→Mix→A: switch lag, return gap, asymmetry"),
                           ("fatigue", "vary the B block length: crystallization, relaxation, Pearson r")):
        p = temporal.add_parser(name, help=f"{helptext} (JSON + PNG)")
        p.add_argument("--model", required=True, help="a saved TemporalLoraForCausalLM (directory or Hub id)")
        p.add_argument("--corpora", nargs=2, help="corpora of domains A and B (default: the model's first two "
                                                  "domains as corpus names)")
        p.add_argument("--output_dir", default=f"outputs/{name}", help="where the JSON and PNG go")
        p.add_argument("--trials", type=int, default=4)
        p.add_argument("--seed", type=int, default=0)
        if name == "hysteresis":
            p.add_argument("--segment", type=int, default=64, help="tokens per segment")
            p.add_argument("--k", type=int, default=3, help="consecutive tokens above 0.9 that complete a switch")
        else:
            p.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
        p.set_defaults(func=_cmd_experiment, experiment=name)


def _load(path):
    from transformers import AutoTokenizer

    from .model import TemporalLoraForCausalLM

    return TemporalLoraForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _cmd_route(args) -> int:
    import torch

    from hfself import persist

    from .analysis import TokenSource, plot_routing

    model, tokenizer = _load(args.model)
    if args.text:
        ids = tokenizer(args.text, add_special_tokens=False)["input_ids"]
    else:
        ids = sum((TokenSource(tokenizer, d, seed=i).block(32) for i, d in enumerate(model.domains[:2])), [])
    with torch.no_grad():
        weights = model.routing(torch.tensor([ids]))[0]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    result = {"domains": model.domains, "tokens": tokens, "weights": weights.tolist()}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    persist.save_json(out / "route.json", result)
    plot_routing(tokenizer, ids, weights, model.domains, out / "route.png")
    print(json.dumps({**result, "written": {"json": str(out / "route.json"), "plot": str(out / "route.png")}}))
    return 0


def _cmd_experiment(args) -> int:
    from . import analysis

    model, tokenizer = _load(args.model)
    corpora = tuple(args.corpora or model.domains[:2])
    if args.experiment == "hysteresis":
        result = analysis.hysteresis(model, tokenizer, corpora, segment=args.segment, k=args.k,
                                     trials=args.trials, seed=args.seed, out_dir=args.output_dir)
    else:
        result = analysis.fatigue(model, tokenizer, corpora, lengths=tuple(args.lengths), trials=args.trials,
                                  seed=args.seed, out_dir=args.output_dir)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return 0
