"""``hfself attention probe``: attention mass on labelled spans, before vs after training."""

from __future__ import annotations

import json
from pathlib import Path


def register_commands(cli) -> None:
    attention = cli.add_parser("attention", help="attention training tools").add_subparsers(dest="attention_command")
    p = attention.add_parser("probe", help="attention mass on labelled spans, before vs after training "
                                           "(JSON, heatmap PNGs, summary.md)")
    p.add_argument("--model", required=True, help="the trained model (Hub id or directory)")
    p.add_argument("--before", required=True, help="the model before training, to compare with")
    p.add_argument("--conversations", help="JSONL, one {'segments': [{'label', 'text'}, ...]} per line; a segment "
                                           "labelled 'response' is where attention is read (default: 32 bundled "
                                           "listening conversations)")
    p.add_argument("--num", type=int, default=32, help="bundled conversations to use")
    p.add_argument("--spans", nargs="*", help="labels to report (default: all but 'response')")
    p.add_argument("--output_dir", default="outputs/probe", help="where the report goes")
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args) -> int:
    from hfself.persist import read_jsonl
    from hfself.train import load_causal_lm

    from .analysis import AttentionProbe
    from .listening import listening_conversations

    if args.conversations:
        conversations = [record["segments"] for record in read_jsonl(Path(args.conversations))]
    else:
        conversations = listening_conversations(args.num, seed=12345)
    probe = AttentionProbe(conversations, spans=args.spans)
    measured = {}
    for key in ("before", "model"):
        model, tokenizer = load_causal_lm(getattr(args, key), attn_implementation="eager")
        measured[key] = probe.measure(model, tokenizer)
    summary = probe.report(measured["before"], measured["model"], args.output_dir)
    print(json.dumps(summary, indent=2))
    return 0
