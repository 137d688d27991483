"""Plugin ``attention``: W_q-only training, the dream loop and the attention probe.

Anatomy: config.py (AttentionArguments, DreamArguments), layer.py
(QOnlyTraining), callbacks.py (QOnlyCallback, DreamCallback), probe.py
(AttentionProbe), listening.py (the bundled "listening" conversations); this
module holds the hook implementations and the ``hfself attention`` command.
"""

from __future__ import annotations

import json
from pathlib import Path

from hfself import hookimpl

from .callbacks import DreamCallback, QOnlyCallback, ReplayBuffer, ReplayCollator
from .config import AttentionArguments, DreamArguments
from .layer import QOnlyTraining
from .listening import conversation_text, listening_conversations
from .probe import AttentionProbe, span_attention_mass

__all__ = ["AttentionArguments", "AttentionProbe", "DreamArguments", "DreamCallback", "QOnlyCallback",
           "QOnlyTraining", "ReplayBuffer", "ReplayCollator", "conversation_text", "listening_conversations",
           "span_attention_mass"]


@hookimpl
def hfself_register_callbacks(register):
    register("dream", lambda run_config, **kw: _dream_callback(run_config))


def _dream_callback(run_config: dict) -> DreamCallback:
    return DreamCallback(DreamArguments.from_run_config(run_config), seed=run_config.get("seed", 0))


@hookimpl
def hfself_prepare_model(model, run_config):
    """``train_modules: q_only`` freezes the backbone except W_q (the model itself is not wrapped)."""
    if run_config.get("train_modules", "all") == "q_only" and getattr(model, "hfself_q_only", None) is None:
        model.hfself_q_only = QOnlyTraining(model)
    return None


@hookimpl
def hfself_trainer_callbacks(model, run_config):
    callbacks = []
    q_only = getattr(model, "hfself_q_only", None)
    if q_only is not None and q_only.fused:
        callbacks.append(QOnlyCallback(q_only))
    if run_config.get("dream_interval", 0) > 0 and "dream" not in (run_config.get("callbacks") or []):
        callbacks.append(_dream_callback(run_config))
    return callbacks


@hookimpl
def hfself_register_commands(cli):
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
    p.add_argument("--output_dir", default="probe", help="where the report goes")
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args) -> int:
    from hfself.persist import read_jsonl
    from hfself.train import load_causal_lm

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
