"""Every hookspec, the core's and the plugins' own: documented in docs/plugins.md with its exact signature, and
exercised here."""

import inspect
import re
import types
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model

from hfself import hookimpl, hookspecs, plugins
from hfself_plugins.anima import hookspecs as anima_hookspecs
from hfself_plugins.identity import hookspecs as identity_hookspecs
from hfself.args import RunArguments
from hfself.train import build_optimizer, prepare_model, trainer_callbacks

ROOT = Path(__file__).resolve().parents[1]
SPEC_MODULES = (hookspecs, identity_hookspecs, anima_hookspecs)
HOOKS = {name: getattr(module, name) for module in SPEC_MODULES for name in dir(module)
         if name.startswith("hfself_") and callable(getattr(module, name))}


def signature_text(name: str) -> str:
    return f"{name}{inspect.signature(HOOKS[name])}".replace("'", "")


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented_and_tested(name):
    fn = HOOKS[name]
    assert fn.__doc__ and ":param" in fn.__doc__, f"{name} needs a docstring with :param:"
    doc = (ROOT / "docs" / "plugins.md").read_text()
    assert signature_text(name) in doc, f"docs/plugins.md lacks the exact signature `{signature_text(name)}`"
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def test_hook_{name.removeprefix('hfself_')}\b", tests), f"no test_hook_{name}"


@pytest.fixture
def plugin():
    """An in-process plugin implementing every hook; removed after the test."""
    mod = types.ModuleType("every_hook_plugin")
    seen = {}

    class Hello:
        pass

    @hookimpl
    def hfself_register_identity_blocks(register):
        register("hello_block", Hello)

    @hookimpl
    def hfself_register_arch_adapters(register):
        from hfself.arch import ArchAdapter

        register("hello_lm", ArchAdapter(layers_path="model.layers", attention="self_attn", q_proj="q_proj",
                                         k_proj="k_proj", has_attention=lambda i, layer: i == 0))

    @hookimpl
    def hfself_register_callbacks(register):
        from transformers import TrainerCallback

        register("hello_callback", lambda run_config, **kw: TrainerCallback())

    @hookimpl
    def hfself_register_optimizers(register):
        register("hello_sgd", lambda model, args, **kw: torch.optim.SGD(model.parameters(), lr=0.1))

    @hookimpl
    def hfself_register_models(register):
        from transformers import LlamaConfig, LlamaForCausalLM

        class HelloConfig(LlamaConfig):
            model_type = "hello_llama"

        class HelloForCausalLM(LlamaForCausalLM):
            config_class = HelloConfig

        register(HelloConfig, HelloForCausalLM)

    @hookimpl
    def hfself_register_steering_modes(register):
        register("hello_mode", {"features": {3: 2.0, 7: -1.0}})

    @hookimpl
    def hfself_register_commands(cli):
        p = cli.add_parser("hello-cmd")
        p.set_defaults(func=lambda args: seen.setdefault("command", True) and 0)

    @hookimpl
    def hfself_prepare_model(model, run_config):
        model.hello_prepared = True
        return model

    @hookimpl
    def hfself_trainer_callbacks(model, run_config):
        from transformers import TrainerCallback

        return [TrainerCallback()]

    for name, value in list(locals().items()):
        if name.startswith("hfself_"):
            setattr(mod, name, value)
    plugins.register_plugin(mod, name="every_hook")
    try:
        yield seen
    finally:
        plugins.unregister_plugin("every_hook")


def test_hook_register_identity_blocks(plugin):
    assert "hello_block" in plugins.registry("identity_blocks") and "mlp" in plugins.registry("identity_blocks")


def test_hook_register_arch_adapters(plugin):
    from hfself.arch import inspect_model

    model = tiny_model("llama")
    model.config.model_type = "hello_lm"
    info = inspect_model(model)  # the plugin's adapter (discovery alone finds attention in both layers)
    assert info.num_layers == 2 and [layer.has_attention for layer in info.layers] == [True, False]


def test_hook_register_callbacks(plugin):
    cbs = trainer_callbacks(tiny_model("llama"), {"plugins": [], "callbacks": ["hello_callback"]})
    assert len(cbs) == 1
    with pytest.raises(ValueError, match="unknown callback"):
        trainer_callbacks(tiny_model("llama"), {"callbacks": ["nope"]})


def test_hook_register_optimizers(plugin):
    opt = build_optimizer(tiny_model("llama"), None, {"optimizer": "hello_sgd"})
    assert isinstance(opt, torch.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(tiny_model("llama"), None, {"optimizer": "nope"})


def test_hook_register_models(plugin):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("hello_llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, vocab_size=100)
    assert type(AutoModelForCausalLM.from_config(config)).__name__ == "HelloForCausalLM"


def test_hook_register_steering_modes(plugin):
    assert plugins.registry("steering_modes")["hello_mode"]["features"][7] == -1.0


def test_hook_addhooks():
    """A plugin adds a hookspec of its own; another plugin, registered before it, implements it; the registry
    named after the spec works with the core's checks."""
    specs = types.ModuleType("greeting_specs")

    @hookspecs.hookspec
    def hfself_register_greetings(register):
        """:param register: ``register(name, text)``."""

    specs.hfself_register_greetings = hfself_register_greetings
    owner, user = types.ModuleType("greeting_owner"), types.ModuleType("greeting_user")

    @hookimpl
    def hfself_addhooks(pluginmanager):
        pluginmanager.add_hookspecs(specs)

    @hookimpl
    def hfself_register_greetings(register):
        register("hello", "Hello!")

    owner.hfself_addhooks, user.hfself_register_greetings = hfself_addhooks, hfself_register_greetings
    with pytest.raises(Exception, match="hfself_register_greetings"):  # nobody specifies it yet
        plugins.register_plugin(user, name="greeting_user")
    plugins.register_plugin(owner, name="greeting_owner")
    plugins.register_plugin(user, name="greeting_user")
    try:
        assert plugins.registry_with_owners("greetings") == {"hello": ("Hello!", "greeting_user")}
    finally:
        plugins.unregister_plugin("greeting_user")
        plugins.unregister_plugin("greeting_owner")


def test_hook_register_commands(plugin):
    from hfself.cli import main

    assert main(["hello-cmd"]) == 0 and plugin["command"]


def test_hook_prepare_model(plugin):
    model = tiny_model("llama")
    assert prepare_model(model, {"plugins": ["every_hook"]}).hello_prepared
    other = tiny_model("llama")
    prepare_model(other, {"plugins": []})  # not enabled: run-time hooks do not act
    assert not hasattr(other, "hello_prepared")


def test_hook_trainer_callbacks(plugin):
    assert len(trainer_callbacks(tiny_model("llama"), {"plugins": ["every_hook"]})) == 1
    assert trainer_callbacks(tiny_model("llama"), {"plugins": []}) == []


def test_enabling_an_unknown_plugin_is_an_error():
    with pytest.raises(ValueError, match="not loaded"):
        prepare_model(tiny_model("llama"), {"plugins": ["no_such_plugin"]})


def test_run_arguments_default_to_embedded_model():
    from hfself.data import DEFAULT_MODEL_ID, resolve_model

    assert RunArguments().model_name_or_path == DEFAULT_MODEL_ID and resolve_model(DEFAULT_MODEL_ID).endswith(
        "default_model")
