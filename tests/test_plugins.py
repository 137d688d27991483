"""The plugin manager: entry points, isolation of broken plugins, duplicates, filtering, tracing."""

import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from hfself import hookimpl, plugins

ROOT = Path(__file__).resolve().parents[1]


def _fresh(env_filter=None):
    """Run a snippet in a new interpreter (the manager loads entry points once per process)."""
    def run(code):
        env = {**os.environ}
        if env_filter is not None:
            env.update(env_filter)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out
    return run


def test_every_plugin_folder_is_an_entry_point():
    tree = ast.parse((ROOT / "setup.py").read_text())
    builtins = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], "id", "") == "BUILTIN_PLUGINS")
    listed = {elt.value for elt in builtins.elts}
    folders = {p.name for p in (ROOT / "plugins").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == listed
    installed = {ep.name for ep in __import__("importlib.metadata").metadata.entry_points(group="hfself")}
    assert folders <= installed


def test_duplicate_registration_names_both_plugins():
    def make(name):
        mod = types.ModuleType(name)

        @hookimpl
        def hfself_register_callbacks(register):
            register("same_name", lambda run_config, **kw: None)

        mod.hfself_register_callbacks = hfself_register_callbacks
        return mod

    plugins.register_plugin(make("dup_a"), name="dup_a")
    plugins.register_plugin(make("dup_b"), name="dup_b")
    try:
        with pytest.raises(plugins.DuplicateRegistrationError) as err:
            plugins.registry("callbacks")
        assert "dup_a" in str(err.value) and "dup_b" in str(err.value)
    finally:
        plugins.unregister_plugin("dup_a")
        plugins.unregister_plugin("dup_b")
    assert "same_name" not in plugins.registry("callbacks")


def test_misspelled_hook_is_caught():
    mod = types.ModuleType("typo")

    @hookimpl
    def hfself_register_callback(register):  # missing "s"
        pass

    mod.hfself_register_callback = hfself_register_callback
    with pytest.raises(Exception, match="hfself_register_callback"):
        plugins.register_plugin(mod, name="typo")
    assert "typo" not in plugins.plugin_names()


def test_load_filter_and_trace():
    out = _fresh({"HFSELF_LOAD_PLUGINS": ""})("from hfself import plugins; print(plugins.plugin_names())")
    assert out.stdout.strip() == "[]"
    out = _fresh({"HFSELF_TRACE_PLUGINS": "1"})("from hfself import plugins; plugins.registry('callbacks')")
    assert "hfself_register_callbacks" in out.stderr


def test_cli_plugins_json():
    out = subprocess.run([sys.executable, "-m", "hfself.cli", "plugins"], capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    identity = next(p for p in report["plugins"] if p["name"] == "identity")
    assert identity["registered"]["identity_blocks"] == ["mlp"] and identity["version"]


@pytest.mark.slow
def test_third_party_plugin_installs_and_a_broken_one_is_isolated(tmp_path):
    """pip-install two separate packages: a working plugin and one that fails to import."""
    examples = ROOT / "examples"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    try:
        for pkg in ("hfself-hello", "hfself-broken"):
            r = subprocess.run([*pip, str(examples / pkg)], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-2000:]
        out = subprocess.run([sys.executable, "-m", "hfself.cli", "plugins"], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(out.stdout)
        hello = next(p for p in report["plugins"] if p["name"] == "hello")
        assert hello["version"] == "0.1.0" and hello["registered"]["callbacks"] == ["hello"]
        assert "broken" in report["errors"] and "identity" in {p["name"] for p in report["plugins"]}
        assert "broken" in out.stderr  # the warning names the plugin
        said = subprocess.run([sys.executable, "-m", "hfself.cli", "hello", "--name", "Ada"], capture_output=True,
                              text=True, timeout=300)
        assert said.returncode == 0 and "Hello, Ada" in said.stdout
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "hfself-hello", "hfself-broken"],
                       capture_output=True, timeout=300)


def test_design_public_names_import_from_hfself():
    """DESIGN §3's public names, in a fresh interpreter (nothing else imported first)."""
    names = ["IdentityConfig", "IdentityForCausalLM", "IntrospectionCallback", "TemporalLoraConfig",
             "TemporalLoraForCausalLM", "SpiralformerConfig", "SpiralformerForCausalLM", "AnimaRuntime"]
    out = _fresh({})(f"from hfself import {', '.join(names)}; print('ok')")
    assert out.stdout.strip().endswith("ok")


def test_import_hfself_registers_the_auto_classes_cheaply(tmp_path):
    """In fresh interpreters: after ``import hfself`` alone (before or after transformers), the Auto classes know
    hfself's configs, models and the glyph tokenizer, through their public ``register``. ``import hfself`` before
    transformers imports no plugin module (nor torch); after it, the Auto classes are there to register with."""
    import torch
    from tiny_models import tiny_model, tokenizer

    from hfself import (GlyphTokenizer, IdentityConfig, IdentityForCausalLM, SpiralformerConfig,
                        SpiralformerForCausalLM, TemporalLoraConfig, TemporalLoraForCausalLM)

    torch.manual_seed(0)
    IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=8)).save_pretrained(
        tmp_path / "persona", save_base=True)
    tokenizer().save_pretrained(tmp_path / "persona")
    TemporalLoraForCausalLM.from_base(tiny_model("llama"), TemporalLoraConfig(domains=["a", "b"])).save_pretrained(
        tmp_path / "temporal", save_base=True)
    SpiralformerForCausalLM(SpiralformerConfig(model_size="tiny", max_position_embeddings=64)).save_pretrained(
        tmp_path / "spiral")
    GlyphTokenizer().save_pretrained(tmp_path / "spiral")
    check = f"""
import sys
import hfself
if "transformers" not in sys.modules:
    assert not [m for m in sys.modules if m.startswith("hfself_plugins.")], "import hfself imported a plugin"
    assert "torch" not in sys.modules, "import hfself imported torch"
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
assert "spiralformer" not in CONFIG_MAPPING_NAMES, "registered through AutoConfig.register, not transformers' table"
assert type(AutoConfig.for_model("spiralformer")).__name__ == "SpiralformerConfig"
for name, expected in (("persona", "IdentityForCausalLM"), ("temporal", "TemporalLoraForCausalLM"),
                       ("spiral", "SpiralformerForCausalLM")):
    model = AutoModelForCausalLM.from_pretrained(r"{tmp_path}/" + name)
    assert type(model).__name__ == expected, (name, type(model))
assert type(AutoTokenizer.from_pretrained(r"{tmp_path}/spiral")).__name__ == "GlyphTokenizer"
print("ok")
"""
    for first in ("", "import transformers.models.auto.modeling_auto, transformers.models.auto.tokenization_auto\n"):
        out = _fresh({"HFSELF_LOAD_PLUGINS": ""})(first + check)  # the plugin manager plays no part
        assert out.stdout.strip().endswith("ok")


