"""The temporal plugin: per-token mixing inside peft's LoRA, one pass with the KV cache, metrics, the recipe."""

import json
import math

import pytest
import torch
from ddp import run_two_ranks
from recipes_path import add_recipes_to_path
from tiny_models import sample_ids, tiny_model
from transformers import AutoModelForCausalLM

from hfself import TemporalLoraConfig, TemporalLoraForCausalLM
from hfself.cli import main as cli_main
from hfself_plugins.temporal import analysis as metrics

add_recipes_to_path()
import temporal_lora  # noqa: E402

ARCHS = ["llama", "qwen2", "gpt2", "gpt_neox", "opt", "phi3"]
DOMAINS = ["poetry", "code"]


def _temporal(name="llama", seed=0, **kw):
    model = TemporalLoraForCausalLM.from_base(tiny_model(name, seed=seed), TemporalLoraConfig(domains=DOMAINS, **kw))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # peft starts B at zero; give every adapter a visible effect
        for n, p in model.lm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _lora_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.lm.modules())


@pytest.mark.parametrize("name", ARCHS)
def test_one_hot_routing_equals_that_adapter_alone(name):
    model, ids = _temporal(name), sample_ids()
    for domain in DOMAINS:
        with torch.no_grad(), model.only_domain(domain):
            mixed = model(input_ids=ids).logits
        model.mixing.detach()
        model.lm.base_model.set_adapter(domain)  # peft's own single-adapter forward
        with torch.no_grad():
            alone = model.lm(input_ids=ids).logits
        model.lm.base_model.set_adapter(DOMAINS)
        model.mixing.attach()
        torch.testing.assert_close(mixed, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_disabled_is_the_bare_backbone_and_nothing_unfreezes(name):
    model, ids, bare = _temporal(name), sample_ids(), tiny_model(name)
    hooks = _lora_hooks(model)
    with torch.no_grad(), model.adapters_disabled():
        off = model(input_ids=ids).logits
        assert _lora_hooks(model) == 0
    assert torch.equal(off, bare(input_ids=ids).logits)
    assert _lora_hooks(model) == hooks  # restored afterwards
    with torch.no_grad():
        assert not torch.equal(model(input_ids=ids).logits, off)
    model.set_trainable("code")
    model.train()(input_ids=ids, labels=ids).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".code." in n for n in trainable)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)


