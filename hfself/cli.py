"""The ``hfself`` command. Sub-commands come from the core and from plugins."""

from __future__ import annotations

import argparse
import json
import sys

from hfself import plugins


def _cmd_plugins(args) -> int:
    print(json.dumps(plugins.plugin_report(), indent=2))
    return 0


def _cmd_arch(args) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hfself.arch import inspect_model

    config = AutoConfig.from_pretrained(args.model)
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(config)
    info = inspect_model(model)
    print(json.dumps({
        "model_type": info.model_type, "layers": info.num_layers, "hidden_size": info.hidden_size,
        "heads": info.num_heads, "kv_heads": info.num_kv_heads, "head_dim": info.head_dim,
        "positional": info.positional, "fused_qkv": info.fused_qkv,
        "projections": [type(t.module).__name__ for t in info.layers[0].targets],
    }, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfself", description="hfself: a persistent, trainable self for causal LMs")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("plugins", help="list loaded plugins and what they registered (JSON)")
    p.set_defaults(func=_cmd_plugins)
    p = sub.add_parser("arch", help="show what hfself finds in a model's architecture (config only)")
    p.add_argument("model", help="Hub id or local directory")
    p.set_defaults(func=_cmd_arch)
    plugins.get_plugin_manager().hook.hfself_register_commands(cli=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
