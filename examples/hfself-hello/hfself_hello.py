"""A third-party hfself plugin: registers a TrainerCallback and an `hfself hello` command.

Install with `pip install ./examples/hfself-hello`; `hfself plugins` then lists it.
"""

from transformers import TrainerCallback

from hfself import hookimpl


class HelloCallback(TrainerCallback):
    """Prints a greeting when training starts (main process only)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            print("hello from hfself-hello")


@hookimpl
def hfself_register_callbacks(register):
    register("hello", lambda run_config, **kwargs: HelloCallback())


@hookimpl
def hfself_register_commands(cli):
    parser = cli.add_parser("hello", help="say hello (from the hfself-hello plugin)")
    parser.add_argument("--name", default="world")
    parser.set_defaults(func=lambda args: print(f"Hello, {args.name}!") or 0)