def test_help_imports_neither_torch_nor_transformers():
    out = _fresh({})("import sys\nfrom hfself.cli import build_parser\nbuild_parser().format_help()\n"
                     "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft'))\n"
                     "print(heavy)")
    assert out.stdout.strip() == "[]"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_plugins_use_only_each_others_public_init_and_the_core_none():
    """A plugin may import another plugin's public ``__init__`` names, never its modules; the core imports no
    plugin at all (it names the built-ins only as strings, for lazy re-export)."""
    leaks = []
    for path in sorted((ROOT / "plugins").glob("*/**/*.py")):
        own = path.relative_to(ROOT / "plugins").parts[0]
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "hfself_plugins" or len(parts) < 2 or parts[1] == own:
                continue
            other = __import__(f"hfself_plugins.{parts[1]}", fromlist=["__all__"])
            if len(parts) > 3 or (len(parts) == 3 and parts[2] not in other.__all__):
                leaks.append(f"{path.relative_to(ROOT)} imports {name}")
    for path in sorted((ROOT / "hfself").glob("**/*.py")):
        leaks += [f"{path.relative_to(ROOT)} imports {name}" for name in _imports(path)
                  if name.startswith("hfself_plugins")]
    assert not leaks, "\n".join(leaks)


def test_every_plugin_folder_has_the_same_anatomy():
    for folder in sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()):
        files = {p.name for p in folder.glob("*.py")}
        assert "config.py" in files, f"{folder.name}: no config.py"
        # the module that does the work: a layer/model, an optimizer, or (a measuring plugin) its analysis
        assert files & {"layer.py", "model.py", "apollo.py", "analysis.py"}, f"{folder.name}: no layer.py/model.py"
        assert not files & {"measures.py", "experiments.py", "probe.py", "report.py", "metrics.py"}, \
            f"{folder.name}: analysis code goes in analysis.py"
        if "hfself_register_commands" in (folder / "__init__.py").read_text():
            assert "cli.py" in files, f"{folder.name}: its commands go in cli.py"


def test_plugin_owned_registries_and_no_unread_ones():
    kinds = _fresh({})("from hfself import plugins; print(plugins.registry_kinds())").stdout.strip().splitlines()[-1]
    assert kinds == str(["arch_adapters", "callbacks", "identity_blocks", "models", "optimizers", "steering_modes"])
    assert plugins.registry_with_owners("steering_modes")["Anima"][1] == "anima"  # built-ins through the hook
    assert plugins.registry_with_owners("identity_blocks")["diffusion"][1] == "diffusion"
    with pytest.raises(KeyError, match="unknown registry 'metrics'"):
        plugins.registry("metrics")
    again = ("from hfself import plugins\nidentity = plugins.get_plugin_manager().get_plugin('identity')\n"
             "plugins.unregister_plugin('identity')\nplugins.register_plugin(identity, name='identity')\n"
             "print(sorted(plugins.registry('identity_blocks')))")
    assert _fresh({})(again).stdout.strip().endswith("['diffusion', 'mlp']")  # its hookspecs are not added twice