def test_routing_is_causal_and_the_output_carries_it():
    model, ids = _temporal(), sample_ids(batch=1, length=12)
    changed = ids.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 4000 + 2
    with torch.no_grad():
        a, b = model(input_ids=ids), model(input_ids=changed)
    torch.testing.assert_close(a.logits[:, :7], b.logits[:, :7], rtol=0, atol=0)
    torch.testing.assert_close(a.routing_weights[:, :7], b.routing_weights[:, :7], rtol=0, atol=0)
    assert not torch.equal(a.logits[:, 7:], b.logits[:, 7:])
    assert a.routing_weights.shape == (1, 12, 2)
    torch.testing.assert_close(a.routing_weights.sum(-1), torch.ones(1, 12))
    torch.testing.assert_close(model.routing(ids), a.routing_weights)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_cached_generation_equals_uncached_and_exposes_weights(name):
    model, ids = _temporal(name), sample_ids(batch=1, length=6)
    cached, trace = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, use_cache=True,
                                   return_routing=True)
    uncached = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert trace.shape == (1, cached.shape[1] - 1, 2)  # every position that was fed in
    torch.testing.assert_close(trace, model.routing(cached[:, :-1]), rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_and_auto_model(tmp_path):
    model, ids = _temporal(), sample_ids()
    with torch.no_grad():
        torch.nn.init.normal_(model.mixer.net[-1].weight, std=1.0)
    model.save_pretrained(tmp_path, save_base=True)
    assert {"config.json", "adapters", "mixer.safetensors", "backbone.safetensors", "README.md"} <= {
        p.name for p in tmp_path.iterdir()}
    for loaded in (TemporalLoraForCausalLM.from_pretrained(tmp_path, attn_implementation="eager"),
                   AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")):
        assert isinstance(loaded, TemporalLoraForCausalLM)
        with torch.no_grad():
            assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    on_given = TemporalLoraForCausalLM.from_pretrained(tmp_path, base_model=tiny_model("llama"))
    with torch.no_grad():
        assert torch.equal(on_given(input_ids=ids).logits, model(input_ids=ids).logits)


def test_calibration_loss_balances_domains_and_neutral():
    """Each domain weighs the same however many tokens it has; neutral texts add KL(uniform || routing)."""
    import torch.nn.functional as F

    model = _temporal()
    model.set_trainable("mixer")
    ids = sample_ids(batch=2, length=10)
    pair = model(input_ids=ids, domain_labels=torch.tensor([0, 1]))
    tripled = torch.cat([ids[:1], ids[:1], ids[1:]])  # domain 0 twice: 2/3 of the tokens
    out = model(input_ids=tripled, domain_labels=torch.tensor([0, 0, 1]))
    torch.testing.assert_close(out.loss, pair.loss)
    per_token = F.cross_entropy(out.logits.flatten(0, 1), torch.tensor([0, 0, 1]).repeat_interleave(10))
    assert not torch.isclose(per_token, out.loss), "a token-weighted loss would differ: the check can fail"

    neutral = model(input_ids=tripled, domain_labels=torch.tensor([0, 1, 0]), neutral=torch.tensor([0, 0, 1]))
    log_probs = neutral.logits.log_softmax(-1)
    balanced = (F.cross_entropy(neutral.logits[0], torch.zeros(10, dtype=torch.long))
                + F.cross_entropy(neutral.logits[1], torch.ones(10, dtype=torch.long))) / 2
    kl = F.kl_div(log_probs[2], torch.full_like(log_probs[2], 0.5), reduction="batchmean")
    torch.testing.assert_close(neutral.loss, balanced + kl)
    assert neutral.logits.shape == (3, 10, 2) and kl > 0
    neutral.loss.backward()
    assert model.mixer.net[-1].weight.grad is not None


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="unique"):
        TemporalLoraConfig(domains=["a", "a"])
    with pytest.raises(ValueError, match="router_layer"):
        TemporalLoraForCausalLM.from_base(tiny_model("llama"), TemporalLoraConfig(domains=DOMAINS, router_layer=2))
    with pytest.raises(ValueError, match="unknown domain"):
        with _temporal().only_domain("music"):
            pass


def test_metrics_on_sequences_with_known_answers():
    def seq(values):  # w[:, 0] = values
        v = torch.tensor(values, dtype=torch.float32)
        return torch.stack([v, 1 - v], dim=1)

    w = seq([0.5, 0.95, 0.2, 0.95, 0.96, 0.97, 0.99])
    assert metrics.switch_lag(w, 0, 0.9, 3) == 3
    assert metrics.switch_lag(w, 0, 0.9, 4) == 3
    assert metrics.switch_lag(w, 0, 0.9, 5) == len(w)  # censored: never 5 in a row
    assert metrics.deep_crystallization_ratio(w, 0, 0.95) == pytest.approx(3 / 7)
    assert metrics.relax_time(w, 0, 0.99) == len(w)
    assert metrics.relax_time(seq([0.2, 0.995]), 0, 0.99) == 1
    assert metrics.tail_area(seq([0.5, 0.75, 1.0]), 0, 2) == pytest.approx(0.75)
    same = metrics.return_gap(w, w.clone())
    assert same == {"cosine": pytest.approx(0, abs=1e-6), "euclidean": 0.0, "dtw": 0.0}
    shifted = metrics.return_gap(seq([0, 0, 1, 1]), seq([0, 1, 1, 1]))
    assert shifted["dtw"] == 0.0 and shifted["euclidean"] > 0  # DTW forgives a time shift
    assert metrics.dtw(seq([0.0]), seq([1.0])) == pytest.approx(math.sqrt(2) / 2)
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3], [5, 5, 5]) is None


FAST = ["--pretrain_steps", "0", "--adapter_steps", "4", "--calibration_steps", "60", "--max_train_samples", "96",
        "--per_device_train_batch_size", "8", "--max_length", "64", "--eval_sequences", "8", "--logging_steps", "10",
        "--save_steps", "30", "--warmup_steps", "0"]


def test_recipe_calibrates_the_router_and_the_commands_run(tmp_path):
    model, _ = temporal_lora.main([*FAST, "--output_dir", str(tmp_path)])
    evaluation = json.loads((tmp_path / "router_eval.json").read_text())
    assert evaluation["sequence_accuracy"] >= 0.9, evaluation
    assert evaluation["token_accuracy"] > 0.7, evaluation  # chance is 0.5; 60 calibration steps in this test
    assert evaluation["neutral_bias"] < 0.25, evaluation
    saved = tmp_path / "model"
    assert (saved / "tokenizer.json").exists() and (saved / "adapters" / "python").is_dir()

    out = tmp_path / "analysis"
    assert cli_main(["temporal", "hysteresis", "--model", str(saved), "--output_dir", str(out), "--segment", "32",
                     "--trials", "2"]) == 0
    hysteresis = json.loads((out / "hysteresis_results.json").read_text())
    assert {"switch_lag_a_to_b", "switch_lag_b_to_a", "switching_asymmetry", "return_gap_aba",
            "return_gap_amixa"} <= set(hysteresis)
    assert 0 <= hysteresis["switch_lag_a_to_b"] <= 32
    assert cli_main(["temporal", "fatigue", "--model", str(saved), "--output_dir", str(out), "--lengths", "8", "16",
                     "32", "--trials", "2"]) == 0
    fatigue = json.loads((out / "fatigue_results.json").read_text())
    assert [p["length"] for p in fatigue["per_length"]] == [8, 16, 32]
    assert all(0 <= p["deep_crystallization_ratio"] <= 1 for p in fatigue["per_length"])
    assert (out / "hysteresis_analysis.png").stat().st_size > 0 and (out / "fatigue_analysis.png").exists()
    assert cli_main(["temporal", "route", "--model", str(saved), "--text", "def f(x):\n    return x",
                     "--output_dir", str(out)]) == 0
    assert (out / "route.png").exists()


