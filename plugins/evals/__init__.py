"""Plugin ``evals``: perplexity, identity consistency, self-persistence, stability and safety of a persona.

Anatomy: config.py (EvalArguments), measures.py (the five measures; scores from
the local evaluate modules in metrics/), report.py (JSON, markdown, PNG),
callbacks.py (EvalCallback), data/ (challenges, safety prompts, lexicon); this
module holds the hook implementations and the ``hfself eval`` command.
"""

from __future__ import annotations

from hfself import hookimpl

from .callbacks import EvalCallback
from .config import MEASURES, EvalArguments
from .measures import METRICS_DIR, load_metric

__all__ = ["EvalArguments", "EvalCallback", "MEASURES", "load_metric"]

METRIC_NAMES = ("identity_consistency", "self_persistence", "identity_stability", "perplexity_ratio", "toxicity_gap")


@hookimpl
def hfself_register_metrics(register):
    for name in METRIC_NAMES:
        register(name, str(METRICS_DIR / name))


@hookimpl
def hfself_register_callbacks(register):
    register("eval", lambda run_config, **kw: EvalCallback(EvalArguments(**{
        k: run_config[k] for k in EvalArguments.__dataclass_fields__ if k in run_config and k != "persona"})))


@hookimpl
def hfself_register_commands(cli):
    p = cli.add_parser("eval", help="evaluate a persona: perplexity, consistency, persistence, stability, safety "
                                    "(eval.json, report.md, PNGs)")
    p.add_argument("--persona", help="a saved persona (directory or Hub id)")
    p.add_argument("--config", help="eval.yaml with EvalArguments keys; flags override it")
    p.add_argument("--output_dir", help="where the report goes")
    p.add_argument("--measures", nargs="+", help=f"any of {MEASURES}")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    import json

    from hfself.args import parse_args

    from . import report

    argv = [f"--{k}={v}" for k in ("persona", "output_dir") if (v := getattr(args, k))]
    if args.measures:
        argv += ["--measures", *args.measures]
    (eval_args,) = parse_args((EvalArguments,), argv, config=args.config)
    if not eval_args.persona:
        raise SystemExit("hfself eval: name a persona (--persona or persona: in the config)")
    results = report.run(eval_args)
    files = report.write(results, eval_args.output_dir)
    summary = {k: v for k, v in results.items() if k in ("perplexity",)}
    print(json.dumps({"written": {k: str(v) for k, v in files.items()}, **summary}, indent=2))
    return 0
