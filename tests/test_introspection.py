"""The main job: identity SFT with introspection, resume and 2-process DDP."""

import json
from pathlib import Path

import pytest
import torch
from ddp import run_two_ranks
from recipes_path import TINY_IDENTITY, add_recipes_to_path

from hfself import IdentityForCausalLM
from hfself.persist import load_tensors

add_recipes_to_path()
import identity_sft  # noqa: E402

FAST = [*TINY_IDENTITY, "--max_steps", "8", "--identity_update_interval", "2", "--identity_max_new_tokens", "6",
        "--max_length", "64", "--per_device_train_batch_size", "4", "--max_train_samples", "64",
        "--logging_steps", "2", "--save_steps", "4", "--warmup_steps", "0"]


def _run(out, *extra):
    return identity_sft.main([*FAST, "--output_dir", str(out), *extra])


def test_recipe_writes_persona_and_log(tmp_path):
    trainer = _run(tmp_path)
    log = [json.loads(line) for line in (tmp_path / "introspection.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    assert all(0 <= r["loss"] <= 2 and -1 <= r["drift_cosine"] <= 1 for r in log)
    assert any(k.startswith("introspection/") for entry in trainer.state.log_history for k in entry)
    persona = tmp_path / "persona"
    card = (persona / "README.md").read_text()
    assert "library_name: hfself" in card and log[-1]["text"].strip().split("\n")[0] in card
    run_card = (tmp_path / "README.md").read_text()  # the run's card is hfself's, not TRL's "[None]"
    assert "library_name: hfself" in run_card and "None" not in run_card and "embedded default" in run_card
    reloaded = IdentityForCausalLM.from_pretrained(persona)
    model = trainer.model.eval()
    ids = torch.randint(2, 4000, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_resume_restores_identity_and_introspection(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    a = _run(full)  # saves checkpoint-4 and checkpoint-8
    b = _run(resumed, "--resume_from_checkpoint", str(full / "checkpoint-4"))
    cb = lambda t: next(c for c in t.callback_handler.callbacks if type(c).__name__ == "IntrospectionCallback")
    assert cb(b).rounds == cb(a).rounds == 4
    assert [h["step"] for h in cb(b).history] == [2, 4, 6, 8]
    for pa, pb in zip(a.model.identity_block.state_dict().values(), b.model.identity_block.state_dict().values()):
        assert torch.equal(pa, pb)  # bit-exact
    texts = lambda d: [json.loads(line)["text"] for line in (d / "introspection.jsonl").read_text().splitlines()]
    assert texts(resumed) == texts(full)[2:]  # same self-descriptions after the resume point
    checkpoint = load_tensors(full / "checkpoint-4" / "introspection_state.safetensors")
    assert any(k.endswith(".exp_avg") for k in checkpoint)


@pytest.mark.slow
def test_ddp_ranks_identical_after_introspection(tmp_path):
    run_two_ranks("ddp_identity_run.py", [*FAST, "--max_steps", "4", "--output_dir", str(tmp_path)], tmp_path)
    log = (tmp_path / "introspection.jsonl").read_text().splitlines()
    assert len(log) == 2  # written once (main process), not once per rank


@pytest.mark.slow
def test_checkpoints_hold_introspection_state_before_they_count_and_resume_skips_interrupted_ones(
        tmp_path, monkeypatch, caplog):
    """Trainer's trainer_state.json (written last) makes a checkpoint count: the introspection state must be in the
    folder by then. A save killed before it leaves an incomplete folder, which ``--resume_from_checkpoint true``
    skips (with a warning) for the previous complete one; a checkpoint without the introspection state is refused."""
    import shutil

    import pytest
    from transformers import TrainerState

    present_at_state_write = {}
    save_to_json = TrainerState.save_to_json

    def spy(self, path):
        folder = Path(path).parent
        present_at_state_write[folder.name] = {f.name for f in folder.iterdir()}
        return save_to_json(self, path)

    monkeypatch.setattr(TrainerState, "save_to_json", spy)
    full = tmp_path / "full"
    a = _run(full)
    assert set(present_at_state_write) == {"checkpoint-4", "checkpoint-8"}
    for files in present_at_state_write.values():
        assert {"introspection_state.json", "introspection_state.safetensors"} <= files
    monkeypatch.undo()

    # a kill during checkpoint-8's save, before trainer_state.json: resume picks checkpoint-4 and ends where `a` did
    crashed = tmp_path / "crashed"
    shutil.copytree(full, crashed)
    (crashed / "checkpoint-8" / "trainer_state.json").unlink()
    with caplog.at_level("WARNING", logger="hfself"):
        b = _run(crashed, "--resume_from_checkpoint", "true")
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-8" in caplog.text
    assert b.state.global_step == 8
    for pa, pb in zip(a.model.identity_block.state_dict().values(), b.model.identity_block.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)

    (crashed / "checkpoint-4" / "introspection_state.json").unlink()
    with pytest.raises(FileNotFoundError, match="introspection_state.json"):
        _run(crashed, "--resume_from_checkpoint", str(crashed / "checkpoint-4"))


def test_bad_runs_are_refused_before_any_work(tmp_path):
    """Each of these would waste a run or train on nothing; each fails before a model is loaded or trained."""
    import pytest

    from hfself.args import ConfigError
    from hfself_plugins.identity import IntrospectionArguments, IntrospectionCallback

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("good text, then caf".encode() + "é".encode("latin-1") + b" more")
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8: byte 0xe9 at offset 19"):
        _run(tmp_path / "a", "--corpus", str(latin1))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        _run(tmp_path / "b", "--corpus", str(empty))
    with pytest.raises(ConfigError, match="did you mean --identity_update_interval"):
        _run(tmp_path / "c", "--identity_update_intervall", "2")
    with pytest.raises(ConfigError, match="unknown flag --max_step; did you mean --max_steps"):
        _run(tmp_path / "d", "--max_step", "3")  # argparse would have taken the prefix silently
    with pytest.raises(ConfigError, match="max_steps 0 would train nothing"):
        _run(tmp_path / "e", "--max_steps", "0")
    with pytest.raises(ValueError, match="identity_update_interval must be >= 1"):
        _run(tmp_path / "f", "--identity_update_interval", "-2")
    with pytest.raises(ValueError, match="needs identity_update_interval >= 1"):
        IntrospectionCallback(IntrospectionArguments(identity_update_interval=0))
    assert not any((tmp_path / d).exists() for d in "abcdef")


@pytest.mark.slow
def test_a_kill_between_any_two_files_of_a_save_resumes_exactly(tmp_path):
    """checkpoint-8's files in the order the save wrote them: a kill after any prefix of them leaves a folder that
    ``--resume_from_checkpoint true`` skips for checkpoint-4 unless it is complete; from either, the resumed run
    ends bit-identical to the uninterrupted one."""
    import shutil

    from hfself.train import resolve_checkpoint

    full = tmp_path / "full"
    a = _run(full)
    written = sorted((full / "checkpoint-8").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert written[-1].name == "trainer_state.json"
    assert {"introspection_state.json", "introspection_state.safetensors"} <= {p.name for p in written[:-1]}
    required = ["introspection_state.safetensors", "introspection_state.json"]
    for k in range(len(written) + 1):  # the kill came after the first k files
        crashed = tmp_path / f"kill{k}"
        crashed.mkdir()
        shutil.copytree(full / "checkpoint-4", crashed / "checkpoint-4")
        (crashed / "checkpoint-8").mkdir()
        for f in written[:k]:
            shutil.copy2(f, crashed / "checkpoint-8" / f.name)
        chosen = resolve_checkpoint("true", crashed, required)
        assert chosen == str(crashed / ("checkpoint-8" if k == len(written) else "checkpoint-4")), k
    soul = a.model.identity_block.soul().detach()
    for k in (0, len(written)):  # the two outcomes: resumed from checkpoint-4, or from the complete checkpoint-8
        b = _run(tmp_path / f"kill{k}", "--resume_from_checkpoint", "true")
        assert torch.equal(b.model.identity_block.soul().detach(), soul), k


def test_the_recipe_defaults_cause_no_warning():
    """Parsing the recipe's own defaults warns about nothing (no deprecated checkpointing flag, no pin_memory on a
    machine without a GPU)."""
    import warnings

    from hfself.args import parse_args

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parsed = parse_args(identity_sft.ARGUMENT_CLASSES, ["--output_dir", "unused"],
                            config=str(identity_sft.DEFAULT_CONFIG))
    sft = parsed[-1]
    assert not [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, UserWarning))]
    assert sft.activation_checkpointing is False and sft.dataloader_pin_memory is torch.cuda.is_available()


def test_a_round_generates_the_same_self_description_with_a_static_cache():
    """``identity_cache_implementation: static`` (the default on accelerators) decodes what the dynamic cache does,
    and an unknown cache name is an error."""
    from tiny_models import tiny_model, tokenizer

    from hfself import IdentityConfig, IntrospectionCallback
    from hfself_plugins.identity import IntrospectionArguments

    texts = {}
    for cache in ("static", "dynamic"):
        model = IdentityForCausalLM.from_base(tiny_model("llama"), IdentityConfig(identity_dim=8))
        callback = IntrospectionCallback(IntrospectionArguments(identity_lr=1e-3, identity_do_sample=False,
                                                                identity_max_new_tokens=6,
                                                                identity_cache_implementation=cache))
        assert callback._cache_kwargs(model) == ({"cache_implementation": "static"} if cache == "static" else {})
        texts[cache] = callback.introspect(model, tokenizer())["text"]
    assert texts["static"] == texts["dynamic"]
    with pytest.raises(ValueError, match="identity_cache_implementation"):
        IntrospectionCallback(IntrospectionArguments(identity_cache_implementation="paged"))._cache_kwargs(model)


def test_the_main_job_prints_no_warning(tmp_path):
    """What a newcomer sees: the README's main job (shortened) on the embedded default prints no warning, from
    hfself or from a library hfself drives (Python's default warning filters, as a user has them)."""
    import os
    import subprocess
    import sys

    from recipes_path import RECIPES

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "DS_ACCELERATOR")}
    done = subprocess.run([sys.executable, str(RECIPES / "identity_sft.py"), *FAST, "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    warnings = [line for line in output.splitlines() if "warn" in line.lower()]
    assert not warnings, "\n".join(warnings)
    assert "persona written to" in output
