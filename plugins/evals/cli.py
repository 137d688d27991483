"""``hfself eval``: evaluate a persona and write its report."""

from __future__ import annotations

import json

from .config import MEASURES


def register_commands(cli) -> None:
    p = cli.add_parser("eval", help="evaluate a persona: perplexity, consistency, persistence, stability, safety "
                                    "(eval.json, report.md, PNGs)")
    p.add_argument("--persona", help="a saved persona (directory or Hub id)")
    p.add_argument("--base", help="the base model (Hub id, directory or hfself: id): the persona goes onto it and "
                                  "every measure is reported for both side by side; alone, the base is evaluated")
    p.add_argument("--persona_data", help="the persona's data for adherence (e.g. hfself:wren)")
    p.add_argument("--config", help="eval.yaml with EvalArguments keys; flags override it")
    p.add_argument("--output_dir", help="where the report goes")
    p.add_argument("--measures", nargs="+", help=f"any of {MEASURES}")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    from hfself.args import parse_args

    from . import analysis
    from .config import EvalArguments

    argv = [f"--{k}={v}" for k in ("persona", "base", "persona_data", "output_dir") if (v := getattr(args, k))]
    if args.measures:
        argv += ["--measures", *args.measures]
    (eval_args,) = parse_args((EvalArguments,), argv, config=args.config)
    if not (eval_args.persona or eval_args.base):
        raise SystemExit("hfself eval: name a persona (--persona or persona: in the config), a base model (--base), "
                         "or both")
    results = analysis.run(eval_args)
    files = analysis.write(results, eval_args.output_dir)
    summary = {k: v for k, v in results.items() if k in ("perplexity",)}
    for name, key in (("adherence", "adherence"), ("capability", "accuracy")):
        for side, source in (("persona", results), ("base", results["base"])):
            if name in source:
                summary[f"{side}/{name}"] = source[name][key]
    print(json.dumps({"written": {k: str(v) for k, v in files.items()}, **summary}, indent=2))
    return 0