@pytest.mark.slow
def test_recipe_resumes_each_stage(tmp_path, monkeypatch):
    fast = [a if a != "60" else "6" for a in FAST]
    fast[fast.index("--save_steps") + 1] = "3"
    fast += ["--save_total_limit", "2"]
    full, _ = temporal_lora.main([*fast, "--output_dir", str(tmp_path / "full")])
    import shutil

    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "calibration" / "checkpoint-6")  # interrupted after step 3 of calibration
    calls = []
    original = TemporalLoraForCausalLM.calibration_loss
    monkeypatch.setattr(TemporalLoraForCausalLM, "calibration_loss",
                        lambda self, *a, **kw: calls.append(1) or original(self, *a, **kw))
    resumed, trainer = temporal_lora.main([*fast, "--output_dir", str(tmp_path / "cut"),
                                           "--resume_from_checkpoint", "true"])
    assert trainer.state.global_step == 6 and len(calls) == 3  # steps 4-6 only: it did resume
    for a, b in zip(full.mixer.parameters(), resumed.mixer.parameters()):
        assert torch.equal(a, b)  # bit-exact
    for (n, a), b in zip(full.lm.named_parameters(), resumed.lm.parameters()):
        if "lora_" in n:
            assert torch.equal(a, b), n


@pytest.mark.slow
def test_ddp_two_ranks_identical(tmp_path):
    from tiny_models import config_only_model

    fast = [a if a != "60" else "4" for a in FAST]
    base = config_only_model(tmp_path / "base")  # a backbone without weights: warmed up, and saved with the model
    ranks = run_two_ranks("ddp_temporal_run.py", [*fast, "--pretrain_steps", "2", "--model_name_or_path", base,
                                                  "--output_dir", str(tmp_path)], tmp_path)
    assert any(k.startswith("mixer.") for k in ranks)
    assert (tmp_path / "model" / "backbone.safetensors").exists()  # the warmed-up backbone is saved


def _temporal_grads(checkpointing, trainable):
    model = _temporal("llama").train()
    model.set_trainable(trainable)
    if checkpointing is not None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": checkpointing})
    ids = sample_ids()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("trainable", ["code", "mixer"])
@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(use_reentrant, trainable):
    plain, checkpointed = _temporal_grads(None, trainable), _temporal_grads(use_reentrant, trainable)
    assert plain and plain.keys() == checkpointed.keys()
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_merge_and_unload_one_domain_is_a_plain_model(name, tmp_path):
    model, ids = _temporal(name), sample_ids()
    with pytest.raises(ValueError, match="name the domain"):
        model.merge_and_unload()
    with torch.no_grad(), model.only_domain("code"):
        expected = model(input_ids=ids).logits
    plain = model.merge_and_unload(domain="code")
    assert type(plain) is type(tiny_model(name))
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert not sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in plain.modules())
    plain.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_deepcopy_gives_an_independent_model():
    import copy

    model, ids = _temporal(), sample_ids()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        replica = copy.deepcopy(model)
        replica.mixer.net[-1].bias.add_(torch.tensor([5.0, -5.0]))
        assert torch.equal(model(input_ids=ids).logits, before)
        assert not torch.equal(replica(input_ids=ids).logits, before)


def test_a_saved_model_whose_backbone_weights_are_missing_is_refused(tmp_path):
    from tiny_models import config_only_model

    model = _temporal()
    model.config.base_model_name_or_path = config_only_model(tmp_path / "base")  # loading it: a random init
    model.save_pretrained(tmp_path / "model", save_base=False)
    with pytest.raises(FileNotFoundError, match="holds a config and no weights"):
        TemporalLoraForCausalLM.from_pretrained(tmp_path / "model")


@pytest.mark.slow
def test_fsdp2_on_two_cpu_ranks_trains_and_saves_the_gathered_model(tmp_path):
    """fully_shard over the decoder layers and the model (gloo, 2 processes): a sharded step equals the unsharded
    one, and save_pretrained writes the gathered adapters, mixer and backbone (tests/fsdp_temporal_run.py)."""
    run_two_ranks("fsdp_temporal_run.py", [str(tmp_path)], tmp_path)
    assert (tmp_path / "model" / "adapters").is_dir()
