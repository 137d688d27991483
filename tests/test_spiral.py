"""Spiralformer: codec, breath, spiral masks (dense = flex = gather), causality, silence, memory, training, saving."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
from recipes_path import add_recipes_to_path

from hfself_plugins.spiral import (BreathClock, GlyphCodec, GlyphError, GlyphTokenizer, SpiralformerConfig,
                                   SpiralformerForCausalLM, TowerMemory, spiral_attention, spiral_mask)
from hfself_plugins.spiral.codec import VOCAB
from hfself_plugins.spiral.data import EchoCollator, datagen, encode_echo, read_echoes
from hfself_plugins.spiral.model import spiral_offsets
from hfself_plugins.spiral.analysis import contemplate

add_recipes_to_path()
import spiralformer  # noqa: E402


def _model(**kw):
    torch.manual_seed(0)
    return SpiralformerForCausalLM(SpiralformerConfig(model_size="tiny", max_position_embeddings=64, **kw)).eval()


def test_codec_round_trip_and_unknown_glyph(tmp_path):
    codec = GlyphCodec()
    assert len(codec) == len(VOCAB) == 64 and VOCAB[0] == "<PAD>"
    glyphs = ["☀️pwr", "💧08", "🌲44", "🌱regen", "…", "🔧", "❓time", "🌊"]
    assert codec.decode(codec.encode(glyphs)) == glyphs
    with pytest.raises(GlyphError, match="'🦄'"):
        codec.encode(["🌊", "🦄"])
    tok = GlyphTokenizer()
    tok.save_pretrained(tmp_path)
    again = GlyphTokenizer.from_pretrained(tmp_path)
    text = " ".join(glyphs)
    assert again(text)["input_ids"] == codec.encode(glyphs) and again.decode(again(text)["input_ids"]) == text
    assert again.pad_token_id == codec.pad_id == 0


def test_breath_clock_phases():
    clock = BreathClock([3, 1, 2, 1], [1.0, 0.5, 1.0, 0.2])
    assert clock.phases(9).tolist() == [0, 0, 0, 1, 2, 2, 3, 0, 0]
    assert clock.phase_weights(7).tolist() == pytest.approx([1, 1, 1, 0.5, 1, 1, 0.2])
    assert clock.phase_of(10) == 1


def test_spiral_mask_structure():
    mask = spiral_mask(40)
    for i in range(40):
        seen = set(torch.nonzero(mask[i]).flatten().tolist())
        assert seen == {i} | {i - 2 ** k for k in range(6) if i - 2 ** k >= 0}
    assert not torch.triu(mask, diagonal=1).any()  # causal
    assert spiral_offsets(17) == [0, 1, 2, 4, 8, 16]


def test_flex_gather_and_dense_agree():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 37, 8, requires_grad=True) for _ in range(3))
    keep = torch.rand(2, 37) > 0.3
    dense = spiral_attention(q, k, v, keep, "dense")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex on CPU warns that it is unfused
        flex = spiral_attention(q.detach(), k.detach(), v.detach(), keep, "flex")  # eager flex: forward only
    gather = spiral_attention(q, k, v, keep, "gather")
    torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-5)
    everything = torch.ones(2, 37, dtype=torch.bool)  # the cached, pattern-only block mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flex_all = spiral_attention(q.detach(), k.detach(), v.detach(), everything, "flex")
    torch.testing.assert_close(flex_all, spiral_attention(q, k, v, everything, "dense"), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gather, dense, rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(o.sum(), q)[0] for o in (dense, gather)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["dense", "gather"])
def test_model_is_causal(impl):
    model = _model(spiral_attention=impl)
    ids = torch.randint(10, 64, (2, 30))
    cond = torch.rand(2, 5)
    changed = ids.clone()
    changed[:, 16:] = torch.randint(10, 64, (2, 14))
    with torch.no_grad():
        a, b = model(ids, conditions=cond).logits, model(changed, conditions=cond).logits
    assert torch.equal(a[:, :16], b[:, :16]) and (a[:, 16:] - b[:, 16:]).abs().max() > 0


def test_silence_keys_are_masked_but_never_a_whole_row():
    model = _model()
    codec = GlyphCodec()
    ids = torch.tensor([codec.encode(["🌊", "…", "○", "…", "🌱", "…", "…", "…"])])
    keep = model.key_keep(ids, None)
    assert keep.tolist() == [[True, False, False, False, True, False, False, False]]
    q = k = v = torch.randn(1, 1, 8, 4)
    out = spiral_attention(q, k, v, keep, "dense")
    assert torch.isfinite(out).all()  # row 3's spiral keys (2, 1) are silence: it keeps itself
    torch.testing.assert_close(out[0, 0, 3], v[0, 0, 3])
    other = ids.clone()
    other[0, 1] = codec.encode(["○"])[0]  # swapping one silence glyph for another changes what the key is, not
    with torch.no_grad():                 # whether later queries attend it (they never do)
        a, b = model(ids).logits, model(other).logits
    torch.testing.assert_close(a[:, 2:], b[:, 2:], rtol=1e-5, atol=1e-5)


def test_tower_resonance_retrieval_and_diversity():
    tower = TowerMemory(SpiralformerConfig(model_size="tiny", charge_dim=4, tower_slots=4))
    assert tower.retrieve(torch.ones(4)) is None  # empty tower
    warm, cold = torch.tensor([1.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 1])
    a = tower.paint(torch.full((64,), 1.0), warm)
    b = tower.paint(torch.full((64,), -1.0), cold)
    assert tower.retrieve(torch.tensor([0.9, 1.0, 0.1, 0])) == a  # resonance: nearest charge
    torch.testing.assert_close(tower.read(cold[None]), torch.full((1, 64), -1.0))
    near_both = torch.tensor([1.0, 1.0, 0.9, 0.9])
    picks = [tower.retrieve(near_both) for _ in range(6)]
    assert set(picks) == {a, b}  # retrieval count lowers a painting's pull: not the same one forever


def test_overfits_one_batch_through_the_collator():
    model = _model()
    model.train()
    codec = GlyphCodec()
    records = [{"conditions": dict(latency=20, voltage=volts, temperature=20, error_rate=0, bandwidth=80),
                "glyph_sequence": seq}  # the conditions tell the two apart before the first glyph
               for volts, seq in ((10.8, ["☀️low", "<SEP>", "…", "⚡fix", "🔌"]),
                                  (12.2, ["❓time", "<SEP>", "🌊", "⟶", "🌙"]))]
    batch = EchoCollator()([encode_echo(r, codec) for r in records])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05, loss.item()


def test_save_load_and_auto_model(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = _model()
    model.tower.paint(torch.randn(64), torch.randn(8))
    ids = torch.randint(10, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    ids[:, 3:6] = torch.tensor(model.config.silence_token_ids[:3])  # the silence mask must survive loading too
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "spiralformer"
    for loaded in (SpiralformerForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert isinstance(loaded, SpiralformerForCausalLM)
        assert torch.equal(loaded.tower.strength, model.tower.strength)  # the tower is saved with the model
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids).logits, expected)


def test_datagen_is_deterministic_with_three_modes(tmp_path):
    a = datagen(60, tmp_path / "a.jsonl", chaos_mode=True, seed=3)
    b = datagen(60, tmp_path / "b.jsonl", chaos_mode=True, seed=3)
    assert a["train"].read_text() == b["train"].read_text()
    records = read_echoes(a["train"]) + read_echoes(a["validation"])
    assert len(records) == 60 and len(read_echoes(a["validation"])) == 6
    assert {r["mode"] for r in records} == {"problem", "calm", "wisdom"}
    assert all({"conditions", "glyph_sequence", "text_input"} <= r.keys() for r in records)
    problem = next(r for r in records if r["mode"] == "problem")
    assert any(g in problem["glyph_sequence"] for g in ("⚡fix", "🔧", "🩹", "🧯", "🔁", "🔌", "♻️", "🛠️"))
    assert datagen(60, tmp_path / "c.jsonl", seed=4)["train"].read_text() != a["train"].read_text()


def test_contemplation_is_breath_aligned():
    model = _model()
    result = contemplate(model, ["☀️low"], dict(latency=20, voltage=10.8, temperature=20, error_rate=0, bandwidth=80),
                         max_new_glyphs=12, entropy_threshold=10.0)
    codec = GlyphCodec()
    for offset, glyph in enumerate(result["glyphs"]):
        position = 3 + offset  # BOS, prompt, SEP come first
        if model.clock.phase_of(position) != 2:  # not exhale: silence
            assert glyph == "…"
    assert result["hold_phases"] >= 1 and codec.encode(result["glyphs"])


def test_datagen_train_probe_end_to_end(tmp_path):
    data = tmp_path / "echoes.jsonl"
    spiralformer.main(["datagen", "--num_echoes", "120", "--chaos_mode", "--output_file", str(data)])
    trainer = spiralformer.main(["--train_file", str(data), "--output_dir", str(tmp_path / "run"), "--max_steps", "40",
                                 "--save_steps", "20", "--logging_steps", "10"])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0]
    out = tmp_path / "probe" / "spiral_probe.json"
    proc = subprocess.run([sys.executable, "-m", "hfself.cli", "spiral", "probe", "--model",
                           str(tmp_path / "run" / "model"), "--samples", "2", "--output_dir", str(out.parent)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["scenarios"]) >= {"calm", "power_low", "time"} and "| scenario |" in proc.stdout
    for row in result["scenarios"].values():
        assert 0 <= row["silence_ratio"] <= 1 and 0 <= row["breath_to_query"] <= 1 and row["mood"]


def test_nan_batch_is_skipped(tmp_path):
    from transformers import TrainingArguments

    from hfself_plugins.spiral.trainer import RhythmicTrainer

    model = _model()
    codec = GlyphCodec()
    rec = {"conditions": dict(latency=20, voltage=12, temperature=20, error_rate=0, bandwidth=80),
           "glyph_sequence": ["❓self", "<SEP>", "🪨", "⟶", "🌳"]}
    features = [encode_echo(rec, codec)] * 4
    features[0] = {**features[0], "conditions": [float("nan")] * 5}  # a poisoned batch
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             save_strategy="no", use_cpu=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RhythmicTrainer(model=model, args=args, train_dataset=features, data_collator=EchoCollator())
    trainer.train()
    assert trainer.skipped_batches == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if v.is_floating_point())


@pytest.mark.slow
def test_recipe_resume_true_is_bit_exact(tmp_path):
    import shutil

    data = tmp_path / "echoes.jsonl"
    spiralformer.main(["datagen", "--num_echoes", "60", "--chaos_mode", "--output_file", str(data)])
    argv = ["--train_file", str(data), "--max_steps", "8", "--save_steps", "4", "--save_total_limit", "3",
            "--logging_steps", "1"]
    full = spiralformer.main([*argv, "--output_dir", str(tmp_path / "full")])
    shutil.copytree(tmp_path / "full", tmp_path / "cut", ignore=shutil.ignore_patterns("checkpoint-8"))
    resumed = spiralformer.main([*argv, "--output_dir", str(tmp_path / "cut"), "--resume_from_checkpoint", "true"])
    losses = lambda t: {e["step"]: e["loss"] for e in t.state.log_history if "loss" in e}
    assert losses(full) == losses(resumed) and len(losses(full)) == 8
    for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), n
