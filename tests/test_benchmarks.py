"""The benchmark harness: spread, resolution, interleaving, provenance, and the run_all table. Nothing here is
timed against a bar; the benchmarks themselves run once at toy sizes to prove their reports are complete."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import harness  # noqa: E402
import run_all  # noqa: E402


def test_a_ratio_is_resolved_only_when_its_spread_is_narrower_than_its_effect():
    clear = harness.compare("speed", [100, 101, 99, 100, 100], [80, 81, 79, 80, 80])
    assert clear.resolved and clear.ratio["median"] == pytest.approx(0.8)
    noisy = harness.compare("speed", [100, 100, 100, 100], [70, 130, 95, 110])
    assert not noisy.resolved and "not resolved" in noisy.describe()
    with pytest.raises(ValueError, match="paired"):
        harness.compare("speed", [1.0, 2.0], [1.0])


def test_sides_alternate_their_order_and_warmup_rounds_are_dropped():
    calls = []
    sides = {name: (lambda name=name: calls.append(name) or len(calls)) for name in ("a", "b")}
    out = harness.interleave(sides, rounds=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert out == {"a": [4, 5, 8], "b": [3, 6, 7]}


def test_the_environment_names_code_device_and_versions():
    env = harness.environment("cpu", seed=3)
    assert env["seed"] == 3 and env["git"] and "torch" in env["versions"] and "CPU" in env["device_name"]


def test_the_table_shows_every_ratio_with_spread_limit_and_verdict():
    rows = [harness.compare("decode", [10, 10, 10], [7, 7.2, 7.1], limit=0.75, limit_note="bytes"),
            harness.single("state", 0.12, limit=0.11)]
    data = {"anima": {"rows": [r.__dict__ | {"verdict": r.verdict} for r in rows]}, "spiral": {"error": "exit 1"}}
    markdown = run_all.table(data)
    assert "| anima | decode | 0.710 | 0.705–0.715 | 0.750 (bytes) | resolved |" in markdown
    assert "| anima | state | 0.120 | – | 0.110 | resolved |" in markdown and "failed: exit 1" in markdown
    text = "a\n<!-- benchmarks:cpu-small:start -->\nold\n<!-- benchmarks:cpu-small:end -->\nb"
    assert run_all.replace_block(text, "cpu-small", "new\n") == (
        "a\n<!-- benchmarks:cpu-small:start -->\nnew\n<!-- benchmarks:cpu-small:end -->\nb")


def test_readme_holds_the_table_run_all_writes():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "<!-- benchmarks:cpu-small:start -->" in readme and "| benchmark | measure |" in readme


@pytest.mark.parametrize("script,argv", [
    ("bench_identity", ["--rows", "train,generate,introspection", "--rounds", "2", "--seq_len", "16",
                        "--batch_size", "1", "--new_tokens", "4"]),
    ("bench_anima", ["--d_sae", "512", "--rounds", "2", "--new_tokens", "4"]),
    ("bench_spiral", ["--lengths", "64", "--rounds", "2"]),
    ("bench_diffusion", ["--sample_steps", "2", "--rounds", "2", "--batch_size", "1", "--seq_len", "16",
                         "--new_tokens", "4"]),
    ("bench_temporal", ["--rounds", "2", "--batch_size", "1", "--seq_len", "16"]),
    ("bench_optim", ["--steps", "3", "--skip", "0", "--lr_grid", "1e-3", "--eval_batches", "1",
                     "--batch_size", "1", "--seq_len", "16"]),
])
def test_each_benchmark_reports_ratios_with_spread_limit_and_provenance(script, argv, tmp_path):
    module = __import__(script)
    out = tmp_path / f"{script}.json"
    module.main([*argv, "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["environment"]["git"] and data["environment"]["versions"]["torch"]
    assert data["rows"] and all({"median", "q1", "q3", "n"} <= row["ratio"].keys() for row in data["rows"])
    assert all(row["verdict"] in ("resolved", "not resolved") for row in data["rows"])
    assert any(row["limit"] is not None for row in data["rows"])
