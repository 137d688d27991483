"""The attention plugin: q_only for separate and fused QKV, the probe's arithmetic, the dream loop, the recipe."""

import json

import pytest
import torch
from recipes_path import add_recipes_to_path
from tiny_models import q_unit_masks, query_units_moved, sample_ids, tiny_model, tokenizer
from transformers import TrainerControl, TrainerState, TrainingArguments

from hfself.arch import inspect_model
from hfself.cli import main as cli_main
from hfself_plugins.attention import (AttentionProbe, DreamArguments, DreamCallback, QOnlyTraining, ReplayBuffer,
                                      ReplayCollator, listening_conversations, span_attention_mass)
from hfself_plugins.attention.analysis import compare, segment_labels

add_recipes_to_path()
import attention_sft  # noqa: E402

Q_ONLY_ARCHS = ["llama", "qwen2", "gpt2", "gpt_neox", "phi3", "falcon_new", "falcon_mq", "bloom", "mpt"]


@pytest.mark.parametrize("name", Q_ONLY_ARCHS)
def test_q_only_changes_only_w_q(name):
    model = tiny_model(name).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q_only = QOnlyTraining(model)
    assert q_only.trainable_q_parameters() > 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids = sample_ids(batch=2, length=12)
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        q_only.restore_frozen()
    moved = query_units_moved(q_unit_masks(model), before, dict(model.named_parameters()))
    assert all(moved.values()), f"W_q did not train in {[n for n, m in moved.items() if not m]}"
    q_only.remove()


@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_q_only_gradients_are_the_same_under_gradient_checkpointing(name, use_reentrant):
    """Gradient checkpointing (both modes) gives q_only training the gradients it has without: W_q's, and zero
    on every K/V unit of a fused projection."""
    ids = sample_ids(batch=2, length=12)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(name).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        q_only = QOnlyTraining(model)
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        q_only.remove()
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys() and plain
    for name_, grad in plain.items():
        torch.testing.assert_close(checkpointed[name_], grad, rtol=1e-5, atol=1e-7)


def test_q_only_refuses_peft_with_a_hint():
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="target_modules"):
        QOnlyTraining(lora)


def test_span_mass_exact_on_a_hand_built_pattern():
    # 1 layer, 2 heads, T=4; positions 0-1 are "direction", 2 "own", 3 "response"
    attn = torch.zeros(1, 2, 4, 4)
    attn[0, 0, 3] = torch.tensor([0.5, 0.25, 0.25, 0.0])  # head 0: 0.75 on direction, 0.25 on own
    attn[0, 1, 3] = torch.tensor([0.0, 0.0, 0.4, 0.6])  # head 1: 0.4 on own, 0.6 on itself
    attn[0, :, 2] = 0.25  # a non-response row: must be ignored
    query = torch.tensor([[False, False, False, True]])
    keys = {"direction": torch.tensor([[True, True, False, False]]), "own": torch.tensor([[False, False, True, False]])}
    mass = span_attention_mass((attn,), query, keys)
    assert mass["direction"].tolist() == [[0.75, 0.0]]
    assert mass["own"].tolist() == [[0.25, pytest.approx(0.4)]]
    second = span_attention_mass((attn, attn.flip(1)), query, keys)["direction"]  # layers and heads stay apart
    assert second.tolist() == [[0.75, 0.0], [0.0, 0.75]]
    with pytest.raises(ValueError, match="response"):
        span_attention_mass((attn,), torch.zeros(1, 4, dtype=torch.bool), keys)


def test_compare_counts_heads_and_finds_the_top_gainer():
    before = {"layers": 1, "heads": 3, "mass": {"d": [[0.1, 0.2, 0.3]]}}
    after = {"layers": 1, "heads": 3, "mass": {"d": [[0.2, 0.1, 0.6]]}}
    s = compare(before, after)["d"]
    assert s["heads_increased"] == 2 and s["heads_total"] == 3
    assert s["top_head"] == {"layer": 0, "head": 2, "delta": pytest.approx(0.3)}
    assert s["delta"] == pytest.approx(0.1)


def test_segment_labels_follow_the_text():
    tok = tokenizer()
    conv = listening_conversations(1, seed=3)[0]
    ids, labels = segment_labels(tok, conv)
    assert len(ids) == len(labels) and None not in labels
    for segment in conv:
        text = tok.decode([i for i, lab in zip(ids, labels) if lab == segment["label"]])
        assert text.strip() == segment["text"].strip()


