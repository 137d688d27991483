"""What transformers reaches for on an hfself model: plain Trainer, pipelines, loading options."""

import inspect

import pytest
import torch
from tiny_models import sample_ids, tiny_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, pipeline

from hfself import IdentityConfig, IdentityForCausalLM, TemporalLoraConfig, TemporalLoraForCausalLM
from hfself.data import DEFAULT_MODEL
from hfself.train import load_causal_lm


def _persona(base=None):
    torch.manual_seed(3)
    return IdentityForCausalLM.from_base(base or tiny_model("llama"), IdentityConfig(identity_dim=8, init_std=0.5))


def _temporal(base=None):
    torch.manual_seed(3)
    return TemporalLoraForCausalLM.from_base(base or tiny_model("llama"), TemporalLoraConfig(domains=["poetry", "code"]))


@pytest.mark.parametrize("build", [_persona, _temporal], ids=["identity", "temporal"])
def test_plain_trainer_keeps_the_columns_the_lm_accepts(build, tmp_path):
    from datasets import Dataset

    model = build()
    params = inspect.signature(model.forward).parameters
    assert {"input_ids", "attention_mask", "labels", "position_ids"} <= params.keys()
    ids = sample_ids(batch=4)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": ids.tolist(), "text": ["unused"] * 4})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", learning_rate=1e-2)  # remove_unused_columns: default
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = Trainer(model=model, args=args, train_dataset=data).train()
    assert result.training_loss > 0
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)


def test_forward_signature_is_per_model():
    """Two wrappers over different LMs each list their own LM's parameters (gpt2 takes token_type_ids)."""
    llama, gpt2 = _persona(), _persona(tiny_model("gpt2"))
    assert "token_type_ids" in inspect.signature(gpt2.forward).parameters
    assert "token_type_ids" not in inspect.signature(llama.forward).parameters
    ids = sample_ids()
    with torch.no_grad():
        assert torch.equal(llama(ids).logits, llama(input_ids=ids).logits)  # positional calls still work


def test_pipeline_generates_from_a_persona_directory(tmp_path):
    base, tok = load_causal_lm(DEFAULT_MODEL)
    persona = _persona(base.eval())
    assert persona.can_generate()
    persona.save_pretrained(tmp_path, save_base=True)
    tok.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path), device="cpu")
    assert isinstance(generator.model, IdentityForCausalLM)
    text = generator("Who am I?", max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    ids = tok("Who am I?", return_tensors="pt").input_ids
    expected = persona.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert text == tok.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("auto", [False, True], ids=["class", "AutoModelForCausalLM"])
def test_from_pretrained_honours_dtype_device_and_attention(auto, tmp_path):
    persona = _persona()
    persona.save_pretrained(tmp_path, save_base=True)
    load = AutoModelForCausalLM.from_pretrained if auto else IdentityForCausalLM.from_pretrained
    loaded = load(tmp_path, dtype=torch.bfloat16, device_map="cpu", attn_implementation="sdpa")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.lm.config._attn_implementation == "sdpa"
    with torch.no_grad():
        logits = loaded(input_ids=sample_ids()).logits
        expected = persona(input_ids=sample_ids()).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=0.1, rtol=0.05)


def test_temporal_from_pretrained_honours_dtype(tmp_path):
    model = _temporal()
    model.save_pretrained(tmp_path, save_base=True)
    loaded = TemporalLoraForCausalLM.from_pretrained(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.can_generate()
