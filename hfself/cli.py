"""The ``hfself`` command. Sub-commands come from the core and from plugins (their ``cli.py``).

Building the parser imports neither torch nor transformers: ``hfself --help`` is quick, and each
command imports what it needs when it runs.
"""

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
    if args.layers is not None:  # the layout is structural: a few layers show it without the memory of all
        for key in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
            if isinstance(getattr(config.get_text_config(), key, None), int):
                setattr(config.get_text_config(), key, args.layers)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    print(json.dumps(inspect_model(model).describe(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfself", description="hfself: a persistent, trainable self for causal LMs")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("plugins", help="list loaded plugins and what they registered (JSON)")
    p.set_defaults(func=_cmd_plugins)
    p = sub.add_parser("arch", help="show what hfself finds in a model: attention per layer, Q/K projections, "
                                    "how each layout was established (JSON; random weights from the config)")
    p.add_argument("model", help="Hub id or local directory (only its config.json is read)")
    p.add_argument("--layers", type=int, default=None, help="build only this many layers (a large model's layout "
                                                            "from its first layers)")
    p.set_defaults(func=_cmd_arch)
    plugins.get_plugin_manager().hook.hfself_register_commands(cli=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\nhfself: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