def test_probe_measures_a_real_model_and_writes_the_report(tmp_path):
    model, tok = tiny_model("llama", attn_implementation="sdpa"), tokenizer()
    probe = AttentionProbe(listening_conversations(3, seed=1))
    before = probe.measure(model, tok)
    assert model.config._attn_implementation == "sdpa"  # eager only while probing
    assert set(before["mass"]) == {"direction", "own_idea"}
    total = torch.tensor(before["mass"]["direction"]) + torch.tensor(before["mass"]["own_idea"])
    assert ((total > 0) & (total < 1)).all()  # response tokens also attend to themselves
    with torch.no_grad():
        for layer in inspect_model(model).layers:
            layer.targets[0].module.weight.mul_(3.0)
    summary = probe.report(before, probe.measure(model, tok), tmp_path)
    assert json.loads((tmp_path / "probe.json").read_text())["summary"] == json.loads(json.dumps(summary))
    assert (tmp_path / "attention_direction.png").stat().st_size > 0 and (tmp_path / "summary.md").exists()
    with pytest.raises(ValueError, match="response"):
        AttentionProbe([[{"label": "direction", "text": "x"}]])


def _dream_candidates():
    return [{"input_ids": [5, 6, 7, 8, 9, 10], "n_new": 4, "text": "a", "score": -2.0},
            {"input_ids": [5, 6, 11, 12, 13, 14], "n_new": 4, "text": "b", "score": -1.0},
            {"input_ids": [5, 6, 7, 7, 7, 7], "n_new": 4, "text": "repetitive", "score": -0.1},
            {"input_ids": [5, 6, 15], "n_new": 1, "text": "short", "score": -0.1},
            {"input_ids": [5, 6, 11, 12, 13, 14], "n_new": 4, "text": "duplicate", "score": -1.0}]


def test_dream_selection_filters_and_keeps_the_best():
    cb = DreamCallback(DreamArguments(dream_keep=1, dream_min_tokens=3, dream_max_repeat=0.5))
    kept = cb.select(_dream_candidates())
    assert [c["text"] for c in kept] == ["b"]
    cb.buffer.add(kept)
    assert [c["text"] for c in cb.select(_dream_candidates())] == ["a"]  # b is already in the buffer


def test_replay_collator_replaces_at_the_ratio_and_fills_columns():
    buffer = ReplayBuffer(capacity=2)
    buffer.add([{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}, {"input_ids": [6, 7, 8, 9]}])
    assert [item["input_ids"] for item in buffer.items] == [[4, 5], [6, 7, 8, 9]]  # oldest left
    seen = []
    always = ReplayCollator(lambda feats: seen.extend(feats) or feats, buffer, ratio=1.0)
    always([{"input_ids": [9] * 5, "labels": [-100, -100, 9, 9, 9], "completion_mask": [0, 0, 1, 1, 1]}])
    f = seen[-1]
    assert f["input_ids"] in ([4, 5], [6, 7, 8, 9]) and f["labels"] == f["input_ids"]
    assert f["completion_mask"] == [1] * len(f["input_ids"])
    never = ReplayCollator(lambda feats: feats, buffer, ratio=0.0)
    original = [{"input_ids": [3, 3]}]
    assert never(original) == original and never.replayed == 0
    with pytest.raises(ValueError, match="pixel_values"):
        always([{"input_ids": [1], "pixel_values": [0.0]}])


def test_dream_round_on_a_real_model_and_state_round_trip(tmp_path):
    model, tok = tiny_model("llama"), tokenizer()
    cb = DreamCallback(DreamArguments(dream_num=4, dream_keep=2, dream_max_new_tokens=10, dream_min_tokens=1,
                                      dream_max_repeat=1.0))
    record = cb.dream(model, tok, step=5)
    assert record["generated"] == 4 and 1 <= record["kept"] <= 2 and record["buffer"] == record["kept"]
    assert all(s["text"].startswith("User: please") for s in record["scenarios"])  # the first dream prompt
    assert all(c["score"] <= 0 for c in cb.buffer.items)  # mean log-probabilities
    undirected = DreamCallback(DreamArguments(dream_prompts=[], dream_num=2, dream_max_new_tokens=4,
                                              dream_min_tokens=1, dream_max_repeat=1.0))
    assert undirected.dream(model, tok)["generated"] == 2
    cb.save_state(tmp_path)
    other = DreamCallback(DreamArguments())
    other.load_state(tmp_path)
    assert other.rounds == 1 and other.buffer.items == json.loads(json.dumps(cb.buffer.items))


