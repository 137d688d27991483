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
        def hfself_register_metrics(register):
            register("same_name", lambda: 0)

        mod.hfself_register_metrics = hfself_register_metrics
        return mod

    plugins.register_plugin(make("dup_a"), name="dup_a")
    plugins.register_plugin(make("dup_b"), name="dup_b")
    try:
        with pytest.raises(plugins.DuplicateRegistrationError) as err:
            plugins.registry("metrics")
        assert "dup_a" in str(err.value) and "dup_b" in str(err.value)
    finally:
        plugins.unregister_plugin("dup_a")
        plugins.unregister_plugin("dup_b")
    assert "same_name" not in plugins.registry("metrics")


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