def test_dream_callback_refuses_dataloader_workers():
    class FakeTrainer:
        args = TrainingArguments(output_dir="unused", dataloader_num_workers=2, report_to="none")
        data_collator = None

    with pytest.raises(ValueError, match="dataloader_num_workers"):
        DreamCallback().bind(FakeTrainer())
    assert TrainerControl and TrainerState  # the callback speaks the Trainer protocol


FAST = ["--max_steps", "6", "--pretrain_steps", "4", "--dream_interval", "3", "--dream_num", "4",
        "--dream_max_new_tokens", "8", "--dream_min_tokens", "1", "--dream_replay_ratio", "0.5",
        "--listening_examples", "96", "--probe_examples", "4", "--per_device_train_batch_size", "4",
        "--max_train_samples", "32", "--max_length", "64", "--save_steps", "3", "--logging_steps", "1",
        "--warmup_steps", "0"]


def test_recipe_trains_q_only_and_reports_the_shift(tmp_path):
    """On a base without weights: the warm-up stands in for pretraining and is saved as the "before"."""
    from tiny_models import config_only_model

    base = config_only_model(tmp_path / "base")
    trainer = attention_sft.main([*FAST, "--model_name_or_path", base, "--output_dir", str(tmp_path)])
    assert trainer.optimizer.optimizer.hfself_groups["apollo"]["tensors"] == 4  # one W_q per layer
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert set(probe["summary"]) == {"direction", "own_idea"} and probe["before"] != probe["after"]
    assert (tmp_path / "probe" / "attention_direction.png").exists()
    assert len((tmp_path / "dreams.jsonl").read_text().splitlines()) == 2
    assert any("dream/buffer" in entry for entry in trainer.state.log_history)
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tmp_path / "before")
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    for (n, a), b in zip(before.named_parameters(), after.parameters()):
        assert torch.equal(a, b) != n.endswith("q_proj.weight"), n

    out = tmp_path / "cli_probe"
    assert cli_main(["attention", "probe", "--model", str(tmp_path / "final"), "--before", str(tmp_path / "before"),
                     "--num", "4", "--output_dir", str(out)]) == 0
    assert json.loads((out / "probe.json").read_text())["summary"] == probe["summary"]


def test_recipe_on_fused_qkv_with_weight_decay_keeps_k_v(tmp_path):
    """GPT-2 (fused Conv1D c_attn) through Trainer: QOnlyCallback undoes weight decay on the K/V slice."""
    base = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(base)
    tokenizer().save_pretrained(base)
    attention_sft.main([*FAST, "--model_name_or_path", str(base), "--optimizer", "adamw", "--weight_decay", "0.5",
                        "--output_dir", str(tmp_path / "run")])
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(base)
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    moved = query_units_moved(q_unit_masks(before), dict(before.named_parameters()), dict(after.named_parameters()))
    assert moved and all(moved.values()), moved
    assert json.loads((tmp_path / "run" / "probe" / "models.json").read_text())["before"] == str(base)


@pytest.mark.slow
def test_recipe_resume_is_bit_exact_with_dreams(tmp_path):
    """Resumed at checkpoint-3 (right after a dream round, while accelerate had already collated batch 4), the run
    ends with the same dream buffer, the same loss at every step and bit-identical weights."""
    import shutil

    from tiny_models import config_only_model

    base = ["--model_name_or_path", config_only_model(tmp_path / "base")]  # the warm-up's "before" is resumed too
    full = attention_sft.main([*FAST, *base, "--output_dir", str(tmp_path / "full")])
    shutil.copytree(tmp_path / "full", tmp_path / "cut", ignore=shutil.ignore_patterns("checkpoint-6"))
    resumed = attention_sft.main([*FAST, *base, "--output_dir", str(tmp_path / "cut"),
                                  "--resume_from_checkpoint", "true"])
    dreams = lambda t: next(c for c in t.callback_handler.callbacks if isinstance(c, DreamCallback))
    assert dreams(resumed).rounds == dreams(full).rounds == 2
    assert dreams(resumed).buffer.items == dreams(full).buffer.items
    losses = lambda t: {e["step"]: e["loss"] for e in t.state.log_history if "loss" in e}
    assert losses(full) == losses(resumed) and set(losses(full)) == set(range(1, 7))  # a dream log hides no loss
    for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), n
